"""Step generators: a long pure computation written as a generator that yields between its
steps and returns its result, so a caller on an event loop can interleave other work between
the steps without threads (the producer's apply_block_steps and stage_steps). Imports nothing.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

R = TypeVar("R")

Steps = Generator[None, None, R]


def drive(steps: Steps[R]) -> R:
    """Run a step generator to its return value at once."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
