"""Request bodies -> JSON-RPC entries: strict JSON in one linear pass, then the envelope rules.
Imports the stdlib and node.rpc.errors only.

`parse_body(bytes, limits)` never raises: a body becomes a `ParsedBody` (single or batch) whose
entries are `Request`s or `EnvelopeError`s already bound to the id to answer with.

Why parse first and check depth after: any scan of the raw bytes that has to understand strings
costs more than the parser itself, and a regex that skips string escapes backtracks without end
on an unterminated string of `\\"` (64 KB froze the loop for 12-20 s; issue 20). The stdlib
parser is linear in C; it recurses per nesting level, so a body of a million `[` stops at the
interpreter's recursion limit with a RecursionError within a millisecond. The parsed document is
then walked once, iteratively, stopping at the first container past `max_json_depth`; the same
walk refuses lone surrogates (`"\\ud800"` parses, but no UTF-8 response can carry it) and
numbers too large to be finite. docs/SECURITY.md lists every limit; docs/PERFORMANCE.md, "Hostile
bodies", the times.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from node.rpc.errors import ErrorCode, RpcError

JSONRPC_VERSION: Final = "2.0"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_batch: int = 100
    max_json_depth: int = 16
    deadline_ms: int = 10_000  # per request

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_batch", "max_json_depth", "deadline_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name}={getattr(self, name)} must be >= 1")


RequestId = str | int | None


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    params: dict[str, Any]
    id: RequestId
    is_notification: bool  # no `id` member: run it, send nothing back
    positional: bool = False  # params was an array: answered -32602 (by-name only)


@dataclass(frozen=True, slots=True)
class EnvelopeError:
    """An entry that is not a valid request: answered with `error` and `id` (null if unknown)."""

    error: RpcError
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class ParsedBody:
    entries: tuple[Request | EnvelopeError, ...]
    is_batch: bool


_ALLOWED_MEMBERS: Final = frozenset({"jsonrpc", "method", "params", "id"})


def _parse_error(why: str) -> RpcError:
    return RpcError(ErrorCode.PARSE_ERROR, f"Parse error: {why}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:50]!r} in an object")
            seen.add(key)
    return obj


_DECODER: Final = json.JSONDecoder(
    parse_constant=_reject_constant, object_pairs_hook=_unique_object, strict=True
)


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# The escape of a surrogate code point (\ud800-\udfff): only then are strings looked at.
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
_PLAIN: Final = frozenset({int, bool, type(None)})
_CONTAINERS: Final = (dict, list)


def check_structure(document: Any, max_depth: int, *, strings: bool = True) -> None:
    """Raise -32700 if `document` nests deeper than `max_depth` containers, holds a string
    (value or key) with a lone surrogate (only looked for when `strings`), or a non-finite
    number. Iterative, stops at the first offence, and looks at a container's members one by
    one only for the kinds it holds (`set(map(type, ...))` runs in C): a params array of
    500,000 integers costs ~5 ms, not ~50."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    if type(document) not in _CONTAINERS:
        stack = [([document], 0)]
    while stack:
        value, level = stack.pop()
        if level > max_depth:
            raise _parse_error(f"JSON nested deeper than the limit of {max_depth} levels")
        if type(value) is dict:
            if strings and any(map(_has_surrogate, value)):
                raise _parse_error("lone surrogate (\\ud800-\\udfff) in an object key")
            children: Any = value.values()
        else:
            children = value
        kinds = set(map(type, children))
        if kinds <= _PLAIN:
            continue
        if float in kinds:
            for child in children:
                if type(child) is float and child - child != 0.0:
                    raise _parse_error("number out of range (not finite)")
        if strings and str in kinds:
            for child in children:
                if type(child) is str and _has_surrogate(child):
                    raise _parse_error("lone surrogate (\\ud800-\\udfff) in a string")
        if dict in kinds or list in kinds:
            stack.extend((child, level + 1) for child in children if type(child) in _CONTAINERS)


def parse_json(body: bytes, limits: Limits) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys, bounded size and depth, no lone
    surrogates. Raises RpcError (-32600 for size, -32700 for everything else)."""
    if len(body) > limits.max_body_bytes:
        raise RpcError(
            ErrorCode.INVALID_REQUEST,
            f"Invalid Request: body of {len(body)} bytes exceeds the limit of "
            f"{limits.max_body_bytes} bytes",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _parse_error("body is not UTF-8") from None
    try:
        document = _DECODER.decode(text)
    except RecursionError:
        raise _parse_error(
            f"JSON nested deeper than the limit of {limits.max_json_depth} levels"
        ) from None
    except ValueError as error:  # JSONDecodeError, int digit limit, the hooks
        raise _parse_error(_first_line(error)) from None
    # A lone surrogate can only come from a `\u` escape: valid UTF-8 cannot encode one.
    check_structure(
        document, limits.max_json_depth, strings=_SURROGATE_ESCAPE.search(body) is not None
    )
    return document


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def _valid_id(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, int) and not isinstance(value, bool))
    )


def parse_entry(entry: Any) -> Request | EnvelopeError:
    """One request object -> Request, or the EnvelopeError to answer it with."""

    def invalid(why: str, request_id: RequestId = None) -> EnvelopeError:
        return EnvelopeError(
            RpcError(ErrorCode.INVALID_REQUEST, f"Invalid Request: {why}"), request_id
        )

    if not isinstance(entry, dict):
        return invalid(f"expected an object, got {json_type(entry)}")
    raw_id = entry.get("id")
    if not _valid_id(raw_id):
        return invalid(f"id must be a string, an integer or null, not {json_type(raw_id)}")
    request_id: RequestId = raw_id
    if entry.get("jsonrpc") != JSONRPC_VERSION:
        return invalid('jsonrpc must be "2.0"', request_id)
    method = entry.get("method")
    if not isinstance(method, str) or not method:
        return invalid("method must be a non-empty string", request_id)
    extra = sorted(set(entry) - _ALLOWED_MEMBERS)
    if extra:
        return invalid(f"unexpected member {extra[0][:50]!r}", request_id)
    is_notification = "id" not in entry
    params = entry.get("params", {})
    if isinstance(params, list):
        return Request(method, {}, request_id, is_notification, positional=True)
    if not isinstance(params, dict):
        return invalid("params must be an object (by-name)", request_id)
    return Request(method, params, request_id, is_notification)


def _one_error(error: RpcError) -> ParsedBody:
    return ParsedBody((EnvelopeError(error),), is_batch=False)


def parse_body(body: bytes, limits: Limits) -> ParsedBody:
    """Bytes -> single or batch entries. Never raises: errors become EnvelopeError entries."""
    try:
        document = parse_json(body, limits)
    except RpcError as error:
        return _one_error(error)
    if isinstance(document, list):
        if not document:
            return _one_error(RpcError(ErrorCode.INVALID_REQUEST, "Invalid Request: empty batch"))
        if len(document) > limits.max_batch:
            return _one_error(
                RpcError(
                    ErrorCode.INVALID_REQUEST,
                    f"Invalid Request: batch of {len(document)} requests exceeds the limit of "
                    f"{limits.max_batch}",
                )
            )
        return ParsedBody(tuple(parse_entry(entry) for entry in document), is_batch=True)
    return ParsedBody((parse_entry(document),), is_batch=False)


def json_type(value: Any) -> str:
    """`a string`, `a number`...: how error messages name what the client sent."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
