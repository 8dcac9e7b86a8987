"""Wiring of a validator's application process: `perpchain start --abci ADDRESS`. Imports
every layer below it (node.app for the home's files, node.rpc for the JSON-RPC listeners).

One store, one PerpApplication behind every ABCI connection, and the node's usual JSON-RPC
listeners reading the same store: `perp_*` reads, blocks and receipts as on any node;
`tx_submit` forwarded to CometBFT's `broadcast_tx_sync` (`--comet-rpc`). The admin surface
has no writer here: under consensus, blocks come only from CometBFT.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

import trio

from node.abci.application import PerpApplication
from node.abci.comet import CometRpc
from node.abci.server import serve_abci
from node.abci.snapshots import SnapshotManager
from node.app import DATA_DIR, GENESIS_FILE, NODE_GC_YOUNG, NodeError
from node.chain.broadcast import Broadcaster
from node.chain.metrics import Metrics
from node.chain.producer import ChainStatus
from node.config import NodeConfig
from node.core.genesis import GenesisError, parse_genesis
from node.lane import WorkLane
from node.log import log_event, short_hex
from node.rpc.errors import ErrorCode, RpcError
from node.rpc.health import chain_health
from node.rpc.methods import NodeContext, build_tables
from node.rpc.server import BoundListeners, serve_node_listeners
from node.store import VersionedStore, blocks_db

logger = logging.getLogger("perpchain.abci")
SNAPSHOT_DIR = "abci-snapshots"  # state-sync snapshots served to CometBFT (node.abci.snapshots)


@dataclass(frozen=True)
class AbciBound:
    abci: str
    rpc: BoundListeners


def check_head(store: VersionedStore, chain_id: bytes) -> None:
    """Startup: the store verifies (flat state rehashed to the head root) and its head has
    its block record, of our chain, carrying that root. Headers under ABCI are unsigned
    (docs/ABCI.md), so no producer signature is checked: CometBFT's commit is the proof."""
    if store.height < 0:
        return
    store.verify()
    block = blocks_db.get_block(store, store.height)
    if block is None:
        raise NodeError(f"no block record at head height {store.height}")
    if block.header.chain_id != chain_id:
        raise NodeError(f"head block of chain {block.header.chain_id!r}, genesis {chain_id!r}")
    if block.header.state_root != store.root():
        raise NodeError(f"invalid state root at height {store.height}; see `perpchain verify`")


async def run_abci_node(
    config: NodeConfig,
    *,
    abci_address: str,
    comet_rpc: str | None = None,
    snapshot_interval: int = 0,
    retain_blocks: int = 0,
    task_status: trio.TaskStatus[AbciBound] = trio.TASK_STATUS_IGNORED,
) -> None:
    home = config.home
    path = home / GENESIS_FILE
    if not path.exists():
        raise NodeError(f"{home} is not a node home (no {GENESIS_FILE}); run `perpchain init`")
    genesis_doc = json.loads(path.read_text())
    try:
        genesis = parse_genesis(genesis_doc)
    except GenesisError as error:
        raise NodeError(f"{path}: {error}") from None
    comet = CometRpc(comet_rpc) if comet_rpc else None
    sys.setswitchinterval(0.001)
    store = VersionedStore.open(home / DATA_DIR)
    gc.set_threshold(NODE_GC_YOUNG, *gc.get_threshold()[1:])
    try:
        check_head(store, genesis.chain_id)
        log_event(
            logger,
            "node.reconciled",
            height=store.height,
            root=short_hex(store.root()) if store.height >= 0 else "-",
            mode="abci",
        )
        status = ChainStatus()
        broadcaster = Broadcaster()
        metrics = Metrics()
        lane = WorkLane()

        async def forward_tx(raw_hex: str) -> Any:
            if comet is None:
                raise RpcError(
                    ErrorCode.NOT_PRODUCING,
                    "this validator has no CometBFT RPC to forward to (start it with --comet-rpc)",
                )
            return await comet.broadcast_tx(raw_hex)

        context = NodeContext(store, genesis, status, None, None, forward_tx)
        public, admin = build_tables(context)

        async def rpc_call(method: str, params: dict[str, Any]) -> Any:
            handler = public.get(method)
            if handler is None:
                raise RpcError(ErrorCode.METHOD_NOT_FOUND, f"no method {method}")
            return await handler(params)

        app = PerpApplication(
            store,
            genesis,
            genesis_doc,
            status=status,
            broadcaster=broadcaster,
            lane=lane,
            max_tx_bytes=config.mempool.max_tx_bytes,
            max_block_txs=config.block_max_txs,
            max_per_account=config.mempool.max_per_account,
            invariant_scan_blocks=config.invariant_scan_blocks,
            retain_blocks=retain_blocks,
            rpc_call=rpc_call,
            snapshots=SnapshotManager(
                store, genesis, home / SNAPSHOT_DIR, interval=snapshot_interval
            ),
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
                    task_status=task_status,
                )
            )
            address = await nursery.start(serve_abci, abci_address, app)
            task_status.started(AbciBound(address, bound))
    finally:
        store.close()
        log_event(logger, "node.stopped", home=home)
