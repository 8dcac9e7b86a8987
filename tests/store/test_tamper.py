"""Tampering: flip one byte of any stored row (flat or versioned value, root, latest marker, diff,
checkpoint, index entry, record, archived row, fork record) and the store fails loudly: a
StoreCorrupted on open, from verify()/verify_history(), or from the read of that row; never a
wrong answer. Refused calls (unknown or pruned heights, oversize keys and values) raise a clear
error and leave the LevelDB byte for byte as it was."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plyvel
import pytest

from node.core import merkle
from node.store import HeightUnavailable, StaleWriter, StoreCorrupted, VersionedStore, schema
from node.store.versioned import MAX_KEY_BYTES, MAX_VALUE_BYTES


@dataclass
class History:
    """What a correct store must answer, built alongside the store."""

    states: dict[int, dict[bytes, bytes]] = field(default_factory=dict)  # retained heights
    roots: dict[int, bytes] = field(default_factory=dict)
    blocks: dict[int, bytes] = field(default_factory=dict)
    index: dict[bytes, bytes | None] = field(default_factory=dict)
    archived: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (fork, height)
    forks: list[tuple[int, int, int, str]] = field(default_factory=list)
    pins: list[tuple[str, int, bytes]] = field(default_factory=list)

    @property
    def keys(self) -> list[bytes]:
        return sorted({k for s in self.states.values() for k in s} | {b"key-never"})


def _build(path: Path) -> History:
    """12 heights with deletes, records and index entries; a pin at 4; a rollback to 9 (fork 1
    archives 10 and 11) and 4 new heights; a prune below 6 (height 5 merged into 6)."""
    rng = random.Random(5)
    history = History()
    state: dict[bytes, bytes] = {}
    with VersionedStore.open(path) as store:

        def commit(height: int, tag: bytes) -> None:
            writes: dict[bytes, bytes | None] = {}
            for _ in range(8):
                key = b"key%02d" % rng.randrange(30)
                writes[key] = None if rng.random() < 0.2 else rng.randbytes(rng.randint(1, 40))
            index: dict[bytes, bytes | None] = {b"t%d" % height: tag}
            if height >= 3:
                index[b"t%d" % (height - 3)] = None
            block = b"block %d %s" % (height, tag)
            root = store.commit(writes, records={"block": block}, index=index)
            for key, value in writes.items():
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
            history.states[height] = dict(state)
            history.roots[height] = root
            history.blocks[height] = block
            history.index.update(index)

        for height in range(12):
            commit(height, b"a")
            if height == 4:
                cp = store.checkpoint("pre-maintenance-4", reason="tamper test")
                history.pins.append((cp.name, cp.height, cp.root))
        fork = store.rollback_to(9, reason="drill").fork_id
        history.forks.append((fork, 11, 9, "drill"))
        for height in (10, 11):
            history.archived[fork, height] = history.blocks.pop(height)
            del history.states[height], history.roots[height]
            history.index[b"t%d" % height] = None
            history.index[b"t%d" % (height - 3)] = b"a"
        state = dict(history.states[9])
        for height in range(10, 14):
            commit(height, b"b")
        store.prune(6)
        for height in (0, 1, 2, 3, 5):
            del history.states[height], history.roots[height]
        assert store.retained_heights() == sorted(history.states)
    return history


def _full_check(path: Path, history: History) -> None:
    """Everything a node reads from the store, reads first (so a read answering wrong fails
    with AssertionError even where verify_history would have been loud), then verification."""
    with VersionedStore.open(path) as store:
        for height, state in history.states.items():
            assert store.root(height) == history.roots[height], height
            for key in history.keys:
                assert store.get(key, height) == state.get(key), (key, height)
        for key in (history.keys[0], b"key-never"):
            value = history.states[4].get(key)
            assert merkle.verify_proof(history.roots[4], key, value, store.prove(key, 4))
        for height, block in history.blocks.items():
            assert store.records(height) == [(b"block", block)], height
            assert store.record(height, "block") == block, height
        for key, value in history.index.items():
            assert store.index_get(key) == value, key
        assert [tuple(f) for f in store.forks()] == history.forks
        for (fork, height), block in history.archived.items():
            assert store.archived_record(fork, height, "block") == block
            assert store.archived_record(fork, height, schema.ARCHIVED_ROOT) is not None
            assert store.archived_diff(fork, height) != []
        assert [tuple(cp) for cp in store.checkpoints()] == history.pins
        assert [(k, n) for k, _, n in store.diff(9, 13)] == [
            (k, history.states[13].get(k))
            for k in history.keys
            if history.states[9].get(k) != history.states[13].get(k)
        ]
        store.verify()
        store.verify_history()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, History]:
    path = tmp_path_factory.mktemp("tamper") / "db"
    history = _build(path)
    _full_check(path, history)  # undamaged: every check passes
    return path, history


@pytest.fixture
def store_copy(template: tuple[Path, History], tmp_path: Path) -> tuple[Path, History]:
    path, history = template
    shutil.copytree(path, tmp_path / "db")
    return tmp_path / "db", history


def _raw_rows(path: Path) -> dict[bytes, bytes]:
    db = plyvel.DB(str(path))
    try:
        return dict(db.iterator())
    finally:
        db.close()


def _flip_random_byte(path: Path, prefix: bytes, seed: int) -> bytes:
    """Flip one random bit of one random row under `prefix`; returns the row's key."""
    rng = random.Random(seed)
    db = plyvel.DB(str(path))
    try:
        rows = [(k, v) for k, v in db.iterator(prefix=prefix) if v]
        key, value = rng.choice(rows)
        damaged = bytearray(value)
        damaged[rng.randrange(len(value))] ^= 1 << rng.randrange(8)
        db.put(key, bytes(damaged))
    finally:
        db.close()
    return key


