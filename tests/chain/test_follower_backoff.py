"""The follower's reconnect backoff doubles on failures and resets after a good session (one
that caught up with its source), so a drop after hours of good service is retried in 0.2 s,
not after the 5 s the first outage grew the backoff to (issue 20)."""

from __future__ import annotations

import trio

from node.chain.follower import BACKOFF_MAX_S, BACKOFF_START_S, Follower
from node.chain.producer import ChainStatus
from node.chain.remote import RemoteUnavailable


async def test_backoff_doubles_then_resets_after_a_good_session(
    autojump_clock: trio.abc.Clock,
) -> None:
    follower = Follower(None, None, "ws://127.0.0.1:1", ChainStatus(head=None))  # type: ignore[arg-type]
    # Each session: fail at once, or catch up ("good") and then drop.
    script = ["fail"] * 7 + ["good"] + ["fail"] * 2 + ["good", "good"]
    starts: list[float] = []

    async def session() -> None:
        starts.append(trio.current_time())
        if len(starts) > len(script):
            await trio.sleep_forever()
        if script[len(starts) - 1] == "good":
            follower.session_good = True
            await trio.sleep(3600)  # an hour of following
        raise RemoteUnavailable("connection refused")

    follower._session = session  # type: ignore[method-assign]
    with trio.move_on_after(100_000):
        await follower.run()
    waits = [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)]
    hour, start = 3600, BACKOFF_START_S
    assert waits == [
        *(start, 2 * start, 4 * start, 8 * start, 16 * start, BACKOFF_MAX_S, BACKOFF_MAX_S),
        hour + start,  # the good session's drop is retried at the start value (was 5 s)
        2 * start,  # then it doubles again
        4 * start,
        hour + start,
        hour + start,
    ]
