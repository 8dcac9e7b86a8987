"""PERSISTENCE: the versioned Merkle state store on LevelDB (plyvel).

May import node.core.{codec,crypto,merkle,errors} and plyvel; nothing from chain, rpc or cli.
"""

from node.store.backend import Backend, LevelDBBackend, MemoryBackend
from node.store.errors import (
    HeightUnavailable,
    ImportRefused,
    StaleWriter,
    StoreCorrupted,
    StoreError,
    StoreLocked,
)
from node.store.versioned import (
    Checkpoint,
    Fork,
    Maintenance,
    RollbackResult,
    Staged,
    VersionedStore,
)

__all__ = [
    "Backend",
    "Checkpoint",
    "Fork",
    "HeightUnavailable",
    "ImportRefused",
    "LevelDBBackend",
    "Maintenance",
    "MemoryBackend",
    "RollbackResult",
    "Staged",
    "StaleWriter",
    "StoreCorrupted",
    "StoreError",
    "StoreLocked",
    "VersionedStore",
]
