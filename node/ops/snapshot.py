"""State snapshots: the state of one height, its block and receipts, as one streamed, chunked,
checksummed file; a node store is bootstrapped from it. Imports node.core.{blocks,codec,genesis,
txs} and node.store.

File (integers big-endian; docs/STORE.md "Snapshots"):

    b"PERPSNAP" version:u16
    frame H   header  [chain_id, height, block record bytes, receipts record bytes]
    frame C*  chunk   [[key, value], ...]  at most CHUNK_PAIRS pairs / ~CHUNK_BYTES, keys strictly
                      ascending across the whole file
    frame T   trailer [pairs, chunks, sha256 over the chunk digests in order]
    end of file

    frame = kind:1 byte (H, C, T) + length:u32 + sha256(payload):32 + payload

Payloads are canonical msgpack (node.core.codec rules: arrays of ints and bytes only; a reader
re-encodes and compares). The header carries the block record as stored, so the header's
signature by the genesis producer vouches for `state_root`, and the rebuilt state must hash to
it: the checksums catch damage early and name the chunk, the signed root is what makes the
imported state trustworthy. Import writes into a temporary directory next to the target and
renames it into place only once the store has been rebuilt, checked and reopened.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import msgpack

from node.core import codec
from node.core.blocks import (
    Block,
    BlockReceipts,
    decode_block,
    decode_receipts,
    header_hash,
    tx_root,
    verify_header_signature,
)
from node.core.errors import PerpError
from node.core.genesis import Genesis
from node.store import ImportRefused, VersionedStore, blocks_db
from node.store.backend import fsync_dir
from node.store.versioned import MAX_KEY_BYTES, MAX_RECORD_BYTES, MAX_VALUE_BYTES

MAGIC = b"PERPSNAP"
VERSION = 1
CHUNK_PAIRS = 10_000
CHUNK_BYTES = 1 << 20
HEADER, CHUNK, TRAILER = b"H", b"C", b"T"
_PREAMBLE = struct.Struct(">8sH")
_FRAME = struct.Struct(">cI32s")
# The largest payload a reader accepts per frame kind: a header holds two records of at most
# MAX_RECORD_BYTES; a chunk at most ~CHUNK_BYTES plus one pair of the largest size.
_MAX_PAYLOAD = {
    HEADER: 2 * MAX_RECORD_BYTES + 4096,
    CHUNK: codec.MAX_INPUT,
    TRAILER: 256,
}
_KIND_NAMES = {HEADER: "header", CHUNK: "chunk", TRAILER: "trailer"}

Progress = Callable[[int, int | None], None]


class SnapshotError(PerpError, ValueError):
    """A snapshot cannot be written or is refused on import; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    chain_id: bytes
    height: int
    state_root: bytes
    block_hash: bytes
    pairs: int
    chunks: int
    file_bytes: int


# ---------------------------------------------------------------------------------- export


