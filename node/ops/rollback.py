"""Operator rollback and restore. Imports node.core, node.store, node.chain.producer
(commit_block), node.ops.{incident,verify}.

A rollback to height H (or to a checkpoint's height):
1. `plan_rollback`: what would be undone (blocks, txs, fills, liquidations, deposits,
   withdrawals, accounts touched) — `--dry-run` prints it and changes nothing.
2. `store.rollback_to(H, check_flat=True)`: the reverted heights move to an archive under a new
   fork id, flat rows written around the writer are restored from the history, and the restored
   root must equal the root in the header of block H.
3. The recovery block H+1, produced and signed like any block: the operator's `Recovery` tx
   (cancel every resting order except stop-loss / take-profit, every market CANCEL_ONLY), then
   every deposit of the reverted blocks re-applied from its exact signed bytes (no deposit is
   lost). In the same batch, the operator-signed RollbackNotice for followers is indexed.

Every step is re-entrant after kill -9: the store completes an interrupted rollback on open,
and `pending_recovery` finds a rollback whose recovery block is missing (the node completes it
at startup, or `perpchain rollback --resume` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node.chain.producer import commit_block
from node.core.blocks import (
    BlockEnv,
    BlockHeader,
    BlockReceipts,
    RollbackNotice,
    header_hash,
    sign_notice,
)
from node.core.crypto import SigningKey
from node.core.errors import Reject
from node.core.genesis import Genesis
from node.core.transition import apply_block
from node.core.txs import Recovery, decode_tx, sign_tx
from node.core.view import Overlay, get_nonces
from node.ops.incident import BlockSummary, fork_blocks, store_blocks, summarize_blocks
from node.store import Fork, HeightUnavailable, VersionedStore, blocks_db


class RollbackError(ValueError):
    """The rollback cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class RollbackPlan:
    target: int
    head: int
    target_root: bytes
    checkpoint: str | None
    summary: BlockSummary

    def to_json(self) -> dict[str, Any]:
        return {
            "to_height": self.target,
            "from_height": self.head,
            "checkpoint": self.checkpoint,
            "target_state_root": self.target_root.hex(),
            "undone": self.summary.to_json(),
        }

    def text(self) -> str:
        where = f" (checkpoint {self.checkpoint})" if self.checkpoint else ""
        return (
            f"rollback from height {self.head} to {self.target}{where}, "
            f"state root {self.target_root.hex()}\nwould undo:\n{self.summary.text()}"
        )


@dataclass(frozen=True)
class RollbackOutcome:
    fork_id: int
    from_height: int
    to_height: int
    repaired_keys: int
    recovery: BlockHeader
    deposits_reapplied: int
    notice: RollbackNotice

    def to_json(self) -> dict[str, Any]:
        return {
            "fork_id": self.fork_id,
            "from_height": self.from_height,
            "to_height": self.to_height,
            "repaired_keys": self.repaired_keys,
            "recovery_height": self.recovery.height,
            "recovery_state_root": self.recovery.state_root.hex(),
            "deposits_reapplied": self.deposits_reapplied,
        }

    def text(self) -> str:
        repaired = (
            f"; {self.repaired_keys} rows written around the writer restored from the history"
            if self.repaired_keys
            else ""
        )
        return (
            f"rolled back {self.from_height} -> {self.to_height} (fork {self.fork_id}{repaired})\n"
            f"recovery block {self.recovery.height}: resting orders cancelled except TP/SL, "
            f"markets CANCEL_ONLY, {self.deposits_reapplied} deposits re-applied; "
            f"root {self.recovery.state_root.hex()}\n"
            f"refund list: perpchain report compensation --fork {self.fork_id}"
        )


def plan_rollback(
    store: VersionedStore, *, to_height: int | None = None, to_checkpoint: str | None = None
) -> RollbackPlan:
    if (to_height is None) == (to_checkpoint is None):
        raise RollbackError("give exactly one of a height or a checkpoint")
    if to_checkpoint is not None:
        try:
            target = store.get_checkpoint(to_checkpoint).height
        except KeyError:
            names = ", ".join(c.name for c in store.checkpoints()) or "none"
            raise RollbackError(f"no checkpoint {to_checkpoint!r} (checkpoints: {names})") from None
    else:
        if to_height is None:
            raise RuntimeError("rollback needs a height or a checkpoint")
        target = to_height
    if not 0 <= target < store.height:
        raise RollbackError(f"height {target} is not below the head {store.height}")
    try:
        root = store.root(target)
    except HeightUnavailable as error:
        raise RollbackError(f"cannot roll back to {target}: {error}") from None
    summary = summarize_blocks(store_blocks(store, target + 1, store.height))
    return RollbackPlan(target, store.height, root, to_checkpoint, summary)


