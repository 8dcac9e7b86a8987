"""Mempool admission and FIFO ordering. Imports node.core and node.config.

Admission runs every stateless check the block will run (size, canonical decoding, signature
over the chain id) plus the signer's nonce window against committed state, so a tx that
reaches a block fails there only for reasons of state (margin, book). Rejections raise
TxRejected (the RPC maps them to 1000 + code) or MempoolFull.
"""

from __future__ import annotations

from collections import OrderedDict

from node.config import MempoolSettings
from node.core.errors import NotCanonical, Reject, TxRejected
from node.core.txs import SignedTx, decode_tx, validate_tx
from node.core.view import Overlay, StateReader, get_nonces


class MempoolFull(Exception):
    """The mempool or the sender's share of it is full; retry later."""


class Mempool:
    def __init__(
        self, chain_id: bytes, settings: MempoolSettings, state: StateReader, nonce_window: int
    ) -> None:
        self._chain_id = chain_id
        self._settings = settings
        self._state = state
        self._window = nonce_window
        self._txs: OrderedDict[bytes, SignedTx] = OrderedDict()
        self._per_sender: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._txs

    def check(self, raw: bytes) -> SignedTx:
        """The stateless part of admission (size, decoding, signature): pure, so the RPC runs
        it in a worker thread and the event loop keeps serving reads meanwhile."""
        if len(raw) > self._settings.max_tx_bytes:
            raise TxRejected(Reject.MALFORMED, f"{len(raw)} bytes > {self._settings.max_tx_bytes}")
        try:
            tx = decode_tx(raw)
        except NotCanonical as error:
            raise TxRejected(Reject.MALFORMED, str(error)) from None
        validate_tx(tx, self._chain_id)
        return tx

    def add(self, raw: bytes) -> SignedTx:
        return self.admit(self.check(raw))

    def admit(self, tx: SignedTx) -> SignedTx:
        """The stateful part (on the event loop): duplicates, nonce window, caps."""
        if tx.tx_hash in self._txs:
            return tx  # a resubmission of a pending tx is idempotent
        nonces = get_nonces(Overlay(self._state), tx.signer)
        if not nonces.base_nonce <= tx.nonce < nonces.base_nonce + self._window:
            raise TxRejected(
                Reject.BAD_NONCE, f"nonce={tx.nonce}, window [{nonces.base_nonce}, +{self._window})"
            )
        if len(self._txs) >= self._settings.max_txs:
            raise MempoolFull(f"mempool holds {len(self._txs)} txs")
        count = self._per_sender.get(tx.signer, 0)
        if count >= self._settings.max_per_account:
            raise MempoolFull(f"sender has {count} pending txs")
        self._txs[tx.tx_hash] = tx
        self._per_sender[tx.signer] = count + 1
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
            out.append(tx)
        return out

    def clear(self) -> int:
        """Drop every pending tx (after a rollback: they were admitted against reverted state)."""
        dropped = len(self._txs)
        self._txs.clear()
        self._per_sender.clear()
        return dropped

    def push_front(self, tx: SignedTx) -> None:
        """An operator tx from the node itself goes first (admin commands)."""
        self._txs[tx.tx_hash] = tx
        self._txs.move_to_end(tx.tx_hash, last=False)
        self._per_sender[tx.signer] = self._per_sender.get(tx.signer, 0) + 1
