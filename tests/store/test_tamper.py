"""Tampering: flip one byte of any stored value, root, marker, diff or checkpoint row and the
store fails loudly (StoreCorrupted on open, in verify()/verify_history(), or on the read of that
value) instead of answering wrong. Records (blocks, receipts) and the index are opaque to the
store; the node checks them against the signed header chain (docs/STORE.md, "Tampering")."""

from __future__ import annotations

import random
from pathlib import Path

import plyvel
import pytest

from node.store import StoreCorrupted, VersionedStore, schema

HEIGHTS = 12


def _build(path: Path) -> dict[int, dict[bytes, bytes]]:
    """A store with history, a checkpoint and a few deletes; returns the state per height."""
    rng = random.Random(5)
    states: dict[int, dict[bytes, bytes]] = {}
    state: dict[bytes, bytes] = {}
    with VersionedStore.open(path) as store:
        for height in range(HEIGHTS):
            writes: dict[bytes, bytes | None] = {}
            for _ in range(8):
                key = b"key%02d" % rng.randrange(30)
                writes[key] = None if rng.random() < 0.2 else rng.randbytes(rng.randint(1, 40))
            for key, value in writes.items():
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
            store.commit(writes, records={"block": b"b%d" % height}, index={b"t%d" % height: b"x"})
            states[height] = dict(state)
            if height == 4:
                store.checkpoint("pre-maintenance-4")
    return states


def _full_check(path: Path, states: dict[int, dict[bytes, bytes]]) -> None:
    """Everything a node does with the store: open, verify, verify history, read every height,
    prove; any silent wrong answer fails the test with AssertionError."""
    with VersionedStore.open(path) as store:
        store.verify()
        store.verify_history()
        for height, state in states.items():
            keys = {k for s in states.values() for k in s}
            for key in sorted(keys):
                assert store.get(key, height) == state.get(key), (key, height)
        for cp in store.checkpoints():
            assert cp.root == store.root(cp.height)


KINDS = {
    "flat value": schema.FLAT,
    "versioned value": schema.VERSIONED,
    "root row": schema.ROOT,
    "latest marker": schema.META_LATEST,
    "diff row": schema.DIFF,
    "checkpoint row": schema.CHECKPOINT,
}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_flipped_byte_is_detected(tmp_path: Path, kind: str, seed: int) -> None:
    path = tmp_path / "db"
    states = _build(path)
    _full_check(path, states)  # clean: passes
    rng = random.Random(seed)
    db = plyvel.DB(str(path))
    rows = [(k, v) for k, v in db.iterator(prefix=KINDS[kind]) if v]
    key, value = rng.choice(rows)
    position = rng.randrange(len(value))
    damaged = bytearray(value)
    damaged[position] ^= 1 << rng.randrange(8)
    db.put(key, bytes(damaged))
    db.close()
    with pytest.raises(StoreCorrupted):
        _full_check(path, states)


def test_a_deleted_flat_row_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "db"
    _build(path)
    db = plyvel.DB(str(path))
    key = next(db.iterator(prefix=schema.FLAT, include_value=False))
    db.delete(key)
    db.close()
    with pytest.raises(StoreCorrupted, match="state root mismatch on open"):
        VersionedStore.open(path)


def test_a_missing_latest_marker_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "db"
    _build(path)
    db = plyvel.DB(str(path))
    db.delete(schema.META_LATEST)
    db.close()
    with pytest.raises(StoreCorrupted, match="latest marker is missing"):
        VersionedStore.open(path)
