"""Test helpers: a real node home with a real chain built offline (the producer's own
commit_block over apply_block, fixed block times), and in-process nodes on real sockets."""

from __future__ import annotations

import json
import pathlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from node.app import PRODUCER_KEY_FILE, init_home, load_key, run_node
from node.chain.producer import commit_block
from node.client import RpcClient
from node.config import NodeConfig
from node.core.blocks import BlockEnv, BlockHeader, BlockReceipts
from node.core.crypto import SigningKey
from node.core.records import OrderKind, Side, TimeInForce
from node.core.transition import apply_block
from node.core.txs import OracleUpdate, PlaceOrder, PricePoint, SignedTx, sign_tx
from node.rpc.server import BoundListeners
from node.store import VersionedStore, blocks_db

GENESIS = pathlib.Path(__file__).resolve().parents[2] / "genesis" / "devnet.json"
CHAIN_ID = b"perpchain-devnet-1"
USD = 10**6
UNIT = 10**8


def genesis_doc() -> dict[str, Any]:
    return json.loads(GENESIS.read_text())  # type: ignore[no-any-return]


class OrderFlow:
    """Seeded random limit orders around 60,000 on market 1 from devnet traders (they fill)."""

    def __init__(self, seed: int, traders: int = 8) -> None:
        self.rng = random.Random(seed)
        self.keys = [SigningKey.from_label(f"devnet/trader/{i}") for i in range(traders)]
        self.nonces = [0] * traders
        self.client_id = 0

    def orders(self, count: int) -> list[SignedTx]:
        out = []
        for _ in range(count):
            i = self.rng.randrange(len(self.keys))
            self.client_id += 1
            body = PlaceOrder(
                nonce=self.nonces[i],
                market_id=1,
                side=self.rng.choice([Side.BUY, Side.SELL]),
                kind=OrderKind.LIMIT,
                tif=TimeInForce.GTC,
                price_quote=(60_000 + self.rng.randint(-20, 20)) * USD,
                size_atoms=self.rng.randint(1, 20) * UNIT // 100,
                reduce_only=0,
                trigger_price_quote=0,
                client_id=self.client_id,
            )
            self.nonces[i] += 1
            out.append(sign_tx(body, self.keys[i], CHAIN_ID))
        return out


def extend_chain(
    home: pathlib.Path,
    blocks: int,
    *,
    seed: int = 1,
    txs_per_block: int = 6,
    block_ms: int = 250,
    oracle: bool = False,
    verify_on_open: bool = True,
    invariants: bool = True,
) -> int:
    """Produce `blocks` more blocks in the home's store, as the producer would; the new head.
    With `oracle`, each block starts with a fresh oracle update (so funding accrues)."""
    key = load_key(home, PRODUCER_KEY_FILE, "PERPCHAIN_PRODUCER_KEY")
    assert key is not None
    flow = OrderFlow(seed)
    oracle_key = SigningKey.from_label("devnet/oracle")
    with VersionedStore.open(home / "data", verify_on_open=verify_on_open) as store:
        head = blocks_db.get_block(store, store.height)
        assert head is not None
        parent: BlockHeader = head.header
        # resume the flow's nonces where the chain left them
        from node.core.view import Overlay, get_nonces

        flow.nonces = [get_nonces(Overlay(store), k.public_key).base_nonce for k in flow.keys]
        oracle_nonce = get_nonces(Overlay(store), oracle_key.public_key).base_nonce
        maker = SigningKey.from_label("devnet/trader/9")
        maker_nonce = get_nonces(Overlay(store), maker.public_key).base_nonce
        for _ in range(blocks):
            txs = flow.orders(txs_per_block)
            if oracle and maker_nonce == 0:
                # A deep bid below the flow's asks (59,980 and up) and above the oracle: the
                # impact bid stays over the oracle, so every funding tick accrues.
                txs.insert(0, sign_tx(_maker_bid(), maker, CHAIN_ID))
                maker_nonce = 1
            env = BlockEnv(
                chain_id=CHAIN_ID, height=parent.height + 1, time_ms=parent.time_ms + block_ms
            )
            if oracle:
                price = (59_940 + flow.rng.randint(-30, 30)) * USD  # under the maker's bid
                update = OracleUpdate(
                    nonce=oracle_nonce,
                    time_ms=env.time_ms - 1,
                    prices=(PricePoint(market_id=1, price_quote=price),),
                )
                txs.insert(0, sign_tx(update, oracle_key, CHAIN_ID))
                oracle_nonce += 1
            parent = commit_txs(store, key, parent, txs, env.time_ms, invariants=invariants)
        return store.height


