"""Every reject path: the exact code, and nothing written but the signer's nonce (consumed once
the signature and nonce checks passed). Malformed bytes never decode."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.core import keys
from node.core.blocks import BlockEnv
from node.core.crypto import SigningKey
from node.core.errors import NONCE_UNUSED_CODES, NotCanonical, Reject
from node.core.records import MarketMode, OrderKind
from node.core.transition import apply_block_bytes, apply_tx
from node.core.txs import (
    CancelOrder,
    Deposit,
    OracleUpdate,
    PricePoint,
    SetMarketMode,
    SetMarketParams,
    SignedTx,
    Withdraw,
    decode_tx,
    sign_tx,
)
from node.core.view import Overlay, get_params
from tests.core.harness import BTC, UNIT, USD, Chain, Side, TimeInForce, devnet_doc

PRICE = 60_000 * USD


def _chain() -> Chain:
    chain = Chain(devnet_doc(max_open_orders=2))
    a, b = chain.trader(0), chain.trader(1)
    chain.block(
        chain.order(a, Side.SELL, UNIT, PRICE + 10 * USD),
        chain.order(b, Side.BUY, UNIT, PRICE - 10 * USD),
        chain.deposit(a.public_key, USD, deposit_id=1),
    )
    return chain


def _try(chain: Chain, tx: SignedTx) -> tuple[int, tuple[object, ...]]:
    """The receipt's code and what the tx wrote besides its signer's nonce. The nonce is
    written exactly when the tx got past its signature and nonce checks (a rejected body still
    consumes it: those signed bytes can never be replayed)."""
    view = Overlay(chain.state)
    env = BlockEnv(chain_id=chain.chain_id, height=chain.height + 1, time_ms=chain.time_ms + 1)
    receipt = apply_tx(view, tx, env, get_params(view), verify_signatures=True)
    writes = view.writes()
    nonce_key = keys.nonces(tx.signer)
    consumed = any(key == nonce_key for key, _ in writes)
    assert consumed == (receipt.code not in NONCE_UNUSED_CODES), (receipt.code, consumed)
    return receipt.code, tuple(w for w in writes if w[0] != nonce_key)


def _resign(tx: SignedTx, key: SigningKey, chain_id: bytes) -> SignedTx:
    return sign_tx(tx.body, key, chain_id)


STRANGER = SigningKey.from_label("nobody")
CASES: dict[str, tuple[Reject, Callable[[Chain], SignedTx]]] = {
    "bad signature": (
        Reject.BAD_SIGNATURE,
        lambda c: dataclasses.replace(
            c.order(c.trader(2), Side.BUY, UNIT, PRICE), signature=b"\x00" * 64
        ),
    ),
    "foreign chain": (
        Reject.BAD_SIGNATURE,
        lambda c: _resign(c.order(c.trader(2), Side.BUY, UNIT, PRICE), c.trader(2), b"other-chain"),
    ),
    "replayed nonce": (
        Reject.BAD_NONCE,
        lambda c: (
            c.sign(Withdraw, c.trader(0), amount_quote=USD)
            if c.nonces.__setitem__(c.trader(0).public_key, 0) is None
            else None
        ),  # type: ignore[func-returns-value]
    ),
    "nonce too far ahead": (
        Reject.BAD_NONCE,
        lambda c: (
            c.sign(Withdraw, c.trader(3), amount_quote=USD)
            if c.nonces.__setitem__(c.trader(3).public_key, 64) is None
            else None
        ),  # type: ignore[func-returns-value]
    ),
    "unknown market": (
        Reject.UNKNOWN_MARKET,
        lambda c: c.order(c.trader(2), Side.BUY, UNIT, PRICE, market_id=99),
    ),
    "zero size": (Reject.SIZE_MUST_BE_POSITIVE, lambda c: c.order(c.trader(2), Side.BUY, 0, PRICE)),
    "negative withdrawal": (
        Reject.SIZE_MUST_BE_POSITIVE,
        lambda c: c.sign(Withdraw, c.trader(2), amount_quote=-5),
    ),
    "unknown account": (Reject.UNKNOWN_ACCOUNT, lambda c: c.order(STRANGER, Side.BUY, UNIT, PRICE)),
    "deposit not from the bridge": (
        Reject.UNAUTHORIZED,
        lambda c: c.sign(
            Deposit, c.trader(2), account=c.trader(2).public_key, amount_quote=USD, deposit_id=9
        ),
    ),
    "oracle not from the oracle key": (
        Reject.UNAUTHORIZED,
        lambda c: c.sign(
            OracleUpdate,
            c.trader(2),
            time_ms=c.time_ms + 1,
            prices=(PricePoint(market_id=BTC, price_quote=PRICE),),
        ),
    ),
    "mode change not from the operator": (
        Reject.UNAUTHORIZED,
        lambda c: c.sign(SetMarketMode, c.trader(2), market_id=BTC, mode=MarketMode.HALTED),
    ),
    "price off tick": (Reject.OFF_TICK, lambda c: c.order(c.trader(2), Side.BUY, UNIT, PRICE + 1)),
    "size off step": (Reject.OFF_STEP, lambda c: c.order(c.trader(2), Side.BUY, UNIT + 1, PRICE)),
    "size over the cap": (
        Reject.OUT_OF_RANGE,
        lambda c: c.order(c.trader(2), Side.BUY, 10**15, PRICE),
    ),
    "deposit over the cap": (
        Reject.OUT_OF_RANGE,
        lambda c: c.deposit(c.trader(2).public_key, 10**15, deposit_id=5),
    ),
    "post-only crossing": (
        Reject.POST_ONLY_WOULD_CROSS,
        lambda c: c.order(c.trader(2), Side.BUY, UNIT, PRICE + 10 * USD, tif=TimeInForce.POST_ONLY),
    ),
    "reduce-only growing": (
        Reject.REDUCE_ONLY_WOULD_GROW,
        lambda c: c.order(c.trader(2), Side.BUY, UNIT, PRICE, reduce_only=1, tif=TimeInForce.IOC),
    ),
    "reduce-only resting": (
        Reject.REDUCE_ONLY_MUST_BE_IOC,
        lambda c: c.order(c.trader(0), Side.BUY, UNIT, PRICE, reduce_only=1),
    ),
    "reduce-only post-only": (
        Reject.REDUCE_ONLY_MUST_BE_IOC,
        lambda c: c.order(
            c.trader(0), Side.BUY, UNIT, PRICE, reduce_only=1, tif=TimeInForce.POST_ONLY
        ),
    ),
    "limit above the band": (
        Reject.PRICE_OUT_OF_BAND,
        lambda c: c.order(c.trader(2), Side.BUY, UNIT, PRICE * 11 // 10 + USD),
    ),
    "limit below the band": (
        Reject.PRICE_OUT_OF_BAND,
        lambda c: c.order(c.trader(2), Side.SELL, UNIT, PRICE * 9 // 10 - USD),
    ),
    "stop-loss worst price outside the band around its trigger": (
        Reject.PRICE_OUT_OF_BAND,
        lambda c: c.order(
            c.trader(0),
            Side.SELL,
            UNIT,
            USD,
            kind=OrderKind.STOP_LOSS,
            tif=TimeInForce.IOC,
            trigger_price_quote=50_000 * USD,
        ),
    ),
    "price beyond the maximum": (
        Reject.OUT_OF_RANGE,
        lambda c: c.order(c.trader(2), Side.BUY, UNIT, 10**15 + USD),
    ),
    "duplicate client id": (
        Reject.DUPLICATE_CLIENT_ID,
        lambda c: c.order(c.trader(0), Side.SELL, UNIT, PRICE + 20 * USD, client_id=1),
    ),
    "unknown order": (
        Reject.UNKNOWN_ORDER,
        lambda c: c.sign(CancelOrder, c.trader(2), order_id=12345, client_id=0),
    ),
    "someone else's order": (
        Reject.UNKNOWN_ORDER,
        lambda c: c.sign(CancelOrder, c.trader(2), order_id=1, client_id=0),
    ),
    "oracle dated in the past": (
        Reject.ORACLE_STALE,
        lambda c: c.oracle({BTC: PRICE}, time_ms=c.genesis.genesis_time_ms),
    ),
    "oracle dated in the future": (
        Reject.ORACLE_STALE,
        lambda c: c.oracle({BTC: PRICE}, time_ms=c.time_ms + 10_000),
    ),
    "oracle jump": (Reject.ORACLE_JUMP, lambda c: c.oracle({BTC: PRICE * 2})),
    "oracle zero price": (Reject.PRICE_MUST_BE_POSITIVE, lambda c: c.oracle({BTC: 0})),
    "limit without price": (
        Reject.PRICE_MUST_BE_POSITIVE,
        lambda c: c.order(c.trader(2), Side.BUY, UNIT, 0),
    ),
    "withdraw beyond equity": (
        Reject.INSUFFICIENT_COLLATERAL,
        lambda c: c.sign(Withdraw, c.trader(2), amount_quote=2_000_000 * USD),
    ),
    "too many orders": (
        Reject.TOO_MANY_ORDERS,
        lambda c: c.order(c.trader(0), Side.SELL, UNIT, PRICE + 30 * USD),
    ),
    "duplicate deposit": (
        Reject.DUPLICATE_DEPOSIT,
        lambda c: c.deposit(c.trader(2).public_key, USD, deposit_id=1),
    ),
    "bad parameter": (
        Reject.BAD_PARAMETER,
        lambda c: c.sign(
            SetMarketParams,
            c.key("devnet/operator"),
            market_id=BTC,
            initial_margin_ppm=10,
            maintenance_margin_ppm=20,
            max_funding_rate_ppm=0,
        ),
    ),
    "conditional without trigger": (
        Reject.PRICE_MUST_BE_POSITIVE,
        lambda c: c.order(
            c.trader(2), Side.SELL, UNIT, 0, kind=OrderKind.STOP_LOSS, tif=TimeInForce.IOC
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reject_has_its_code_and_writes_nothing(name: str) -> None:
    chain = _chain()
    if name == "too many orders":
        chain.block(chain.order(chain.trader(0), Side.SELL, UNIT, PRICE + 20 * USD))
    code, tx = CASES[name]
    result_code, writes = _try(chain, tx(chain))
    assert (Reject(result_code), writes) == (code, ())


def test_mode_forbids_orders_but_not_cancels() -> None:
    chain = _chain()
    chain.block(
        chain.sign(
            SetMarketMode, chain.key("devnet/operator"), market_id=BTC, mode=MarketMode.CANCEL_ONLY
        )
    )
    code, writes = _try(chain, chain.order(chain.trader(2), Side.BUY, UNIT, PRICE))
    assert (code, writes) == (Reject.MODE_FORBIDS, ())
    code, writes = _try(chain, chain.sign(CancelOrder, chain.trader(0), order_id=1, client_id=0))
    assert code == 0 and writes


@given(st.binary(max_size=300))
def test_random_bytes_never_decode_into_a_different_tx(data: bytes) -> None:
    try:
        tx = decode_tx(data)
    except NotCanonical:
        return
    assert tx.raw == data


def test_malformed_and_non_canonical_bytes_are_refused() -> None:
    chain = _chain()
    good = chain.order(chain.trader(2), Side.BUY, UNIT, PRICE).raw
    wire = msgpack.unpackb(good)
    big_int = msgpack.packb([wire[0], wire[1], wire[2] + b"", wire[3], wire[4]])
    assert decode_tx(big_int).raw == good  # the canonical form round-trips
    for bad in (
        good + b"\x00",  # trailing data
        good[:-1],  # truncated
        b"\x00" * 5000,  # oversize
        msgpack.packb({"tx": 1}),  # a map
        msgpack.packb([0x30, 3, 1.5, b"", b""]),  # a float
        msgpack.packb([0x30, 99, b"", b"\x00" * 32, b"\x00" * 64]),  # unknown kind
        b"\xcd\x00\x01",  # non-shortest int
    ):
        with pytest.raises(NotCanonical):
            decode_tx(bad)
    env = BlockEnv(chain_id=chain.chain_id, height=chain.height + 1, time_ms=chain.time_ms + 1)
    result = apply_block_bytes(chain.state, env, [b"garbage", good])
    assert [r.code for r in result.receipts] == [Reject.MALFORMED, 0]
