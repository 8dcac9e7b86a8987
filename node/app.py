"""Wiring of a producing node: home initialisation (genesis -> block 0), startup reconciliation,
the producer task and the RPC listeners, clean shutdown. Imports every layer; nothing imports it
but the CLI and the devnet launcher.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import trio

from node.chain.admission import CheckPool
from node.chain.broadcast import Broadcaster
from node.chain.clock import Clock, SystemClock
from node.chain.follower import Follower
from node.chain.journal import JOURNAL_FILE, TxJournal
from node.chain.mempool import Mempool
from node.chain.metrics import Metrics
from node.chain.producer import ChainStatus, Producer, commit_block
from node.commands import FaultCommands, WriterCommands
from node.config import NodeConfig, default_config_toml, fault_injection_refusal
from node.core.blocks import (
    BlockEnv,
    BlockHeader,
    BlockReceipts,
    header_hash,
    verify_header_signature,
)
from node.core.crypto import SigningKey
from node.core.genesis import Genesis, genesis_writes, parse_genesis
from node.explorer import build_explorer
from node.lane import WorkLane
from node.log import log_event, short_hex
from node.ops.restore import RestoreRefused, startup_check
from node.rpc.admin_token import ensure_admin_token
from node.rpc.health import chain_health
from node.rpc.methods import NodeContext, build_tables
from node.rpc.server import BoundListeners, serve_node_listeners
from node.store import VersionedStore, blocks_db

logger = logging.getLogger("perpchain.node")

GENESIS_FILE = "genesis.json"
DATA_DIR = "data"
PRODUCER_KEY_FILE = "producer.key"
OPERATOR_KEY_FILE = "operator.key"
NODE_GC_YOUNG = 20_000  # young-generation threshold of a running node (see run_node)


class NodeError(ValueError):
    """A node cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class InitResult:
    home: pathlib.Path
    chain_id: str
    genesis_hash: str
    state_root: str


