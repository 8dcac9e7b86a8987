"""The work lane: one holder at a time, the producer first, light work before each unit, no
starvation, and a lane never left held by a cancelled or failing holder."""

from __future__ import annotations

import json
import time

import pytest
import trio

from node.lane import WorkLane
from node.rpc.jsonrpc import Dispatcher, Limits, MethodTable

# Generous: these tests are about order, not speed; the cap is tested on its own.
PATIENT = 5.0


def spin(seconds: float) -> None:
    """Hold the event loop, as a slice of block computation does."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_one_holder_at_a_time_and_every_unit_runs() -> None:
    lane = WorkLane(light_wait_s=0)
    inside = 0
    most = 0
    done = []

    async def worker(name: str, first: bool) -> None:
        nonlocal inside, most
        for unit in range(20):
            async with lane.turn(first=first):
                inside += 1
                most = max(most, inside)
                await trio.lowlevel.checkpoint()  # a holder that yields still holds the lane
                inside -= 1
                done.append((name, unit))

    async with trio.open_nursery() as nursery:
        for index in range(4):
            nursery.start_soon(worker, f"w{index}", index == 0)
    assert most == 1
    assert len(done) == 80
    assert not lane.held


async def test_the_producer_goes_before_the_batches_waiting() -> None:
    lane = WorkLane(light_wait_s=0)
    order: list[str] = []
    release = trio.Event()

    async def holder() -> None:
        async with lane.turn():
            order.append("holder")
            await release.wait()

    async def waiter(name: str, first: bool) -> None:
        async with lane.turn(first=first):
            order.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        for name in ("batch-1", "batch-2"):
            nursery.start_soon(waiter, name, False)
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter, "producer", True)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert order == ["holder", "producer", "batch-1", "batch-2"]


async def test_a_read_runs_all_its_passes_before_the_next_unit() -> None:
    """A read is a chain of scheduler passes (hypercorn, the handler, the reply); heavy units
    wait until the loop has nothing else runnable, so no unit runs in the middle of it."""
    lane = WorkLane(slice_s=0.001, light_wait_s=PATIENT)
    units = 0
    stop = False

    async def heavy() -> None:
        nonlocal units
        while not stop:
            async with lane.turn(first=True):
                units += 1
                spin(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(heavy)
        await trio.sleep(0.02)
        for _ in range(10):
            before = units
            for _ in range(30):  # a read's passes
                await trio.lowlevel.checkpoint()
            assert units - before <= 1  # at most the unit that was running when it arrived
            await trio.sleep(0.002)
        stop = True
    assert units > 10


async def test_heavy_work_is_not_starved_by_light_work_that_never_stops() -> None:
    lane = WorkLane(slice_s=0.001, light_wait_s=0.002)
    units = 0

    async def busy_light() -> None:
        while True:
            await trio.lowlevel.checkpoint()

    async def heavy() -> None:
        nonlocal units
        while True:
            async with lane.turn(first=True):
                units += 1

    with trio.move_on_after(0.5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy_light)
            nursery.start_soon(heavy)
    assert units >= 10  # one turn per light_wait_s at the worst; 250 at best


async def test_a_cancelled_waiter_or_failing_holder_leaves_the_lane_free() -> None:
    lane = WorkLane(light_wait_s=0)
    release = trio.Event()

    async def holder() -> None:
        async with lane.turn():
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.01):
            async with lane.turn():
                raise AssertionError("the lane was held: this waiter must not get a turn")
        release.set()
    assert not lane.held

    with pytest.raises(ValueError, match="boom"):
        async with lane.turn():
            raise ValueError("boom")
    assert not lane.held
    with trio.fail_after(1):
        async with lane.turn():
            pass


@pytest.mark.parametrize("with_lane", [True, False], ids=["lane", "no-lane"])
async def test_a_single_request_is_answered_between_the_entries_of_a_batch(
    with_lane: bool,
) -> None:
    table = MethodTable()

    @table.method("slow")
    async def slow(params: dict[str, object]) -> str:
        spin(0.002)
        return "done"

    @table.method("ping")
    async def ping(params: dict[str, object]) -> str:
        return "pong"

    lane = WorkLane(slice_s=0.001, light_wait_s=PATIENT)
    dispatcher = Dispatcher(table, Limits(), lane=lane if with_lane else None)
    batch = [{"jsonrpc": "2.0", "id": n, "method": "slow", "params": {}} for n in range(30)]
    single = {"jsonrpc": "2.0", "id": "p", "method": "ping", "params": {}}
    finished: list[str] = []

    async def run_batch() -> None:
        reply = json.loads(await dispatcher.handle_body(json.dumps(batch).encode()) or b"")
        assert [entry["result"] for entry in reply] == ["done"] * 30
        finished.append("batch")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_batch)
        await trio.sleep(0.005)  # the batch is under way
        reply = json.loads(await dispatcher.handle_body(json.dumps(single).encode()) or b"")
        assert reply["result"] == "pong"
        finished.append("ping")
    assert finished == ["ping", "batch"]
    if with_lane:
        assert lane.turns >= 10  # 60 ms of entries in 1 ms slices
