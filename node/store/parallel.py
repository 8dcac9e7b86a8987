"""The state's hashing on two cores: `state_root` (verify) and `flat_tree` (the rebuild of an
open after an unclean shutdown, a repair, an import), and the regrow of a grown tree.
Imports node.core.merkle and node.store.flattree.

Both stream the pairs in chunks of CHUNK_PAIRS, hashed by both processes: a chunk goes to the
worker while fewer than WORKER_QUEUE wait there, else the parent hashes it (the parent also
reads and sends the pairs, so the split follows the two processes' speeds). Memory holds 64
bytes a key and a few chunks of pairs, never the state as a list of pairs. The records come
back split by the first bit of the key hash, the two halves of the tree. `state_root` sends
the right half to the worker, which sorts it and hashes its subtree while the parent does the
left one; in `flat_tree` each process sorts its half's (key hash, value hash) records, cuts
them into that half's buckets and hashes them, and the parent assembles the top. The root is
the node over the halves (with the single-leaf and empty-side rules of node.core.merkle).
What crosses between the processes is packed into a few large bytes objects (flattree's
pack_*), never lists of small ones.

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

import array
import atexit
import collections
import contextlib
import hashlib
import itertools
import logging
import multiprocessing
import multiprocessing.pool
import operator
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeGuard

from node.core import merkle
from node.store import flattree
from node.store.errors import StoreCorrupted
from node.store.flattree import FlatTree, depth_for

logger = logging.getLogger("perpchain.store")

PARALLEL_MIN_KEYS = 20_000
WAIT_MIN_S = 10.0  # covers a cold worker's start (imports, ~0.3 s) with a wide margin
PARENT_POLL_S = 0.5  # how often the worker checks that its parent is still alive

_pool: multiprocessing.pool.Pool | None = None
_pool_lock = threading.Lock()


CHUNK_PAIRS = 50_000  # pairs per chunk of the first round
WORKER_QUEUE = 2  # chunks waiting at the worker: it never idles while the parent reads
RECORD = 64  # key hash || leaf hash (state_root) or key hash || value hash (flat_tree)
BIN_BITS = 8  # a large half is sorted and hashed in 2**8 bins (_root_of_records)
BIN_MIN = 1 << 16  # records of a half below which it is sorted whole

# What crosses to the worker and back is a few large bytes objects, never lists of small
# ones: pickling 50,000 pairs took ~20 ms of the parent's GIL a chunk (in the pool's feeder
# thread, fighting the hashing for it); joining them takes ~4 ms, and the worker's answer is
# two blobs of records.
Packed = tuple[bytes, bytes, bytes, bytes, int]  # keys, their lengths, values, theirs, strip
Halves = tuple[list[bytes], list[bytes]]  # 64-byte records by the first bit of the key hash


def _pack(pairs: list[tuple[bytes, bytes]], strip: int) -> Packed:
    keys = list(map(operator.itemgetter(0), pairs))
    values = list(map(operator.itemgetter(1), pairs))
    return (
        b"".join(keys),
        array.array("I", map(len, keys)).tobytes(),
        b"".join(values),
        array.array("I", map(len, values)).tobytes(),
        strip,
    )


def _unpack(packed: Packed) -> Iterator[tuple[bytes, bytes]]:
    """The pairs of a packed chunk, `strip` bytes cut off each key (sliced in C: no loop)."""
    keys, key_lengths, values, value_lengths, strip = packed

    def pieces(blob: bytes, lengths: bytes, skip: int) -> Iterator[bytes]:
        ends = list(itertools.accumulate(array.array("I", lengths)))
        starts = [skip + start for start in itertools.chain((0,), ends[:-1])]
        return map(blob.__getitem__, map(slice, starts, ends))

    return zip(pieces(keys, key_lengths, strip), pieces(values, value_lengths, 0), strict=True)


def _hash_pairs(pairs: Iterable[tuple[bytes, bytes]], strip: int, leaf: bool) -> Halves:
    """The 64-byte records of pairs (`strip` bytes cut off each key first), split into the
    two halves of the tree by the first bit of the key hash: key hash || leaf hash when
    `leaf` (state_root: two thirds of its hashing), else key hash || value hash (flat_tree)."""
    sha, kd, vd, ld = hashlib.sha256, merkle.KEY_DOMAIN, merkle.VALUE_DOMAIN, merkle.LEAF_DOMAIN
    left: list[bytes] = []
    right: list[bytes] = []
    appends = (left.append, right.append)
    if leaf:
        for key, value in pairs:
            kh = sha(kd + key[strip:]).digest()
            appends[kh[0] >> 7](kh + sha(ld + kh + sha(vd + value).digest()).digest())
    else:
        for key, value in pairs:
            kh = sha(kd + key[strip:]).digest()
            appends[kh[0] >> 7](kh + sha(vd + value).digest())
    return left, right


def _hash_packed(packed: Packed, leaf: bool) -> tuple[bytes, bytes]:
    """The worker's part of the first round: _hash_pairs of a packed chunk, as two blobs."""
    left, right = _hash_pairs(_unpack(packed), 0, leaf)
    return b"".join(left), b"".join(right)


