"""The stateless admission checks of a tx (size, canonical decoding, shape, keys, the strict
Ed25519 signature over the chain id: `txs.validate_tx`, the rule followers apply too), and a
worker process that runs them for a whole RPC batch at once.
Imports trio, node.core and node.log (the worker process runs node.core code only).

Why a process and not a thread: the Ed25519 verify releases the GIL for its ~65 us (libsodium
through PyNaCl's cffi since issue 20, about half what `cryptography` took) and must then take it
back from the thread that is building a block; on the event loop each verify cost 2-3x its own
time and held reads back (scripts/bench node, docs/PERFORMANCE.md), and a verifying thread is
slowed the same way. A process verifies on the other core with no GIL to share; a batch of 100
txs costs one hand-off and ~4 us of unpickling per tx.

The pool is an optimisation only: `Mempool.add` runs `check_tx` itself for any tx the pool
did not pre-check (single submissions, a pool that died), with the same result.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool

import trio

from node.core.errors import NotCanonical, OutOfRange, Reject, TxRejected
from node.core.txs import SignedTx, decode_tx, validate_tx
from node.log import log_event
from node.store.parallel import die_with_parent, spawning

logger = logging.getLogger("perpchain.admission")


# What a worker returns per tx: the decoded tx, or the reject (code, message) of check_tx.
Checked = SignedTx | tuple[int, str]


def check_tx(raw: bytes, chain_id: bytes, max_tx_bytes: int) -> SignedTx:
    """Size, canonical decoding, shape and signature; TxRejected names what failed."""
    if len(raw) > max_tx_bytes:
        raise TxRejected(Reject.MALFORMED, f"{len(raw)} bytes > {max_tx_bytes}")
    try:
        tx = decode_tx(raw)
    except (NotCanonical, OutOfRange) as error:  # OutOfRange: a field beyond int64 (issue 20)
        raise TxRejected(Reject.MALFORMED, str(error)) from None
    validate_tx(tx, chain_id)
    return tx


def check_batch(raws: Sequence[bytes], chain_id: bytes, max_tx_bytes: int) -> list[Checked]:
    """check_tx over a batch (runs in the worker process): rejects as plain tuples, which
    pickle without the exception machinery."""
    out: list[Checked] = []
    for raw in raws:
        try:
            out.append(check_tx(raw, chain_id, max_tx_bytes))
        except TxRejected as rejected:
            out.append((int(rejected.code), rejected.detail))
    return out


def _ready() -> bool:
    return True


class CheckPool:
    """`workers` processes (spawned: nothing of the node's threads or sockets is inherited)
    that run check_batch."""

    def __init__(self, chain_id: bytes, max_tx_bytes: int, *, workers: int = 1) -> None:
        self._chain_id = chain_id
        self._max_tx_bytes = max_tx_bytes
        self._executor: concurrent.futures.ProcessPoolExecutor | None = (
            concurrent.futures.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
        )
        with spawning():  # the first submit spawns the worker, in this thread
            self._warming = self._executor.submit(_ready)  # start it now, not on a batch

    @property
    def alive(self) -> bool:
        return self._executor is not None

    async def check_many(self, raws: Sequence[bytes]) -> list[SignedTx | TxRejected] | None:
        """Each tx checked in the worker, in order; None when the pool is unavailable (the
        caller checks in-process)."""
        executor = self._executor
        if executor is None or not raws:
            return None
        try:
            future = executor.submit(check_batch, list(raws), self._chain_id, self._max_tx_bytes)
            results = await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)
        except (BrokenProcessPool, RuntimeError) as error:
            # A worker died or the pool is shut down: keep admitting, in-process from now on.
            log_event(
                logger,
                "admission.pool_unavailable",
                level=logging.WARNING,
                error=type(error).__name__,
            )
            self.close()
            return None
        return [
            item if isinstance(item, SignedTx) else TxRejected(item[0], item[1]) for item in results
        ]

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
