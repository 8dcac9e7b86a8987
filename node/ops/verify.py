"""Replay verification: is the stored chain what its blocks say it is? Imports node.core,
node.store, node.chain.replay.

1. Rehash the flat state (what reads and the next block see) against the head's recorded root.
2. Rebuild the state of the starting height from the versioned history into a scratch store,
   check it against that height's recorded root, and re-execute every stored block after it
   with the same core (signatures, tx roots, invariants), comparing each computed state root
   with its header. The first invalid height is reported with the differing keys decoded:
   `market #1 BTC-USD-PERP funding_index_quote: stored 0, replayed 18233`.
3. Compare the replayed head state with the stored flat state key by key: a write made around
   the writer after the last block shows here (and in 1) even though every block replays.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.chain.replay import InvalidBlock, commit_executed, describe_against, execute_block
from node.core.genesis import Genesis
from node.core.queries import describe_difference
from node.store import StoreCorrupted, VersionedStore, blocks_db

MAX_LISTED = 20

Progress = Callable[[int, int], None]  # (blocks done, blocks in all)


@dataclass
class VerifyReport:
    head: int
    from_height: int
    blocks_replayed: int = 0
    txs_replayed: int = 0
    seconds: float = 0.0
    flat_ok: bool = True
    first_invalid: int | None = None
    reason: str = ""
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.flat_ok and self.first_invalid is None and not self.reason

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.ok,
            "head": self.head,
            "from_height": self.from_height,
            "blocks_replayed": self.blocks_replayed,
            "txs_replayed": self.txs_replayed,
            "seconds": round(self.seconds, 3),
            "flat_state_matches_head_root": self.flat_ok,
            "first_invalid_height": self.first_invalid,
            "reason": self.reason or None,
            "differences": self.differences,
        }

    def text(self) -> str:
        rate = self.blocks_replayed / self.seconds if self.seconds else 0.0
        lines = [
            f"replayed blocks {self.from_height + 1}..{self.from_height + self.blocks_replayed} "
            f"({self.txs_replayed} txs) in {self.seconds:.2f} s ({rate:,.0f} blocks/s)"
        ]
        if self.ok:
            lines.append(f"VALID: every state root from {self.from_height} to {self.head} verifies")
        else:
            lines.append(f"INVALID: {self.reason}")
            lines += [f"  {d}" for d in self.differences]
        return "\n".join(lines)


def flat_differences_against(
    store: VersionedStore, expected: list[tuple[bytes, bytes]]
) -> list[str]:
    """Keys where the store's flat state differs from `expected` (sorted pairs), decoded."""
    want = dict(expected)
    out: list[str] = []
    for key, value in store.iter_prefix():
        replayed = want.pop(key, None)
        if replayed != value:
            out.append(describe_difference(key, value, replayed))
    out += [describe_difference(key, None, value) for key, value in sorted(want.items())]
    return out[:MAX_LISTED]


def start_height(
    store: VersionedStore, *, from_height: int | None, from_checkpoint: str | None
) -> int:
    if from_checkpoint is not None:
        return store.get_checkpoint(from_checkpoint).height
    if from_height is not None:
        return from_height
    retained = store.retained_heights()
    return retained[0] if retained else 0


def verify_chain(
    store: VersionedStore,
    genesis: Genesis,
    *,
    from_height: int | None = None,
    from_checkpoint: str | None = None,
    progress: Progress | None = None,
    flat: bool = True,
) -> VerifyReport:
    """Verify the stored chain from a starting height to the head (module docstring). Reads
    `store` only; the replay runs in a scratch store in a temporary directory. `flat=False`
    skips the rehash of the flat state (a caller that has it proven, node.ops.restore)."""
    begin = time.perf_counter()
    start = start_height(store, from_height=from_height, from_checkpoint=from_checkpoint)
    report = VerifyReport(head=store.height, from_height=start)
    try:
        if flat:
            store.verify()
    except StoreCorrupted as error:
        report.flat_ok = False
        report.reason = f"the flat state does not hash to the head root: {error}"
    parent_block = blocks_db.get_block(store, start)
    if parent_block is None:
        report.reason = f"no block record at the starting height {start}"
        return report
    with tempfile.TemporaryDirectory(prefix="perpchain-verify-") as scratch_dir:
        with VersionedStore.open(scratch_dir, verify_on_open=False, seal_on_close=False) as scratch:
            try:
                scratch.import_state(
                    store.history_state(start),
                    height=start,
                    expected_root=store.root(start),
                    records=blocks_db.block_records(
                        parent_block, blocks_db.get_receipts(store, start) or _no_receipts()
                    ),
                )
            except (ValueError, StoreCorrupted) as error:
                report.first_invalid = start
                report.reason = f"the history of height {start} does not rebuild: {error}"
                return report
            parent = parent_block.header
            total = store.height - start
            # A chain committed under CometBFT (node/abci) has unsigned headers, final by the
            # validators' commit: the replay checks that the state follows from the blocks.
            consensus = store.height > start and blocks_db.is_consensus_chain(store, start + 1)
            for height in range(start + 1, store.height + 1):
                block = blocks_db.get_block(store, height)
                if block is None:
                    report.first_invalid = height
                    report.reason = f"no block record at height {height}"
                    break
                try:
                    if consensus and not blocks_db.is_consensus_chain(store, height):
                        raise InvalidBlock(height, f"block {height} has no consensus record")
                    executed = execute_block(scratch, genesis, parent, block, consensus=consensus)
                    commit_executed(
                        scratch,
                        executed,
                        explain=lambda h, writes: describe_against(
                            sorted(writes),
                            writes.get,
                            lambda key, h=h: store.history_get(key, h),  # type: ignore[misc]
                        ),
                    )
                except InvalidBlock as invalid:
                    report.first_invalid = invalid.height
                    report.reason = invalid.reason
                    report.differences = invalid.details
                    break
                parent = block.header
                report.blocks_replayed += 1
                report.txs_replayed += len(block.txs)
                if progress is not None and (
                    report.blocks_replayed % 50 == 0 or height == store.height
                ):
                    progress(report.blocks_replayed, total)
            if report.first_invalid is None and not report.flat_ok:
                report.differences = flat_differences_against(store, list(scratch.iter_prefix()))
                report.reason += (
                    f"; every block replays, so the flat rows were written around the writer "
                    f"after block {store.height}"
                )
    report.seconds = time.perf_counter() - begin
    return report


def _no_receipts() -> Any:
    from node.core.blocks import BlockReceipts

    return BlockReceipts(receipts=(), block_events=())
