"""Clock: ManualClock wakes sleepers only when moved; SystemClock follows the wall clock."""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing

from node.chain.clock import Clock, ManualClock, SystemClock


async def test_manual_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = ManualClock(start_ms=1_000)
    woke: list[tuple[str, int]] = []

    async def sleeper(name: str, deadline_ms: int) -> None:
        await clock.sleep_until_ms(deadline_ms)
        woke.append((name, clock.now_ms()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper, "late", 1_500)
        nursery.start_soon(sleeper, "early", 1_250)
        nursery.start_soon(sleeper, "past", 999)
        await trio.testing.wait_all_tasks_blocked()
        assert woke == [("past", 1_000)] and clock.sleepers == 2
        clock.advance(249)
        await trio.testing.wait_all_tasks_blocked()
        assert len(woke) == 1
        clock.advance(1)
        await trio.testing.wait_all_tasks_blocked()
        assert woke[1] == ("early", 1_250) and clock.sleepers == 1
        clock.set_ms(2_000)
    assert woke[2] == ("late", 2_000) and clock.sleepers == 0


async def test_manual_clock_steps_back_and_cancelled_sleepers_leave() -> None:
    clock = ManualClock(start_ms=5_000)
    clock.set_ms(4_000)  # a wall-clock step backwards is allowed on purpose
    assert clock.now_ms() == 4_000
    with pytest.raises(ValueError, match="must be >= 0"):
        clock.advance(-1)
    with trio.move_on_after(0.01):
        await clock.sleep_until_ms(10_000)
    assert clock.sleepers == 0


async def test_system_clock_reads_wall_time_and_sleeps(autojump_clock: trio.abc.Clock) -> None:
    clock = SystemClock()
    assert isinstance(clock, Clock) and isinstance(ManualClock(), Clock)
    assert abs(clock.now_ms() - time.time() * 1000) < 1_000
    await clock.sleep_until_ms(clock.now_ms() - 5)  # already passed: returns at once


async def test_system_clock_sleep_waits_for_the_deadline() -> None:
    clock = SystemClock()
    deadline = clock.now_ms() + 30
    await clock.sleep_until_ms(deadline)
    assert clock.now_ms() >= deadline
