"""The two-process root equals the reference root, including the single-leaf and empty-side
cases at the top of the tree."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core import merkle
from node.store import parallel


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=8), st.binary(max_size=8), max_size=40))
def test_parallel_root_is_the_reference_root(pairs: dict[bytes, bytes]) -> None:
    items = sorted(pairs.items())
    assert parallel.state_root(items, min_keys=0) == merkle.reference_root(items)


def test_large_state_takes_the_parallel_path() -> None:
    items = [(b"key%06d" % i, b"v%d" % i) for i in range(30_000)]
    assert parallel.state_root(items) == merkle.reference_root(items)


def _hung_half(parts: list[bytes]) -> tuple[bytes, int]:
    """A worker that never answers (runs in the spawned worker process)."""
    time.sleep(600)
    raise AssertionError("unreachable")


def _failing_half(parts: list[bytes]) -> tuple[bytes, int]:
    raise RuntimeError("worker failed")


def _wrong_half(parts: list[bytes]) -> tuple[bytes, int]:
    return b"\x00" * 32, sum(map(len, parts)) // 64 + 1


def test_a_hung_worker_times_out_and_the_parent_computes_its_half(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 20 §6: the wait for the worker is bounded; past it the root is still right, the
    stuck worker is terminated and the next call starts a fresh pool that works."""
    items = [(b"key%04d" % i, b"v%d" % i) for i in range(2_000)]
    monkeypatch.setattr(parallel, "_worker_half", _hung_half)
    started = time.monotonic()
    assert parallel.state_root(items, min_keys=0, timeout_s=1.0) == merkle.reference_root(items)
    assert time.monotonic() - started < 30
    assert parallel._pool is None  # the hung worker's pool was terminated
    monkeypatch.setattr(parallel, "_worker_half", parallel._half_root)
    assert parallel.state_root(items, min_keys=0) == merkle.reference_root(items)
    assert parallel._pool is not None


@pytest.mark.parametrize("worker", [_failing_half, _wrong_half])
def test_a_failing_or_wrong_worker_falls_back_to_in_process(
    monkeypatch: pytest.MonkeyPatch, worker: object
) -> None:
    items = [(b"key%04d" % i, b"v%d" % i) for i in range(500)]
    monkeypatch.setattr(parallel, "_worker_half", worker)
    assert parallel.state_root(items, min_keys=0) == merkle.reference_root(items)


def test_no_pool_falls_back_to_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_processes() -> None:
        raise OSError("cannot start a process")

    monkeypatch.setattr(parallel, "start_pool", no_processes)
    items = [(b"key%04d" % i, b"v%d" % i) for i in range(500)]
    assert parallel.state_root(items, min_keys=0) == merkle.reference_root(items)


def test_the_worker_is_spawned_not_forked() -> None:
    """A forked child of the threaded node could deadlock on a lock another thread held."""
    pool = parallel.start_pool()
    assert pool._ctx.get_start_method() == "spawn"  # type: ignore[attr-defined]


def test_the_two_process_rebuild_is_the_tree_of_the_pairs() -> None:
    """flat_tree (the open after an unclean shutdown) on two processes: the same tree as one."""
    from node.store.flattree import FlatTree

    items = [(b"key%05d" % i, b"v%d" % (i % 13)) for i in range(3_000)]
    tree = parallel.flat_tree(iter(items), min_keys=0)
    one = FlatTree.from_pairs(items)
    assert tree.root() == one.root() == merkle.reference_root(items) and tree.count == 3_000
    assert tree.prove(b"key00042") == one.prove(b"key00042")


def _hung_chunk(packed: parallel.Packed, leaf: bool) -> tuple[bytes, bytes]:
    time.sleep(600)
    raise AssertionError("unreachable")


