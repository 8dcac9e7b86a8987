"""The child processes of tests/store/test_crash.py, and the deterministic workload they run.

`python -m tests.store.crash_child` is a fork server: it imports the store once, then for each
command line on stdin forks a worker, so a SIGKILL round costs a fork, not a Python start-up:

    commit DIR SEED     commit heights from the head on, each followed by its maintenance
    rollback DIR TARGET one rollback_to(TARGET) (chunks of ROLLBACK_ROWS_PER_BATCH rows)
    open DIR            open the store (which finishes an interrupted rollback)

A worker prints `pid PID` first, then `ready` just before the work the parent means to
interrupt, then `ack HEIGHT ROOT` the moment each commit returns, `op HEIGHT I` when the I-th
maintenance step after HEIGHT returns, and `done HEIGHT SECONDS` when a rollback or open
returns (`failed` if it raised; the traceback goes to stderr). The server reaps the worker
only when the parent sends `reap` (so the worker's pid cannot be reused while the parent may
still kill it) and answers `exit CODE`.

Writes, records, index entries and maintenance are pure functions of (seed, height), so the
parent recomputes what the store must hold at any height.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import time
import traceback

from node.store import VersionedStore, rollback

KEYSPACE = 200
ROLLBACK_ROWS_PER_BATCH = 200  # small chunks: a rollback of ~100 heights takes ~20 batches
WORKER_SECONDS = 20.0


def writes_for(seed: int, height: int) -> dict[bytes, bytes | None]:
    """The state writes of `height`: 1 to 30 keys of a small keyspace, a fifth of them deletes."""
    rng = random.Random(seed * 1_000_003 + height)
    writes: dict[bytes, bytes | None] = {}
    for _ in range(rng.randint(1, 30)):
        key = b"k%03d" % rng.randrange(KEYSPACE)
        writes[key] = None if rng.random() < 0.2 else rng.randbytes(rng.randint(1, 48))
    return writes


def records_for(seed: int, height: int) -> dict[str, bytes]:
    return {"block": b"block-%d-%d" % (seed, height)}


def index_for(seed: int, height: int) -> dict[bytes, bytes | None]:
    return {b"tx%d" % height: b"%d-%d" % (seed, height)}


def maintenance_for(height: int) -> list[tuple[str, str | int]]:
    """What the commit worker does after `height`: pin every 7th height (unpinning the one four
    pins back, if it was pinned), prune every 5th height to 8 heights of history."""
    steps: list[tuple[str, str | int]] = []
    if height % 7 == 3:
        steps.append(("checkpoint", f"cp-{height}"))
        if height >= 31:
            steps.append(("delete_checkpoint", f"cp-{height - 28}"))
    if height % 5 == 4 and height >= 9:
        steps.append(("prune", height - 8))
    return steps


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _commit_until_killed(store: VersionedStore, seed: int) -> None:
    deadline = time.monotonic() + WORKER_SECONDS  # a worker orphaned by a failed test ends
    for height in itertools.count(store.height + 1):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not killed within {WORKER_SECONDS} s")
        root = store.commit(
            writes_for(seed, height),
            records=records_for(seed, height),
            index=index_for(seed, height),
        )
        _say(f"ack {height} {root.hex()}")
        for step, (what, arg) in enumerate(maintenance_for(height)):
            if what == "checkpoint":
                store.checkpoint(str(arg))
            elif what == "delete_checkpoint":
                if any(cp.name == arg for cp in store.checkpoints()):  # a kill may have
                    store.delete_checkpoint(str(arg))  # come between its commit and its pin
            else:
                store.prune(int(arg))
            _say(f"op {height} {step}")


def _work(mode: str, path: str, number: int) -> None:
    rollback.ROLLBACK_ROWS_PER_BATCH = ROLLBACK_ROWS_PER_BATCH  # read by rollback_to
    if mode == "open":
        _say("ready")
        start = time.perf_counter()
        with VersionedStore.open(path) as store:
            _say(f"done {store.height} {time.perf_counter() - start:.4f}")
        return
    with VersionedStore.open(path) as store:
        _say("ready")
        if mode == "commit":
            _commit_until_killed(store, number)
        elif mode == "rollback":
            start = time.perf_counter()
            store.rollback_to(number, reason="crash test")
            _say(f"done {store.height} {time.perf_counter() - start:.4f}")
        else:
            raise ValueError(f"unknown mode {mode!r}")


def main() -> None:
    while line := sys.stdin.readline():
        mode, path, number = (line.split() + ["0"])[:3]
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _say(f"pid {os.getpid()}")
                _work(mode, path, int(number))
            except BaseException:
                traceback.print_exc()
                _say("failed")
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        assert sys.stdin.readline().strip() == "reap"
        _, status = os.waitpid(pid, 0)
        _say(f"exit {os.waitstatus_to_exitcode(status)}")


if __name__ == "__main__":
    main()
