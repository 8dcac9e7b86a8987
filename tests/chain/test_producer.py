"""The producer's block on the event loop: the same block as the one-shot path, computed in
lane turns, with the automatic garbage collector off until the block's working set is freed."""

from __future__ import annotations

import gc
import json
import pathlib
from collections.abc import Iterator

import pytest

from node.app import DATA_DIR, PRODUCER_KEY_FILE, init_home, load_genesis, load_key, reconcile
from node.chain.clock import ManualClock
from node.chain.mempool import Mempool
from node.chain.producer import ChainStatus, Producer, collector_paused
from node.config import MempoolSettings
from node.core.crypto import SigningKey
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import PlaceOrder, sign_tx
from node.lane import WorkLane
from node.store import VersionedStore

GENESIS = pathlib.Path(__file__).resolve().parents[2] / "genesis" / "devnet.json"
USD = 10**6


@pytest.fixture
def producer(tmp_path: pathlib.Path) -> Iterator[Producer]:
    home = tmp_path / "home"
    init_home(home, json.loads(GENESIS.read_text()))
    genesis = load_genesis(home)
    key = load_key(home, PRODUCER_KEY_FILE, "PERPCHAIN_PRODUCER_KEY")
    assert key is not None
    store = VersionedStore.open(home / DATA_DIR)
    head = reconcile(store, genesis)
    mempool = Mempool(genesis.chain_id, MempoolSettings(), store, genesis.params.nonce_window)
    producer = Producer(
        store,
        key,
        mempool,
        ManualClock(head.time_ms),
        interval_ms=100,
        status=ChainStatus(head=head),
        lane=WorkLane(light_wait_s=0),
    )
    try:
        yield producer
    finally:
        store.close()


def _submit_orders(producer: Producer, count: int) -> None:
    chain_id = producer.status.head.chain_id  # type: ignore[union-attr]
    for n in range(count):
        trader = n % 4
        body = PlaceOrder(
            nonce=n // 4,
            market_id=1,
            side=Side.BUY if trader % 2 else Side.SELL,
            kind=OrderKind.LIMIT,
            tif=TimeInForce.GTC,
            price_quote=(60_000 + n % 3) * USD,
            size_atoms=10**7,
            reduce_only=0,
            trigger_price_quote=0,
            client_id=n + 1,
        )
        key = SigningKey.from_label(f"devnet/trader/{trader}")
        producer.mempool.add(sign_tx(body, key, chain_id).raw)


async def test_no_automatic_collection_inside_a_block(producer: Producer) -> None:
    collections: list[tuple[int, int]] = []  # (lane turns so far, head height) at each

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            head = producer.status.head
            assert head is not None
            collections.append((producer.lane.turns, head.height))

    _submit_orders(producer, 120)
    thresholds = gc.get_threshold()
    gc.callbacks.append(count)
    gc.set_threshold(50, 10, 10)  # without the pause, a block of 120 orders collects often
    try:
        header = await producer.produce_one_async()
        assert gc.isenabled()
        after_block = len(collections)
        garbage = [[] for _ in range(200)]  # the first allocations after run the collection due
        del garbage
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*thresholds)
    assert header is not None and header.height == 1
    assert producer.lane.turns > 1
    # Between the block's first turn and its commit (the head still at genesis): none.
    assert [c for c in collections if c[0] > 0 and c[1] == 0] == []
    assert len(collections) > after_block, "the collection due ran after the block"


def test_the_collector_comes_back_as_it_was() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("a block failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_a_block_takes_at_most_max_block_txs(producer: Producer) -> None:
    producer.max_block_txs = 50
    _submit_orders(producer, 120)
    sizes = []
    for _ in range(3):
        producer.clock.advance(100)  # type: ignore[attr-defined]
        header = await producer.produce_one_async()
        assert header is not None
        sizes.append(120 - len(producer.mempool) - sum(sizes))
    assert sizes == [50, 50, 20]
    with pytest.raises(ValueError, match="max_block_txs"):
        Producer(
            producer.store,
            producer.key,
            producer.mempool,
            producer.clock,
            interval_ms=100,
            status=producer.status,
            max_block_txs=0,
        )


def test_the_full_invariant_scan_runs_every_invariant_scan_blocks(producer: Producer) -> None:
    from node.core.blocks import BlockEnv

    producer.invariant_scan_blocks = 4
    chain_id = producer.status.head.chain_id  # type: ignore[union-attr]
    full = [
        producer._full_scan(BlockEnv(chain_id=chain_id, height=height, time_ms=height))
        for height in range(1, 10)
    ]
    assert full == [False, False, False, True, False, False, False, True, False]


async def test_a_tx_being_included_stays_pending_until_its_block_commits(
    producer: Producer,
) -> None:
    """tx_status answers from the receipts, else from the mempool: a tx taken for the block
    being built (which yields to readers between its slices) must not read as unknown."""
    import trio

    _submit_orders(producer, 120)
    hashes = list(producer.mempool._txs)
    seen: list[bool] = []

    async def watch() -> None:
        while producer.status.head.height == 0:  # type: ignore[union-attr]
            seen.append(all(h in producer.mempool for h in hashes))
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.lowlevel.checkpoint()
        header = await producer.produce_one_async()
    assert header is not None and len(seen) > 2 and all(seen)
    assert not any(h in producer.mempool for h in hashes)  # committed: the receipts answer