def test_a_stream_in_chunks_and_a_hung_first_round_still_give_the_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pairs come as a stream (a LevelDB iterator in the store), hashed a chunk at a time,
    every other chunk by the worker; a worker hung in that round is waited for at most the
    timeout, and the parent hashes its chunk."""
    from node.store.flattree import FlatTree

    monkeypatch.setattr(parallel, "CHUNK_PAIRS", 500)
    items = [(b"key%05d" % i, b"v%d" % (i % 7)) for i in range(3_100)]
    assert parallel.state_root(iter(items), min_keys=0) == merkle.reference_root(items)
    assert parallel.flat_tree(iter(items), min_keys=0).root() == FlatTree.from_pairs(items).root()
    monkeypatch.setattr(parallel, "_worker_chunk", _hung_chunk)
    started = time.monotonic()
    assert parallel.state_root(iter(items), min_keys=0, timeout_s=1.0) == merkle.reference_root(
        items
    )
    assert 1.0 <= time.monotonic() - started < 30  # waited out, then done by the parent
    with pytest.raises(ValueError, match="one key"):
        parallel.state_root(iter(items + items[:1]), min_keys=0)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.binary(min_size=1, max_size=300), st.binary(max_size=40), max_size=30),
    st.integers(0, 2),
)
def test_a_packed_chunk_unpacks_to_its_pairs_with_the_prefix_cut(
    pairs: dict[bytes, bytes], strip: int
) -> None:
    """Chunks cross to the worker as two blobs and two length arrays; the worker gets every
    pair back, keys without the table prefix, empty values included."""
    items = [(bytes(strip) + key, value) for key, value in sorted(pairs.items())]
    assert list(parallel._unpack(parallel._pack(items, strip))) == sorted(pairs.items())


@pytest.mark.parametrize("count", [300, 30_000])
def test_a_prefixed_scan_gives_the_root_of_the_unprefixed_pairs(count: int) -> None:
    """The store hands its LevelDB scan over as is (keys with the flat table's prefix) and
    says how many bytes to cut: the same root and tree as the bare pairs, small or parallel."""
    from node.store.flattree import FlatTree

    items = [(b"key%06d" % i, b"v%d" % (i % 11)) for i in range(count)]
    prefixed = [(b"f" + key, value) for key, value in items]
    assert parallel.state_root(iter(prefixed), strip=1) == merkle.reference_root(items)
    tree = parallel.flat_tree(iter(prefixed), strip=1)
    assert tree.root() == FlatTree.from_pairs(items).root() and tree.count == count


def _failing_half_tree(parts: list[bytes], depth: int) -> tuple[bytes, bytes, bytes]:
    raise RuntimeError("worker failed")


def _short_half_tree(parts: list[bytes], depth: int) -> tuple[bytes, bytes, bytes]:
    blob, counts, hashes = parallel._half_tree(parts, depth)
    return blob[:-64], counts, hashes  # a record short: not the half it was sent


def _failing_bucket_hashes(blob: bytes, counts: bytes, depth: int) -> bytes:
    raise RuntimeError("worker failed")


@pytest.mark.parametrize("worker", [_failing_half_tree, _short_half_tree])
def test_a_failing_or_wrong_worker_leaves_the_rebuilt_tree_right(
    monkeypatch: pytest.MonkeyPatch, worker: object
) -> None:
    """The rebuild after an unclean shutdown: a worker that fails or answers another half
    costs time, never the tree (the parent sorts, cuts and hashes that half itself)."""
    from node.store.flattree import FlatTree

    items = [(b"key%05d" % i, b"v%d" % (i % 5)) for i in range(2_500)]
    monkeypatch.setattr(parallel, "_worker_half_tree", worker)
    tree = parallel.flat_tree(iter(items), min_keys=0)
    assert tree.root() == FlatTree.from_pairs(items).root() and tree.count == 2_500


def test_a_failing_worker_leaves_a_regrown_tree_right(monkeypatch: pytest.MonkeyPatch) -> None:
    from node.store.flattree import FlatTree, split_sorted

    items = [(b"key%05d" % i, b"v%d" % (i % 3)) for i in range(30_000)]
    whole = FlatTree.from_pairs(items)
    records = list(whole.iter_records())
    shallow = FlatTree.assemble(*_cut(records, 8, split_sorted))
    monkeypatch.setattr(parallel, "_worker_bucket_hashes", _failing_bucket_hashes)
    regrown = parallel.regrown(shallow)
    assert regrown.depth == whole.depth and regrown.root() == whole.root()


def _cut(records: list[bytes], depth: int, split: Any) -> tuple[list[bytes], int, int, Any]:
    from node.store.flattree import bucket_hashes

    buckets = split(records, depth)
    return buckets, len(records), depth, bucket_hashes(buckets, depth)


_BORN_MASK = """
import multiprocessing, os, signal, sys
from node.store import parallel

def at_start(path):
    with open(path, "w") as out:
        out.write(",".join(str(int(s)) for s in signal.pthread_sigmask(signal.SIG_BLOCK, set())))

if __name__ == "__main__":
    import multiprocessing.resource_tracker
    multiprocessing.resource_tracker.ensure_running()  # as the node's admission pool does
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with parallel.spawning():
        spawn = multiprocessing.get_context("spawn")
        pool = spawn.Pool(1, initializer=at_start, initargs=(sys.argv[1],))
    pool.apply(os.getpid)
    pool.terminate()
    pool.join()
    print(signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before)
"""


def test_a_worker_is_born_with_sigint_blocked(tmp_path: Any) -> None:
    """A Ctrl-C reaches the whole process group. One that lands while a worker still imports,
    before die_with_parent ignores SIGINT, must not end in a KeyboardInterrupt traceback in
    the node's output (CI saw one): workers are spawned with SIGINT blocked, and a spawned
    child keeps the mask through exec. The spawning thread's mask is restored after.

    In a fresh process whose resource tracker runs, as in the node (see spawning's known
    limit: starting the tracker unblocks SIGINT; this test passed in the suite's process only
    because an earlier test had started it, and failed alone)."""
    script = tmp_path / "born.py"
    script.write_text(_BORN_MASK)
    mask = tmp_path / "mask"
    done = subprocess.run(
        [sys.executable, str(script), str(mask)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr
    assert str(int(signal.SIGINT)) in mask.read_text().split(",")
    assert done.stdout.strip() == "True"  # the spawning thread's mask came back


@given(
    keys=st.lists(st.binary(min_size=1, max_size=4), min_size=0, max_size=400, unique=True),
    half=st.sampled_from([0, 1]),
)
@settings(max_examples=60, deadline=None)
def test_a_half_hashed_in_bins_is_the_half_sorted_whole(keys: list[bytes], half: int) -> None:
    """A large half is cut into 256 bins by key hash bits 1-8 and each bin sorted (and hashed)
    on its own: the same order and subtree as the half sorted whole, with empty, single and
    full bins (BIN_MIN lowered so that small halves take the binned path too)."""
    records = []
    for key in keys:
        kh = bytearray(merkle.key_hash(key))
        kh[0] = kh[0] & 0x7F | half << 7  # all in one half
        records.append(bytes(kh) + merkle.leaf_hash(bytes(kh), merkle.value_hash(key)))
    expected = parallel._sorted_root(list(records), 1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parallel, "BIN_MIN", 0)
        assert parallel._root_of_records(list(records)) == (expected, len(records))
        assert parallel._sorted_half(list(records)) == sorted(records)  # flat_tree's halves


def test_a_repeated_key_hash_in_a_binned_half_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "BIN_MIN", 0)
    records = [merkle.key_hash(b"k%d" % i) + bytes(32) for i in range(50)]
    with pytest.raises(ValueError, match="one key hash"):
        parallel._root_of_records(records + records[:1])
