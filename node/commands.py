"""The writer's operator commands (admin RPC): halt/resume, market modes, checkpoints,
maintenance, rollback; and, on a devnet/test node configured for it only, the drill's fault
injection (`FaultCommands`). Imports node.chain, node.core, node.ops, node.rpc.jsonrpc,
node.store, node.log.

Every command that touches the store runs under the producer's lock, so it happens between
blocks and never beside one (DESIGN.md decision 2: one writer); slow reads (verification) run in
a worker thread while the lock is held, so nothing commits meanwhile.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from node.chain.producer import Producer, header_json
from node.core.blocks import RollbackNotice
from node.core.crypto import SigningKey
from node.core.genesis import Genesis
from node.core.queries import markets
from node.core.records import MarketMode
from node.core.txs import SetMarketMode, SignedTx, sign_tx
from node.core.view import Overlay, get_nonces
from node.log import log_event, short_hex
from node.ops.rollback import RollbackError, apply_rollback, plan_rollback
from node.ops.verify import verify_chain
from node.rpc.jsonrpc import ErrorCode, RpcError

logger = logging.getLogger("perpchain.commands")

PRE_MAINTENANCE = "pre-maintenance-"
ROLLBACKS = "rollbacks"  # WebSocket topic of rollback notices


def notice_json(notice: RollbackNotice) -> dict[str, Any]:
    from node.core.blocks import encode_notice

    return {
        "fork_id": str(notice.fork_id),
        "from_height": str(notice.from_height),
        "to_height": str(notice.to_height),
        "target_hash": notice.target_hash.hex(),
        "reverted_hash": notice.reverted_hash.hex(),
        "reason": notice.reason.decode(errors="replace"),
        "operator": notice.operator.hex(),
        "notice": encode_notice(notice).hex(),
    }


class WriterCommands:
    """Admin commands, run on the trio thread between blocks by the producer's owner."""

    def __init__(self, producer: Producer, operator: SigningKey | None, genesis: Genesis) -> None:
        self.producer = producer
        self.operator = operator
        self.genesis = genesis
        # The drill's second fault hook; honoured only on a node built with fault injection
        # (testing.fault_injection, refused on a production chain), see FaultCommands.
        self.skip_verify = False
        self.fault_injection = False
        self._next_nonce = 0

    @property
    def store(self) -> Any:
        return self.producer.store

    @property
    def status(self) -> Any:
        return self.producer.status

    def halt(self, reason: str) -> None:
        self.producer.halt(reason)

    def resume(self) -> None:
        self.producer.resume()

    def _operator(self) -> SigningKey:
        if self.operator is None:
            raise RpcError(ErrorCode.UNAUTHORIZED, "this node holds no operator key")
        return self.operator

    def _operator_tx(self, body_cls: type, **fields: Any) -> SignedTx:
        operator = self._operator()
        committed = get_nonces(Overlay(self.store), operator.public_key).base_nonce
        self._next_nonce = max(self._next_nonce, committed)  # several commands in one block
        tx = sign_tx(body_cls(nonce=self._next_nonce, **fields), operator, self.genesis.chain_id)
        self._next_nonce += 1
        return tx

    def set_market_mode(self, market_id: int, mode: MarketMode) -> str:
        tx = self._operator_tx(SetMarketMode, market_id=market_id, mode=mode)
        self.producer.mempool.push_front(tx)
        return tx.tx_hash.hex()

    # Checkpoints: under the producer's lock like every write, so a pin lands between two
    # blocks (a block is computed and committed in slices, its batch written in a thread).

    async def checkpoint_create(
        self, name: str, *, height: int | None, reason: str
    ) -> dict[str, Any]:
        from node.ops import checkpoints

        try:
            async with self.producer.lock:
                info = checkpoints.create_checkpoint(
                    self.producer.store,
                    name,
                    created_ms=self.producer.clock.now_ms(),
                    height=height,
                    reason=reason,
                )
        except checkpoints.CheckpointError as error:
            raise _checkpoint_rpc_error(error) from None
        log_event(logger, "checkpoint.created", name=name, height=info.height)
        return info.to_json()

    def checkpoint_list(self) -> list[dict[str, Any]]:
        from node.ops import checkpoints

        return [info.to_json() for info in checkpoints.list_checkpoints(self.producer.store)]

    async def checkpoint_delete(self, name: str) -> dict[str, Any]:
        from node.ops import checkpoints

        try:
            async with self.producer.lock:
                info = checkpoints.delete_checkpoint(self.producer.store, name)
        except checkpoints.CheckpointError as error:
            raise _checkpoint_rpc_error(error) from None
        log_event(logger, "checkpoint.deleted", name=name, height=info.height)
        return info.to_json()

    # --- maintenance --------------------------------------------------------------------

    async def maintenance_begin(self, reason: str) -> dict[str, Any]:
        """Finish the block in flight, commit an operator block putting every market in
        CANCEL_ONLY, pin `pre-maintenance-<height>`, bump the fencing epoch, stop producing.

        The window is stored (VersionedStore.maintenance): its marker, the pin and the epoch
        are written in the operator block's own batch (or, when every market is CANCEL_ONLY
        already and no block is needed, as one batch of their own), so a crash leaves either
        all of it or none, and a restarted node comes back in maintenance (issue 13)."""
        async with self.producer.lock:
            self._require_mode("producing", "maintenance begins only from producing")
            txs = [
                self._operator_tx(SetMarketMode, market_id=m.market_id, mode=MarketMode.CANCEL_ONLY)
                for m in markets(self.store)
                if m.mode != MarketMode.CANCEL_ONLY
            ]
            store = self.store
            if txs:
                # The pin is taken at the operator block, whose root is known once it is staged.
                expected = store.height + 1
                self._check_pre_maintenance_pin(f"{PRE_MAINTENANCE}{expected}", expected, None)

                def meta(height: int, root: bytes) -> dict[bytes, bytes | None]:
                    if height != expected:
                        raise RuntimeError(f"operator block at {height}, expected {expected}")
                    entries: dict[bytes, bytes | None] = store.maintenance_begin_meta(
                        reason=reason,
                        checkpoint=f"{PRE_MAINTENANCE}{height}",
                        height=height,
                        root=root,
                    )
                    return entries

                if self.producer.produce_txs(txs, meta) is None:
                    raise RpcError(ErrorCode.NODE_HALTED, self.status.halt_reason)
            else:
                height = store.height
                name = f"{PRE_MAINTENANCE}{height}"
                pin = self._check_pre_maintenance_pin(name, height, store.root())
                store.write_meta(
                    store.maintenance_begin_meta(
                        reason=reason, checkpoint=name, height=height, root=store.root(), pin=pin
                    )
                )
            window = store.maintenance()
            if window is None:
                raise RuntimeError("maintenance begin wrote no marker")
            self.producer.enter_maintenance(window)
        log_event(
            logger,
            "maintenance.begun",
            height=window.height,
            checkpoint=window.checkpoint,
            epoch=window.epoch,
            reason=reason,
        )
        return {
            "mode": "maintenance",
            "checkpoint": window.checkpoint,
            "height": str(window.height),
            "state_root": store.root().hex(),
            "epoch": str(window.epoch),
        }

    def _check_pre_maintenance_pin(self, name: str, height: int, root: bytes | None) -> bool:
        """Whether the pin `name` must be written. A second maintenance at the same height
        (begin, end, begin before the next block) finds its pin already there: the same
        state, so it is kept; a pin of that name at another state is refused (issue 20: this
        was an internal error). `root` None: the state is a block not yet built, so any pin
        of that name is at another state."""
        try:
            existing = self.store.get_checkpoint(name)
        except KeyError:
            return True
        if root is None or existing.height != height or existing.root != root:
            raise RpcError(
                ErrorCode.WRONG_MODE,
                f"checkpoint {name!r} exists at another state (height {existing.height}); "
                "delete it (admin_checkpointDelete) before maintenance",
                {"mode": self.status.mode},
            )
        return False

    def _require_mode(self, mode: str, message: str) -> None:
        if self.status.mode != mode:
            raise RpcError(
                ErrorCode.WRONG_MODE,
                f"{message} (mode {self.status.mode})",
                {"mode": self.status.mode},
            )

    def _pre_maintenance(self) -> str:
        window = self.store.maintenance()
        if window is not None:
            try:
                return str(self.store.get_checkpoint(window.checkpoint).name)
            except KeyError:
                pass  # deleted by hand: the latest pre-maintenance pin, as before issue 13
        pins = [c for c in self.store.checkpoints() if c.name.startswith(PRE_MAINTENANCE)]
        if not pins:
            raise RpcError(ErrorCode.WRONG_MODE, "no pre-maintenance checkpoint")
        return str(max(pins, key=lambda c: c.height).name)

    async def maintenance_end(self, expect_root: bytes | None) -> dict[str, Any]:
        """Verify (flat state, replay from the pre-maintenance checkpoint), then resume; the
        markets stay CANCEL_ONLY until the operator reopens them (admin_setMarketMode)."""
        async with self.producer.lock:
            self._require_mode("maintenance", "not in maintenance")
            checkpoint = self._pre_maintenance()
            if not (self.skip_verify and self.fault_injection):
                report = await trio.to_thread.run_sync(
                    lambda: verify_chain(self.store, self.genesis, from_checkpoint=checkpoint)
                )
                if not report.ok:
                    log_event(
                        logger,
                        "maintenance.refused",
                        level=logging.ERROR,
                        reason=report.reason,
                        differences=report.differences,
                    )
                    raise RpcError(
                        ErrorCode.VERIFY_FAILED,
                        f"maintenance end refused: {report.reason}",
                        {
                            "differences": report.differences,
                            "restore": f"admin_rollback to_checkpoint={checkpoint}",
                        },
                    )
            root = self.store.root()
            if expect_root is not None and root != expect_root:
                raise RpcError(
                    ErrorCode.VERIFY_FAILED,
                    f"maintenance end refused: the head root is {root.hex()}, "
                    f"expected {expect_root.hex()}",
                )
            # The checks passed: the marker goes in one batch, then the mode follows. A crash
            # before the write leaves the node in maintenance, after it producing.
            self.store.write_meta(self.store.maintenance_end_meta())
            self.producer.leave_maintenance()
        log_event(logger, "maintenance.ended", height=self.store.height, root=short_hex(root))
        return {"mode": "producing", "height": str(self.store.height), "state_root": root.hex()}

    async def maintenance_job(self, kind: str) -> dict[str, Any]:
        """A maintenance job, run by the writer and only in maintenance (never beside blocks):
        `compact` (LevelDB compaction of the whole keyspace)."""
        async with self.producer.lock:
            self._require_mode("maintenance", "maintenance jobs run only in maintenance")
            if kind != "compact":
                raise RpcError(ErrorCode.INVALID_PARAMS, f"unknown maintenance job {kind!r}")
            started = time.perf_counter()
            await trio.to_thread.run_sync(self.store.compact)
            seconds = round(time.perf_counter() - started, 3)
        log_event(logger, "maintenance.job", kind=kind, seconds=seconds)
        return {"job": kind, "seconds": seconds, "state_root": self.store.root().hex()}

    # --- rollback -----------------------------------------------------------------------

    async def rollback(
        self, *, to_height: int | None, to_checkpoint: str | None, dry_run: bool, reason: str
    ) -> dict[str, Any]:
        async with self.producer.lock:
            try:
                plan = plan_rollback(self.store, to_height=to_height, to_checkpoint=to_checkpoint)
                if dry_run:
                    return plan.to_json()
                outcome = apply_rollback(
                    self.store,
                    self.genesis,
                    plan,
                    producer=self.producer.key,
                    operator=self._operator(),
                    time_ms=max(self.producer.clock.now_ms(), 0),
                    reason=reason,
                )
            except RollbackError as error:
                raise RpcError(ErrorCode.ROLLBACK_REFUSED, str(error)) from None
            self.producer.mempool.clear()
            self._next_nonce = 0
            self.producer.check_invariants = True
            self.skip_verify = False
            self.status.head = outcome.recovery
            # The store's rollback_to removed a maintenance marker in its first batch: a
            # rollback ends a maintenance window (docs/OPERATIONS.md, "Maintenance mode").
            if self.store.maintenance() is not None:
                raise RuntimeError("a rollback left the maintenance marker")
            self.producer.leave_maintenance()
            broadcaster = self.producer.broadcaster
            if broadcaster is not None:
                broadcaster.publish(ROLLBACKS, notice_json(outcome.notice))
                broadcaster.publish("new_heads", header_json(outcome.recovery))
        log_event(
            logger,
            "rollback.applied",
            level=logging.WARNING,
            fork=outcome.fork_id,
            from_height=outcome.from_height,
            to_height=outcome.to_height,
            repaired=outcome.repaired_keys,
            deposits=outcome.deposits_reapplied,
        )
        return outcome.to_json()


