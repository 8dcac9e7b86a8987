"""VersionedStore: flat state + per-height diffs + versioned values + a flat-array Merkle tree.

Imports node.core.{merkle,errors}, node.store.{backend,errors,flattree,schema} and msgpack.

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
See docs/STORE.md for the design and its departures from DESIGN.md.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO, NamedTuple

import msgpack

from node.core import merkle
from node.core.steps import Steps, drive
from node.store import parallel, schema
from node.store.backend import Backend, LevelDBBackend, Op, Reader
from node.store.errors import (
    HeightUnavailable,
    ImportRefused,
    StaleWriter,
    StoreCorrupted,
    StoreError,
)
from node.store.flattree import Change, Delta, FlatTree, make_change

STAGE_STEP = 256  # keys staged between two yields of stage_steps

MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 1 << 20
MAX_RECORD_NAME_BYTES = 64
MAX_RECORD_BYTES = 64 << 20
ROLLBACK_ROWS_PER_BATCH = 50_000
IMPORT_PAIRS_PER_BATCH = 10_000  # 2 rows each: bounded memory and batch size for import_state
OLD_VERSIONS_CACHED = 4  # deltas of older heights kept for proofs (until the head moves)
logger = logging.getLogger("perpchain.store")

_ABSENT = 0
_PRESENT = 1


class Checkpoint(NamedTuple):
    name: str
    height: int
    root: bytes


class RollbackResult(NamedTuple):
    fork_id: int  # 0 when nothing was reverted
    from_height: int
    to_height: int
    heights_reverted: int
    rows_removed: int
    repaired: tuple[bytes, ...] = ()  # keys whose flat row disagreed with the history


class FlatDifference(NamedTuple):
    """A key whose flat row (what reads see) disagrees with its versioned history."""

    key: bytes
    flat: bytes | None
    history: bytes | None


class Staged(NamedTuple):
    """A computed but unwritten version: see VersionedStore.stage."""

    height: int
    root: bytes
    changed_keys: int
    base: int  # the head version it was computed on (checked at commit)
    node: Delta  # the tree's changes
    ops: list[tuple[bytes, bytes | None]]
    diff: list[list[Any]]  # packed by commit_staged, after any index entries given there


class Maintenance(NamedTuple):
    """An open maintenance window, as stored (schema.META_MAINTENANCE)."""

    reason: str
    checkpoint: str  # the pre-maintenance pin
    epoch: int  # the fencing epoch it began
    height: int  # the head when it began (the height of the pin)


class Fork(NamedTuple):
    """Heights (to_height, from_height] were rolled back and archived under fork_id."""

    fork_id: int
    from_height: int
    to_height: int
    reason: str


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as error:
        raise StoreCorrupted(f"undecodable {what}: {error}") from None


_CHECK_BYTES = 8


def _seal(data: bytes) -> bytes:
    """8 bytes of the SHA-256 of `data`, then `data`: the stored form of the roots and of every
    row no root covers (diffs, records, index entries, pins, archive, forks), so damaged bytes
    fail loudly when read (test_tamper) instead of answering wrong."""
    return hashlib.sha256(data).digest()[:_CHECK_BYTES] + data


def _unseal(raw: bytes, what: str) -> bytes:
    data = raw[_CHECK_BYTES:]
    if hashlib.sha256(data).digest()[:_CHECK_BYTES] != raw[:_CHECK_BYTES]:
        raise StoreCorrupted(f"{what} fails its check bytes")
    return data


def _encode_diff(entries: list[list[Any]]) -> bytes:
    """A diff row: the sealed msgpack entries. The check bytes also cover what no root does:
    the index entries and the lowest retained height's old values."""
    return _seal(_pack(entries))


def _check_key(key: object) -> bytes:
    if type(key) is not bytes:
        raise TypeError(f"keys are bytes, not {type(key).__name__}")
    if not 1 <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"key of {len(key)} bytes: keys are 1 to {MAX_KEY_BYTES} bytes")
    return key


