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
  carrying JSON-RPC plus `subscribe {topic}` / `unsubscribe {subscription}`.
- admin (127.0.0.1:9546, only when enabled): `POST /` with `Authorization: Bearer <token>`,
  the admin method table only; the public listener never sees those methods.
- metrics (127.0.0.1:9560): `GET /metrics` (Prometheus text or OpenMetrics) and `GET /health`.

Limits: a body larger than `max_body_bytes` is refused with 413 from its Content-Length before
any of it is read, or as soon as a chunked body passes the limit; `max_connections` bounds open
WebSockets plus HTTP requests in flight (idle keep-alive connections close after 5 s); every
request runs under `deadline_ms`; WebSocket messages are bounded like bodies. Known limit: a
WebSocket client that stops reading while its TCP window is full holds its slot until it goes
away, because hypercorn shields socket writes from cancellation.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import pathlib
import re
import secrets
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig
from prometheus_client.exposition import choose_encoder

from node.chain.broadcast import Broadcaster, Subscription
from node.chain.metrics import Metrics
from node.config import ListenAddr, NodeConfig
from node.lane import WorkLane
from node.log import log_event
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

WS_PATHS: Final = ("/", "/ws")
WS_CLOSE_NORMAL: Final = 1000
WS_CLOSE_POLICY: Final = 1008  # e.g. WebSocket on the admin listener
WS_CLOSE_TRY_AGAIN: Final = 1013  # server busy, or subscriber dropped for falling behind
NOTIFICATION_METHOD: Final = "subscription"
_OUTBOX_MESSAGES: Final = 64  # per WebSocket: responses + notifications waiting to be written


