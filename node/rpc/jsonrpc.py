"""JSON-RPC 2.0 envelopes: parsing, limits, error objects, dispatch. No business logic.

Imports trio, the stdlib, node.core.errors (reject codes), node.lane and node.log.

- `parse_body(bytes, limits)` turns a request body into a `ParsedBody`: single or batch, each
  entry a `Request` or an `EnvelopeError` already bound to the id to answer with.
- `Dispatcher(table, limits).handle_body(bytes)` runs every request (a batch in order, one at a
  time, so a client's tx_submit batch reaches the mempool in the order sent) under a
  per-request deadline and returns the response bytes, or None when nothing is to be sent
  (notifications only). A whole batch is bounded by max_batch x deadline. A batch's entries
  run in turns of a `node.lane.WorkLane` when one is given (a producing node's public listener
  shares the producer's), so single requests between them are answered first; without one,
  a checkpoint between entries.
- Handlers are `async def handler(params: dict[str, Any]) -> Any` in a `MethodTable`; they
  validate their own params with `int_param`, `str_param`, ... (which raise -32602) and raise
  `RpcError` for anything else the client should see. `TxRejected` from node.core becomes
  `1000 + Reject` with the reject name in `data`. Any other exception is our bug: it is logged
  once with its traceback and the client gets -32603 with no detail.
- Integers travel as decimal strings (`"123"`): `parse_int` and `render_int`.

Error codes live in one table, `ErrorCode`: the five standard codes, then application codes.
Application codes are stable once published; append, never renumber.
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
import operator
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio

from node.core.errors import Reject, TxRejected
from node.lane import WorkLane
from node.log import log_event

logger = logging.getLogger("perpchain.rpc")

JSONRPC_VERSION: Final = "2.0"
I64_MIN: Final = -(2**63)
I64_MAX: Final = 2**63 - 1


class ErrorCode(enum.IntEnum):
    """Every error code this node sends. Append only; a published number never changes."""

    # JSON-RPC 2.0 standard codes.
    PARSE_ERROR = -32700  # body is not JSON (or too deep, or not UTF-8, duplicate keys)
    INVALID_REQUEST = -32600  # JSON, but not a valid request object / batch; or too large
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603  # our bug; details are in the node's log, never in the response
    # Application codes. 1001..1999 are `TX_REJECTED_BASE + Reject` (node.core.errors.Reject).
    TX_REJECTED_BASE = 1000
    NODE_HALTED = 2001  # an invariant failed; the node serves reads only (data.reason)
    MAINTENANCE = 2002  # maintenance mode: no txs accepted
    NOT_FOUND = 2003  # block, tx, receipt, account, market... does not exist
    HEIGHT_PRUNED = 2004  # the height asked for is older than the retained history
    DEADLINE_EXCEEDED = 2005  # the request ran longer than the per-request deadline
    SERVER_BUSY = 2006  # connection / request limit reached; retry later
    MEMPOOL_FULL = 2007  # the mempool (or this account's share of it) is full; retry later
    NOT_PRODUCING = 2008  # this node follows another and does not accept txs
    NOT_READY = 2009  # starting up / catching up
    SUBSCRIPTION_LIMIT = 2010  # too many subscriptions on this WebSocket
    UNAUTHORIZED = 2011  # admin listener: missing or wrong bearer token
    WRONG_MODE = 2012  # the command does not apply in the node's mode (data.mode)
    VERIFY_FAILED = 2013  # verification refused the state (data: differences, restore command)
    ROLLBACK_REFUSED = 2014  # a rollback cannot be done as asked


MESSAGES: Final[Mapping[int, str]] = {
    ErrorCode.PARSE_ERROR: "Parse error",
    ErrorCode.INVALID_REQUEST: "Invalid Request",
    ErrorCode.METHOD_NOT_FOUND: "Method not found",
    ErrorCode.INVALID_PARAMS: "Invalid params",
    ErrorCode.INTERNAL_ERROR: "Internal error",
    ErrorCode.NODE_HALTED: "Node halted",
    ErrorCode.MAINTENANCE: "Node in maintenance",
    ErrorCode.NOT_FOUND: "Not found",
    ErrorCode.HEIGHT_PRUNED: "Height pruned",
    ErrorCode.DEADLINE_EXCEEDED: "Deadline exceeded",
    ErrorCode.SERVER_BUSY: "Server busy",
    ErrorCode.MEMPOOL_FULL: "Mempool full",
    ErrorCode.NOT_PRODUCING: "Node does not accept transactions",
    ErrorCode.NOT_READY: "Node not ready",
    ErrorCode.SUBSCRIPTION_LIMIT: "Subscription limit reached",
    ErrorCode.UNAUTHORIZED: "Unauthorized",
    ErrorCode.WRONG_MODE: "Not in this mode",
    ErrorCode.VERIFY_FAILED: "Verification failed",
    ErrorCode.ROLLBACK_REFUSED: "Rollback refused",
}


class RpcError(Exception):
    """An error the client sees: raise it from a handler. `data` must be JSON-serializable."""

    def __init__(self, code: int, message: str | None = None, data: Any = None) -> None:
        self.code = int(code)
        self.message = message if message is not None else MESSAGES.get(self.code, "Error")
        self.data = data
        super().__init__(f"{self.code}: {self.message}")

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(message: str) -> RpcError:
    return RpcError(ErrorCode.INVALID_PARAMS, f"Invalid params: {message}")


def not_found(what: str) -> RpcError:
    """`not_found("block at height 12")` -> 2003 "Not found: block at height 12"."""
    return RpcError(ErrorCode.NOT_FOUND, f"Not found: {what}")


def tx_rejected(rejected: TxRejected) -> RpcError:
    """1000 + Reject code; the name and detail in `data` (STYLE.md section 8)."""
    try:
        name = Reject(rejected.code).name
    except ValueError:
        name = f"REJECT_{rejected.code}"
    data: dict[str, Any] = {"reject": name, "reject_code": rejected.code}
    if rejected.detail:
        data["detail"] = rejected.detail
    return RpcError(
        ErrorCode.TX_REJECTED_BASE + rejected.code, f"Transaction rejected: {name}", data
    )


# --- limits and parsing ----------------------------------------------------------------------


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
# Strings (with escapes) are removed before brackets are counted for the depth check.
_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET: Final = re.compile(rb"[^\[\]{}]+")
_DEPTH_STEP: Final = bytes.maketrans(b"[]{}", b"\x02\x00\x02\x00")


def json_depth(body: bytes) -> int:
    """Deepest array/object nesting in `body`, found without parsing (C-speed scans only).

    Run before json.loads so a body of a million `[` costs a regex pass, not a RecursionError.
    Unterminated strings are counted as if they were structure; such bodies fail to parse
    anyway.
    """
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", body))
    if not brackets:
        return 0
    # Each opener adds 2, closer 0; depth after i+1 brackets = running sum - (i + 1).
    steps = brackets.translate(_DEPTH_STEP)
    depth: int = max(map(operator.sub, itertools.accumulate(steps), itertools.count(1)))
    return depth


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r} in an object")
            seen.add(key)
    return obj


def parse_json(body: bytes, limits: Limits) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys, bounded size and depth."""
    if len(body) > limits.max_body_bytes:
        raise RpcError(
            ErrorCode.INVALID_REQUEST,
            f"Invalid Request: body of {len(body)} bytes exceeds the limit of "
            f"{limits.max_body_bytes} bytes",
        )
    depth = json_depth(body)
    if depth > limits.max_json_depth:
        raise RpcError(
            ErrorCode.PARSE_ERROR,
            f"Parse error: JSON nested {depth} levels deep, the limit is {limits.max_json_depth}",
        )
    try:
        text = body.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_object)
    except UnicodeDecodeError:
        raise RpcError(ErrorCode.PARSE_ERROR, "Parse error: body is not UTF-8") from None
    except (ValueError, RecursionError) as error:  # JSONDecodeError, int digit limit, hooks
        raise RpcError(ErrorCode.PARSE_ERROR, f"Parse error: {_first_line(error)}") from None


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
        return invalid(f"expected an object, got {_json_type(entry)}")
    raw_id = entry.get("id")
    request_id = raw_id if _valid_id(raw_id) else None
    if not _valid_id(raw_id):
        return invalid("id must be a string, an integer or null")
    if entry.get("jsonrpc") != JSONRPC_VERSION:
        return invalid('jsonrpc must be "2.0"', request_id)
    method = entry.get("method")
    if not isinstance(method, str) or not method:
        return invalid("method must be a non-empty string", request_id)
    extra = sorted(set(entry) - _ALLOWED_MEMBERS)
    if extra:
        return invalid(f"unexpected member {extra[0]!r}", request_id)
    is_notification = "id" not in entry
    params = entry.get("params", {})
    if isinstance(params, list):
        return Request(method, {}, request_id, is_notification, positional=True)
    if not isinstance(params, dict):
        return invalid("params must be an object (by-name)", request_id)
    return Request(method, params, request_id, is_notification)


