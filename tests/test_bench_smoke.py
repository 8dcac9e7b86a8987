"""The benchmarks run end to end at toy sizes and print the figures they promise (no timing
goals here: those live in the benchmarks themselves)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _run(module: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", module, "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_store_bench_reports_every_figure() -> None:
    report = _run("benchmarks.store", "--keys", "3000", "--blocks", "4", "--updates", "200")
    ours = report["ours"]
    assert isinstance(ours, dict)
    for field in (
        "updates_per_s",
        "proofs_per_s",
        "proof_bytes_mean",
        "verify_proof_per_s",
        "rollback_rows_per_s",
        "verify_keys_per_s",
    ):
        assert isinstance(ours[field], int) and ours[field] > 0, field
    ceilings = report["ceilings"]
    assert isinstance(ceilings, dict) and ceilings["sha256_per_s"] > 0
    if report["peer"] is None:
        pytest.skip("py-trie (bench extra) not installed: peer columns not checked")
    peer = report["peer"]
    assert isinstance(peer, dict) and peer["updates_per_s"] > 0


def test_snapshot_bench_reports_every_figure() -> None:
    report = _run("benchmarks.snapshot", "--keys", "3000")
    figures = report["snapshot"]
    assert isinstance(figures, dict)
    for field in ("export_head_keys_per_s", "export_old_keys_per_s", "import_keys_per_s"):
        assert isinstance(figures[field], int) and figures[field] > 0, field


def test_ops_bench_reports_rollback_history_and_replay() -> None:
    report = _run(
        "benchmarks.ops",
        *("--blocks", "24", "--short", "12", "--txs-per-block", "8", "--accounts", "30"),
        *("--depths", "2,5,10", "--repeat", "1"),
    )
    rollback = report["rollback"]
    assert isinstance(rollback, list) and [r["blocks"] for r in rollback] == [2, 5, 10]
    assert all(r["rows"] > 0 and r["seconds"] > 0 and r["chain_blocks"] == 24 for r in rollback)
    history = report["history"]
    assert isinstance(history, dict)
    assert history["short"]["chain_blocks"] == 12 and history["long"]["chain_blocks"] == 24
    assert history["ratio_long_to_short"] > 0
    replay = report["replay"]
    assert isinstance(replay, dict)
    assert replay["blocks"] == 25 and replay["txs"] == 24 * 8 and replay["txs_per_s"] > 0
    build = report["build"]
    assert isinstance(build, dict) and build["fills"] > 0


def test_node_bench_reports_both_floods_and_the_reads() -> None:
    report = _run("benchmarks.node", "--orders", "400", "--read-rate", "50")
    assert report["committed"] == report["under_reads_committed"] == 400
    assert report["orders_committed_per_s"] > 0 and report["under_reads_orders_committed_per_s"] > 0
    assert report["reads"] > 0 and report["read_keep_alive"] is True
    assert report["read_p50_ms"] <= report["read_p99_ms"] <= report["read_max_ms"]
    assert report["ed25519_verify_per_s"] > 0


def test_store_scale_bench_prints_every_figure() -> None:
    """`scripts/bench store --scale` at a toy N: every row of its table and every JSON field
    (RSS, bytes/key, load, both reopens, blocks, proofs, verify, py-trie's blocks)."""
    from benchmarks.store_scale import ROWS

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.store", "--scale", "--json"]
        + ["--keys", "20000", "--blocks", "5", "--peer-keys", "3000"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    for label, _ in ROWS:
        assert any(line.startswith(label) for line in lines), label
    assert any(line.startswith("target reopen <= 1 s at 1M") for line in lines)
    ours = report["ours"]
    assert isinstance(ours, list) and len(ours) == 1 and ours[0]["keys"] == 20_000
    for field in (
        "rss_after_load_mib",
        "bytes_per_key",
        "load_keys_per_s",
        "rss_fresh_open_mib",
        "fresh_bytes_per_key",
        "fresh_open_s",
        "reopen_s",
        "reopen_rehash_s",
        "updates_per_s",
        "block_ms_p50",
        "proof_bytes_mean",
        "proofs_per_s",
        "verify_keys_per_s",
    ):
        assert isinstance(ours[0][field], int | float) and ours[0][field] > 0, field
    assert set(report["targets"]) >= {"RSS <= 1.5 GiB at 10M", "reopen <= 1 s at 1M"}
    if report["peer"] is None:
        pytest.skip("py-trie (bench extra) not installed: peer columns not checked")
    peer = report["peer"]
    assert peer["keys"] == 3000 and peer["updates_per_s"] > 0 and peer["load_keys_per_s"] > 0


def test_store_scale_bench_pairs_the_block_workloads_in_rounds() -> None:
    """At py-trie's N, both stores are kept and their block workloads run again in alternating
    rounds (each from where the last left off); the target's ratio is the paired one."""
    pytest.importorskip("trie", reason="py-trie (bench extra) not installed: no paired rounds")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.store", "--scale", "--json"]
        + ["--keys", "3000", "--peer-keys", "3000", "--blocks", "4", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    paired = report["paired"]
    assert paired["rounds"] == 2 and paired["blocks_per_round"] == 2
    assert paired["ours_updates_per_s"] > 0 and paired["peer_updates_per_s"] > 0
    assert len(paired["round_ratios"]) == 2
    assert "in 2 paired rounds" in report["targets"]["block workload >= 15x py-trie at 1M"]
    assert "root" not in report["peer"]