KINDS = {
    "flat value": schema.FLAT,
    "versioned value": schema.VERSIONED,
    "root row": schema.ROOT,
    "latest marker": schema.META_LATEST,
    "diff row": schema.DIFF,
    "checkpoint row": schema.CHECKPOINT,
    "index row": schema.INDEX,
    "record row": schema.RECORD,
    "archived row": schema.ARCHIVE,
    "fork record": schema.FORK,
}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_flipped_byte_is_detected(store_copy: tuple[Path, History], kind: str, seed: int) -> None:
    path, history = store_copy
    _flip_random_byte(path, KINDS[kind], seed)
    with pytest.raises(StoreCorrupted):
        _full_check(path, history)


@pytest.mark.parametrize(
    ("prefix", "read"),
    [
        (schema.RECORD, lambda store, key: store.record(schema.read_u64(key, 1), key[9:])),
        (schema.INDEX, lambda store, key: store.index_get(key[1:])),
        (schema.ROOT, lambda store, key: store.root(schema.read_u64(key, 1))),
        (
            schema.ARCHIVE,
            lambda store, key: store.archived_record(
                schema.read_u64(key, 1), schema.read_u64(key, 9), key[17:]
            ),
        ),
    ],
    ids=["record", "index", "old root", "archive"],
)
@pytest.mark.parametrize("seed", range(2))
def test_rows_open_does_not_check_fail_their_own_read(
    store_copy: tuple[Path, History], prefix: bytes, read: Callable[..., Any], seed: int
) -> None:
    """Open checks the state, not every row: the damaged row's own read must be loud."""
    path, _ = store_copy
    key = _flip_random_byte(path, prefix, seed)
    if prefix == schema.ROOT and schema.read_u64(key, 1) == 13:
        pytest.skip("the head's root row is checked by open (test_a_flipped_byte_is_detected)")
    with VersionedStore.open(path) as store:
        with pytest.raises(StoreCorrupted, match="check bytes"):
            read(store, key)
        with pytest.raises(StoreCorrupted, match="check bytes"):
            store.verify_history()


def test_a_deleted_flat_row_is_detected(store_copy: tuple[Path, History]) -> None:
    path, _ = store_copy
    db = plyvel.DB(str(path))
    db.delete(next(db.iterator(prefix=schema.FLAT, include_value=False)))
    db.close()
    with pytest.raises(StoreCorrupted, match="state root mismatch on open"):
        VersionedStore.open(path)


@pytest.mark.parametrize("verify_on_open", [True, False])
def test_a_missing_latest_marker_is_detected(
    store_copy: tuple[Path, History], verify_on_open: bool
) -> None:
    # Regression: with height 0 pruned, open looked for root row 0 only, took the store for an
    # empty one (height -1) and, without verify_on_open, served it so.
    path, _ = store_copy
    db = plyvel.DB(str(path))
    db.delete(schema.META_LATEST)
    db.close()
    with pytest.raises(StoreCorrupted, match="latest marker is missing"):
        VersionedStore.open(path, verify_on_open=verify_on_open)


