"""VersionedStore behaviour beyond the model test: limits, errors, records, forks, fencing."""

from __future__ import annotations

import pytest

from node.core import merkle
from node.core.steps import Offload
from node.store import (
    HeightUnavailable,
    LevelDBBackend,
    StaleWriter,
    StoreError,
    VersionedStore,
)
from node.store.versioned import STAGE_STEP
from tests.store.conftest import StoreFactory


def test_empty_store(open_store: StoreFactory) -> None:
    store = open_store()
    assert store.height == -1
    assert store.root() == merkle.EMPTY_ROOT
    assert store.get(b"k") is None
    assert merkle.verify_proof(store.root(), b"k", None, store.prove(b"k"))
    with pytest.raises(HeightUnavailable):
        store.root(0)
    store.verify()


@pytest.mark.parametrize(
    ("writes", "error"),
    [
        ({b"k" * 257: b"v"}, ValueError),
        ({b"": b"v"}, ValueError),
        ({b"k": b"v" * ((1 << 20) + 1)}, ValueError),
        ({"k": b"v"}, TypeError),
        ({b"k": "v"}, TypeError),
        ({b"ok": b"v", b"k" * 300: b"v"}, ValueError),
    ],
)
def test_bad_writes_are_refused_and_change_nothing(
    open_store: StoreFactory, writes: dict, error: type[Exception]
) -> None:
    store = open_store()
    store.commit({b"a": b"1"})
    root, height = store.root(), store.height
    with pytest.raises(error):
        store.commit(writes)
    assert (store.root(), store.height, store.get(b"ok")) == (root, height, None)
    store.close()
    reopened = open_store()
    assert (reopened.root(), reopened.height) == (root, height)


def test_limits_are_inclusive(open_store: StoreFactory) -> None:
    store = open_store()
    key, value = b"k" * 256, b"v" * (1 << 20)
    store.commit({key: value})
    assert store.get(key) == value
    assert merkle.verify_proof(store.root(), key, value, store.prove(key))


def test_unknown_and_bad_heights(open_store: StoreFactory) -> None:
    store = open_store()
    for i in range(3):
        store.commit({b"k": bytes([i])})
    for height in (-1, 3, 100):
        with pytest.raises(HeightUnavailable):
            store.get(b"k", height)
        with pytest.raises(HeightUnavailable):
            store.prove(b"k", height)
    with pytest.raises(TypeError):
        store.get(b"k", "1")  # type: ignore[arg-type]
    store.prune(2)
    with pytest.raises(HeightUnavailable, match="pruned"):
        store.root(1)
    with pytest.raises(HeightUnavailable):
        store.rollback_to(0)
    assert store.get(b"k", 2) == b"\x02"


def test_noop_writes_do_not_appear_in_diffs(open_store: StoreFactory) -> None:
    store = open_store()
    store.commit({b"a": b"1", b"b": b"2"})
    root = store.commit({b"a": b"1", b"gone": None})
    assert root == store.root(0)
    assert list(store.diff(0, 1)) == []
    store.commit({b"a": None, b"c": b"3"})
    assert list(store.diff(0, 2)) == [(b"a", b"1", None), (b"c", None, b"3")]
    assert list(store.diff(2, 2)) == []
    with pytest.raises(ValueError):
        list(store.diff(2, 1))


def test_records_index_and_archive_follow_rollback(open_store: StoreFactory) -> None:
    store = open_store()
    store.commit({b"s": b"0"}, records={"block": b"B0"}, index={b"tx0": b"0"})
    store.commit({b"s": b"1"}, records={"block": b"B1", "receipts": b"R1"}, index={b"tx1": b"1"})
    store.commit({b"s": b"2"}, records={"block": b"B2"}, index={b"tx2": b"2", b"tx0": None})
    assert store.record(1, "block") == b"B1"
    assert store.index_get(b"tx0") is None and store.index_get(b"tx2") == b"2"
    result = store.rollback_to(0, reason="drill")
    assert (result.from_height, result.to_height, result.heights_reverted) == (2, 0, 2)
    assert result.rows_removed > 0
    assert store.record(1, "block") is None and store.record(0, "block") == b"B0"
    assert store.index_get(b"tx0") == b"0"
    assert store.index_get(b"tx1") is None and store.index_get(b"tx2") is None
    assert store.forks() == [(result.fork_id, 2, 0, "drill")]
    assert store.archived_record(result.fork_id, 1, "receipts") == b"R1"
    assert store.archived_record(result.fork_id, 2, "block") == b"B2"
    assert store.archived_diff(result.fork_id, 2) == [(b"s", b"1")]
    store.close()
    reopened = open_store()
    assert reopened.forks()[0].reason == "drill"
    assert reopened.archived_record(result.fork_id, 2, "block") == b"B2"
    # the chain goes on from height 0 with fresh heights
    reopened.commit({b"s": b"x"}, records={"block": b"B1'"})
    assert reopened.record(1, "block") == b"B1'"


