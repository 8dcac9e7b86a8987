"""A JSON-RPC 2.0 client over one WebSocket (trio-websocket), used by a follower to fetch blocks
from its source, receive its new heads and forward transactions. Imports nothing from node.

Calls and subscription notifications share the connection; a reader task routes responses to
their callers by id and notifications to the subscriber's channel. A closed connection fails
every pending call with RemoteUnavailable; the owner reconnects.
"""

from __future__ import annotations

import itertools
import json
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

MAX_MESSAGE_BYTES = 64 << 20  # raw block batches are capped well below this by the server


class RemoteUnavailable(Exception):
    """The source cannot be reached, or the connection closed."""


class RemoteCallError(Exception):
    """The source answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.data = code, message, data


def websocket_url(url: str) -> str:
    """http://host:port -> ws://host:port/ws (ws:// and wss:// pass through)."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path or "/ws", "", ""))


class RemoteNode:
    """One open connection; use `connect_remote`."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._subscriptions: dict[str, trio.MemorySendChannel[Any]] = {}
        self._closed: str | None = None

    async def call(self, method: str, **params: Any) -> Any:
        if self._closed is not None:
            raise RemoteUnavailable(self._closed)
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._pending[request_id] = send
        try:
            message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            try:
                await self._ws.send_message(json.dumps(message))
            except ConnectionClosed as closed:
                raise RemoteUnavailable(f"connection closed: {closed.reason}") from None
            try:
                reply = await receive.receive()
            except trio.EndOfChannel:
                raise RemoteUnavailable(self._closed or "connection closed") from None
        finally:
            self._pending.pop(request_id, None)
        if "error" in reply:
            error = reply["error"]
            raise RemoteCallError(error.get("code", 0), error.get("message", ""), error.get("data"))
        return reply.get("result")

    async def subscribe(self, topic: str, buffer: int = 256) -> trio.MemoryReceiveChannel[Any]:
        """Notifications of `topic`; when the buffer is full the oldest news is dropped by
        closing the channel (the follower then re-reads the head, so nothing is lost)."""
        result = await self.call("subscribe", topic=topic)
        send, receive = trio.open_memory_channel[Any](buffer)
        self._subscriptions[result["subscription"]] = send
        return receive

    async def _read(self) -> None:
        try:
            while True:
                text = await self._ws.get_message()
                try:
                    message = json.loads(text)
                except ValueError:
                    continue
                if "id" in message and message.get("id") in self._pending:
                    self._pending[message["id"]].send_nowait(message)
                elif "params" in message and "subscription" in message["params"]:
                    channel = self._subscriptions.get(message["params"]["subscription"])
                    if channel is not None:
                        try:
                            channel.send_nowait(message["params"].get("result"))
                        except trio.WouldBlock:
                            channel.close()
                        except trio.ClosedResourceError:
                            pass
        except ConnectionClosed as closed:
            self._closed = f"connection closed: {closed.reason}"
        finally:
            self._closed = self._closed or "connection closed"
            for channel in [*self._pending.values(), *self._subscriptions.values()]:
                channel.close()


def single_exception(group: BaseExceptionGroup[Any]) -> BaseException:
    """The one exception inside nested single-member groups, else the group itself.

    Cancelled leaves are dropped when something else is there too: a connection that drops
    while the node shuts down gives [Cancelled, RemoteUnavailable], which must read as the
    disconnect (the scope stays cancelled, so the next checkpoint cancels again) and not
    escape as a group (tests/e2e/test_follower.py caught that under load)."""
    _, rest = group.split(trio.Cancelled)
    exc: BaseException = group if rest is None else rest
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def connect_remote(url: str, *, connect_timeout_s: float = 5.0) -> AsyncIterator[RemoteNode]:
    """Open a connection to a node's public RPC; RemoteUnavailable if it cannot be reached."""
    ws_url = websocket_url(url)
    try:
        context = open_websocket_url(
            ws_url, max_message_size=MAX_MESSAGE_BYTES, connect_timeout=connect_timeout_s
        )
        ws = await context.__aenter__()
    except (OSError, HandshakeError) as error:
        raise RemoteUnavailable(f"cannot reach {url}: {error or type(error).__name__}") from None
    try:
        remote = RemoteNode(ws)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(remote._read)
                try:
                    yield remote
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The reader never fails, so a group holds the caller's own exception: re-raise it
            # as itself, as if there were no background task.
            raise single_exception(group) from None
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await context.__aexit__(None, None, None)
            except Exception:  # noqa: BLE001 - the connection is going away either way
                pass
