"""StoreBase: the state of a VersionedStore and the internals all its jobs share.

VersionedStore (node.store.versioned) sets the state in `__init__` and `open`; the mixins
that hold its other jobs (state_import, maintenance, rollback, pruning, integrity) subclass
StoreBase so each sees the state and these internals, typed. Here: every write of the store
(`_write`, with the check that nothing wrote around it), the retained heights and their diffs,
the recorded roots and the head tree, and reads of the flat and versioned rows.

Imports node.core.{merkle,steps}, node.store.{backend,errors,flattree,parallel,rows,schema}.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from node.core import merkle
from node.core.steps import Steps
from node.store import parallel, schema
from node.store.backend import Backend, Op, Reader
from node.store.errors import HeightUnavailable, StoreCorrupted, StoreError
from node.store.flattree import Delta, FlatTree
from node.store.rows import _ABSENT, _PRESENT, Checkpoint, FlatDifference, _unpack, _unseal

logger = logging.getLogger("perpchain.store")


class StoreBase:
    """The state every job of the store reads (set by VersionedStore) and the internals they
    share. Not a store by itself: VersionedStore is the class to use."""

    _db: Backend
    _seal_on_close: bool
    _reads: Reader
    _closed: bool
    _height: int
    _root: bytes
    _epoch: int
    _version: int
    _old: OrderedDict[int, Delta]
    _tree: FlatTree
    open_check: str
    _position: Any
    written_around: bool
    _in_flight: bool

    if TYPE_CHECKING:  # defined by the job that owns each, called by others

        def root(self, height: int | None = None) -> bytes: ...  # versioned
        def retained_heights(self) -> list[int]: ...  # versioned
        def checkpoints(self) -> list[Checkpoint]: ...  # maintenance
        def _pinned_heights(self) -> list[int]: ...  # maintenance
        def repair_flat(self) -> list[FlatDifference]: ...  # integrity

    # ------------------------------------------------------------------ writes

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

    # ------------------------------------------------------------------ heights and diffs

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

    # ------------------------------------------------------------------ roots and the head tree

    def _recorded_root(self, height: int) -> bytes | None:
        """The root row of `height` (None: not retained); StoreCorrupted if damaged."""
        raw = self._reads.get(schema.root_key(height))
        if raw is None:
            return None
        root = _unseal(raw, f"recorded root of height {height}")
        if len(root) != 32:
            raise StoreCorrupted(f"recorded root of height {height} is {len(root)} bytes")
        return root

    def _check_root(
        self, tree: FlatTree, height: int, expected: bytes, when: str, delta: Delta | None = None
    ) -> None:
        actual = tree.root(delta)
        if actual != expected:
            raise StoreCorrupted(
                f"state root mismatch {when} at height {height}: "
                f"recorded {expected.hex()}, computed {actual.hex()}"
            )

    def _tree_from_flat(self) -> FlatTree:
        """The tree of the flat table: every key and value hashed (O(state))."""
        return parallel.flat_tree(self._scan_flat(), strip=len(schema.FLAT))

    def _move_tree(self, delta: Delta | None, tree: FlatTree | None = None) -> None:
        """The head tree moves (a delta applied, or a new tree): older views are void."""
        if tree is not None:
            self._tree = tree
        if delta is not None:
            self._tree.apply(delta)
        self._version += 1
        self._old.clear()
        if self._tree.needs_regrow():  # buckets past 8 leaves on average: cut again, O(state)
            began = time.perf_counter()
            self._tree = parallel.regrown(self._tree)
            logger.info(
                "store.tree_regrown keys=%d depth=%d seconds=%.2f",
                self._tree.count,
                self._tree.depth,
                time.perf_counter() - began,
            )

    # ------------------------------------------------------------------ flat and versioned rows

    def _scan_flat(self) -> Iterator[tuple[bytes, bytes]]:
        """The flat table's rows as stored (keys with the table's prefix): the O(state)
        hashing cuts the prefix where it hashes the key, with no generator per row."""
        return self._reads.scan(schema.FLAT, schema.prefix_end(schema.FLAT))

    def _iter_flat(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        first = schema.flat_key(max(prefix, start))
        for physical, value in self._reads.scan(first, schema.prefix_end(schema.flat_key(prefix))):
            yield physical[1:], value

    def _versioned_get(self, key: bytes, height: int) -> bytes | None:
        prefix = schema.versioned_prefix(key)
        for physical, raw in self._reads.scan(
            schema.versioned_key(key, height), schema.prefix_end(prefix)
        ):
            return self._versioned_value(key, physical, raw)
        return None

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