def parse_body(body: bytes, limits: Limits) -> ParsedBody:
    """Bytes -> single or batch entries. Never raises: errors become EnvelopeError entries."""
    try:
        document = parse_json(body, limits)
    except RpcError as error:
        return ParsedBody((EnvelopeError(error),), is_batch=False)
    if isinstance(document, list):
        if not document:
            return ParsedBody(
                (
                    EnvelopeError(
                        RpcError(ErrorCode.INVALID_REQUEST, "Invalid Request: empty batch")
                    ),
                ),
                is_batch=False,
            )
        if len(document) > limits.max_batch:
            too_many = RpcError(
                ErrorCode.INVALID_REQUEST,
                f"Invalid Request: batch of {len(document)} requests exceeds the limit of "
                f"{limits.max_batch}",
            )
            return ParsedBody((EnvelopeError(too_many),), is_batch=False)
        return ParsedBody(tuple(parse_entry(entry) for entry in document), is_batch=True)
    return ParsedBody((parse_entry(document),), is_batch=False)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --- integers as decimal strings and typed params --------------------------------------------

_DECIMAL: Final = re.compile(r"-?(?:0|[1-9][0-9]{0,39})")
REQUIRED: Final[Any] = object()  # sentinel: a param without a default must be present


def parse_int(text: Any, *, name: str, min_value: int = 0, max_value: int = I64_MAX) -> int:
    """`"123"` -> 123: canonical decimal string (no sign but `-`, no leading zeros, no spaces,
    no `_`), within [min_value, max_value]. Raises -32602 naming `name` and the rule."""
    if not isinstance(text, str):
        raise invalid_params(
            f'{name} must be a decimal string such as "123", not {_json_type(text)}'
        )
    if not _DECIMAL.fullmatch(text) or text == "-0":
        raise invalid_params(f"{name}={text[:50]!r} is not a canonical decimal integer string")
    value = int(text)
    if not min_value <= value <= max_value:
        raise invalid_params(f"{name}={text} must be between {min_value} and {max_value}")
    return value


