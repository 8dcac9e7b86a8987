"""The node's JSON-RPC listeners, wired from its config: public, admin and metrics. Imports trio,
the stdlib, node.chain (Broadcaster, Metrics), node.config, node.lane, node.log and node.rpc.

Why hypercorn with a hand-written ASGI app and no framework: hypercorn is the maintained
HTTP/1.1 + HTTP/2 + WebSocket server that runs natively on trio (h11, h2 and wsproto do the
protocol work); our surface is three routes, so a framework would add a dependency and a request
object layer but no safety. The apps are about the size of the routing a framework would need
to be told anyway.

Listeners (each a coroutine to run in a nursery with `await nursery.start(...)`, which returns
the bound `ListenAddr`, so tests can bind port 0):

- public (default 127.0.0.1:9545): `POST /` JSON-RPC (Content-Type application/json, which also
  makes browsers preflight cross-origin posts); `GET /health`; WebSocket at `/` and `/ws`
  carrying JSON-RPC plus `subscribe {topic}` / `unsubscribe {subscription}`; any other GET goes
  to `pages` when given (node.explorer, read-only), under the same per-address limits.
- admin (127.0.0.1:9546, only when enabled): `POST /` with `Authorization: Bearer <token>`,
  the admin method table only; the public listener never sees those methods.
- metrics (127.0.0.1:9560): `GET /metrics` (Prometheus text or OpenMetrics) and `GET /health`.

The pieces, one module each:

- node.rpc.listener: `serve_asgi`, hypercorn under our accept loop; idle and header timeouts.
- node.rpc.clients: per-address connection count and request rate (`ClientLimits`).
- node.rpc.http_app: `RpcApp`, HTTP routing, bearer auth, body and in-flight limits.
- node.rpc.websocket: WebSocket sessions, their bounded send queue, subscriptions.
- node.rpc.metrics_app: `MetricsApp`. node.rpc.admin_token: the admin bearer token file.
- node.rpc.asgi: the ASGI types and JSON response helpers they share.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio

from node.chain.broadcast import Broadcaster
from node.chain.metrics import Metrics
from node.config import ListenAddr, NodeConfig
from node.lane import WorkLane
from node.log import log_event
from node.rpc.admin_token import ensure_admin_token
from node.rpc.asgi import Pages
from node.rpc.clients import ClientLimits
from node.rpc.health import HealthCheck, always_healthy
from node.rpc.http_app import RpcApp
from node.rpc.jsonrpc import Limits, MethodTable
from node.rpc.listener import serve_asgi
from node.rpc.metrics_app import MetricsApp
from node.rpc.websocket import TopicResolver, default_topic_resolver

logger = logging.getLogger("perpchain.rpc")


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
    admin_app = _admin_app(config, admin, public, limits, metrics)
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


def _admin_app(
    config: NodeConfig,
    admin: MethodTable | None,
    public: MethodTable,
    limits: Limits,
    metrics: Metrics | None,
) -> RpcApp | None:
    """The admin listener's app, or None when it is disabled; raises ValueError before anything
    is bound if it is enabled without a table or its table shares a name with `public`."""
    if not config.admin.enabled:
        return None
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
    return RpcApp(
        admin,
        limits=limits,
        listener="admin",
        health=None,
        bearer_token=token,
        metrics=metrics,
        websocket=False,
        max_connections=64,
    )
