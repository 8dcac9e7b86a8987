"""HTTP and WebSocket JSON-RPC listeners on hypercorn (trio mode), plus admin and metrics.

Imports trio, hypercorn, prometheus_client, the stdlib, node.rpc.jsonrpc, node.chain
(Broadcaster, Metrics), node.config (ListenAddr, NodeConfig) and node.log.

Why hypercorn with a hand-written ASGI app and no framework: hypercorn is the maintained
HTTP/1.1 + HTTP/2 + WebSocket server that runs natively on trio (h11, h2 and wsproto do the
protocol work); our surface is three routes, so a framework would add a dependency and a request
object layer but no safety. The app below is about the size of the routing a framework would
need to be told anyway.

Listeners (each a coroutine to run in a nursery with `await nursery.start(...)`, which returns
the bound `ListenAddr`, so tests can bind port 0):

- public (default 127.0.0.1:9545): `POST /` JSON-RPC (Content-Type application/json, which also
  makes browsers preflight cross-origin posts); `GET /health`; WebSocket at `/` and `/ws`
  carrying JSON-RPC plus `subscribe {topic}` / `unsubscribe {subscription}`; any other GET goes
  to `pages` when given (node.explorer, read-only), under the same per-address limits.
- admin (127.0.0.1:9546, only when enabled): `POST /` with `Authorization: Bearer <token>`,
  the admin method table only; the public listener never sees those methods.
- metrics (127.0.0.1:9560): `GET /metrics` (Prometheus text or OpenMetrics) and `GET /health`.

Limits: a body larger than `max_body_bytes` is refused with 413 from its Content-Length before
any of it is read, or as soon as a chunked body passes the limit; `max_connections` bounds open
WebSockets plus HTTP requests in flight; every request runs under `deadline_ms`; WebSocket
messages are bounded like bodies. Per client address (`ClientLimits`, docs/SECURITY.md): TCP
connections open at once (checked at accept, before a byte is read; over it, a canned 503)
and a request rate (HTTP 429; a WebSocket's next message is read only when the rate allows).
Request headers must be complete, and an idle keep-alive connection is closed, within
`idle_timeout_ms` (hypercorn's keep-alive timer runs from accept until the headers are in).

Each WebSocket has one send queue bounded in bytes (`ws_send_queue_bytes`): responses and
notifications wait there for the one writer task; subscriptions put their notifications into
it from the publisher (node.chain.broadcast sinks), so there is no buffer or task per
subscription. A client whose queue would pass the bound is dropped: its subscriptions and queue
are released at once and its socket is reset (hypercorn shields its socket writes from
cancellation, so a client that stopped reading would otherwise hold the writer forever; the
reset makes that write fail). `serve_asgi` runs hypercorn's per-connection protocol
(`hypercorn.trio.tcp_server.TCPServer`) under our own accept loop to do the per-address count
and to hand the app that reset (hypercorn 0.18's internals: pinned by tests/rpc tests).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import pathlib
import re
import secrets
import socket
import stat
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app
from prometheus_client.exposition import choose_encoder

from node.chain.broadcast import Broadcaster, Subscription
from node.chain.metrics import Metrics
from node.config import ListenAddr, NodeConfig
from node.lane import WorkLane
from node.log import log_event
from node.rpc.health import HealthCheck, always_healthy, health_response
from node.rpc.health import HealthReport as HealthReport  # re-exported: node.app, tests
from node.rpc.jsonrpc import (
    Dispatcher,
    ErrorCode,
    Limits,
    MethodTable,
    RpcError,
    check_params,
    error_response,
    invalid_params,
    not_found,
    str_param,
)

logger = logging.getLogger("perpchain.rpc")

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Pages = Callable[[Scope, Receive, Send], Awaitable[None]]  # an ASGI app for GET (the explorer)

WS_PATHS: Final = ("/", "/ws")
WS_CLOSE_NORMAL: Final = 1000
WS_CLOSE_POLICY: Final = 1008  # e.g. WebSocket on the admin listener
WS_CLOSE_TRY_AGAIN: Final = 1013  # server busy, or subscriber dropped for falling behind
WS_CLOSE_TOO_SLOW: Final = WS_CLOSE_TRY_AGAIN  # send queue full (the socket is reset)
NOTIFICATION_METHOD: Final = "subscription"
# The key in the ASGI scope's "state" under which serve_asgi hands the app its ClientConnection.
CLIENT_STATE_KEY: Final = "perpchain.client"
CLOSE_TIMEOUT_S: Final = 1.0  # a WebSocket close frame not written by then: socket reset


# --- health (node.rpc.health) ---------------------------------------------------------------


def _health_response(health: HealthCheck) -> tuple[int, bytes]:
    status, body = health_response(health)
    return status, _json_bytes(body)


# --- per-client limits -----------------------------------------------------------------------


class ClientConnection:
    """One accepted TCP connection, as the app sees it (scope["state"][CLIENT_STATE_KEY])."""

    def __init__(self, limits: ClientLimits, host: str, stream: trio.SocketStream) -> None:
        self.limits = limits
        self.host = host
        self.stream = stream
        self.aborted = False
        self.cancel_scope = trio.CancelScope()  # around hypercorn's handling of it

    def end_within(self, seconds: float) -> None:
        """The app is done with this connection (a WebSocket ended): hypercorn gets `seconds`
        for the closing handshake, then its tasks are cancelled. Without this a closed
        WebSocket's connection lingers until hypercorn's ping task next wakes (up to the ping
        interval, 20 s), counted against its address all that time."""
        deadline = trio.current_time() + seconds
        self.cancel_scope.deadline = min(self.cancel_scope.deadline, deadline)

    def request_wait_s(self) -> float:
        """0 if this client address may make a request now (a token is taken), else how long
        until it may."""
        return self.limits.take_token(self.host)

    def abort(self) -> None:
        """Reset the connection (RST, kernel buffers freed): a write blocked on it fails at
        once with ClosedResourceError, which hypercorn treats as the client gone."""
        if self.aborted:
            return
        self.aborted = True
        sock = self.stream.socket
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # trio notifies every task waiting on it (notify_closing)


class ClientLimits:
    """Per client address (the peer IP, loopback included) of one listener: TCP connections
    open at once, checked at accept, and a request rate, a token bucket refilled continuously
    that holds one second's worth (`requests_per_s`, 0 = unlimited)."""

    # Buckets of addresses with no open connection are forgotten once this many exist (a full
    # bucket is the same as no bucket; a partial one is kept, so reconnecting does not refill).
    MAX_IDLE_BUCKETS: Final = 10_000

    def __init__(self, *, connections_per_client: int, requests_per_s: int) -> None:
        self.connections_per_client = connections_per_client
        self.requests_per_s = requests_per_s
        self.open: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, at time s)
        self.refused_connections = 0
        self.limited_requests = 0

    @classmethod
    def unlimited(cls) -> ClientLimits:
        return cls(connections_per_client=1 << 30, requests_per_s=0)

    def admit(self, stream: trio.SocketStream) -> ClientConnection | None:
        """The connection, counted against its address; None if the address is at its limit
        (or the peer is already gone)."""
        try:
            host = str(stream.socket.getpeername()[0])
        except OSError:
            return None
        count = self.open.get(host, 0)
        if count >= self.connections_per_client:
            self.refused_connections += 1
            return None
        self.open[host] = count + 1
        return ClientConnection(self, host, stream)

    def release(self, connection: ClientConnection) -> None:
        count = self.open.get(connection.host, 0) - 1
        if count > 0:
            self.open[connection.host] = count
        else:
            self.open.pop(connection.host, None)
            if len(self._buckets) > self.MAX_IDLE_BUCKETS:
                self._forget_full_buckets()

    def take_token(self, host: str) -> float:
        if self.requests_per_s <= 0:
            return 0.0
        now = trio.current_time()
        capacity = float(self.requests_per_s)
        tokens, then = self._buckets.get(host, (capacity, now))
        tokens = min(capacity, tokens + (now - then) * self.requests_per_s)
        if tokens >= 1:
            self._buckets[host] = (tokens - 1, now)
            return 0.0
        self._buckets[host] = (tokens, now)
        self.limited_requests += 1
        return (1 - tokens) / self.requests_per_s

    def _forget_full_buckets(self) -> None:
        now = trio.current_time()
        for host, (tokens, then) in list(self._buckets.items()):
            if host not in self.open and tokens + (now - then) * self.requests_per_s >= (
                self.requests_per_s
            ):
                del self._buckets[host]


