"""The local devnet: a fresh home from genesis/devnet.json, the sequencer and its followers as
child processes, an oracle feeder (random-walk prices) and trading bots (market makers quoting
around the oracle, takers crossing, some of them leveraged so funding and liquidations happen),
and a live one-line status with every node's height and whether its root agrees. Ctrl-C stops
everything cleanly. Keys are the deterministic devnet labels.

    ./scripts/devnet [--home .devnet] [--block-time-ms 250] [--duration S] [--rpc-port 9545]
                     [--followers 2]

The sequencer's home is --home; follower i (a node that re-executes and verifies every block)
lives in HOME/followers/i and serves its RPC on --rpc-port + 100 x i.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from node.client import RpcCallError, RpcClient, RpcUnavailable
from node.core.crypto import SigningKey
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import OracleUpdate, PlaceOrder, PricePoint, sign_tx

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARKER = ".perpchain-devnet"


def node_command(home: pathlib.Path, rpc: str, metrics: str, *extra_args: str) -> list[str]:
    """The command line of a node child process (`perpchain start` under this interpreter)."""
    return [
        sys.executable,
        "-m",
        "node.cli.main",
        "start",
        "--home",
        str(home),
        "--rpc-listen",
        rpc,
        "--metrics-listen",
        metrics,
        *extra_args,
    ]


def spawn_node(
    home: pathlib.Path, *extra_args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start `perpchain start --home HOME` on ephemeral ports; return the process and its RPC
    URL once it logged `rpc.listening` (its later output is drained in a daemon thread)."""
    node, urls = spawn_node_urls(home, *extra_args, env=env)
    return node, urls["rpc"]