def _check_value(key: bytes, value: object) -> bytes | None:
    if value is None:
        return None
    if type(value) is not bytes:
        raise TypeError(f"value of {key!r} must be bytes or None, not {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise ValueError(f"value of {len(value)} bytes exceeds {MAX_VALUE_BYTES} (key {key!r})")
    return value


def _check_name(name: object) -> bytes:
    raw = name.encode("utf-8") if isinstance(name, str) else name
    if type(raw) is not bytes or not 1 <= len(raw) <= MAX_RECORD_NAME_BYTES:
        raise ValueError(f"name {name!r} must be 1 to {MAX_RECORD_NAME_BYTES} bytes")
    return raw


class VersionedStore:
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
        self._reads: Reader = backend
        self._closed = False
        self._height, self._root = -1, merkle.EMPTY_ROOT
        self._version = 0  # bumped whenever the head tree moves: voids staged versions
        self._old: OrderedDict[int, Delta] = OrderedDict()  # LRU: height -> delta over head
        self._tree = FlatTree.empty()
        self.open_check = "new"  # how open obtained the tree: "seal", "rehashed", "mismatch"
        self._position: Any = None
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

    def _check_position(self) -> None:
        """Has anything but this store written to its database since the store's last write?
        Then the seal is void for good: the next open rehashes the state (and finds the rows
        if they are damage), however many commits follow. (A write of ours whose step never
        came back, a commit abandoned by a shutdown, is not that: see _close_seal.)"""
        if self._in_flight:
            return
        if not self.written_around and self._db.write_position() != self._position:
            self.written_around = True
            logger.error(
                "store.written_around height=%d: rows were written to the database around the "
                "store; the next open rebuilds the tree from the state and checks it "
                "(perpchain verify finds and names them now)",
                self._height,
            )

    def _write(self, ops: list[Op], *, sync: bool = True) -> None:
        """Every write of the store: the backend's position after it is the store's own."""
        self._check_position()
        self._db.write(ops, sync=sync)
        self._position = self._db.write_position()

    def _write_steps(self, ops: list[Op]) -> Steps[None]:
        self._check_position()
        self._in_flight = True  # until the step that wrote comes back (it may not: cancelled)
        yield from self._db.write_steps(ops, sync=True)
        self._in_flight = False
        self._position = self._db.write_position()

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

    def _tree_from_flat(self) -> FlatTree:
        """The tree of the flat table: every key and value hashed (O(state))."""
        return parallel.flat_tree(self._scan_flat(), strip=len(schema.FLAT))

    @staticmethod
    def _describe_import(raw: bytes) -> str:
        try:
            height, root = _unpack(_unseal(raw, "import marker"), "import marker")
            return f"height {height}, root {bytes(root).hex()}"
        except (StoreCorrupted, TypeError, ValueError):
            return "damaged import marker"

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

    def _check_root(
        self, tree: FlatTree, height: int, expected: bytes, when: str, delta: Delta | None = None
    ) -> None:
        actual = tree.root(delta)
        if actual != expected:
            raise StoreCorrupted(
                f"state root mismatch {when} at height {height}: "
                f"recorded {expected.hex()}, computed {actual.hex()}"
            )

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

    def _recorded_root(self, height: int) -> bytes | None:
        """The root row of `height` (None: not retained); StoreCorrupted if damaged."""
        raw = self._reads.get(schema.root_key(height))
        if raw is None:
            return None
        root = _unseal(raw, f"recorded root of height {height}")
        if len(root) != 32:
            raise StoreCorrupted(f"recorded root of height {height} is {len(root)} bytes")
        return root

    def get(self, key: bytes, height: int | None = None) -> bytes | None:
        self._check_open()
        _check_key(key)
        if height is None:
            return self._reads.get(schema.flat_key(key))
        self._require_retained(height)
        if height == self._height:
            return self._reads.get(schema.flat_key(key))
        return self._versioned_get(key, height)

    def _versioned_get(self, key: bytes, height: int) -> bytes | None:
        prefix = schema.versioned_prefix(key)
        for physical, raw in self._reads.scan(
            schema.versioned_key(key, height), schema.prefix_end(prefix)
        ):
            return self._versioned_value(key, physical, raw)
        return None

    def iter_prefix(self, prefix: bytes = b"", start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Latest (key, value) pairs whose key starts with `prefix` (and is >= `start`), in
        key order."""
        self._check_open()
        return self._iter_flat(prefix, start)

    def _scan_flat(self) -> Iterator[tuple[bytes, bytes]]:
        """The flat table's rows as stored (keys with the table's prefix): the O(state)
        hashing cuts the prefix where it hashes the key, with no generator per row."""
        return self._reads.scan(schema.FLAT, schema.prefix_end(schema.FLAT))

    def _iter_flat(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        first = schema.flat_key(max(prefix, start))
        for physical, value in self._reads.scan(first, schema.prefix_end(schema.flat_key(prefix))):
            yield physical[1:], value

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
            raw_name = self._check_record(name, blob)
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

    def _move_tree(self, delta: Delta | None, tree: FlatTree | None = None) -> None:
        """The head tree moves (a delta applied, or a new tree): older views are void."""
        if tree is not None:
            self._tree = tree
        if delta is not None:
            self._tree.apply(delta)
        self._version += 1
        self._old.clear()
        if self._tree.needs_regrow():  # the state doubled: its buckets cut again, O(state)
            began = time.perf_counter()
            self._tree = parallel.regrown(self._tree)
            logger.info(
                "store.tree_regrown keys=%d depth=%d seconds=%.2f",
                self._tree.count,
                self._tree.depth,
                time.perf_counter() - began,
            )

    # ------------------------------------------------------------------ import

    def import_state(
        self,
        pairs: Iterable[tuple[bytes, bytes]],
        *,
        height: int,
        expected_root: bytes,
        records: Mapping[str | bytes, bytes] | None = None,
        index: Mapping[bytes, bytes | None] | None = None,
    ) -> None:
        """Bootstrap an EMPTY store with the state of `height` (a snapshot): afterwards it is
        a store whose lowest retained height is `height` (heights below read as pruned).

        `pairs` must come in strictly ascending key order (ImportRefused otherwise); they are
        written in bounded batches (flat and versioned rows) after a sealed `import` marker,
        while the tree is built. The root must equal `expected_root` (ImportRefused
        otherwise). Then ONE synced batch writes the records and index entries of `height`,
        an empty diff, the root, `floor` = height, removes the marker and, last, `latest`.
        A crash before that batch leaves the marker, which `open` refuses with a clear
        StoreCorrupted; a refused import removes what it wrote (the store is empty again).
        """
        self._check_open()
        if type(height) is not int or not 0 <= height <= schema.U64_MASK >> 1:
            raise ValueError(f"height={height!r} must be a non-negative int")
        if type(expected_root) is not bytes or len(expected_root) != 32:
            raise ValueError("expected_root must be 32 bytes")
        if self._height != -1 or not self._holds_only_meta():
            raise ImportRefused(
                f"a state import needs an empty store; this one is at height {self._height}"
            )
        final: list[Op] = []
        for name, blob in (records or {}).items():
            final.append((schema.record_key(height, self._check_record(name, blob)), _seal(blob)))
        entries = sorted((_check_key(k), _check_value(k, v)) for k, v in (index or {}).items())
        for key, value in entries:
            if value is not None:
                final.append((schema.INDEX + key, _seal(value)))
        self._write([(schema.META_IMPORT, _seal(_pack([height, expected_root])))], sync=True)
        try:
            tree = FlatTree.from_changes(self._import_rows(pairs, height))
            root = tree.root()
            if root != expected_root:
                raise ImportRefused(
                    f"imported state of height {height} hashes to {root.hex()}, "
                    f"expected {expected_root.hex()}"
                )
            final += [
                (schema.diff_key(height), _encode_diff([])),
                (schema.root_key(height), _seal(root)),
                (schema.META_FLOOR, schema.u64(height)),
                (schema.META_IMPORT, None),
                (schema.META_LATEST, _pack([height, root])),  # last: the commit point
            ]
            self._write(final, sync=True)
        except BaseException:
            self._discard_import()
            raise
        self._height, self._root = height, root
        self._move_tree(None, tree)

    def _import_rows(self, pairs: Iterable[tuple[bytes, bytes]], height: int) -> Iterator[Change]:
        """Check each pair, write flat + versioned rows in bounded unsynced batches (the final
        synced batch of import_state makes them durable with it), yield its tree change."""
        ops: list[Op] = []
        previous = b""
        for key, value in pairs:
            _check_key(key)
            if key <= previous:
                raise ImportRefused(
                    f"key {key!r} after {previous!r}: keys must be strictly ascending"
                )
            if _check_value(key, value) is None:
                raise ValueError(f"value of {key!r} is None: a state holds live pairs only")
            previous = key
            change = make_change(key, value)
            vh = change[2]
            if vh is None:
                raise StoreCorrupted("a flat write without a value hash")
            ops.append((schema.FLAT + key, value))
            ops.append((schema.versioned_key(key, height), b"\x01" + vh[:8] + value))
            if len(ops) >= 2 * IMPORT_PAIRS_PER_BATCH:
                self._write(ops, sync=False)
                ops = []
            yield change
        if ops:
            self._write(ops, sync=False)

    def _holds_only_meta(self) -> bool:
        """No rows but meta rows (format, epoch): nothing was ever committed or imported."""
        meta = schema.META_LATEST[:1]
        for start, stop in ((b"", meta), (schema.prefix_end(meta) or b"", None)):
            if next(iter(self._reads.scan(start, stop)), None) is not None:
                return False
        return self._reads.get(schema.META_IMPORT) is None

    def _discard_import(self) -> None:
        """Remove the rows of a refused import in bounded batches, then its marker."""
        for prefix in (schema.FLAT, schema.VERSIONED):
            while True:
                rows = self._reads.scan(prefix, schema.prefix_end(prefix))
                batch: list[Op] = [
                    (physical, None)
                    for physical, _ in itertools.islice(rows, 2 * IMPORT_PAIRS_PER_BATCH)
                ]
                if not batch:
                    break
                self._write(batch, sync=False)
        self._write([(schema.META_IMPORT, None)], sync=True)

    @staticmethod
    def _check_record(name: str | bytes, blob: object) -> bytes:
        raw_name = _check_name(name)
        if raw_name[:1] == b"\x00":
            raise ValueError(f"record name {name!r}: names starting with NUL are reserved")
        if type(blob) is not bytes or len(blob) > MAX_RECORD_BYTES:
            raise ValueError(f"record {name!r} must be bytes of at most {MAX_RECORD_BYTES}")
        return raw_name

    def compact(self) -> None:
        """Compact the whole LevelDB keyspace (a maintenance job: run by the writer)."""
        self._check_open()
        self._db.compact()
        self._position = self._db.write_position()  # a compaction starts a new log

    def advance_epoch(self) -> int:
        """Start a new fencing epoch (durably); writers holding the old one are refused."""
        self._check_open()
        epoch = self._epoch + 1
        self._write([(schema.META_EPOCH, schema.u64(epoch))], sync=True)
        self._epoch = epoch
        return epoch

    # ------------------------------------------------------------------ maintenance

    def maintenance(self) -> Maintenance | None:
        """The open maintenance window, or None."""
        self._check_open()
        raw = self._reads.get(schema.META_MAINTENANCE)
        if raw is None:
            return None
        record = _unpack(_unseal(raw, "maintenance marker"), "maintenance marker")
        if (
            type(record) is not list
            or len(record) != 4
            or type(record[0]) is not str
            or type(record[1]) is not str
            or type(record[2]) is not int
            or type(record[3]) is not int
        ):
            raise StoreCorrupted("malformed maintenance marker")
        return Maintenance(record[0], record[1], record[2], record[3])

    def maintenance_begin_meta(
        self, *, reason: str, checkpoint: str, height: int, root: bytes, pin: bool = True
    ) -> dict[bytes, bytes | None]:
        """The meta entries that open a maintenance window at `height` (root `root`): the
        marker, the pin `checkpoint` (unless `pin` is False: it exists already) and the next
        fencing epoch. Given to `commit_staged(meta=...)` with the operator block that begins
        it, or to `write_meta` when no block is needed: all of it lands in one batch or none."""
        self._check_open()
        raw_name = _check_name(checkpoint)
        epoch = self._epoch + 1
        meta: dict[bytes, bytes | None] = {
            schema.META_MAINTENANCE: _seal(_pack([reason, checkpoint, epoch, height])),
            schema.META_EPOCH: schema.u64(epoch),
        }
        if pin:
            record = _seal(_pack([height, root, reason or "maintenance"]))
            meta[schema.checkpoint_key(raw_name)] = record
        return meta

    @staticmethod
    def maintenance_end_meta() -> dict[bytes, bytes | None]:
        """The meta entry that closes a maintenance window."""
        return {schema.META_MAINTENANCE: None}

    def write_meta(self, meta: Mapping[bytes, bytes | None]) -> None:
        """Entries of `maintenance_*_meta` as one synced batch of their own (no block)."""
        self._check_open()
        ops = self._check_meta(meta)
        self._write(ops, sync=True)
        self._meta_written(ops)

    @staticmethod
    def _check_meta(meta: Mapping[bytes, bytes | None] | None) -> list[Op]:
        """Only the maintenance marker, the epoch and pins ride along with a commit; never
        `latest` or another marker whose meaning is the state's own."""
        allowed = (schema.META_MAINTENANCE, schema.META_EPOCH)
        ops: list[Op] = []
        for key, value in sorted((meta or {}).items()):
            if key not in allowed and not key.startswith(schema.CHECKPOINT):
                raise ValueError(f"meta key {key!r} may not be written with a commit")
            if value is not None and type(value) is not bytes:
                raise TypeError(f"meta value of {key!r} must be bytes or None")
            ops.append((key, value))
        return ops

    def _meta_written(self, ops: list[Op]) -> None:
        for key, value in ops:
            if key == schema.META_EPOCH and value is not None:
                self._epoch = schema.read_u64(value)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, name: str, *, height: int | None = None, reason: str = "") -> Checkpoint:
        """Pin `height` (default: the head) under `name`; pruning never removes it."""
        self._check_open()
        raw_name = _check_name(name)
        if self._reads.get(schema.checkpoint_key(raw_name)) is not None:
            raise ValueError(f"checkpoint {name!r} exists")
        height = self._height if height is None else height
        if height < 0:
            raise HeightUnavailable("an empty store has nothing to checkpoint")
        root = self.root(height)
        record = _seal(_pack([height, root, reason]))
        self._write([(schema.checkpoint_key(raw_name), record)], sync=True)
        return Checkpoint(raw_name.decode("utf-8", "replace"), height, root)

    def checkpoints(self) -> list[Checkpoint]:
        """Every pin, ordered by height then name."""
        self._check_open()
        out = []
        for physical, raw in self._reads.scan(
            schema.CHECKPOINT, schema.prefix_end(schema.CHECKPOINT)
        ):
            height, root, _ = self._decode_checkpoint(raw)
            out.append(Checkpoint(physical[1:].decode("utf-8", "replace"), height, root))
        out.sort(key=lambda cp: (cp.height, cp.name))
        return out

    def get_checkpoint(self, name: str) -> Checkpoint:
        self._check_open()
        raw = self._reads.get(schema.checkpoint_key(_check_name(name)))
        if raw is None:
            raise KeyError(f"no checkpoint named {name!r}")
        height, root, _ = self._decode_checkpoint(raw)
        return Checkpoint(name, height, root)

    def delete_checkpoint(self, name: str) -> None:
        self._check_open()
        key = schema.checkpoint_key(_check_name(name))
        if self._reads.get(key) is None:
            raise KeyError(f"no checkpoint named {name!r}")
        self._write([(key, None)], sync=True)

    @staticmethod
    def _decode_checkpoint(raw: bytes) -> tuple[int, bytes, str]:
        record = _unpack(_unseal(raw, "checkpoint"), "checkpoint")
        if type(record) is not list or len(record) != 3 or type(record[0]) is not int:
            raise StoreCorrupted("malformed checkpoint record")
        return record[0], record[1], record[2]

    def _pinned_heights(self) -> list[int]:
        return sorted({cp.height for cp in self.checkpoints()})

    # ------------------------------------------------------------------ rollback

    def rollback_to(
        self, height: int, *, reason: str = "", check_flat: bool = False
    ) -> RollbackResult:
        """Make `height` the head again. Reverted heights are archived under a new fork id.

        Re-entrant: a crash at any point is completed by the next open. Checkpoints above
        `height` are deleted (their state no longer exists on this chain). Flat rows that were
        written around the store are restored from the versioned history when the restored
        root shows them; `check_flat` also rehashes the whole flat state to find damage the
        reverted heights never touched (O(state), for an operator's restore).
        """
        self._check_open()
        self._require_retained(height)
        if height == self._height:
            return RollbackResult(0, height, height, 0, 0)
        seq = self._reads.get(schema.META_FORK_SEQ)
        fork_id = (0 if seq is None else schema.read_u64(seq)) + 1
        if self._reads.get(schema.fork_key(fork_id)) is not None:  # never overwrite an archive
            raise StoreCorrupted(f"fork sequence {fork_id - 1} is behind the recorded forks")
        marker = _pack([height, fork_id, self._height])
        ops: list[Op] = [
            (schema.META_FORK_SEQ, schema.u64(fork_id)),
            (schema.fork_key(fork_id), _seal(_pack([self._height, height, reason]))),
            (schema.META_ROLLBACK, marker),
            # A rollback restores a state verified against its header and (node.ops.rollback)
            # commits a recovery block leaving every market CANCEL_ONLY: it ends a maintenance
            # window, in this first batch, so a crash anywhere after it leaves no stale marker.
            (schema.META_MAINTENANCE, None),
        ]
        for cp in self.checkpoints():
            if cp.height > height:
                ops.append((schema.checkpoint_key(_check_name(cp.name)), None))
        ops.append(
            (
                schema.archive_key(fork_id, self._height, schema.ARCHIVED_HEAD),
                _seal(_pack(self._head_values_since(height))),
            )
        )
        self._write(ops, sync=True)
        from_height = self._height
        undone: dict[bytes, bytes | None] = {}
        heights, rows = self._undo_to_marker(marker, undone)
        delta = self._tree.compute(sorted(make_change(k, v) for k, v in undone.items()))
        expected = self._recorded_root(height)
        if expected is None:
            raise StoreCorrupted(f"no recorded root at height {height}")
        repaired: tuple[bytes, ...] = ()
        self._height = height
        self._move_tree(delta)
        flat_root = None
        if check_flat and self._tree.root() == expected:
            flat_root = parallel.state_root(self._scan_flat(), strip=len(schema.FLAT))
        if self._tree.root() != expected or flat_root not in (None, expected):
            # The flat rows were written around the store (the diffs' old values are what the
            # flat table held): restore them from the versioned history, which the recorded
            # roots cover, and require the recorded root again.
            repaired = tuple(d.key for d in self.repair_flat())
        self._write([(schema.META_ROLLBACK, None)], sync=True)
        self._root = expected
        return RollbackResult(fork_id, from_height, height, heights, rows, repaired)

    def _undo_to_marker(
        self, marker: bytes, undone: dict[bytes, bytes | None] | None
    ) -> tuple[int, int]:
        """Undo heights above the marker's target, newest first, in atomic chunks.

        Each chunk leaves the store at a committed version (the next retained height below
        the chunk), with `latest` moved in the same batch. `undone` collects, per state key,
        its value at the target (for an incremental tree update). Returns (heights, rows).
        """
        decoded = _unpack(marker, "rollback marker")
        target, fork_id = decoded[0], decoded[1]
        latest_raw = self._reads.get(schema.META_LATEST)
        current = -1 if latest_raw is None else _unpack(latest_raw, "latest marker")[0]
        heights = [h for h in self._retained_from(target) if h > target and h <= current]
        heights.reverse()  # newest first
        total_rows = 0
        index = 0
        while index < len(heights):
            ops: list[Op] = []
            pending: dict[bytes, bytes | None] = {}
            rows = 0
            while index < len(heights) and rows < ROLLBACK_ROWS_PER_BATCH:
                height = heights[index]
                index += 1
                previous = heights[index] if index < len(heights) else target
                rows += self._undo_height(height, previous, fork_id, ops, pending)
            below = heights[index] if index < len(heights) else target
            root = self._recorded_root(below)
            if root is None:
                raise StoreCorrupted(f"rollback: no recorded root for height {below}")
            ops.extend(pending.items())
            ops.append((schema.META_LATEST, _pack([below, root])))
            self._write(ops, sync=True)
            if undone is not None:
                for physical, value in pending.items():
                    if physical[:1] == schema.FLAT:
                        undone[physical[1:]] = value
            total_rows += rows
        return len(heights), total_rows

    def _undo_height(
        self,
        height: int,
        previous: int,
        fork_id: int,
        ops: list[Op],
        pending: dict[bytes, bytes | None],
    ) -> int:
        """Append the ops that undo one height; returns the number of rows it touches.

        `previous` is the retained height below. When pruning merged the diffs of the heights
        between them into this one, every version of a key in (previous, height] goes.
        """
        merged = previous != height - 1
        diff_raw = self._reads.get(schema.diff_key(height)) or _encode_diff([])
        root_raw = self._reads.get(schema.root_key(height)) or _seal(b"")
        rows = 2
        for ns, key, flag, old in self._decode_diff(diff_raw, height):
            value = old if flag == _PRESENT else None
            if ns == schema.NS_STATE:
                pending[schema.FLAT + key] = value
                if merged:
                    for physical, _ in self._reads.scan(
                        schema.versioned_key(key, height), schema.versioned_key(key, previous)
                    ):
                        ops.append((physical, None))
                        rows += 1
                else:
                    ops.append((schema.versioned_key(key, height), None))
                rows += 1 + (not merged)
            else:
                pending[schema.INDEX + key] = None if value is None else _seal(value)
                rows += 1
        # Records are never pruned, so the heights merged into this one still have theirs:
        # they were reverted too and are archived with it, not left behind for a new fork.
        for physical, blob in self._reads.scan(
            schema.record_prefix(previous + 1), schema.record_prefix(height + 1)
        ):
            record_height = schema.read_u64(physical, 1)
            name = physical[len(schema.record_prefix(record_height)) :]
            ops.append((schema.archive_key(fork_id, record_height, name), blob))
            ops.append((physical, None))
            rows += 1
        ops.append((schema.archive_key(fork_id, height, schema.ARCHIVED_DIFF), diff_raw))
        ops.append((schema.archive_key(fork_id, height, schema.ARCHIVED_ROOT), root_raw))
        ops.append((schema.diff_key(height), None))
        ops.append((schema.root_key(height), None))
        return rows

    def _head_values_since(self, height: int) -> list[list[Any]]:
        """[key, value at the head | None] for every state key changed above `height`, from the
        history (what the reverted blocks committed), in key order: archived with a rollback so
        the reverted head's state stays readable (compensation) without re-executing."""
        touched: set[bytes] = set()
        for h in self._retained_from(height + 1):
            if h > self._height:
                break
            for ns, key, _, _ in self._read_diff(h):
                if ns == schema.NS_STATE:
                    touched.add(key)
        return [[key, self._versioned_get(key, self._height)] for key in sorted(touched)]

    def archived_head(self, fork_id: int) -> dict[bytes, bytes | None] | None:
        """The reverted head's value of every state key the fork changed (None: absent), or
        None for a fork archived before this row existed."""
        for fork in self.forks():
            if fork.fork_id == fork_id:
                raw = self.archived_record(fork_id, fork.from_height, schema.ARCHIVED_HEAD)
                if raw is None:
                    return None
                return {key: value for key, value in _unpack(raw, "archived head")}
        return None

    def forks(self) -> list[Fork]:
        """Every rollback, oldest first."""
        self._check_open()
        out = []
        for physical, raw in self._reads.scan(schema.FORK, schema.prefix_end(schema.FORK)):
            from_height, to_height, reason = _unpack(_unseal(raw, "fork record"), "fork record")
            out.append(Fork(schema.read_u64(physical, 1), from_height, to_height, reason))
        return out

    def archived_record(self, fork_id: int, height: int, name: str | bytes) -> bytes | None:
        """A record of a rolled-back height (also `\\x00diff`, packed, and `\\x00root`)."""
        self._check_open()
        raw_name = name.encode() if isinstance(name, str) else name
        raw = self._reads.get(schema.archive_key(fork_id, height, raw_name))
        what = f"archived record {raw_name!r} of fork {fork_id} height {height}"
        return None if raw is None else _unseal(raw, what)

    def archived_diff(self, fork_id: int, height: int) -> list[tuple[bytes, bytes | None]]:
        """(state key, value before `height`) for each key the rolled-back height changed."""
        self._check_open()
        raw = self._reads.get(schema.archive_key(fork_id, height, schema.ARCHIVED_DIFF))
        if raw is None:
            return []
        return [
            (key, old if flag == _PRESENT else None)
            for ns, key, flag, old in self._decode_diff(raw, height)
            if ns == schema.NS_STATE
        ]

    # ------------------------------------------------------------------ pruning

    def prune(self, before_height: int) -> int:
        """Drop history below `before_height` except pinned checkpoints; returns rows removed.

        The head is always kept. Diffs of dropped heights are merged into the next kept
        height, so every kept height (pins included) stays readable, provable and restorable.
        """
        self._check_open()
        before = min(before_height, self._height)
        pins = self._pinned_heights()
        candidates = [h for h in self.retained_heights() if h < before]
        doomed = [h for h in candidates if h not in set(pins)]
        if not doomed:
            return 0
        doomed_set = set(doomed)
        kept_below = [h for h in candidates if h not in doomed_set]
        next_keep = self._next_retained(before)
        ops: list[Op] = []
        rows = 0
        carry: dict[tuple[int, bytes], tuple[int, bytes]] = {}
        touched: dict[bytes, list[int]] = {}
        lowest_kept = kept_below[0] if kept_below else next_keep
        for height in candidates + ([next_keep] if next_keep is not None else []):
            entries = self._read_diff(height)
            if height in doomed_set:
                for ns, key, flag, old in entries:
                    carry.setdefault((ns, key), (flag, old))
                    if ns == schema.NS_STATE:
                        touched.setdefault(key, []).append(height)
                ops.append((schema.diff_key(height), None))
                ops.append((schema.root_key(height), None))
                rows += 2
                continue
            if height != lowest_kept and carry:
                merged = dict(carry)
                for ns, key, flag, old in entries:
                    merged.setdefault((ns, key), (flag, old))
                blob = [[ns, key, flag, old] for (ns, key), (flag, old) in sorted(merged.items())]
                ops.append((schema.diff_key(height), _encode_diff(blob)))
            carry = {}
        for key in sorted(touched):
            rows += self._prune_versions(key, pins, before, ops)
        ops.append((schema.META_FLOOR, schema.u64(before)))
        self._write(ops, sync=True)
        for gone in [h for h in self._old if h in doomed_set]:
            del self._old[gone]
        return rows

    def _prune_versions(self, key: bytes, pins: list[int], before: int, ops: list[Op]) -> int:
        """Delete versions of `key` below `before` that no retained height reads any more."""
        prefix = schema.versioned_prefix(key)
        versions = [
            schema.versioned_height(k)
            for k, _ in self._reads.scan(prefix, schema.prefix_end(prefix))
        ]
        versions.reverse()  # ascending
        removed = 0
        for position, version in enumerate(versions):
            if version >= before:
                break
            following = versions[position + 1] if position + 1 < len(versions) else None
            if following is None or following > before:
                continue  # still the value at `before` (and above)
            first_pin = bisect_left(pins, version)
            if first_pin < len(pins) and pins[first_pin] < following:
                continue  # still the value at a pinned height
            ops.append((schema.versioned_key(key, version), None))
            removed += 1
        return removed

    # ------------------------------------------------------------------ history and repair

    def history_get(self, key: bytes, height: int | None = None) -> bytes | None:
        """The value at `height` (default: head) read from the versioned rows only, never the
        flat table: what the committed blocks wrote, even if the flat rows were damaged."""
        self._check_open()
        _check_key(key)
        at = self._height if height is None else height
        self._require_retained(at)
        return self._versioned_get(key, at)

    def history_state(self, height: int | None = None) -> list[tuple[bytes, bytes]]:
        """Every live (key, value) at `height` (default: head) from the versioned rows, in key
        order. O(versions): for verification and repair, not for serving reads."""
        self._check_open()
        at = self._height if height is None else height
        if at >= 0:
            self._require_retained(at)
        out: list[tuple[bytes, bytes]] = []
        last: bytes | None = None
        for physical, raw in self._reads.scan(
            schema.VERSIONED, schema.prefix_end(schema.VERSIONED)
        ):
            size = int.from_bytes(physical[1:3], "big")
            key = physical[3 : 3 + size]
            if key == last or schema.versioned_height(physical) > at:
                continue  # an older version of a key already decided, or a newer one
            last = key
            value = self._versioned_value(key, physical, raw)
            if value is not None:
                out.append((key, value))
        out.sort()
        return out

    def flat_differences(self) -> list[FlatDifference]:
        """Keys whose flat row disagrees with the history at the head: a write that went
        around the store (damage, a migration that bypassed the writer). Sorted by key."""
        history = dict(self.history_state())
        out = []
        for key, value in self._iter_flat(b""):
            expected = history.pop(key, None)
            if expected != value:
                out.append(FlatDifference(key, value, expected))
        out.extend(FlatDifference(key, None, value) for key, value in history.items())
        out.sort()
        return out

    def repair_flat(self) -> list[FlatDifference]:
        """Rewrite the flat rows that disagree with the history at the head (one synced batch),
        rebuild the tree, and check it against the recorded root; StoreCorrupted if the history
        itself does not hash to it. Returns what was repaired."""
        differences = self.flat_differences()
        if differences:
            self._write([(schema.flat_key(d.key), d.history) for d in differences], sync=True)
        tree = self._tree_from_flat()
        if self._height >= 0:
            recorded = self._recorded_root(self._height)
            if recorded is None:
                raise StoreCorrupted("no recorded root for a retained height")
            self._check_root(tree, self._height, recorded, "after repair from history")
            self._root = recorded
        self._move_tree(None, tree)
        return differences

    def _versioned_value(self, key: bytes, physical: bytes, raw: bytes) -> bytes | None:
        if raw[:1] == b"\x01" and len(raw) >= 9:
            value = raw[9:]
            if merkle.value_hash(value)[:8] != raw[1:9]:
                raise StoreCorrupted(
                    f"versioned value of {key!r} at height "
                    f"{schema.versioned_height(physical)} fails its check bytes"
                )
            return value
        if raw != b"\x00":
            raise StoreCorrupted(f"malformed versioned value of {key!r}")
        return None

    # ------------------------------------------------------------------ verification

    def verify(self) -> None:
        """Recompute the head root from the flat state; StoreCorrupted on any mismatch."""
        self._check_open()
        computed = parallel.state_root(self._scan_flat(), strip=len(schema.FLAT))
        recorded = self._recorded_root(self._height) if self._height >= 0 else None
        for what, root in (
            ("head root in memory", self._root),
            ("recorded root", recorded if self._height >= 0 else merkle.EMPTY_ROOT),
        ):
            if root != computed:
                raise StoreCorrupted(
                    f"flat state at height {self._height} hashes to {computed.hex()}, "
                    f"{what} is {root.hex() if root else None}"
                )
        raw = self._reads.get(schema.META_LATEST)
        if self._height >= 0 and (raw is None or _unpack(raw, "latest")[1] != computed):
            raise StoreCorrupted("latest marker disagrees with the flat state")

    def verify_history(self) -> int:
        """Walk every retained height from the head down, undoing diffs on the tree, and
        check each recorded root, each versioned value and each checkpoint; then the check
        bytes of every record, index entry, archived row and fork record. Returns heights."""
        self.verify()
        tree = self._tree.copy()  # walked down the heights by undoing their diffs
        heights = self.retained_heights()
        for position in range(len(heights) - 1, -1, -1):
            height = heights[position]
            self._check_root(tree, height, self.root(height), "in history")
            entries = [e for e in self._read_diff(height) if e[0] == schema.NS_STATE]
            for _, key, _, _ in entries:
                value = self._versioned_get(key, height)
                stored = tree.lookup(make_change(key, None)[1])
                expected = None if value is None else merkle.value_hash(value)
                if stored != expected:
                    raise StoreCorrupted(f"versioned value of {key!r} at {height} is not the state")
            if position == 0:
                break
            tree.apply(
                tree.compute(
                    sorted(
                        make_change(key, old if flag == _PRESENT else None)
                        for _, key, flag, old in entries
                    )
                )
            )
        for cp in self.checkpoints():
            if self.root(cp.height) != cp.root:
                raise StoreCorrupted(f"checkpoint {cp.name!r} root differs from height {cp.height}")
        for prefix in (schema.RECORD, schema.INDEX, schema.ARCHIVE, schema.FORK):
            for physical, raw in self._reads.scan(prefix, schema.prefix_end(prefix)):
                _unseal(raw, f"row {physical!r}")
        return len(heights)

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def _require_retained(self, height: int) -> None:
        if type(height) is not int:
            raise TypeError(f"height must be an int, not {type(height).__name__}")
        if height < 0 or height > self._height:
            raise HeightUnavailable(f"height {height} is not committed (head is {self._height})")
        if height != self._height and self._reads.get(schema.root_key(height)) is None:
            raise HeightUnavailable(f"height {height} was pruned or rolled back")

    def _retained_from(self, low: int) -> list[int]:
        return [schema.read_u64(k, 1) for k, _ in self._reads.scan(schema.root_key(low), b"s")]

    def _next_retained(self, low: int) -> int | None:
        for physical, _ in self._reads.scan(schema.root_key(low), b"s"):
            return schema.read_u64(physical, 1)
        return None

    def _heights_between(self, low: int, high: int) -> list[int]:
        """Retained heights in (low, high]."""
        return [
            schema.read_u64(k, 1)
            for k, _ in self._reads.scan(schema.root_key(low + 1), schema.root_key(high + 1))
        ]

    def _read_diff(self, height: int) -> list[tuple[int, bytes, int, bytes]]:
        raw = self._reads.get(schema.diff_key(height))
        return [] if raw is None else self._decode_diff(raw, height)

    @staticmethod
    def _decode_diff(raw: bytes, height: int) -> list[tuple[int, bytes, int, bytes]]:
        entries = _unpack(_unseal(raw, f"diff of height {height}"), f"diff of height {height}")
        if type(entries) is not list:
            raise StoreCorrupted(f"malformed diff of height {height}")
        out = []
        for entry in entries:
            if (
                type(entry) is not list
                or len(entry) != 4
                or entry[0] not in (schema.NS_STATE, schema.NS_INDEX)
                or type(entry[1]) is not bytes
                or entry[2] not in (_ABSENT, _PRESENT)
                or type(entry[3]) is not bytes
            ):
                raise StoreCorrupted(f"malformed diff entry at height {height}")
            out.append((entry[0], entry[1], entry[2], entry[3]))
        return out

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


__all__ = ["Checkpoint", "Fork", "RollbackResult", "Staged", "VersionedStore"]
