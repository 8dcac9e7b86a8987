"""`scripts/bench core`: order placements with matching applied per second, one core, in memory.

Blocks of N PlaceOrder txs (limit orders around the oracle price, about half crossing and
filling, some IOC), applied with the real `apply_block` (funding, triggers, liquidation scan and
every invariant included) over an in-memory state; the write set is applied after each block.
Measured twice on the same pre-signed txs: signatures excluded (verify_signatures=False, as a
re-executing node that already checked them at admission may) and included.

    ./scripts/bench core [--quick] [--json] [--accounts N] [--blocks B] [--txs N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from typing import Any

from node.core.blocks import BlockEnv
from node.core.crypto import SigningKey
from node.core.genesis import genesis_writes, parse_genesis
from node.core.records import EventKind, OrderKind, Side, TimeInForce
from node.core.transition import apply_block
from node.core.txs import PlaceOrder, SignedTx, sign_tx, validate_tx
from node.core.view import MemoryState

USD = 10**6


def _genesis(accounts: int) -> tuple[dict[str, Any], list[SigningKey]]:
    import pathlib

    doc = json.loads((pathlib.Path(__file__).parents[1] / "genesis" / "devnet.json").read_text())
    keys = [SigningKey(hashlib.sha256(b"bench/%d" % i).digest()) for i in range(accounts)]
    doc["accounts"] = [
        {"address": k.public_key.hex(), "collateral_quote": str(1_000_000 * USD)} for k in keys
    ]
    return doc, keys


def _blocks(
    keys: list[SigningKey], chain_id: bytes, blocks: int, per_block: int
) -> list[list[SignedTx]]:
    rng = random.Random(3)
    nonces: dict[bytes, int] = {}
    out = []
    client = 0
    for _ in range(blocks):
        txs = []
        for _ in range(per_block):
            key = rng.choice(keys)
            nonce = nonces.get(key.public_key, 0)
            nonces[key.public_key] = nonce + 1
            client += 1
            side = rng.choice([Side.BUY, Side.SELL])
            offset = rng.randint(-20, 20) * USD  # within $20 of 60,000: about half cross
            price = 60_000 * USD + (offset if side == Side.BUY else -offset)
            body = PlaceOrder(
                nonce=nonce,
                market_id=1,
                side=side,
                kind=OrderKind.LIMIT,
                tif=TimeInForce.IOC if rng.random() < 0.2 else TimeInForce.GTC,
                price_quote=price,
                size_atoms=rng.randint(1, 50) * 100_000,
                reduce_only=0,
                trigger_price_quote=0,
                client_id=client,
            )
            txs.append(sign_tx(body, key, chain_id))
        out.append(txs)
    return out


def _run(doc: dict[str, Any], blocks: list[list[SignedTx]], verify: bool) -> dict[str, Any]:
    genesis = parse_genesis(doc)
    state = MemoryState(genesis_writes(genesis))
    time_ms = genesis.genesis_time_ms
    fills = 0
    spent = 0.0
    for height, txs in enumerate(blocks, start=1):
        time_ms += 250
        env = BlockEnv(chain_id=genesis.chain_id, height=height, time_ms=time_ms)
        start = time.process_time()
        result = apply_block(state, env, txs, verify_signatures=verify)
        state.apply(result.writes)
        spent += time.process_time() - start
        fills += sum(e.kind == EventKind.FILL for r in result.receipts for e in r.events)
        assert all(r.code == 0 for r in result.receipts[:1])
    count = sum(len(b) for b in blocks)
    return {
        "placements_per_s": int(count / spent),
        "fills": fills,
        "placements": count,
        "cpu_s": round(spent, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench core", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--accounts", type=int, default=None)
    parser.add_argument("--blocks", type=int, default=None)
    parser.add_argument("--txs", type=int, default=2000, help="placements per block")
    args = parser.parse_args(argv)
    accounts = args.accounts or (200 if args.quick else 2000)
    nblocks = args.blocks or (3 if args.quick else 20)
    doc, keys = _genesis(accounts)
    chain_id = doc["chain_id"].encode()
    print(f"core bench: {accounts} accounts, {nblocks} blocks x {args.txs} placements", flush=True)
    blocks = _blocks(keys, chain_id, nblocks, args.txs)
    sample = [tx for block in blocks for tx in block][:2000]
    start = time.process_time()
    for tx in sample:
        validate_tx(tx, chain_id)
    ceiling = int(len(sample) / (time.process_time() - start))
    best_ex: dict[str, Any] = {}
    best_in: dict[str, Any] = {}
    for _ in range(1 if args.quick else 3):
        ex = _run(doc, blocks, verify=False)
        inc = _run(doc, blocks, verify=True)
        if ex["placements_per_s"] > best_ex.get("placements_per_s", 0):
            best_ex = ex
        if inc["placements_per_s"] > best_in.get("placements_per_s", 0):
            best_in = inc
    report = {
        "workload": {"accounts": accounts, "blocks": nblocks, "placements_per_block": args.txs},
        "signatures_excluded": best_ex,
        "signatures_included": best_in,
        "ed25519_verify_per_s": ceiling,
        "python": sys.version.split()[0],
        "target_10k_excluded_met": best_ex["placements_per_s"] >= 10_000,
    }
    print(
        f"placements with matching, signatures excluded: {best_ex['placements_per_s']:,}/s "
        f"({best_ex['fills']:,} fills)"
    )
    print(f"placements with matching, signatures included: {best_in['placements_per_s']:,}/s")
    print(f"Ed25519 verify ceiling (validate_tx): {ceiling:,}/s")
    print(
        f"target >= 10,000/s excluded: {'met' if report['target_10k_excluded_met'] else 'MISSED'}"
    )
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
