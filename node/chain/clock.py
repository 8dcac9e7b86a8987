"""Time for the runtime: whatever reads time takes a `Clock` (STYLE.md section 8).

- `SystemClock`: wall-clock milliseconds since the Unix epoch; sleeps with trio.
- `ManualClock`: time moves only when a test calls `advance` or `set_ms`; sleepers wake then.

Imports trio and the stdlib only.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import trio

# SystemClock re-reads the wall clock at least this often while sleeping, so a step of the
# system time (NTP, operator) delays a wake-up by at most this much.
_MAX_SLEEP_CHUNK_MS = 1_000


@runtime_checkable
class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...

    async def sleep_until_ms(self, deadline_ms: int) -> None:
        """Return once now_ms() >= deadline_ms (at once if it already is)."""
        ...


class SystemClock:
    """The machine's wall clock. Do not combine with trio's autojump_clock: use ManualClock.

    The wall clock can step backwards; callers that need increasing block times enforce that
    themselves (the producer uses max(parent time + 1, now)).
    """

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until_ms(self, deadline_ms: int) -> None:
        # Sleep on trio's monotonic clock, then re-check the wall clock: a backward step of the
        # system time makes us sleep again instead of waking early.
        while (remaining_ms := deadline_ms - self.now_ms()) > 0:
            await trio.sleep(min(remaining_ms, _MAX_SLEEP_CHUNK_MS) / 1000)
        await trio.lowlevel.checkpoint()


class ManualClock:
    """A clock for tests and simulations: starts at `start_ms` and moves only when told."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms
        self._sleepers: list[tuple[int, trio.Event]] = []

    def now_ms(self) -> int:
        return self._now_ms

    @property
    def sleepers(self) -> int:
        """How many tasks are blocked in sleep_until_ms."""
        return len(self._sleepers)

    async def sleep_until_ms(self, deadline_ms: int) -> None:
        if deadline_ms <= self._now_ms:
            await trio.lowlevel.checkpoint()
            return
        entry = (deadline_ms, trio.Event())
        self._sleepers.append(entry)
        try:
            await entry[1].wait()
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def advance(self, delta_ms: int) -> None:
        """Move time forward by `delta_ms` >= 0 and wake every sleeper whose deadline passed."""
        if delta_ms < 0:
            raise ValueError(f"delta_ms={delta_ms} must be >= 0 (use set_ms to step back)")
        self.set_ms(self._now_ms + delta_ms)

    def set_ms(self, now_ms: int) -> None:
        """Jump to `now_ms`, backwards too (to test a wall-clock step)."""
        self._now_ms = now_ms
        due = [entry for entry in self._sleepers if entry[0] <= now_ms]
        for entry in due:
            self._sleepers.remove(entry)
            entry[1].set()
