"""The ASGI app of one JSON-RPC listener (public, or admin with a bearer token): HTTP routing,
authorization, request limits and body reading; WebSockets are handed to node.rpc.websocket.
Imports trio, the stdlib, node.chain (Broadcaster, Metrics), node.lane and node.rpc.

Limits: a body larger than `max_body_bytes` is refused with 413 from its Content-Length before
any of it is read, or as soon as a chunked body passes the limit; `max_connections` bounds open
WebSockets plus HTTP requests in flight; every request runs under `deadline_ms`. A client
address over its request rate (node.rpc.clients) gets 429. Any GET other than `/health` goes to
`pages` when given (node.explorer, read-only), under the same limits.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator
from functools import partial

import trio

from node.chain.broadcast import Broadcaster
from node.chain.metrics import Metrics
from node.lane import WorkLane
from node.rpc.asgi import (
    JSON_HEADERS,
    Pages,
    Receive,
    Scope,
    Send,
    header,
    json_bytes,
    lifespan,
    respond,
    respond_health,
    respond_use_get,
)
from node.rpc.clients import client_of
from node.rpc.health import HealthCheck, always_healthy
from node.rpc.jsonrpc import Dispatcher, ErrorCode, Limits, MethodTable, RpcError, error_response
from node.rpc.websocket import TopicResolver, default_topic_resolver, serve_websocket


class RpcApp:
    """ASGI app of one JSON-RPC listener (public, or admin when `bearer_token` is set)."""

    def __init__(
        self,
        table: MethodTable,
        *,
        limits: Limits,
        listener: str = "public",
        health: HealthCheck | None = always_healthy,
        broadcaster: Broadcaster | None = None,
        topic_resolver: TopicResolver = default_topic_resolver,
        max_connections: int = 1_000,
        max_subscriptions: int = 32,
        bearer_token: bytes | None = None,
        metrics: Metrics | None = None,
        websocket: bool = True,
        lane: WorkLane | None = None,
        ws_send_queue_bytes: int = 1 << 20,
        pages: Pages | None = None,
    ) -> None:
        self.table = table
        self.pages = pages
        self.limits = limits
        self.listener = listener
        self.health = health
        self.broadcaster = broadcaster
        self.topic_resolver = topic_resolver
        self.max_connections = max_connections
        self.max_subscriptions = max_subscriptions
        self.bearer_token = bearer_token
        self.metrics = metrics
        self.websocket = websocket
        self.ws_send_queue_bytes = ws_send_queue_bytes
        if broadcaster is not None and ("subscribe" in table or "unsubscribe" in table):
            raise ValueError("subscribe/unsubscribe are provided per WebSocket by the server")
        self.active = 0  # WebSockets open + HTTP requests in flight
        observe = partial(metrics.observe_rpc, listener) if metrics is not None else None
        self.observe = observe
        # The batches of every connection (HTTP and WebSocket) take turns in this lane, which a
        # producing node shares with its block steps (node.lane); None: no turns to take.
        self.lane = lane
        self.dispatcher = Dispatcher(table, limits, observe=observe, lane=self.lane)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await serve_websocket(self, scope, receive, send)
        elif kind == "lifespan":
            await lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/health" and self.health is not None:
            if method not in ("GET", "HEAD"):
                await respond_use_get(send)
                return
            await respond_health(send, self.health, head=method == "HEAD")
            return
        if self.pages is not None and method in ("GET", "HEAD"):
            await self._page(scope, receive, send)
            return
        if path != "/":
            await respond(send, 404, json_bytes({"error": f"no route {path[:100]}"}))
            return
        if method != "POST":
            await respond(
                send,
                405,
                error_response(
                    RpcError(
                        ErrorCode.INVALID_REQUEST, "Invalid Request: JSON-RPC over HTTP uses POST"
                    )
                ),
                JSON_HEADERS + [(b"allow", b"POST")],
            )
            return
        if self.bearer_token is not None and not self._authorized(scope):
            await respond(
                send,
                401,
                error_response(RpcError(ErrorCode.UNAUTHORIZED)),
                JSON_HEADERS + [(b"www-authenticate", b'Bearer realm="perpchain"')],
            )
            return
        if await self._rate_limited(scope, send):
            return
        content_type = (header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            await respond(
                send,
                415,
                error_response(
                    RpcError(
                        ErrorCode.INVALID_REQUEST,
                        "Invalid Request: Content-Type must be application/json",
                    )
                ),
            )
            return
        async with self._slot(send) as admitted:
            if not admitted:
                return
            request_body = await self._read_body(scope, receive, send)
            if request_body is None:
                return
            response = await self.dispatcher.handle_body(request_body)
        if response is None:  # notifications only: nothing to say
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            await respond(send, 200, response)

    async def _rate_limited(self, scope: Scope, send: Send) -> bool:
        """True after answering 429: this client address is over its request rate."""
        client = client_of(scope)
        if client is None or client.request_wait_s() <= 0:
            return False
        error = RpcError(
            ErrorCode.SERVER_BUSY,
            f"Server busy: more than {client.limits.requests_per_s} requests/s from this address",
        )
        await respond(send, 429, error_response(error), JSON_HEADERS + [(b"retry-after", b"1")])
        return True

    async def _page(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A GET for `pages`: the same request rate and connection limit as a JSON-RPC call."""
        if self.pages is None or await self._rate_limited(scope, send):
            return
        async with self._slot(send) as admitted:
            if admitted:
                await self.pages(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _slot(self, send: Send) -> AsyncIterator[bool]:
        """One of `max_connections` request slots, held for the block (True), or a 503
        answered when all are taken (False)."""
        if self.active >= self.max_connections:
            await self._busy(send)
            yield False
            return
        self.active += 1
        try:
            yield True
        finally:
            self.active -= 1

    def _authorized(self, scope: Scope) -> bool:
        if self.bearer_token is None:
            return False  # a listener without a token authorizes no one
        value = header(scope, b"authorization") or b""
        scheme, _, token = value.partition(b" ")
        # compare_digest on equal-type bytes: the time taken does not depend on where they
        # differ; a wrong scheme still runs one comparison.
        ok = hmac.compare_digest(token.strip(), self.bearer_token)
        return ok and scheme.lower() == b"bearer"

    async def _busy(self, send: Send) -> None:
        await respond(
            send,
            503,
            error_response(
                RpcError(
                    ErrorCode.SERVER_BUSY, f"Server busy: {self.max_connections} connections open"
                )
            ),
            JSON_HEADERS + [(b"retry-after", b"1")],
        )

    async def _too_large(self, send: Send, size: int | None) -> None:
        what = f"{size} bytes" if size is not None else "the body"
        error = RpcError(
            ErrorCode.INVALID_REQUEST,
            f"Invalid Request: {what} exceeds the limit of {self.limits.max_body_bytes} bytes",
        )
        # Connection: close, since the rest of the body is left unread.
        await respond(send, 413, error_response(error), JSON_HEADERS + [(b"connection", b"close")])

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None after answering 413/400/408 (or on disconnect)."""
        limit = self.limits.max_body_bytes
        declared = header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit() or len(declared) > 18:
                await respond(
                    send,
                    400,
                    error_response(
                        RpcError(ErrorCode.INVALID_REQUEST, "Invalid Request: bad Content-Length")
                    ),
                )
                return None
            if int(declared) > limit:
                await self._too_large(send, int(declared))
                return None
        chunks: list[bytes] = []
        total = 0
        with trio.move_on_after(self.limits.deadline_ms / 1000) as scope_timer:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                total += len(chunk)
                if total > limit:
                    await self._too_large(send, None)
                    return None
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if scope_timer.cancelled_caught:
            await respond(
                send,
                408,
                error_response(
                    RpcError(
                        ErrorCode.DEADLINE_EXCEEDED, "Deadline exceeded: request body too slow"
                    )
                ),
                JSON_HEADERS + [(b"connection", b"close")],
            )
            return None
        return b"".join(chunks)
