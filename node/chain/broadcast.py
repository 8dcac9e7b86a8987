"""Broadcaster: fan-out of committed events (new heads, account fills) to subscribers.

The producer calls `publish(topic, payload)` after a commit; it never blocks and never waits for
a subscriber. Each subscription has a bounded trio memory channel; a subscriber whose buffer is
full is dropped (its channel closed, `dropped` set) instead of slowing the writer down. The RPC
layer turns a dropped subscription into a closed WebSocket so the client knows it missed data.

A subscription may instead name a `sink`: a function called with each payload in the
publisher's task (no channel, no task per subscription); it returns False to be dropped. The
WebSocket server uses that to put notifications straight into its connection's send queue,
which is bounded in bytes, so what a subscriber costs is that queue and nothing else.

Payloads are JSON-ready values (integers already rendered as strings); each is serialized once
per publish, and not at all when nobody listens. Single-threaded: call from trio tasks only.
Imports trio and the stdlib only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio

TOPIC_NEW_HEADS = "new_heads"
ACCOUNT_TOPIC_PREFIX = "account:"


def account_topic(address_hex: str) -> str:
    """`account:<hex address>`: fills, liquidations and funding of one account."""
    return ACCOUNT_TOPIC_PREFIX + address_hex.lower()


class Subscription:
    """One subscriber's view: iterate it for payloads (JSON text); ends when closed or dropped."""

    def __init__(
        self,
        broadcaster: Broadcaster,
        topic: str,
        buffer: int,
        on_drop: Callable[[Subscription], None] | None,
        sink: Callable[[str], bool] | None = None,
    ) -> None:
        self.topic = topic
        self.dropped = False
        self.closed = False
        self.on_drop = on_drop
        self._broadcaster = broadcaster
        self._sink = sink
        # A sink subscription has no channel to buffer in: a zero-size one that is never used.
        self._send, self._receive = trio.open_memory_channel[str](0 if sink else buffer)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> str:
        # A plain async iterator, not an async generator: a cancelled consumer leaves no
        # generator behind for the garbage collector to finalize.
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unsubscribe; iteration ends after the payloads already buffered."""
        self.closed = True
        self._broadcaster._remove(self)
        self._send.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._receive.close()

    def _offer(self, payload: str) -> bool:
        if self._sink is not None:
            return self.closed or self._sink(payload)  # closed: nothing to drop
        try:
            self._send.send_nowait(payload)
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return True  # closed concurrently; nothing to drop
        return True


class Broadcaster:
    """Topic -> subscriptions. `buffer` payloads may wait per subscriber before it is dropped."""

    def __init__(
        self, *, buffer: int = 256, on_drop: Callable[[Subscription], None] | None = None
    ) -> None:
        if buffer < 1:
            raise ValueError(f"buffer={buffer} must be >= 1")
        self.buffer = buffer
        self.on_drop = on_drop
        self._topics: dict[str, list[Subscription]] = {}

    def subscribe(
        self,
        topic: str,
        *,
        on_drop: Callable[[Subscription], None] | None = None,
        sink: Callable[[str], bool] | None = None,
    ) -> Subscription:
        """A new subscription; `on_drop` runs (synchronously, in the publisher's task) if it is
        dropped for falling behind, so the owner can close its connection. With `sink`, each
        payload goes to `sink(payload)` at publish time instead of the subscription's buffer
        (it must not block; False drops the subscription); iterating it then ends at once."""
        subscription = Subscription(self, topic, self.buffer, on_drop, sink)
        self._topics.setdefault(topic, []).append(subscription)
        return subscription

    def has_subscribers(self, topic: str) -> bool:
        """Check before building an expensive payload."""
        return bool(self._topics.get(topic))

    def subscriber_count(self, topic: str | None = None) -> int:
        if topic is not None:
            return len(self._topics.get(topic, ()))
        return sum(len(subs) for subs in self._topics.values())

    def publish(self, topic: str, payload: Any) -> int:
        """Offer `payload` to every subscriber of `topic` without blocking; returns how many
        took it. Subscribers with a full buffer are dropped."""
        subscribers = self._topics.get(topic)
        if not subscribers:
            return 0
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        delivered = 0
        for subscription in list(subscribers):  # a drop mutates the list
            if subscription._offer(text):
                delivered += 1
            else:
                self._drop(subscription)
        return delivered

    def _drop(self, subscription: Subscription) -> None:
        subscription.dropped = True
        subscription.close()
        for callback in (subscription.on_drop, self.on_drop):
            if callback is not None:
                callback(subscription)

    def _remove(self, subscription: Subscription) -> None:
        subscribers = self._topics.get(subscription.topic)
        if subscribers and subscription in subscribers:
            subscribers.remove(subscription)
            if not subscribers:
                del self._topics[subscription.topic]