def spawn_node_urls(
    home: pathlib.Path, *extra_args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """As spawn_node, with every listener's URL: {"rpc": ..., "admin": ... if enabled}."""
    import threading

    node = subprocess.Popen(
        node_command(home, "127.0.0.1:0", "127.0.0.1:0", *extra_args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    if node.stdout is None:
        raise RuntimeError("the node's output is not piped")
    for line in node.stdout:
        if "rpc.listening" in line:
            urls = {}
            for name in ("rpc", "admin", "metrics"):
                marker = f" {name}="
                if marker in line:
                    value = line.split(marker)[1].split()[0]
                    if value not in ("None", "null", "-"):
                        urls[name] = "http://" + value
            # The rest of its output is drained; the last lines are kept for diagnosis
            # (`output_tail(node)`), e.g. when a test sees an unexpected exit code.
            tail: collections.deque[str] = collections.deque(maxlen=40)
            node.perp_tail = tail  # type: ignore[attr-defined]
            threading.Thread(target=tail.extend, args=(node.stdout,), daemon=True).start()
            return node, urls
    raise RuntimeError(f"the node exited with code {node.wait()} before listening")


def output_tail(node: subprocess.Popen[str]) -> str:
    """The last lines a node spawned by spawn_node_urls printed."""
    return "".join(getattr(node, "perp_tail", ()))


class Bots:
    """Oracle feeder plus makers and takers, driven from one loop (no threads to stop)."""

    def __init__(
        self,
        client: RpcClient,
        genesis: dict[str, Any],
        traders: int,
        seed: int,
        *,
        oracle_lag_ms: int = 50,
    ) -> None:
        """`oracle_lag_ms`: how far behind the wall clock oracle updates are dated; an update
        dated after its block's time is refused, and a CometBFT block's time (the median of
        the previous commit's votes) trails the wall clock by about a block interval."""
        self.client = client
        self.oracle_lag_ms = oracle_lag_ms
        self.chain_id = genesis["chain_id"].encode()
        self.rng = random.Random(seed)
        self.oracle = SigningKey.from_label("devnet/oracle")
        self.traders = [SigningKey.from_label(f"devnet/trader/{i}") for i in range(traders)]
        self.markets = {
            int(m["id"]): {
                "price": int(m["oracle_price_quote"]),
                "tick": int(m["tick_quote"]),
                "step": int(m["step_atoms"]),
            }
            for m in genesis["markets"]
        }
        self.nonces: dict[bytes, int] = {}
        self.client_id = int(time.time() * 1000)
        self.submitted = 0
        self.refused = 0

    def _nonce(self, key: SigningKey) -> int:
        if key.public_key not in self.nonces:
            reply = self.client.call("perp_getNonce", address=key.public_key.hex())
            self.nonces[key.public_key] = int(reply["next_nonce"])
        nonce = self.nonces[key.public_key]
        self.nonces[key.public_key] = nonce + 1
        return nonce

    def _send(self, body: Any, key: SigningKey) -> None:
        try:
            self.client.call("tx_submit", tx=sign_tx(body, key, self.chain_id).raw.hex())
            self.submitted += 1
        except RpcCallError:
            self.refused += 1
            self.nonces.pop(key.public_key, None)  # resync the nonce next time

    def feed_oracle(self) -> None:
        for market in self.markets.values():
            move = self.rng.randint(-3_000, 3_000)  # up to 0.3% a tick
            price = market["price"] * (1_000_000 + move) // 1_000_000
            market["price"] = max(market["tick"], price // market["tick"] * market["tick"])
        points = tuple(
            PricePoint(market_id=m, price_quote=v["price"]) for m, v in sorted(self.markets.items())
        )
        body = OracleUpdate(
            nonce=self._nonce(self.oracle),
            time_ms=time.time_ns() // 1_000_000 - self.oracle_lag_ms,
            prices=points,
        )
        self._send(body, self.oracle)

    def trade(self, orders: int) -> None:
        makers = self.traders[: max(1, len(self.traders) // 4)]
        for _ in range(orders):
            market_id = self.rng.choice(sorted(self.markets))
            market = self.markets[market_id]
            tick, step = market["tick"], market["step"]
            side = self.rng.choice([Side.BUY, Side.SELL])
            self.client_id += 1
            if self.rng.random() < 0.6:  # a maker quote within 0.2% of the oracle
                key = self.rng.choice(makers)
                offset = market["price"] * self.rng.randint(1, 2000) // 1_000_000
                price = market["price"] - offset if side == Side.BUY else market["price"] + offset
                kind, tif = OrderKind.LIMIT, TimeInForce.GTC
                size = self.rng.randint(1, 50) * step
            else:  # a taker; some trade big (leverage) so funding and liquidations happen
                key = self.rng.choice(self.traders[len(makers) :] or self.traders)
                price, kind, tif = 0, OrderKind.MARKET, TimeInForce.IOC
                size = self.rng.randint(1, 200 if self.rng.random() < 0.9 else 5000) * step
            body = PlaceOrder(
                nonce=self._nonce(key),
                market_id=market_id,
                side=side,
                kind=kind,
                tif=tif,
                price_quote=max(0, price // tick * tick),
                size_atoms=size,
                reduce_only=0,
                trigger_price_quote=0,
                client_id=self.client_id,
            )
            self._send(body, key)


def _wait_for_node(client: RpcClient, node: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise SystemExit(f"the node exited with code {node.returncode}; see its log above")
        try:
            client.call("node_status")
            return
        except RpcUnavailable:
            time.sleep(0.1)
    raise SystemExit("the node did not answer within the timeout")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/devnet", description=__doc__.split("\n")[0])
    parser.add_argument("--home", default=str(ROOT / ".devnet"), help="node home (recreated)")
    parser.add_argument("--genesis", default=str(ROOT / "genesis" / "devnet.json"))
    parser.add_argument("--block-time-ms", type=int, default=250)
    parser.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    parser.add_argument("--rpc-port", type=int, default=9545)
    parser.add_argument("--metrics-port", type=int, default=9560)
    parser.add_argument(
        "--admin-port", type=int, default=9546, help="the sequencer's admin listener (0: off)"
    )
    parser.add_argument("--accounts", type=int, default=16, help="dev traders the bots use")
    parser.add_argument("--orders-per-second", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-bots", action="store_true")
    parser.add_argument(
        "--followers",
        type=int,
        default=2,
        help="follower nodes that re-execute and verify every block (RPC on port + 100 x i)",
    )
    args = parser.parse_args(argv)

    home = pathlib.Path(args.home)
    if home.exists():
        if not (home / MARKER).exists():
            raise SystemExit(f"{home} exists and is not a devnet home; pick another --home")
        shutil.rmtree(home)
    genesis = json.loads(pathlib.Path(args.genesis).read_text())
    from node.app import init_home

    print(f"devnet: initialising {home} from {args.genesis}", flush=True)
    init_home(home, genesis)
    config = home / "config.toml"  # a devnet restores an invalid state by itself
    config.write_text(config.read_text().replace("auto_restore = false", "auto_restore = true"))
    (home / MARKER).write_text("created by scripts/devnet; deleted on the next start\n")
    follower_homes = [home / "followers" / str(i) for i in range(1, args.followers + 1)]
    for follower_home in follower_homes:
        init_home(follower_home, genesis, follower=True)
    rpc_url = f"http://127.0.0.1:{args.rpc_port}"
    # The explorer on the sequencer's public listener compares its followers' heights and roots.
    peers = ",".join(
        f"http://127.0.0.1:{args.rpc_port + 100 * i}" for i, _ in enumerate(follower_homes, 1)
    )
    node = subprocess.Popen(
        node_command(
            home,
            f"127.0.0.1:{args.rpc_port}",
            f"127.0.0.1:{args.metrics_port}",
            "--block-interval-ms",
            str(args.block_time_ms),
            *(["--admin-listen", f"127.0.0.1:{args.admin_port}"] if args.admin_port else []),
        ),
        cwd=ROOT,
        stdout=open(home / "node.log", "ab"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        env={**os.environ, "PERPCHAIN_EXPLORER_PEERS": peers},
    )
    client = RpcClient(rpc_url, timeout_s=5)
    followers: list[tuple[subprocess.Popen[bytes], RpcClient]] = []
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        print("devnet: starting the sequencer ...", flush=True)
        _wait_for_node(client, node, 60)
        print(f"devnet: RPC {rpc_url}  (WebSocket {rpc_url.replace('http', 'ws')}/ws)")
        print(f"devnet: explorer {rpc_url}/  (read-only pages in the browser; docs/EXPLORER.md)")
        if args.admin_port:
            print(
                f"devnet: admin http://127.0.0.1:{args.admin_port} (token {home / 'admin.token'}; "
                f"e.g. perpchain maintenance begin --reason test --home {home})"
            )
        for i, follower_home in enumerate(follower_homes, start=1):
            port = args.rpc_port + 100 * i
            command = node_command(
                follower_home,
                f"127.0.0.1:{port}",
                f"127.0.0.1:{args.metrics_port + 100 * i}",
                "--follow",
                rpc_url,
            )
            child = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=open(follower_home / "node.log", "ab"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
            followers.append((child, RpcClient(f"http://127.0.0.1:{port}", timeout_s=5)))
        for i, (child, follower_client) in enumerate(followers, start=1):
            _wait_for_node(follower_client, child, 60)
            print(f"devnet: follower {i} RPC {follower_client.url}; log {follower_homes[i - 1]}")
        print(
            f"devnet: metrics http://127.0.0.1:{args.metrics_port}/metrics; log {home / 'node.log'}"
        )
        print("devnet: funded dev keys (SigningKey.from_label; `perpchain keys list`):")
        for i in range(min(args.accounts, len(genesis["accounts"]))):
            print(f"  devnet/trader/{i:<3} {genesis['accounts'][i]['address']}")
        bots = Bots(client, genesis, min(args.accounts, len(genesis["accounts"])), args.seed)
        started = time.monotonic()
        last_status = 0.0
        last_txs = 0
        while not stop and (args.duration <= 0 or time.monotonic() - started < args.duration):
            if node.poll() is not None:
                print(f"\ndevnet: the node exited with code {node.returncode}")
                return 1
            tick = time.monotonic()
            if not args.no_bots:
                try:
                    bots.feed_oracle()
                    bots.trade(args.orders_per_second)
                except RpcUnavailable:
                    pass
            if tick - last_status >= 1.0:
                try:
                    status = client.call("node_status")
                    markets = client.call("perp_getMarkets")
                except (RpcUnavailable, RpcCallError):
                    continue
                committed = int(status["committed_txs"])
                rate = (committed - last_txs) / max(tick - last_status, 1e-3) if last_status else 0
                last_txs, last_status = committed, tick
                oi = " ".join(
                    f"{m['market'].split('-')[0]}={int(m['open_interest']) / 1e8:g}"
                    for m in markets
                )
                mode = status["mode"]
                if mode == "maintenance" and status.get("maintenance"):
                    mode += f" ({status['maintenance']['checkpoint']})"
                line = (
                    f"height {status['height']}  {rate:6.1f} tx/s  mode {mode}  "
                    f"OI {oi}  root {status['state_root'][:12]}"
                )
                for i, (_, follower_client) in enumerate(followers, start=1):
                    line += f"  f{i} " + _follower_state(client, follower_client)
                print("\r" + line.ljust(110), end="", flush=True)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        print("\ndevnet: stopping", flush=True)
        return 0
    finally:
        for child, _ in followers:
            stop_child(child)
        stop_child(node)
        for i, (child, _) in enumerate(followers, start=1):
            print(f"devnet: follower {i} stopped (exit {child.returncode})", flush=True)
        print(f"devnet: node stopped (exit {node.returncode})", flush=True)


def stop_child(child: subprocess.Popen[Any], timeout_s: float = 20) -> int:
    """SIGTERM, wait, SIGKILL if it does not exit in time; its exit code."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return child.returncode


def _follower_state(sequencer: RpcClient, follower: RpcClient) -> str:
    """`812 ok` (its root equals the sequencer's at its height), `812 DIFFERS`, `halted`."""
    try:
        status = follower.call("node_status")
        if status["mode"] == "halted":
            return f"{status['height']} HALTED"
        height = status["height"]
        if int(height) < 0:
            return "syncing"
        theirs = sequencer.call("chain_getBlock", height=height)["header"]["state_root"]
    except (RpcUnavailable, RpcCallError):
        return "down"
    return f"{height} {'ok' if theirs == status['state_root'] else 'DIFFERS'}"


if __name__ == "__main__":
    raise SystemExit(main())
