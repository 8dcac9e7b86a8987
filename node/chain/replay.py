"""Re-execution of blocks received from elsewhere: the follower's sync and the operator's replay
verification share it. Imports node.core and node.store.

A block is accepted only if its header is signed by the genesis producer, belongs to this chain,
extends the head (height, parent hash, time), commits to its txs (tx root), and re-executing its
txs with the same pure core over our own state gives exactly the state root it carries. The
state, block record and indexes are then committed in one batch, as the producer does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from node.core.blocks import (
    GENESIS_PARENT,
    Block,
    BlockEnv,
    BlockHeader,
    BlockReceipts,
    header_hash,
    tx_root,
    verify_header_signature,
)
from node.core.errors import BlockInvalid, InvariantViolation
from node.core.genesis import Genesis, genesis_writes
from node.core.queries import describe_difference
from node.core.records import EventKind
from node.core.transition import BlockResult, apply_block_bytes
from node.log import log_event, short_hex
from node.store import VersionedStore, blocks_db

MAX_LISTED_DIFFERENCES = 20


class InvalidBlock(Exception):
    """A block that must not be applied; `reason` is one line, `details` the decoded keys."""

    def __init__(self, height: int, reason: str, details: Iterable[str] = ()) -> None:
        super().__init__(reason)
        self.height = height
        self.reason = reason
        self.details = list(details)


CONSENSUS_PROPOSER_BYTES = 20  # a CometBFT validator address (never a 32-byte Ed25519 key)


def check_header(
    genesis: Genesis, parent: BlockHeader | None, block: Block, *, consensus: bool = False
) -> None:
    """Everything about a block that can be checked without executing it. `consensus`: a
    block committed under CometBFT (node/abci), final by the validators' commit: its header
    is unsigned and names the proposer's address (that commit is CometBFT's to check; a
    replay checks that the state follows from the blocks)."""
    header = block.header
    height = header.height
    if consensus:
        if header.signature or len(header.producer) != CONSENSUS_PROPOSER_BYTES:
            raise InvalidBlock(
                height,
                f"block {height} is not a consensus block: a signed header or a producer of "
                f"{len(header.producer)} bytes",
            )
    elif not verify_header_signature(header, genesis.producer_key):
        raise InvalidBlock(
            height,
            f"bad producer signature at height {height}: not signed by the genesis producer "
            f"{genesis.producer_key.hex()[:16]}",
        )
    if header.chain_id != genesis.chain_id:
        raise InvalidBlock(
            height, f"block {height} is of chain {header.chain_id!r}, not {genesis.chain_id!r}"
        )
    expected_height = 0 if parent is None else parent.height + 1
    if height != expected_height:
        raise InvalidBlock(height, f"block height {height} where {expected_height} was expected")
    expected_parent = GENESIS_PARENT if parent is None else header_hash(parent)
    if header.parent_hash != expected_parent:
        raise InvalidBlock(
            height,
            f"wrong parent at height {height}: header {header.parent_hash.hex()}, "
            f"our head {expected_parent.hex()}",
        )
    if parent is not None and header.time_ms <= parent.time_ms:
        raise InvalidBlock(
            height, f"block time {header.time_ms} at height {height} does not increase"
        )
    computed = tx_root(block.txs)
    if header.tx_root != computed:
        raise InvalidBlock(
            height,
            f"tx root mismatch at height {height}: header {header.tx_root.hex()}, "
            f"computed {computed.hex()}",
        )


def state_root_mismatch(height: int, header_root: bytes, computed: bytes) -> str:
    return (
        f"invalid state root at height {height}: header {header_root.hex()}, "
        f"computed {computed.hex()}"
    )


@dataclass(frozen=True)
class Executed:
    """A block checked and re-executed over the head, not yet committed."""

    block: Block
    writes: dict[bytes, bytes | None]
    receipts: BlockReceipts
    result: BlockResult | None  # None for block 0 (genesis)


def execute_block(
    store: VersionedStore,
    genesis: Genesis,
    parent: BlockHeader | None,
    block: Block,
    *,
    consensus: bool = False,
) -> Executed:
    """Check `block` against `parent` (the store's head) and re-execute it. Only reads the
    store, so it may run in a worker thread while the event loop serves reads. `consensus`:
    see check_header."""
    check_header(genesis, parent, block, consensus=consensus)
    header = block.header
    height = header.height
    if parent is None:
        if block.txs:
            raise InvalidBlock(0, "the genesis block carries transactions")
        empty = BlockReceipts(receipts=(), block_events=())
        return Executed(block, dict(genesis_writes(genesis)), empty, None)
    env = BlockEnv(chain_id=header.chain_id, height=height, time_ms=header.time_ms)
    try:
        result = apply_block_bytes(store, env, block.txs, verify_signatures=True)
    except InvariantViolation as violation:
        raise InvalidBlock(
            height, f"invariant violated re-executing block {height}: {violation}"
        ) from None
    except BlockInvalid as invalid:
        raise InvalidBlock(height, f"block {height} does not apply: {invalid}") from None
    receipts = BlockReceipts(receipts=result.receipts, block_events=result.events)
    return Executed(block, dict(result.writes), receipts, result)


def commit_executed(
    store: VersionedStore,
    executed: Executed,
    *,
    explain: Callable[[int, dict[bytes, bytes | None]], list[str]] | None = None,
    extra_index: dict[bytes, bytes | None] | None = None,
) -> BlockHeader:
    """Stage the re-executed writes; commit state, block and indexes in one batch if the root
    equals the header's, else raise InvalidBlock (nothing written). On a mismatch
    `explain(height, writes)` may name the keys whose values differ from the block's state.
    `extra_index`: entries the source wrote with this block (a rollback notice)."""
    header = executed.block.header
    height = header.height
    tx_hashes = [r.tx_hash for r in executed.receipts.receipts]
    index = blocks_db.tx_index(height, tx_hashes) | (extra_index or {})
    staged = store.stage(executed.writes, index=index)
    if staged.root != header.state_root:
        details = explain(height, executed.writes) if explain is not None else []
        raise InvalidBlock(
            height, state_root_mismatch(height, header.state_root, staged.root), details
        )
    store.commit_staged(
        staged,
        records=blocks_db.block_records(executed.block, executed.receipts),
        index=blocks_db.hash_index(executed.block),
    )
    return header


def log_block_alerts(logger: logging.Logger, height: int, result: BlockResult | None) -> None:
    """What an operator must see of a committed block, logged by the producer and by every
    follower alike: each TX_FAILED tx (an error nothing foresaw, named with its hash: a bug
    to fix, though the chain went on), each market the breaker closed, each deleveraging."""
    if result is None:
        return
    for tx_hash, error in result.failures:
        log_event(
            logger, "tx.failed", level=logging.ERROR, height=height, tx=tx_hash.hex(), error=error
        )
    for item in result.events:
        if item.kind == EventKind.BREAKER:
            log_event(
                logger,
                "market.breaker_tripped",
                level=logging.CRITICAL,
                height=height,
                market=item.market_id,
                liquidated_quote=item.amount_quote,
                oracle_move_ppm=item.extra,
            )
        elif item.kind == EventKind.DELEVERAGED:
            log_event(
                logger,
                "account.deleveraged",
                level=logging.WARNING,
                height=height,
                market=item.market_id,
                bankrupt=short_hex(item.account),
                counterparty=short_hex(item.counterparty),
                size=item.size_atoms,
                paid_quote=item.amount_quote,
            )


def apply_verified_block(
    store: VersionedStore, genesis: Genesis, parent: BlockHeader | None, block: Block
) -> BlockHeader:
    """execute_block then commit_executed, on one thread."""
    return commit_executed(store, execute_block(store, genesis, parent, block))


def describe_against(
    keys: list[bytes],
    ours: Callable[[bytes], bytes | None],
    theirs: Callable[[bytes], bytes | None],
) -> list[str]:
    """The first differing keys, decoded: `market #1 BTC-USD-PERP funding_index_quote: stored 0,
    replayed 18233` (stored = theirs, replayed = ours)."""
    out: list[str] = []
    for key in keys:
        mine, other = ours(key), theirs(key)
        if mine != other:
            out.append(describe_difference(key, other, mine))
            if len(out) >= MAX_LISTED_DIFFERENCES:
                break
    return out
