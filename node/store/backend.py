"""Ordered key-value backends: LevelDB (plyvel) for nodes, memory for scratch replays and tests.

Imports plyvel and node.store.{errors,schema}. A backend offers point reads, ordered range
iteration and atomic, optionally synced, batches; nothing else of the store depends on plyvel.
"""

from __future__ import annotations

import os
import pathlib
from bisect import bisect_left, insort
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import plyvel

from node.core.steps import Offload, Steps
from node.store.errors import StoreError, StoreLocked

Op = tuple[bytes, bytes | None]  # (key, value); None deletes
WRITE_STEP = 2_000  # ops put into a LevelDB batch between two yields of write_steps


class Backend(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def scan(
        self, start: bytes, stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Keys in [start, stop) in byte order (descending with reverse)."""
        ...

    def write(self, ops: Sequence[Op], *, sync: bool = True) -> None:
        """Apply every op atomically: after a crash, all of them or none."""
        ...

    def write_steps(self, ops: Sequence[Op], *, sync: bool = True) -> Steps[None]:
        """`write` as steps: the batch is filled between yields and applied, atomically, in
        the last step; nothing is visible to readers before that."""
        ...

    def snapshot(self) -> Reader:
        """Reads of the data as it is now, unaffected by later writes; released when the last
        reference to it (an open scan's included) goes."""
        ...

    def compact(self) -> None: ...

    def close(self) -> None: ...


class Reader(Protocol):
    """The read half of a backend (a backend itself, or one of its snapshots)."""

    def get(self, key: bytes) -> bytes | None: ...

    def scan(
        self, start: bytes, stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]: ...


class LevelDBBackend:
    """plyvel.DB; every write is one `write_batch(transaction=True, sync=...)`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cache_bytes: int = 64 << 20,
        write_buffer_bytes: int = 16 << 20,
    ) -> None:
        self.path = os.fspath(path)
        try:
            # A block cache and bloom filters halve the cost of the point reads of every commit
            # (old values for the diff); a larger write buffer keeps recent blocks in memory.
            self._db = plyvel.DB(
                self.path,
                create_if_missing=True,
                paranoid_checks=True,
                lru_cache_size=cache_bytes,
                bloom_filter_bits=10,
                write_buffer_size=write_buffer_bytes,
            )
        except plyvel.IOError as error:
            if "lock" in str(error).lower():
                raise StoreLocked(
                    f"store at {self.path} is in use by another process or handle ({error})"
                ) from None
            raise StoreError(f"cannot open store at {self.path}: {error}") from None
        except plyvel.CorruptionError as error:
            raise StoreError(f"LevelDB at {self.path} is corrupted: {error}") from None

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)  # type: ignore[no-any-return]

    def scan(
        self, start: bytes, stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return self._db.iterator(start=start, stop=stop, reverse=reverse)  # type: ignore[no-any-return]

    def write(self, ops: Sequence[Op], *, sync: bool = True) -> None:
        with self._db.write_batch(transaction=True, sync=sync) as batch:
            put, delete = batch.put, batch.delete
            for key, value in ops:
                if value is None:
                    delete(key)
                else:
                    put(key, value)

    def write_steps(self, ops: Sequence[Op], *, sync: bool = True) -> Steps[None]:
        # A WriteBatch is private until written: filling it in steps shows readers nothing.
        batch = self._db.write_batch(sync=sync)
        put, delete = batch.put, batch.delete
        for position, (key, value) in enumerate(ops):
            if position % WRITE_STEP == WRITE_STEP - 1:
                yield None
            if value is None:
                delete(key)
            else:
                put(key, value)
        # LevelDB's write (log, sync, memtable) runs without the GIL: a driver on an event
        # loop may run it in a thread (node.core.steps.Offload).
        yield Offload(batch.write)

    def snapshot(self) -> Reader:
        return _Snapshot(self._db.snapshot())

    def compact(self) -> None:
        self._db.compact_range()

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()


class _Snapshot:
    """A plyvel snapshot behind the Reader protocol."""

    def __init__(self, snapshot: Any) -> None:  # plyvel exports no Snapshot type
        self._snapshot = snapshot

    def get(self, key: bytes) -> bytes | None:
        return self._snapshot.get(key)  # type: ignore[no-any-return]

    def scan(
        self, start: bytes, stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return self._snapshot.iterator(start=start, stop=stop, reverse=reverse)  # type: ignore[no-any-return]


class MemoryBackend:
    """A sorted in-memory map with the same semantics (atomic batches trivially)."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def scan(
        self, start: bytes, stop: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        lo = bisect_left(self._keys, start)
        hi = len(self._keys) if stop is None else bisect_left(self._keys, stop)
        keys = self._keys[lo:hi]  # a snapshot: writes during iteration do not disturb it
        if reverse:
            keys.reverse()
        data = self._data
        return ((key, data[key]) for key in keys if key in data)

    def write(self, ops: Sequence[Op], *, sync: bool = True) -> None:
        data, keys = self._data, self._keys
        for key, value in ops:
            if value is None:
                if data.pop(key, None) is not None:
                    del keys[bisect_left(keys, key)]
            else:
                if key not in data:
                    insort(keys, key)
                data[key] = value

    def write_steps(self, ops: Sequence[Op], *, sync: bool = True) -> Steps[None]:
        self.write(ops, sync=sync)  # one step: in memory there is no batch to fill apart
        return
        yield

    def snapshot(self) -> Reader:
        return self  # writes happen within one step here: no reader runs in between

    def compact(self) -> None:
        pass  # nothing to reclaim in memory

    def close(self) -> None:
        pass


def fsync_dir(path: pathlib.Path) -> None:
    """fsync a directory, so a file created or renamed in it survives a crash of the machine."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