def render_int(value: int) -> str:
    """123 -> `"123"`: how integers (amounts in atoms, heights) travel in JSON."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"render_int expects an int, got {type(value).__name__}")
    return str(value)


def check_params(params: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Reject names the method does not take (a typo must not silently mean 'absent')."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise invalid_params(f"unknown param {unknown[0]!r}; expected {sorted(set(allowed))}")


def _take(params: Mapping[str, Any], name: str, default: Any) -> tuple[bool, Any]:
    if name in params and params[name] is not None:
        return True, params[name]
    if default is REQUIRED:
        raise invalid_params(f"missing required param {name!r}")
    return False, default


def int_param(
    params: Mapping[str, Any],
    name: str,
    *,
    default: Any = REQUIRED,
    min_value: int = 0,
    max_value: int = I64_MAX,
) -> Any:
    """A decimal-string integer param; `default` (any value, e.g. None) when absent or null."""
    present, value = _take(params, name, default)
    if not present:
        return value
    return parse_int(value, name=name, min_value=min_value, max_value=max_value)


def str_param(
    params: Mapping[str, Any],
    name: str,
    *,
    default: Any = REQUIRED,
    max_len: int = 256,
    choices: Iterable[str] | None = None,
) -> Any:
    present, value = _take(params, name, default)
    if not present:
        return value
    if not isinstance(value, str):
        raise invalid_params(f"{name} must be a string, not {_json_type(value)}")
    if len(value) > max_len:
        raise invalid_params(f"{name} is {len(value)} characters long, the limit is {max_len}")
    if choices is not None:
        options = list(choices)
        if value not in options:
            raise invalid_params(f"{name}={value[:50]!r} must be one of {options}")
    return value


def bool_param(params: Mapping[str, Any], name: str, *, default: Any = REQUIRED) -> Any:
    present, value = _take(params, name, default)
    if not present:
        return value
    if not isinstance(value, bool):
        raise invalid_params(f"{name} must be true or false, not {_json_type(value)}")
    return value


_HEX: Final = re.compile(r"(?:0x)?((?:[0-9a-fA-F]{2})*)")


def hex_param(
    params: Mapping[str, Any],
    name: str,
    *,
    default: Any = REQUIRED,
    length: int | None = None,
    max_bytes: int = 1 << 20,
) -> Any:
    """Hex string (optional `0x`) -> bytes; `length` pins the byte count (32 for a hash)."""
    present, value = _take(params, name, default)
    if not present:
        return value
    if not isinstance(value, str):
        raise invalid_params(f"{name} must be a hex string, not {_json_type(value)}")
    if len(value) > 2 * max_bytes + 2:
        raise invalid_params(f"{name} is longer than {max_bytes} bytes")
    match = _HEX.fullmatch(value)
    if match is None:
        raise invalid_params(f"{name} must be hex digits in pairs (optionally 0x-prefixed)")
    data = bytes.fromhex(match.group(1))
    if length is not None and len(data) != length:
        raise invalid_params(f"{name} must be {length} bytes, got {len(data)}")
    return data


# --- method table and dispatch ---------------------------------------------------------------

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
# Called once per body with the params of every request of one method in it, before any of
# them runs: work a handler would do per request, done for the lot (tx_submit's signatures).
# An optimisation only: the handlers still do their whole job, whatever a prefetch did.
Prefetch = Callable[[list[dict[str, Any]]], Awaitable[None]]
# observe(method, outcome, seconds); method is "-" when it is not in the table (bounded labels).
Observer = Callable[[str, str, float], None]
OUTCOMES: Final = ("ok", "error", "invalid", "timeout", "internal")


class MethodTable:
    """Method names -> async handlers. `merged` layers per-connection methods (subscribe)."""

    def __init__(
        self,
        handlers: Mapping[str, Handler] | None = None,
        prefetches: Mapping[str, Prefetch] | None = None,
    ) -> None:
        self._handlers: dict[str, Handler] = {}
        self.prefetches: dict[str, Prefetch] = dict(prefetches or {})
        for name, handler in (handlers or {}).items():
            self.add(name, handler)

    def add(self, name: str, handler: Handler) -> None:
        if not name or name.startswith("rpc."):
            raise ValueError(f"method name {name!r} is empty or reserved (rpc.*)")
        if name in self._handlers:
            raise ValueError(f"method {name!r} is already registered")
        self._handlers[name] = handler

    def method(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator form of `add`."""

        def register(handler: Handler) -> Handler:
            self.add(name, handler)
            return handler

        return register

    def prefetch(self, name: str) -> Callable[[Prefetch], Prefetch]:
        """Decorator: register the batch prefetch of method `name` (see `Prefetch`)."""

        def register(prefetch: Prefetch) -> Prefetch:
            self.prefetches[name] = prefetch
            return prefetch

        return register

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def merged(self, extra: Mapping[str, Handler]) -> MethodTable:
        table = MethodTable(self._handlers, self.prefetches)
        for name, handler in extra.items():
            table.add(name, handler)
        return table


