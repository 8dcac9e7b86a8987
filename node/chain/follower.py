"""A follower full node: it does not trust its source. Imports node.core, node.store,
node.chain.{broadcast,metrics,producer,remote,replay}, node.log.

It catches up from the source's `chain_getRawBlocks` in batches, then waits for `new_heads`
over the same WebSocket (reconnecting with backoff). Every block is checked and re-executed
(node.chain.replay) and committed in one batch only if the computed state root equals the
header's. On an invalid block it stops applying, keeps serving reads at the last valid height and
reports mode `halted` with the reason, listing the first differing keys it can prove.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import trio

from node.chain.broadcast import Broadcaster
from node.chain.metrics import Metrics
from node.chain.producer import ChainStatus, publish_block
from node.chain.remote import (
    RemoteCallError,
    RemoteNode,
    RemoteUnavailable,
    connect_remote,
    single_exception,
)
from node.chain.replay import (
    InvalidBlock,
    commit_executed,
    describe_against,
    execute_block,
    log_block_alerts,
)
from node.core import merkle
from node.core.blocks import (
    Block,
    RollbackNotice,
    decode_block,
    decode_notice,
    header_hash,
    verify_notice,
)
from node.core.genesis import Genesis
from node.log import log_event, short_hex
from node.store import VersionedStore, blocks_db

logger = logging.getLogger("perpchain.follower")

BATCH_BLOCKS = 100
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 5.0
HALT_POLL_S = 1.0  # halted: how often to ask the source for a rollback notice
MAX_PROVEN_KEYS = 200  # keys asked of the source when explaining a root mismatch


class Follower:
    def __init__(
        self,
        store: VersionedStore,
        genesis: Genesis,
        source_url: str,
        status: ChainStatus,
        *,
        broadcaster: Broadcaster | None = None,
        metrics: Metrics | None = None,
        batch_blocks: int = BATCH_BLOCKS,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.source_url = source_url
        self.status = status
        self.broadcaster = broadcaster
        self.metrics = metrics
        self.batch_blocks = batch_blocks
        self.remote: RemoteNode | None = None
        self.refused_hash: bytes | None = None  # the block this follower halted on
        # notices to index with the recovery block they announce (so this node's own
        # chain_getRollbacks serves them to its followers): recovery height -> notice
        self.notices: dict[int, RollbackNotice] = {}
        status.source = source_url
        self.caught_up = trio.Event()
        self.session_good = False  # this connection caught up with the source

    # --- modes -------------------------------------------------------------------------------

    def _set_mode(self, mode: str) -> None:
        if self.status.mode != mode:
            self.status.mode = mode
            if self.metrics:
                self.metrics.set_mode(mode)

    def halt(self, invalid: InvalidBlock) -> None:
        self.status.mode = "halted"
        self.status.halt_reason = invalid.reason
        if self.metrics:
            self.metrics.set_mode("halted")
            self.metrics.invariant_failures.inc()
        log_event(
            logger,
            "follower.halted",
            level=logging.CRITICAL,
            reason=invalid.reason,
            last_valid_height=self.store.height,
            differences=invalid.details or "none found among the keys this block wrote",
        )

    # --- tx forwarding -----------------------------------------------------------------------

    async def forward_tx(self, raw_hex: str) -> Any:
        """tx_submit on a follower goes to the source; its answer, or RemoteCallError with the
        source's error, or RemoteUnavailable."""
        if self.remote is None:
            raise RemoteUnavailable(f"not connected to {self.source_url}")
        return await self.remote.call("tx_submit", tx=raw_hex)

    # --- sync --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow until cancelled. Halted, it serves reads and waits for an operator-signed
        rollback notice that reverts the block it refused, then follows the new chain."""
        self._set_mode("following")
        backoff = BACKOFF_START_S
        while True:
            self.session_good = False
            error_text = "the source ended the stream"
            try:
                try:
                    await self._session()
                except BaseExceptionGroup as group:  # nested task groups: what went wrong
                    raise single_exception(group) from None
            except InvalidBlock as invalid:
                self.halt(invalid)
                continue  # reconnect and wait for a rollback notice
            except (RemoteUnavailable, RemoteCallError, ValueError, KeyError) as error:
                error_text = str(error)
            finally:
                self.remote = None
            # After a good session (it caught up with the source) a drop is a new problem:
            # retry soon, not after the backoff earlier failures had grown to.
            if self.session_good:
                backoff = BACKOFF_START_S
            log_event(
                logger,
                "follower.disconnected",
                level=logging.WARNING,
                source=self.source_url,
                error=error_text,
                retry_s=backoff,
            )
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _session(self) -> None:
        """One connection: wait out a halt, catch up, follow new heads until it drops."""
        async with connect_remote(self.source_url) as remote:
            self.remote = remote
            log_event(logger, "follower.connected", source=self.source_url)
            heads = await remote.subscribe("new_heads")
            while self.status.mode == "halted" and not await self._apply_notices(remote):
                await trio.sleep(HALT_POLL_S)
            await self._catch_up(remote)
            self.session_good = True  # connected and caught up: run() resets its backoff
            async for head in heads:
                self.status.source_height = int(head["height"])
                if self.status.source_height != self.store.height:
                    await self._catch_up(remote)
            # The channel closed: the connection dropped or we fell behind; reconnect.

    async def _catch_up(self, remote: RemoteNode) -> None:
        while True:
            reply = await remote.call(
                "chain_getRawBlocks",
                from_height=str(self.store.height + 1),
                count=str(self.batch_blocks),
            )
            self.status.source_height = int(reply["head"])
            blocks = reply["blocks"]
            forked = self.status.source_height < self.store.height or (
                blocks and self._parent_differs(blocks[0])
            )
            if forked and await self._apply_notices(remote):
                continue  # rolled back with the source: fetch the new chain
            if not blocks:
                self.caught_up.set()
                return
            for position, raw in enumerate(blocks):
                await self._apply(remote, self.store.height + 1, raw)
                if position % 8 == 7:
                    await trio.lowlevel.checkpoint()

    def _parent_differs(self, raw_hex: str) -> bool:
        head = self.status.head
        try:
            block = decode_block(bytes.fromhex(raw_hex))
        except ValueError:
            return False  # _apply reports it
        return head is not None and block.header.parent_hash != header_hash(head)

    async def _apply_notices(self, remote: RemoteNode) -> bool:
        """Apply the source's operator-signed rollback notices that concern this node: roll
        back to the notice's height when we hold the reverted block, and resume after a halt
        on the block it reverted. True if anything changed."""
        changed = False
        for item in await remote.call("chain_getRollbacks"):
            if not item.get("notice"):
                continue
            try:
                notice = decode_notice(bytes.fromhex(item["notice"]))
            except ValueError:
                continue
            if notice.chain_id != self.genesis.chain_id or not verify_notice(
                notice, self.genesis.operator_key
            ):
                log_event(
                    logger,
                    "follower.notice_refused",
                    level=logging.WARNING,
                    fork=item.get("fork_id"),
                    reason="not signed by the genesis operator",
                )
                continue
            target = blocks_db.get_block(self.store, notice.to_height)
            if target is None or header_hash(target.header) != notice.target_hash:
                continue  # not a block of ours (or not retained)
            if blocks_db.get_notice(self.store, notice.fork_id) is None:
                self.notices[notice.to_height + 1] = notice
            reverted = blocks_db.get_block(self.store, notice.to_height + 1)
            if reverted is not None and header_hash(reverted.header) == notice.reverted_hash:
                reason = f"rollback notice of fork {notice.fork_id}"
                await trio.to_thread.run_sync(
                    partial(self.store.rollback_to, notice.to_height, reason=reason)
                )
                self.status.head = target.header
                changed = True
                log_event(
                    logger,
                    "follower.rolled_back",
                    level=logging.WARNING,
                    fork=notice.fork_id,
                    to_height=notice.to_height,
                )
            elif self.refused_hash == notice.reverted_hash:
                changed = True  # the block we refused was reverted: nothing to undo
            if changed and self.status.mode == "halted":
                self.refused_hash = None
                self.status.halt_reason = ""
                self._set_mode("following")
                log_event(logger, "follower.resumed", height=self.store.height)
        return changed

    async def _apply(self, remote: RemoteNode, height: int, raw_hex: str) -> None:
        try:
            block = decode_block(bytes.fromhex(raw_hex))
        except ValueError as error:
            raise InvalidBlock(height, f"undecodable block at height {height}: {error}") from None
        parent = self.status.head
        started = time.perf_counter()
        try:
            executed = await trio.to_thread.run_sync(
                execute_block, self.store, self.genesis, parent, block
            )
        except InvalidBlock:
            self.refused_hash = header_hash(block.header)
            raise
        applied = time.perf_counter()
        notice = self.notices.pop(block.header.height, None)
        extra = blocks_db.notice_index(notice) if notice is not None else None
        try:
            header = commit_executed(self.store, executed, extra_index=extra)
        except InvalidBlock as invalid:
            self.refused_hash = header_hash(block.header)
            invalid.details = await self._explain(remote, block, executed.writes)
            raise
        log_block_alerts(logger, header.height, executed.result)
        done = time.perf_counter()
        self.status.head = header
        self.status.committed_txs += len(block.txs)
        if self.metrics:
            self.metrics.observe_block(
                height=header.height,
                txs=len(block.txs),
                interval_ms=None if parent is None else header.time_ms - parent.time_ms,
                apply_ms=(applied - started) * 1000,
                commit_ms=(done - applied) * 1000,
                codes=[r.code for r in executed.result.receipts] if executed.result else (),
            )
        log_event(
            logger,
            "follower.applied",
            level=logging.DEBUG,
            height=header.height,
            txs=len(block.txs),
            root=short_hex(header.state_root),
        )
        if self.broadcaster is not None and executed.result is not None:
            publish_block(
                self.broadcaster, header, executed.result.receipts, executed.result.events
            )

    async def _explain(
        self,
        remote: RemoteNode,
        block: Block,
        writes: dict[bytes, bytes | None],
    ) -> list[str]:
        """Ask the source for proofs of the keys this block wrote, at its height, checked
        against the header's root; the keys whose proven value differs from ours."""
        height = block.header.height
        root = block.header.state_root
        keys = sorted(writes)[:MAX_PROVEN_KEYS]
        proven: dict[bytes, bytes | None] = {}
        try:
            for key in keys:
                reply = await remote.call("chain_getProof", key=key.hex(), height=str(height))
                value = None if reply["value"] is None else bytes.fromhex(reply["value"])
                if not merkle.verify_proof(root, key, value, bytes.fromhex(reply["proof"])):
                    return [f"the source's proof of {key.hex()} does not verify against the header"]
                proven[key] = value
        except (RemoteUnavailable, RemoteCallError, ValueError, KeyError) as error:
            return [f"could not ask the source for the differing keys: {error}"]
        return describe_against(keys, writes.get, proven.get)
