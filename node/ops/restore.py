"""Restore on invalid state, at a producer's startup. Imports node.core, node.store,
node.ops.{rollback,verify}.

1. A rollback whose recovery block was never committed (kill -9 in between) is completed.
2. Verification: the flat state is rehashed against the head root, and the blocks since the
   latest checkpoint are replayed (each root compared with its header).
3. If the state is invalid the node does not produce. With `auto_restore` it restores:
   - rows written around the writer but every block valid: the flat rows are restored from
     the versioned history (no block is lost);
   - an invalid block at height h: rollback to the latest checkpoint at or below h - 1
     (normally the pre-maintenance one), with its recovery block.
   Without `auto_restore` it refuses with the reason and the exact command to run.
"""

from __future__ import annotations

from collections.abc import Iterator

from node.core.crypto import SigningKey
from node.core.genesis import Genesis
from node.ops.rollback import (
    RollbackError,
    apply_rollback,
    complete_recovery,
    pending_recovery,
    plan_rollback,
)
from node.ops.verify import VerifyReport, verify_chain
from node.store import StoreCorrupted, VersionedStore


class RestoreRefused(ValueError):
    """The state is invalid and was not restored; the message says what to run."""


def startup_check(
    store: VersionedStore,
    genesis: Genesis,
    *,
    auto_restore: bool,
    producer: SigningKey,
    operator: SigningKey | None,
    now_ms: int,
    home: str,
) -> Iterator[str]:
    """Yields a line per action taken; raises RestoreRefused when it must not produce."""
    if pending_recovery(store) is not None:
        if operator is None:
            raise RestoreRefused(
                "a rollback is waiting for its recovery block and this node holds no operator "
                f"key: perpchain rollback --home {home} --resume"
            )
        outcome = complete_recovery(
            store, genesis, producer=producer, operator=operator, time_ms=now_ms
        )
        if outcome is None:
            raise RuntimeError("the interrupted rollback left nothing to complete")
        yield f"completed the interrupted rollback of fork {outcome.fork_id}"
    if store.height < 0:
        return
    # The flat state is proven already when the store opened from its close seal (nothing
    # wrote to the database since a clean close) or rehashed it to the head root; only a
    # mismatch at open is rehashed again here, for the report (docs/STORE.md, "Reopen").
    flat = store.open_check not in ("seal", "rehashed")
    checkpoints = store.checkpoints()
    if checkpoints:
        latest = max(checkpoints, key=lambda c: c.height).name
        report = verify_chain(store, genesis, from_checkpoint=latest, flat=flat)
    else:
        try:  # no checkpoint: the flat rehash; a full replay only to diagnose a failure
            if flat:
                store.verify()
            yield f"verified the flat state against the head root ({store.open_check} at open)"
            return
        except StoreCorrupted:
            report = verify_chain(store, genesis)
    if report.ok:
        yield f"verified: {report.blocks_replayed} blocks replayed from {report.from_height}"
        return
    command, target = restore_command(store, report, home)
    if not auto_restore:
        raise RestoreRefused(
            f"invalid state, not producing: {report.reason}; "
            + "; ".join(report.differences[:5])
            + f"; to restore: {command}"
        )
    if target is None:
        repaired = store.repair_flat()
        yield f"restored {len(repaired)} flat rows from the history ({report.reason})"
        return
    if operator is None:
        raise RestoreRefused(f"auto_restore needs the operator key; run: {command}")
    try:
        plan = plan_rollback(store, to_checkpoint=target)
        outcome = apply_rollback(
            store,
            genesis,
            plan,
            producer=producer,
            operator=operator,
            time_ms=now_ms,
            reason=f"auto restore: {report.reason}"[:200],
        )
    except RollbackError as error:
        raise RestoreRefused(f"auto restore failed: {error}; {command}") from None
    yield f"auto restore: {outcome.text()}"


def restore_command(
    store: VersionedStore, report: VerifyReport, home: str
) -> tuple[str, str | None]:
    """The command that restores, and the checkpoint it rolls back to (None: a repair)."""
    if report.first_invalid is None:
        return f"perpchain rollback --home {home} --repair", None
    usable = [c for c in store.checkpoints() if c.height <= report.first_invalid - 1]
    if not usable:
        raise RestoreRefused(
            f"invalid state at height {report.first_invalid} and no checkpoint below it: "
            f"{report.reason}; perpchain rollback --home {home} "
            f"--to-height {report.first_invalid - 1}"
        )
    best = max(usable, key=lambda c: c.height)
    return f"perpchain rollback --home {home} --to-checkpoint {best.name}", best.name