def test_checkpoints(open_store: StoreFactory) -> None:
    store = open_store()
    for i in range(10):
        store.commit({b"k": bytes([i]), bytes([i]): b"v"})
    pin = store.checkpoint("pre-maintenance-3", height=3, reason="upgrade")
    assert pin == ("pre-maintenance-3", 3, store.root(3))
    with pytest.raises(ValueError, match="exists"):
        store.checkpoint("pre-maintenance-3")
    store.checkpoint("head")
    with pytest.raises(KeyError):
        store.delete_checkpoint("nope")
    assert [cp.name for cp in store.checkpoints()] == ["pre-maintenance-3", "head"]
    store.prune(9)
    assert store.retained_heights() == [3, 9]
    assert store.get(b"k", 3) == b"\x03"
    assert merkle.verify_proof(store.root(3), bytes([5]), None, store.prove(bytes([5]), 3))
    store.rollback_to(3)
    assert [cp.name for cp in store.checkpoints()] == ["pre-maintenance-3"]
    assert store.get(b"k") == b"\x03" and store.get(bytes([5])) is None
    store.verify_history()


def test_fencing_epoch(open_store: StoreFactory) -> None:
    store = open_store()
    epoch = store.epoch
    store.commit({b"a": b"1"}, epoch=epoch)
    assert store.advance_epoch() == epoch + 1
    with pytest.raises(StaleWriter):
        store.commit({b"a": b"2"}, epoch=epoch)
    assert store.get(b"a") == b"1"
    store.close()
    reopened = open_store()
    assert reopened.epoch == epoch + 1
    reopened.commit({b"a": b"2"}, epoch=epoch + 1)


def test_closed_store_refuses(open_store: StoreFactory) -> None:
    store = open_store()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get(b"a")


def test_not_a_store(tmp_path) -> None:
    import plyvel

    db = plyvel.DB(str(tmp_path / "other"), create_if_missing=True)
    db.put(b"foreign", b"data")
    db.close()
    with pytest.raises(StoreError, match="not a perpchain store"):
        VersionedStore.open(tmp_path / "other")


def test_old_version_proofs_beyond_the_window(open_store: StoreFactory) -> None:
    store = open_store()
    history = []
    state: dict[bytes, bytes] = {}
    for i in range(80):
        writes = {bytes([i % 7]): bytes([i]), bytes([100 + i % 5]): b"x" * (i % 3)}
        state.update(writes)
        store.commit(writes)
        history.append(dict(state))
    for height in (0, 1, 17, 40, 78):
        for key in (bytes([3]), bytes([101]), b"absent"):
            value = history[height].get(key)
            assert store.get(key, height) == value
            assert merkle.verify_proof(store.root(height), key, value, store.prove(key, height))


def test_stage_then_commit_staged(open_store: StoreFactory) -> None:
    store = open_store()
    store.commit({b"a": b"1"})
    staged = store.stage({b"a": b"2", b"b": b"3"}, index={b"tx": b"1"})
    assert (staged.height, staged.changed_keys) == (1, 2)
    assert store.height == 0 and store.get(b"a") == b"1"  # nothing written yet
    header = b"header over root " + staged.root
    assert store.commit_staged(staged, records={"header": header}) == staged.root
    assert store.record(1, "header") == header and store.index_get(b"tx") == b"1"
    with pytest.raises(StoreError, match="void"):
        store.commit_staged(staged)
    stale = store.stage({b"c": b"1"})
    store.commit({b"d": b"1"})
    with pytest.raises(StoreError, match="void"):
        store.commit_staged(stale)
    assert store.get(b"c") is None and store.height == 2


