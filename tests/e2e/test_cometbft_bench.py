"""`./scripts/bench testnet` at a toy size (one validator, three seconds): it runs on the real
engine and reports its figures; nothing about them is asserted but that blocks were read."""

from __future__ import annotations

import pathlib

from benchmarks.testnet import measure, text
from tests.e2e.cometbft import engine, worker_ports


def test_testnet_bench_reports_committed_orders_and_block_time(tmp_path: pathlib.Path) -> None:
    engine()  # skip (or fail under PERPTEST_REQUIRE_COMETBFT=1) without the engine
    figures = measure(
        tmp_path / "testnet",
        validators=1,
        duration_s=3,
        senders=2,
        accounts=20,
        ports=worker_ports(1, slot=2),
    )
    assert figures["blocks"] >= 1 and figures["committed_txs"] > 0, figures
    assert figures["block_time_ms"]["mean"] is not None, figures
    assert "committed" in text(figures)
