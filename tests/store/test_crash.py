"""Crash safety of the store (DESIGN.md decisions 3, 6 and 7): a child process is SIGKILLed at
seeded random moments while it commits (with checkpoints, unpins and prunes between commits),
while it rolls back ~100 heights in many chunks, and while a reopen finishes an interrupted
rollback. After every kill the store must open, verify, hold every acknowledged commit with its
acknowledged root, and equal a model replay of the workload (tests/store/crash_child.py); an
interrupted rollback must be completed by the next open, or, killed before its marker, leave
the old head intact.

56 kills that interrupt a worker (32 in commits, 12 in each rollback test, not counting kills
that come after a rollback finished); a failure names the seed and the kill. Workers are
forked from one server process per test module (crash_child.py), so a kill round costs a fork,
not a start-up.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgpack
import plyvel
import pytest

from node.core import merkle
from node.store import VersionedStore, schema
from tests.store.crash_child import (
    KEYSPACE,
    index_for,
    maintenance_for,
    records_for,
    writes_for,
)

ROOT = Path(__file__).resolve().parents[2]
KEYS = [b"k%03d" % i for i in range(KEYSPACE)]


class ForkServer:
    """The parent's end of crash_child.py: run one worker at a time and SIGKILL it."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.store.crash_child"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self._live: int | None = None  # a worker not yet reaped (so its pid is still its own)
        self.kills = 0  # workers the SIGKILL interrupted

    def _send(self, line: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def _read(self) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("crash_child server died; its traceback is in the stderr above")
        return line.strip()

    def run(self, *args: object, kill_after: float | None) -> list[str]:
        """Start a worker; once it says `ready`, SIGKILL it after `kill_after` seconds (None:
        let it finish). Returns what it printed after `ready`."""
        self._send(" ".join(map(str, args)))
        word, pid = self._read().split()
        assert word == "pid"
        self._live = int(pid)
        first = self._read()
        if first == "ready" and kill_after is not None:
            time.sleep(kill_after)
            os.kill(self._live, signal.SIGKILL)  # unreaped until `reap`: never another's pid
        self._send("reap")
        lines = [] if first == "ready" else [first]
        while not (line := self._read()).startswith("exit "):
            lines.append(line)
        self._live = None
        code = int(line.split()[1])
        assert "failed" not in lines and code in (0, -signal.SIGKILL), (args, lines, code)
        self.kills += code == -signal.SIGKILL  # not a worker that had already finished
        return lines

    def close(self) -> None:
        if self._live is not None:
            os.kill(self._live, signal.SIGKILL)
            self._send("reap")
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    server = ForkServer()
    yield server
    server.close()


class Workload:
    """The model of crash_child's workload for one seed: the state after every height."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._states: list[dict[bytes, bytes]] = []

    def state(self, height: int) -> dict[bytes, bytes]:
        while len(self._states) <= height:
            state = dict(self._states[-1]) if self._states else {}
            for key, value in writes_for(self.seed, len(self._states)).items():
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
            self._states.append(state)
        return self._states[height]

    def check_height(self, store: VersionedStore, height: int, root: bytes, context: str) -> None:
        """Root, every key and one proof at a retained height match the model."""
        state = self.state(height)
        assert store.root(height) == root, context
        assert [store.get(key, height) for key in KEYS] == [state.get(key) for key in KEYS], (
            f"{context} height={height}"
        )
        key = KEYS[height % KEYSPACE]
        proof = store.prove(key, height)
        assert merkle.verify_proof(root, key, state.get(key), proof), context


def _maintenance(head: int, done: dict[int, int]) -> Iterator[tuple[dict[str, int], set[int]]]:
    """(pins, retained heights) after the commits up to `head` and their maintenance, for each
    number of steps done after `head` (heights below did `done[h]` steps, default all)."""
    pins: dict[str, int] = {}
    retained: set[int] = set()

    def apply(height: int, what: str, arg: str | int) -> None:
        if what == "checkpoint":
            pins[str(arg)] = height
        elif what == "delete_checkpoint":
            pins.pop(str(arg), None)
        else:
            before = min(int(arg), height)
            retained.difference_update(
                [h for h in retained if h < before and h not in pins.values()]
            )

    for height in range(head):
        retained.add(height)
        steps = maintenance_for(height)
        for what, arg in steps[: done.get(height, len(steps))]:
            apply(height, what, arg)
    retained.add(head)
    yield dict(pins), set(retained)
    for what, arg in maintenance_for(head):
        apply(head, what, arg)
        yield dict(pins), set(retained)


@pytest.mark.parametrize("seed", [11, 12])
def test_sigkill_during_commits_and_maintenance_loses_nothing_acknowledged(
    tmp_path: Path, server: ForkServer, seed: int
) -> None:
    rng = random.Random(seed)
    path = str(tmp_path / "db")
    model = Workload(seed)
    acked: dict[int, bytes] = {}  # height -> acknowledged (or found committed) root
    steps_acked: dict[int, int] = {}
    done: dict[int, int] = {}  # maintenance steps done after a head a kill interrupted
    kills_before = server.kills
    for kill in range(16):
        for line in server.run("commit", path, seed, kill_after=rng.uniform(0.0, 0.1)):
            word, height, value = line.split()
            if word == "ack":
                acked[int(height)] = bytes.fromhex(value)
            else:
                assert word == "op", line
                steps_acked[int(height)] = int(value) + 1
        last_acked = max(acked, default=-1)
        context = f"seed={seed} kill={kill} last_acked={last_acked}"
        with VersionedStore.open(path) as store:  # open rebuilds the tree and checks the root
            head = store.height
            # the worker starts commit h+1 only once h and its maintenance are acknowledged
            assert last_acked <= head <= last_acked + 1, context
            if head < 0:  # killed before the first commit
                assert store.root() == merkle.EMPTY_ROOT and store.retained_heights() == []
                continue
            if head > last_acked:  # committed, killed before the ack was printed
                acked[head] = store.root()
            store.verify()
            assert list(store.iter_prefix(b"")) == sorted(model.state(head).items()), context
            pins = {cp.name: cp.height for cp in store.checkpoints()}
            retained = store.retained_heights()
            outcomes = list(_maintenance(head, done))[steps_acked.get(head, 0) :]
            assert (pins, set(retained)) in outcomes, f"{context} {pins} {retained}"
            done[head] = outcomes.index((pins, set(retained))) + steps_acked.get(head, 0)
            for cp in store.checkpoints():
                assert cp.root == acked[cp.height], context
            for height in retained:
                assert store.root(height) == acked[height], context
            heights = set(pins.values()) | {head} | set(rng.sample(retained, min(2, len(retained))))
            for height in sorted(heights):
                model.check_height(store, height, acked[height], context)
            assert store.verify_history() == len(retained), context
            for height in {head, rng.randrange(head + 1)}:  # records are never pruned
                assert store.record(height, "block") == records_for(seed, height)["block"]
                for key, value in index_for(seed, height).items():
                    assert store.index_get(key) == value, context
            assert store.record(head + 1, "block") is None, context
    assert server.kills - kills_before == 16
    assert len(acked) > 40, "the workers committed too little: kills did not land among commits"


# ---------------------------------------------------------------------------- rollback

ROLLBACK_SEED = 7
TEMPLATE_HEIGHTS = 150  # pins at 20, 45 and 130, then prune(60): heights 21..44, 46..59 merged


@pytest.fixture(scope="module")
def rollback_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    path = tmp_path_factory.mktemp("rollback") / "db"
    seed = ROLLBACK_SEED
    with VersionedStore.open(path) as store:
        roots = []
        for height in range(TEMPLATE_HEIGHTS):
            roots.append(
                store.commit(
                    writes_for(seed, height),
                    records=records_for(seed, height),
                    index=index_for(seed, height),
                )
            )
            if height in (20, 45, 130):
                store.checkpoint(f"pin-{height}")
        store.prune(60)
    return path, roots


def _phase(path: Path, target: int) -> str:
    """Where the kill landed, read from the raw rows before anything reopens the store."""
    db = plyvel.DB(str(path))
    try:
        marker = db.get(schema.META_ROLLBACK) is not None
        latest = msgpack.unpackb(db.get(schema.META_LATEST))[0]
    finally:
        db.close()
    if not marker:
        return "before the marker" if latest == TEMPLATE_HEIGHTS - 1 else "done"
    if latest == TEMPLATE_HEIGHTS - 1:
        return "marker, no chunk yet"
    return "between chunks" if latest > target else "chunks done, marker left"


def _check_rolled_back(
    store: VersionedStore, target: int, roots: list[bytes], context: str
) -> None:
    top = TEMPLATE_HEIGHTS - 1
    model = Workload(ROLLBACK_SEED)
    assert store.height == target and store.root() == roots[target], context
    assert list(store.iter_prefix(b"")) == sorted(model.state(target).items()), context
    [fork] = store.forks()
    assert (fork.from_height, fork.to_height, fork.reason) == (top, target, "crash test"), context
    for height in range(target + 1, top + 1):  # every reverted height is archived, none is left
        block = records_for(ROLLBACK_SEED, height)["block"]
        assert store.records(height) == [], f"{context} height={height}"
        assert store.archived_record(fork.fork_id, height, "block") == block, context
        assert store.index_get(b"tx%d" % height) is None, context
    for height in (0, target):
        assert (
            store.index_get(b"tx%d" % height) == index_for(ROLLBACK_SEED, height)[b"tx%d" % height]
        )
    expected_pins = [f"pin-{h}" for h in (20, 45, 130) if h <= target]
    assert [cp.name for cp in store.checkpoints()] == expected_pins, context
    retained = [h for h in [20, 45, *range(60, top + 1)] if h <= target]
    assert store.retained_heights() == retained, context
    for height in {retained[0], retained[len(retained) // 2], target}:
        model.check_height(store, height, roots[height], context)


@pytest.mark.parametrize("seed", [21, 22])
def test_sigkill_during_rollback_and_its_resumption(
    tmp_path: Path,
    server: ForkServer,
    rollback_template: tuple[Path, list[bytes]],
    seed: int,
) -> None:
    rng = random.Random(seed)
    template, roots = rollback_template
    top = TEMPLATE_HEIGHTS - 1
    # How long an uninterrupted rollback of the longest span takes on this machine: the kill
    # delays are drawn from it, so they land among the chunks however fast the disk is.
    shutil.copytree(template, tmp_path / "calibrate")
    [done] = server.run("rollback", tmp_path / "calibrate", 20, kill_after=None)
    span = float(done.split()[2])
    phases: Counter[str] = Counter()
    kills_before = server.kills
    for kill in itertools.count():  # until 12 kills interrupted a worker (a kill may come late)
        if server.kills - kills_before >= 12:
            break
        assert kill < 60, f"seed={seed}: the kills keep coming after the rollback finished"
        path = tmp_path / f"db{kill}"
        shutil.copytree(template, path)
        target = rng.choice([20, 45, rng.randrange(60, 121)])  # pins: across merged diffs
        delay = 0.0 if rng.random() < 0.15 else rng.uniform(0.0, span)
        lines = server.run("rollback", path, target, kill_after=delay)
        phase = _phase(path, target)
        phases[phase] += 1
        context = f"seed={seed} kill={kill} target={target} delay={delay:.4f} phase={phase!r}"
        if any(line.startswith("done") for line in lines):
            assert phase == "done", context  # (killed before saying done, it may be done too)
        if phase != "before the marker" and phase != "done" and rng.random() < 0.6:
            # kill the open that is finishing the rollback, too
            server.run("open", path, kill_after=rng.uniform(0.0, span))
            phase = _phase(path, target)
            phases[f"resuming open killed: {phase}"] += 1
            context += f" then {phase!r}"
        with VersionedStore.open(path) as store:
            if phase == "before the marker":
                assert store.height == top and store.root() == roots[top], context
                assert store.forks() == [] and len(store.checkpoints()) == 3, context
                assert list(store.iter_prefix(b"")) == sorted(
                    Workload(ROLLBACK_SEED).state(top).items()
                )
            else:  # finished by the worker, by the killed open, or by this open
                _check_rolled_back(store, target, roots, context)
            store.verify()
            assert store.verify_history() == len(store.retained_heights()), context
    print(f"seed {seed}: rollback of up to {span:.3f} s; {kill} rounds: {dict(phases)}")
    between = sum(n for phase, n in phases.items() if phase.endswith("between chunks"))
    assert between >= 2, f"too few kills landed mid-rollback: {dict(phases)}"
