"""The ABCI socket server on trio: `tcp://HOST:PORT` or `unix://PATH`. Imports trio, node.log
and node.abci.codec (the application is anything with `async handle(request) -> response`).

CometBFT opens four connections (consensus, mempool, query, snapshot) and on each one expects
the responses in the order of its requests: each connection is served by one task that reads
a request, awaits the application's response and queues it. Responses are written when a
Flush arrives (CometBFT sends one after each synchronous call and every 20 ms for the
asynchronous CheckTx stream), when 64 KiB are queued, and after an exception. A broken
stream (bad length prefix, oversize frame) gets one exception response and the connection is
closed; a frame that is not a request we serve gets an exception response and the connection
goes on. Neither reaches the application.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable
from typing import Any, Protocol

import trio

from node.abci import codec
from node.log import log_event

logger = logging.getLogger("perpchain.abci")

RECEIVE_BYTES = 1 << 16
SEND_AT_BYTES = 1 << 16


class Application(Protocol):
    def handle(self, request: codec.Request) -> Awaitable[codec.Response]: ...


def parse_address(address: str) -> tuple[str, Any]:
    """("tcp", (host, port)) or ("unix", path); ValueError names what is wrong."""
    if address.startswith("unix://"):
        path = address[len("unix://") :]
        if not path:
            raise ValueError(f"{address!r}: unix:// needs a path")
        return "unix", path
    rest = address[len("tcp://") :] if address.startswith("tcp://") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r}: expected tcp://HOST:PORT or unix://PATH")
    return "tcp", (host.strip("[]") or "127.0.0.1", int(port))


async def open_listeners(address: str) -> list[trio.SocketListener]:
    kind, where = parse_address(address)
    if kind == "tcp":
        host, port = where
        return await trio.open_tcp_listeners(port, host=host)
    path = str(where)
    try:
        os.unlink(path)  # a socket file left by a killed server
    except FileNotFoundError:
        pass
    except OSError as error:
        if error.errno != errno.ENOENT:
            raise
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(128)
    return [trio.SocketListener(sock)]


def bound_address(listener: trio.SocketListener) -> str:
    name = listener.socket.getsockname()
    if isinstance(name, tuple):
        return f"tcp://{name[0]}:{name[1]}"
    return f"unix://{name}"


async def serve_abci(
    address: str,
    app: Application,
    *,
    max_frame_bytes: int = codec.DEFAULT_MAX_FRAME_BYTES,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; `task_status.started` gets the bound address."""
    listeners = await open_listeners(address)
    bound = bound_address(listeners[0])
    log_event(logger, "abci.listening", address=bound)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            trio.serve_listeners,
            lambda stream: serve_connection(stream, app, max_frame_bytes),
            listeners,
        )
        task_status.started(bound)


async def serve_connection(stream: trio.abc.Stream, app: Application, max_frame_bytes: int) -> None:
    connection = Connection(stream, app, max_frame_bytes)
    try:
        await connection.run()
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        pass  # the peer went away; nothing of it was half-applied (one request at a time)
    finally:
        log_event(logger, "abci.disconnected", level=logging.DEBUG, requests=connection.requests)
        await trio.aclose_forcefully(stream)


class Connection:
    def __init__(self, stream: trio.abc.Stream, app: Application, max_frame_bytes: int) -> None:
        self.stream = stream
        self.app = app
        self.frames = codec.FrameBuffer(max_frame_bytes)
        self.out = bytearray()
        self.requests = 0

    async def send(self) -> None:
        if self.out:
            data = bytes(self.out)
            self.out.clear()
            await self.stream.send_all(data)

    async def run(self) -> None:
        while True:
            data = await self.stream.receive_some(RECEIVE_BYTES)
            if not data:
                await self.send()
                return
            self.frames.feed(data)
            while True:
                try:
                    payload = self.frames.next_frame()
                except codec.FrameError as error:
                    log_event(logger, "abci.bad_frame", level=logging.WARNING, error=error)
                    self.out += codec.encode_response(codec.exception_response(str(error)))
                    await self.send()
                    return
                if payload is None:
                    break
                await self.serve(payload)

    async def serve(self, payload: bytes) -> None:
        self.requests += 1
        try:
            request = codec.decode_request(payload)
        except codec.RequestError as error:
            log_event(logger, "abci.bad_request", level=logging.WARNING, error=error)
            self.out += codec.encode_response(codec.exception_response(str(error)))
            await self.send()
            return
        response = await self.app.handle(request)
        self.out += codec.encode_response(response)
        if (
            request.WhichOneof("value") == "flush"
            or response.WhichOneof("value") == "exception"
            or len(self.out) >= SEND_AT_BYTES
        ):
            await self.send()
