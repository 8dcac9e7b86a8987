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
from collections.abc import Iterable
from typing import Any

from node.core import merkle
from node.store.flattree import FlatTree, bucket_hashes, depth_for

logger = logging.getLogger("perpchain.store")

PARALLEL_MIN_KEYS = 20_000
WAIT_MIN_S = 10.0  # covers a cold worker's start (imports, ~0.3 s) with a wide margin
PARENT_POLL_S = 0.5  # how often the worker checks that its parent is still alive

_pool: multiprocessing.pool.Pool | None = None
_pool_lock = threading.Lock()


def _leaves(pairs: list[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """(key hashes, leaf hashes) of pairs, in their order: two thirds of the hashing."""
    sha, kd, vd, ld = hashlib.sha256, merkle.KEY_DOMAIN, merkle.VALUE_DOMAIN, merkle.LEAF_DOMAIN
    khs = [sha(kd + key).digest() for key, _ in pairs]
    leaves = [
        sha(ld + kh + sha(vd + value).digest()).digest()
        for kh, (_, value) in zip(khs, pairs, strict=True)
    ]
    return khs, leaves


def _half_root(khs: list[bytes], leaves: list[bytes]) -> tuple[bytes, int]:
    """(subtree hash at depth 1, leaf count) of one half: the other third of the hashing."""
    order = sorted(range(len(khs)), key=khs.__getitem__)
    ints = [int.from_bytes(khs[i], "big") for i in order]
    return merkle.subtree_root(ints, [leaves[i] for i in order], 1), len(khs)


# What the worker runs; module attributes so a test can substitute a slow or failing one.
_worker_leaves = _leaves
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


def _submit(function: Any, *args: Any) -> Any:
    """The worker's pending result of `function(*args)`, or None when no pool can start."""
    try:
        return start_pool().apply_async(function, args)
    except (OSError, ValueError, RuntimeError) as error:  # no processes, closed pool
        logger.warning("parallel.pool_unavailable error=%s", type(error).__name__)
        stop_pool()
        return None


def _await(pending: Any, started: float, timeout_s: float | None, keys: int) -> Any:
    """The worker's answer, or None (then the parent does that part itself): waited for at
    most `timeout_s` after the parent's own part, started at `started`, is done."""
    if pending is None:
        return None
    wait_s = (
        timeout_s if timeout_s is not None else max(WAIT_MIN_S, 2 * (time.monotonic() - started))
    )
    try:
        return pending.get(timeout=wait_s)
    except multiprocessing.TimeoutError:
        logger.warning("parallel.worker_timeout keys=%d wait_s=%.1f", keys, wait_s)
        stop_pool()  # a worker that did not answer in time may be stuck: start afresh
    except Exception as error:  # whatever the worker raised: the parent does it instead
        logger.warning("parallel.worker_failed error=%s", type(error).__name__)
    return None


def state_root(
    pairs: list[tuple[bytes, bytes]],
    *,
    min_keys: int = PARALLEL_MIN_KEYS,
    timeout_s: float | None = None,
) -> bytes:
    """The Merkle root of `pairs` (unique keys), on two processes when it pays. `timeout_s`:
    how long to wait for the worker after the parent's part is done (None: the default rule
    of the module docstring); past it the parent computes that part itself.

    Two rounds, each split evenly: the leaves of each half of the pairs (key, value and leaf
    hashes), then the subtree of each half of the key-hash space (the internal nodes)."""
    if len(pairs) < min_keys or (os.cpu_count() or 1) < 2:
        return merkle.reference_root(pairs)
    middle = len(pairs) // 2
    started = time.monotonic()
    pending = _submit(_worker_leaves, pairs[middle:])
    khs, leaves = _leaves(pairs[:middle])
    answer = _await(pending, started, timeout_s, len(pairs))
    if (
        type(answer) is not tuple
        or len(answer) != 2
        or len(answer[0]) != len(pairs) - middle
        or len(answer[1]) != len(pairs) - middle
    ):
        answer = _leaves(pairs[middle:])
    khs += answer[0]
    leaves += answer[1]
    sides: tuple[tuple[list[bytes], list[bytes]], tuple[list[bytes], list[bytes]]] = (
        ([], []),
        ([], []),
    )
    for kh, leaf in zip(khs, leaves, strict=True):
        side = sides[kh[0] >> 7]
        side[0].append(kh)
        side[1].append(leaf)
    started = time.monotonic()
    pending = _submit(_worker_half, *sides[1])
    left = _half_root(*sides[0])
    right = _await(pending, started, timeout_s, len(pairs))
    if not (
        type(right) is tuple
        and len(right) == 2
        and isinstance(right[0], bytes)
        and len(right[0]) == 32
        and right[1] == len(sides[1][0])
    ):
        right = _half_root(*sides[1])
    return _combine(left, right)


def _records(pairs: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The 64-byte tree records (key hash + value hash) of pairs, in their order."""
    sha, kd, vd = hashlib.sha256, merkle.KEY_DOMAIN, merkle.VALUE_DOMAIN
    return [sha(kd + key).digest() + sha(vd + value).digest() for key, value in pairs]


# What the worker runs for flat_tree (module attributes, as above).
_worker_records = _records
_worker_bucket_hashes = bucket_hashes


def flat_tree(
    pairs: Iterable[tuple[bytes, bytes]],
    *,
    min_keys: int = PARALLEL_MIN_KEYS,
    timeout_s: float | None = None,
) -> FlatTree:
    """The tree of the state `pairs` (unique keys, any order): the rebuild of an open after an
    unclean shutdown, a repair, an import. Two rounds split evenly over two processes, as
    state_root: the records of each half of the pairs, then the hashes of each half of the
    buckets; the parent sorts, cuts and hashes the top."""
    items = pairs if isinstance(pairs, list) else list(pairs)
    if len(items) < min_keys or (os.cpu_count() or 1) < 2:
        return FlatTree.from_sorted_records(sorted(_records(items)), len(items))
    middle = len(items) // 2
    started = time.monotonic()
    pending = _submit(_worker_records, items[middle:])
    records = _records(items[:middle])
    answer = _await(pending, started, timeout_s, len(items))
    if type(answer) is not list or len(answer) != len(items) - middle:
        answer = _records(items[middle:])
    records += answer
    del items, answer
    records.sort()
    count = len(records)
    depth = depth_for(count)
    buckets = FlatTree.cut(records, depth)
    del records
    return _hashed(buckets, count, depth, timeout_s)


def regrown(tree: FlatTree, *, timeout_s: float | None = None) -> FlatTree:
    """`tree` with its buckets cut again for its size (FlatTree.recut), hashed on two
    processes: the pause of a state that doubled. `tree` is empty afterwards."""
    buckets, count, depth = tree.recut()
    if count < PARALLEL_MIN_KEYS or (os.cpu_count() or 1) < 2:
        return FlatTree.assemble(buckets, count, depth, bucket_hashes(buckets, depth))
    return _hashed(buckets, count, depth, timeout_s)


def _hashed(buckets: list[bytes], count: int, depth: int, timeout_s: float | None) -> FlatTree:
    """The tree over cut buckets, each half of the buckets hashed by one process."""
    half = len(buckets) // 2
    started = time.monotonic()
    pending = _submit(_worker_bucket_hashes, buckets[half:], depth)
    hashed = bucket_hashes(buckets[:half], depth)
    second = _await(pending, started, timeout_s, count)
    if type(second) is not list or len(second) != len(buckets) - half:
        second = bucket_hashes(buckets[half:], depth)
    return FlatTree.assemble(buckets, count, depth, hashed + second)
