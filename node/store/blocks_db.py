"""Blocks and receipts in the store: per-height records and a tx / block-hash index, written in
the same batch as the state (so a rollback reverts and archives them too). Imports
node.core.{blocks,codec} and node.store.versioned.

    record "block"     canonical Block (header + tx bytes)
    record "receipts"  canonical BlockReceipts
    index  b"t" + tx_hash     -> height:u64 + position:u32
    index  b"h" + block_hash  -> height:u64
    index  b"n" + fork_id     -> the operator-signed RollbackNotice of that rollback
"""

from __future__ import annotations

import struct

from node.core.blocks import (
    Block,
    BlockReceipts,
    RollbackNotice,
    decode_block,
    decode_notice,
    decode_receipts,
    encode_block,
    encode_notice,
    encode_receipts,
    encode_receipts_steps,
    header_hash,
)
from node.core.steps import Steps
from node.store.versioned import VersionedStore

BLOCK = "block"
RECEIPTS = "receipts"
# Under CometBFT (node/abci): msgpack [CometBFT block hash, proposer address] per height; its
# presence marks a chain whose headers are final by the validators' commit, not our signature.
ABCI = "abci"
_TX = b"t"
_HASH = b"h"
_NOTICE = b"n"
_LOCATION = struct.Struct(">QI")
_HEIGHT = struct.Struct(">Q")


def block_records(block: Block, receipts: BlockReceipts) -> dict[str | bytes, bytes]:
    return {BLOCK: encode_block(block), RECEIPTS: encode_receipts(receipts)}


def block_records_steps(block: Block, receipts: BlockReceipts) -> Steps[dict[str | bytes, bytes]]:
    """block_records with the receipts encoded in steps (blocks.encode_receipts_steps)."""
    encoded = yield from encode_receipts_steps(receipts)
    return {BLOCK: encode_block(block), RECEIPTS: encoded}


def tx_index(height: int, tx_hashes: list[bytes]) -> dict[bytes, bytes | None]:
    return {_TX + h: _LOCATION.pack(height, i) for i, h in enumerate(tx_hashes)}


def hash_index(block: Block) -> dict[bytes, bytes | None]:
    return {_HASH + header_hash(block.header): _HEIGHT.pack(block.header.height)}


def get_block(store: VersionedStore, height: int) -> Block | None:
    raw = store.record(height, BLOCK) if 0 <= height <= store.height else None
    return None if raw is None else decode_block(raw)


def get_receipts(store: VersionedStore, height: int) -> BlockReceipts | None:
    raw = store.record(height, RECEIPTS) if 0 <= height <= store.height else None
    return None if raw is None else decode_receipts(raw)


def height_of_hash(store: VersionedStore, block_hash: bytes) -> int | None:
    raw = store.index_get(_HASH + block_hash)
    return None if raw is None else int(_HEIGHT.unpack(raw)[0])


def locate_tx(store: VersionedStore, tx_hash: bytes) -> tuple[int, int] | None:
    raw = store.index_get(_TX + tx_hash)
    if raw is None:
        return None
    height, position = _LOCATION.unpack(raw)
    return int(height), int(position)


def notice_index(notice: RollbackNotice) -> dict[bytes, bytes | None]:
    return {_NOTICE + _HEIGHT.pack(notice.fork_id): encode_notice(notice)}


def get_notice(store: VersionedStore, fork_id: int) -> RollbackNotice | None:
    raw = store.index_get(_NOTICE + _HEIGHT.pack(fork_id))
    return None if raw is None else decode_notice(raw)


def notices(store: VersionedStore) -> list[RollbackNotice]:
    """Every rollback notice this node holds (its own rollbacks, or its source's), by fork id."""
    return [decode_notice(raw) for _, raw in store.index_scan(_NOTICE)]


def is_consensus_chain(store: VersionedStore, height: int) -> bool:
    """Whether the block at `height` was committed under CometBFT (it has an `abci` record)."""
    return store.record(height, ABCI) is not None
