"""The block producer: the ONE writer of the store (DESIGN.md decision 2). Imports node.core,
node.store, node.chain.{broadcast,clock,mempool,metrics}, node.lane, node.log.

Every `block_interval_ms` it takes txs from the mempool, runs the pure `apply_block` on the head
state (invariants included), stages the new root, signs the header over it, and commits state,
block, receipts and indexes in one synced batch. An InvariantViolation commits nothing: the node
enters HALTED with the reason and keeps serving reads. Operator commands arrive as calls made on
the trio thread between blocks, never concurrently with a block.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from node.chain.broadcast import Broadcaster, account_topic
from node.chain.clock import Clock
from node.chain.mempool import Mempool
from node.chain.metrics import Metrics
from node.chain.replay import log_block_alerts
from node.core.blocks import (
    MAX_BLOCK_TXS,
    Block,
    BlockEnv,
    BlockHeader,
    BlockReceipts,
    header_hash,
    sign_header,
    tx_root_steps,
)
from node.core.crypto import SigningKey
from node.core.errors import InvariantViolation
from node.core.records import Event, EventKind
from node.core.steps import Offload, Steps, drive
from node.core.transition import apply_block_steps
from node.lane import WorkLane
from node.log import log_event, short_hex
from node.store import Staged, VersionedStore, blocks_db

logger = logging.getLogger("perpchain.producer")

NEW_HEADS = "new_heads"
R = TypeVar("R")
# Meta entries written with an operator block, built from its (height, state root): the
# maintenance marker, pin and epoch (VersionedStore.maintenance_begin_meta).
BlockMeta = Callable[[int, bytes], Mapping[bytes, bytes | None]]


async def drive_in_slices(steps: Steps[R], lane: WorkLane) -> R:
    """Run a step generator to its return value in turns of the work lane (`node.lane`): each
    turn runs steps until the lane's slice has passed, after the reads waiting; offloaded work
    (a LevelDB batch write) runs in a worker thread outside any turn, shielded: once begun it
    finishes, so the store's head moves with what was written."""
    sent: Any = None
    error: BaseException | None = None
    while True:
        async with lane.turn(first=True) as deadline:
            while True:
                try:
                    item = steps.throw(error) if error is not None else steps.send(sent)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                sent, error = None, None
                if isinstance(item, Offload) or time.perf_counter() >= deadline:
                    break
        if isinstance(item, Offload):
            try:
                with trio.CancelScope(shield=True):
                    sent = await trio.to_thread.run_sync(item.work)
            except BaseException as failure:  # noqa: BLE001 - thrown into the generator
                error = failure


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic garbage collection inside: the collection due runs at the first allocation
    after, once the block's working set (overlays, decoded records, receipts, write set) has
    been freed by reference counting, instead of walking it live in the middle of the block.
    A young collection there walked 20,000-36,000 live objects in 10-28 ms, and a collection of
    generation 1 under the bench's 6,700-tx blocks took 194 ms (a trio instrument and
    gc.callbacks in a bench node). A collector already off stays off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class ChainStatus:
    """What node_status and /health report; owned by the producer."""

    mode: str = "starting"  # producing | halted | maintenance | following | starting
    halt_reason: str = ""
    head: BlockHeader | None = None
    committed_txs: int = 0
    source: str = ""  # a follower: the node it follows
    source_height: int = -1  # a follower: the source's head as last seen
    # An open maintenance window (the store's marker, VersionedStore.maintenance()); None when
    # there is none. It outlives halts and restarts: only `maintenance end` or a rollback
    # closes it.
    maintenance: Any = None
    started_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)


def header_json(header: BlockHeader) -> dict[str, Any]:
    return {
        "chain_id": header.chain_id.decode(),
        "height": str(header.height),
        "parent_hash": header.parent_hash.hex(),
        "time_ms": str(header.time_ms),
        "tx_root": header.tx_root.hex(),
        "state_root": header.state_root.hex(),
        "producer": header.producer.hex(),
        "signature": header.signature.hex(),
        "hash": header_hash(header).hex(),
    }


def event_json(item: Event) -> dict[str, Any]:
    return {
        "kind": item.kind.name.lower(),
        "market_id": str(item.market_id),
        "account": item.account.hex(),
        "counterparty": item.counterparty.hex(),
        "order_id": str(item.order_id),
        "ref": str(item.ref),
        "size_atoms": str(item.size_atoms),
        "price_quote": str(item.price_quote),
        "amount_quote": str(item.amount_quote),
        "extra": str(item.extra),
    }


