"""`scripts/bench follower`: how fast a follower re-executes and verifies the chain while it
catches up, beside the sequencer's production rate measured in the same run.

Phase 1: a sequencer (subprocess, real LevelDB, 250 ms blocks) runs the devnet bots (oracle
feeder, makers and takers) for --duration seconds; its blocks/s and txs/s are the production
rate. Phase 2: a fresh follower home syncs that chain from genesis over the WebSocket RPC,
verifying every producer signature, tx root, tx signature and state root; blocks/s and txs/s
from its first listening moment until it reaches the sequencer's height. Target: catch-up at
least 2x faster than production at the devnet load.

    ./scripts/bench follower [--quick] [--json] [--duration S] [--orders-per-second N]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import tempfile
import time

from node.client import RpcClient
from node.devnet import Bots, spawn_node

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench follower", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--duration", type=float, default=None, help="production seconds")
    parser.add_argument("--orders-per-second", type=int, default=200)
    parser.add_argument("--block-time-ms", type=int, default=250)
    args = parser.parse_args(argv)
    duration = args.duration or (10.0 if args.quick else 60.0)
    genesis = json.loads((ROOT / "genesis" / "devnet.json").read_text())

    from node.app import init_home

    with tempfile.TemporaryDirectory(prefix="perp-follower-bench-") as scratch:
        seq_home = pathlib.Path(scratch) / "sequencer"
        init_home(seq_home, genesis)
        sequencer, url = spawn_node(seq_home, "--block-interval-ms", str(args.block_time_ms))
        try:
            client = RpcClient(url, timeout_s=30)
            bots = Bots(client, genesis, traders=16, seed=1)
            first = client.call("node_status")
            begin = time.monotonic()
            while time.monotonic() - begin < duration:
                tick = time.monotonic()
                bots.feed_oracle()
                bots.trade(args.orders_per_second)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            last = client.call("node_status")
            produced_s = time.monotonic() - begin
            blocks = int(last["height"]) - int(first["height"])
            txs = int(last["committed_txs"]) - int(first["committed_txs"])
            target = int(last["height"])
            total_txs = int(last["committed_txs"])

            follower_home = pathlib.Path(scratch) / "follower"
            init_home(follower_home, genesis, follower=True)
            started = time.monotonic()
            follower, furl = spawn_node(follower_home, "--follow", url)
            try:
                fclient = RpcClient(furl, timeout_s=30)
                ready = time.monotonic()
                while True:
                    status = fclient.call("node_status")
                    if int(status["height"]) >= target:
                        break
                    if status["mode"] == "halted":
                        raise SystemExit(f"the follower halted: {status['halt_reason']}")
                    time.sleep(0.02)
                synced_s = time.monotonic() - ready
                agree = (
                    client.call("chain_getBlock", height=str(target))["header"]["state_root"]
                    == fclient.call("chain_getBlock", height=str(target))["header"]["state_root"]
                )
            finally:
                follower.send_signal(signal.SIGTERM)
                follower.wait(timeout=30)
            startup_s = ready - started
        finally:
            sequencer.send_signal(signal.SIGTERM)
            sequencer.wait(timeout=30)
    report = {
        "duration_s": round(produced_s, 1),
        "production_blocks_per_s": round(blocks / produced_s, 2),
        "production_txs_per_s": round(txs / produced_s, 1),
        "catch_up_blocks": target,
        "catch_up_txs": total_txs,
        "catch_up_s": round(synced_s, 2),
        "catch_up_blocks_per_s": round(target / synced_s, 1),
        "catch_up_txs_per_s": round(total_txs / synced_s, 1),
        "follower_startup_s": round(startup_s, 2),
        "roots_agree": agree,
    }
    speedup_blocks = report["catch_up_blocks_per_s"] / max(report["production_blocks_per_s"], 1e-9)
    speedup_txs = report["catch_up_txs_per_s"] / max(report["production_txs_per_s"], 1e-9)
    report["speedup_blocks"] = round(speedup_blocks, 1)
    report["speedup_txs"] = round(speedup_txs, 1)
    print(
        f"follower bench: devnet bots at {args.orders_per_second} orders/s, "
        f"{args.block_time_ms} ms blocks, {produced_s:.0f} s of production"
    )
    print(
        f"production: {report['production_blocks_per_s']} blocks/s, "
        f"{report['production_txs_per_s']} txs/s"
    )
    print(
        f"catch-up from genesis: {target} blocks, {total_txs} txs in {synced_s:.2f} s = "
        f"{report['catch_up_blocks_per_s']} blocks/s, {report['catch_up_txs_per_s']} txs/s "
        f"(signatures, tx roots and state roots verified); roots agree: {agree}"
    )
    print(
        f"speedup over production: {speedup_blocks:.1f}x blocks, {speedup_txs:.1f}x txs (target 2x)"
    )
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
