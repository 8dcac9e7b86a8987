"""The listeners through real sockets on 127.0.0.1 (port 0): HTTP, WebSocket, admin, metrics."""

from __future__ import annotations

import json
import os
import pathlib
import random
import stat
from functools import partial
from typing import Any

import h11
import pytest
import trio

from node.chain.broadcast import Broadcaster
from node.chain.metrics import Metrics
from node.config import ListenAddr, NodeConfig
from node.rpc.admin_token import AdminTokenError, ensure_admin_token, load_admin_token
from node.rpc.health import HealthReport
from node.rpc.http_app import RpcApp
from node.rpc.jsonrpc import ErrorCode, Limits, MethodTable
from node.rpc.listener import serve_asgi
from node.rpc.server import BoundListeners, serve_node_listeners
from tests.rpc.client import WsClient, WsClosed, http_request, read_response, rpc_post

LOOPBACK = ListenAddr("127.0.0.1", 0)
LIMITS = Limits(max_body_bytes=64 * 1024, max_batch=10, max_json_depth=8, deadline_ms=200)


async def echo(params: dict[str, Any]) -> Any:
    return params


async def slow(params: dict[str, Any]) -> Any:
    await trio.sleep(60)


async def boom(params: dict[str, Any]) -> Any:
    raise RuntimeError("internal detail")


PUBLIC = MethodTable({"echo": echo, "slow": slow, "boom": boom})


async def admin_halt(params: dict[str, Any]) -> Any:
    return {"halted": True}


ADMIN = MethodTable({"admin_halt": admin_halt})


