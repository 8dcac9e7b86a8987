"""`perpchain tx KIND`: build the body of one tx kind from its own flags, sign it with `--key`,
submit it and wait for its receipt. One builder per TxKind (node/core/txs.py); CANCEL_ALL has
two spellings, `tx cancel-all` and `tx cancel --all`, which build the same body."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from collections.abc import Callable
from typing import Any

from node.cli.common import CliError, address, market_id, print_json, rpc_client, signing_key
from node.client import RpcCallError, RpcClient
from node.core.errors import Reject
from node.core.records import MarketMode, OrderKind, Side, TimeInForce
from node.core.txs import (
    CancelAll,
    CancelOrder,
    Deposit,
    OracleUpdate,
    PlaceOrder,
    PricePoint,
    Recovery,
    SetMarketMode,
    SetMarketParams,
    Withdraw,
    sign_tx,
)

# A builder: (args, client) -> body with nonce 0 (cmd_tx sets the signer's next nonce). The
# client resolves market symbols (and reads a market's current parameters); builders never
# submit.
Builder = Callable[[argparse.Namespace, RpcClient], Any]


def build_deposit(args: argparse.Namespace, client: RpcClient) -> Deposit:
    return Deposit(
        nonce=0,
        account=address(args.account),
        amount_quote=args.amount,
        deposit_id=args.deposit_id,
    )


def build_withdraw(args: argparse.Namespace, client: RpcClient) -> Withdraw:
    return Withdraw(nonce=0, amount_quote=args.amount)


def build_order(args: argparse.Namespace, client: RpcClient) -> PlaceOrder:
    return PlaceOrder(
        nonce=0,
        market_id=market_id(client, args.market),
        side=Side[args.side.upper()],
        kind=OrderKind[args.type.upper()],
        tif=TimeInForce[args.tif.upper()],
        price_quote=args.price,
        size_atoms=args.size,
        reduce_only=int(args.reduce_only),
        trigger_price_quote=args.trigger,
        client_id=args.client_id or time.time_ns() % (1 << 62),
    )


def build_cancel_all(args: argparse.Namespace, client: RpcClient) -> CancelAll:
    """Every open order of the signer: in every market (market_id 0) unless one is named."""
    market = 0 if args.market is None else market_id(client, args.market)
    return CancelAll(nonce=0, market_id=market)


def build_cancel(args: argparse.Namespace, client: RpcClient) -> CancelOrder | CancelAll:
    if args.all:
        return build_cancel_all(args, client)
    if args.market is not None:
        raise CliError("--market applies to `tx cancel --all` only (an order id names its market)")
    return CancelOrder(nonce=0, order_id=args.order_id or 0, client_id=args.client_id or 0)


def _market_price(text: str) -> tuple[str, int]:
    """argparse type of `--market-price MARKET=PRICE`."""
    market, sep, price = text.partition("=")
    if not sep or not market:
        raise argparse.ArgumentTypeError(f"{text!r} is not MARKET=PRICE")
    try:
        return market, int(price)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{price!r} is not an integer price") from None


def build_oracle(args: argparse.Namespace, client: RpcClient) -> OracleUpdate:
    points = sorted((market_id(client, market), price) for market, price in args.market_price)
    ids = [point[0] for point in points]
    if len(set(ids)) != len(ids):
        raise CliError("--market-price names a market twice")
    return OracleUpdate(
        nonce=0,
        time_ms=args.time_ms if args.time_ms is not None else time.time_ns() // 1_000_000,
        prices=tuple(PricePoint(market_id=m, price_quote=p) for m, p in points),
    )


def build_market_mode(args: argparse.Namespace, client: RpcClient) -> SetMarketMode:
    return SetMarketMode(
        nonce=0, market_id=market_id(client, args.market), mode=MarketMode[args.mode.upper()]
    )


def build_market_params(args: argparse.Namespace, client: RpcClient) -> SetMarketParams:
    """The parameters not given keep the market's current values (read through the RPC)."""
    given = {
        "initial_margin_ppm": args.initial_margin_ppm,
        "maintenance_margin_ppm": args.maintenance_margin_ppm,
        "max_funding_rate_ppm": args.max_funding_rate_ppm,
    }
    if any(value is None for value in given.values()):
        current = client.call("perp_getMarket", market=args.market)
        given = {k: int(current[k]) if v is None else v for k, v in given.items()}
    return SetMarketParams(nonce=0, market_id=market_id(client, args.market), **given)