def publish_block(
    broadcaster: Broadcaster, header: BlockHeader, receipts: Any, events: tuple[Event, ...]
) -> None:
    """New head to `new_heads`; fills, liquidations and deleveragings to each account's
    topic (both sides: a deleveraged counterparty learns it paid towards a deficit)."""
    broadcaster.publish(NEW_HEADS, header_json(header))
    for item in [e for r in receipts for e in r.events] + list(events):
        if item.kind in (EventKind.FILL, EventKind.LIQUIDATION, EventKind.DELEVERAGED):
            for who in {item.account, item.counterparty} - {b""}:
                topic = account_topic(who.hex())
                if broadcaster.has_subscribers(topic):
                    broadcaster.publish(topic, event_json(item) | {"height": str(header.height)})


@dataclass(frozen=True)
class PreparedBlock:
    """A block staged and signed over its root, not yet written (see VersionedStore.stage),
    with its records and hash index already encoded: what is left is the write."""

    staged: Staged
    header: BlockHeader
    block: Block
    receipts: BlockReceipts
    records: dict[str | bytes, bytes]
    index: dict[bytes, bytes | None]


def prepare_block_steps(
    store: VersionedStore,
    key: SigningKey,
    parent: BlockHeader | None,
    env: BlockEnv,
    writes: Any,
    txs: list[bytes],
    receipts: BlockReceipts,
    *,
    extra_index: dict[bytes, bytes | None] | None = None,
) -> Steps[PreparedBlock]:
    """Stage the state and sign the header over the new root (it only reads the store), as
    steps (see VersionedStore.stage_steps); `drive(...)` runs it at once."""
    index = blocks_db.tx_index(env.height, [r.tx_hash for r in receipts.receipts])
    staged = yield from store.stage_steps(dict(writes), index=index | (extra_index or {}))
    root_of_txs = yield from tx_root_steps(txs)
    header = sign_header(
        BlockHeader(
            chain_id=env.chain_id,
            height=env.height,
            parent_hash=b"\x00" * 32 if parent is None else header_hash(parent),
            time_ms=env.time_ms,
            tx_root=root_of_txs,
            state_root=staged.root,
            producer=key.public_key,
            signature=b"",
        ),
        key,
    )
    block = Block(header=header, txs=tuple(txs))
    yield None
    records = yield from blocks_db.block_records_steps(block, receipts)
    return PreparedBlock(staged, header, block, receipts, records, blocks_db.hash_index(block))


def commit_prepared(
    store: VersionedStore, prepared: PreparedBlock, meta: BlockMeta | None = None
) -> BlockHeader:
    """State, block, receipts and indexes (and `meta`'s entries) in one synced batch."""
    return drive(commit_prepared_steps(store, prepared, meta))


def commit_prepared_steps(
    store: VersionedStore, prepared: PreparedBlock, meta: BlockMeta | None = None
) -> Steps[BlockHeader]:
    """commit_prepared as steps (VersionedStore.commit_staged_steps)."""
    entries = None if meta is None else meta(prepared.header.height, prepared.staged.root)
    yield from store.commit_staged_steps(
        prepared.staged, records=prepared.records, index=prepared.index, meta=entries
    )
    return prepared.header


def commit_block(
    store: VersionedStore,
    key: SigningKey,
    parent: BlockHeader | None,
    env: BlockEnv,
    writes: Any,
    txs: list[bytes],
    receipts: BlockReceipts,
    *,
    extra_index: dict[bytes, bytes | None] | None = None,
) -> BlockHeader:
    """Stage, sign, commit: prepare_block_steps then commit_prepared on one thread."""
    prepared = drive(
        prepare_block_steps(store, key, parent, env, writes, txs, receipts, extra_index=extra_index)
    )
    return commit_prepared(store, prepared)


