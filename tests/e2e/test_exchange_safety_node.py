"""Exchange safety through a real node (LevelDB, the producer, admission, JSON-RPC on a real
socket): the drain of two colluding 1,000 USD accounts, the nonce that stopped the producer,
and the replay of a rejected tx. Each failed on the node before these rules."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import trio

from node.app import init_home
from node.client import RpcCallError
from node.core.crypto import SigningKey
from node.core.errors import Reject
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import Deposit, PlaceOrder, SignedTx, Withdraw, sign_tx
from tests.e2e.chain import CHAIN_ID, UNIT, USD, call, genesis_doc, running_node, wait_for

PRICE = 60_000 * USD


class Signer:
    """Keys with their next nonces, signing for the devnet chain."""

    def __init__(self) -> None:
        self.nonces: dict[bytes, int] = {}
        self.client_id = 0

    def sign(self, body_cls: type, key: SigningKey, **fields: Any) -> SignedTx:
        nonce = self.nonces.get(key.public_key, 0)
        self.nonces[key.public_key] = nonce + 1
        return sign_tx(body_cls(nonce=nonce, **fields), key, CHAIN_ID)

    def order(
        self, key: SigningKey, side: Side, size: int, price: int, tif: TimeInForce
    ) -> SignedTx:
        self.client_id += 1
        return self.sign(
            PlaceOrder,
            key,
            market_id=1,
            side=side,
            kind=OrderKind.LIMIT,
            tif=tif,
            price_quote=price,
            size_atoms=size,
            reduce_only=0,
            trigger_price_quote=0,
            client_id=self.client_id,
        )


async def _submit(url: str, tx: SignedTx) -> dict[str, Any]:
    """Submit and wait for the receipt (committed or rejected in a block)."""
    answer = await call(url, "tx_submit", tx=tx.raw.hex())
    with trio.fail_after(20):
        while True:
            status = await call(url, "tx_status", tx_hash=answer["tx_hash"])
            if status["status"] in ("committed", "rejected"):
                return status  # type: ignore[no-any-return]
            await trio.sleep(0.05)


async def _collateral(url: str, key: SigningKey) -> int:
    account = await call(url, "perp_getAccount", address=key.public_key.hex())
    return int(account["collateral"])


async def test_two_colluding_accounts_cannot_drain_the_exchange(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "node"
    init_home(home, genesis_doc())
    s = Signer()
    bridge = SigningKey.from_label("devnet/bridge")
    a, b = SigningKey.from_label("attacker/a"), SigningKey.from_label("attacker/b")
    async with running_node(home, block_interval_ms=50) as (url, _):
        for deposit_id, (key, usd) in enumerate(((a, 5_000), (b, 1_000)), start=1):
            tx = s.sign(
                Deposit,
                bridge,
                account=key.public_key,
                amount_quote=usd * USD,
                deposit_id=deposit_id,
            )
            assert (await _submit(url, tx))["code"] == "0"
        size = 3 * UNIT // 10
        assert (await _submit(url, s.order(b, Side.SELL, size, PRICE, TimeInForce.GTC)))[
            "code"
        ] == "0"
        assert (await _submit(url, s.order(a, Side.BUY, size, PRICE, TimeInForce.IOC)))[
            "code"
        ] == "0"
        # The observed drain: a reducing fill at an absurd price. Out of the band now.
        absurd = await _submit(url, s.order(a, Side.SELL, size, 6_000_000 * USD, TimeInForce.GTC))
        assert absurd["code"] == str(int(Reject.PRICE_OUT_OF_BAND)), absurd
        # At the band's edge b would lose 1,800 USD on ~999 of equity: its fill is refused.
        ask = await _submit(url, s.order(a, Side.SELL, size, 66_000 * USD, TimeInForce.GTC))
        assert ask["code"] == "0"
        before = (await _collateral(url, a), await _collateral(url, b))
        taker = await _submit(url, s.order(b, Side.BUY, size, 66_000 * USD, TimeInForce.IOC))
        assert taker["code"] == str(int(Reject.INSUFFICIENT_MARGIN)), taker
        assert (await _collateral(url, a), await _collateral(url, b)) == before
        assert before[1] >= 0


async def test_a_nonce_at_the_window_edge_and_a_rejected_tx_replayed(
    tmp_path: pathlib.Path,
) -> None:
    home = tmp_path / "node"
    init_home(home, genesis_doc())
    trader = SigningKey.from_label("devnet/trader/0")
    async with running_node(home, block_interval_ms=50) as (url, _):
        # base + 63: its bit overflowed the bitmap's int64 and stopped the producer.
        edge = sign_tx(Withdraw(nonce=63, amount_quote=USD), trader, CHAIN_ID)
        assert (await _submit(url, edge))["code"] == "0"
        height = int((await call(url, "node_status"))["height"])
        await wait_for(url, lambda status: int(status["height"]) > height + 2)
        # A withdrawal rejected in a block consumed its nonce: the same bytes never run again.
        too_much = sign_tx(Withdraw(nonce=0, amount_quote=10**9 * USD), trader, CHAIN_ID)
        rejected = await _submit(url, too_much)
        assert rejected["code"] == str(int(Reject.INSUFFICIENT_COLLATERAL)), rejected
        with pytest.raises(RpcCallError) as replay:
            await call(url, "tx_submit", tx=too_much.raw.hex())
        assert replay.value.code == 1000 + Reject.BAD_NONCE
