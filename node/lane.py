"""The work lane: heavy work on the event loop takes turns, and runs after the light work.

Imports trio only.

One event loop serves reads and computes blocks. Trio runs every runnable task once per
scheduler pass, so a read, which needs about 14 passes through hypercorn and our handler,
used to wait in each of them for whatever else had work: a slice of the block being computed
and one entry of each tx_submit batch in flight, about 1 ms a pass under the bench's flood, so
10-15 ms a read at the median. The heavy work (the producer's block steps, the entries of
JSON-RPC batches) now goes through one `WorkLane`:

- one holder at a time: a heavy unit is at most one per pass, never one per task;
- before each unit the holder waits until no other task is runnable and no socket is ready
  (trio's own idle detection, `trio.testing.wait_all_tasks_blocked`), at most `light_wait_s`:
  a read that arrives runs all its passes back to back, and heavy work still gets at least
  `slice_s / (slice_s + light_wait_s)` of the loop under any read load;
- a unit runs until `slice_s` has passed (the holder checks the deadline `turn` yields);
- `turn(first=True)` (the producer) goes before the batches waiting, so blocks keep their
  pace whatever the intake; batches take the turns in between, in arrival order.

A holder must not wait, inside its turn, for something that needs another holder's turn (the
producer's lock, say): the admin listener takes no lane for that reason.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

SLICE_S = 0.001  # the longest a unit of heavy work keeps the loop
LIGHT_WAIT_S = 0.002  # the longest a holder waits for the light work before its unit


class WorkLane:
    """Turns for heavy work on one event loop (see the module docstring)."""

    def __init__(self, *, slice_s: float = SLICE_S, light_wait_s: float = LIGHT_WAIT_S) -> None:
        if slice_s <= 0 or light_wait_s < 0:
            raise ValueError(f"WorkLane(slice_s={slice_s}, light_wait_s={light_wait_s})")
        self.slice_s = slice_s
        self.light_wait_s = light_wait_s
        self._held = False
        # Waiters: [0] the producer's turn (first=True), [1] every other holder. A release hands
        # the lane straight to the next waiter, so a holder never races another for it.
        self._waiting = (trio.lowlevel.ParkingLot(), trio.lowlevel.ParkingLot())
        self.turns = 0  # turns given (tests read it)

    @property
    def held(self) -> bool:
        return self._held

    @asynccontextmanager
    async def turn(self, *, first: bool = False) -> AsyncIterator[float]:
        """Hold the lane for one unit; yields the unit's deadline (time.perf_counter)."""
        if self._held:
            await self._waiting[0 if first else 1].park()  # woken holding the lane
        else:
            self._held = True
        try:
            if self.light_wait_s > 0:
                with trio.move_on_after(self.light_wait_s):
                    await trio.testing.wait_all_tasks_blocked()
            else:
                await trio.lowlevel.checkpoint()
            self.turns += 1
            yield time.perf_counter() + self.slice_s
        finally:
            self._release()

    def _release(self) -> None:
        for lot in self._waiting:
            if lot:
                lot.unpark()
                return
        self._held = False
