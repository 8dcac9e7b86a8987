"""CometBFT state sync (ListSnapshots, OfferSnapshot, LoadSnapshotChunk, ApplySnapshotChunk)
backed by our snapshot files (node.ops.snapshot: export_snapshot, import_into_store).
Imports node.core, node.store, node.ops.snapshot, node.log and the generated protobuf modules.

Format 1: a snapshot is our PERPSNAP file of that height, cut into byte ranges of CHUNK_BYTES;
`hash` is the sha256 of the whole file and `metadata` the canonical msgpack
[file bytes, chunk bytes, [sha256 of each chunk]], so a receiver checks every chunk as it
arrives (a bad one is refetched from another sender) and the whole file at the end.

Serving: every `interval` committed heights the application exports the head (in the Commit
that committed it, so the state is exactly that height's) into `directory`; the newest `keep`
are listed. Restoring: only into an empty store (a home holding genesis.json only, as CometBFT
state-syncs a node that has no state). The file's header must carry the app hash CometBFT's
light client verified for that height; the import rebuilds the state and refuses it unless it
hashes to that root (node.ops.snapshot checks order, checksums, trailer), and a refusal leaves
the store empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pathlib
from dataclasses import dataclass
from typing import Any

import msgpack

from node.abci.proto.tendermint.abci import types_pb2 as pb
from node.core.genesis import Genesis
from node.log import log_event
from node.ops.snapshot import SnapshotError, export_snapshot, import_into_store
from node.store import VersionedStore

logger = logging.getLogger("perpchain.abci")

FORMAT = 1
CHUNK_BYTES = 1 << 20  # well under CometBFT's 16 MB chunk message limit
SUFFIX = ".perpsnap"


@dataclass
class Restore:
    """A snapshot being received: its offer, the app hash to match and the chunks so far."""

    height: int
    file_hash: bytes
    chunk_hashes: list[bytes]
    size: int
    chunk_bytes: int
    app_hash: bytes
    path: pathlib.Path
    received: set[int]


def _metadata(size: int, chunk_bytes: int, hashes: list[bytes]) -> bytes:
    return bytes(msgpack.packb([size, chunk_bytes, hashes], use_bin_type=True))


def _parse_metadata(raw: bytes) -> tuple[int, int, list[bytes]]:
    size, chunk_bytes, hashes = msgpack.unpackb(raw, raw=True, max_array_len=1 << 20)
    if (
        type(size) is not int
        or type(chunk_bytes) is not int
        or chunk_bytes <= 0
        or type(hashes) is not list
        or any(type(h) is not bytes or len(h) != 32 for h in hashes)
        or len(hashes) != max(1, -(-size // chunk_bytes))
    ):
        raise ValueError("malformed snapshot metadata")
    return size, chunk_bytes, list(hashes)


class SnapshotManager:
    def __init__(
        self,
        store: VersionedStore,
        genesis: Genesis,
        directory: pathlib.Path,
        *,
        interval: int = 0,
        keep: int = 2,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.directory = pathlib.Path(directory)
        self.interval = interval
        self.keep = keep
        self.chunk_bytes = chunk_bytes
        self.restore: Restore | None = None
        self.restored_height = -1  # set when a restore completed (the app reloads its head)

    # --- serving -------------------------------------------------------------------------

    def after_commit(self, height: int) -> None:
        if self.interval <= 0 or height % self.interval:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{height:020d}{SUFFIX}"
        info = export_snapshot(self.store, height, path)
        data = path.read_bytes()
        hashes = [
            hashlib.sha256(data[at : at + self.chunk_bytes]).digest()
            for at in range(0, max(len(data), 1), self.chunk_bytes)
        ]
        meta = path.with_suffix(".meta")
        meta.write_bytes(_metadata(len(data), self.chunk_bytes, hashes))
        log_event(logger, "abci.snapshot", height=height, pairs=info.pairs, bytes=len(data))
        for old in self._files()[: -self.keep]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
                old.with_suffix(".meta").unlink()

    def _files(self) -> list[pathlib.Path]:
        if not self.directory.exists():
            return []
        return sorted(
            p for p in self.directory.glob(f"*{SUFFIX}") if p.with_suffix(".meta").exists()
        )

    def _describe(self, path: pathlib.Path) -> Any:
        meta = path.with_suffix(".meta").read_bytes()
        size, chunk_bytes, hashes = _parse_metadata(meta)
        digest = hashlib.sha256(path.read_bytes()).digest()
        return pb.Snapshot(
            height=int(path.stem), format=FORMAT, chunks=len(hashes), hash=digest, metadata=meta
        )

    def list_snapshots(self, req: Any) -> Any:
        return pb.ResponseListSnapshots(snapshots=[self._describe(p) for p in self._files()])

    def load_snapshot_chunk(self, req: Any) -> Any:
        path = self.directory / f"{req.height:020d}{SUFFIX}"
        if req.format != FORMAT or not path.exists():
            return pb.ResponseLoadSnapshotChunk()
        size, chunk_bytes, hashes = _parse_metadata(path.with_suffix(".meta").read_bytes())
        if req.chunk >= len(hashes):
            return pb.ResponseLoadSnapshotChunk()
        with open(path, "rb") as handle:
            handle.seek(req.chunk * chunk_bytes)
            return pb.ResponseLoadSnapshotChunk(chunk=handle.read(chunk_bytes))

    # --- restoring -----------------------------------------------------------------------

    def offer_snapshot(self, req: Any) -> Any:
        snapshot = req.snapshot
        result = pb.ResponseOfferSnapshot
        if snapshot.format != FORMAT:
            return result(result=result.REJECT_FORMAT)
        if self.store.height >= 0:
            log_event(
                logger,
                "abci.snapshot_refused",
                level=logging.ERROR,
                height=snapshot.height,
                reason=f"the store is not empty (height {self.store.height}): state sync "
                "needs a home holding genesis.json only",
            )
            return result(result=result.ABORT)
        try:
            size, chunk_bytes, hashes = _parse_metadata(bytes(snapshot.metadata))
        except (ValueError, TypeError, msgpack.UnpackException):
            return result(result=result.REJECT)
        if len(hashes) != snapshot.chunks or len(req.app_hash) != 32:
            return result(result=result.REJECT)
        self._drop_restore()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"restore-{snapshot.height}.part"
        with open(path, "wb") as handle:
            handle.truncate(size)
        self.restore = Restore(
            height=int(snapshot.height),
            file_hash=bytes(snapshot.hash),
            chunk_hashes=hashes,
            size=size,
            chunk_bytes=chunk_bytes,
            app_hash=bytes(req.app_hash),
            path=path,
            received=set(),
        )
        log_event(logger, "abci.snapshot_offered", height=snapshot.height, chunks=len(hashes))
        return result(result=result.ACCEPT)

    def _drop_restore(self) -> None:
        if self.restore is not None:
            with contextlib.suppress(FileNotFoundError):
                self.restore.path.unlink()
        self.restore = None

    def apply_snapshot_chunk(self, req: Any) -> Any:
        result = pb.ResponseApplySnapshotChunk
        restore = self.restore
        if restore is None:
            return result(result=result.ABORT)
        index = int(req.index)
        if index >= len(restore.chunk_hashes):
            return result(result=result.REJECT_SNAPSHOT)
        chunk = bytes(req.chunk)
        if hashlib.sha256(chunk).digest() != restore.chunk_hashes[index]:
            # Another sender may have it right: fetch it again, never from this one.
            return result(result=result.RETRY, refetch_chunks=[index], reject_senders=[req.sender])
        with open(restore.path, "r+b") as handle:
            handle.seek(index * restore.chunk_bytes)
            handle.write(chunk)
        restore.received.add(index)
        if len(restore.received) < len(restore.chunk_hashes):
            return result(result=result.ACCEPT)
        return self._finish(restore)

    def _finish(self, restore: Restore) -> Any:
        result = pb.ResponseApplySnapshotChunk
        try:
            if hashlib.sha256(restore.path.read_bytes()).digest() != restore.file_hash:
                raise SnapshotError("the assembled file does not hash to the offered snapshot")
            info = import_into_store(
                restore.path, self.store, genesis=self.genesis, trusted_root=restore.app_hash
            )
            if info.height != restore.height:
                raise SnapshotError(f"the file is of height {info.height}, not {restore.height}")
        except (SnapshotError, OSError) as error:
            log_event(
                logger,
                "abci.snapshot_rejected",
                level=logging.ERROR,
                height=restore.height,
                error=error,
            )
            if self.store.height >= 0:  # imported but of the wrong height: cannot undo here
                raise
            self._drop_restore()
            return result(result=result.REJECT_SNAPSHOT)
        self._drop_restore()
        self.restored_height = info.height
        log_event(logger, "abci.snapshot_restored", height=info.height, pairs=info.pairs)
        return result(result=result.ACCEPT)
