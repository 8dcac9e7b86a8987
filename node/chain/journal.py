"""The producing node's journal of accepted txs (as geth keeps its local-tx journal): every tx
the mempool admits is appended before `tx_submit` answers, and a restart re-admits them through
the normal admission path. Stdlib only; imported by node.chain.mempool and node.app.

File `<home>/mempool.journal`: the 8-byte magic `PCJRNL01`, then records

    length  u32 big-endian   bytes of the raw tx (1 .. MAX_RECORD_BYTES)
    crc32   u32 big-endian   zlib.crc32 of the raw tx
    raw     `length` bytes   the signed canonical tx, exactly as submitted

Reading stops at the first record that is incomplete, too long or fails its checksum: a kill -9
in the middle of an append leaves a torn last record, which is ignored (and dropped by the
rewrite that follows every open). Nothing after a bad record is trusted.

Durability (docs/RPC.md, "tx_submit"): `append` is one `os.write` to the file, so when it
returns the record is in the kernel's page cache and survives the death of the node process
(kill -9, OOM kill, a crash). It reaches the disk at the next fsync: `sync_ms > 0` fsyncs the
file in a worker thread at most every `sync_ms` while it has unsynced records (a power loss or
kernel crash may lose what was accepted in that last window); `sync_ms = 0` fsyncs before every
answer (`sync_for_answer`), so an answer means the record is on the disk.

Size: after each committed block the producer rewrites the journal with the txs still pending
(`compact`) once the file holds more than twice their bytes plus COMPACT_SLACK_BYTES; a record
is refused (JournalFull) when the file would pass `max_bytes` before that happens.
"""

from __future__ import annotations

import logging
import os
import pathlib
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import trio

from node.store.backend import fsync_dir

logger = logging.getLogger("perpchain.journal")

JOURNAL_FILE = "mempool.journal"
MAGIC = b"PCJRNL01"
HEADER = struct.Struct(">II")  # length, crc32
MAX_RECORD_BYTES = 1 << 20  # far above any tx (mempool.max_tx_bytes <= 1 MiB)
COMPACT_SLACK_BYTES = 1 << 20


class JournalFull(Exception):
    """The journal reached its size cap before a compaction; the tx is not accepted."""


@dataclass(frozen=True)
class JournalContents:
    records: list[bytes]  # raw txs in append order
    torn_bytes: int  # bytes after the last good record (a torn append), ignored
    file_bytes: int


def encode_record(raw: bytes) -> bytes:
    return HEADER.pack(len(raw), zlib.crc32(raw)) + raw


def read_journal(path: pathlib.Path) -> JournalContents:
    """Every good record of the journal at `path`, in order; a missing file holds none. A file
    with another magic is refused (ValueError): it is not ours to drop."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return JournalContents([], 0, 0)
    if len(data) < len(MAGIC):
        # Killed while the magic itself was being written: nothing was ever accepted into it.
        if MAGIC.startswith(data):
            return JournalContents([], len(data), len(data))
        raise ValueError(f"{path}: not a tx journal (bad magic)")
    if data[: len(MAGIC)] != MAGIC:
        raise ValueError(f"{path}: not a tx journal (bad magic)")
    records: list[bytes] = []
    offset = len(MAGIC)
    while offset + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, offset)
        start, end = offset + HEADER.size, offset + HEADER.size + length
        if not 0 < length <= MAX_RECORD_BYTES or end > len(data):
            break
        raw = data[start:end]
        if zlib.crc32(raw) != crc:
            break
        records.append(raw)
        offset = end
    return JournalContents(records, len(data) - offset, len(data))


class TxJournal:
    """The open journal of one producing node. Appends are made on the trio thread."""

    def __init__(self, path: pathlib.Path, *, sync_ms: int, max_bytes: int) -> None:
        self.path = pathlib.Path(path)
        self.sync_ms = sync_ms
        self.max_bytes = max_bytes
        self._fd = -1
        self._size = 0
        self._dirty = False  # records written since the last fsync began
        self._wake = trio.Event()
        self.appended = 0
        self.compactions = 0

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def accepted(self) -> str:
        """What tx_submit's answer says about an accepted tx (docs/RPC.md)."""
        return "journal_fsynced" if self.sync_ms == 0 else "journal"

    def open_and_read(self) -> JournalContents:
        """Read what a previous run left; the caller re-admits the records, then calls
        `rewrite` with what it kept (which also drops a torn tail) before appending."""
        return read_journal(self.path)

    def rewrite(self, raws: Iterable[bytes]) -> None:
        """Replace the journal by exactly `raws`: a new file written and fsynced beside it, then
        renamed over it (atomic), the directory fsynced. A crash at any point leaves the old
        journal or the new one whole."""
        temp = self.path.with_name(self.path.name + ".tmp")
        body = bytearray(MAGIC)
        for raw in raws:
            body += encode_record(raw)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, bytes(body))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.path)
        fsync_dir(self.path.parent)
        new_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = new_fd
        self._size = len(body)
        self._dirty = False

    def append(self, raw: bytes) -> None:
        """One record, one `os.write` (in the page cache when this returns: survives kill -9)."""
        if self._fd < 0:
            raise RuntimeError("the journal is not open (rewrite first)")
        record = encode_record(raw)
        if self._size + len(record) > self.max_bytes:
            raise JournalFull(
                f"tx journal holds {self._size} bytes (mempool.journal_max_bytes = "
                f"{self.max_bytes}) until the next block"
            )
        try:
            _write_all(self._fd, record)
        except OSError:
            os.ftruncate(self._fd, self._size)  # no half record before the next one
            raise
        self._size += len(record)
        self.appended += 1
        self._dirty = True
        self._wake.set()

    def needs_compaction(self, live_bytes: int) -> bool:
        return self._size > 2 * live_bytes + COMPACT_SLACK_BYTES

    def compact(self, raws: list[bytes]) -> None:
        """After a committed block: the journal rewritten with the txs still pending."""
        self.rewrite(raws)
        self.compactions += 1

    async def sync_for_answer(self) -> None:
        """With sync_ms = 0, fsync before tx_submit answers; otherwise nothing."""
        if self.sync_ms == 0 and self._dirty:
            await self._fsync()

    async def _fsync(self) -> None:
        # A duplicate descriptor: a compaction may close and replace `_fd` meanwhile (the old
        # file's records are then in the new one, fsynced by the rewrite).
        self._dirty = False
        fd = os.dup(self._fd)
        try:
            await trio.to_thread.run_sync(os.fsync, fd)
        finally:
            os.close(fd)

    async def run_sync_loop(self) -> None:
        """sync_ms > 0: fsync at most every sync_ms while records are unsynced."""
        if self.sync_ms == 0:
            return
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(self.sync_ms / 1000)
            if self._dirty and self._fd >= 0:
                await self._fsync()

    def close(self) -> None:
        """Clean shutdown: fsync and close (the pending txs stay in the file for the next run)."""
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
