"""PruningMixin: `prune` drops history below a height except pinned checkpoints, merging
the diffs of dropped heights into the next kept one so every kept height stays readable,
provable and restorable.

Imports node.store.{backend,base,rows,schema}.
"""

from __future__ import annotations

from bisect import bisect_left

from node.store import schema
from node.store.backend import Op
from node.store.base import StoreBase
from node.store.rows import _encode_diff


class PruningMixin(StoreBase):
    """VersionedStore.prune."""

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
