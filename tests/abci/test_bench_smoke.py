"""`scripts/bench abci` end to end at a toy size: it prints its figures and the native and
ABCI state roots agree at every height (no timing goal here)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.abci.harness import ROOT


def test_abci_bench_reports_its_figures_and_equal_roots() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.abci",
            "--json",
            "--blocks",
            "2",
            "--txs",
            "60",
            "--accounts",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["roots_equal"] is True
    for field in (
        "native_orders_per_s",
        "abci_orders_per_s",
        "abci_cold_orders_per_s",
        "check_tx_per_s",
    ):
        assert report[field] > 0, field
