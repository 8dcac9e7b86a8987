"""Crash safety of the store: a child process is SIGKILLed at random moments during commits and
during rollback; every reopen must find a committed version whose root verifies, with no
acknowledged commit lost and any interrupted rollback completed (DESIGN.md decisions 3 and 6).

60 kills in all. Kill times are seeded; a failure prints the seed and round.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.store import VersionedStore
from tests.store.crash_child import index_for, model_state, records_for, writes_for

ROOT = Path(__file__).resolve().parents[2]


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _kill_after(child: subprocess.Popen[str], delay_s: float) -> list[str]:
    """Wait for `ready`, sleep `delay_s`, SIGKILL; return every line the child printed."""
    assert child.stdout is not None
    first = child.stdout.readline()
    assert first.strip() == "ready", (first, child.stderr.read() if child.stderr else "")
    time.sleep(delay_s)
    child.send_signal(signal.SIGKILL)
    out, err = child.communicate(timeout=30)
    assert child.returncode in (-signal.SIGKILL, 0), err
    return out.splitlines()


def _check_state(store: VersionedStore, seed: int) -> None:
    expected = sorted(model_state(seed, store.height).items()) if store.height >= 0 else []
    assert list(store.iter_prefix(b"")) == expected


@pytest.mark.parametrize("seed", [11, 12])
def test_sigkill_during_commits_never_loses_an_acknowledged_commit(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    path = str(tmp_path / "db")
    acked: dict[int, str] = {}
    for kill in range(20):
        lines = _kill_after(_spawn("commit", path, str(seed)), rng.uniform(0.0, 0.12))
        for line in lines:
            word, height, root = line.split()
            assert word == "ack"
            acked[int(height)] = root
        last_acked = max(acked, default=-1)
        context = f"seed={seed} kill={kill} last_acked={last_acked}"
        with VersionedStore.open(path) as store:  # verify_on_open rebuilds and checks the root
            assert last_acked <= store.height <= last_acked + 1, context
            store.verify()
            for height, root in acked.items():
                assert store.root(height).hex() == root, context
            _check_state(store, seed)
            if store.height >= 0:
                height = store.height
                assert store.record(height, "block") == records_for(seed, height)["block"]
                for key, value in index_for(seed, height).items():
                    assert store.index_get(key) == value, context
            if store.height > last_acked:  # committed but killed before the ack was printed
                acked[store.height] = store.root().hex()
    assert len(acked) > 20  # the kills did land among commits


def _prepare(path: str, seed: int, heights: int) -> list[bytes]:
    with VersionedStore.open(path) as store:
        return [
            store.commit(
                writes_for(seed, h), records=records_for(seed, h), index=index_for(seed, h)
            )
            for h in range(heights)
        ]


@pytest.mark.parametrize("seed", [21, 22])
def test_sigkill_during_rollback_resumes_or_leaves_the_head_intact(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    completed = interrupted = resumed = 0
    for kill in range(10):
        path = str(tmp_path / f"db{kill}")
        roots = _prepare(path, seed, 120)
        target = rng.randrange(0, 60)
        lines = _kill_after(_spawn("rollback", path, str(target)), rng.uniform(0.0, 0.03))
        context = f"seed={seed} kill={kill} target={target} lines={lines}"
        with VersionedStore.open(path) as store:
            store.verify()
            if store.height == target:  # finished by the child or resumed by this open
                completed += 1
                resumed += not any(line.startswith("done") for line in lines)
                assert store.root() == roots[target], context
                assert [f.from_height for f in store.forks()] == [119], context
                assert store.record(target + 1, "block") is None
                assert store.index_get(b"tx%d" % (target + 1)) is None
                assert store.archived_record(store.forks()[0].fork_id, 119, "block") is not None
            else:  # killed before the marker: the head is untouched
                interrupted += 1
                assert store.height == 119 and store.root() == roots[119], context
                assert store.forks() == [], context
            _check_state(store, seed)
            assert store.verify_history() == store.height + 1
    assert completed > 0, "no kill landed after the rollback began"
    print(
        f"rollback kills: {completed} completed ({resumed} resumed by open), {interrupted} before"
    )
