"""Errors of the store layer. Imports node.core.errors only."""

from __future__ import annotations

from node.core.errors import PerpError


class StoreError(PerpError):
    """Base of every error the store raises on purpose."""


class StoreLocked(StoreError):
    """Another process (or another open handle) holds the LevelDB lock."""


class HeightUnavailable(StoreError, ValueError):
    """A height that was never committed, was rolled back, or was pruned."""


class StoreCorrupted(StoreError):
    """Stored data does not hash to the recorded roots: tampering, disk fault or a bug."""


class StaleWriter(StoreError):
    """A commit carried a fencing epoch older than the store's: a stale writer was fenced off."""


class ImportRefused(StoreError, ValueError):
    """A state import was refused: the store is not empty, the keys are not strictly ascending,
    or the pairs do not hash to the expected root. Nothing of it is left in the store."""
