"""What every job of VersionedStore shares: the limits on keys, values and records, their
argument checks, the stored forms of rows (msgpack; sealed with 8 check bytes; diff rows) and
the records the store's API returns (Checkpoint, RollbackResult, Fork, ...).

Imports node.store.{errors,flattree} and msgpack. The names with a leading underscore are the
store's own (node.store.*), not its API.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import msgpack

from node.store.errors import StoreCorrupted
from node.store.flattree import Delta

MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 1 << 20
MAX_RECORD_NAME_BYTES = 64
MAX_RECORD_BYTES = 64 << 20

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


def _check_record(name: str | bytes, blob: object) -> bytes:
    raw_name = _check_name(name)
    if raw_name[:1] == b"\x00":
        raise ValueError(f"record name {name!r}: names starting with NUL are reserved")
    if type(blob) is not bytes or len(blob) > MAX_RECORD_BYTES:
        raise ValueError(f"record {name!r} must be bytes of at most {MAX_RECORD_BYTES}")
    return raw_name
