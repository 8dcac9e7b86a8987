"""Serving one ASGI app on hypercorn (trio mode) under our own accept loop: the hypercorn config,
the per-address connection count at accept and the canned 503 over it. Imports trio,
hypercorn, the stdlib, node.config (ListenAddr) and node.rpc (clients, jsonrpc).

`serve_asgi` runs hypercorn's per-connection protocol (`hypercorn.trio.tcp_server.TCPServer`)
under our own accept loop to count connections per address before a byte is read and to hand
the app the ClientConnection whose reset frees a stuck writer (hypercorn 0.18's internals:
pinned by tests/rpc tests). Request headers must be complete, and an idle keep-alive connection
is closed, within `idle_timeout_ms` (hypercorn's keep-alive timer runs from accept until the
headers are in).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from node.config import ListenAddr
from node.rpc.clients import CLIENT_STATE_KEY, ClientLimits
from node.rpc.jsonrpc import ErrorCode, Limits


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
