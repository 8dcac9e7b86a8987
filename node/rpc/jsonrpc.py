"""JSON-RPC 2.0 dispatch: method tables, per-request deadlines, response bytes. No business logic.

Imports trio, the stdlib, node.core.errors (reject codes), node.lane, node.log and the other
node.rpc envelope modules, whose public names it re-exports (import them from here):

- node.rpc.errors: `ErrorCode` (the one table of codes), `RpcError`, `invalid_params`, ...
- node.rpc.parsing: `parse_body(bytes, limits)` turns a request body into a `ParsedBody`:
  single or batch, each entry a `Request` or an `EnvelopeError` already bound to the id to
  answer with (strict JSON in one linear pass; limits in `Limits`).
- node.rpc.params: typed params (`int_param`, `str_param`, `hex_param`, ...: -32602 naming
  the param) and integers as decimal strings (`parse_int`, `render_int`).

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
  once with its traceback and the client gets -32603 with no detail. `handle_body` never
  raises: whatever happens, the client gets a JSON-RPC response (never an HTTP 500).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import trio

from node.core.errors import TxRejected
from node.lane import WorkLane
from node.log import log_event
from node.rpc.errors import (
    MESSAGES,
    ErrorCode,
    RpcError,
    invalid_params,
    not_found,
    tx_rejected,
)
from node.rpc.params import (
    I64_MAX,
    I64_MIN,
    JSON_SAFE_INT,
    REQUIRED,
    bool_param,
    check_params,
    hex_param,
    int_param,
    parse_int,
    render_int,
    str_param,
)
from node.rpc.parsing import (
    JSONRPC_VERSION,
    EnvelopeError,
    Limits,
    ParsedBody,
    Request,
    RequestId,
    check_structure,
    parse_body,
    parse_entry,
    parse_json,
)

__all__ = [
    "I64_MAX",
    "I64_MIN",
    "JSONRPC_VERSION",
    "JSON_SAFE_INT",
    "MESSAGES",
    "OUTCOMES",
    "REQUIRED",
    "Dispatcher",
    "EnvelopeError",
    "ErrorCode",
    "Handler",
    "Limits",
    "MethodTable",
    "Observer",
    "ParsedBody",
    "Prefetch",
    "Request",
    "RequestId",
    "RpcError",
    "bool_param",
    "check_params",
    "check_structure",
    "error_response",
    "hex_param",
    "int_param",
    "invalid_params",
    "not_found",
    "parse_body",
    "parse_entry",
    "parse_int",
    "parse_json",
    "render_int",
    "str_param",
    "tx_rejected",
]

logger = logging.getLogger("perpchain.rpc")


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
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate (parsing refuses them): escape it instead
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


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
        """The response body for a request body, or None when every entry was a notification.
        Never raises (but for cancellation): a bug anywhere is -32603, never an HTTP 500."""
        try:
            return await self._handle_body(body)
        except Exception as exc:  # noqa: BLE001 - the boundary where our bugs stop
            log_event(
                self.log,
                "rpc.internal_error",
                level=logging.ERROR,
                exc_info=(type(exc), exc, exc.__traceback__),
                method="-",
                error=type(exc).__name__,
            )
            self._observe("-", "internal", 0.0)
            return _response(None, error=RpcError(ErrorCode.INTERNAL_ERROR))

    async def _handle_body(self, body: bytes) -> bytes | None:
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
