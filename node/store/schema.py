"""Physical key layout of the store: every LevelDB key is built here. Imports nothing from node.

- `m` + name: meta. `latest` = (height, root), written last in every commit batch; `format`;
  `epoch` (fencing); `floor` (last prune point, or the base height of an imported state);
  `rollback` (progress marker); `fork_seq`; `import` (sealed msgpack [height, root]: a state
  import in progress, present only until its last batch, which writes `latest`);
  `maintenance` (sealed msgpack [reason, checkpoint, epoch, height]: a maintenance window is
  open; written in the batch of the block that begins it, with its pin and epoch, and removed
  by `maintenance end` or a rollback, so a restarted node comes back in maintenance).
- `f` + key: the flat latest state, the current value of each key.
- `v` + len(key):u16 + key + ~height:u64: a versioned value, `\\x01` + value_hash[:8] + value,
  or `\\x00` for a deletion.
- `d` + height:u64: the height's diff, 8 check bytes (sha256) + msgpack
  [[ns, key, flag, old], ...] sorted, old values at
  the previous retained height (flag 0: the key was absent; ns 0 state, 1 index).
- `r` + height:u64: the state root after that height (32 bytes), sealed. A height is retained
  iff this row exists.
- `c` + name: a checkpoint pin, sealed msgpack [height, root, reason].
- `b` + height:u64 + name: a per-height record (block, receipts, ...), sealed.
- `u` + key: the non-Merkleized index (tx hash -> location, ...), sealed, reverted through the
  diffs (which hold the unsealed values).
- `x` + fork:u64 + height:u64 + name: the archive of rolled-back heights: their sealed records
  plus `\\x00diff` and `\\x00root` (sealed too).
- `k` + fork:u64: a fork description, sealed msgpack [from_height, to_height, reason].

Sealed = 8 check bytes (the SHA-256 of the rest) + the bytes: roots and every row no Merkle
root covers (the diff too), so damaged bytes fail loudly when read and in `verify_history`.

Heights are big-endian so LevelDB's byte order is height order; `~height` (bitwise not) makes
the newest version of a key sort first, so a read at height h is one seek. The flat table and
the versioned table hold the same bytes for the head; the Merkle tree is kept in memory in
flat arrays (node/store/flattree.py), saved outside these rows at a clean close
(`PERPCHAIN-SEAL`, node/store/backend.py) and otherwise rebuilt from the flat table on open
(and checked against `latest` and `r`+height).
"""

from __future__ import annotations

import struct

META_LATEST = b"mlatest"
META_FORMAT = b"mformat"
META_EPOCH = b"mepoch"
META_FLOOR = b"mfloor"
META_ROLLBACK = b"mrollback"
META_FORK_SEQ = b"mfork_seq"
META_IMPORT = b"mimport"
META_MAINTENANCE = b"mmaintenance"
FORMAT = b"perpchain-store/3"  # 2: diffs carry check bytes; 3: every row no root covers does

FLAT = b"f"
VERSIONED = b"v"
DIFF = b"d"
ROOT = b"r"
CHECKPOINT = b"c"
RECORD = b"b"
INDEX = b"u"
ARCHIVE = b"x"
FORK = b"k"

NS_STATE = 0  # a diff entry of the Merkleized state
NS_INDEX = 1  # a diff entry of the non-Merkleized index

ARCHIVED_DIFF = b"\x00diff"
ARCHIVED_ROOT = b"\x00root"
ARCHIVED_HEAD = (
    b"\x00head"  # under the reverted head: [[key, value | None]] of every key it changed
)

_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")
U64_MASK = (1 << 64) - 1


def u64(value: int) -> bytes:
    return _U64.pack(value)


def read_u64(data: bytes, offset: int = 0) -> int:
    return int(_U64.unpack_from(data, offset)[0])


def flat_key(key: bytes) -> bytes:
    return FLAT + key


def index_key(key: bytes) -> bytes:
    return INDEX + key


def versioned_prefix(key: bytes) -> bytes:
    return VERSIONED + _U16.pack(len(key)) + key


def versioned_key(key: bytes, height: int) -> bytes:
    return VERSIONED + _U16.pack(len(key)) + key + _U64.pack(U64_MASK ^ height)


def versioned_height(physical: bytes) -> int:
    return U64_MASK ^ read_u64(physical, len(physical) - 8)


def diff_key(height: int) -> bytes:
    return DIFF + _U64.pack(height)


def root_key(height: int) -> bytes:
    return ROOT + _U64.pack(height)


def checkpoint_key(name: bytes) -> bytes:
    return CHECKPOINT + name


def record_prefix(height: int) -> bytes:
    return RECORD + _U64.pack(height)


def record_key(height: int, name: bytes) -> bytes:
    return RECORD + _U64.pack(height) + name


def archive_key(fork: int, height: int, name: bytes) -> bytes:
    return ARCHIVE + _U64.pack(fork) + _U64.pack(height) + name


def archive_prefix(fork: int) -> bytes:
    return ARCHIVE + _U64.pack(fork)


def fork_key(fork: int) -> bytes:
    return FORK + _U64.pack(fork)


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