def _client_of(scope: Scope) -> ClientConnection | None:
    state = scope.get("state") or {}
    client = state.get(CLIENT_STATE_KEY)
    return client if isinstance(client, ClientConnection) else None


# --- subscriptions ---------------------------------------------------------------------------

_TOPIC: Final = re.compile(r"[a-z][a-z0-9_]{0,63}(?::[0-9A-Za-z_\-]{1,128})?")
TopicResolver = Callable[[Mapping[str, Any]], str]


def default_topic_resolver(params: Mapping[str, Any]) -> str:
    """`{"topic": "new_heads"}` or `{"topic": "account:<hex>"}` -> the topic string.

    The node passes its own resolver to accept only the topics it publishes and to check
    addresses; this one checks the shape only.
    """
    check_params(params, ("topic",))
    topic = str_param(params, "topic", max_len=200)
    if not _TOPIC.fullmatch(topic):
        raise invalid_params(f"topic {topic[:60]!r} is not a topic name such as 'new_heads'")
    return str(topic)


# --- the ASGI app ----------------------------------------------------------------------------


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


_JSON_HEADERS: Final = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    head: bool = False,
) -> None:
    all_headers = list(_JSON_HEADERS if headers is None else headers)
    all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


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
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    # HTTP ---------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/health" and self.health is not None:
            if method not in ("GET", "HEAD"):
                await _respond(
                    send,
                    405,
                    _json_bytes({"error": "use GET"}),
                    _JSON_HEADERS + [(b"allow", b"GET, HEAD")],
                )
                return
            status, body = _health_response(self.health)
            await _respond(send, status, body, head=method == "HEAD")
            return
        if self.pages is not None and method in ("GET", "HEAD"):
            await self._page(scope, receive, send)
            return
        if path != "/":
            await _respond(send, 404, _json_bytes({"error": f"no route {path[:100]}"}))
            return
        if method != "POST":
            await _respond(
                send,
                405,
                error_response(
                    RpcError(
                        ErrorCode.INVALID_REQUEST, "Invalid Request: JSON-RPC over HTTP uses POST"
                    )
                ),
                _JSON_HEADERS + [(b"allow", b"POST")],
            )
            return
        if self.bearer_token is not None and not self._authorized(scope):
            await _respond(
                send,
                401,
                error_response(RpcError(ErrorCode.UNAUTHORIZED)),
                _JSON_HEADERS + [(b"www-authenticate", b'Bearer realm="perpchain"')],
            )
            return
        if await self._rate_limited(scope, send):
            return
        content_type = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            await _respond(
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
        if self.active >= self.max_connections:
            await self._busy(send)
            return
        self.active += 1
        try:
            request_body = await self._read_body(scope, receive, send)
            if request_body is None:
                return
            response = await self.dispatcher.handle_body(request_body)
        finally:
            self.active -= 1
        if response is None:  # notifications only: nothing to say
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            await _respond(send, 200, response)

    async def _rate_limited(self, scope: Scope, send: Send) -> bool:
        """True after answering 429: this client address is over its request rate."""
        client = _client_of(scope)
        if client is None or client.request_wait_s() <= 0:
            return False
        error = RpcError(
            ErrorCode.SERVER_BUSY,
            f"Server busy: more than {client.limits.requests_per_s} requests/s from this address",
        )
        await _respond(send, 429, error_response(error), _JSON_HEADERS + [(b"retry-after", b"1")])
        return True

    async def _page(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A GET for `pages`: the same request rate and connection limit as a JSON-RPC call."""
        if self.pages is None or await self._rate_limited(scope, send):
            return
        if self.active >= self.max_connections:
            await self._busy(send)
            return
        self.active += 1
        try:
            await self.pages(scope, receive, send)
        finally:
            self.active -= 1

    def _authorized(self, scope: Scope) -> bool:
        if self.bearer_token is None:
            return False  # a listener without a token authorizes no one
        value = _header(scope, b"authorization") or b""
        scheme, _, token = value.partition(b" ")
        # compare_digest on equal-type bytes: the time taken does not depend on where they
        # differ; a wrong scheme still runs one comparison.
        ok = hmac.compare_digest(token.strip(), self.bearer_token)
        return ok and scheme.lower() == b"bearer"

    async def _busy(self, send: Send) -> None:
        await _respond(
            send,
            503,
            error_response(
                RpcError(
                    ErrorCode.SERVER_BUSY, f"Server busy: {self.max_connections} connections open"
                )
            ),
            _JSON_HEADERS + [(b"retry-after", b"1")],
        )

    async def _too_large(self, send: Send, size: int | None) -> None:
        what = f"{size} bytes" if size is not None else "the body"
        error = RpcError(
            ErrorCode.INVALID_REQUEST,
            f"Invalid Request: {what} exceeds the limit of {self.limits.max_body_bytes} bytes",
        )
        # Connection: close, since the rest of the body is left unread.
        await _respond(
            send, 413, error_response(error), _JSON_HEADERS + [(b"connection", b"close")]
        )

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None after answering 413/400/408 (or on disconnect)."""
        limit = self.limits.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit() or len(declared) > 18:
                await _respond(
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
            await _respond(
                send,
                408,
                error_response(
                    RpcError(
                        ErrorCode.DEADLINE_EXCEEDED, "Deadline exceeded: request body too slow"
                    )
                ),
                _JSON_HEADERS + [(b"connection", b"close")],
            )
            return None
        return b"".join(chunks)

    # WebSocket ----------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._websocket_session(scope, receive, send)
        finally:
            client = _client_of(scope)
            if client is not None:
                client.end_within(CLOSE_TIMEOUT_S)

    async def _websocket_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if not self.websocket or scope["path"] not in WS_PATHS:
            await send({"type": "websocket.close", "code": WS_CLOSE_POLICY})  # HTTP 403
            return
        if self.active >= self.max_connections:
            await send({"type": "websocket.accept"})
            await send(
                {"type": "websocket.close", "code": WS_CLOSE_TRY_AGAIN, "reason": "server busy"}
            )
            return
        self.active += 1
        if self.metrics is not None:
            self.metrics.ws_connections.inc()
        try:
            await send({"type": "websocket.accept"})
            await _WsSession(self, _client_of(scope), receive, send).run()
        finally:
            self.active -= 1
            if self.metrics is not None:
                self.metrics.ws_connections.dec()


class _WsSession:
    """One WebSocket: requests run in order; responses and notifications go through one send
    queue, bounded in bytes, that one writer task drains.

    The queue's bound counts what waits, not the message being written: a single message larger
    than the bound (a 4 MiB `chain_getRawBlocks` answer) is taken when nothing else waits.
    Nothing here ever waits for queue space (the reader answers, the publisher notifies, both
    without blocking), so no chain of waits can pass through hypercorn's own queues.

    A queued notification is the pair (this subscription's message head, the publish's JSON
    text): the text is one string shared by every subscriber of that publish, so the bound
    counts the bytes a client is owed while what it holds is much less; the message is joined
    only when written. Sizes are counted in characters, the UTF-8 size of the ASCII JSON the
    node publishes.
    """

    def __init__(
        self, app: RpcApp, client: ClientConnection | None, receive: Receive, send: Send
    ) -> None:
        self.app = app
        self.client = client
        self.receive = receive
        self.send = send
        self.subscriptions: dict[str, Subscription] = {}
        # Notifications of subscriptions whose subscribe response is not queued yet: the
        # response must come first. Counted in queued_bytes.
        self.held: dict[str, list[tuple[str, str]]] = {}
        self.queue: deque[tuple[str, str]] = deque()  # (notification head or "", text)
        self.queued_bytes = 0
        self.queue_ready = trio.Event()
        self.close_code = WS_CLOSE_NORMAL
        self.close_reason = ""
        self.disconnected = False
        self.dropped = False
        self.writing = False  # the writer is in a socket write (it may be stuck there)
        self.cancel_scope = trio.CancelScope()
        extra = {"subscribe": self.subscribe, "unsubscribe": self.unsubscribe}
        if app.broadcaster is None:
            extra = {}
        self.dispatcher = Dispatcher(
            app.table.merged(extra), app.limits, observe=app.observe, lane=app.lane
        )

    async def run(self) -> None:
        try:
            with self.cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.writer)
                    await self.reader()
                    nursery.cancel_scope.cancel()
        finally:
            self._release()
        if self.disconnected or (self.client is not None and self.client.aborted):
            return
        close = {"type": "websocket.close", "code": self.close_code, "reason": self.close_reason}
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                # hypercorn's socket writes ignore cancellation: a close frame that cannot be
                # written within a second ends with the socket reset instead.
                nursery.start_soon(self._abort_after, CLOSE_TIMEOUT_S)
                await self.send(close)
                nursery.cancel_scope.cancel()

    async def _abort_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        if self.client is not None:
            self.client.abort()

    def _release(self) -> None:
        """Everything this connection holds outside its own tasks, given back."""
        for subscription in self.subscriptions.values():
            subscription.close()
        self.subscriptions.clear()
        self.held.clear()
        self.queue.clear()
        self.queued_bytes = 0

    async def reader(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "websocket.disconnect":
                self.disconnected = True
                return
            if message["type"] != "websocket.receive":
                continue
            if self.client is not None:
                # Over the address's request rate: read this client's next message only when
                # the rate allows (TCP pushes back on it); nothing is refused or dropped.
                while (wait_s := self.client.request_wait_s()) > 0:
                    await trio.sleep(wait_s)
            text = message.get("text")
            data = text.encode() if text is not None else (message.get("bytes") or b"")
            response = await self.dispatcher.handle_body(data)
            if response is not None and not self.enqueue(("", response.decode())):
                return
            # Release held notifications only now, so a subscription's first notification can
            # never overtake the response that tells the client its id.
            for sub_id in list(self.held):
                for item in self.held.pop(sub_id):
                    self.queued_bytes -= _size(item)
                    if not self.enqueue(item):
                        return

    def enqueue(self, item: tuple[str, str]) -> bool:
        """Queue a message for the writer; False (and the client dropped) past the bound."""
        if self.dropped:
            return False
        size = _size(item)
        if self.queued_bytes and self.queued_bytes + size > self.app.ws_send_queue_bytes:
            self.drop(size)
            return False
        self.queue.append(item)
        self.queued_bytes += size
        self.queue_ready.set()
        return True

    async def writer(self) -> None:
        while True:
            while not self.queue:
                self.queue_ready = trio.Event()
                await self.queue_ready.wait()
            head, text = item = self.queue.popleft()
            self.queued_bytes -= _size(item)
            self.writing = True
            message = head + text + _NOTIFICATION_TAIL if head else text
            await self.send({"type": "websocket.send", "text": message})
            self.writing = False

    def notifier(self, sub_id: str, topic: str) -> Callable[[str], bool]:
        head = (
            '{"jsonrpc":"2.0","method":"'
            + NOTIFICATION_METHOD
            + '","params":{"subscription":'
            + json.dumps(sub_id)
            + ',"topic":'
            + json.dumps(topic)
            + ',"result":'
        )

        def notify(payload: str) -> bool:
            """Broadcaster sink: runs in the publisher's task and never blocks."""
            if sub_id not in self.subscriptions:
                return True  # unsubscribed meanwhile
            item = (head, payload)
            held = self.held.get(sub_id)
            if held is None:
                return self.enqueue(item)
            size = _size(item)
            if self.queued_bytes + size > self.app.ws_send_queue_bytes:
                self.drop(size)
                return False
            held.append(item)
            self.queued_bytes += size
            return True

        return notify

    def drop(self, size: int) -> None:
        """The client fell behind by a full send queue: release everything now and close with
        WS_CLOSE_TOO_SLOW; if a write to it is already stuck, reset the socket at once (a close
        frame could not get past the data it is not reading)."""
        if self.dropped:
            return
        self.dropped = True
        log_event(
            logger,
            "rpc.ws_client_dropped",
            level=logging.WARNING,
            listener=self.app.listener,
            client=self.client.host if self.client is not None else "-",
            queued_bytes=self.queued_bytes,
            next_bytes=size,
            limit=self.app.ws_send_queue_bytes,
            subscriptions=len(self.subscriptions),
        )
        if self.app.metrics is not None:
            self.app.metrics.subscribers_dropped.inc(max(1, len(self.subscriptions)))
        self.close_code = WS_CLOSE_TOO_SLOW
        self.close_reason = "send queue full; reconnect and resubscribe"
        self._release()
        self.cancel_scope.cancel()
        if self.writing and self.client is not None:
            self.client.abort()

    async def subscribe(self, params: dict[str, Any]) -> dict[str, str]:
        if self.app.broadcaster is None:
            raise RpcError(ErrorCode.METHOD_NOT_FOUND, "this listener has no subscriptions")
        topic = self.app.topic_resolver(params)
        if len(self.subscriptions) >= self.app.max_subscriptions:
            raise RpcError(
                ErrorCode.SUBSCRIPTION_LIMIT,
                f"Subscription limit reached: {self.app.max_subscriptions} on this connection",
            )
        sub_id = secrets.token_hex(8)
        self.held[sub_id] = []
        self.subscriptions[sub_id] = self.app.broadcaster.subscribe(
            topic, sink=self.notifier(sub_id, topic)
        )
        return {"subscription": sub_id, "topic": topic}

    async def unsubscribe(self, params: dict[str, Any]) -> bool:
        check_params(params, ("subscription",))
        sub_id = str_param(params, "subscription", max_len=64)
        subscription = self.subscriptions.pop(sub_id, None)
        if subscription is None:
            raise not_found(f"subscription {sub_id!r} on this connection")
        subscription.close()
        for item in self.held.pop(sub_id, ()):
            self.queued_bytes -= _size(item)
        return True


_NOTIFICATION_TAIL: Final = "}}"


def _size(item: tuple[str, str]) -> int:
    """Characters of the message a queue item stands for (head + text + tail)."""
    head, text = item
    return len(head) + len(text) + len(_NOTIFICATION_TAIL) if head else len(text)


class MetricsApp:
    """ASGI app of the metrics listener: `GET /metrics` and `GET /health`."""

    def __init__(self, metrics: Metrics, health: HealthCheck = always_healthy) -> None:
        self.metrics = metrics
        self.health = health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": WS_CLOSE_POLICY})
            return
        path, method = scope["path"], scope["method"]
        if method not in ("GET", "HEAD"):
            await _respond(
                send,
                405,
                _json_bytes({"error": "use GET"}),
                _JSON_HEADERS + [(b"allow", b"GET, HEAD")],
            )
        elif path == "/metrics":
            accept = (_header(scope, b"accept") or b"").decode("latin-1")
            encoder, content_type = choose_encoder(accept)
            body = encoder(self.metrics.registry)
            await _respond(
                send,
                200,
                body,
                [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")],
                head=method == "HEAD",
            )
        elif path == "/health":
            status, body = _health_response(self.health)
            await _respond(send, status, body, head=method == "HEAD")
        else:
            await _respond(send, 404, _json_bytes({"error": f"no route {path[:100]}"}))


# --- serving ---------------------------------------------------------------------------------


def hypercorn_config(
    listen: ListenAddr, limits: Limits, *, idle_timeout_ms: int = 5_000
) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [str(listen)]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through node.log's handler
    config.include_server_header = False
    config.websocket_max_message_size = limits.max_body_bytes
    # hypercorn's keep-alive timer runs from accept until a request's headers are complete and
    # again between requests: slow headers and idle connections end after this.
    config.keep_alive_timeout = idle_timeout_ms / 1000
    config.graceful_timeout = 2
    # Any read (HTTP or WebSocket) may wait this long; WebSocket clients answer the pings, so
    # an idle subscriber that is alive keeps its connection.
    config.websocket_ping_interval = 20
    config.read_timeout = max(60, 2 * limits.deadline_ms // 1000)
    return config


_REFUSED_BODY: Final = json.dumps(
    {
        "jsonrpc": "2.0",
        "error": {
            "code": int(ErrorCode.SERVER_BUSY),
            "message": "Server busy: too many connections from this address",
        },
        "id": None,
    },
    separators=(",", ":"),
).encode()
_REFUSED: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
    + str(len(_REFUSED_BODY)).encode()
    + b"\r\n\r\n"
    + _REFUSED_BODY
)


async def _refuse(stream: trio.SocketStream) -> None:
    """A canned 503 to a connection over its address's limit, without reading its request
    (beyond a brief drain so that closing does not reset the answer away)."""
    with trio.move_on_after(0.5):
        try:
            await stream.send_all(_REFUSED)
            await stream.send_eof()
            with trio.move_on_after(0.1):
                while await stream.receive_some(16384):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    with trio.CancelScope(shield=True):
        await stream.aclose()


async def _serve_connection(
    app: Any,
    config: HypercornConfig,
    context: WorkerContext,
    clients: ClientLimits,
    stream: trio.SocketStream,
) -> None:
    client = clients.admit(stream)
    if client is None:
        await _refuse(stream)
        return
    try:
        with client.cancel_scope:
            # hypercorn annotates an SSLStream but takes a plain SocketStream (its own serve).
            state = ConnectionState({CLIENT_STATE_KEY: client})
            await TCPServer(app, config, context, state, stream)  # type: ignore[arg-type]
    finally:
        clients.release(client)
        with trio.CancelScope(shield=True):  # hypercorn's own close may have been cancelled
            await stream.aclose()


async def serve_asgi(
    app: Any,
    listen: ListenAddr,
    *,
    limits: Limits,
    clients: ClientLimits | None = None,
    idle_timeout_ms: int = 5_000,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[ListenAddr] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve one ASGI app until cancelled or `shutdown_trigger` returns; started -> bound addr.

    hypercorn.trio.serve without the lifespan protocol (our apps keep no lifespan state), with
    `clients` checked at accept and each connection's ClientConnection in the scope's state.
    On shutdown: stop accepting, let idle connections close and requests in flight finish for
    `graceful_timeout` seconds, as hypercorn does.
    """
    config = hypercorn_config(listen, limits, idle_timeout_ms=idle_timeout_ms)
    clients = clients if clients is not None else ClientLimits.unlimited()
    context = WorkerContext(None)
    listeners = []
    bound: ListenAddr | None = None
    for sock in config.create_sockets().insecure_sockets:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        name = sock.getsockname()
        if bound is None:
            bound = ListenAddr(str(name[0]), int(name[1]))
    if bound is None:
        raise ValueError(f"nothing to listen on for {listen}")
    handler = partial(_serve_connection, wrap_app(app, 0, "asgi"), config, context, clients)
    async with trio.open_nursery() as connections:
        try:
            async with trio.open_nursery() as acceptor:
                acceptor.start_soon(
                    partial(trio.serve_listeners, handler, listeners, handler_nursery=connections)
                )
                task_status.started(bound)
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                await shutdown_trigger()
                acceptor.cancel_scope.cancel()
        finally:
            await context.terminated.set()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout


@dataclass(frozen=True, slots=True)
class BoundListeners:
    rpc: ListenAddr
    admin: ListenAddr | None
    metrics: ListenAddr | None


def limits_from_config(config: NodeConfig) -> Limits:
    return Limits(
        max_body_bytes=config.rpc.max_body_bytes,
        max_batch=config.rpc.max_batch,
        max_json_depth=config.rpc.max_json_depth,
        deadline_ms=config.rpc.deadline_ms,
    )


async def serve_node_listeners(
    config: NodeConfig,
    *,
    public: MethodTable,
    admin: MethodTable | None = None,
    broadcaster: Broadcaster | None = None,
    health: HealthCheck = always_healthy,
    metrics: Metrics | None = None,
    topic_resolver: TopicResolver = default_topic_resolver,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    lane: WorkLane | None = None,
    pages: Pages | None = None,
    task_status: trio.TaskStatus[BoundListeners] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the public, admin (if `config.admin.enabled`) and metrics (if enabled) listeners.

    `lane`: the public listener's work lane (the producer's, on a producing node; None on a
    follower). The admin listener never takes one: its commands wait for the producer.

    Started value: the bound addresses. The admin token comes from `config.admin_token_path`
    (created with mode 0600 on first start). Raises ValueError before binding anything if the
    admin listener is enabled without an admin table, or the table shares a name with public.
    """
    limits = limits_from_config(config)
    admin_app = None
    if config.admin.enabled:
        if admin is None:
            raise ValueError("admin listener enabled but no admin method table given")
        shared = sorted(set(admin.names()) & set(public.names()))
        if shared:
            raise ValueError(f"admin methods {shared} must not be on the public table")
        token = ensure_admin_token(config.admin_token_path)
        if not config.admin.listen.is_loopback:
            # Config validation refused this unless admin.allow_remote said so: say it again
            # at every start, since the token travels in clear over this listener.
            log_event(
                logger,
                "rpc.admin_listener_remote",
                level=logging.WARNING,
                listen=config.admin.listen,
                note="plain HTTP: the bearer token crosses the network in clear; TLS in front?",
            )
        admin_app = RpcApp(
            admin,
            limits=limits,
            listener="admin",
            health=None,
            bearer_token=token,
            metrics=metrics,
            websocket=False,
            max_connections=64,
        )
    public_app = RpcApp(
        public,
        limits=limits,
        listener="public",
        health=health,
        broadcaster=broadcaster,
        topic_resolver=topic_resolver,
        max_connections=config.rpc.max_connections,
        max_subscriptions=config.rpc.max_subscriptions,
        metrics=metrics,
        lane=lane,
        ws_send_queue_bytes=config.rpc.ws_send_queue_bytes,
        pages=pages,
    )
    # Per-address limits on the public listener only: the admin and metrics listeners are the
    # operator's (loopback unless said otherwise) and must answer while the public one is busy.
    public_clients = ClientLimits(
        connections_per_client=config.rpc.max_connections_per_client,
        requests_per_s=config.rpc.max_requests_per_s_per_client,
    )
    serve = partial(
        serve_asgi,
        limits=limits,
        idle_timeout_ms=config.rpc.idle_timeout_ms,
        shutdown_trigger=shutdown_trigger,
    )
    async with trio.open_nursery() as nursery:
        rpc_addr = await nursery.start(
            partial(serve, public_app, config.rpc.listen, clients=public_clients)
        )
        admin_addr = metrics_addr = None
        if admin_app is not None:
            admin_addr = await nursery.start(partial(serve, admin_app, config.admin.listen))
        if config.metrics.enabled and metrics is not None:
            metrics_addr = await nursery.start(
                partial(serve, MetricsApp(metrics, health), config.metrics.listen)
            )
        bound = BoundListeners(rpc=rpc_addr, admin=admin_addr, metrics=metrics_addr)
        log_event(logger, "rpc.listening", rpc=bound.rpc, admin=bound.admin, metrics=bound.metrics)
        task_status.started(bound)


# --- admin token -----------------------------------------------------------------------------

_TOKEN_TEXT: Final = re.compile(rb"[0-9A-Za-z_\-.~+/=]{32,512}")


class AdminTokenError(ValueError):
    """The admin token file is unreadable, malformed or readable by others."""


def load_admin_token(path: pathlib.Path) -> bytes:
    """The token (stripped of whitespace); refuses a file group/other can read, like ssh."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes().strip()
    except OSError as error:
        raise AdminTokenError(f"admin token {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AdminTokenError(
            f"admin token {path} has mode {stat.S_IMODE(mode):o}; run chmod 600 {path}"
        )
    if not _TOKEN_TEXT.fullmatch(data):
        raise AdminTokenError(f"admin token {path}: must be 32-512 printable token characters")
    return data


def ensure_admin_token(path: pathlib.Path) -> bytes:
    """Load the token, creating a random one (mode 0600) if the file does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(32).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_admin_token(path)  # created concurrently
        with os.fdopen(fd, "wb") as file:
            file.write(token + b"\n")
        log_event(logger, "rpc.admin_token_created", path=str(path))
    return load_admin_token(path)
