"""Blocks, headers, receipts and the block environment. Imports node.core.{codec,crypto,merkle,
records,txs}.

The header of block h carries the state root AFTER block h (DESIGN.md decision 1). Its hash is
over the canonical encoding including the signature; the producer signs the encoding with an
empty signature, under the "header" domain and the chain id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import msgpack

from node.core import codec, merkle
from node.core.crypto import SigningKey, domain, signing_bytes, tagged_hash, verify_signature
from node.core.errors import InvariantViolation
from node.core.records import Event
from node.core.steps import Steps
from node.core.txs import tx_hash

GENESIS_PARENT = b"\x00" * 32
HEADER_DOMAIN = domain("header")
HEADER_HASH_DOMAIN = domain("header-hash")
MAX_BLOCK_TXS = 20_000


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockHeader:
    TAG: ClassVar[int] = 0x40
    chain_id: bytes
    height: int
    parent_hash: bytes
    time_ms: int
    tx_root: bytes
    state_root: bytes
    producer: bytes
    signature: bytes  # b"" while unsigned


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    TAG: ClassVar[int] = 0x41
    header: BlockHeader
    txs: tuple[bytes, ...]  # canonical signed tx bytes, in execution order


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    TAG: ClassVar[int] = 0x42
    tx_hash: bytes
    code: int  # 0 = applied, else a Reject code (nothing changed)
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockReceipts:
    """Per-tx receipts plus the begin/end-block events (funding, triggers, liquidations)."""

    TAG: ClassVar[int] = 0x43
    receipts: tuple[Receipt, ...]
    block_events: tuple[Event, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackNotice:
    """The operator's signed word that the chain was rolled back: followers check it against
    the genesis operator key, roll back to `to_height` (if they hold the reverted block) and
    follow the new chain from there."""

    TAG: ClassVar[int] = 0x44
    chain_id: bytes
    fork_id: int
    from_height: int  # the reverted head
    to_height: int  # the chain resumes on this block ...
    target_hash: bytes  # ... whose header hash is this
    reverted_hash: bytes  # header hash of the first reverted block (to_height + 1)
    reason: bytes
    operator: bytes
    signature: bytes  # b"" while unsigned


ROLLBACK_DOMAIN = domain("rollback")


def sign_notice(notice: RollbackNotice, key: SigningKey) -> RollbackNotice:
    unsigned = dataclasses.replace(notice, operator=key.public_key, signature=b"")
    message = signing_bytes(ROLLBACK_DOMAIN, unsigned.chain_id, codec.encode(unsigned))
    return dataclasses.replace(unsigned, signature=key.sign(message))


def verify_notice(notice: RollbackNotice, operator_key: bytes) -> bool:
    unsigned = dataclasses.replace(notice, signature=b"")
    message = signing_bytes(ROLLBACK_DOMAIN, notice.chain_id, codec.encode(unsigned))
    return notice.operator == operator_key and verify_signature(
        operator_key, notice.signature, message
    )


def encode_notice(notice: RollbackNotice) -> bytes:
    return codec.encode(notice)


def decode_notice(data: bytes) -> RollbackNotice:
    return codec.decode(data, RollbackNotice)


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockEnv:
    chain_id: bytes
    height: int
    time_ms: int


def header_hash(header: BlockHeader) -> bytes:
    return tagged_hash(HEADER_HASH_DOMAIN, codec.encode(header))


def _header_message(header: BlockHeader) -> bytes:
    unsigned = dataclasses.replace(header, signature=b"")
    return signing_bytes(HEADER_DOMAIN, header.chain_id, codec.encode(unsigned))


def sign_header(header: BlockHeader, key: SigningKey) -> BlockHeader:
    unsigned = dataclasses.replace(header, producer=key.public_key, signature=b"")
    return dataclasses.replace(unsigned, signature=key.sign(_header_message(unsigned)))


def verify_header_signature(header: BlockHeader, producer_key: bytes) -> bool:
    return header.producer == producer_key and verify_signature(
        producer_key, header.signature, _header_message(header)
    )


def tx_root(txs: Sequence[bytes]) -> bytes:
    """Merkle root over (index -> tx hash): commits to the txs and their order."""
    return merkle.reference_root((i.to_bytes(4, "big"), tx_hash(tx)) for i, tx in enumerate(txs))


TX_ROOT_STEP = 512  # txs hashed between two yields of tx_root_steps


def tx_root_steps(txs: Sequence[bytes]) -> Steps[bytes]:
    """tx_root as steps: the leaves TX_ROOT_STEP txs a step, then the tree in one (~6 ms for
    6,700 txs, against ~20 ms for the whole root at once)."""
    keys: list[int] = []
    leaves: list[bytes] = []
    for start in range(0, len(txs), TX_ROOT_STEP):
        if start:
            yield None
        chunk_keys, chunk_leaves = merkle.sorted_leaves(
            (i.to_bytes(4, "big"), tx_hash(txs[i]))
            for i in range(start, min(start + TX_ROOT_STEP, len(txs)))
        )
        keys += chunk_keys
        leaves += chunk_leaves
    yield None
    # The chunks are sorted each; their union is sorted once (indexes are unique keys).
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return merkle.root_from_sorted([keys[i] for i in order], [leaves[i] for i in order])


def encode_block(block: Block) -> bytes:
    return codec.encode(block)


def decode_block(data: bytes) -> Block:
    return codec.decode(data, Block, max_input=64 << 20)


def encode_receipts(receipts: BlockReceipts) -> bytes:
    return codec.encode(receipts)


RECEIPT_STEP = 128  # receipts encoded between two yields of encode_receipts_steps


def encode_receipts_steps(receipts: BlockReceipts) -> Steps[bytes]:
    """encode_receipts in steps of RECEIPT_STEP receipts, the same bytes: a msgpack array is
    its header followed by its items' encodings, so the receipts are encoded one by one and
    spliced into the encoding of the record with no receipts (tests/core: equal bytes)."""
    parts = []
    for position, receipt in enumerate(receipts.receipts):
        parts.append(codec.encode(receipt))
        if position % RECEIPT_STEP == RECEIPT_STEP - 1:
            yield None
    empty = codec.encode(BlockReceipts(receipts=(), block_events=receipts.block_events))
    # [TAG, [], [events...]]: a 3-array header, the tag, then the empty array (0x90).
    at = 1 + len(codec.pack(BlockReceipts.TAG))
    if empty[at] != 0x90:
        raise InvariantViolation("BlockReceipts is not [tag, receipts, block_events]")
    header: bytes = msgpack.Packer().pack_array_header(len(parts))
    return empty[:at] + header + b"".join(parts) + empty[at + 1 :]


def decode_receipts(data: bytes) -> BlockReceipts:
    return codec.decode(data, BlockReceipts, max_input=64 << 20)
