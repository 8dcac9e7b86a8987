"""`scripts/bench snapshot`: state snapshot export and import on LevelDB.

A store with N keys of 32 bytes and 100-byte values, committed as a signed devnet block 0, then
some blocks of updates so the exported height is older than the head (iter_state merges diffs):
- export of the head and of that older height (keys/s, file bytes per key);
- import of the head snapshot into a fresh data directory: the checks, the bounded batches,
  the tree build, the final synced batch and the read-back reopen (keys/s).

    ./scripts/bench snapshot [--quick] [--json] [--keys N] [--seed S] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import sys
import tempfile
import time
from typing import Any

from node.chain.producer import commit_block
from node.core.blocks import BlockEnv, BlockReceipts
from node.core.crypto import SigningKey
from node.core.genesis import parse_genesis
from node.ops.snapshot import export_snapshot, import_snapshot
from node.store import VersionedStore

GENESIS = pathlib.Path(__file__).resolve().parents[1] / "genesis" / "devnet.json"
VALUE_BYTES = 100
KEY_BYTES = 32
LOAD_BATCH = 10_000
BLOCKS_AFTER = 10
UPDATES_PER_BLOCK = 1_000


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench snapshot", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="10k keys (smoke run)")
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    parser.add_argument("--keys", type=int, default=None, help="keys (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args(argv)
    keys = args.keys or (10_000 if args.quick else 100_000)
    rng = random.Random(args.seed)
    genesis = parse_genesis(json.loads(GENESIS.read_text()))
    producer = SigningKey.from_label("devnet/producer")
    report: dict[str, Any] = {
        "workload": {"keys": keys, "blocks_after": BLOCKS_AFTER, "updates": UPDATES_PER_BLOCK},
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="perp-bench-", dir=args.dir) as scratch_dir:
        scratch = pathlib.Path(scratch_dir)
        _print(f"snapshot bench: {keys:,} keys of {KEY_BYTES} + {VALUE_BYTES} bytes")
        all_keys = sorted(rng.randbytes(KEY_BYTES) for _ in range(keys))
        with VersionedStore.open(scratch / "source") as store:
            # Block 0 holds every key (one commit), then blocks of updates above it.
            writes = {key: rng.randbytes(VALUE_BYTES) for key in all_keys}
            empty = BlockReceipts(receipts=(), block_events=())
            env = BlockEnv(chain_id=genesis.chain_id, height=0, time_ms=genesis.genesis_time_ms)
            header = commit_block(store, producer, None, env, writes, [], empty)
            for height in range(1, BLOCKS_AFTER + 1):
                updates = {
                    rng.choice(all_keys): rng.randbytes(VALUE_BYTES)
                    for _ in range(UPDATES_PER_BLOCK)
                }
                env = BlockEnv(chain_id=genesis.chain_id, height=height, time_ms=header.time_ms + 1)
                header = commit_block(store, producer, header, env, updates, [], empty)
            figures: dict[str, Any] = {}
            for label, height in (("head", None), ("old", 0)):
                path = scratch / f"{label}.snap"
                start = time.perf_counter()
                info = export_snapshot(store, height, path)
                seconds = time.perf_counter() - start
                figures[f"export_{label}_s"] = round(seconds, 3)
                figures[f"export_{label}_keys_per_s"] = int(info.pairs / seconds)
                figures["file_bytes_per_key"] = round(info.file_bytes / info.pairs, 1)
        start = time.perf_counter()
        info = import_snapshot(scratch / "head.snap", scratch / "imported", genesis=genesis)
        seconds = time.perf_counter() - start
        figures["import_s"] = round(seconds, 3)
        figures["import_keys_per_s"] = int(info.pairs / seconds)
        report["snapshot"] = figures

    _print(
        f"export head: {figures['export_head_keys_per_s']:,} keys/s "
        f"({figures['export_head_s']} s); export of height 0 under {BLOCKS_AFTER} blocks of "
        f"{UPDATES_PER_BLOCK} updates: {figures['export_old_keys_per_s']:,} keys/s"
    )
    _print(f"file: {figures['file_bytes_per_key']} bytes per key")
    _print(
        f"import (checks, batches, tree, synced commit, reopen): "
        f"{figures['import_keys_per_s']:,} keys/s ({figures['import_s']} s)"
    )
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