def export_snapshot(
    store: VersionedStore,
    height: int | None,
    out_path: str | os.PathLike[str],
    progress: Progress | None = None,
    *,
    chunk_pairs: int = CHUNK_PAIRS,
) -> SnapshotInfo:
    """Write the state of `height` (None: the head) with its block and receipts to `out_path`,
    through a temporary file in the same directory renamed into place when complete and
    synced. HeightUnavailable for a height the store no longer has."""
    if not 1 <= chunk_pairs <= CHUNK_PAIRS:
        raise ValueError(f"chunk_pairs={chunk_pairs} must be 1 to {CHUNK_PAIRS}")
    height = store.height if height is None else height
    pairs = store.iter_state(height)  # checks the height first (HeightUnavailable)
    block_raw = store.record(height, blocks_db.BLOCK)
    receipts_raw = store.record(height, blocks_db.RECEIPTS)
    if block_raw is None or receipts_raw is None:
        raise SnapshotError(f"height {height} has no block or receipts record to export")
    block = decode_block(block_raw)
    header = block.header
    if header.height != height or header.state_root != store.root(height):
        raise SnapshotError(
            f"the block record of height {height} (height {header.height}, state root "
            f"{header.state_root.hex()}) does not match the store's root {store.root(height).hex()}"
        )
    out = pathlib.Path(out_path)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(_PREAMBLE.pack(MAGIC, VERSION))
            _write_frame(handle, HEADER, _pack([header.chain_id, height, block_raw, receipts_raw]))
            count, chunks, running = 0, 0, hashlib.sha256()
            for chunk in _chunks(pairs, chunk_pairs):
                running.update(_write_frame(handle, CHUNK, codec.pack(chunk)))
                count += len(chunk)
                chunks += 1
                if progress is not None:
                    progress(count, None)
            _write_frame(handle, TRAILER, codec.pack([count, chunks, running.digest()]))
            handle.flush()
            os.fsync(handle.fileno())
            size = handle.tell()
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(out.parent)
    return SnapshotInfo(
        header.chain_id, height, header.state_root, header_hash(header), count, chunks, size
    )