def test_rollback_across_pruned_heights_archives_their_records(open_store: StoreFactory) -> None:
    # Regression: records are never pruned, so heights 4..8 (merged into 9 by the prune) still
    # had their blocks; rollback_to(3) left them in place, unarchived, and the next fork's
    # height 4 mixed the old fork's "extra4" record into its own and overwrote its block.
    store = open_store()
    for h in range(10):
        store.commit(
            {b"k": bytes([h])},
            records={"block": b"B%d" % h, f"extra{h}": b"e"},
            index={b"tx%d" % h: b"%d" % h},
        )
    store.checkpoint("pin", height=3)
    store.prune(9)
    assert store.retained_heights() == [3, 9]
    fork = store.rollback_to(3).fork_id
    for h in range(4, 10):
        assert store.records(h) == [], h
        assert store.archived_record(fork, h, "block") == b"B%d" % h
        assert store.archived_record(fork, h, f"extra{h}") == b"e"
        assert store.index_get(b"tx%d" % h) is None
    assert store.records(3) == [(b"block", b"B3"), (b"extra3", b"e")]
    store.commit({b"k": b"new"}, records={"block": b"new 4"})
    assert store.records(4) == [(b"block", b"new 4")]
    assert store.archived_record(fork, 4, "block") == b"B4"


@pytest.mark.parametrize("count", [STAGE_STEP - 1, STAGE_STEP, 3 * STAGE_STEP + 7])
def test_staging_in_steps_gives_the_root_of_one_update(
    open_store: StoreFactory, count: int
) -> None:
    """The tree takes a block's changes a slice at a time (stage_steps): the result must be
    the tree of the whole set, with puts, overwrites and deletes spread over the slices."""
    store = open_store()
    base = {b"key/%05d" % i: b"v%d" % i for i in range(0, 2 * count, 2)}
    store.commit(base)
    writes: dict[bytes, bytes | None] = {b"key/%05d" % i: b"new%d" % i for i in range(count)}
    writes.update({b"key/%05d" % i: None for i in range(0, count, 6)})
    steps = store.stage_steps(writes)
    yielded = 0
    while True:
        try:
            next(steps)
            yielded += 1
        except StopIteration as done:
            staged = done.value
            break
    assert yielded >= count // STAGE_STEP
    expected = dict(base)
    for key, value in writes.items():
        if value is None:
            expected.pop(key, None)
        else:
            expected[key] = value
    assert staged.root == merkle.reference_root(sorted(expected.items()))
    assert store.commit_staged(staged) == staged.root == store.root()


def test_a_commit_in_steps_shows_readers_the_previous_version_until_the_head_moves(
    open_store: StoreFactory,
) -> None:
    """The producer fills the batch in slices and writes it in a worker thread (an Offload):
    a reader meanwhile, even after LevelDB applied the batch, sees the previous version whole,
    matching the head it reports; after the last step it sees the new one."""
    store = open_store()
    store.commit({b"a": b"1", b"b": b"1"})
    staged = store.stage({b"a": b"2", b"c": b"2"}, index={b"tx": b"2"})
    steps = store.commit_staged_steps(staged, records={"block": b"two"})
    offloaded = 0
    sent = None
    while True:
        try:
            item = steps.send(sent)
        except StopIteration:
            break
        sent = None
        before = (store.height, store.get(b"a"), store.get(b"c"), list(store.iter_prefix(b"")))
        assert before == (0, b"1", None, [(b"a", b"1"), (b"b", b"1")])
        assert store.index_get(b"tx") is None
        if isinstance(item, Offload):
            offloaded += 1
            sent = item.work()  # the batch is in LevelDB now; the head has not moved yet
            assert (store.get(b"a"), store.get(b"c"), store.index_get(b"tx")) == (b"1", None, None)
    assert offloaded == (1 if isinstance(store._db, LevelDBBackend) else 0)  # noqa: SLF001
    assert (store.height, store.get(b"a"), store.get(b"c")) == (1, b"2", b"2")
    assert store.index_get(b"tx") == b"2" and store.record(1, "block") == b"two"
    assert store.root() == staged.root