def build_recovery(args: argparse.Namespace, client: RpcClient) -> Recovery:
    return Recovery(nonce=0)


BUILDERS: dict[str, Builder] = {
    "deposit": build_deposit,
    "withdraw": build_withdraw,
    "order": build_order,
    "cancel": build_cancel,
    "cancel-all": build_cancel_all,
    "oracle": build_oracle,
    "market-mode": build_market_mode,
    "market-params": build_market_params,
    "recovery": build_recovery,
}


NONCE_RETRIES = 3  # a BAD_NONCE (another signer of the same key took it) is retried this often


def choose_nonce(info: dict[str, Any], taken: set[int]) -> int:
    """A free nonce of the signer's window (perp_getNonce): the first one free in the window's
    upper half, so a bot of the same key sending next_nonce, next_nonce + 1, ... does not race
    this one; else the first free one. `taken` are nonces this command already lost."""
    base, window = int(info["next_nonce"]), int(info.get("window", "1"))
    used = {int(n) for n in info.get("used", [])} | taken
    upper = range(base + window // 2, base + window)
    for nonce in itertools.chain(upper, range(base, base + window // 2)):
        if nonce not in used:
            return nonce
    raise CliError(f"every nonce of the window [{base}, {base + window}) is in use; retry later")


def cmd_tx(args: argparse.Namespace) -> int:
    """Build, sign with a free nonce, submit; print the receipt when it is committed or
    rejected (exit 0 or 1), or say it was not within --wait seconds (exit 1). A BAD_NONCE, at
    submission or in the block (another client signing with the same key took that nonce), is
    retried with another free nonce, at most NONCE_RETRIES times, saying so."""
    client = rpc_client(args)
    key = signing_key(args.key)
    template = BUILDERS[args.kind](args, client)
    chain_id = client.call("node_status")["chain_id"].encode()
    taken: set[int] = set()
    for attempt in range(NONCE_RETRIES + 1):
        info = client.call("perp_getNonce", address=key.public_key.hex())
        nonce = choose_nonce(info, taken)
        body = dataclasses.replace(template, nonce=nonce)
        try:
            tx_hash = client.call("tx_submit", tx=sign_tx(body, key, chain_id).raw.hex())["tx_hash"]
        except RpcCallError as error:
            if error.code != 1000 + Reject.BAD_NONCE or attempt == NONCE_RETRIES:
                raise
            _say_retry(args, nonce, attempt)
            taken.add(nonce)
            continue
        result = _wait(client, tx_hash, args.wait)
        if result is None:
            if args.json:
                print_json({"tx_hash": tx_hash, "status": "pending"})
            else:
                print(f"submitted {tx_hash}; not committed within {args.wait} s")
            return 1
        if (
            result["status"] == "rejected"
            and result.get("code") == str(int(Reject.BAD_NONCE))
            and attempt < NONCE_RETRIES
        ):
            _say_retry(args, nonce, attempt)
            taken.add(nonce)
            continue
        print_json(result)
        return 0 if result["status"] == "committed" else 1
    raise CliError("unreachable: the retry loop returns or raises")


def _wait(client: RpcClient, tx_hash: str, wait_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        result: dict[str, Any] = client.call("tx_status", tx_hash=tx_hash)
        if result["status"] in ("committed", "rejected"):
            return result
        time.sleep(0.1)
    return None


def _say_retry(args: argparse.Namespace, nonce: int, attempt: int) -> None:
    print(
        f"perpchain: nonce {nonce} was taken by another signer of {args.key}; retrying with "
        f"another free nonce ({attempt + 1}/{NONCE_RETRIES})",
        file=sys.stderr,
    )
