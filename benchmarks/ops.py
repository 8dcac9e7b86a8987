"""`scripts/bench ops`: what the operator workflows cost on a chain of devnet-like load: rollback
of 10, 100 and 1,000 blocks, the same 10-block rollback on a short and a long chain (the cost
must follow what is reverted, not the history), and replay/verify from genesis.

The chain is built offline, as the producer builds it (node.core.transition.apply_block, then
node.chain.producer.commit_block signed with the devnet producer key, 250 ms block times) in a
real LevelDB home: the devnet genesis plus --accounts funded accounts; each block carries one
oracle update (every market moves up to 0.3%) and --txs-per-block signed txs from distinct
accounts: makers post GTC limit orders within 0.2% of the oracle (one in ten cancels all its
orders instead), takers send market IOC orders that fill against them.

- rollback: every measurement copies the LevelDB directory first, so each starts from the same
  chain; `VersionedStore.rollback_to` alone is timed (open and its tree rebuild are not), and
  rows/s counts the rows it removed or moved (`RollbackResult.rows_removed`).
- history: a copy of the chain at --short blocks is kept, the chain grows to --blocks, and the
  10-block rollback is timed on both (median of --repeat).
- replay: a fresh follower store re-executes every block from genesis with
  node.chain.replay.apply_verified_block (producer signature, tx root, every tx signature,
  state root).

    ./scripts/bench ops [--quick] [--json] [--blocks N] [--short N] [--txs-per-block N]
                        [--depths 10,100,1000] [--replay-blocks N] [--repeat N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import random
import shutil
import statistics
import tempfile
import time
from typing import Any

from node.app import PRODUCER_KEY_FILE, init_home, load_key
from node.chain.producer import commit_block
from node.chain.replay import apply_verified_block
from node.core.blocks import BlockEnv, BlockHeader, BlockReceipts
from node.core.crypto import SigningKey
from node.core.genesis import parse_genesis
from node.core.records import EventKind, OrderKind, Side, TimeInForce
from node.core.transition import apply_block
from node.core.txs import CancelAll, OracleUpdate, PlaceOrder, PricePoint, SignedTx, sign_tx
from node.core.view import Overlay, get_nonces
from node.store import VersionedStore, blocks_db

ROOT = pathlib.Path(__file__).resolve().parents[1]
USD = 10**6
BLOCK_TIME_MS = 250


class Load:
    """Seeded devnet-like txs for one block at a time; nonces read from the state."""

    def __init__(self, doc: dict[str, Any], keys: list[SigningKey], seed: int) -> None:
        self.rng = random.Random(seed)
        self.chain_id = doc["chain_id"].encode()
        self.oracle = SigningKey.from_label("devnet/oracle")
        self.keys = keys
        self.makers = len(keys) // 3
        self.markets = {
            int(m["id"]): {
                "price": int(m["oracle_price_quote"]),
                "tick": int(m["tick_quote"]),
                "step": int(m["step_atoms"]),
            }
            for m in doc["markets"]
        }
        self.client_id = 0

    def block(self, store: VersionedStore, time_ms: int, count: int) -> list[SignedTx]:
        view = Overlay(store)

        def nonce(key: SigningKey) -> int:
            # One tx per signer per block, so the next nonce is the state's base nonce (a
            # rejected tx does not use its nonce).
            return get_nonces(view, key.public_key).base_nonce

        for market in self.markets.values():
            move = self.rng.randint(-3_000, 3_000)
            price = market["price"] * (1_000_000 + move) // 1_000_000
            market["price"] = max(market["tick"], price // market["tick"] * market["tick"])
        prices = tuple(
            PricePoint(market_id=m, price_quote=v["price"]) for m, v in sorted(self.markets.items())
        )
        oracle = OracleUpdate(nonce=nonce(self.oracle), time_ms=time_ms - 50, prices=prices)
        txs = [sign_tx(oracle, self.oracle, self.chain_id)]
        for index in self.rng.sample(range(len(self.keys)), count - 1):
            key = self.keys[index]
            market_id = self.rng.choice(sorted(self.markets))
            market = self.markets[market_id]
            tick, step = market["tick"], market["step"]
            side = self.rng.choice([Side.BUY, Side.SELL])
            self.client_id += 1
            body: Any
            if index < self.makers and self.rng.random() < 0.1:
                body = CancelAll(nonce=nonce(key), market_id=0)
            elif index < self.makers:
                offset = market["price"] * self.rng.randint(1, 2000) // 1_000_000
                price = market["price"] - offset if side == Side.BUY else market["price"] + offset
                body = PlaceOrder(
                    nonce=nonce(key),
                    market_id=market_id,
                    side=side,
                    kind=OrderKind.LIMIT,
                    tif=TimeInForce.GTC,
                    price_quote=max(tick, price // tick * tick),
                    size_atoms=self.rng.randint(1, 50) * step,
                    reduce_only=0,
                    trigger_price_quote=0,
                    client_id=self.client_id,
                )
            else:
                body = PlaceOrder(
                    nonce=nonce(key),
                    market_id=market_id,
                    side=side,
                    kind=OrderKind.MARKET,
                    tif=TimeInForce.IOC,
                    price_quote=0,
                    size_atoms=self.rng.randint(1, 40) * step,
                    reduce_only=0,
                    trigger_price_quote=0,
                    client_id=self.client_id,
                )
            txs.append(sign_tx(body, key, self.chain_id))
        return txs


class Builder:
    """Grows the chain of a node home block by block, as the producer does."""

    def __init__(self, home: pathlib.Path, doc: dict[str, Any], load: Load, txs: int) -> None:
        self.home = home
        self.load = load
        self.txs_per_block = txs
        key = load_key(home, PRODUCER_KEY_FILE, "PERPCHAIN_PRODUCER_KEY")
        assert key is not None
        self.key = key
        self.txs = 0
        self.fills = 0
        self.rejected = 0
        self.seconds = 0.0

    def grow_to(self, height: int) -> None:
        started = time.perf_counter()
        with VersionedStore.open(self.home / "data") as store:
            head = blocks_db.get_block(store, store.height)
            assert head is not None
            parent: BlockHeader = head.header
            while parent.height < height:
                env = BlockEnv(
                    chain_id=parent.chain_id,
                    height=parent.height + 1,
                    time_ms=parent.time_ms + BLOCK_TIME_MS,
                )
                txs = self.load.block(store, env.time_ms, self.txs_per_block)
                result = apply_block(store, env, txs, verify_signatures=False)
                receipts = BlockReceipts(receipts=result.receipts, block_events=result.events)
                parent = commit_block(
                    store, self.key, parent, env, result.writes, [t.raw for t in txs], receipts
                )
                self.txs += len(txs)
                self.rejected += sum(1 for r in result.receipts if r.code)
                self.fills += sum(
                    1 for r in result.receipts for e in r.events if e.kind == EventKind.FILL
                )
        self.seconds += time.perf_counter() - started


def _copy(source: pathlib.Path, scratch: pathlib.Path, name: str) -> pathlib.Path:
    target = scratch / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target


def time_rollback(data: pathlib.Path, scratch: pathlib.Path, depth: int) -> dict[str, Any]:
    """Roll a fresh copy of the store back by `depth` blocks; rollback_to alone is timed."""
    copy = _copy(data, scratch, "rollback")
    with VersionedStore.open(copy) as store:
        head = store.height
        target_root = store.root(head - depth)
        started = time.perf_counter()
        result = store.rollback_to(head - depth, reason="bench")
        seconds = time.perf_counter() - started
        assert store.height == head - depth and store.root() == target_root
    shutil.rmtree(copy)
    return {
        "blocks": depth,
        "chain_blocks": head,
        "seconds": round(seconds, 4),
        "rows": result.rows_removed,
        "rows_per_s": int(result.rows_removed / seconds),
        "blocks_per_s": int(depth / seconds),
    }


def median_rollback(
    data: pathlib.Path, scratch: pathlib.Path, depth: int, repeat: int
) -> dict[str, Any]:
    runs = [time_rollback(data, scratch, depth) for _ in range(repeat)]
    best = dict(runs[0])
    best["seconds"] = round(statistics.median(r["seconds"] for r in runs), 4)
    best["rows_per_s"] = int(best["rows"] / best["seconds"])
    best["blocks_per_s"] = int(depth / best["seconds"])
    best["runs"] = [r["seconds"] for r in runs]
    return best


def time_replay(
    data: pathlib.Path, scratch: pathlib.Path, doc: dict[str, Any], last: int
) -> dict[str, Any]:
    """Re-execute blocks 0..last into a fresh store; its root must be the source's at `last`."""
    genesis = parse_genesis(doc)
    target = scratch / "follower"
    with VersionedStore.open(data) as source:
        last = min(last, source.height)
        blocks = [blocks_db.get_block(source, h) for h in range(last + 1)]
        head_root = source.root(last)
    txs = sum(len(b.txs) for b in blocks if b is not None)
    started = time.perf_counter()
    with VersionedStore.open(target) as follower:
        parent: BlockHeader | None = None
        for block in blocks:
            assert block is not None
            parent = apply_verified_block(follower, genesis, parent, block)
        root = follower.root()
    seconds = time.perf_counter() - started
    shutil.rmtree(target)
    assert root == head_root, "the replayed chain does not end at the source's root"
    return {
        "blocks": len(blocks),
        "txs": txs,
        "seconds": round(seconds, 3),
        "blocks_per_s": round(len(blocks) / seconds, 1),
        "txs_per_s": int(txs / seconds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench ops", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--blocks", type=int, default=None, help="the long chain")
    parser.add_argument("--short", type=int, default=None, help="the short chain")
    parser.add_argument("--txs-per-block", type=int, default=None)
    parser.add_argument("--accounts", type=int, default=600)
    parser.add_argument("--depths", default=None, help="comma-separated rollback depths")
    parser.add_argument("--repeat", type=int, default=3, help="runs per history measurement")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--replay-blocks", type=int, default=None, help="replay blocks 0..N (default: all)"
    )
    args = parser.parse_args(argv)
    blocks = args.blocks or (150 if args.quick else 3_000)
    short = args.short or max(20, blocks // 3)
    per_block = args.txs_per_block or (40 if args.quick else 100)
    replay_blocks = args.replay_blocks or blocks
    depths = [
        int(d) for d in (args.depths or ("10,50,100" if args.quick else "10,100,1000")).split(",")
    ]
    if max(depths) >= short and max(depths) >= blocks:
        raise SystemExit(f"depths {depths} need a chain longer than {max(depths)} blocks")
    if per_block - 1 > args.accounts:
        raise SystemExit("--accounts must be at least --txs-per-block")

    doc = json.loads((ROOT / "genesis" / "devnet.json").read_text())
    keys = [SigningKey(hashlib.sha256(b"opsbench/%d" % i).digest()) for i in range(args.accounts)]
    doc["accounts"] += [
        {"address": k.public_key.hex(), "collateral_quote": str(1_000_000 * USD)} for k in keys
    ]
    report: dict[str, Any] = {
        "blocks": blocks,
        "short_blocks": short,
        "txs_per_block": per_block,
        "accounts": args.accounts,
        "replay_blocks": replay_blocks,
    }
    with tempfile.TemporaryDirectory(prefix="perp-ops-bench-") as scratch_dir:
        scratch = pathlib.Path(scratch_dir)
        home = scratch / "home"
        init_home(home, doc)
        builder = Builder(home, doc, Load(doc, keys, args.seed), per_block)
        builder.grow_to(short)
        short_data = _copy(home / "data", scratch, "short")
        builder.grow_to(blocks)
        with VersionedStore.open(home / "data") as store:
            state_keys = sum(1 for _ in store.iter_prefix())
        report["build"] = {
            "seconds": round(builder.seconds, 1),
            "txs": builder.txs,
            "rejected": builder.rejected,
            "fills": builder.fills,
            "state_keys": state_keys,
        }
        print(
            f"chain: {blocks} blocks, {builder.txs} txs ({builder.rejected} rejected, "
            f"{builder.fills} fills), {state_keys} state keys; built in {builder.seconds:.1f} s"
        )

        report["rollback"] = []
        for depth in depths:
            row = time_rollback(home / "data", scratch, depth)
            report["rollback"].append(row)
            print(
                f"rollback {depth:>5} blocks of {row['chain_blocks']}: {row['seconds']:8.3f} s  "
                f"{row['rows']:>8} rows  {row['rows_per_s']:>8} rows/s  "
                f"{row['blocks_per_s']:>6} blocks/s"
            )

        history = {
            "short": median_rollback(short_data, scratch, 10, args.repeat),
            "long": median_rollback(home / "data", scratch, 10, args.repeat),
        }
        history["ratio_long_to_short"] = round(
            history["long"]["seconds"] / history["short"]["seconds"], 2
        )
        report["history"] = history
        for name in ("short", "long"):
            row = history[name]
            print(
                f"rollback    10 blocks of {row['chain_blocks']:>5}: {row['seconds']:8.4f} s "
                f"(median of {args.repeat}: {row['runs']})  {row['rows']} rows"
            )
        print(
            f"  long/short time ratio: {history['ratio_long_to_short']} (history grew "
            f"{blocks / short:.1f}x)"
        )

        replay = time_replay(home / "data", scratch, doc, replay_blocks)
        report["replay"] = replay
        print(
            f"replay/verify from genesis: {replay['blocks']} blocks, {replay['txs']} txs in "
            f"{replay['seconds']} s: {replay['blocks_per_s']} blocks/s, {replay['txs_per_s']} txs/s"
        )
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