class FaultCommands:
    """TEST-ONLY: the incident drill's fault hooks (admin_injectFault). Built by node.app only
    when `testing.fault_injection` is on, which NodeConfig refuses unless the chain is a
    devnet/test chain; a normal node never builds it, never imports node.ops.faults, and has
    no admin_injectFault method (tests/e2e/test_fault_injection_gate.py)."""

    KINDS = ("zero_funding_indices", "bypass_checks")

    def __init__(self, commands: WriterCommands) -> None:
        self.commands = commands
        commands.fault_injection = True
        commands.producer.fault_injection = True

    async def inject_fault(self, kind: str) -> dict[str, Any]:
        from node.ops import faults

        producer = self.commands.producer
        async with producer.lock:
            if kind == "zero_funding_indices":
                touched = faults.zero_funding_indices(producer.store)
                result: dict[str, Any] = {"markets": [str(m) for m in touched]}
            elif kind == "bypass_checks":
                producer.check_invariants = False
                self.commands.skip_verify = True
                result = {"invariants": False, "maintenance_verify": False}
            else:
                raise RpcError(
                    ErrorCode.INVALID_PARAMS,
                    f"unknown fault {ascii(kind)}: one of {', '.join(self.KINDS)}",
                )
        log_event(logger, "fault.injected", level=logging.CRITICAL, kind=kind, **result)
        return result


def _checkpoint_rpc_error(error: Any) -> Exception:
    """A node.ops.checkpoints refusal as a JSON-RPC error."""
    from node.rpc.jsonrpc import ErrorCode, RpcError, invalid_params, not_found

    if error.kind == "not_found":
        return not_found(str(error))
    if error.kind == "unavailable":
        return RpcError(ErrorCode.HEIGHT_PRUNED, str(error))
    return invalid_params(str(error))
