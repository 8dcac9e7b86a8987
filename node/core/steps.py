"""Step generators: a long pure computation written as a generator that yields between its
steps and returns its result, so a caller on an event loop can interleave other work between
the steps without threads (the producer's apply_block_steps and stage_steps). Imports nothing.

A step may also yield an `Offload`: blocking work that releases the GIL (a LevelDB batch
write). `drive` runs it in place; an event-loop driver may run it in a worker thread. The
generator resumes with its result, or with its exception thrown in.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Offload:
    work: Callable[[], Any]


Steps = Generator[Offload | None, Any, R]


def drive(steps: Steps[R]) -> R:
    """Run a step generator to its return value at once (offloaded work in place)."""
    sent: Any = None
    error: BaseException | None = None
    while True:
        try:
            if error is not None:
                item = steps.throw(error)
            else:
                item = steps.send(sent)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        sent, error = None, None
        if isinstance(item, Offload):
            try:
                sent = item.work()
            except BaseException as failure:  # noqa: BLE001 - thrown into the generator
                error = failure
