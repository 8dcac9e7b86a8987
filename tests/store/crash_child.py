"""Child process of tests/store/test_crash.py: commits or rolls back until it is SIGKILLed.

    python -m tests.store.crash_child commit DIR SEED     # commit heights from the head on
    python -m tests.store.crash_child rollback DIR TARGET  # one rollback_to(TARGET)

It prints `ready` once the store is open, `ack HEIGHT ROOT` the moment each commit returns
(acknowledged), and `done HEIGHT` after a rollback. Writes are a pure function of (seed,
height) so the parent can recompute the state any acknowledged height must have.
"""

from __future__ import annotations

import random
import sys

from node.store import VersionedStore, versioned

KEYSPACE = 400
MAX_HEIGHTS = 100_000


def writes_for(seed: int, height: int) -> dict[bytes, bytes | None]:
    """The state writes of `height`: ~30 keys of a small keyspace, some deleted."""
    rng = random.Random(seed * 1_000_003 + height)
    writes: dict[bytes, bytes | None] = {}
    for _ in range(rng.randint(1, 40)):
        key = b"k%03d" % rng.randrange(KEYSPACE)
        writes[key] = None if rng.random() < 0.2 else rng.randbytes(rng.randint(1, 64))
    return writes


def records_for(seed: int, height: int) -> dict[str, bytes]:
    return {"block": b"block-%d-%d" % (seed, height)}


def index_for(seed: int, height: int) -> dict[bytes, bytes | None]:
    return {b"tx%d" % height: b"%d" % height}


def model_state(seed: int, height: int) -> dict[bytes, bytes]:
    """The state after `height` (the first commit is height 0)."""
    state: dict[bytes, bytes] = {}
    for h in range(height + 1):
        for key, value in writes_for(seed, h).items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
    return state


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    mode, path, number = argv[0], argv[1], int(argv[2])
    versioned.ROLLBACK_ROWS_PER_BATCH = 200  # many chunks, so kills land between them
    store = VersionedStore.open(path)
    _say("ready")
    if mode == "commit":
        for height in range(store.height + 1, MAX_HEIGHTS):
            root = store.commit(
                writes_for(number, height),
                records=records_for(number, height),
                index=index_for(number, height),
            )
            _say(f"ack {height} {root.hex()}")
    elif mode == "rollback":
        store.rollback_to(number, reason="crash test")
        _say(f"done {store.height}")
    store.close()


if __name__ == "__main__":
    main(sys.argv[1:])
