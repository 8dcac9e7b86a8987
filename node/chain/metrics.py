"""Prometheus metrics of a running node, one `Metrics` object per node, in its own registry.

Lives in node/chain because the producer and mempool update most of it and chain may not
import node.rpc; node/rpc/metrics_app.py serves it at 127.0.0.1:9560/metrics. Imports
prometheus_client and the stdlib only. Durations are exported in seconds (Prometheus
convention); the `observe_*` helpers take the milliseconds the runtime measures.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

_MS_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_INTERVAL_BUCKETS_S = (0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
_TX_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
MODES = ("producing", "following", "halted", "maintenance", "starting")
TX_OUTCOMES = ("ok", "rejected")  # perpchain_txs_committed{outcome}: receipt code 0, or not


class Metrics:
    """Gauges, counters and histograms of one node. Cheap to update from trio tasks."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:  # process_cpu_seconds_total, process_resident_memory_bytes, python_info
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.height = Gauge("perpchain_height", "Height of the latest committed block", registry=r)
        self.block_interval = Histogram(
            "perpchain_block_interval_seconds",
            "Time between consecutive committed blocks (block time_ms difference)",
            buckets=_INTERVAL_BUCKETS_S,
            registry=r,
        )
        self.txs_per_block = Histogram(
            "perpchain_txs_per_block",
            "Transactions in each committed block",
            buckets=_TX_BUCKETS,
            registry=r,
        )
        self.txs_committed = Counter(
            "perpchain_txs_committed",
            "Transactions committed, by receipt outcome",
            ["outcome"],
            registry=r,
        )
        for outcome in TX_OUTCOMES:  # both series exist (at 0) before the first block
            self.txs_committed.labels(outcome=outcome)
        self.mempool_size = Gauge(
            "perpchain_mempool_size", "Transactions waiting in the mempool", registry=r
        )
        self.apply_seconds = Histogram(
            "perpchain_apply_seconds",
            "apply_block plus invariant checks, per block",
            buckets=_MS_BUCKETS_S,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "perpchain_commit_seconds",
            "Atomic store commit of one block (state, block, receipts)",
            buckets=_MS_BUCKETS_S,
            registry=r,
        )
        self.invariant_failures = Counter(
            "perpchain_invariant_failures",
            "Blocks refused because an invariant failed",
            registry=r,
        )
        self.mode = Gauge(
            "perpchain_mode",
            "1 for the node's current mode, 0 for the others",
            ["mode"],
            registry=r,
        )
        self.rpc_requests = Counter(
            "perpchain_rpc_requests",
            "JSON-RPC requests by listener, method ('-' if unknown) and outcome",
            ["listener", "method", "outcome"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "perpchain_rpc_seconds",
            "JSON-RPC request handling time",
            ["listener"],
            buckets=_MS_BUCKETS_S,
            registry=r,
        )
        self.ws_connections = Gauge(
            "perpchain_ws_connections", "Open WebSocket connections", registry=r
        )
        self.subscribers_dropped = Counter(
            "perpchain_subscribers_dropped", "Subscriptions dropped for falling behind", registry=r
        )
        self.set_mode("starting")

    def observe_block(
        self,
        *,
        height: int,
        txs: int,
        interval_ms: int | None,
        apply_ms: float,
        commit_ms: float,
        codes: Sequence[int] = (),
    ) -> None:
        """After a block is committed. `interval_ms` is None for the first block seen; `codes`
        are the block's receipt codes (0 = ok), counted into perpchain_txs_committed."""
        self.height.set(height)
        self.txs_per_block.observe(txs)
        ok = sum(1 for code in codes if code == 0)
        if ok:
            self.txs_committed.labels(outcome="ok").inc(ok)
        if len(codes) > ok:
            self.txs_committed.labels(outcome="rejected").inc(len(codes) - ok)
        if interval_ms is not None:
            self.block_interval.observe(interval_ms / 1000)
        self.apply_seconds.observe(apply_ms / 1000)
        self.commit_seconds.observe(commit_ms / 1000)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} must be one of {MODES}")
        for name in MODES:
            self.mode.labels(mode=name).set(1 if name == mode else 0)

    def observe_rpc(self, listener: str, method: str, outcome: str, seconds: float) -> None:
        self.rpc_requests.labels(listener=listener, method=method, outcome=outcome).inc()
        self.rpc_seconds.labels(listener=listener).observe(seconds)
