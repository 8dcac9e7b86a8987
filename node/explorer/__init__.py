"""The devnet explorer and operator console: read-only pages served by the node's public
listener (docs/EXPLORER.md). `build_explorer` wires it from the node's public method table;
node.app mounts it. Imports node.rpc, node.store, node.ops, node.chain, node.client, node.core.
"""

from __future__ import annotations

from node.chain.producer import ChainStatus
from node.core.genesis import Genesis
from node.explorer.app import Explorer
from node.explorer.peers import PeerWatch, parse_peers
from node.explorer.views import ReadOnlyRpc, Views
from node.lane import WorkLane
from node.rpc.jsonrpc import MethodTable
from node.store import VersionedStore


def build_explorer(
    public: MethodTable,
    *,
    store: VersionedStore,
    genesis: Genesis,
    status: ChainStatus,
    peers: str = "",
    deadline_ms: int = 10_000,
    lane: WorkLane | None = None,
) -> tuple[Explorer, PeerWatch | None]:
    """The ASGI app of the pages, and the task that watches `peers` (None without peers).
    `lane`: the public listener's work lane (the producer's), for the pages' heavy reads."""
    urls = parse_peers(peers)
    watch = PeerWatch(store, urls) if urls else None
    views = Views(
        rpc=ReadOnlyRpc(public), store=store, genesis=genesis, status=status, peers=watch, lane=lane
    )
    return Explorer(views, deadline_ms=deadline_ms), watch


__all__ = ["Explorer", "PeerWatch", "build_explorer"]
