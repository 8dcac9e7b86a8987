"""IntegrityMixin: reads of the versioned history that never touch the flat table, the
repair of flat rows written around the store from that history, and verification (the head
root recomputed from the flat state; every retained height walked down by undoing diffs).

Imports node.core.merkle, node.store.{base,errors,flattree,parallel,rows,schema}.
"""

from __future__ import annotations

from node.core import merkle
from node.store import parallel, schema
from node.store.base import StoreBase
from node.store.errors import StoreCorrupted
from node.store.flattree import make_change
from node.store.rows import _PRESENT, FlatDifference, _check_key, _unpack, _unseal


class IntegrityMixin(StoreBase):
    """VersionedStore's history reads, flat repair and verification."""

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
