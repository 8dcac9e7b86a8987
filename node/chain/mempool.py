"""Mempool admission and FIFO ordering. Imports node.core, node.config and
node.chain.admission.

Admission runs every stateless check the block will run (size, canonical decoding, signature
over the chain id) plus the signer's nonce window against committed state, so a tx that
reaches a block fails there only for reasons of state (margin, book). Rejections raise
TxRejected (the RPC maps them to 1000 + code) or MempoolFull.

With a journal (node.chain.journal, producing nodes), every tx admitted is appended to it
before `add` returns, and `clear` empties it; `readmit` is the startup path that re-admits what
a previous run journalled, through the same checks.

The stateless part can be done ahead for a whole RPC batch in the admission worker process
(`precheck`); `add` then finds the outcome by the tx's bytes and only runs the stateful part
on the event loop. A tx nobody pre-checked is checked in-process, with the same outcome.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from node.chain.admission import CheckPool, check_tx
from node.chain.journal import JournalFull, TxJournal
from node.config import MempoolSettings
from node.core.errors import TxRejected
from node.core.transition import use_nonce
from node.core.txs import SignedTx
from node.core.view import Overlay, StateReader, get_nonces

# Pre-checked outcomes waiting for their tx_submit handler; a batch whose handlers never ran
# (deadline) leaves some behind, so the memo is dropped whole past this size.
MAX_PRECHECKED = 20_000


class MempoolFull(Exception):
    """The mempool or the sender's share of it is full; retry later."""


class Mempool:
    def __init__(
        self,
        chain_id: bytes,
        settings: MempoolSettings,
        state: StateReader,
        nonce_window: int,
        *,
        pool: CheckPool | None = None,
    ) -> None:
        self._chain_id = chain_id
        self._settings = settings
        self._state = state
        self._window = nonce_window
        self._txs: OrderedDict[bytes, SignedTx] = OrderedDict()
        # Taken for the block being built (which yields to readers between its slices): still
        # "pending" to tx_status until that block commits or fails (settle).
        self._taken: set[bytes] = set()
        self._per_sender: dict[bytes, int] = {}
        self._pool = pool
        self._prechecked: dict[bytes, SignedTx | TxRejected] = {}
        self._journal: TxJournal | None = None
        self._live_bytes = 0  # raw bytes of the pending txs (the journal's compaction rule)

    @property
    def journal(self) -> TxJournal | None:
        return self._journal

    @property
    def accepted(self) -> str:
        """What an accepted tx_submit promises: `journal`, `journal_fsynced` or `memory`."""
        return "memory" if self._journal is None else self._journal.accepted

    def readmit(self, journal: TxJournal) -> tuple[int, int, int]:
        """Startup: re-admit every tx `journal` holds through the normal admission path (those
        already used or now invalid are dropped), rewrite the journal with what was kept (the
        torn tail of a kill -9 goes too), then journal every later admission. Returns
        (readmitted, dropped, torn_bytes)."""
        contents = journal.open_and_read()
        readmitted = dropped = 0
        for raw in contents.records:
            try:
                before = len(self._txs)
                self.add(raw)
                readmitted += len(self._txs) - before
            except (TxRejected, MempoolFull):
                dropped += 1
        journal.rewrite(tx.raw for tx in self._txs.values())
        self._journal = journal
        return readmitted, dropped, contents.torn_bytes

    def compact_journal(self) -> bool:
        """After a committed block (nothing taken is in flight): rewrite the journal with the
        pending txs when it has grown past twice their size plus the slack."""
        journal = self._journal
        if journal is None or not journal.needs_compaction(self._live_bytes):
            return False
        journal.compact([tx.raw for tx in self._txs.values()])
        return True

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: object) -> bool:
        """Pending: in the pool, or taken for the block being built."""
        return tx_hash in self._txs or tx_hash in self._taken

    def check(self, raw: bytes) -> SignedTx:
        """The stateless part of admission (size, decoding, signature), pre-checked or now."""
        found = self._prechecked.pop(raw, None)
        if found is None:
            return check_tx(raw, self._chain_id, self._settings.max_tx_bytes)
        if isinstance(found, TxRejected):
            raise found
        return found

    async def precheck(self, raws: Sequence[bytes]) -> None:
        """Run the stateless checks of `raws` in the admission pool (one hand-off for the
        batch); `add` then uses the outcomes. Nothing happens without a pool."""
        results = None if self._pool is None else await self._pool.check_many(raws)
        if results is None:  # no pool, or it is gone: add() checks in-process
            return
        if len(self._prechecked) + len(results) > MAX_PRECHECKED:
            self._prechecked.clear()
        self._prechecked.update(zip(raws, results, strict=True))

    def add(self, raw: bytes) -> SignedTx:
        return self.admit(self.check(raw))

    def admit(self, tx: SignedTx) -> SignedTx:
        """The stateful part (on the event loop): duplicates, nonce window, caps."""
        if tx.tx_hash in self._txs:
            return tx  # a resubmission of a pending tx is idempotent
        # The block's own nonce rule (window and bitmap): a nonce already used out of order,
        # or consumed by a tx whose body was rejected, is refused here and never reaches a block.
        use_nonce(get_nonces(Overlay(self._state), tx.signer), tx.nonce, self._window)
        if len(self._txs) >= self._settings.max_txs:
            raise MempoolFull(f"mempool holds {len(self._txs)} txs")
        count = self._per_sender.get(tx.signer, 0)
        if count >= self._settings.max_per_account:
            raise MempoolFull(f"sender has {count} pending txs")
        if self._journal is not None:
            # Journalled before it is pending: an answer is never given for a tx a crash
            # right after it would lose (node.chain.journal for what survives what).
            try:
                self._journal.append(tx.raw)
            except JournalFull as full:
                raise MempoolFull(str(full)) from None
            except OSError as error:
                raise MempoolFull(f"tx journal write failed: {error.strerror}") from None
        self._txs[tx.tx_hash] = tx
        self._per_sender[tx.signer] = count + 1
        self._live_bytes += len(tx.raw)
        return tx

    def take(self, limit: int) -> list[SignedTx]:
        """Up to `limit` txs in arrival order, removed from the pool."""
        out: list[SignedTx] = []
        while self._txs and len(out) < limit:
            _, tx = self._txs.popitem(last=False)
            left = self._per_sender[tx.signer] - 1
            if left:
                self._per_sender[tx.signer] = left
            else:
                del self._per_sender[tx.signer]
            self._live_bytes -= len(tx.raw)
            out.append(tx)
        self._taken = {tx.tx_hash for tx in out}
        return out

    def settle(self) -> None:
        """The block of the last `take` is committed (its receipts answer) or dropped."""
        self._taken = set()

    def clear(self) -> int:
        """Drop every pending tx (after a rollback: they were admitted against reverted state)."""
        dropped = len(self._txs)
        self._txs.clear()
        self._taken = set()
        self._per_sender.clear()
        self._live_bytes = 0
        if self._journal is not None:
            self._journal.rewrite([])
        return dropped

    def push_front(self, tx: SignedTx) -> None:
        """An operator tx from the node itself goes first (admin commands)."""
        self._txs[tx.tx_hash] = tx
        self._txs.move_to_end(tx.tx_hash, last=False)
        self._per_sender[tx.signer] = self._per_sender.get(tx.signer, 0) + 1
        self._live_bytes += len(tx.raw)
