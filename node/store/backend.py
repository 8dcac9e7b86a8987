"""Ordered key-value backends: LevelDB (plyvel) for nodes, memory for scratch replays and tests.

Imports plyvel and node.store.{errors,schema}. A backend offers point reads, ordered range
iteration and atomic, optionally synced, batches; nothing else of the store depends on plyvel.

It also keeps the *close seal*: the store's tree, saved by a clean close together with the
backend's write position (LevelDB: its write-ahead log files, which every write appends to
and every open of the database replaces), and handed back by the next open only if the
position is still the same, i.e. nothing wrote to or even opened the database in between
(docs/STORE.md, "Reopen").
"""

from __future__ import annotations

import io
import os
import pathlib
import struct
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO, Protocol

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

    def write_position(self) -> Any:
        """A value that changes with every write to the backend, by anyone."""
        ...

    def take_seal(self) -> BinaryIO | None:
        """The seal the last clean close saved, as a stream, if nothing wrote since; once."""
        ...

    def close(self, seal: Iterable[bytes] | None = None) -> None:
        """Close; `seal` (the store's tree, in chunks) is saved with the write position."""
        ...


SEAL_FILE = "PERPCHAIN-SEAL"  # in the LevelDB directory; LevelDB ignores names it did not make
_SEAL_HEAD = struct.Struct(">4sI")


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
        self._seal = self._consume_seal()
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

    def write_position(self) -> Any:
        """The newest write-ahead log's name and size and the manifest LevelDB points to: a
        write appends to the newest log before it returns (or starts a newer one), an open
        starts a new log and manifest, and background compaction only deletes older logs
        (tests/store/test_reopen.py pins this)."""
        newest = ""
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    name = entry.name
                    if name.endswith(".log") and (len(name), name) > (len(newest), newest):
                        newest = name
            size = os.stat(os.path.join(self.path, newest)).st_size if newest else -1
            with open(os.path.join(self.path, "CURRENT"), "rb") as current:
                manifest = current.read()
        except OSError:
            return None
        return (newest, size, manifest)

    def _consume_seal(self) -> BinaryIO | None:
        """Open and delete the seal before LevelDB opens (an open changes the position): the
        open file, past its header, if the position it names is still the database's."""
        path = os.path.join(self.path, SEAL_FILE)
        try:
            file = open(path, "rb")  # noqa: SIM115 - handed to the store, which closes it
        except OSError:
            return None
        try:
            os.unlink(path)  # once: a crash from here on leaves no seal
            head = file.read(_SEAL_HEAD.size)
            if len(head) == _SEAL_HEAD.size:
                magic, length = _SEAL_HEAD.unpack(head)
                if magic == b"PCSL" and file.read(length) == repr(self.write_position()).encode():
                    return file
        except OSError:
            pass
        file.close()
        return None

    def take_seal(self) -> BinaryIO | None:
        seal, self._seal = self._seal, None
        return seal

    def close(self, seal: Iterable[bytes] | None = None) -> None:
        if self._seal is not None:
            self._seal.close()
            self._seal = None
        if self._db.closed:
            return
        self._db.close()
        if seal is None:
            return
        position = repr(self.write_position()).encode()
        path = os.path.join(self.path, SEAL_FILE)
        # Not fsynced: after a power loss a torn or stale seal fails its checks and the store
        # rebuilds its tree from the state, which is the path of any unclean shutdown.
        with open(path + ".tmp", "wb") as file:
            file.write(_SEAL_HEAD.pack(b"PCSL", len(position)) + position)
            for chunk in seal:
                file.write(chunk)
        os.replace(path + ".tmp", path)


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
        self._writes = 0
        self._saved: tuple[int, bytes] | None = None

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
        self._writes += 1
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

    def write_position(self) -> Any:
        return self._writes

    def take_seal(self) -> BinaryIO | None:
        saved, self._saved = self._saved, None
        if saved is None or saved[0] != self._writes:
            return None
        return io.BytesIO(saved[1])

    def close(self, seal: Iterable[bytes] | None = None) -> None:
        self._saved = None if seal is None else (self._writes, b"".join(seal))


def fsync_dir(path: pathlib.Path) -> None:
    """fsync a directory, so a file created or renamed in it survives a crash of the machine."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