def _records(blobs: list[bytes], into: list[bytes] | None = None) -> list[bytes]:
    """The RECORD-byte records of joined blobs, appended to `into` (a new list by default)."""
    records: list[bytes] = [] if into is None else into
    for blob in blobs:
        size = len(blob)
        records.extend(
            map(
                blob.__getitem__,
                map(slice, range(0, size, RECORD), range(RECORD, size + 1, RECORD)),
            )
        )
    return records


class Half:
    """One half of the tree's records: the parent's own (a list) and the worker's (blobs)."""

    __slots__ = ("own", "blobs")

    def __init__(self) -> None:
        self.own: list[bytes] = []
        self.blobs: list[bytes] = []

    def __len__(self) -> int:
        return len(self.own) + sum(len(blob) for blob in self.blobs) // RECORD

    def records(self) -> list[bytes]:
        """Every record, as a list (the parent's own list, extended: call once)."""
        records, self.blobs = _records(self.blobs, self.own), []
        return records

    def packed(self) -> list[bytes]:
        """The records as a few blobs, to send."""
        return [b"".join(self.own), *self.blobs]


def _half_root(parts: list[bytes]) -> tuple[bytes, int]:
    """(subtree hash at depth 1, leaf count) of one half's leaf records, given as blobs of
    records in any order (sorted here): the other third of the hashing. ValueError on two
    equal key hashes."""
    return _root_of_records(_records(parts))


def _root_of_records(records: list[bytes]) -> tuple[bytes, int]:
    """(subtree hash at depth 1, leaf count) of one half's leaf records, in any order.

    A large half is first cut into 2**BIN_BITS bins by the key hash bits after the half's,
    and each bin is sorted and hashed on its own, then the bins' top: sorting 5 M scattered
    64-byte records at once costs ~1 us a record in cache misses (0.6 at 0.5 M), and so does
    building their ints in sorted order; a bin's ~20,000 fit in the cache."""
    count = len(records)
    if count < BIN_MIN:
        return _sorted_root(records, 1), count
    hashed = []
    for part in _bins(records):
        if not part:
            hashed.append((merkle.EMPTY, 0))
        elif len(part) == 1:
            hashed.append((part[0][32:], 1))  # a lone leaf rises
        else:
            hashed.append((_sorted_root(part, 1 + BIN_BITS), 2))
    hashes, _ = flattree.heap_of(hashed)
    return bytes(hashes[32:64]), count  # node 1: the half, at depth 1


def _bins(records: list[bytes]) -> list[list[bytes]]:
    """One half's records in 2**BIN_BITS lists by key hash bits 1-8 (bit 0 is the half's),
    in key order: each to sort on its own (see _root_of_records)."""
    bins: list[list[bytes]] = [[] for _ in range(1 << BIN_BITS)]
    appends = [part.append for part in bins]
    for record in records:
        appends[(record[0] << 1 & 0xFE) | record[1] >> 7](record)
    return bins


def _sorted_half(records: list[bytes]) -> list[bytes]:
    """One half's records sorted (flat_tree's halves): a large half bin by bin."""
    if len(records) < BIN_MIN:
        records.sort()
        return records
    ordered: list[bytes] = []
    for part in _bins(records):
        part.sort()
        ordered.extend(part)
    return ordered


def _sorted_root(records: list[bytes], depth: int) -> bytes:
    """merkle.subtree_root at `depth` of leaf records that share their first `depth` bits,
    sorted here (ValueError on two equal key hashes)."""
    records.sort()
    ints = [int.from_bytes(record[:32], "big") for record in records]
    leaves = [record[32:] for record in records]
    return merkle.subtree_root(ints, leaves, depth)