def _single_rpc_error(group: BaseExceptionGroup[Any]) -> RpcError | TxRejected | None:
    """A handler's nursery wraps an RpcError in an ExceptionGroup: unwrap that case only."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        current = stack.pop()
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        else:
            leaves.append(current)
    if len(leaves) == 1 and isinstance(leaves[0], RpcError | TxRejected):
        return leaves[0]
    return None


def _response(request_id: RequestId, *, result: Any = None, error: RpcError | None = None) -> bytes:
    if error is not None:
        body: dict[str, Any] = {
            "jsonrpc": JSONRPC_VERSION,
            "error": error.to_json(),
            "id": request_id,
        }
    else:
        body = {"jsonrpc": JSONRPC_VERSION, "result": result, "id": request_id}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def error_response(error: RpcError, request_id: RequestId = None) -> bytes:
    """A complete error response body (used by the server for 413/503 answers too)."""
    return _response(request_id, error=error)


@asynccontextmanager
async def _entry_at_a_time() -> AsyncIterator[float]:
    """A batch's turn without a lane: a checkpoint, then one entry (the deadline is past). A
    follower's batches go this way: their tx_submit entries await the source, and a lane held
    across that wait would queue every other client's batch behind it."""
    await trio.lowlevel.checkpoint()
    yield 0.0


