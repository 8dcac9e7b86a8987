"""RollbackMixin: `rollback_to` (a progress marker, then heights undone newest-first in
atomic chunks, each a valid committed version; `open` finishes an interrupted one through
`_undo_to_marker`) and the reads of what it archived: forks, archived records, diffs and the
reverted head's values.

Imports node.store.{backend,base,errors,flattree,parallel,rows,schema}.
"""

from __future__ import annotations

from typing import Any

from node.store import parallel, schema
from node.store.backend import Op
from node.store.base import StoreBase
from node.store.errors import StoreCorrupted
from node.store.flattree import make_change
from node.store.rows import (
    _PRESENT,
    Fork,
    RollbackResult,
    _check_name,
    _encode_diff,
    _pack,
    _seal,
    _unpack,
    _unseal,
)

ROLLBACK_ROWS_PER_BATCH = 50_000


class RollbackMixin(StoreBase):
    """VersionedStore.rollback_to and the forks it archives."""

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
