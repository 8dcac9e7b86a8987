"""Store fixtures: every store test runs on LevelDB and on the memory backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from node.store import LevelDBBackend, MemoryBackend, VersionedStore

StoreFactory = Callable[[], VersionedStore]


@pytest.fixture(params=["leveldb", "memory"])
def open_store(request: pytest.FixtureRequest, tmp_path) -> Iterator[StoreFactory]:
    """A factory that (re)opens the same store; earlier handles must be closed first."""
    memory = MemoryBackend()
    opened: list[VersionedStore] = []

    def factory() -> VersionedStore:
        if request.param == "leveldb":
            store = VersionedStore(LevelDBBackend(tmp_path / "db"))
        else:
            store = VersionedStore(memory)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()
