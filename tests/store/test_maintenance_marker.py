"""The maintenance marker (issue 13 §1): written in the batch of the operator block that begins
the window, with its pin and the next fencing epoch, so a crash leaves all of it or none; closed
by `maintenance end` (one batch) or by a rollback (in the rollback's first batch). Both
backends; a crash is a backend whose write fails before applying anything (a batch is applied
whole or not at all: LevelDB's write batch, the memory backend's single step)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from node.store import LevelDBBackend, MemoryBackend, VersionedStore, schema
from node.store.backend import Backend, Op


class PowerCut(Exception):
    """The process died between building a batch and writing it."""


class CrashingBackend:
    """Delegates to a real backend; once `armed`, a write records its ops and fails before
    applying any of them."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.armed = False
        self.batches: list[list[Op]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(self, ops: Sequence[Op], *, sync: bool = True) -> None:
        self.batches.append(list(ops))
        if self.armed:
            raise PowerCut
        self.inner.write(ops, sync=sync)

    def write_steps(self, ops: Sequence[Op], *, sync: bool = True) -> Iterator[Any]:
        self.batches.append(list(ops))
        if self.armed:
            raise PowerCut
        return self.inner.write_steps(ops, sync=sync)


Opener = Callable[[], tuple[VersionedStore, CrashingBackend]]


@pytest.fixture(params=["leveldb", "memory"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    memory = MemoryBackend()
    opened: list[VersionedStore] = []

    def open_store() -> tuple[VersionedStore, CrashingBackend]:
        for store in opened:
            store.close()
        inner: Backend = LevelDBBackend(tmp_path / "db") if request.param == "leveldb" else memory
        backend = CrashingBackend(inner)
        store = VersionedStore(backend)  # type: ignore[arg-type]
        opened.append(store)
        return store, backend

    yield open_store
    for store in opened:
        store.close()


def _chain(store: VersionedStore, blocks: int) -> None:
    for height in range(blocks):
        store.commit({b"k%d" % height: b"v%d" % height}, records={"block": b"block %d" % height})


def _begin_block(store: VersionedStore) -> tuple[int, bytes]:
    """The operator block of `maintenance begin` with its meta, as the producer commits it."""
    staged = store.stage({b"market": b"CANCEL_ONLY"})
    name = f"pre-maintenance-{staged.height}"
    meta = store.maintenance_begin_meta(
        reason="db upgrade", checkpoint=name, height=staged.height, root=staged.root
    )
    store.commit_staged(staged, records={"block": b"operator block"}, meta=meta)
    return staged.height, staged.root


def test_the_marker_pin_and_epoch_commit_with_the_block(opener: Opener) -> None:
    store, backend = opener()
    _chain(store, 3)
    height, root = _begin_block(store)
    batch = dict(backend.batches[-1])
    # One batch: the block's rows, the marker, the pin, the epoch, and `latest` last.
    assert backend.batches[-1][-1][0] == schema.META_LATEST
    assert schema.record_key(height, b"block") in batch
    assert {schema.META_MAINTENANCE, schema.META_EPOCH} <= batch.keys()
    assert schema.checkpoint_key(b"pre-maintenance-3") in batch
    window = store.maintenance()
    assert window is not None and (window.checkpoint, window.height) == ("pre-maintenance-3", 3)
    assert window.epoch == store.epoch == 1 and window.reason == "db upgrade"

    store, _ = opener()  # a restart
    assert store.height == height and store.root() == root
    assert store.maintenance() == window and store.epoch == 1
    assert store.get_checkpoint("pre-maintenance-3").root == root

    store.write_meta(store.maintenance_end_meta())
    assert store.maintenance() is None
    store, _ = opener()
    assert store.maintenance() is None and store.epoch == 1 and store.height == height


def test_a_crash_before_the_batch_is_written_leaves_neither_block_nor_marker(
    opener: Opener,
) -> None:
    store, backend = opener()
    _chain(store, 3)
    root = store.root()
    backend.armed = True
    with pytest.raises(PowerCut):
        _begin_block(store)
    assert schema.META_MAINTENANCE in dict(backend.batches[-1])  # it was in the lost batch
    store, _ = opener()
    assert store.height == 2 and store.root() == root
    assert store.maintenance() is None and store.epoch == 0
    assert [c.name for c in store.checkpoints()] == []
    # and the same begin, retried after the restart, commits all of it
    height, _ = _begin_block(store)
    assert height == 3 and store.maintenance() is not None and store.epoch == 1


def test_without_a_block_the_marker_pin_and_epoch_are_one_batch(opener: Opener) -> None:
    store, backend = opener()
    _chain(store, 2)
    meta = store.maintenance_begin_meta(
        reason="", checkpoint="pre-maintenance-1", height=1, root=store.root()
    )
    backend.armed = True
    with pytest.raises(PowerCut):
        store.write_meta(meta)
    store, backend = opener()
    assert store.maintenance() is None and store.epoch == 0 and store.checkpoints() == []
    store.write_meta(meta)
    assert len(backend.batches) == 1
    store, _ = opener()
    window = store.maintenance()
    assert window is not None and window.epoch == store.epoch == 1 and store.height == 1
    assert store.get_checkpoint("pre-maintenance-1").height == 1


def test_an_end_lost_in_a_crash_leaves_the_window_open(opener: Opener) -> None:
    store, backend = opener()
    _chain(store, 2)
    _begin_block(store)
    backend.armed = True
    with pytest.raises(PowerCut):
        store.write_meta(store.maintenance_end_meta())
    store, _ = opener()
    assert store.maintenance() is not None


def test_a_rollback_closes_the_window_in_its_first_batch(opener: Opener) -> None:
    store, backend = opener()
    _chain(store, 3)
    _begin_block(store)
    store.commit({b"after": b"x"})
    store.rollback_to(3, reason="restore")
    first = next(b for b in backend.batches if any(k == schema.META_FORK_SEQ for k, _ in b))
    assert (schema.META_MAINTENANCE, None) in first
    assert store.maintenance() is None
    store, _ = opener()
    assert store.maintenance() is None and store.height == 3 and store.epoch == 1


def test_only_maintenance_meta_rides_with_a_commit(opener: Opener) -> None:
    store, _ = opener()
    _chain(store, 1)
    staged = store.stage({b"x": b"y"})
    for key in (schema.META_LATEST, schema.META_ROLLBACK, schema.FLAT + b"x"):
        with pytest.raises(ValueError, match="may not be written"):
            store.commit_staged(staged, meta={key: b"1"})
    assert store.height == 0