class Dispatcher:
    """Runs parsed requests against a MethodTable under the limits; returns response bytes."""

    def __init__(
        self,
        table: MethodTable,
        limits: Limits,
        *,
        observe: Observer | None = None,
        log: logging.Logger = logger,
        lane: WorkLane | None = None,
    ) -> None:
        self.table = table
        self.limits = limits
        self.observe = observe
        self.log = log
        self.lane = lane

    async def handle_body(self, body: bytes) -> bytes | None:
        """The response body for a request body, or None when every entry was a notification."""
        parsed = parse_body(body, self.limits)
        await self._prefetch(parsed.entries)
        parts: list[bytes] = []
        entries, position = parsed.entries, 0
        if not parsed.is_batch:
            part = await self.handle_entry(entries[0])
            if part is not None:
                parts.append(part)
            position = len(entries)
        # A batch is heavy work (100 tx_submit are ~10 ms of admission): its entries run in
        # turns of the work lane, between which single requests (reads) go first.
        while position < len(entries):
            async with self._turn() as deadline:
                while position < len(entries):
                    part = await self.handle_entry(entries[position])
                    position += 1
                    if part is not None:
                        parts.append(part)
                    if time.perf_counter() >= deadline:
                        break
        if not parts:
            return None
        if parsed.is_batch:
            return b"[" + b",".join(parts) + b"]"
        return parts[0]

    def _turn(self) -> AbstractAsyncContextManager[float]:
        if self.lane is not None:
            return self.lane.turn()
        return _entry_at_a_time()

    async def _prefetch(self, entries: Iterable[Request | EnvelopeError]) -> None:
        wanted: dict[str, list[dict[str, Any]]] = {}
        for entry in entries:
            if isinstance(entry, Request) and not entry.positional:
                if entry.method in self.table.prefetches:
                    wanted.setdefault(entry.method, []).append(entry.params)
        for method, params in wanted.items():
            try:
                with trio.move_on_after(self.limits.deadline_ms / 1000):
                    await self.table.prefetches[method](params)
            except Exception as exc:  # noqa: BLE001 - an optimisation failing costs nothing
                log_event(
                    self.log,
                    "rpc.prefetch_failed",
                    level=logging.WARNING,
                    method=method,
                    error=type(exc).__name__,
                )

    async def handle_entry(self, entry: Request | EnvelopeError) -> bytes | None:
        if isinstance(entry, EnvelopeError):
            self._observe("-", "invalid", 0.0)
            return _response(entry.id, error=entry.error)
        return await self.call(entry)

    async def call(self, request: Request) -> bytes | None:
        """Run one request; the serialized response, or None for a notification."""
        started = time.perf_counter()
        handler = self.table.get(request.method)
        label = request.method if handler is not None else "-"
        outcome, result, error = "ok", None, None
        if handler is None:
            outcome = "invalid"
            error = RpcError(
                ErrorCode.METHOD_NOT_FOUND, f"Method not found: {request.method[:100]!r}"
            )
        elif request.positional:
            outcome = "invalid"
            error = invalid_params("params must be an object (by-name), not an array")
        else:
            outcome, result, error = await self._run(handler, request)
        response: bytes | None = None
        if not request.is_notification:
            try:
                response = _response(request.id, result=result, error=error)
            except (TypeError, ValueError) as exc:  # a handler returned something not JSON
                outcome = "internal"
                self._log_internal(request, exc)
                response = _response(request.id, error=RpcError(ErrorCode.INTERNAL_ERROR))
        self._observe(label, outcome, time.perf_counter() - started)
        return response

    async def _run(self, handler: Handler, request: Request) -> tuple[str, Any, RpcError | None]:
        deadline_s = self.limits.deadline_ms / 1000
        try:
            with trio.move_on_after(deadline_s) as scope:
                result = await handler(request.params)
        except RpcError as error:
            return "error", None, error
        except TxRejected as rejected:
            return "error", None, tx_rejected(rejected)
        except Exception as exc:  # noqa: BLE001 - the boundary where our bugs stop
            if isinstance(exc, BaseExceptionGroup):
                single = _single_rpc_error(exc)
                if isinstance(single, RpcError):
                    return "error", None, single
                if isinstance(single, TxRejected):
                    return "error", None, tx_rejected(single)
            self._log_internal(request, exc)
            return "internal", None, RpcError(ErrorCode.INTERNAL_ERROR)
        if scope.cancelled_caught:
            return (
                "timeout",
                None,
                RpcError(
                    ErrorCode.DEADLINE_EXCEEDED,
                    f"Deadline exceeded: {request.method} ran longer than "
                    f"{self.limits.deadline_ms} ms",
                ),
            )
        return "ok", result, None

    def _log_internal(self, request: Request, exc: BaseException) -> None:
        log_event(
            self.log,
            "rpc.internal_error",
            level=logging.ERROR,
            exc_info=(type(exc), exc, exc.__traceback__),
            method=request.method,
            id=request.id,
            error=type(exc).__name__,
        )

    def _observe(self, method: str, outcome: str, seconds: float) -> None:
        if self.observe is not None:
            self.observe(method, outcome, seconds)