class Producer:
    def __init__(
        self,
        store: VersionedStore,
        key: SigningKey,
        mempool: Mempool,
        clock: Clock,
        *,
        interval_ms: int,
        status: ChainStatus,
        broadcaster: Broadcaster | None = None,
        metrics: Metrics | None = None,
        lane: WorkLane | None = None,
        max_block_txs: int = MAX_BLOCK_TXS,
        invariant_scan_blocks: int = 1,
    ) -> None:
        if not 1 <= max_block_txs <= MAX_BLOCK_TXS:
            raise ValueError(f"max_block_txs={max_block_txs}: must be 1..{MAX_BLOCK_TXS}")
        self.store = store
        # Txs a block takes from the mempool. A block's end (receipts, tx root, staging, the
        # young collection after it) grows with its size: under the bench's flood, uncapped
        # blocks of 6,700 txs paused the loop up to 96-237 ms, blocks of 5,000 up to 65-154
        # ms, of 2,000 up to 43-126 ms; but every block also waits for its synced write, and
        # 2,000-tx blocks committed 15-30% fewer orders/s (node config: block_max_txs).
        self.max_block_txs = max_block_txs
        if invariant_scan_blocks < 1:
            raise ValueError(f"invariant_scan_blocks={invariant_scan_blocks}: must be >= 1")
        self.invariant_scan_blocks = invariant_scan_blocks
        self.key = key
        self.mempool = mempool
        self.clock = clock
        self.interval_ms = interval_ms
        self.status = status
        self.broadcaster = broadcaster
        self.metrics = metrics
        # Shared with the public RPC listener, whose batches take turns with the block steps.
        self.lane = lane or WorkLane()
        # Held while a block is built and committed; operator commands take it, so they run
        # between blocks (maintenance finishes the block in flight first).
        self.lock = trio.Lock()
        # The drill's bypass (node.commands.FaultCommands): honoured only when the node was
        # built with fault injection (testing.fault_injection, refused on production chains).
        self.check_invariants = True
        self.fault_injection = False

    def halt(self, reason: str) -> None:
        self.status.mode = "halted"
        self.status.halt_reason = reason
        if self.metrics:
            self.metrics.set_mode("halted")
        log_event(logger, "node.halted", level=logging.CRITICAL, reason=reason)

    def resume(self) -> None:
        """Out of HALTED: back to producing, or to maintenance if a window is open (a resume
        never skips the checks of `maintenance end`)."""
        if self.status.mode == "halted":
            if self.status.maintenance is not None:
                self.enter_maintenance(self.status.maintenance)
            else:
                self.status.mode = "producing"
                self.status.halt_reason = ""
                if self.metrics:
                    self.metrics.set_mode("producing")
            log_event(logger, "node.resumed", height=self.store.height, mode=self.status.mode)

    def enter_maintenance(self, window: Any) -> None:
        """Mode maintenance for the window `window` (a node.store.Maintenance, stored)."""
        self.status.maintenance = window
        self.status.mode = "maintenance"
        reason = window.reason
        self.status.halt_reason = f"maintenance: {reason}" if reason else "maintenance"
        if self.metrics:
            self.metrics.set_mode("maintenance")

    def leave_maintenance(self) -> None:
        """The window's marker is gone from the store: produce again."""
        self.status.maintenance = None
        self.status.mode = "producing"
        self.status.halt_reason = ""
        if self.metrics:
            self.metrics.set_mode("producing")

    def produce_one(self) -> BlockHeader | None:
        """Build, check and commit one block; None (and HALTED) on an invariant violation."""
        return self.produce_txs(self.mempool.take(self.max_block_txs))

    def produce_txs(self, txs: list[Any], meta: BlockMeta | None = None) -> BlockHeader | None:
        """One block of exactly `txs` (operator blocks), on this thread; `meta(height, root)`
        gives meta entries written in the block's own batch (maintenance begin)."""
        return self._commit(txs, *self._apply(txs), meta=meta)

    async def produce_one_async(self) -> BlockHeader | None:
        """As produce_one, without holding reads back while a big block is computed, and with
        the automatic garbage collector off until the block's working set is freed."""
        with collector_paused():
            return await self._produce_one_async()

    async def _produce_one_async(self) -> BlockHeader | None:
        """The block, computed on the event loop (see produce_one_async).

        The block is computed on the event loop in turns of the work lane (`node.lane`: a
        turn runs for at most its slice, after the reads waiting; the producer's turns go
        before the tx batches') (apply_block_steps, prepare_block_steps): in a worker thread
        it would share the GIL with the loop, and every LevelDB call or socket operation of
        either side would then wait for the other's switch interval (scripts/bench node
        measured reads 5x slower that way). The commit is steps too: the LevelDB batch is
        filled in slices and written in a worker thread (an Offload: LevelDB writes without the
        GIL) while readers see the previous version, and the head moves in the same step the
        write returns. The mempool is touched here only."""
        txs = self.mempool.take(self.max_block_txs)
        env = self._next_env()
        started = time.perf_counter()
        try:
            result = await drive_in_slices(self._apply_steps(env, txs), self.lane)
        except InvariantViolation as violation:
            return self._commit(txs, env, violation, started, time.perf_counter())
        prepared = await drive_in_slices(self._prepare_steps(env, txs, result), self.lane)
        applied = time.perf_counter()
        # The batch is filled in slices too; its synced write and the swap of the root are
        # the last step, so readers see the previous block whole until then.
        header = await drive_in_slices(commit_prepared_steps(self.store, prepared), self.lane)
        self._committed(txs, header, started, applied, result)
        await trio.lowlevel.checkpoint()  # let reads in before the publication
        self._publish(header, result)
        return header

    def _full_scan(self, env: BlockEnv) -> bool:
        """The invariant scans over every position and account run every
        `invariant_scan_blocks` blocks; the per-market ones (the funding index) every block."""
        return env.height % self.invariant_scan_blocks == 0

    def _apply_steps(self, env: BlockEnv, txs: list[Any]) -> Steps[Any]:
        # Signatures were verified at admission; followers re-verify on re-execution.
        return apply_block_steps(
            self.store,
            env,
            txs,
            verify_signatures=False,
            invariants=self.check_invariants or not self.fault_injection,
            full_scan=self._full_scan(env),
        )

    def _next_env(self) -> BlockEnv:
        head = self.status.head
        if head is None:
            raise RuntimeError("the producer has no head block")
        return BlockEnv(
            chain_id=head.chain_id,
            height=head.height + 1,
            time_ms=max(self.clock.now_ms(), head.time_ms + 1),
        )

    def _prepare_steps(self, env: BlockEnv, txs: list[Any], result: Any) -> Steps[PreparedBlock]:
        receipts = BlockReceipts(receipts=result.receipts, block_events=result.events)
        raw = [tx.raw for tx in txs]
        return prepare_block_steps(
            self.store, self.key, self.status.head, env, result.writes, raw, receipts
        )

    def _apply(self, txs: list[Any]) -> tuple[BlockEnv, Any, float, float]:
        """The block's steps then prepare_block_steps, driven on this thread; the result is a
        PreparedBlock plus the block's result, or the InvariantViolation."""
        env = self._next_env()
        started = time.perf_counter()
        try:
            result: Any = drive(self._apply_steps(env, txs))
        except InvariantViolation as violation:
            return env, violation, started, time.perf_counter()
        prepared = drive(self._prepare_steps(env, txs, result))
        return env, (prepared, result), started, time.perf_counter()

    def _commit(
        self,
        txs: list[Any],
        env: BlockEnv,
        outcome: Any,
        started: float,
        applied: float,
        *,
        meta: BlockMeta | None = None,
    ) -> BlockHeader | None:
        if isinstance(outcome, InvariantViolation):
            if self.metrics:
                self.metrics.invariant_failures.inc()
            self.halt(f"invariant violated at height {env.height}: {outcome}")
            self.mempool.settle()
            return None
        prepared, result = outcome
        header = commit_prepared(self.store, prepared, meta)
        self._committed(txs, header, started, applied, result)
        log_block_alerts(logger, header.height, result)
        self._publish(header, result)
        return header

    def _committed(
        self, txs: list[Any], header: BlockHeader, started: float, applied: float, result: Any
    ) -> None:
        """The head moves on: status, metrics and the block's log line."""
        head = self.status.head
        if head is None:
            raise RuntimeError("the producer has no head block")
        done = time.perf_counter()
        self.status.head = header
        self.status.committed_txs += len(txs)
        self.mempool.settle()  # their receipts answer from here on
        if self.metrics:
            self.metrics.observe_block(
                height=header.height,
                txs=len(txs),
                interval_ms=header.time_ms - head.time_ms,
                apply_ms=(applied - started) * 1000,
                commit_ms=(done - applied) * 1000,
                codes=[receipt.code for receipt in result.receipts],
            )
            self.metrics.mempool_size.set(len(self.mempool))
        # Every tx taken for this block is now committed: the journal can forget it.
        self.mempool.compact_journal()
        log_event(
            logger,
            "block.committed",
            level=logging.INFO if txs else logging.DEBUG,
            height=header.height,
            txs=len(txs),
            root=short_hex(header.state_root),
            apply_ms=round((applied - started) * 1000, 1),
            commit_ms=round((done - applied) * 1000, 1),
        )

    def _publish(self, header: BlockHeader, result: Any) -> None:
        if self.broadcaster is not None:
            publish_block(self.broadcaster, header, result.receipts, result.events)

    async def run(self) -> None:
        """Produce a block every interval while producing; sleep while halted."""
        if self.status.mode == "starting":
            self.status.mode = "producing"
            if self.metrics:
                self.metrics.set_mode("producing")
        while True:
            head = self.status.head
            if head is None:
                raise RuntimeError("the producer has no head block")
            await self.clock.sleep_until_ms(head.time_ms + self.interval_ms)
            if self.status.mode != "producing":
                await trio.sleep(self.interval_ms / 1000)
                continue
            async with self.lock:
                if self.status.mode == "producing":
                    await self.produce_one_async()
            await trio.lowlevel.checkpoint()
