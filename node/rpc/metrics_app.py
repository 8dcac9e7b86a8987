"""The ASGI app of the metrics listener (default 127.0.0.1:9560): `GET /metrics` in the
Prometheus text or OpenMetrics format the scraper asks for, and `GET /health`. Imports
prometheus_client, node.chain (Metrics) and node.rpc (asgi, health, websocket close codes).
"""

from __future__ import annotations

from prometheus_client.exposition import choose_encoder

from node.chain.metrics import Metrics
from node.rpc.asgi import (
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
from node.rpc.health import HealthCheck, always_healthy
from node.rpc.websocket import WS_CLOSE_POLICY


class MetricsApp:
    """ASGI app of the metrics listener: `GET /metrics` and `GET /health`."""

    def __init__(self, metrics: Metrics, health: HealthCheck = always_healthy) -> None:
        self.metrics = metrics
        self.health = health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": WS_CLOSE_POLICY})
            return
        path, method = scope["path"], scope["method"]
        if method not in ("GET", "HEAD"):
            await respond_use_get(send)
        elif path == "/metrics":
            accept = (header(scope, b"accept") or b"").decode("latin-1")
            encoder, content_type = choose_encoder(accept)
            body = encoder(self.metrics.registry)
            await respond(
                send,
                200,
                body,
                [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")],
                head=method == "HEAD",
            )
        elif path == "/health":
            await respond_health(send, self.health, head=method == "HEAD")
        else:
            await respond(send, 404, json_bytes({"error": f"no route {path[:100]}"}))
