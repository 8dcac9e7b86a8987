"""JSON-RPC over WebSocket, with subscriptions: one session per connection, whose responses and
notifications share one send queue bounded in bytes. Imports trio, the stdlib, node.chain
(Subscription), node.log and node.rpc (asgi, clients, jsonrpc); node.rpc.http_app hands it the
connections to `/` and `/ws`.

Each WebSocket has one send queue bounded in bytes (`ws_send_queue_bytes`): responses and
notifications wait there for the one writer task; subscriptions put their notifications into
it from the publisher (node.chain.broadcast sinks), so there is no buffer or task per
subscription. A client whose queue would pass the bound is dropped: its subscriptions and queue
are released at once and its socket is reset (hypercorn shields its socket writes from
cancellation, so a client that stopped reading would otherwise hold the writer forever; the
reset makes that write fail). Messages are bounded like bodies (`max_body_bytes`, set as
hypercorn's WebSocket message limit in node.rpc.listener).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import trio

from node.chain.broadcast import Subscription
from node.log import log_event
from node.rpc.asgi import Receive, Scope, Send
from node.rpc.clients import ClientConnection, client_of
from node.rpc.jsonrpc import (
    Dispatcher,
    ErrorCode,
    RpcError,
    check_params,
    invalid_params,
    not_found,
    str_param,
)

if TYPE_CHECKING:
    from node.rpc.http_app import RpcApp

logger = logging.getLogger("perpchain.rpc")

WS_PATHS: Final = ("/", "/ws")
WS_CLOSE_NORMAL: Final = 1000
WS_CLOSE_POLICY: Final = 1008  # e.g. WebSocket on the admin listener
WS_CLOSE_TRY_AGAIN: Final = 1013  # server busy, or subscriber dropped for falling behind
WS_CLOSE_TOO_SLOW: Final = WS_CLOSE_TRY_AGAIN  # send queue full (the socket is reset)
NOTIFICATION_METHOD: Final = "subscription"
CLOSE_TIMEOUT_S: Final = 1.0  # a WebSocket close frame not written by then: socket reset

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


async def serve_websocket(app: RpcApp, scope: Scope, receive: Receive, send: Send) -> None:
    """One WebSocket of `app`, from its handshake to its close frame.

    Then hypercorn gets CLOSE_TIMEOUT_S for the closing handshake: without that a closed
    WebSocket's connection lingers until hypercorn's ping task next wakes.
    """
    try:
        await _websocket_session(app, scope, receive, send)
    finally:
        client = client_of(scope)
        if client is not None:
            client.end_within(CLOSE_TIMEOUT_S)


async def _websocket_session(app: RpcApp, scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if not app.websocket or scope["path"] not in WS_PATHS:
        await send({"type": "websocket.close", "code": WS_CLOSE_POLICY})  # HTTP 403
        return
    if app.active >= app.max_connections:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": WS_CLOSE_TRY_AGAIN, "reason": "server busy"})
        return
    app.active += 1
    if app.metrics is not None:
        app.metrics.ws_connections.inc()
    try:
        await send({"type": "websocket.accept"})
        await _WsSession(app, client_of(scope), receive, send).run()
    finally:
        app.active -= 1
        if app.metrics is not None:
            app.metrics.ws_connections.dec()


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