BIG_KEY = b"k" * (MAX_KEY_BYTES + 1)
BIG_VALUE = b"v" * (MAX_VALUE_BYTES + 1)
OK = {b"ok": b"1"}  # a valid write next to the bad one: it must not be written either
REFUSED: list[tuple[str, Callable[[VersionedStore], object], type[Exception], str]] = [
    ("key over 256 bytes", lambda s: s.commit({**OK, BIG_KEY: b"v"}), ValueError, "257 bytes"),
    ("empty key", lambda s: s.commit({**OK, b"": b"v"}), ValueError, "0 bytes"),
    ("value over 1 MiB", lambda s: s.commit({**OK, b"k": BIG_VALUE}), ValueError, "exceeds"),
    ("index key", lambda s: s.commit(OK, index={BIG_KEY: b"x"}), ValueError, "257 bytes"),
    ("index value", lambda s: s.commit(OK, index={b"i": BIG_VALUE}), ValueError, "exceeds"),
    ("record type", lambda s: s.commit(OK, records={"b": 1}), ValueError, "must be bytes"),  # type: ignore[dict-item]
    ("record name", lambda s: s.commit(OK, records={"\x00diff": b"x"}), ValueError, "reserved"),
    ("record name", lambda s: s.commit(OK, records={"n" * 65: b"x"}), ValueError, "1 to 64"),
    ("stale epoch", lambda s: s.commit(OK, epoch=s.epoch + 1), StaleWriter, "epoch"),
    ("unknown height", lambda s: s.get(b"key01", 14), HeightUnavailable, "not committed"),
    ("pruned height", lambda s: s.get(b"key01", 5), HeightUnavailable, "pruned"),
    ("pruned height", lambda s: s.root(3), HeightUnavailable, "pruned"),
    ("pruned height", lambda s: s.prove(b"key01", 5), HeightUnavailable, "pruned"),
    ("pruned height", lambda s: list(s.diff(5, 13)), HeightUnavailable, "pruned"),
    ("proof key", lambda s: s.prove(BIG_KEY), ValueError, "257 bytes"),
    ("pin pruned", lambda s: s.checkpoint("x", height=5), HeightUnavailable, "pruned"),
    ("pin unknown", lambda s: s.checkpoint("x", height=99), HeightUnavailable, "not committed"),
    ("pin name", lambda s: s.checkpoint("pre-maintenance-4"), ValueError, "exists"),
    ("rollback pruned", lambda s: s.rollback_to(5), HeightUnavailable, "pruned"),
    ("rollback unknown", lambda s: s.rollback_to(99), HeightUnavailable, "not committed"),
    ("rollback -1", lambda s: s.rollback_to(-1), HeightUnavailable, "not committed"),
    ("unpin unknown", lambda s: s.delete_checkpoint("nope"), KeyError, "nope"),
]


def test_refused_calls_raise_clear_errors_and_write_nothing(
    store_copy: tuple[Path, History],
) -> None:
    path, history = store_copy
    before = _raw_rows(path)
    with VersionedStore.open(path) as store:
        for what, call, error, match in REFUSED:
            with pytest.raises(error, match=match):
                call(store)
            assert (store.height, store.root()) == (13, history.roots[13]), what
    assert _raw_rows(path) == before  # byte for byte: not one row written or removed
    _full_check(path, history)


@pytest.mark.parametrize("damage", ["delete", "lower"])
def test_a_fork_sequence_behind_the_forks_is_refused_not_reused(
    store_copy: tuple[Path, History], damage: str
) -> None:
    path, history = store_copy
    db = plyvel.DB(str(path))
    if damage == "delete":
        db.delete(schema.META_FORK_SEQ)
    else:
        db.put(schema.META_FORK_SEQ, schema.u64(0))
    db.close()
    before = _raw_rows(path)
    with VersionedStore.open(path) as store:
        with pytest.raises(StoreCorrupted, match="fork sequence"):
            store.rollback_to(12)  # would have overwritten fork 1 and its archive
    assert _raw_rows(path) == before