def _write_private(path: pathlib.Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def init_home(
    home: pathlib.Path,
    genesis_doc: dict[str, Any],
    *,
    producer_seed: bytes | None = None,
    operator_seed: bytes | None = None,
    overwrite: bool = False,
    follower: bool = False,
) -> InitResult:
    """Create a node home: genesis.json, config.toml, keys, and the store with block 0.

    Devnet genesis keys are derived from labels; when `producer_seed` is not given and the
    genesis producer is the devnet label key, that key is used. A follower home holds no keys
    and an empty store: block 0 comes from the source and is checked against the genesis."""
    genesis = parse_genesis(genesis_doc)
    home = pathlib.Path(home)
    if (home / DATA_DIR).exists() and not overwrite:
        raise NodeError(f"{home} already holds a node (data/ exists); use another --home")
    home.mkdir(parents=True, exist_ok=True)
    if follower:
        (home / GENESIS_FILE).write_text(json.dumps(genesis_doc, indent=2) + "\n")
        if not (home / "config.toml").exists():
            (home / "config.toml").write_text(default_config_toml())
        ensure_admin_token(home / "admin.token")
        VersionedStore.open(home / DATA_DIR).close()
        root = genesis_root(genesis)
        log_event(logger, "node.initialised", home=home, follower=True, root=short_hex(root))
        return InitResult(home, genesis.chain_id.decode(), "", root.hex())
    producer = _pick_key(producer_seed, "devnet/producer", genesis.producer_key, "producer")
    operator = None
    if (
        operator_seed is not None
        or SigningKey.from_label("devnet/operator").public_key == genesis.operator_key
    ):
        operator = _pick_key(operator_seed, "devnet/operator", genesis.operator_key, "operator")
    (home / GENESIS_FILE).write_text(json.dumps(genesis_doc, indent=2) + "\n")
    if not (home / "config.toml").exists():
        (home / "config.toml").write_text(default_config_toml())
    _write_private(home / PRODUCER_KEY_FILE, producer[1].hex() + "\n")
    if operator is not None:
        _write_private(home / OPERATOR_KEY_FILE, operator[1].hex() + "\n")
    ensure_admin_token(home / "admin.token")
    with VersionedStore.open(home / DATA_DIR) as store:
        if store.height >= 0:
            raise NodeError(f"{home / DATA_DIR} already has blocks")
        env = BlockEnv(chain_id=genesis.chain_id, height=0, time_ms=genesis.genesis_time_ms)
        header = commit_block(
            store,
            producer[0],
            None,
            env,
            genesis_writes(genesis),
            [],
            BlockReceipts(receipts=(), block_events=()),
        )
    log_event(
        logger,
        "node.initialised",
        home=home,
        chain_id=genesis.chain_id.decode(),
        root=short_hex(header.state_root),
    )
    return InitResult(
        home, genesis.chain_id.decode(), header_hash(header).hex(), header.state_root.hex()
    )


def genesis_root(genesis: Genesis) -> bytes:
    """The state root block 0 must carry, computed in a scratch in-memory tree."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch, VersionedStore.open(scratch) as store:
        return store.stage(dict(genesis_writes(genesis))).root


def _pick_key(
    seed: bytes | None, label: str, expected: bytes, role: str
) -> tuple[SigningKey, bytes]:
    if seed is None:
        seed = SigningKey.label_seed(label)
        if SigningKey(seed).public_key != expected:
            raise NodeError(f"the genesis {role} key is not a devnet key: give its seed")
    key = SigningKey(seed)
    if key.public_key != expected:
        raise NodeError(f"the {role} seed does not match the genesis {role} key")
    return key, seed


def load_key(home: pathlib.Path, name: str, env_var: str) -> SigningKey | None:
    text = os.environ.get(env_var)
    path = home / name
    if text is None and path.exists():
        text = path.read_text()
    if text is None:
        return None
    try:
        return SigningKey(bytes.fromhex(text.strip()))
    except ValueError:
        raise NodeError(f"{env_var or path}: not a 32-byte hex seed") from None


def load_genesis(home: pathlib.Path) -> Genesis:
    path = home / GENESIS_FILE
    if not path.exists():
        raise NodeError(f"{home} is not a node home (no {GENESIS_FILE}); run `perpchain init`")
    return parse_genesis(json.loads(path.read_text()))


def reconcile(
    store: VersionedStore, genesis: Genesis, *, allow_empty: bool = False
) -> BlockHeader | None:
    """Startup: the head block must exist, be signed by the genesis producer, and carry the
    store's root (recomputed from the flat state by `verify`). Refuses otherwise. A follower
    may start empty (None): it fetches and checks block 0 from its source."""
    if store.height < 0:
        if allow_empty:
            return None
        raise NodeError("the store has no blocks; run `perpchain init`")
    store.verify()
    block = blocks_db.get_block(store, store.height)
    if block is None:
        raise NodeError(f"no block record at head height {store.height}")
    header = block.header
    if header.chain_id != genesis.chain_id:
        raise NodeError(
            f"head block of chain {header.chain_id!r}, genesis says {genesis.chain_id!r}"
        )
    if not verify_header_signature(header, genesis.producer_key):
        raise NodeError(f"head block {header.height} is not signed by the genesis producer")
    if header.state_root != store.root():
        raise NodeError(
            f"invalid state root at height {header.height}: header {header.state_root.hex()}, "
            f"store {store.root().hex()}; refusing to produce (see `perpchain verify`)"
        )
    return header


def startup_restore(
    store: VersionedStore,
    genesis: Genesis,
    *,
    auto_restore: bool,
    producer: SigningKey,
    operator: SigningKey | None,
    now_ms: int,
    home: pathlib.Path,
) -> None:
    """Before producing: finish an interrupted rollback, verify the state (flat rehash, replay
    from the latest checkpoint) and, on an invalid state, restore it (auto_restore) or refuse
    with the exact command."""
    try:
        for action in startup_check(
            store,
            genesis,
            auto_restore=auto_restore,
            producer=producer,
            operator=operator,
            now_ms=now_ms,
            home=str(home),
        ):
            log_event(logger, "node.restored", level=logging.WARNING, action=action)
    except RestoreRefused as refused:
        raise NodeError(str(refused)) from None


def readmit_journal(mempool: Mempool, journal: TxJournal) -> None:
    """Startup of a producer: re-admit the txs a previous run accepted and journalled but did
    not include (a kill -9 before their block), through the normal admission path."""
    started = time.perf_counter()
    readmitted, dropped, torn = mempool.readmit(journal)
    log_event(
        logger,
        "journal.replayed",
        level=logging.INFO if readmitted or dropped or torn else logging.DEBUG,
        readmitted=readmitted,
        dropped=dropped,
        torn_bytes=torn,
        ms=round((time.perf_counter() - started) * 1000, 1),
    )


async def run_node(
    config: NodeConfig,
    *,
    clock: Clock | None = None,
    task_status: trio.TaskStatus[BoundListeners] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open, reconcile, produce (or follow `config.follow_url`) and serve until cancelled; the
    store is closed on the way out."""
    home = config.home
    genesis = load_genesis(home)
    following = config.follow_url is not None
    if config.testing.fault_injection:
        # NodeConfig.load refused it already; this covers a config built another way.
        refusal = fault_injection_refusal(genesis.chain_id.decode(errors="replace"))
        if refusal:
            raise NodeError(refusal)
    # The event loop (RPC) shares the GIL with worker threads (a follower re-executing a block,
    # a rollback, snapshot work): hand it back within 1 ms instead of Python's default 5 ms.
    # The producer builds blocks on the loop itself, in slices (Producer.produce_one_async).
    sys.setswitchinterval(0.001)
    producer_key = None
    if not following:
        producer_key = load_key(home, PRODUCER_KEY_FILE, "PERPCHAIN_PRODUCER_KEY")
        if producer_key is None or producer_key.public_key != genesis.producer_key:
            raise NodeError(
                "no producer key matching the genesis producer (producer.key); "
                "to run a follower give --follow URL"
            )
    store = VersionedStore.open(home / DATA_DIR, verify_on_open=following)
    # The store raises the young GC generation to 100,000 objects for batch work (commits,
    # verify, rollback). A serving node collects more often instead: every closed HTTP
    # connection leaves ~28 cyclic objects in hypercorn, and at the devnet's load a young
    # collection of 100,000 of them paused the loop 240-300 ms; at 20,000, 45-70 ms (a 4-5 min
    # sequencer soak each, docs/PERFORMANCE.md).
    gc.set_threshold(NODE_GC_YOUNG, *gc.get_threshold()[1:])
    pool: CheckPool | None = None
    journal: TxJournal | None = None
    try:
        if not following:
            operator_key = load_key(home, OPERATOR_KEY_FILE, "PERPCHAIN_OPERATOR_KEY")
            if producer_key is None:
                raise RuntimeError("a producing node needs its producer key")
            startup_restore(
                store,
                genesis,
                auto_restore=config.auto_restore,
                producer=producer_key,
                operator=operator_key,
                now_ms=(clock or SystemClock()).now_ms(),
                home=home,
            )
        head = reconcile(store, genesis, allow_empty=following)
        log_event(
            logger,
            "node.reconciled",
            height=store.height,
            root=short_hex(head.state_root) if head else "-",
        )
        status = ChainStatus(head=head)
        metrics = Metrics()
        broadcaster = Broadcaster()
        # The producer's block steps and the public listener's batches take turns in one lane,
        # after the reads (node.lane). A follower's batches forward their txs to the source and
        # would hold a lane across that wait: none there.
        lane = None if following else WorkLane()
        if following:
            if config.follow_url is None:
                raise RuntimeError("a follower needs follow_url")
            follower = Follower(
                store, genesis, config.follow_url, status, broadcaster=broadcaster, metrics=metrics
            )
            context = NodeContext(store, genesis, status, None, None, follower.forward_tx)
            writer = follower.run
        else:
            if producer_key is None:
                raise RuntimeError("a producing node needs its producer key")
            operator = operator_key
            if config.mempool.check_workers:
                pool = CheckPool(
                    genesis.chain_id,
                    config.mempool.max_tx_bytes,
                    workers=config.mempool.check_workers,
                )
            mempool = Mempool(
                genesis.chain_id,
                config.mempool,
                store,
                genesis.params.nonce_window,
                pool=pool,
            )
            producer = Producer(
                store,
                producer_key,
                mempool,
                clock or SystemClock(),
                interval_ms=config.block_interval_ms,
                max_block_txs=config.block_max_txs,
                invariant_scan_blocks=config.invariant_scan_blocks,
                status=status,
                broadcaster=broadcaster,
                metrics=metrics,
                lane=lane,
            )
            if config.mempool.journal:
                journal = TxJournal(
                    home / JOURNAL_FILE,
                    sync_ms=config.mempool.journal_sync_ms,
                    max_bytes=config.mempool.journal_max_bytes,
                )
                readmit_journal(mempool, journal)
            window = store.maintenance()
            if window is not None:
                # Stored by `maintenance begin` (issue 13): a node restarted inside the window
                # serves reads, refuses txs (2002) and produces nothing until `maintenance end`
                # passes its checks. The pin and epoch were written in the marker's batch.
                producer.enter_maintenance(window)
                log_event(
                    logger,
                    "maintenance.resumed",
                    level=logging.WARNING,
                    height=store.height,
                    checkpoint=window.checkpoint,
                    epoch=window.epoch,
                    reason=window.reason,
                )
            commands = WriterCommands(producer, operator, genesis)
            context = NodeContext(store, genesis, status, mempool, commands)
            if config.testing.fault_injection:
                context.inject_fault = FaultCommands(commands).inject_fault
                log_event(
                    logger,
                    "node.fault_injection",
                    level=logging.WARNING,
                    chain_id=genesis.chain_id.decode(),
                    note="test-only admin_injectFault registered",
                )
            writer = producer.run
        public, admin = build_tables(context)
        # The read-only explorer pages on the public listener (docs/EXPLORER.md).
        explorer, peer_watch = (
            build_explorer(
                public,
                store=store,
                genesis=genesis,
                status=status,
                peers=config.explorer.peers,
                deadline_ms=config.rpc.deadline_ms,
                lane=lane,
            )
            if config.explorer.enabled
            else (None, None)
        )

        health = chain_health(lambda: store.height, status)
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(
                lambda task_status: serve_node_listeners(
                    config,
                    public=public,
                    admin=admin,
                    broadcaster=broadcaster,
                    health=health,
                    metrics=metrics,
                    lane=lane,
                    pages=explorer,
                    task_status=task_status,
                )
            )
            nursery.start_soon(writer)
            if peer_watch is not None:
                nursery.start_soon(peer_watch.run)
            if journal is not None:
                nursery.start_soon(journal.run_sync_loop)
            task_status.started(bound)
    finally:
        if journal is not None:
            journal.close()
        if pool is not None:
            pool.close()
        store.close()
        log_event(logger, "node.stopped", home=home)