# What the worker runs; module attributes so a test can substitute a slow or failing one.
_worker_chunk = _hash_packed
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
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # ignored now: see spawning()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@contextlib.contextmanager
def spawning() -> Iterator[None]:
    """SIGINT blocked in this thread while it spawns workers. A spawned child inherits the
    signal mask through exec, so a Ctrl-C (SIGINT to the whole process group) that lands while
    the child still imports, before die_with_parent ignores SIGINT, stays pending and is then
    dropped, instead of a KeyboardInterrupt traceback in the node's output. The parent's own
    SIGINT goes to its other threads meanwhile, or waits the few ms of the spawn.

    Known limit: the block holds only where multiprocessing's resource tracker already runs
    (in the node, the admission pool's constructor starts it). Starting the tracker ends
    with SIG_UNBLOCK of SIGINT in the calling thread, so a process's first pool made here
    spawns its worker unblocked. Starting the tracker first measured right, but the Ctrl-C
    test then timed out in 2 of 3 CI runs, the node's SIGINT never handled (its main thread
    idle in trio's epoll): left as it was until that is understood; the test dumps every
    thread of a node that does not stop."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start_pool() -> multiprocessing.pool.Pool:
    """The worker pool, started now if it is not running (spawned: safe from any thread)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            with spawning():
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


def _is_blobs(answer: Any, count: int) -> TypeGuard[tuple[bytes, bytes]]:
    return (
        type(answer) is tuple
        and len(answer) == 2
        and all(type(blob) is bytes for blob in answer)
        and len(answer[0]) + len(answer[1]) == count * RECORD
    )


def _mapped(
    pairs: Iterator[tuple[bytes, bytes]], strip: int, leaf: bool, timeout_s: float | None
) -> tuple[Half, Half]:
    """_hash_pairs over the chunks of `pairs`, by both processes: the two halves' records.

    The worker is kept fed: a chunk goes to it while fewer than WORKER_QUEUE wait there, and
    the parent hashes a chunk itself only when the worker's queue is full. So the split of
    the work follows the two processes' speeds (the parent also reads the pairs and packs
    what it sends) instead of being half and half."""
    left, right = Half(), Half()
    waiting: collections.deque[tuple[Any, list[tuple[bytes, bytes]], float]] = collections.deque()
    use_worker = (os.cpu_count() or 1) >= 2

    def own(chunk: list[tuple[bytes, bytes]]) -> None:
        own_left, own_right = _hash_pairs(chunk, strip, leaf)
        left.own.extend(own_left)
        right.own.extend(own_right)

    def collect(block: bool) -> None:
        nonlocal use_worker
        while waiting and (block or waiting[0][0].ready()):
            pending, sent, started = waiting.popleft()
            # After one failure the others are not waited for: their pool may be gone.
            answer = _await(pending, started, timeout_s, len(sent)) if use_worker else None
            if _is_blobs(answer, len(sent)):
                left.blobs.append(answer[0])
                right.blobs.append(answer[1])
            else:
                use_worker = False
                own(sent)

    while chunk := list(itertools.islice(pairs, CHUNK_PAIRS)):
        if use_worker and len(waiting) < WORKER_QUEUE:
            pending = _submit(_worker_chunk, _pack(chunk, strip), leaf)
            if pending is not None:
                waiting.append((pending, chunk, time.monotonic()))
                continue
            use_worker = False
        own(chunk)
        collect(block=not use_worker)
    collect(block=True)
    return left, right


def state_root(
    pairs: Iterable[tuple[bytes, bytes]],
    *,
    strip: int = 0,
    min_keys: int = PARALLEL_MIN_KEYS,
    timeout_s: float | None = None,
) -> bytes:
    """The Merkle root of `pairs` (unique keys, any order; a list or a stream), on two
    processes when it pays (module docstring). `strip`: bytes to cut off each key first (a
    LevelDB scan's table prefix: cut where the key is hashed, not by a generator in between).
    `timeout_s`: how long to wait for the worker after the parent's part is done (None: the
    default rule); past it the parent does it."""
    head, rest = _head(pairs, max(min_keys, 1))
    if len(head) < min_keys or (os.cpu_count() or 1) < 2:
        return merkle.reference_root([(key[strip:], value) for key, value in head])
    left_half, right_half = _mapped(itertools.chain(head, rest), strip, True, timeout_s)
    del head
    count = len(right_half)
    started = time.monotonic()
    pending = _submit(_worker_half, right_half.packed())  # the worker sorts and hashes it
    left = _root_of_records(left_half.records())
    del left_half
    right = _await(pending, started, timeout_s, count)
    if not (
        type(right) is tuple
        and len(right) == 2
        and isinstance(right[0], bytes)
        and len(right[0]) == 32
        and right[1] == count
    ):
        right = _root_of_records(right_half.records())
    return _combine(left, right)


def _sorted(left: list[bytes], right: list[bytes]) -> list[bytes]:
    """The records of both halves in key-hash order (each half sorted; left before right)."""
    left.sort()
    right.sort()
    left.extend(right)
    return left