# --- health ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What /health says: 200 {"status": "ok", **fields} or 503 {"status": "unavailable",
    "reason": reason, **fields}. Fields are JSON-ready (heights as strings)."""

    ok: bool
    reason: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)


HealthCheck = Callable[[], HealthReport]


def always_healthy() -> HealthReport:
    return HealthReport(ok=True)


def _health_response(health: HealthCheck) -> tuple[int, bytes]:
    try:
        report = health()
    except Exception as exc:  # noqa: BLE001 - a broken health check is a 503, not a crash
        log_event(
            logger,
            "rpc.health_check_failed",
            level=logging.ERROR,
            exc_info=(type(exc), exc, exc.__traceback__),
            error=type(exc).__name__,
        )
        report = HealthReport(ok=False, reason="health check failed")
    body: dict[str, Any] = {"status": "ok" if report.ok else "unavailable"}
    if not report.ok:
        body["reason"] = report.reason or "unavailable"
    for key, value in report.fields.items():
        body.setdefault(key, value)
    return (200 if report.ok else 503), _json_bytes(body)


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
    ) -> None:
        self.table = table
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

    def _authorized(self, scope: Scope) -> bool:
        assert self.bearer_token is not None
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
            await _WsSession(self, receive, send).run()
        finally:
            self.active -= 1
            if self.metrics is not None:
                self.metrics.ws_connections.dec()


class _WsSession:
    """One WebSocket: requests run in order; notifications interleave through one writer."""

    def __init__(self, app: RpcApp, receive: Receive, send: Send) -> None:
        self.app = app
        self.receive = receive
        self.send = send
        self.subscriptions: dict[str, Subscription] = {}
        self.just_subscribed: list[tuple[str, Subscription]] = []
        self.close_code = WS_CLOSE_NORMAL
        self.close_reason = ""
        self.disconnected = False
        self.outbox, self.outbox_receive = trio.open_memory_channel[bytes](_OUTBOX_MESSAGES)
        extra = {"subscribe": self.subscribe, "unsubscribe": self.unsubscribe}
        if app.broadcaster is None:
            extra = {}
        self.dispatcher = Dispatcher(
            app.table.merged(extra), app.limits, observe=app.observe, lane=app.lane
        )
        self.nursery: trio.Nursery | None = None

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self.writer)
                await self.reader()
                nursery.cancel_scope.cancel()
        finally:
            for subscription in self.subscriptions.values():
                subscription.close()
            self.subscriptions.clear()
        if not self.disconnected:
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await self.send(
                    {
                        "type": "websocket.close",
                        "code": self.close_code,
                        "reason": self.close_reason,
                    }
                )

    async def reader(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "websocket.disconnect":
                self.disconnected = True
                return
            if message["type"] != "websocket.receive":
                continue
            text = message.get("text")
            data = text.encode() if text is not None else (message.get("bytes") or b"")
            response = await self.dispatcher.handle_body(data)
            if response is not None:
                await self.outbox.send(response)
            # Start forwarding only now, so a subscription's first notification can never
            # overtake the response that tells the client its id.
            for sub_id, subscription in self.just_subscribed:
                assert self.nursery is not None
                self.nursery.start_soon(self.forward, sub_id, subscription)
            self.just_subscribed.clear()

    async def writer(self) -> None:
        async for data in self.outbox_receive:
            await self.send({"type": "websocket.send", "text": data.decode()})

    async def forward(self, sub_id: str, subscription: Subscription) -> None:
        prefix = (
            b'{"jsonrpc":"2.0","method":"'
            + NOTIFICATION_METHOD.encode()
            + b'","params":{"subscription":'
            + _json_bytes(sub_id)
            + b',"topic":'
            + _json_bytes(subscription.topic)
            + b',"result":'
        )
        async for payload in subscription:
            if sub_id not in self.subscriptions:
                return  # unsubscribed: drop what was still buffered
            await self.outbox.send(prefix + payload.encode() + b"}}")

    def _dropped(self, subscription: Subscription) -> None:
        """Broadcaster callback: this client fell behind; close rather than skip silently."""
        log_event(
            logger,
            "rpc.subscriber_dropped",
            level=logging.WARNING,
            topic=subscription.topic,
            listener=self.app.listener,
        )
        if self.app.metrics is not None:
            self.app.metrics.subscribers_dropped.inc()
        self.close_code = WS_CLOSE_TRY_AGAIN
        self.close_reason = "subscriber too slow; resubscribe"
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    async def subscribe(self, params: dict[str, Any]) -> dict[str, str]:
        assert self.app.broadcaster is not None
        topic = self.app.topic_resolver(params)
        if len(self.subscriptions) >= self.app.max_subscriptions:
            raise RpcError(
                ErrorCode.SUBSCRIPTION_LIMIT,
                f"Subscription limit reached: {self.app.max_subscriptions} on this connection",
            )
        sub_id = secrets.token_hex(8)
        subscription = self.app.broadcaster.subscribe(topic, on_drop=self._dropped)
        self.subscriptions[sub_id] = subscription
        self.just_subscribed.append((sub_id, subscription))
        return {"subscription": sub_id, "topic": topic}

    async def unsubscribe(self, params: dict[str, Any]) -> bool:
        check_params(params, ("subscription",))
        sub_id = str_param(params, "subscription", max_len=64)
        subscription = self.subscriptions.pop(sub_id, None)
        if subscription is None:
            raise not_found(f"subscription {sub_id!r} on this connection")
        subscription.close()
        return True


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


def hypercorn_config(listen: ListenAddr, limits: Limits) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [str(listen)]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through node.log's handler
    config.include_server_header = False
    config.websocket_max_message_size = limits.max_body_bytes
    config.keep_alive_timeout = 5
    config.graceful_timeout = 2
    # Any read (HTTP or WebSocket) may wait this long; WebSocket clients answer the pings, so
    # an idle subscriber that is alive keeps its connection.
    config.websocket_ping_interval = 20
    config.read_timeout = max(60, 2 * limits.deadline_ms // 1000)
    return config


def _bound_addr(bind: str) -> ListenAddr:
    """hypercorn reports `http://127.0.0.1:54321` or `http://[::1]:54321`."""
    return ListenAddr.parse(bind.split("://", 1)[-1])


async def serve_asgi(
    app: Any,
    listen: ListenAddr,
    *,
    limits: Limits,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[ListenAddr] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve one ASGI app until cancelled or `shutdown_trigger` returns; started -> bound addr."""
    config = hypercorn_config(listen, limits)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(
                hypercorn.trio.serve, app, config, shutdown_trigger=shutdown_trigger, mode="asgi"
            )
        )
        bound = _bound_addr(binds[0])
        task_status.started(bound)


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
    )
    serve = partial(serve_asgi, limits=limits, shutdown_trigger=shutdown_trigger)
    async with trio.open_nursery() as nursery:
        rpc_addr = await nursery.start(partial(serve, public_app, config.rpc.listen))
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
