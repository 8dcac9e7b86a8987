"""VersionedStore: flat state + per-height diffs + versioned values + a flat-array Merkle tree.

Write path (`commit`): validate everything, compute the new tree (copy-on-write, so the old
version stays intact), then write ONE atomic synced batch: flat values, versioned values, the
height's diff (old values), its root, its records and index entries, and last the `latest`
marker. Memory moves to the new version only after the batch is durable. A crash at any
instant leaves height h or h+1, never a mix: LevelDB applies a batch whole or not at all.

Read path: the head from the flat table (one get); an older retained height from the versioned
table (one seek). Proofs at the head use the live tree; at an older height, a tree rebuilt from
the nearest newer one by undoing diffs (cost grows with what changed since, not with the state).

Open: after a clean close the tree comes back from the seal the close saved, which the
backend hands back only if nothing wrote to (or opened) the database since; otherwise it is
rebuilt from the flat table and its root must equal the recorded root of the head, so damage
written around the store while it was closed, or by anyone but the store while it was open,
fails loudly here (docs/STORE.md, "Reopen").
Rollback writes a progress marker, then undoes heights newest-first in atomic chunks, each
leaving a valid committed version; a crash mid-way is finished by the next `open`.
Import (`import_state`, for snapshots) fills an empty store at a base height behind a sealed
marker that `open` refuses, and writes `latest` last, once the root is the expected one.

Where the code lives: this module holds VersionedStore itself (its state, open and recovery,
close, reads and commit); its other jobs are mixins over node.store.base.StoreBase (the state's
types and the internals they share): state_import, maintenance (epoch, maintenance window,
checkpoints), rollback (and the forks it archives), pruning, integrity (history reads, repair,
verification). node.store.rows holds the row encodings, argument checks and result records.
See docs/STORE.md for the design and its departures from DESIGN.md.

Imports node.core.{merkle,steps}, node.store.{backend,base,errors,flattree,rows,schema} and the
mixins' modules.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO

from node.core import merkle
from node.core.steps import Steps, drive
from node.store import schema
from node.store.backend import Backend, LevelDBBackend, Op
from node.store.errors import StaleWriter, StoreCorrupted, StoreError
from node.store.flattree import Change, Delta, FlatTree, make_change
from node.store.integrity import IntegrityMixin
from node.store.maintenance import MaintenanceMixin
from node.store.pruning import PruningMixin
from node.store.rollback import RollbackMixin
from node.store.rows import (
    _ABSENT,
    _PRESENT,
    MAX_KEY_BYTES,
    MAX_RECORD_BYTES,
    MAX_VALUE_BYTES,
    Checkpoint,
    FlatDifference,
    Fork,
    Maintenance,
    RollbackResult,
    Staged,
    _check_key,
    _check_name,
    _check_record,
    _check_value,
    _encode_diff,
    _pack,
    _seal,
    _unpack,
    _unseal,
)
from node.store.state_import import ImportMixin

STAGE_STEP = 256  # keys staged between two yields of stage_steps
OLD_VERSIONS_CACHED = 4  # deltas of older heights kept for proofs (until the head moves)
logger = logging.getLogger("perpchain.store")


class VersionedStore(ImportMixin, MaintenanceMixin, RollbackMixin, PruningMixin, IntegrityMixin):
    """The Merkleized, versioned key-value state of the chain (one writer per store)."""

    def __init__(
        self,
        backend: Backend,
        *,
        verify_on_open: bool = True,
        rehash_on_open: bool = False,
        seal_on_close: bool = True,
    ) -> None:
        self._db = backend
        self._seal_on_close = seal_on_close  # False: a scratch store, deleted after its close
        # Every read goes to `_reads`: the backend, or while a commit's batch is written in a
        # worker thread (commit_staged_steps), a snapshot of the version before it, so a
        # reader never sees rows of a version the head has not moved to.
        self._reads = backend
        self._closed = False
        self._height, self._root = -1, merkle.EMPTY_ROOT
        self._version = 0  # bumped whenever the head tree moves: voids staged versions
        self._old = OrderedDict()  # LRU: height -> delta over head
        self._tree = FlatTree.empty()
        self.open_check = "new"  # how open obtained the tree: "seal", "rehashed", "mismatch"
        self._position = None
        self.written_around = False  # see _check_position
        self._in_flight = False  # a commit's batch write is under way (_write_steps)
        try:
            self._open(verify_on_open, rehash_on_open)
        except BaseException:
            backend.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], **options: Any) -> VersionedStore:
        """Open (creating if missing) the store at `path`; StoreLocked if another holds it."""
        return cls(LevelDBBackend(path), **options)

    def __enter__(self) -> VersionedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close; the tree is saved as the close seal unless rows were written around the
        store (then the next open rebuilds the tree from the state and checks it)."""
        if self._closed:
            return
        self._closed = True
        self._old.clear()
        seal = None
        try:
            seal = self._close_seal()
        finally:
            self._db.close(seal)

    def _close_seal(self) -> Iterable[bytes] | None:
        if self._in_flight:
            # A commit's batch went to a worker thread and its step never came back (a
            # shutdown cancelled the driver): the database may hold a head the tree does not.
            logger.info(
                "store.closed_mid_commit height=%d: no seal, the next open rehashes", self._height
            )
            return None
        self._check_position()
        if not self._seal_on_close:
            return None
        if self._height < 0 or self.written_around or self._tree.root() != self._root:
            return None  # nothing to save, damage to find, or a tree not the head's
        return itertools.chain((schema.u64(self._height) + self._root,), self._tree.iter_bytes())

    # ------------------------------------------------------------------ open and recovery

    def _open(self, verify_on_open: bool, rehash_on_open: bool) -> None:
        db = self._db
        seal = db.take_seal()
        try:
            self._open_with(seal, verify_on_open, rehash_on_open)
        finally:
            if seal is not None:
                seal.close()

    def _open_with(self, seal: BinaryIO | None, verify_on_open: bool, rehash_on_open: bool) -> None:
        db = self._db
        fmt = db.get(schema.META_FORMAT)
        if fmt is None:
            if next(iter(db.scan(b"")), None) is not None:
                raise StoreError("not a perpchain store: it has data but no format marker")
            db.write([(schema.META_FORMAT, schema.FORMAT)], sync=True)
        elif fmt != schema.FORMAT:
            raise StoreError(
                f"unsupported store format {fmt!r} (this node reads {schema.FORMAT!r})"
            )
        pending_import = db.get(schema.META_IMPORT)
        if pending_import is not None:
            raise StoreCorrupted(
                "an interrupted state import left this store incomplete "
                f"({self._describe_import(pending_import)}): delete it and import again"
            )
        epoch = db.get(schema.META_EPOCH)
        self._epoch = 0 if epoch is None else schema.read_u64(epoch)
        self._position = db.write_position()  # from here on every write is the store's own
        marker = db.get(schema.META_ROLLBACK)
        if marker is not None:
            self._undo_to_marker(marker, None)
        self._height, self._root = self._read_latest()
        sealed = None
        if seal is not None and marker is None and not rehash_on_open:
            sealed = self._from_seal(seal)
        if sealed is not None:
            self._tree, self.open_check = sealed, "seal"
            return
        self._tree = self._tree_from_flat()
        if marker is not None and self._tree.root() != self._root:
            self.repair_flat()  # a rollback of damaged state: completed from the history
        self.open_check = "rehashed" if self._tree.root() == self._root else "mismatch"
        if verify_on_open or marker is not None:
            self._check_root(self._tree, self._height, self._root, "on open")
        if marker is not None:
            self._write([(schema.META_ROLLBACK, None)], sync=True)

    def _from_seal(self, seal: BinaryIO) -> FlatTree | None:
        """The tree of a clean close, if it is the head's (else None: rebuild)."""
        with seal:
            head = seal.read(40)
            if len(head) < 40 or schema.read_u64(head) != self._height or head[8:] != self._root:
                return None
            try:
                tree = FlatTree.read_from(seal)
            except StoreCorrupted as error:
                logger.warning("store.seal_refused error=%s", error)
                return None
        return tree if tree.root() == self._root else None

    def _read_latest(self) -> tuple[int, bytes]:
        raw = self._reads.get(schema.META_LATEST)
        if raw is None:
            if self._next_retained(0) is not None:  # not root_key(0): it may be pruned
                raise StoreCorrupted("roots are stored but the latest marker is missing")
            return -1, merkle.EMPTY_ROOT
        latest = _unpack(raw, "latest marker")
        if (
            type(latest) is not list
            or len(latest) != 2
            or type(latest[0]) is not int
            or type(latest[1]) is not bytes
            or len(latest[1]) != 32
        ):
            raise StoreCorrupted("malformed latest marker")
        height, root = latest
        if self._recorded_root(height) != root:
            raise StoreCorrupted(f"latest marker root differs from the recorded root of {height}")
        return height, root

    # ------------------------------------------------------------------ reads

    @property
    def height(self) -> int:
        """The latest committed version; -1 for an empty store (the first commit is 0)."""
        return self._height

    @property
    def epoch(self) -> int:
        """The fencing epoch: commits that name an older one are refused."""
        return self._epoch

    def root(self, height: int | None = None) -> bytes:
        self._check_open()
        if height is None:
            return self._root
        self._require_retained(height)
        if height == self._height:
            return self._root
        recorded = self._recorded_root(height)
        if recorded is None:
            raise StoreCorrupted("no recorded root for a retained height")
        return recorded

    def get(self, key: bytes, height: int | None = None) -> bytes | None:
        self._check_open()
        _check_key(key)
        if height is None:
            return self._reads.get(schema.flat_key(key))
        self._require_retained(height)
        if height == self._height:
            return self._reads.get(schema.flat_key(key))
        return self._versioned_get(key, height)

    def iter_prefix(self, prefix: bytes = b"", start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Latest (key, value) pairs whose key starts with `prefix` (and is >= `start`), in
        key order."""
        self._check_open()
        return self._iter_flat(prefix, start)

    def iter_state(self, height: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Every live (key, value) of the state at `height` (default: the head), ascending.

        The head streams the flat table. An older retained height streams the flat table
        with the values of the keys changed since `height` replaced by their old values from
        the diffs (memory grows with what changed since, not with the state). The height is
        checked now (HeightUnavailable), and the LevelDB iterator is opened now, so the pairs
        are those of the state as of this call even if commits follow.
        """
        self._check_open()
        if height is not None:
            self._require_retained(height)
        flat = self._scan_flat()
        if height is None or height == self._height:
            return ((physical[1:], value) for physical, value in flat)
        olds: dict[bytes, bytes | None] = {}
        for undo in reversed(self._heights_between(height, self._height)):  # newest first
            for ns, key, flag, old in self._read_diff(undo):
                if ns == schema.NS_STATE:
                    olds[key] = old if flag == _PRESENT else None
        return self._merge_flat(flat, sorted(olds.items()))

    @staticmethod
    def _merge_flat(
        flat: Iterator[tuple[bytes, bytes]], overrides: list[tuple[bytes, bytes | None]]
    ) -> Iterator[tuple[bytes, bytes]]:
        """The flat rows with `overrides` (sorted; None: absent) applied, in key order."""
        position, count = 0, len(overrides)
        for physical, value in flat:
            key = physical[1:]
            while position < count and overrides[position][0] < key:
                other, old = overrides[position]
                position += 1
                if old is not None:
                    yield other, old
            if position < count and overrides[position][0] == key:
                old = overrides[position][1]
                position += 1
                if old is not None:
                    yield key, old
                continue
            yield key, value
        for other, old in overrides[position:]:
            if old is not None:
                yield other, old

    def prove(self, key: bytes, height: int | None = None) -> bytes:
        """Canonical inclusion or non-inclusion proof of `key` against `root(height)`."""
        self._check_open()
        _check_key(key)
        return self._tree.prove(key, self._delta_at(height))

    def _delta_at(self, height: int | None) -> Delta | None:
        """The tree at a retained height, as a delta over the head (None: the head), computed
        from the diffs since it (cost grows with what changed since, not with the state) and
        checked against the recorded root; the last few are cached until the head moves."""
        if height is None:
            return None
        self._require_retained(height)
        if height == self._height:
            return None
        cached = self._old.get(height)
        if cached is not None:
            self._old.move_to_end(height)
            return cached
        olds: dict[bytes, bytes | None] = {}
        for undo in reversed(self._heights_between(height, self._height)):
            for ns, key, flag, old in self._read_diff(undo):
                if ns == schema.NS_STATE:
                    olds[key] = old if flag == _PRESENT else None
        delta = self._tree.compute(sorted(make_change(k, v) for k, v in olds.items()))
        self._check_root(self._tree, height, self.root(height), "rebuilding an old version", delta)
        self._old[height] = delta
        while len(self._old) > OLD_VERSIONS_CACHED:
            self._old.popitem(last=False)
        return delta

    def index_get(self, key: bytes) -> bytes | None:
        """The latest value of a non-Merkleized index entry (tx hash -> location, ...)."""
        self._check_open()
        raw = self._reads.get(schema.index_key(_check_key(key)))
        return None if raw is None else _unseal(raw, f"index entry {key!r}")

    def index_scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Index entries whose key starts with `prefix` (non-empty), in key order."""
        self._check_open()
        first = schema.index_key(_check_key(prefix))
        for physical, raw in self._reads.scan(first, schema.prefix_end(first)):
            key = physical[len(schema.INDEX) :]
            yield key, _unseal(raw, f"index entry {key!r}")

    def record(self, height: int, name: str | bytes) -> bytes | None:
        """A per-height record (block, receipts...) written with the commit of `height`."""
        self._check_open()
        raw_name = _check_name(name)
        raw = self._reads.get(schema.record_key(height, raw_name))
        return None if raw is None else _unseal(raw, f"record {raw_name!r} of height {height}")

    def records(self, height: int) -> list[tuple[bytes, bytes]]:
        self._check_open()
        prefix = schema.record_prefix(height)
        return [
            (k[len(prefix) :], _unseal(v, f"record {k[len(prefix) :]!r} of height {height}"))
            for k, v in self._reads.scan(prefix, schema.prefix_end(prefix))
        ]

    def retained_heights(self) -> list[int]:
        """Every height whose state can still be read, proven and restored, ascending."""
        self._check_open()
        return [schema.read_u64(k, 1) for k, _ in self._reads.scan(schema.ROOT, b"s")]

    def diff(
        self, from_height: int, to_height: int
    ) -> Iterator[tuple[bytes, bytes | None, bytes | None]]:
        """(key, value at from_height, value at to_height) for each key that differs, key order."""
        self._check_open()
        if from_height > to_height:
            raise ValueError(f"from_height={from_height} is above to_height={to_height}")
        self._require_retained(from_height)
        self._require_retained(to_height)
        keys: set[bytes] = set()
        for height in self._heights_between(from_height, to_height):
            keys.update(key for ns, key, _, _ in self._read_diff(height) if ns == schema.NS_STATE)
        return self._diff_rows(sorted(keys), from_height, to_height)

    def _diff_rows(
        self, keys: list[bytes], from_height: int, to_height: int
    ) -> Iterator[tuple[bytes, bytes | None, bytes | None]]:
        for key in keys:
            old = self._versioned_get(key, from_height) if from_height >= 0 else None
            new = self.get(key, to_height)
            if old != new:
                yield key, old, new

    # ------------------------------------------------------------------ commit

    def commit(
        self,
        writes: Mapping[bytes, bytes | None],
        *,
        records: Mapping[str | bytes, bytes] | None = None,
        index: Mapping[bytes, bytes | None] | None = None,
        epoch: int | None = None,
    ) -> bytes:
        """Write version height+1 atomically; returns its root.

        `writes` go to the Merkleized state (None deletes). `records` are per-height blobs
        (block, receipts) kept with the height and archived if it is rolled back. `index`
        entries are non-Merkleized but versioned with the state, so a rollback reverts them.
        `epoch`, when given, must equal the store's fencing epoch.
        """
        return self.commit_staged(self.stage(writes, index=index), records=records, epoch=epoch)

    def stage(
        self,
        writes: Mapping[bytes, bytes | None],
        *,
        index: Mapping[bytes, bytes | None] | None = None,
    ) -> Staged:
        """Validate `writes` and compute the next version's root without writing anything.

        For a block producer, whose header carries the state root and must be written in the
        same batch: stage, build and sign the header, then `commit_staged(staged, records=...)`.
        Nothing changes until then; a staged version is void once another commit happens.
        """
        return drive(self.stage_steps(writes, index=index))

    def stage_steps(
        self,
        writes: Mapping[bytes, bytes | None],
        *,
        index: Mapping[bytes, bytes | None] | None = None,
    ) -> Steps[Staged]:
        """`stage` as a generator that yields every STAGE_STEP keys (and before the tree
        update) and returns the Staged: a producer computes it on its event loop in slices
        between which reads are answered. It only reads the store."""
        self._check_open()
        state = sorted((_check_key(k), _check_value(k, v)) for k, v in writes.items())
        extra = sorted((_check_key(k), _check_value(k, v)) for k, v in (index or {}).items())
        height = self._height + 1
        get = self._reads.get
        ops: list[Op] = []
        diff: list[list[Any]] = []
        changes: list[Change] = []
        for position, (key, value) in enumerate(state):
            if position % STAGE_STEP == STAGE_STEP - 1:
                yield None
            flat = schema.FLAT + key
            old = get(flat)
            if old == value:
                continue
            diff.append([schema.NS_STATE, key, _ABSENT if old is None else _PRESENT, old or b""])
            ops.append((flat, value))
            change = make_change(key, value)
            changes.append(change)
            # A versioned value carries 8 bytes of its hash so an old read of damaged bytes
            # fails loudly instead of answering wrong (the hash is computed for the tree anyway).
            vh = change[2]
            versioned = b"\x00" if vh is None or value is None else b"\x01" + vh[:8] + value
            ops.append((schema.versioned_key(key, height), versioned))
        self._stage_index(extra, ops, diff)
        changes.sort()
        yield None
        delta = yield from self._tree.compute_steps(changes)
        return Staged(height, self._tree.root(delta), len(changes), self._version, delta, ops, diff)

    def _stage_index(
        self, entries: list[tuple[bytes, bytes | None]], ops: list[Op], diff: list[list[Any]]
    ) -> None:
        for key, value in entries:
            physical = schema.INDEX + key
            raw = self._reads.get(physical)
            old = None if raw is None else _unseal(raw, f"index entry {key!r}")
            if old != value:
                diff.append(
                    [schema.NS_INDEX, key, _ABSENT if old is None else _PRESENT, old or b""]
                )
                ops.append((physical, None if value is None else _seal(value)))

    def commit_staged(
        self,
        staged: Staged,
        *,
        records: Mapping[str | bytes, bytes] | None = None,
        index: Mapping[bytes, bytes | None] | None = None,
        epoch: int | None = None,
        meta: Mapping[bytes, bytes | None] | None = None,
    ) -> bytes:
        """Write a staged version (plus its records and index entries known only once the
        root is, such as a block hash) as one atomic synced batch. `meta`: entries built by
        `maintenance_begin_meta` / `maintenance_end_meta`, written in the same batch."""
        return drive(
            self.commit_staged_steps(staged, records=records, index=index, epoch=epoch, meta=meta)
        )

    def commit_staged_steps(
        self,
        staged: Staged,
        *,
        records: Mapping[str | bytes, bytes] | None = None,
        index: Mapping[bytes, bytes | None] | None = None,
        epoch: int | None = None,
        meta: Mapping[bytes, bytes | None] | None = None,
    ) -> Steps[bytes]:
        """`commit_staged` as steps: the batch is built and filled between yields; the last
        step writes it (synced) and moves the head, so a reader between steps sees the
        previous version whole. Only the store's one writer may drive it."""
        self._check_open()
        if epoch is not None and epoch != self._epoch:
            raise StaleWriter(f"commit from writer epoch {epoch}; the store is at {self._epoch}")
        if staged.height != self._height + 1 or staged.base != self._version:
            raise StoreError(f"staged version {staged.height} is void: the store moved on")
        ops = list(staged.ops)
        diff = list(staged.diff)
        extra = sorted((_check_key(k), _check_value(k, v)) for k, v in (index or {}).items())
        staged_index = {entry[1] for entry in staged.diff if entry[0] == schema.NS_INDEX}
        if any(key in staged_index for key, _ in extra):
            raise ValueError("an index key given to both stage and commit_staged")
        self._stage_index(extra, ops, diff)
        diff.sort()
        ops.append((schema.diff_key(staged.height), _encode_diff(diff)))
        for name, blob in (records or {}).items():
            raw_name = _check_record(name, blob)
            ops.append((schema.record_key(staged.height, raw_name), _seal(blob)))
        height, root = staged.height, staged.root
        ops.append((schema.root_key(height), _seal(root)))
        meta_ops = self._check_meta(meta)
        ops.extend(meta_ops)
        ops.append((schema.META_LATEST, _pack([height, root])))  # last: the commit point
        yield None
        self._reads = self._db.snapshot()
        try:
            yield from self._write_steps(ops)
            self._height, self._root = height, root
            self._move_tree(staged.node)
            self._meta_written(meta_ops)
        finally:
            self._reads = self._db  # the snapshot goes with its last reader
        return root


__all__ = [
    "MAX_KEY_BYTES",
    "MAX_RECORD_BYTES",
    "MAX_VALUE_BYTES",
    "STAGE_STEP",
    "Checkpoint",
    "FlatDifference",
    "Fork",
    "Maintenance",
    "RollbackResult",
    "Staged",
    "VersionedStore",
]
