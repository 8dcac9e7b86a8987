"""`scripts/bench node`: signed orders committed per second end to end through the RPC, and the
latency of `perp_getAccount` at a fixed request rate while blocks are produced.

A node (subprocess, real LevelDB, 250 ms blocks) starts from the devnet genesis with extra
funded accounts. Orders are pre-signed (client-side cost excluded) and sent as JSON-RPC batches
of 100 `tx_submit` from 4 threads; the figure is txs committed (in blocks) per second of
wall time from the first submission to the last commit. A first flood runs alone (the
throughput figure); a second, of as many orders, runs while a reader process calls
`perp_getAccount` at a fixed rate and records each latency (the latency figure, with the
throughput that flood got beside the reads). The Ed25519 verification ceiling of this machine is
measured in the same run (admission verifies every signature).

    ./scripts/bench node [--quick] [--json] [--orders N] [--read-rate R] [--new-connections]
                         [--order-rate R]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import itertools
import json
import multiprocessing
import pathlib
import random
import signal
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

from node.client import RpcClient
from node.core.crypto import SigningKey
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import PlaceOrder, sign_tx, validate_tx
from node.devnet import spawn_node

ROOT = pathlib.Path(__file__).resolve().parents[1]
USD = 10**6


def _post(url: str, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(batch).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


READER_THREADS = 4


def _reader(url: str, address: str, rate: int, keep_alive: bool, stop: Any, results: Any) -> None:
    """perp_getAccount at `rate` per second until `stop`; every latency (s) to `results`.

    The rate is held by READER_THREADS threads on a shared schedule (each read has its start
    time; a thread takes the next one), so a slow answer delays no later read's start as a
    lone caller would (it measured ~370 reads/s at a 500/s goal). keep_alive: one HTTP/1.1
    connection per thread (as a trading frontend holds one), else a new connection per call
    (node.client.RpcClient, as the CLI does). A latency counts from the request's sending; the
    reads done over the flood's time give the rate reached."""
    split = urllib.parse.urlsplit(url)
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "perp_getAccount", "params": {"address": address}}
    ).encode()
    schedule = itertools.count()
    lock = threading.Lock()
    first = time.monotonic()
    latencies: list[float] = []

    def run() -> None:
        client = RpcClient(url)
        connection = http.client.HTTPConnection(split.hostname, split.port, timeout=30)
        while not stop.is_set():
            with lock:
                start_at = first + next(schedule) / rate
            time.sleep(max(0.0, start_at - time.monotonic()))
            begin = time.monotonic()
            if keep_alive:
                connection.request("POST", "/", body, {"Content-Type": "application/json"})
                reply = json.loads(connection.getresponse().read())
                assert "result" in reply, reply
            else:
                client.call("perp_getAccount", address=address)
            latency = time.monotonic() - begin
            with lock:
                latencies.append(latency)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(READER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(latencies)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench node", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--orders", type=int, default=None)
    parser.add_argument("--read-rate", type=int, default=500, help="perp_getAccount per second")
    parser.add_argument(
        "--new-connections",
        action="store_true",
        help="a new HTTP connection per read (default: each reader thread keeps one alive, as "
        "HTTP clients and load generators such as wrk do)",
    )
    parser.add_argument("--keep-alive", action="store_true", help=argparse.SUPPRESS)  # the default
    parser.add_argument(
        "--order-rate", type=int, default=0, help="orders sent per second (0: as fast as taken)"
    )
    args = parser.parse_args(argv)
    orders = args.orders or (2_000 if args.quick else 20_000)
    accounts = max(16, orders // 60)  # each account stays inside its 64-wide nonce window

    doc = json.loads((ROOT / "genesis" / "devnet.json").read_text())
    keys = [SigningKey(hashlib.sha256(b"nodebench/%d" % i).digest()) for i in range(accounts)]
    doc["accounts"] += [
        {"address": k.public_key.hex(), "collateral_quote": str(1_000_000 * USD)} for k in keys
    ]
    chain_id = doc["chain_id"].encode()
    rng = random.Random(5)
    # Two floods of `orders` each: the first alone (throughput), the second under the reader.
    txs = []
    for i in range(2 * orders):
        key = keys[i % accounts]
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        offset = rng.randint(-20, 20) * USD
        body = PlaceOrder(
            nonce=i // accounts,
            market_id=1,
            side=side,
            kind=OrderKind.LIMIT,
            tif=TimeInForce.GTC,
            price_quote=60_000 * USD + (offset if side == Side.BUY else -offset),
            size_atoms=rng.randint(1, 20) * 100_000,
            reduce_only=0,
            trigger_price_quote=0,
            client_id=i + 1,
        )
        txs.append(sign_tx(body, key, chain_id).raw.hex())
    sample = [
        sign_tx(
            PlaceOrder(
                nonce=0,
                market_id=1,
                side=Side.BUY,
                kind=OrderKind.LIMIT,
                tif=TimeInForce.GTC,
                price_quote=USD,
                size_atoms=100_000,
                reduce_only=0,
                trigger_price_quote=0,
                client_id=1,
            ),
            k,
            chain_id,
        )
        for k in keys[:500]
    ]
    started = time.process_time()
    for tx in sample:
        validate_tx(tx, chain_id)
    ceiling = int(len(sample) / (time.process_time() - started))

    from node.app import init_home

    # --order-rate paces the 4 senders (a batch of 100 each 400 / rate s apiece);
    # 0 sends as fast as the node answers.
    period_s = 400 / args.order_rate if args.order_rate else 0.0

    with tempfile.TemporaryDirectory(prefix="perp-node-bench-") as scratch:
        home = pathlib.Path(scratch) / "home"
        init_home(home, doc)
        node, url = spawn_node(home, env={"PERPCHAIN_MEMPOOL_MAX_PER_ACCOUNT": "64"})
        try:
            client = RpcClient(url)

            def flood(part: list[str]) -> dict[str, Any]:
                """Send `part` from 4 threads, wait until all of it is committed."""
                status = client.call("node_status")
                base_height, base_txs = int(status["height"]), int(status["committed_txs"])

                def sender(share: list[str]) -> None:
                    next_at = time.monotonic()
                    for offset in range(0, len(share), 100):
                        batch = [
                            {"jsonrpc": "2.0", "id": n, "method": "tx_submit", "params": {"tx": tx}}
                            for n, tx in enumerate(share[offset : offset + 100])
                        ]
                        _post(url, batch)
                        next_at += period_s
                        time.sleep(max(0.0, next_at - time.monotonic()))

                begin = time.monotonic()
                senders = [threading.Thread(target=sender, args=(part[i::4],)) for i in range(4)]
                for thread in senders:
                    thread.start()
                for thread in senders:
                    thread.join()
                submitted_s = time.monotonic() - begin
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    status = client.call("node_status")
                    if int(status["committed_txs"]) - base_txs >= len(part):
                        break
                    time.sleep(0.05)
                elapsed = time.monotonic() - begin
                committed = int(status["committed_txs"]) - base_txs
                return {
                    "committed": committed,
                    "blocks": int(status["height"]) - base_height,
                    "submit_s": round(submitted_s, 2),
                    "per_s": int(committed / elapsed),
                }

            alone = flood(txs[:orders])
            # The reader is a process of its own: in a thread beside the senders its latencies
            # would include waits for this interpreter's GIL, not only the node's answer.
            context = multiprocessing.get_context("spawn")
            stop = context.Event()
            results: Any = context.SimpleQueue()
            read_process = context.Process(
                target=_reader,
                args=(
                    url,
                    keys[0].public_key.hex(),
                    args.read_rate,
                    not args.new_connections,
                    stop,
                    results,
                ),
                daemon=True,
            )
            read_process.start()
            time.sleep(0.5)  # the reader's interpreter starts before the second flood
            read_begin = time.monotonic()
            read = flood(txs[orders:])
            read_s = time.monotonic() - read_begin
            stop.set()
            latencies: list[float] = results.get()
            read_process.join(timeout=5)
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=30)
    latencies.sort()

    def percentile(q: float) -> float | None:
        return round(latencies[int(len(latencies) * q)] * 1000, 2) if latencies else None

    report = {
        "orders": orders,
        "committed": alone["committed"],
        "blocks": alone["blocks"],
        "submit_s": alone["submit_s"],
        "orders_committed_per_s": alone["per_s"],
        "under_reads_committed": read["committed"],
        "under_reads_orders_committed_per_s": read["per_s"],
        "read_rate_per_s": args.read_rate,
        "order_rate_per_s": args.order_rate or None,
        "read_keep_alive": not args.new_connections,
        "reads": len(latencies),
        "reads_per_s": int(len(latencies) / (read_s + 0.5)),
        "read_p50_ms": percentile(0.50),
        "read_p99_ms": percentile(0.99),
        "read_max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
        "ed25519_verify_per_s": ceiling,
    }
    pace = f"paced at {args.order_rate:,}/s" if args.order_rate else "as fast as taken"
    print(
        f"node bench: 2 x {orders} signed orders in batches of 100 from 4 threads ({pace}), "
        "250 ms blocks"
    )
    print(
        f"flood alone: committed {alone['committed']} in {alone['blocks']} blocks: "
        f"{alone['per_s']:,} orders/s (target 3,000)"
    )
    print(
        f"flood with perp_getAccount at {args.read_rate}/s "
        f"({'a connection per read' if args.new_connections else 'keep-alive connections'}): "
        f"committed {read['committed']} in {read['blocks']} blocks: {read['per_s']:,} orders/s; "
        f"reads p50 {report['read_p50_ms']} ms, p99 {report['read_p99_ms']} ms, "
        f"max {report['read_max_ms']} ms over {len(latencies)} reads, "
        f"{report['reads_per_s']}/s reached (target p99 < 25 ms)"
    )
    print(f"Ed25519 verification ceiling: {ceiling:,}/s")
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