def req(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:  # noqa: A002
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        request["params"] = params
    return request


async def start(nursery: trio.Nursery, app: Any) -> int:
    addr: ListenAddr = await nursery.start(partial(serve_asgi, app, LOOPBACK, limits=LIMITS))
    assert addr.host == "127.0.0.1" and addr.port > 0
    return addr.port


@pytest.fixture
def broadcaster() -> Broadcaster:
    return Broadcaster(buffer=4)


@pytest.fixture
async def port(nursery: trio.Nursery, broadcaster: Broadcaster) -> int:
    app = RpcApp(PUBLIC, limits=LIMITS, broadcaster=broadcaster, max_subscriptions=2)
    return await start(nursery, app)


# --- HTTP ------------------------------------------------------------------------------------


async def test_http_post_single_and_batch(port: int) -> None:
    assert await rpc_post(port, req("echo", {"a": "1"})) == {
        "jsonrpc": "2.0",
        "result": {"a": "1"},
        "id": 1,
    }
    batch = await rpc_post(port, [req("echo", id=1), req("nope", id=2)])
    assert [r["id"] for r in batch] == [1, 2]
    assert batch[1]["error"]["code"] == ErrorCode.METHOD_NOT_FOUND


async def test_http_notification_gets_204(port: int) -> None:
    body = json.dumps({"jsonrpc": "2.0", "method": "echo"}).encode()
    response = await http_request(port, "POST", "/", body)
    assert response.status == 204 and response.body == b""


async def test_http_errors_are_json_rpc_error_objects_and_server_stays_up(port: int) -> None:
    for body in (b"\x00\xff garbage", b"{", b"[]", b"[" * 50, json.dumps(req("boom")).encode()):
        response = await rpc_post(port, body)
        assert set(response) == {"jsonrpc", "error", "id"}
        assert "internal detail" not in json.dumps(response)
    assert (await rpc_post(port, req("echo")))["result"] == {}


async def test_http_deadline(port: int) -> None:
    response = await rpc_post(port, req("slow"))
    assert response["error"]["code"] == ErrorCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize(
    ("method", "path", "content_type", "status"),
    [
        ("GET", "/", None, 405),
        ("PUT", "/", "application/json", 405),
        ("POST", "/", "text/plain", 415),
        ("POST", "/", None, 415),
        ("POST", "/nope", "application/json", 404),
        ("POST", "/health", "application/json", 405),
    ],
)
async def test_http_wrong_route_method_or_type(
    port: int, method: str, path: str, content_type: str | None, status: int
) -> None:
    response = await http_request(
        port,
        method,
        path,
        json.dumps(req("echo")).encode() if method != "GET" else b"",
        content_type=content_type,
    )
    assert response.status == status
    assert response.headers["content-type"] == "application/json"


async def raw_request(port: int, head: bytes, body_part: bytes) -> tuple[int, bytes, bool]:
    """Send a request head and part of a body, then read the answer without sending more.

    Returns the status, the body, and whether the server then closed the connection."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(head + body_part)
            conn = h11.Connection(h11.CLIENT)
            conn.send(
                h11.Request(
                    method="POST", target="/", headers=[("host", "x"), ("content-length", "1")]
                )
            )
            response = await read_response(stream, conn)
            closed = (await stream.receive_some(1024)) == b""
            return response.status, response.body, closed


async def test_oversize_body_refused_from_content_length_without_reading_it(port: int) -> None:
    declared = 100 * 1024 * 1024  # 100 MiB declared; only 1 KiB is ever sent
    head = (
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(declared).encode() + b"\r\n\r\n"
    )
    status, body, closed = await raw_request(port, head, b"[" * 1024)
    assert status == 413 and closed
    error = json.loads(body)["error"]
    assert error["code"] == ErrorCode.INVALID_REQUEST
    assert f"{declared} bytes exceeds the limit of {LIMITS.max_body_bytes}" in error["message"]


async def test_oversize_chunked_body_refused_once_past_the_limit(port: int) -> None:
    head = (
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    chunk = b"a" * 16384
    chunks = (hex(len(chunk))[2:].encode() + b"\r\n" + chunk + b"\r\n") * 5  # 80 KiB > 64 KiB
    status, body, _ = await raw_request(port, head, chunks)  # never sends the final 0 chunk
    assert status == 413
    assert json.loads(body)["error"]["code"] == ErrorCode.INVALID_REQUEST


async def test_health_reports_the_callable(nursery: trio.Nursery) -> None:
    state = {"report": HealthReport(ok=True, fields={"height": "12", "mode": "producing"})}

    def health() -> HealthReport:
        if state["report"] is None:
            raise RuntimeError("broken")
        return state["report"]

    port = await start(nursery, RpcApp(PUBLIC, limits=LIMITS, health=health))
    ok = await http_request(port, "GET", "/health")
    assert ok.status == 200 and ok.json() == {"status": "ok", "height": "12", "mode": "producing"}
    state["report"] = HealthReport(
        ok=False, reason="halted: open interest mismatch", fields={"mode": "halted"}
    )
    down = await http_request(port, "GET", "/health")
    assert down.status == 503
    assert down.json() == {
        "status": "unavailable",
        "reason": "halted: open interest mismatch",
        "mode": "halted",
    }
    state["report"] = None  # type: ignore[assignment]
    broken = await http_request(port, "GET", "/health")
    assert broken.status == 503 and broken.json()["reason"] == "health check failed"


async def test_connection_limit(nursery: trio.Nursery) -> None:
    port = await start(nursery, RpcApp(PUBLIC, limits=LIMITS, max_connections=1))
    holder = await WsClient.connect(port)
    try:
        assert (await holder.call("echo"))["result"] == {}
        second = await WsClient.connect(port)
        with pytest.raises(WsClosed) as info:
            await second.recv()
        assert info.value.code == 1013
        await second.aclose()
        busy = await http_request(port, "POST", "/", json.dumps(req("echo")).encode())
        assert busy.status == 503
        assert busy.json()["error"]["code"] == ErrorCode.SERVER_BUSY
    finally:
        await holder.aclose()
    with trio.fail_after(5):  # the slot frees once the server sees the close
        while (
            await http_request(port, "POST", "/", json.dumps(req("echo")).encode())
        ).status != 200:
            await trio.sleep(0.01)


# --- WebSocket -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/ws"])
async def test_ws_request_response(port: int, path: str) -> None:
    ws = await WsClient.connect(port, path)
    try:
        assert await ws.call("echo", {"x": "1"}) == {
            "jsonrpc": "2.0",
            "result": {"x": "1"},
            "id": 1,
        }
        await ws.send("{broken")
        assert (await ws.recv())["error"]["code"] == ErrorCode.PARSE_ERROR
        await ws.send([req("echo", id="a"), req("nope", id="b")])
        assert [r["id"] for r in await ws.recv()] == ["a", "b"]
        assert (await ws.call("slow"))["error"]["code"] == ErrorCode.DEADLINE_EXCEEDED
    finally:
        await ws.aclose()


async def test_ws_unknown_path_is_rejected(port: int) -> None:
    with pytest.raises(WsClosed) as info:
        await WsClient.connect(port, "/other")
    assert info.value.code == 403


async def test_ws_subscription_notifications_and_unsubscribe(
    port: int, broadcaster: Broadcaster
) -> None:
    ws = await WsClient.connect(port)
    try:
        await ws.send(req("subscribe", {"topic": "new_heads"}, id=1))
        # Publish before the client has read the subscribe response: the response still
        # comes first, then the notification.
        with trio.fail_after(5):
            while not broadcaster.has_subscribers("new_heads"):
                await trio.sleep(0.001)
        assert broadcaster.publish("new_heads", {"height": "1"}) == 1
        response = await ws.recv()
        sub_id = response["result"]["subscription"]
        assert response["result"]["topic"] == "new_heads"
        assert await ws.recv() == {
            "jsonrpc": "2.0",
            "method": "subscription",
            "params": {"subscription": sub_id, "topic": "new_heads", "result": {"height": "1"}},
        }
        broadcaster.publish("account:ab12", {"fill": "x"})  # other topic: not delivered
        broadcaster.publish("new_heads", {"height": "2"})
        assert (await ws.recv())["params"]["result"] == {"height": "2"}
        assert (await ws.call("unsubscribe", {"subscription": sub_id}))["result"] is True
        assert broadcaster.publish("new_heads", {"height": "3"}) == 0
        again = await ws.call("unsubscribe", {"subscription": sub_id})
        assert again["error"]["code"] == ErrorCode.NOT_FOUND
        assert ws.buffer_notifications == []
    finally:
        await ws.aclose()
    with trio.fail_after(5):
        while broadcaster.subscriber_count():
            await trio.sleep(0.001)


async def test_ws_subscription_limits_and_topic_validation(port: int) -> None:
    ws = await WsClient.connect(port)
    try:
        for topic in ("new_heads", "account:ab12"):
            assert "result" in await ws.call("subscribe", {"topic": topic})
        third = await ws.call("subscribe", {"topic": "new_heads"})
        assert third["error"]["code"] == ErrorCode.SUBSCRIPTION_LIMIT
        for params in ({"topic": "New Heads!"}, {}, {"topic": 5}, {"topic": "x", "more": 1}):
            bad = await ws.call("subscribe", params)
            assert bad["error"]["code"] == ErrorCode.INVALID_PARAMS
    finally:
        await ws.aclose()


async def test_subscribe_is_not_an_http_method(port: int) -> None:
    response = await rpc_post(port, req("subscribe", {"topic": "new_heads"}))
    assert response["error"]["code"] == ErrorCode.METHOD_NOT_FOUND


async def test_slow_subscriber_is_dropped_without_blocking_the_publisher(
    nursery: trio.Nursery,
) -> None:
    broadcaster = Broadcaster()
    app = RpcApp(PUBLIC, limits=LIMITS, broadcaster=broadcaster, ws_send_queue_bytes=16 * 1024)
    port = await start(nursery, app)
    ws = await WsClient.connect(port)
    assert "result" in await ws.call("subscribe", {"topic": "new_heads"})
    # The publisher never awaits: 50 publishes of ~1 KB in a row pass the connection's 16 KiB
    # send queue before its writer can run, so the subscriber is dropped, not waited for.
    pad = "x" * 1000
    delivered = [
        broadcaster.publish("new_heads", {"height": str(h), "pad": pad}) for h in range(50)
    ]
    taken = sum(delivered)
    assert 10 <= taken <= 16 and delivered == [1] * taken + [0] * (50 - taken)
    assert broadcaster.subscriber_count() == 0
    heights = []
    # Dropped: a close 1013, or, when the server's write to it was already stuck (a loaded
    # machine), a reset of the socket (the server's documented fallback, docs/SECURITY.md).
    with pytest.raises((WsClosed, trio.BrokenResourceError)) as info:
        while True:
            heights.append((await ws.recv())["params"]["result"]["height"])
    if isinstance(info.value, WsClosed):
        assert info.value.code == 1013 and "send queue full" in info.value.reason
    # What was queued when the client was dropped is discarded with the rest of its state.
    assert heights == [str(h) for h in range(len(heights))] and len(heights) <= taken
    await ws.aclose()
    with trio.fail_after(5):
        while app.active:
            await trio.sleep(0.01)


# --- admin, metrics and the whole set --------------------------------------------------------


@pytest.fixture
async def listeners(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> tuple[BoundListeners, Metrics, bytes]:
    config = NodeConfig.load(
        tmp_path,
        env={},
        overrides={
            "rpc.listen": "127.0.0.1:0",
            "admin.enabled": True,
            "admin.listen": "127.0.0.1:0",
            "metrics.listen": "127.0.0.1:0",
        },
    )
    metrics = Metrics()
    metrics.height.set(42)
    bound = await nursery.start(
        partial(
            serve_node_listeners,
            config,
            public=PUBLIC,
            admin=ADMIN,
            broadcaster=Broadcaster(),
            metrics=metrics,
            health=lambda: HealthReport(ok=True, fields={"height": "42"}),
        )
    )
    token = config.admin_token_path.read_bytes().strip()
    return bound, metrics, token


async def test_admin_needs_the_bearer_token(
    listeners: tuple[BoundListeners, Metrics, bytes],
) -> None:
    bound, _, token = listeners
    assert bound.admin is not None and bound.admin.port not in (0, bound.rpc.port)
    body = json.dumps(req("admin_halt")).encode()
    for headers in (
        [],
        [("authorization", "Bearer wrong")],
        [("authorization", "Basic " + token.decode())],
        [("authorization", "Bearer " + token.decode()[:-1])],
    ):
        denied = await http_request(bound.admin.port, "POST", "/", body, headers)
        assert denied.status == 401
        assert denied.json()["error"]["code"] == ErrorCode.UNAUTHORIZED
        assert denied.headers["www-authenticate"].startswith("Bearer")
    auth = [("authorization", "Bearer " + token.decode())]
    assert (await rpc_post(bound.admin.port, req("admin_halt"), auth))["result"] == {"halted": True}
    # The admin listener serves the admin table only: no public methods, no health, no WS.
    assert (await rpc_post(bound.admin.port, req("echo"), auth))["error"]["code"] == -32601
    assert (await http_request(bound.admin.port, "GET", "/health")).status == 404
    with pytest.raises(WsClosed):
        await WsClient.connect(bound.admin.port)


async def test_public_port_has_no_admin_methods(
    listeners: tuple[BoundListeners, Metrics, bytes],
) -> None:
    bound, _, token = listeners
    auth = [("authorization", "Bearer " + token.decode())]
    response = await rpc_post(bound.rpc.port, req("admin_halt"), auth)
    assert response["error"]["code"] == ErrorCode.METHOD_NOT_FOUND
    ws = await WsClient.connect(bound.rpc.port)
    try:
        assert (await ws.call("admin_halt"))["error"]["code"] == ErrorCode.METHOD_NOT_FOUND
    finally:
        await ws.aclose()


async def test_metrics_and_health_on_the_metrics_listener(
    listeners: tuple[BoundListeners, Metrics, bytes],
) -> None:
    bound, metrics, _ = listeners
    assert bound.metrics is not None
    await rpc_post(bound.rpc.port, req("echo"))
    await rpc_post(bound.rpc.port, req("no_such_method_xyz"))
    metrics.observe_block(height=43, txs=7, interval_ms=250, apply_ms=3, commit_ms=2)
    text = (await http_request(bound.metrics.port, "GET", "/metrics")).body.decode()
    assert "perpchain_height 43.0" in text
    assert 'perpchain_rpc_requests_total{listener="public",method="echo",outcome="ok"} 1.0' in text
    assert 'method="-",outcome="invalid"} 1.0' in text
    assert "no_such_method_xyz" not in text  # unknown names never become labels
    for name in (
        "perpchain_block_interval_seconds_bucket",
        "perpchain_txs_per_block_sum",
        "perpchain_mempool_size",
        "perpchain_commit_seconds_count",
        "perpchain_invariant_failures_total",
        'perpchain_mode{mode="starting"} 1.0',
    ):
        assert name in text
    health = await http_request(bound.metrics.port, "GET", "/health")
    assert health.status == 200 and health.json() == {"status": "ok", "height": "42"}
    assert (await http_request(bound.rpc.port, "GET", "/health")).json()["height"] == "42"
    assert (await http_request(bound.metrics.port, "GET", "/other")).status == 404


def test_admin_token_is_created_private_and_a_readable_one_is_refused(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "home" / "admin.token"
    token = ensure_admin_token(path)
    assert len(token) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_admin_token(path) == token == load_admin_token(path)
    os.chmod(path, 0o644)
    with pytest.raises(AdminTokenError, match="chmod 600"):
        load_admin_token(path)
    os.chmod(path, 0o600)
    path.write_bytes(b"short\n")
    with pytest.raises(AdminTokenError, match="32-512"):
        load_admin_token(path)


async def test_admin_table_must_not_overlap_public(tmp_path: pathlib.Path) -> None:
    config = NodeConfig.load(tmp_path, env={}, overrides={"admin.enabled": True})
    with pytest.raises(ValueError, match="must not be on the public table"):
        await serve_node_listeners(config, public=PUBLIC, admin=PUBLIC)


async def test_ws_message_over_the_body_limit_closes_the_connection(port: int) -> None:
    ws = await WsClient.connect(port)
    await ws.send(json.dumps(req("echo", {"x": "y" * LIMITS.max_body_bytes})))
    with pytest.raises(WsClosed) as info:
        await ws.recv()
    assert info.value.code == 1009  # message too big
    await ws.aclose()


async def test_slow_body_gets_408(port: int) -> None:
    head = (
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n"
    )
    status, body, closed = await raw_request(port, head, b'{"jsonrpc"')  # 10 of 100 bytes
    assert status == 408 and closed
    assert json.loads(body)["error"]["code"] == ErrorCode.DEADLINE_EXCEEDED


async def test_graceful_shutdown_when_the_trigger_fires(tmp_path: pathlib.Path) -> None:
    config = NodeConfig.load(
        tmp_path, env={}, overrides={"rpc.listen": "127.0.0.1:0", "metrics.listen": "127.0.0.1:0"}
    )
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(
                partial(
                    serve_node_listeners,
                    config,
                    public=PUBLIC,
                    metrics=Metrics(),
                    shutdown_trigger=stop.wait,
                )
            )
            assert bound.admin is None and bound.metrics is not None
            assert (await rpc_post(bound.rpc.port, req("echo")))["result"] == {}
            stop.set()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", bound.rpc.port)


async def test_random_bodies_over_http_get_error_objects_and_the_server_stays_up(
    port: int,
) -> None:
    rng = random.Random(20261125)  # fixed seed: the same bodies on every run
    pieces = [
        b"{",
        b"}",
        b"[",
        b"]",
        b'"jsonrpc"',
        b'"2.0"',
        b":",
        b",",
        b'"method"',
        b'"echo"',
        b'"id"',
        b"1",
        b"null",
        b"\xff",
        b"\\",
        b'"',
        b" ",
    ]
    for _ in range(60):
        if rng.random() < 0.5:
            body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))
        else:
            body = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40)))
        response = await http_request(port, "POST", "/", body)
        assert response.status in (200, 204), (body, response.status)
        if response.status == 200:
            parsed = response.json()
            for item in parsed if isinstance(parsed, list) else [parsed]:
                assert item["jsonrpc"] == "2.0" and ("error" in item or "result" in item)
    assert (await rpc_post(port, req("echo")))["result"] == {}


async def test_keep_alive_connection_serves_several_requests(port: int) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            for n in range(3):
                body = json.dumps(req("echo", {"n": str(n)}, id=n)).encode()
                headers = [
                    ("host", "x"),
                    ("content-type", "application/json"),
                    ("content-length", str(len(body))),
                ]
                await stream.send_all(
                    conn.send(h11.Request(method="POST", target="/", headers=headers))
                    + conn.send(h11.Data(data=body))
                    + conn.send(h11.EndOfMessage())
                )
                response = await read_response(stream, conn)
                assert response.json()["result"] == {"n": str(n)}
                conn.start_next_cycle()