def _maker_bid() -> PlaceOrder:
    return PlaceOrder(
        nonce=0,
        market_id=1,
        side=Side.BUY,
        kind=OrderKind.LIMIT,
        tif=TimeInForce.GTC,
        price_quote=59_975 * USD,
        size_atoms=UNIT,
        reduce_only=0,
        trigger_price_quote=0,
        client_id=1,
    )


def commit_txs(
    store: VersionedStore,
    producer: SigningKey,
    parent: BlockHeader,
    txs: list[SignedTx],
    time_ms: int,
    *,
    invariants: bool = True,
) -> BlockHeader:
    """One block of `txs` on top of `parent` (the store's head), as the producer commits it."""
    env = BlockEnv(chain_id=CHAIN_ID, height=parent.height + 1, time_ms=time_ms)
    result = apply_block(store, env, txs, invariants=invariants)
    receipts = BlockReceipts(receipts=result.receipts, block_events=result.events)
    return commit_block(store, producer, parent, env, result.writes, [t.raw for t in txs], receipts)


def make_chain(home: pathlib.Path, blocks: int, **options: Any) -> int:
    init_home(home, genesis_doc())
    return extend_chain(home, blocks, **options)


def node_config(home: pathlib.Path, **overrides: Any) -> NodeConfig:
    return NodeConfig.load(
        home,
        env={},
        overrides={"rpc.listen": "127.0.0.1:0", "metrics.enabled": False, **overrides},
    )


@asynccontextmanager
async def running_node(home: pathlib.Path, **overrides: Any) -> AsyncIterator[tuple[str, Any]]:
    """A node in this process; yields (rpc url, cancel scope). Cancelled on exit."""
    async with trio.open_nursery() as nursery:
        bound: BoundListeners = await nursery.start(run_node, node_config(home, **overrides))
        yield f"http://{bound.rpc}", nursery.cancel_scope
        nursery.cancel_scope.cancel()


async def call(url: str, method: str, **params: Any) -> Any:
    client = RpcClient(url, timeout_s=20)
    return await trio.to_thread.run_sync(lambda: client.call(method, **params))


async def wait_for(url: str, predicate: Any, *, timeout_s: float = 60) -> dict[str, Any]:
    """Poll node_status until predicate(status) holds."""
    with trio.fail_after(timeout_s):
        while True:
            status = await call(url, "node_status")
            if predicate(status):
                return status  # type: ignore[no-any-return]
            await trio.sleep(0.05)


def roots(home: pathlib.Path) -> list[bytes]:
    with VersionedStore.open(home / "data") as store:
        return [store.root(h) for h in range(store.height + 1)]


def damaged_chain(home: pathlib.Path, *, after_blocks: int = 3) -> pathlib.Path:
    """The incident in miniature: 12 blocks of 20 s with fresh oracle prices (funding accrues),
    a checkpoint `pre-maintenance-12`, the funding indices zeroed around the writer, then
    `after_blocks` blocks built on the damage with the invariant checks bypassed. Needs
    PERPCHAIN_FAULT_INJECTION=1."""
    from node.ops import faults

    make_chain(home, 12, block_ms=20_000, oracle=True)
    with VersionedStore.open(home / "data") as store:
        store.checkpoint("pre-maintenance-12")
        faults.zero_funding_indices(store)
    if after_blocks:
        extend_chain(
            home,
            after_blocks,
            block_ms=20_000,
            oracle=True,
            seed=2,
            verify_on_open=False,
            invariants=False,
        )
    return home
