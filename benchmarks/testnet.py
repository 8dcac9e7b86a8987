"""`scripts/bench testnet`: the 4-validator CometBFT testnet (node.testnet, what ./scripts/testnet
runs) under a flood of signed orders: committed orders/s and block time.

The network is the testnet's (loopback, timeout_commit 400 ms by default, every validator a
CometBFT v0.38 node and its perpchain application process), on a genesis with `--accounts`
extra funded accounts. Sender threads (`--senders`, each one validator's JSON-RPC `tx_submit`,
which forwards to CometBFT's broadcast_tx_sync) submit pre-signed limit orders around the
oracle price (about half cross) as fast as they are answered, each thread its own accounts in
nonce order, while the oracle is fed once a second. After `--duration` s the blocks committed
meanwhile are read from CometBFT (num_txs, header times, results): committed txs/s, orders
accepted (code 0)/s, fills, and the block time (mean, p50, p95, max).

Everything runs on this machine (4 CometBFT nodes, 4 applications and the senders share its
cores), so the figures are a lower bound of what the protocol allows; the load average is
printed with them. Nothing is asserted: tests/e2e/test_cometbft_bench.py runs it at a toy size.

    ./scripts/bench testnet [--quick] [--json] [--duration S] [--validators 4] [--senders 8]
                            [--accounts 200] [--timeout-commit-ms 400] [--direct]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

from node.client import RpcCallError, RpcClient, RpcUnavailable
from node.cometbft import Ports, Timeouts, find_ports
from node.devnet import Bots
from node.testnet import ORACLE_LAG_MS, Testnet, running

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _rfc3339_ms(text: str) -> float:
    """ms since the epoch of a CometBFT header time (RFC 3339, ns precision, Z)."""
    stamp, _, fraction = text.rstrip("Z").partition(".")
    seconds = time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return seconds * 1000 + float("0." + (fraction or "0")) * 1000


class Sender(threading.Thread):
    """Submits its txs in order: through a validator's JSON-RPC `tx_submit` (the bots' path),
    or with `direct` straight to its CometBFT's `broadcast_tx_sync` (the engine's own path)."""

    def __init__(
        self, client: RpcClient, txs: list[str], stop: threading.Event, *, direct: bool
    ) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.txs = txs
        self.stop = stop
        self.direct = direct
        self.sent = 0
        self.refused = 0

    def run(self) -> None:
        for raw in self.txs:
            if self.stop.is_set():
                return
            try:
                if self.direct:
                    tx = base64.b64encode(bytes.fromhex(raw)).decode()
                    if int(self.client.call("broadcast_tx_sync", tx=tx).get("code", 0)):
                        self.refused += 1
                        continue
                else:
                    self.client.call("tx_submit", tx=raw)
                self.sent += 1
            except RpcCallError:
                self.refused += 1
            except RpcUnavailable:
                self.refused += 1
                time.sleep(0.05)


def measure(
    home: pathlib.Path,
    *,
    validators: int = 4,
    duration_s: float = 30.0,
    senders: int = 8,
    accounts: int = 200,
    timeout_commit_ms: int = 400,
    port_start: int = 27_000,
    ports: Ports | None = None,
    direct: bool = False,
    say: Any = None,
) -> dict[str, Any]:
    """Run the flood on a fresh testnet in `home`; the figures (see module docstring)."""
    sys.path.insert(0, str(ROOT))
    from tests.abci.harness import genesis_doc, orders

    doc, keys = genesis_doc(accounts, seed="testnet-bench")
    # enough orders that the senders never run out within the duration (~2,000/s at most)
    per_sender = max(1, len(keys) // senders)
    count = int(max(duration_s, 5) * 2_000)
    count -= count % len(keys)
    raws = orders(doc, keys, count)
    lanes: list[list[str]] = [[] for _ in range(senders)]
    for i, raw in enumerate(raws):  # order i is key i % len(keys): a key stays in one lane
        lanes[min((i % len(keys)) // per_sender, senders - 1)].append(raw.hex())
    net = Testnet(
        home,
        validators=validators,
        ports=ports or find_ports(validators, port_start),
        timeouts=Timeouts(commit_ms=timeout_commit_ms),
        genesis=doc,
    )
    with running(net):
        net.wait_height(2, timeout_s=120)
        stop = threading.Event()
        oracle = Bots(net.validators[0].client, doc, 1, seed=1, oracle_lag_ms=ORACLE_LAG_MS)
        threads = [
            Sender(
                (v.engine if direct else v.client),
                lane,
                stop,
                direct=direct,
            )
            for v, lane in ((net.validators[i % validators], lane) for i, lane in enumerate(lanes))
        ]
        start_height = max(v.height() for v in net.validators)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        while time.monotonic() - started < duration_s:
            net.check_alive()
            try:
                oracle.feed_oracle()
            except (RpcUnavailable, RpcCallError):
                pass
            if say:
                say(
                    f"  {time.monotonic() - started:5.1f} s  height {net.validators[0].height()}"
                    f"  submitted {sum(t.sent for t in threads)}"
                )
            time.sleep(1.0)
        stop.set()
        elapsed = time.monotonic() - started
        end_height = net.validators[0].height()
        load_after = os.getloadavg()[0]
        for thread in threads:
            thread.join(timeout=30)
        figures = _figures(net, start_height, end_height, threads, elapsed, load_before, load_after)
        figures["via"] = "cometbft broadcast_tx_sync" if direct else "perpchain tx_submit"
        return figures


def _figures(
    net: Testnet,
    start: int,
    end: int,
    threads: list[Sender],
    elapsed: float,
    load_before: float,
    load_after: float,
) -> dict[str, Any]:
    engine = net.validators[0].engine
    times: list[float] = []
    txs = accepted = fills = 0
    for height in range(start, end + 1):
        header = engine.call("header", height=str(height))["header"]
        times.append(_rfc3339_ms(header["time"]))
        if height == start:
            continue
        results = engine.call("block_results", height=str(height))["txs_results"] or []
        txs += len(results)
        for result in results:
            if int(result.get("code", 0)) == 0:
                accepted += 1
            for item in result.get("events") or []:
                if item.get("type") == "perp.fill":
                    fills += 1
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    span_s = (times[-1] - times[0]) / 1000 if len(times) > 1 else 0.0
    gaps_sorted = sorted(gaps)

    def pct(p: float) -> float:
        return gaps_sorted[min(len(gaps_sorted) - 1, int(p * len(gaps_sorted)))]

    blocks = end - start
    return {
        "validators": net.count,
        "timeout_commit_ms": net.timeouts.commit_ms,
        "duration_s": round(elapsed, 1),
        "submitted": sum(t.sent for t in threads),
        "submitted_per_s": round(sum(t.sent for t in threads) / elapsed, 1),
        "refused_at_submit": sum(t.refused for t in threads),
        "blocks": blocks,
        "committed_txs": txs,
        "committed_txs_per_s": round(txs / span_s, 1) if span_s else 0.0,
        "accepted_orders_per_s": round(accepted / span_s, 1) if span_s else 0.0,
        "fills": fills,
        "txs_per_block_mean": round(txs / blocks, 1) if blocks else 0.0,
        "block_time_ms": {
            "mean": round(statistics.fmean(gaps), 1) if gaps else None,
            "p50": round(pct(0.5), 1) if gaps else None,
            "p95": round(pct(0.95), 1) if gaps else None,
            "max": round(max(gaps), 1) if gaps else None,
        },
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "cores": os.cpu_count(),
    }


def text(figures: dict[str, Any]) -> str:
    block = figures["block_time_ms"]
    return (
        f"testnet: {figures['validators']} CometBFT validators, timeout_commit "
        f"{figures['timeout_commit_ms']} ms, {figures['duration_s']} s of flood "
        f"({figures['cores']} cores, load average {figures['load_average'][0]} -> "
        f"{figures['load_average'][1]}); txs sent through {figures['via']}\n"
        f"  submitted      {figures['submitted']:>8,} txs  {figures['submitted_per_s']:>8,.1f}/s"
        f"  ({figures['refused_at_submit']:,} refused at submit)\n"
        f"  committed      {figures['committed_txs']:>8,} txs  "
        f"{figures['committed_txs_per_s']:>8,.1f}/s in {figures['blocks']} blocks "
        f"({figures['txs_per_block_mean']} txs/block)\n"
        f"  orders OK      {'':>8}      {figures['accepted_orders_per_s']:>8,.1f}/s  "
        f"({figures['fills']:,} fills)\n"
        f"  block time     mean {block['mean']} ms  p50 {block['p50']} ms  p95 {block['p95']} ms"
        f"  max {block['max']} ms"
    )


def main(argv: list[str] | None = None) -> int:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(
        prog="scripts/bench testnet", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="10 s, 4 senders")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of flood (30)")
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--senders", type=int, default=8, help="sender threads (8)")
    parser.add_argument("--accounts", type=int, default=200, help="funded accounts (200)")
    parser.add_argument("--timeout-commit-ms", type=int, default=400)
    parser.add_argument("--port-start", type=int, default=27_000)
    parser.add_argument("--home", help="testnet home (default: a temporary directory)")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="send to CometBFT's broadcast_tx_sync, not through perpchain's tx_submit",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.senders = min(args.duration, 10.0), min(args.senders, 4)
    with tempfile.TemporaryDirectory(prefix="perpchain-bench-testnet-") as scratch:
        figures = measure(
            pathlib.Path(args.home or scratch) / "testnet",
            validators=args.validators,
            duration_s=args.duration,
            senders=args.senders,
            accounts=args.accounts,
            timeout_commit_ms=args.timeout_commit_ms,
            port_start=args.port_start,
            direct=args.direct,
            say=None if args.json else lambda line: print(line, flush=True),
        )
    print(text(figures))
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