def apply_rollback(
    store: VersionedStore,
    genesis: Genesis,
    plan: RollbackPlan,
    *,
    producer: SigningKey,
    operator: SigningKey,
    time_ms: int,
    reason: str,
) -> RollbackOutcome:
    """Roll back to plan.target and commit the recovery block (module docstring)."""
    _check_keys(genesis, producer, operator)
    if store.height != plan.head:
        raise RollbackError(f"the head moved from {plan.head} to {store.height}; plan again")
    target = blocks_db.get_block(store, plan.target)
    if target is None:
        raise RollbackError(f"no block record at height {plan.target}")
    result = store.rollback_to(plan.target, reason=reason or "operator rollback", check_flat=True)
    if store.root() != target.header.state_root:
        raise RollbackError(
            f"the restored root {store.root().hex()} is not the root of block {plan.target} "
            f"{target.header.state_root.hex()}"
        )
    fork = store.forks()[-1]
    header, deposits, notice = _recovery_block(store, genesis, fork, producer, operator, time_ms)
    return RollbackOutcome(
        result.fork_id,
        result.from_height,
        result.to_height,
        len(result.repaired),
        header,
        deposits,
        notice,
    )


def pending_recovery(store: VersionedStore) -> Fork | None:
    """The latest rollback if its recovery block was never committed (a crash in between)."""
    forks = store.forks()
    if forks and forks[-1].to_height == store.height and notice_of(store, forks[-1]) is None:
        return forks[-1]
    return None


def complete_recovery(
    store: VersionedStore,
    genesis: Genesis,
    *,
    producer: SigningKey,
    operator: SigningKey,
    time_ms: int,
) -> RollbackOutcome | None:
    """Commit the missing recovery block of an interrupted rollback (None if none is due)."""
    _check_keys(genesis, producer, operator)
    fork = pending_recovery(store)
    if fork is None:
        return None
    header, deposits, notice = _recovery_block(store, genesis, fork, producer, operator, time_ms)
    return RollbackOutcome(
        fork.fork_id, fork.from_height, fork.to_height, 0, header, deposits, notice
    )


def notice_of(store: VersionedStore, fork: Fork) -> RollbackNotice | None:
    return blocks_db.get_notice(store, fork.fork_id)


def rollbacks(store: VersionedStore) -> list[tuple[Fork, RollbackNotice | None]]:
    return [(fork, notice_of(store, fork)) for fork in store.forks()]


def _check_keys(genesis: Genesis, producer: SigningKey, operator: SigningKey) -> None:
    if producer.public_key != genesis.producer_key:
        raise RollbackError("the producer key does not match the genesis producer")
    if operator.public_key != genesis.operator_key:
        raise RollbackError("the operator key does not match the genesis operator")


def _recovery_block(
    store: VersionedStore,
    genesis: Genesis,
    fork: Fork,
    producer: SigningKey,
    operator: SigningKey,
    time_ms: int,
) -> tuple[BlockHeader, int, RollbackNotice]:
    blocks = list(fork_blocks(store, fork))
    summary = summarize_blocks(blocks)
    head = blocks_db.get_block(store, store.height)
    if head is None:
        raise RollbackError(f"no block record at the restored height {store.height}")
    chain_id = genesis.chain_id
    nonce = get_nonces(Overlay(store), operator.public_key).base_nonce
    recovery = sign_tx(Recovery(nonce=nonce), operator, chain_id)
    deposits = [decode_tx(item.raw_tx) for item in summary.deposits]
    txs = [recovery, *deposits]
    env = BlockEnv(
        chain_id=chain_id, height=store.height + 1, time_ms=max(time_ms, head.header.time_ms + 1)
    )
    result = apply_block(store, env, txs)
    codes = [r.code for r in result.receipts]
    if codes[0] != 0:
        raise RollbackError(f"the recovery tx was rejected: {Reject(codes[0]).name}")
    refused = [
        (d.tx_hash.hex(), Reject(c).name) for d, c in zip(deposits, codes[1:], strict=True) if c
    ]
    if refused:
        raise RollbackError(f"deposits of the reverted blocks would not re-apply: {refused}")
    notice = sign_notice(
        RollbackNotice(
            chain_id=chain_id,
            fork_id=fork.fork_id,
            from_height=fork.from_height,
            to_height=fork.to_height,
            target_hash=header_hash(head.header),
            reverted_hash=header_hash(blocks[0][0].header) if blocks else b"",
            reason=fork.reason.encode()[:256],
            operator=b"",
            signature=b"",
        ),
        operator,
    )
    receipts = BlockReceipts(receipts=result.receipts, block_events=result.events)
    header = commit_block(
        store,
        producer,
        head.header,
        env,
        result.writes,
        [tx.raw for tx in txs],
        receipts,
        extra_index=blocks_db.notice_index(notice),
    )
    return header, len(deposits), notice
