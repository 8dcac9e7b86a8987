"""`scripts/bench store`: our versioned Merkle store beside py-trie's HexaryTrie, on LevelDB.

One run measures, on the same machine and in the same process:
- the block workload: N keys of 32 bytes with 100-byte values, then B blocks of U random
  updates, the root after each block, every block one synced LevelDB batch (both stores);
- proofs/s and mean proof bytes for 10k random keys (both), proof verifications/s (both);
- rollback of 100 blocks (rows removed/s) and `verify()` over the whole state (keys/s);
- the ceilings: raw plyvel WriteBatch puts/s (synced per 1,000 puts) and SHA-256/s.

py-trie (package `trie`, the bench extra) is persisted "the same way": its node writes for a
block are collected and written as one synced WriteBatch, like our commit. Without the package
the peer columns are skipped and the run says so.

    ./scripts/bench store [--quick] [--json] [--keys N] [--blocks B] [--updates U] [--seed S]

`--scale` runs benchmarks/store_scale.py instead (1M keys and more: RSS, reopen, verify; issue 14).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import plyvel

from node.core import merkle
from node.store import VersionedStore

VALUE_BYTES = 100
KEY_BYTES = 32


def _print(line: str) -> None:
    print(line, flush=True)


@contextmanager
def _timer(out: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    out["s"] = time.perf_counter() - start


def _rate(count: int, seconds: float) -> int:
    return int(count / seconds) if seconds > 0 else 0


# ---------------------------------------------------------------------- ceilings


def ceiling_sha256(count: int) -> int:
    data = os.urandom(64)
    sha = hashlib.sha256
    start = time.perf_counter()
    for _ in range(count):
        sha(data).digest()
    return _rate(count, time.perf_counter() - start)


def ceiling_leveldb(path: str, count: int, per_batch: int) -> int:
    db = plyvel.DB(path, create_if_missing=True)
    rng = random.Random(7)
    items = [(rng.randbytes(KEY_BYTES), rng.randbytes(VALUE_BYTES)) for _ in range(count)]
    start = time.perf_counter()
    for offset in range(0, count, per_batch):
        with db.write_batch(transaction=True, sync=True) as batch:
            for key, value in items[offset : offset + per_batch]:
                batch.put(key, value)
    seconds = time.perf_counter() - start
    db.close()
    return _rate(count, seconds)


# ---------------------------------------------------------------------- workload


class Workload:
    """Deterministic keys, initial values and per-block updates (same for both stores)."""

    def __init__(self, seed: int, keys: int, blocks: int, updates: int) -> None:
        rng = random.Random(seed)
        self.keys = [rng.randbytes(KEY_BYTES) for _ in range(keys)]
        self.initial = [(k, rng.randbytes(VALUE_BYTES)) for k in self.keys]
        self.blocks = [
            {rng.choice(self.keys): rng.randbytes(VALUE_BYTES) for _ in range(updates)}
            for _ in range(blocks)
        ]
        self.updates = sum(len(b) for b in self.blocks)
        self.proof_keys = [rng.choice(self.keys) for _ in range(min(10_000, keys))]
        self.absent_keys = [rng.randbytes(KEY_BYTES) for _ in range(len(self.proof_keys) // 10)]


def run_ours(work: Workload, path: str, load_chunk: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    store = VersionedStore.open(path)
    timer: dict[str, float] = {}
    with _timer(timer):
        for offset in range(0, len(work.initial), load_chunk):
            store.commit(dict(work.initial[offset : offset + load_chunk]))
    out["load_keys_per_s"] = _rate(len(work.initial), timer["s"])
    per_block: list[float] = []
    for block in work.blocks:
        start = time.perf_counter()
        store.commit(block)
        per_block.append(time.perf_counter() - start)
    total = sum(per_block)
    out["updates_per_s"] = _rate(work.updates, total)
    out["blocks_per_s"] = round(len(work.blocks) / total, 1)
    out["block_ms_p50"] = round(sorted(per_block)[len(per_block) // 2] * 1000, 2)
    out["block_ms_max"] = round(max(per_block) * 1000, 2)

    proofs: list[bytes] = []
    with _timer(timer):
        for key in work.proof_keys:
            proofs.append(store.prove(key))
    out["proofs_per_s"] = _rate(len(proofs), timer["s"])
    out["proof_bytes_mean"] = sum(map(len, proofs)) // len(proofs)
    root = store.root()
    values = [store.get(key) for key in work.proof_keys]
    with _timer(timer):
        for key, value, proof in zip(work.proof_keys, values, proofs, strict=True):
            if not merkle.verify_proof(root, key, value, proof):
                raise SystemExit(f"our proof of {key.hex()} does not verify")
    out["verify_proof_per_s"] = _rate(len(proofs), timer["s"])
    absent = [store.prove(key) for key in work.absent_keys]
    if not all(
        merkle.verify_proof(root, k, None, p) for k, p in zip(work.absent_keys, absent, strict=True)
    ):
        raise SystemExit("a non-inclusion proof does not verify")
    out["absent_proof_bytes_mean"] = sum(map(len, absent)) // max(1, len(absent))

    with _timer(timer):
        store.verify()
    out["verify_keys_per_s"] = _rate(len(work.keys), timer["s"])

    back = min(100, store.height)
    with _timer(timer):
        result = store.rollback_to(store.height - back)
    out["rollback_blocks"] = result.heights_reverted
    out["rollback_rows"] = result.rows_removed
    out["rollback_s"] = round(timer["s"], 3)
    out["rollback_rows_per_s"] = _rate(result.rows_removed, timer["s"])
    store.close()
    with _timer(timer):
        store = VersionedStore.open(path)
    out["reopen_s"] = round(timer["s"], 3)
    store.close()
    return out


class _BatchedLevelDB:
    """The mapping py-trie writes nodes into: pending puts, flushed as one synced batch."""

    def __init__(self, path: str) -> None:
        self.db = plyvel.DB(path, create_if_missing=True)
        self.pending: dict[bytes, bytes] = {}

    def __getitem__(self, key: bytes) -> bytes:
        value = self.pending.get(key)
        if value is None:
            value = self.db.get(key)
            if value is None:
                raise KeyError(key)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.pending[key] = value

    def __delitem__(self, key: bytes) -> None:  # py-trie never prunes by default
        self.pending.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self.pending or self.db.get(key) is not None  # type: ignore[arg-type]

    def flush(self) -> int:
        with self.db.write_batch(transaction=True, sync=True) as batch:
            for key, value in self.pending.items():
                batch.put(key, value)
        count = len(self.pending)
        self.pending.clear()
        return count


def run_pytrie(work: Workload, path: str, load_chunk: int) -> dict[str, Any] | None:
    try:
        import rlp
        from trie import HexaryTrie
    except ImportError:
        return None
    out: dict[str, Any] = {}
    db = _BatchedLevelDB(path)
    trie = HexaryTrie(db)
    timer: dict[str, float] = {}
    with _timer(timer):
        for offset in range(0, len(work.initial), load_chunk):
            with trie.squash_changes() as batch:
                for key, value in work.initial[offset : offset + load_chunk]:
                    batch[key] = value
            db.flush()
    out["load_keys_per_s"] = _rate(len(work.initial), timer["s"])
    per_block: list[float] = []
    rows = 0
    for block in work.blocks:
        start = time.perf_counter()
        with trie.squash_changes() as batch:
            for key, value in block.items():
                batch[key] = value
        rows += db.flush()
        trie.root_hash  # noqa: B018 - the root after each block, as for our store
        per_block.append(time.perf_counter() - start)
    total = sum(per_block)
    out["updates_per_s"] = _rate(work.updates, total)
    out["blocks_per_s"] = round(len(work.blocks) / total, 1)
    out["rows_per_block"] = rows // max(1, len(work.blocks))
    with _timer(timer):
        proofs = [trie.get_proof(key) for key in work.proof_keys]
    out["proofs_per_s"] = _rate(len(proofs), timer["s"])
    out["proof_bytes_mean"] = sum(sum(len(rlp.encode(n)) for n in p) for p in proofs) // len(proofs)
    root = trie.root_hash
    with _timer(timer):
        for key, proof in zip(work.proof_keys, proofs, strict=True):
            HexaryTrie.get_from_proof(root, key, proof)
    out["verify_proof_per_s"] = _rate(len(proofs), timer["s"])
    db.db.close()
    return out


# ---------------------------------------------------------------------- report


TARGETS: list[tuple[str, Callable[[dict[str, Any]], bool], str]] = [
    (
        "updates/s >= 10x py-trie",
        lambda r: (
            r["peer"] is None or r["ours"]["updates_per_s"] >= 10 * r["peer"]["updates_per_s"]
        ),
        "block workload",
    ),
    (
        "proofs/s >= 5x py-trie",
        lambda r: r["peer"] is None or r["ours"]["proofs_per_s"] >= 5 * r["peer"]["proofs_per_s"],
        "proof generation",
    ),
    (
        "proof bytes < py-trie",
        lambda r: (
            r["peer"] is None or r["ours"]["proof_bytes_mean"] < r["peer"]["proof_bytes_mean"]
        ),
        "proof size",
    ),
    ("rollback >= 100k rows/s", lambda r: r["ours"]["rollback_rows_per_s"] >= 100_000, "rollback"),
    ("verify >= 200k keys/s", lambda r: r["ours"]["verify_keys_per_s"] >= 200_000, "verify"),
]


def main(argv: list[str] | None = None) -> int:
    if "--scale" in (sys.argv[1:] if argv is None else argv):
        from benchmarks import store_scale

        return store_scale.main(argv)
    parser = argparse.ArgumentParser(prog="scripts/bench store", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k keys, 20 blocks (smoke run)")
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    parser.add_argument("--keys", type=int, default=None, help="initial keys (default 100000)")
    parser.add_argument("--blocks", type=int, default=None, help="blocks (default 200)")
    parser.add_argument("--updates", type=int, default=1000, help="updates per block")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-peer", action="store_true", help="skip py-trie")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args(argv)
    keys = args.keys or (10_000 if args.quick else 100_000)
    blocks = args.blocks or (20 if args.quick else 200)

    report: dict[str, Any] = {
        "workload": {"keys": keys, "blocks": blocks, "updates_per_block": args.updates},
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="perp-bench-", dir=args.dir) as scratch:
        _print(f"store bench: {keys} keys, {blocks} blocks x {args.updates} updates, synced")
        report["ceilings"] = {
            "sha256_per_s": ceiling_sha256(200_000 if args.quick else 1_000_000),
            "leveldb_puts_per_s": ceiling_leveldb(
                os.path.join(scratch, "raw"), 20_000 if args.quick else 200_000, 1000
            ),
        }
        _print(
            f"ceilings: sha256 {report['ceilings']['sha256_per_s']:,}/s, "
            f"plyvel WriteBatch {report['ceilings']['leveldb_puts_per_s']:,} puts/s "
            "(synced per 1000)"
        )
        _print("generating workload ...")
        work = Workload(args.seed, keys, blocks, args.updates)
        _print("ours: loading, blocks, proofs, verify, rollback ...")
        report["ours"] = run_ours(work, os.path.join(scratch, "ours"), 10_000)
        report["peer"] = None
        if not args.no_peer:
            _print("py-trie HexaryTrie: loading, blocks, proofs ...")
            report["peer"] = run_pytrie(work, os.path.join(scratch, "pytrie"), 10_000)
            if report["peer"] is None:
                _print("py-trie not installed (pip install '.[bench]'): peer skipped")

    ours, peer = report["ours"], report["peer"]
    rows = [
        ("updates/s (block workload)", "updates_per_s"),
        ("blocks/s", "blocks_per_s"),
        ("proofs/s", "proofs_per_s"),
        ("mean proof bytes", "proof_bytes_mean"),
        ("proof verifications/s", "verify_proof_per_s"),
        ("initial load keys/s", "load_keys_per_s"),
    ]
    _print(f"\n{'':30} {'perpchain':>12} {'py-trie':>12} {'ratio':>7}")
    for label, field in rows:
        mine = ours[field]
        theirs = peer.get(field) if peer else None
        ratio = f"{mine / theirs:.1f}x" if theirs else "-"
        _print(f"{label:30} {mine:>12,} {theirs if theirs is not None else '-':>12} {ratio:>7}")
    _print(
        f"block latency p50 {ours['block_ms_p50']} ms, max {ours['block_ms_max']} ms; "
        f"absent-key proof {ours['absent_proof_bytes_mean']} bytes"
    )
    _print(
        f"rollback {ours['rollback_blocks']} blocks: {ours['rollback_rows']:,} rows in "
        f"{ours['rollback_s']} s = {ours['rollback_rows_per_s']:,} rows/s"
    )
    _print(f"verify(): {ours['verify_keys_per_s']:,} keys/s; reopen {ours['reopen_s']} s")
    report["targets"] = {}
    for name, check, _ in TARGETS:
        met = check(report)
        report["targets"][name] = met
        _print(f"target {name}: {'met' if met else 'MISSED'}")
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
