"""ImportMixin: `import_state` fills an empty store with the state of one height (a
snapshot), behind a sealed marker that `open` refuses until the import completes (and names,
through `_describe_import`). See docs/STORE.md, "Snapshots".

Imports node.store.{backend,base,errors,flattree,rows,schema}.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping

from node.store import schema
from node.store.backend import Op
from node.store.base import StoreBase
from node.store.errors import ImportRefused, StoreCorrupted
from node.store.flattree import Change, FlatTree, make_change
from node.store.rows import (
    _check_key,
    _check_record,
    _check_value,
    _encode_diff,
    _pack,
    _seal,
    _unpack,
    _unseal,
)

IMPORT_PAIRS_PER_BATCH = 10_000  # 2 rows each: bounded memory and batch size for import_state


class ImportMixin(StoreBase):
    """VersionedStore.import_state and its helpers."""

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
            final.append((schema.record_key(height, _check_record(name, blob)), _seal(blob)))
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
    def _describe_import(raw: bytes) -> str:
        try:
            height, root = _unpack(_unseal(raw, "import marker"), "import marker")
            return f"height {height}, root {bytes(root).hex()}"
        except (StoreCorrupted, TypeError, ValueError):
            return "damaged import marker"
