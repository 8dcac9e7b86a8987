"""Reopen without rehashing the state, and what still forces the rehash (docs/STORE.md,
"Reopen"). A clean close saves the tree beside the LevelDB with the database's write position;
the next open takes it only when nothing wrote to, or even opened, the database since. Every
other open rebuilds the tree from the flat table and checks it against the recorded head, so
the incident's write around the writer (the funding indices zeroed in the flat rows) is found
whether it happened in the node's process, in another process while the node was stopped, or
was followed by a crash."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import plyvel
import pytest

from node.core import merkle
from node.store import LevelDBBackend, MemoryBackend, StoreCorrupted, VersionedStore, schema
from node.store.backend import SEAL_FILE


def _fill(store: VersionedStore, blocks: int = 6, keys: int = 300) -> dict[bytes, bytes]:
    state: dict[bytes, bytes] = {}
    for height in range(blocks):
        writes = {
            f"k{(height * 37 + i) % keys:05d}".encode(): f"{height}/{i}".encode() for i in range(80)
        }
        state.update(writes)
        store.commit(writes)
    return state


def test_leveldb_moves_its_write_position_on_every_write_and_every_open(
    tmp_path: pathlib.Path,
) -> None:
    """The assumption the seal rests on, pinned on the plyvel in use."""
    backend = LevelDBBackend(tmp_path / "db")
    first = backend.write_position()
    backend.write([(b"a", b"1")], sync=False)
    after_write = backend.write_position()
    assert after_write != first
    backend.close()
    assert backend.write_position() == after_write  # closing writes nothing
    raw = plyvel.DB(str(tmp_path / "db"))  # any other opener, even one that only reads
    raw.get(b"a")
    raw.close()
    assert LevelDBBackend(tmp_path / "db").write_position() != after_write


@pytest.mark.parametrize("kind", ["leveldb", "memory"])
def test_a_clean_close_reopens_from_the_seal_with_the_same_tree(
    tmp_path: pathlib.Path, kind: str
) -> None:
    memory = MemoryBackend()

    def backend() -> LevelDBBackend | MemoryBackend:
        return LevelDBBackend(tmp_path / "db") if kind == "leveldb" else memory

    store = VersionedStore(backend())
    state = _fill(store)
    root, proofs = store.root(), {k: store.prove(k) for k in list(state)[:20]}
    old_proof = store.prove(b"k00001", 2)
    store.close()
    store = VersionedStore(backend())
    assert store.open_check == "seal" and store.root() == root
    assert {k: store.prove(k) for k in proofs} == proofs
    assert store.prove(b"k00001", 2) == old_proof
    store.commit({b"new": b"1"})  # and it goes on from there
    assert store.root() == merkle.reference_root({**state, b"new": b"1"}.items())
    store.verify()
    store.close()
    store = VersionedStore(backend())
    assert store.open_check == "seal"
    store.verify_history()
    store.close()


def test_a_crash_leaves_no_seal_and_the_open_rehashes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    with VersionedStore.open(path) as store:
        _fill(store)
    child = (
        "import os, sys\n"
        "from node.store import VersionedStore\n"
        "store = VersionedStore.open(sys.argv[1])\n"
        "store.commit({b'after': b'crash'})\n"
        "os._exit(0)\n"  # no close: as kill -9
    )
    subprocess.run([sys.executable, "-c", child, str(path)], check=True, cwd=os.getcwd())
    with VersionedStore.open(path) as store:
        assert store.open_check == "rehashed" and store.get(b"after") == b"crash"
    with VersionedStore.open(path) as store:
        assert store.open_check == "seal"


def _zero(path: pathlib.Path, keys: list[bytes]) -> None:
    """The incident's migration: rows rewritten straight into the database, by another
    process, while the node is stopped."""
    db = plyvel.DB(str(path))
    for key in keys:
        db.put(schema.flat_key(key), b"funding_index=0")
    db.close()


def test_a_write_around_a_stopped_store_is_found_at_open(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    with VersionedStore.open(path) as store:
        _fill(store)
    assert (path / SEAL_FILE).exists()
    _zero(path, [b"k00003", b"k00004"])
    with pytest.raises(StoreCorrupted, match="state root mismatch on open"):
        VersionedStore.open(path)
    with VersionedStore.open(path, verify_on_open=False) as store:  # the producer's open
        assert store.open_check == "mismatch"
        assert [d.key for d in store.flat_differences()] == [b"k00003", b"k00004"]


@pytest.mark.parametrize("kind", ["leveldb", "memory"])
def test_a_write_around_a_running_store_voids_its_seal(tmp_path: pathlib.Path, kind: str) -> None:
    memory = MemoryBackend()

    def backend() -> LevelDBBackend | MemoryBackend:
        return LevelDBBackend(tmp_path / "db") if kind == "leveldb" else memory

    store = VersionedStore(backend())
    _fill(store)
    store._db.write([(schema.flat_key(b"k00003"), b"funding_index=0")], sync=True)
    store.commit({b"later": b"block"})  # a block on top does not launder it
    store.close()
    with pytest.raises(StoreCorrupted, match="state root mismatch on open"):
        VersionedStore(backend())
    store = VersionedStore(backend(), verify_on_open=False)
    assert store.open_check == "mismatch"
    store.close()


def test_a_damaged_or_stale_seal_is_not_used(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    with VersionedStore.open(path) as store:
        state = _fill(store)
    seal = (path / SEAL_FILE).read_bytes()
    damaged = bytearray(seal)
    damaged[len(seal) // 2] ^= 0xFF
    (path / SEAL_FILE).write_bytes(bytes(damaged))
    with VersionedStore.open(path) as store:
        assert store.open_check == "rehashed"
        store.commit({b"k00001": b"changed"})
    (path / SEAL_FILE).write_bytes(seal)  # an old seal put back: another position, height
    with VersionedStore.open(path) as store:
        assert store.open_check == "rehashed"
        assert store.root() == merkle.reference_root({**state, b"k00001": b"changed"}.items())


def test_a_check_can_ask_for_the_rehash(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    with VersionedStore.open(path) as store:
        _fill(store)
    with VersionedStore.open(path, rehash_on_open=True) as store:
        assert store.open_check == "rehashed"


def test_a_scratch_store_writes_no_seal(tmp_path: pathlib.Path) -> None:
    """`perpchain verify` replays into a scratch store it deletes after: its close writes no
    seal (up to ~1 GiB at 10 M keys)."""
    path = tmp_path / "db"
    with VersionedStore.open(path, seal_on_close=False) as store:
        _fill(store, blocks=2)
    assert not (path / SEAL_FILE).exists()
    with VersionedStore.open(path) as store:
        assert store.open_check == "rehashed"


def test_a_commit_abandoned_after_its_write_leaves_no_seal_and_no_alarm(
    tmp_path: pathlib.Path,
) -> None:
    """A shutdown can cancel the producer while a commit's batch is written in a worker
    thread: the write lands, the step never comes back. The close then saves no seal (the
    database holds a head the tree does not) and raises no write-around alarm; the next open
    rehashes and has the committed height."""
    from node.core.steps import Offload

    path = tmp_path / "db"
    store = VersionedStore.open(path)
    _fill(store, blocks=2)
    steps = store.commit_staged_steps(store.stage({b"late": b"block"}))
    item = next(steps)
    while not isinstance(item, Offload):
        item = steps.send(None)
    item.work()  # the batch is written ...
    steps.close()  # ... and the driver is gone
    assert store.height == 1
    store.close()
    assert not store.written_around and not (path / SEAL_FILE).exists()
    with VersionedStore.open(path) as store:
        assert store.open_check == "rehashed" and store.height == 2
        assert store.get(b"late") == b"block"
