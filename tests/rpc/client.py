"""Minimal HTTP/1.1 and WebSocket clients over trio streams for the server tests.

Built on h11 and wsproto (both already installed as hypercorn's dependencies), so the tests
speak real protocol bytes through real sockets to 127.0.0.1 without another client library.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

TIMEOUT_S = 10


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def http_request(
    port: int,
    method: str,
    path: str = "/",
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    *,
    content_type: str | None = "application/json",
) -> HttpResponse:
    """One request on a fresh connection; returns status, lower-cased headers and body."""
    all_headers = [("host", f"127.0.0.1:{port}"), *headers]
    if method != "GET":
        all_headers.append(("content-length", str(len(body))))
        if content_type is not None:
            all_headers.append(("content-type", content_type))
    with trio.fail_after(TIMEOUT_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            data = conn.send(h11.Request(method=method, target=path, headers=all_headers))
            if body:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
            await stream.send_all(data)
            return await read_response(stream, conn)


async def read_response(stream: trio.SocketStream, conn: h11.Connection) -> HttpResponse:
    status, headers, chunks = 0, {}, []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return HttpResponse(status, headers, b"".join(chunks))


async def rpc_post(port: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = await http_request(port, "POST", "/", body, headers)
    assert response.status == 200, (response.status, response.body)
    return response.json()


class WsClosed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


class WsClient:
    """A WebSocket client: `await WsClient.connect(port)`, `send`, `recv`, `call`, `aclose`."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Any] = []
        self.next_id = 1
        self.buffer: list[str] = []
        self.buffer_notifications: list[Any] = []  # notifications `call` read past

    @classmethod
    async def connect(cls, port: int, path: str = "/") -> WsClient:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = cls(stream)
        await client._send(Request(host=f"127.0.0.1:{port}", target=path))
        with trio.fail_after(TIMEOUT_S):
            while True:
                for event in await client._events():
                    if isinstance(event, AcceptConnection):
                        return client
                    if isinstance(event, RejectConnection):
                        await stream.aclose()
                        raise WsClosed(event.status_code, "rejected")
                    client.pending.append(event)

    async def _send(self, event: Any) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def _events(self) -> list[Any]:
        data = await self.stream.receive_some(65536)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    async def send(self, message: Any) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        await self._send(TextMessage(data=text))

    async def recv(self) -> Any:
        """The next complete text message, parsed; raises WsClosed on a close frame."""
        with trio.fail_after(TIMEOUT_S):
            while True:
                while self.pending:
                    event = self.pending.pop(0)
                    if isinstance(event, TextMessage | BytesMessage):
                        self.buffer.append(
                            event.data if isinstance(event.data, str) else event.data.decode()
                        )
                        if event.message_finished:
                            text = "".join(self.buffer)
                            self.buffer.clear()
                            return json.loads(text)
                    elif isinstance(event, Ping):
                        await self._send(event.response())
                    elif isinstance(event, CloseConnection):
                        try:
                            await self._send(event.response())
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
                        raise WsClosed(event.code, event.reason)
                self.pending.extend(await self._events())

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send a request and return its response (notifications seen first are kept)."""
        request_id = self.next_id
        self.next_id += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
        if params is not None:
            request["params"] = params
        await self.send(request)
        while True:
            message = await self.recv()
            if isinstance(message, dict) and message.get("id") == request_id:
                return message
            self.buffer_notifications.append(message)

    async def aclose(self) -> None:
        try:
            await self._send(CloseConnection(code=1000))
        except Exception:  # noqa: BLE001 - best effort in test teardown
            pass
        await self.stream.aclose()
