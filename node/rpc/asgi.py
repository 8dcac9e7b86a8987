"""The ASGI vocabulary the listeners share: the callable types, JSON responses, header lookup and
the lifespan protocol. Imports the stdlib and node.rpc.health only.

Our apps are hand-written ASGI callables on hypercorn (see node.rpc.server for why there is no
framework), so the few response helpers a framework would give live here, once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from node.rpc.health import HealthCheck, health_response

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Pages = Callable[[Scope, Receive, Send], Awaitable[None]]  # an ASGI app for GET (the explorer)


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


JSON_HEADERS: Final = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


async def respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    head: bool = False,
) -> None:
    all_headers = list(JSON_HEADERS if headers is None else headers)
    all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def respond_use_get(send: Send) -> None:
    """405 for a route that only reads (`/health`, `/metrics`)."""
    await respond(
        send,
        405,
        json_bytes({"error": "use GET"}),
        JSON_HEADERS + [(b"allow", b"GET, HEAD")],
    )


async def respond_health(send: Send, health: HealthCheck, *, head: bool) -> None:
    status, body = health_response(health)
    await respond(send, status, json_bytes(body), head=head)


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer startup and shutdown at once: our apps keep no lifespan state."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
