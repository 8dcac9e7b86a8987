"""Canonical msgpack: the one byte encoding of every consensus record. Imports node.core.errors.

A record is a frozen dataclass with a `TAG: ClassVar[int]`; on the wire it is the array
`[TAG, field1, ...]` in field order. Fields may be `int` (and NewTypes / IntEnums over it, in the
int64 range), `bytes` (and NewTypes over it), a nested record, or a `tuple[X, ...]` of those.
No maps, floats, strings, bools or None: there is exactly one encoding of each value, and
`decode` re-encodes what it read and rejects bytes that differ (non-shortest ints, bin16 for a
short blob, trailing data...).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

from node.core.errors import NotCanonical, OutOfRange

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
MAX_BIN = 1 << 20  # 1 MiB: the largest byte string any record may carry
MAX_ARRAY = 1 << 16  # the longest array (record fields or tuple items)
MAX_INPUT = 4 << 20  # the largest encoded record decode() accepts

R = TypeVar("R")
Wire = Any  # nested lists of int and bytes
_ToWire = Callable[[Any], Wire]
_FromWire = Callable[[Wire], Any]


def _check_int(value: Any) -> int:
    if type(value) is not int:
        if not isinstance(value, enum.IntEnum):
            raise NotCanonical(f"expected int, got {type(value).__name__}")
        value = int(value)
    number: int = value
    if not I64_MIN <= number <= I64_MAX:
        raise OutOfRange(f"integer {number} does not fit in int64")
    return number


def _check_bytes(value: Any) -> bytes:
    if type(value) is not bytes:
        raise NotCanonical(f"expected bytes, got {type(value).__name__}")
    if len(value) > MAX_BIN:
        raise OutOfRange(f"byte string of {len(value)} bytes exceeds {MAX_BIN}")
    return value


class _Schema:
    __slots__ = ("cls", "tag", "names", "to_wire", "from_wire")

    def __init__(self, cls: type) -> None:
        tag = getattr(cls, "TAG", None)
        if not dataclasses.is_dataclass(cls) or not isinstance(tag, int):
            raise TypeError(f"{cls.__name__} is not a record (frozen dataclass with int TAG)")
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        self.cls = cls
        self.tag = int(tag)
        self.names = tuple(f.name for f in fields)
        self.to_wire = tuple(_converter(hints[f.name], cls)[0] for f in fields)
        self.from_wire = tuple(_converter(hints[f.name], cls)[1] for f in fields)


_SCHEMAS: dict[type, _Schema] = {}


def _schema(cls: type) -> _Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _SCHEMAS[cls] = _Schema(cls)
    return schema


def _converter(tp: Any, owner: type) -> tuple[_ToWire, _FromWire]:
    """(to_wire, from_wire) for one field type; from_wire validates what the wire holds."""
    supertype = getattr(tp, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return _converter(supertype, owner)
    if tp is int:
        return _check_int, _check_int
    if tp is bytes:
        return _check_bytes, _check_bytes
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        enum_cls = tp

        def enum_from_wire(wire: Wire) -> Any:
            try:
                return enum_cls(_check_int(wire))
            except ValueError:
                raise NotCanonical(f"{wire} is not a {enum_cls.__name__}") from None

        return _check_int, enum_from_wire
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item_to, item_from = _converter(args[0], owner)

            def seq_to_wire(value: Any) -> Wire:
                if type(value) is not tuple:
                    raise NotCanonical(f"expected tuple, got {type(value).__name__}")
                return [item_to(item) for item in value]

            def seq_from_wire(wire: Wire) -> Any:
                if type(wire) is not list:
                    raise NotCanonical("expected an array")
                return tuple(item_from(item) for item in wire)

            return seq_to_wire, seq_from_wire
        convs = [_converter(arg, owner) for arg in args]

        def fixed_to_wire(value: Any) -> Wire:
            if type(value) is not tuple or len(value) != len(convs):
                raise NotCanonical(f"expected a {len(convs)}-tuple")
            return [conv[0](item) for conv, item in zip(convs, value, strict=True)]

        def fixed_from_wire(wire: Wire) -> Any:
            if type(wire) is not list or len(wire) != len(convs):
                raise NotCanonical(f"expected an array of {len(convs)}")
            return tuple(conv[1](item) for conv, item in zip(convs, wire, strict=True))

        return fixed_to_wire, fixed_from_wire
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"{owner.__name__}: optional/union fields are not canonical; use 0 or b''")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return to_wire, (lambda wire: from_wire(wire, tp))
    raise TypeError(f"{owner.__name__}: field type {tp!r} cannot be encoded")


_FITS: dict[type, Callable[[Any], bool]] = {}


def fits(record: Any) -> bool:
    """True when every int field of `record` (a flat record) fits int64: the cheap check that
    `encode` will not raise OutOfRange for it (tuple and nested fields are not walked; the
    records with arithmetic in them have none). One generated comparison chain per class:
    this runs on every record every tx writes."""
    check = _FITS.get(type(record))
    if check is None:
        check = _FITS[type(record)] = _make_fits(type(record))
    return check(record)


def _make_fits(cls: type) -> Callable[[Any], bool]:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if _is_int_type(hints[f.name])]
    body = " and ".join(f"_LO <= r.{name} <= _HI" for name in names) or "True"
    namespace: dict[str, Any] = {"_LO": I64_MIN, "_HI": I64_MAX}
    exec(f"def fits(r):\n    return {body}", namespace)  # noqa: S102 - from the class's fields
    return namespace["fits"]  # type: ignore[no-any-return]


def _is_int_type(tp: Any) -> bool:
    tp = getattr(tp, "__supertype__", tp)
    return tp is int or (isinstance(tp, type) and issubclass(tp, int))


def to_wire(record: Any) -> Wire:
    """The record as nested lists of ints and bytes (the msgpack array form)."""
    schema = _schema(type(record))
    wire: list[Any] = [schema.tag]
    for name, conv in zip(schema.names, schema.to_wire, strict=True):
        wire.append(conv(getattr(record, name)))
    return wire


def from_wire(wire: Wire, cls: type[R]) -> R:
    """Rebuild a record of `cls` from its array form, validating every field's type."""
    schema = _schema(cls)
    if type(wire) is not list or len(wire) != 1 + len(schema.names):
        raise NotCanonical(f"not a {cls.__name__}: expected an array of {1 + len(schema.names)}")
    if type(wire[0]) is not int or wire[0] != schema.tag:
        raise NotCanonical(f"not a {cls.__name__}: tag {wire[0]!r} != {schema.tag}")
    kwargs = {
        name: conv(value)
        for name, conv, value in zip(schema.names, schema.from_wire, wire[1:], strict=True)
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise NotCanonical(f"invalid {cls.__name__}: {error}") from None


def pack(wire: Wire) -> bytes:
    """Canonical bytes of nested lists of ints (int64) and bytes."""
    _check_wire(wire, 0)
    return msgpack.packb(wire, use_bin_type=True, strict_types=True)  # type: ignore[no-any-return]


def _check_wire(wire: Wire, depth: int) -> None:
    kind = type(wire)
    if kind is int:
        if not I64_MIN <= wire <= I64_MAX:
            raise OutOfRange(f"integer {wire} does not fit in int64")
    elif kind is bytes:
        if len(wire) > MAX_BIN:
            raise OutOfRange(f"byte string of {len(wire)} bytes exceeds {MAX_BIN}")
    elif kind is list:
        if depth > 32 or len(wire) > MAX_ARRAY:
            raise OutOfRange("array too deep or too long")
        for item in wire:
            _check_wire(item, depth + 1)
    else:
        raise NotCanonical(f"{kind.__name__} is not allowed on the wire (ints and bytes only)")


def unpack(data: bytes, *, max_input: int = MAX_INPUT) -> Wire:
    """Parse canonical bytes into nested lists; reject anything that would not re-encode equal."""
    if type(data) is not bytes:
        raise NotCanonical(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_input:
        raise OutOfRange(f"input of {len(data)} bytes exceeds {max_input}")
    try:
        wire = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=0,
            max_map_len=0,
            max_ext_len=0,
            max_bin_len=MAX_BIN,
            max_array_len=MAX_ARRAY,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as error:
        raise NotCanonical(f"undecodable: {type(error).__name__}: {error}") from None
    if pack(wire) != data:  # also rejects floats, nil, bools: pack() allows ints and bytes only
        raise NotCanonical("bytes are not the canonical encoding")
    return wire


def encode(record: Any) -> bytes:
    """Canonical bytes of a record."""
    return msgpack.packb(to_wire(record), use_bin_type=True, strict_types=True)  # type: ignore[no-any-return]


def decode(data: bytes, cls: type[R], *, max_input: int = MAX_INPUT) -> R:
    """Parse and validate canonical bytes of a `cls` record; NotCanonical/OutOfRange otherwise."""
    return from_wire(unpack(data, max_input=max_input), cls)


def decode_state(data: bytes, cls: type[R]) -> R:
    """Decode a value read back from the state: the same field checks as `decode` (types,
    int64 range, tags) without the re-encode comparison. The state only ever holds bytes this
    module encoded, and the store checks them against the Merkle root; skipping the second
    pack halves the cost of the reads every block makes. Untrusted input uses `decode`."""
    try:
        wire = msgpack.unpackb(data, raw=False, use_list=True, max_map_len=0, max_str_len=0)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as error:
        raise NotCanonical(f"undecodable state value: {error}") from None
    return from_wire(wire, cls)
