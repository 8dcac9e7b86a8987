"""Broadcaster: fan-out by topic, one serialization per publish, slow subscribers dropped."""

from __future__ import annotations

import json

import trio
import trio.testing

from node.chain.broadcast import Broadcaster, Subscription, account_topic


async def test_publish_reaches_only_the_topic_subscribers_in_order() -> None:
    broadcaster = Broadcaster(buffer=8)
    heads = broadcaster.subscribe("new_heads")
    account = broadcaster.subscribe(account_topic("AB12"))
    assert account.topic == "account:ab12"
    assert broadcaster.publish("new_heads", {"height": "1"}) == 1
    assert broadcaster.publish("new_heads", {"height": "2"}) == 1
    assert broadcaster.publish("nobody", {"x": 1}) == 0
    heads.close()
    received = [json.loads(payload) async for payload in heads]
    assert received == [{"height": "1"}, {"height": "2"}]
    assert broadcaster.subscriber_count() == 1 and not broadcaster.has_subscribers("new_heads")


async def test_full_subscriber_is_dropped_and_others_keep_receiving() -> None:
    dropped: list[Subscription] = []
    broadcaster = Broadcaster(buffer=2, on_drop=dropped.append)
    slow = broadcaster.subscribe("new_heads")
    fast = broadcaster.subscribe("new_heads")
    got: list[str] = []

    async def drain() -> None:
        async for payload in fast:
            got.append(payload)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        for height in range(5):
            broadcaster.publish("new_heads", height)  # never blocks
            await trio.testing.wait_all_tasks_blocked()
        assert dropped == [slow] and slow.dropped and not fast.dropped
        assert [payload async for payload in slow] == ["0", "1"]  # the buffered ones
        fast.close()
    assert got == ["0", "1", "2", "3", "4"]
    assert broadcaster.subscriber_count() == 0


def test_no_serialization_without_subscribers() -> None:
    broadcaster = Broadcaster()
    assert broadcaster.publish("new_heads", object()) == 0  # not JSON, never serialized