def _chunks(pairs: Iterator[tuple[bytes, bytes]], max_pairs: int) -> Iterator[list[list[bytes]]]:
    chunk: list[list[bytes]] = []
    size = 0
    for key, value in pairs:
        pair_bytes = len(key) + len(value) + 16
        if chunk and (len(chunk) >= max_pairs or size + pair_bytes > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append([key, value])
        size += pair_bytes
    if chunk:
        yield chunk


def _write_frame(handle: IO[bytes], kind: bytes, payload: bytes) -> bytes:
    digest = hashlib.sha256(payload).digest()
    handle.write(_FRAME.pack(kind, len(payload), digest))
    handle.write(payload)
    return digest


def _pack(wire: Any) -> bytes:
    """codec.pack's bytes without its 1 MiB limit per byte string (a block record may be
    larger); the reader checks the types and re-encodes."""
    return msgpack.packb(wire, use_bin_type=True, strict_types=True)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------- import


def import_snapshot(
    path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    genesis: Genesis,
    progress: Progress | None = None,
) -> SnapshotInfo:
    """Create the store `data_dir` from the snapshot at `path`, for the chain of `genesis`.

    Refused with a SnapshotError naming the problem (bad magic or version, truncation, a bad
    checksum, a wrong trailer, keys out of order, another chain, a header not signed by the
    genesis producer, a state that does not hash to the header's root) or when `data_dir`
    already holds something; then nothing is left behind. The store gets the state, the block
    and receipts records of the height and its block-hash and tx index entries, so the node's
    startup reconciliation accepts it as the head.
    """
    target = pathlib.Path(data_dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SnapshotError(f"{target} already exists and is not empty; import needs a new one")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.import-", dir=target.parent))
    try:
        with VersionedStore.open(tmp) as store:
            info = import_into_store(path, store, genesis=genesis, progress=progress)
        # Read it back: opening rebuilds the tree from the flat table and checks it.
        with VersionedStore.open(tmp) as store:
            if store.height != info.height or store.root() != info.state_root:
                raise SnapshotError("the imported store does not read back as written")
        if target.exists():
            target.rmdir()  # empty (checked above)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    return info


def import_into_store(
    path: str | os.PathLike[str],
    store: VersionedStore,
    *,
    genesis: Genesis,
    progress: Progress | None = None,
    trusted_root: bytes | None = None,
) -> SnapshotInfo:
    """The import itself, into an open empty store (VersionedStore.import_state: a refusal
    leaves it empty). The header must be signed by the genesis producer, or, with
    `trusted_root`, carry exactly that state root: under CometBFT (node/abci/snapshots.py)
    headers are unsigned and the root is the app hash CometBFT's light client verified."""
    with open(path, "rb") as handle:
        reader = _Reader(handle)
        block, receipts = _read_header(reader, genesis, trusted_root)
        header = block.header
        stream = _PairStream(reader, progress)
        try:
            store.import_state(
                stream.pairs(),
                height=header.height,
                expected_root=header.state_root,
                records=blocks_db.block_records(block, receipts),
                index=blocks_db.hash_index(block)
                | blocks_db.tx_index(header.height, [r.tx_hash for r in receipts.receipts]),
            )
        except ImportRefused as error:  # the stream checked the order: the root differs
            raise SnapshotError(
                f"the rebuilt state does not match the signed header: {error}"
            ) from None
    return SnapshotInfo(
        header.chain_id,
        header.height,
        header.state_root,
        header_hash(header),
        stream.count,
        stream.chunks,
        reader.offset,
    )


class _Reader:
    """Exact reads with the offset for messages; a short read is a truncated file."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.offset = 0

    def read(self, size: int, what: str) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise SnapshotError(
                f"truncated snapshot: {what} at byte {self.offset} needs {size} bytes, "
                f"the file has {len(data)} more"
            )
        self.offset += size
        return data

    def frame(self, what: str) -> tuple[bytes, bytes]:
        """(kind, payload) of the next frame, its checksum verified."""
        start = self.offset
        kind, length, digest = _FRAME.unpack(self.read(_FRAME.size, what))
        if kind not in _MAX_PAYLOAD:
            raise SnapshotError(f"{what} at byte {start}: unknown frame kind {kind!r}")
        if kind == TRAILER:
            what = "trailer"
        elif kind == CHUNK:
            what = what.removesuffix(" or trailer")
        if length > _MAX_PAYLOAD[kind]:
            raise SnapshotError(
                f"{what} at byte {start}: {_KIND_NAMES[kind]} of {length} bytes exceeds "
                f"{_MAX_PAYLOAD[kind]}"
            )
        payload = self.read(length, what)
        if hashlib.sha256(payload).digest() != digest:
            raise SnapshotError(f"{what} at byte {start} fails its sha256 checksum")
        return kind, payload


def _unpack(payload: bytes, what: str, max_bin: int) -> Any:
    try:
        wire = msgpack.unpackb(
            payload,
            raw=False,
            use_list=True,
            max_str_len=0,
            max_map_len=0,
            max_ext_len=0,
            max_bin_len=max_bin,
            max_array_len=codec.MAX_ARRAY,
        )
        if _pack(wire) == payload and _ints_and_bytes(wire):
            return wire
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        pass
    raise SnapshotError(f"{what} is not canonical msgpack")


def _ints_and_bytes(wire: Any) -> bool:
    if type(wire) is list:
        return all(_ints_and_bytes(item) for item in wire)
    return type(wire) in (int, bytes)


def _read_header(
    reader: _Reader, genesis: Genesis, trusted_root: bytes | None = None
) -> tuple[Block, BlockReceipts]:
    magic, version = _PREAMBLE.unpack(reader.read(_PREAMBLE.size, "magic and version"))
    if magic != MAGIC:
        raise SnapshotError(f"not a perpchain snapshot (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise SnapshotError(f"snapshot format version {version}; this node reads {VERSION}")
    kind, payload = reader.frame("header frame")
    if kind != HEADER:
        raise SnapshotError(f"the first frame is a {_KIND_NAMES[kind]}, not the header")
    wire = _unpack(payload, "header frame", MAX_RECORD_BYTES)
    if (
        type(wire) is not list
        or len(wire) != 4
        or type(wire[0]) is not bytes
        or type(wire[1]) is not int
        or type(wire[2]) is not bytes
        or type(wire[3]) is not bytes
    ):
        raise SnapshotError("malformed header frame: expected [chain_id, height, block, receipts]")
    chain_id, height, block_raw, receipts_raw = wire
    if chain_id != genesis.chain_id:
        raise SnapshotError(
            f"snapshot of chain {chain_id!r}; the genesis is for chain {genesis.chain_id!r}"
        )
    try:
        block = decode_block(block_raw)
        receipts = decode_receipts(receipts_raw)
    except PerpError as error:
        raise SnapshotError(f"the header frame's block or receipts record: {error}") from None
    header = block.header
    if header.chain_id != chain_id or header.height != height or height < 0:
        raise SnapshotError(
            f"the block record (chain {header.chain_id!r}, height {header.height}) does not "
            f"match the header frame (chain {chain_id!r}, height {height})"
        )
    if trusted_root is not None:
        if header.state_root != trusted_root:
            raise SnapshotError(
                f"block {height} of the snapshot carries state root {header.state_root.hex()}, "
                f"not the trusted {trusted_root.hex()}"
            )
    elif not verify_header_signature(header, genesis.producer_key):
        raise SnapshotError(
            f"block {height} of the snapshot is not signed by the genesis producer "
            f"{genesis.producer_key.hex()}"
        )
    if tx_root(block.txs) != header.tx_root:
        raise SnapshotError(f"block {height} of the snapshot: txs do not match the tx root")
    return block, receipts


class _PairStream:
    """The pairs of the chunk frames, checked (types, sizes, strictly ascending keys), then
    the trailer (pair count, chunk count, digest of the chunk digests) and the end of file:
    all before the last pair is handed over, so the store never commits an unverified file."""

    def __init__(self, reader: _Reader, progress: Progress | None) -> None:
        self.reader = reader
        self.progress = progress
        self.count = 0
        self.chunks = 0

    def pairs(self) -> Iterator[tuple[bytes, bytes]]:
        reader = self.reader
        running = hashlib.sha256()
        previous = b""
        while True:
            what = f"chunk {self.chunks}"
            kind, payload = reader.frame(f"{what} or trailer")
            if kind == TRAILER:
                break
            if kind != CHUNK:
                raise SnapshotError(f"a second header frame at {what}")
            running.update(hashlib.sha256(payload).digest())
            wire = _unpack(payload, what, MAX_VALUE_BYTES)
            if type(wire) is not list:
                raise SnapshotError(f"{what} is not a list of pairs")
            checked: list[tuple[bytes, bytes]] = []
            for pair in wire:
                if (
                    type(pair) is not list
                    or len(pair) != 2
                    or type(pair[0]) is not bytes
                    or type(pair[1]) is not bytes
                    or not 1 <= len(pair[0]) <= MAX_KEY_BYTES
                ):
                    raise SnapshotError(f"{what}: malformed pair (expected [key, value])")
                key = pair[0]
                if key <= previous:
                    raise SnapshotError(
                        f"{what}: keys not ascending ({key.hex()} after {previous.hex()})"
                    )
                previous = key
                checked.append((key, pair[1]))
            # The store writes `latest` only once this generator is exhausted, which is after
            # the trailer and the end of file are checked below: a bad tail refuses it all.
            yield from checked
            self.count += len(checked)
            self.chunks += 1
            if self.progress is not None:
                self.progress(self.count, None)
        trailer = _unpack(payload, "trailer", 32)
        if (
            type(trailer) is not list
            or len(trailer) != 3
            or type(trailer[0]) is not int
            or type(trailer[1]) is not int
            or type(trailer[2]) is not bytes
        ):
            raise SnapshotError("malformed trailer: expected [pairs, chunks, digest]")
        if trailer[0] != self.count or trailer[1] != self.chunks:
            raise SnapshotError(
                f"trailer counts {trailer[0]} pairs in {trailer[1]} chunks; the file holds "
                f"{self.count} pairs in {self.chunks} chunks"
            )
        if trailer[2] != running.digest():
            raise SnapshotError("trailer digest differs from the digest of the chunk checksums")
        if reader.handle.read(1):
            raise SnapshotError(f"unexpected bytes after the trailer at byte {reader.offset}")
