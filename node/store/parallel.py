"""The state's hashing on two cores: `state_root` (verify) and `flat_tree` (the rebuild of an
open after an unclean shutdown, a repair, an import), and the regrow of a doubled tree.
Imports node.core.merkle and node.store.flattree.

Both stream the pairs in chunks of CHUNK_PAIRS: the worker hashes every other chunk while the
parent hashes the next (one chunk in flight), so memory holds 64 bytes a key and a chunk of
pairs, never the state as a list of pairs. `state_root` then sorts the (key hash, leaf hash)
records and the two halves of the key-hash space are hashed one by each process; `flat_tree`
sorts the (key hash, value hash) records, cuts them into the tree's buckets, and each process
hashes half of the buckets. The root is the node over the halves (with the single-leaf and
empty-side rules of node.core.merkle).

The worker is one process of a pool started with the *spawn* method (issue 20 §6): the node
calls this from a running, threaded program, and a `fork()` there copies locks that other
threads hold (logging, the allocator, LevelDB's), so the child can deadlock on its first use of
one. A spawned worker is a fresh interpreter that inherits no thread, lock or socket. The pool
is started on first use (or by `start_pool()`) and kept for later calls; its worker exits when
the process that started it is gone (a node killed with SIGKILL never shuts its pool down).

The worker is an optimisation only. Its answer is awaited for at most `timeout_s` after the
parent's own part is done (default: twice the parent's time, at least WAIT_MIN_S); on a
timeout, a dead worker, a wrong answer or a pool that cannot start, the pool is terminated
(the next call starts a new one) and the parent does that part itself: the same root, later.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import logging
import multiprocessing
import multiprocessing.pool
import os
import signal
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from node.core import merkle
from node.store.flattree import FlatTree, bucket_hashes, depth_for

logger = logging.getLogger("perpchain.store")

PARALLEL_MIN_KEYS = 20_000
WAIT_MIN_S = 10.0  # covers a cold worker's start (imports, ~0.3 s) with a wide margin
PARENT_POLL_S = 0.5  # how often the worker checks that its parent is still alive

_pool: multiprocessing.pool.Pool | None = None
_pool_lock = threading.Lock()


CHUNK_PAIRS = 50_000  # pairs per chunk of the first round


def _leaves(pairs: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The 64-byte records key hash || leaf hash of pairs: two thirds of the hashing."""
    sha, kd, vd, ld = hashlib.sha256, merkle.KEY_DOMAIN, merkle.VALUE_DOMAIN, merkle.LEAF_DOMAIN
    out = []
    for key, value in pairs:
        kh = sha(kd + key).digest()
        out.append(kh + sha(ld + kh + sha(vd + value).digest()).digest())
    return out


def _half_root(records: list[bytes]) -> tuple[bytes, int]:
    """(subtree hash at depth 1, leaf count) of one half of sorted leaf records: the other
    third of the hashing."""
    ints = [int.from_bytes(record[:32], "big") for record in records]
    leaves = [record[32:] for record in records]
    return merkle.subtree_root(ints, leaves, 1), len(records)


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


def die_with_parent(parent: int) -> None:
    """Worker initializer (this pool's and node.chain.admission's): exit as soon as the
    process that spawned the worker (pid `parent`, taken by the parent: it may be dead before
    this runs) is gone. A node killed with SIGKILL never shuts its pools down, and a worker
    would wait on its queue for ever (the kill -9 tests once left 120 of them); the parent's
    pid changes when it dies. SIGINT is ignored: a Ctrl-C in a terminal reaches the whole
    process group, and the parent, not its worker, decides how to stop (no KeyboardInterrupt
    traceback from the worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def start_pool() -> multiprocessing.pool.Pool:
    """The worker pool, started now if it is not running (spawned: safe from any thread)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = multiprocessing.get_context("spawn").Pool(
                1, initializer=die_with_parent, initargs=(os.getpid(),)
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


def _head(pairs: Iterable[tuple[bytes, bytes]], count: int) -> tuple[list[Any], Iterator[Any]]:
    """The first `count` pairs as a list, and the iterator of the rest."""
    rest = iter(pairs)
    return list(itertools.islice(rest, count)), rest


def _mapped(
    function: Any, worker: Any, pairs: Iterator[tuple[bytes, bytes]], timeout_s: float | None
) -> list[bytes]:
    """function(chunk) over the chunks of `pairs`, every other chunk in the worker (one in
    flight), the result lists concatenated in some order."""
    out: list[bytes] = []
    pending: Any = None
    sent: list[tuple[bytes, bytes]] = []
    use_worker = (os.cpu_count() or 1) >= 2
    while chunk := list(itertools.islice(pairs, CHUNK_PAIRS)):
        if use_worker and pending is None:
            pending, sent = _submit(worker, chunk), chunk
            if pending is not None:
                continue
            use_worker = False
        started = time.monotonic()
        out += function(chunk)
        if pending is not None:
            answer = _await(pending, started, timeout_s, len(sent))
            if type(answer) is not list or len(answer) != len(sent):
                answer, use_worker = function(sent), False
            out += answer
            pending, sent = None, []
    if pending is not None:
        answer = _await(pending, time.monotonic(), timeout_s, len(sent))
        if type(answer) is not list or len(answer) != len(sent):
            answer = function(sent)
        out += answer
    return out


def state_root(
    pairs: Iterable[tuple[bytes, bytes]],
    *,
    min_keys: int = PARALLEL_MIN_KEYS,
    timeout_s: float | None = None,
) -> bytes:
    """The Merkle root of `pairs` (unique keys, any order; a list or a stream), on two
    processes when it pays (module docstring). `timeout_s`: how long to wait for the worker
    after the parent's part is done (None: the default rule); past it the parent does it."""
    head, rest = _head(pairs, max(min_keys, 1))
    if len(head) < min_keys or (os.cpu_count() or 1) < 2:
        return merkle.reference_root(head)
    records = _mapped(_leaves, _worker_leaves, itertools.chain(head, rest), timeout_s)
    del head
    records.sort()
    for position in range(1, len(records)):
        if records[position][:32] == records[position - 1][:32]:
            raise ValueError("two pairs with one key")
    middle = bisect_left(records, b"\x80")
    right_records = records[middle:]
    started = time.monotonic()
    pending = _submit(_worker_half, right_records)
    left = _half_root(records[:middle])
    del records
    right = _await(pending, started, timeout_s, len(right_records))
    if not (
        type(right) is tuple
        and len(right) == 2
        and isinstance(right[0], bytes)
        and len(right[0]) == 32
        and right[1] == len(right_records)
    ):
        right = _half_root(right_records)
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
    """The tree of the state `pairs` (unique keys, any order; a list or a stream), hashed on
    two processes when it pays (module docstring)."""
    head, rest = _head(pairs, max(min_keys, 1))
    if len(head) < min_keys or (os.cpu_count() or 1) < 2:
        records = _records(head)
        records.sort()
        return FlatTree.from_sorted_records(records, len(records))
    records = _mapped(_records, _worker_records, itertools.chain(head, rest), timeout_s)
    del head
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
