"""Root recomputation on two cores, for `verify()` of a large state. Imports node.core.merkle.

The parent hashes the keys and splits them by the first bit of the key hash; a worker process
computes the right subtree while the parent computes the left; the root is the node over the
two (with the single-leaf and empty-side rules of node.core.merkle).

The worker is one process of a pool started with the *spawn* method (issue 20 §6): the node
calls this from a running, threaded program, and a `fork()` there copies locks that other
threads hold (logging, the allocator, LevelDB's), so the child can deadlock on its first use of
one. A spawned worker is a fresh interpreter that inherits no thread, lock or socket. The pool
is started on first use (or by `start_pool()`) and kept for later calls; its worker exits when
the process that started it is gone (a node killed with SIGKILL never shuts its pool down).

The worker is an optimisation only. Its answer is awaited for at most `timeout_s` after the
parent's own half is done (default: twice the parent's time, at least WAIT_MIN_S); on a
timeout, a dead worker or a pool that cannot start, the pool is terminated (the next call
starts a new one) and the parent computes the right half itself: the same root, later.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import multiprocessing
import multiprocessing.pool
import os
import signal
import threading
import time
from typing import Any

from node.core import merkle

logger = logging.getLogger("perpchain.store")

PARALLEL_MIN_KEYS = 20_000
WAIT_MIN_S = 10.0  # covers a cold worker's start (imports, ~0.3 s) with a wide margin
PARENT_POLL_S = 0.5  # how often the worker checks that its parent is still alive

_pool: multiprocessing.pool.Pool | None = None
_pool_lock = threading.Lock()


def _half_root(khs: list[bytes], values: list[bytes]) -> tuple[bytes, int]:
    """(subtree hash at depth 1, leaf count) of one half."""
    sha, vd, ld = hashlib.sha256, merkle.VALUE_DOMAIN, merkle.LEAF_DOMAIN
    leaves = [
        sha(ld + kh + sha(vd + v).digest()).digest() for kh, v in zip(khs, values, strict=True)
    ]
    order = sorted(range(len(khs)), key=khs.__getitem__)
    ints = [int.from_bytes(khs[i], "big") for i in order]
    return merkle.subtree_root(ints, [leaves[i] for i in order], 1), len(khs)


# What the worker runs; a module attribute so a test can substitute a slow or failing one.
_worker_half = _half_root


def _combine(left: tuple[bytes, int], right: tuple[bytes, int]) -> bytes:
    (left_hash, left_count), (right_hash, right_count) = left, right
    if left_count + right_count == 0:
        return merkle.EMPTY_ROOT
    if left_count + right_count == 1:  # a lone leaf is the root itself
        return left_hash if left_count else right_hash
    return merkle.node_hash(left_hash, right_hash)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: exit once the process that started the pool (pid `parent`) is gone;
    its pid is our parent's until then. SIGINT (a terminal's Ctrl-C reaches the whole process
    group) is the parent's to handle: ignored here, so no KeyboardInterrupt traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parallel-parent-watch", daemon=True).start()


def start_pool() -> multiprocessing.pool.Pool:
    """The worker pool, started now if it is not running (spawned: safe from any thread)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = multiprocessing.get_context("spawn").Pool(
                1, initializer=_die_with_parent, initargs=(os.getpid(),)
            )
        return _pool


def stop_pool() -> None:
    """Terminate the worker (a hung one included); the next parallel call starts another."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.terminate()
        pool.join()


atexit.register(stop_pool)


def _submit(half: tuple[list[bytes], list[bytes]]) -> Any:
    """The worker's pending result for `half`, or None when no pool can be started."""
    try:
        return start_pool().apply_async(_worker_half, half)
    except (OSError, ValueError, RuntimeError) as error:  # no processes, closed pool
        logger.warning("parallel.pool_unavailable error=%s", type(error).__name__)
        stop_pool()
        return None


def state_root(
    pairs: list[tuple[bytes, bytes]],
    *,
    min_keys: int = PARALLEL_MIN_KEYS,
    timeout_s: float | None = None,
) -> bytes:
    """The Merkle root of `pairs` (unique keys), on two processes when it pays. `timeout_s`:
    how long to wait for the worker after the parent's half is done (None: the default rule
    of the module docstring); past it the parent computes the right half itself."""
    if len(pairs) < min_keys or (os.cpu_count() or 1) < 2:
        return merkle.reference_root(pairs)
    sha, kd = hashlib.sha256, merkle.KEY_DOMAIN
    khs = [sha(kd + key).digest() for key, _ in pairs]
    bits = [kh[0] >> 7 for kh in khs]
    halves = tuple(
        (
            [kh for kh, bit in zip(khs, bits, strict=True) if bit == side],
            [p[1] for p, bit in zip(pairs, bits, strict=True) if bit == side],
        )
        for side in (0, 1)
    )
    pending = _submit(halves[1])
    started = time.monotonic()
    left = _half_root(*halves[0])
    right: tuple[bytes, int] | None = None
    if pending is not None:
        wait_s = (
            timeout_s
            if timeout_s is not None
            else max(WAIT_MIN_S, 2 * (time.monotonic() - started))
        )
        try:
            digest, count = pending.get(timeout=wait_s)
            if isinstance(digest, bytes) and len(digest) == 32 and count == len(halves[1][0]):
                right = (digest, count)
        except multiprocessing.TimeoutError:
            logger.warning("parallel.worker_timeout keys=%d wait_s=%.1f", len(pairs), wait_s)
            stop_pool()  # a worker that did not answer in time may be stuck: start afresh
        except Exception as error:  # whatever the worker raised: the parent does it instead
            logger.warning("parallel.worker_failed error=%s", type(error).__name__)
    if right is None:
        right = _half_root(*halves[1])
    return _combine(left, right)
