"""MaintenanceMixin: the writer's housekeeping (compaction, the fencing epoch), the
maintenance window's marker and the meta entries that open and close it, and checkpoints
(named pins of a height that pruning keeps).

Imports node.store.{backend,base,errors,rows,schema}.
"""

from __future__ import annotations

from collections.abc import Mapping

from node.store import schema
from node.store.backend import Op
from node.store.base import StoreBase
from node.store.errors import HeightUnavailable, StoreCorrupted
from node.store.rows import Checkpoint, Maintenance, _check_name, _pack, _seal, _unpack, _unseal


class MaintenanceMixin(StoreBase):
    """VersionedStore's epoch, maintenance window and checkpoints."""

    # ------------------------------------------------------------------ compaction and epoch

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