def _half_tree(parts: list[bytes], depth: int) -> tuple[bytes, bytes, bytes]:
    """The worker's part of flat_tree: the right half's (key hash, value hash) records, given
    as blobs in any order, sorted, cut into that half's buckets of `depth` and hashed; as
    (records in bucket order, counts, hashes) to send back (flattree's pack_*)."""
    records = _sorted_half(_records(parts))
    half = 1 << (depth - 1)
    buckets = flattree.split_sorted(records, depth, half, half)
    del records
    blob, counts = flattree.pack_buckets(buckets)
    return blob, counts, flattree.pack_hashes(_bucket_hashes(buckets, depth))


def _hash_packed_buckets(blob: bytes, counts: bytes, depth: int) -> bytes:
    """The worker's part of a regrow: hashes of packed buckets (flattree.pack_hashes)."""
    buckets = flattree.unpack_buckets(blob, array.array("I", counts))
    return flattree.pack_hashes(_bucket_hashes(buckets, depth))


def _bucket_hashes(buckets: list[bytes], depth: int) -> list[tuple[bytes, int]]:
    """bucket_hashes, a repeated key hash (two keys alike: never from a LevelDB table) as
    StoreCorrupted."""
    try:
        return flattree.bucket_hashes(buckets, depth)
    except ValueError:
        raise StoreCorrupted("two leaves with one key hash") from None


# What the worker runs for flat_tree and regrown (module attributes, as above).
_worker_half_tree = _half_tree
_worker_bucket_hashes = _hash_packed_buckets


def flat_tree(
    pairs: Iterable[tuple[bytes, bytes]],
    *,
    strip: int = 0,
    min_keys: int = PARALLEL_MIN_KEYS,
    timeout_s: float | None = None,
) -> FlatTree:
    """The tree of the state `pairs` (unique keys, any order; a list or a stream), hashed on
    two processes when it pays (module docstring); `strip` as for state_root."""
    head, rest = _head(pairs, max(min_keys, 1))
    if len(head) < min_keys or (os.cpu_count() or 1) < 2:
        records = _sorted(*_hash_pairs(head, strip, False))
        return FlatTree.from_sorted_records(records, len(records))
    left_half, right_half = _mapped(itertools.chain(head, rest), strip, False, timeout_s)
    del head
    right_count = len(right_half)
    count = len(left_half) + right_count
    depth = depth_for(count)
    half = 1 << (depth - 1)
    started = time.monotonic()
    pending = _submit(_worker_half_tree, right_half.packed(), depth)
    records = _sorted_half(left_half.records())
    del left_half
    buckets = flattree.split_sorted(records, depth, 0, half)
    del records
    hashed = _bucket_hashes(buckets, depth)
    answer = _await(pending, started, timeout_s, count)
    if not _is_half_tree(answer, half, right_count):  # no answer, or not the half it was sent
        answer = _half_tree(right_half.packed(), depth)
    blob, counts, hashes = answer
    flattree.unpack_buckets(blob, array.array("I", counts), buckets)
    hashed.extend(flattree.unpack_hashes(hashes))
    return FlatTree.assemble(buckets, count, depth, hashed)


def _is_half_tree(answer: Any, buckets: int, records: int) -> TypeGuard[tuple[bytes, bytes, bytes]]:
    """`answer` is _half_tree's for `buckets` buckets holding `records` records."""
    return (
        type(answer) is tuple
        and len(answer) == 3
        and all(type(part) is bytes for part in answer)
        and len(answer[1]) == 4 * buckets
        and len(answer[2]) == 33 * buckets
        and len(answer[0]) == records * RECORD == sum(array.array("I", answer[1])) * RECORD
    )


def regrown(tree: FlatTree, *, timeout_s: float | None = None) -> FlatTree:
    """`tree` with its buckets cut again for its size (FlatTree.recut), hashed on two
    processes: the pause of a state that outgrew its buckets. `tree` is empty afterwards."""
    buckets, count, depth = tree.recut()
    if count < PARALLEL_MIN_KEYS or (os.cpu_count() or 1) < 2:
        return FlatTree.assemble(buckets, count, depth, _bucket_hashes(buckets, depth))
    half = len(buckets) // 2
    started = time.monotonic()
    pending = _submit(_worker_bucket_hashes, *flattree.pack_buckets(buckets[half:]), depth)
    hashed = _bucket_hashes(buckets[:half], depth)
    answer = _await(pending, started, timeout_s, count)
    second = flattree.unpack_hashes(answer) if type(answer) is bytes else []
    if len(second) != len(buckets) - half:
        second = _bucket_hashes(buckets[half:], depth)
    return FlatTree.assemble(buckets, count, depth, hashed + second)
