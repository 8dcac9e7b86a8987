"""PERSISTENCE: the versioned Merkle state store on LevelDB (plyvel).

May import node.core.{codec,crypto,merkle,errors} and plyvel; nothing from chain, rpc or cli.
"""

from node.store.backend import Backend, LevelDBBackend, MemoryBackend
from node.store.errors import (
    HeightUnavailable,
    StaleWriter,
    StoreCorrupted,
    StoreError,
    StoreLocked,
)
from node.store.versioned import Fork, RollbackResult, VersionedStore

__all__ = [
    "Backend",
    "Fork",
    "HeightUnavailable",
    "LevelDBBackend",
    "MemoryBackend",
    "RollbackResult",
    "StaleWriter",
    "StoreCorrupted",
    "StoreError",
    "StoreLocked",
    "VersionedStore",
]
