"""iter_state and import_state: a store bootstrapped from the state of one height (a snapshot)
behaves like the store it came from, from that height on; refused imports leave it empty; a
crash mid-import leaves a store that `open` refuses clearly."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from node.core import merkle
from node.store import (
    HeightUnavailable,
    ImportRefused,
    LevelDBBackend,
    MemoryBackend,
    StoreCorrupted,
    VersionedStore,
    schema,
)
from tests.store.conftest import StoreFactory

KEYS = [bytes([k]) for k in range(8)] + [b"k" * 256]
write_sets = st.dictionaries(st.sampled_from(KEYS), st.none() | st.binary(max_size=5), max_size=6)


def _source(backend: MemoryBackend | LevelDBBackend | None = None) -> VersionedStore:
    """A store with history, a pin, a prune and a rollback behind it (heights 3..6 retained)."""
    store = VersionedStore(backend or MemoryBackend())
    for height in range(8):
        store.commit(
            {bytes([k]): bytes([height, k]) for k in range(height % 4, 20, 3)}
            | {bytes([height]): None},
            records={"block": b"block %d" % height},
            index={b"t%d" % height: b"loc %d" % height},
        )
    store.checkpoint("pin", height=3)
    store.prune(4)
    store.rollback_to(6)
    return store


def _rows(store: VersionedStore) -> list[tuple[bytes, bytes]]:
    return list(store._db.scan(b""))


def test_iter_state_at_every_retained_height_matches_a_replay() -> None:
    store = _source()
    assert store.retained_heights() == [3, 4, 5, 6]
    for height in store.retained_heights():
        pairs = list(store.iter_state(height))
        assert [k for k, _ in pairs] == sorted({k for k, _ in pairs})
        assert merkle.reference_root(pairs) == store.root(height)
        assert all(store.get(k, height) == v for k, v in pairs)
    assert list(store.iter_state()) == list(store.iter_prefix())
    for missing in (-1, 0, 2, 7, 99):
        with pytest.raises(HeightUnavailable):
            store.iter_state(missing)


def test_iter_state_is_the_state_as_of_the_call(tmp_path) -> None:
    """LevelDB iterators read a snapshot (the memory backend reads values live)."""
    store = _source(LevelDBBackend(tmp_path / "db"))
    expected = list(store.iter_state(4))
    head = list(store.iter_state())
    old_iterator, head_iterator = store.iter_state(4), store.iter_state()
    store.commit({KEYS[0]: b"later", KEYS[-1]: b"later"})
    assert list(old_iterator) == expected
    assert list(head_iterator) == head
    store.close()


def test_import_then_every_operation_works(open_store: StoreFactory) -> None:
    source = _source()
    base = 4
    store = open_store()
    store.import_state(
        source.iter_state(base),
        height=base,
        expected_root=source.root(base),
        records={"block": b"block 4"},
        index={b"t4": b"loc 4", b"gone": None},
    )
    assert store.height == base and store.root() == source.root(base)
    assert store.retained_heights() == [base]
    assert store.record(base, "block") == b"block 4" and store.record(3, "block") is None
    assert store.index_get(b"t4") == b"loc 4" and store.index_get(b"gone") is None
    for key in KEYS + [bytes([k]) for k in range(20)]:
        assert store.get(key) == source.get(key, base)
        assert merkle.verify_proof(store.root(), key, store.get(key), store.prove(key))
    store.verify()
    assert store.verify_history() == 1
    for below in (0, base - 1):
        with pytest.raises(HeightUnavailable):
            store.get(KEYS[0], below)
        with pytest.raises(HeightUnavailable):
            store.rollback_to(below)

    # The chain goes on from the base exactly as on the source.
    replay = VersionedStore(MemoryBackend())
    replay.import_state(source.iter_state(base), height=base, expected_root=source.root(base))
    blocks = [{KEYS[1]: b"a", KEYS[2]: None}, {KEYS[-1]: b"b"}, {KEYS[1]: None, b"new": b"c"}]
    staged = store.stage(blocks[0], index={b"t5": b"loc 5"})
    assert store.commit_staged(staged, records={"block": b"5"}) == replay.commit(blocks[0])
    store.checkpoint("after", height=base + 1)
    for writes in blocks[1:]:
        assert store.commit(writes) == replay.commit(writes)
    assert store.get(KEYS[1], base) == source.get(KEYS[1], base)
    assert list(store.iter_state(base)) == list(source.iter_state(base))
    assert list(store.diff(base, store.height)) == list(replay.diff(base, replay.height))
    assert store.verify_history() == 4
    store.close()
    store = open_store()  # reopens: the tree is rebuilt from the flat table and checked
    assert store.height == base + 3
    assert store.rollback_to(base).heights_reverted == 3
    assert store.root() == source.root(base) and store.index_get(b"t5") is None
    assert store.commit(blocks[0]) == replay.root(base + 1)
    store.prune(base + 1)
    assert store.retained_heights() == [base + 1]
    assert store.verify_history() == 1


@given(
    history=st.lists(write_sets, min_size=1, max_size=5),
    after=st.lists(write_sets, max_size=4),
    pick=st.integers(min_value=0),
)
@settings(max_examples=60, deadline=None)
def test_import_then_commits_equal_the_source(
    history: list[dict[bytes, bytes | None]], after: list[dict[bytes, bytes | None]], pick: int
) -> None:
    source = VersionedStore(MemoryBackend())
    for writes in history:
        source.commit(writes)
    base = pick % len(history)
    store = VersionedStore(MemoryBackend())
    store.import_state(source.iter_state(base), height=base, expected_root=source.root(base))
    source.rollback_to(base)
    for writes in after:
        assert store.commit(writes) == source.commit(writes)
    for height in range(base, store.height + 1):
        assert list(store.iter_state(height)) == list(source.iter_state(height))
        for key in KEYS:
            assert store.get(key, height) == source.get(key, height)
            assert store.prove(key, height) == source.prove(key, height)
    store.verify_history()


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([(b"a", b"1"), (b"a", b"2")], "strictly ascending"),
        ([(b"b", b"1"), (b"a", b"2")], "strictly ascending"),
        ([(b"a", b"1"), (b"b", b"2")], "hashes to"),
    ],
)
def test_refused_import_leaves_an_empty_store(
    open_store: StoreFactory, pairs: list[tuple[bytes, bytes]], message: str
) -> None:
    store = open_store()
    before = _rows(store)
    many = [(b"%06d" % i, b"v") for i in range(25_000)]  # more than one batch is written
    with pytest.raises(ImportRefused, match=message):
        store.import_state(
            many + [(b"x" + k, v) for k, v in pairs], height=3, expected_root=b"\x01" * 32
        )
    assert _rows(store) == before and store.height == -1
    store.close()
    store = open_store()
    assert store.height == -1
    store.import_state(many, height=3, expected_root=merkle.reference_root(many))
    assert store.height == 3 and store.get(b"000007") == b"v"


def test_import_refuses_bad_input_before_writing(open_store: StoreFactory) -> None:
    store = open_store()
    before = _rows(store)
    for pairs, kwargs, error in [
        ([(b"a", None)], {}, ValueError),
        ([(b"", b"1")], {}, ValueError),
        ([(b"a", "text")], {}, TypeError),
        ([], {"height": -1}, ValueError),
        ([], {"expected_root": b"short"}, ValueError),
        ([], {"records": {"\x00diff": b""}}, ValueError),
    ]:
        options = {"height": 0, "expected_root": merkle.EMPTY_ROOT} | kwargs
        with pytest.raises(error):
            store.import_state(pairs, **options)  # type: ignore[arg-type]
        assert _rows(store) == before
    store.commit({b"a": b"1"})
    with pytest.raises(ImportRefused, match="empty store"):
        store.import_state([], height=5, expected_root=merkle.EMPTY_ROOT)
    assert store.height == 0


def test_an_empty_state_imports() -> None:
    store = VersionedStore(MemoryBackend())
    store.import_state(iter(()), height=9, expected_root=merkle.EMPTY_ROOT)
    assert store.height == 9 and store.root() == merkle.EMPTY_ROOT
    assert list(store.iter_state()) == [] and store.verify_history() == 1


def test_a_crash_mid_import_leaves_a_store_open_refuses(tmp_path) -> None:
    """Killed while the pair batches are written (before the final batch with `latest`)."""
    path = tmp_path / "db"
    child = textwrap.dedent(
        f"""
        import os
        from node.store import VersionedStore

        def pairs():
            for i in range(30_000):
                if i == 25_000:
                    os._exit(9)  # as a SIGKILL: no cleanup runs
                yield b"%06d" % i, b"v"

        store = VersionedStore.open({str(path)!r})
        store.import_state(pairs(), height=7, expected_root=b"\\x00" * 32)
        """
    )
    assert subprocess.run([sys.executable, "-c", child], check=False).returncode == 9
    backend = LevelDBBackend(path)
    assert backend.get(schema.FLAT + b"000001") == b"v"  # batches were written
    assert backend.get(schema.META_LATEST) is None
    backend.close()
    with pytest.raises(StoreCorrupted, match="interrupted state import .*height 7"):
        VersionedStore.open(path)


@pytest.mark.parametrize("row", ["flat", "versioned", "root", "record", "index"])
def test_damaged_rows_of_an_imported_store_fail_loudly(tmp_path, row: str) -> None:
    """The rows import writes are checked like those a commit writes (test_tamper.py)."""
    pairs = [(b"k%03d" % i, b"v%d" % i) for i in range(50)]
    path = tmp_path / "db"
    with VersionedStore.open(path) as store:
        store.import_state(
            pairs,
            height=5,
            expected_root=merkle.reference_root(pairs),
            records={"block": b"b5"},
            index={b"t5": b"loc"},
        )
        store.commit({b"k007": b"new"})
    physical = {
        "flat": schema.flat_key(b"k003"),
        "versioned": schema.versioned_key(b"k007", 5),
        "root": schema.root_key(5),
        "record": schema.record_key(5, b"block"),
        "index": schema.index_key(b"t5"),
    }[row]
    backend = LevelDBBackend(path)
    raw = backend.get(physical)
    assert raw is not None
    backend.write([(physical, raw[:-1] + bytes([raw[-1] ^ 1]))])
    backend.close()
    with pytest.raises(StoreCorrupted):
        store = VersionedStore.open(path)  # the flat row: the rebuilt tree misses `latest`
        try:
            {
                "flat": lambda: None,
                "versioned": lambda: store.get(b"k007", 5),
                "root": lambda: store.root(5),
                "record": lambda: store.record(5, "block"),
                "index": lambda: store.index_get(b"t5"),
            }[row]()
            store.verify_history()
        finally:
            store.close()
