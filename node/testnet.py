"""The local CometBFT testnet (issue 21): N validators on loopback, each a CometBFT v0.38 node and
its perpchain ABCI application process, with the devnet's oracle feeder and trading bots, and a
live status line per validator. Ctrl-C stops all of it.

    ./scripts/testnet [--validators 4] [--duration S] [--home .testnet] [--port-base 26656]
                      [--rpc-port 9545] [--timeout-commit-ms 400] [--no-bots]

Validator i (0-based) lives in HOME/validator-i/{cometbft,app} and listens on loopback only:
CometBFT P2P port-base + 10 i, CometBFT RPC port-base + 1 + 10 i, the ABCI socket of its
application port-base + 2 + 10 i, perpchain JSON-RPC rpc-port + 100 i (with the defaults:
26656/26657/26658 and 9545 for validator 0, 26666/26667/26668 and 9645 for validator 1 ...).

The homes are `cometbft testnet` homes (keys, node ids) whose config is patched: loopback
ports, persistent_peers, addr_book_strict = false, allow_duplicate_ip = true, fast consensus
timeouts. The CometBFT genesis takes our chain id and a genesis time just after ours; our
genesis (genesis/devnet.json unless --genesis) gets the validator set CometBFT generated, so the
application's InitChain accepts it (docs/ABCI.md, "Testnet").

Every child runs in its own process group (start_new_session): a stop signals the group, a kill
-9 kills it, so nothing is orphaned; Ctrl-C reaches the launcher only, which stops the CometBFT
nodes first and then the applications. The engine is built by scripts/cometbft on first use.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import functools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from node.client import RpcCallError, RpcClient, RpcUnavailable
from node.cometbft import (
    ROOT,
    CometBFTUnavailable,
    Ports,
    TestnetError,
    Timeouts,
    cometbft_binary,
    patch_config,
    port_open,
    rfc3339_ms,
    signal_group,
    spawn_group,
    stop_group,
    validator_entries,
)

MARKER = ".perpchain-testnet"
# Oracle updates are dated this far behind the wall clock: CometBFT's block time is the median
# of the previous commit's vote times, about a block interval behind, and an update dated after
# its block's time is refused (ORACLE_STALE). Far inside oracle_stale_ms (30 s on the devnet).
ORACLE_LAG_MS = 2_000
VALIDATOR_POWER = 10


# --- the network ------------------------------------------------------------------------------


@dataclasses.dataclass
class ValidatorStatus:
    index: int
    up: bool
    height: int = -1  # CometBFT's latest committed height
    app_height: int = -1  # the application's last committed height (ABCI Info)
    app_hash: str = ""  # hex, the application's state root after app_height
    peers: int = 0
    catching_up: bool = False
    agrees: bool | None = None  # app_hash equals the network's at app_height (None: unknown)

    def text(self) -> str:
        if not self.up:
            return f"v{self.index} down"
        agree = {True: "ok", False: "DIFFERS", None: "?"}[self.agrees]
        sync = " sync" if self.catching_up else ""
        return f"v{self.index} {self.height} {agree} p{self.peers}{sync}"


class Validator:
    def __init__(self, net: Testnet, index: int) -> None:
        self.net = net
        self.index = index
        self.home = net.home / f"validator-{index}"
        self.cometbft_home = self.home / "cometbft"
        self.app_home = self.home / "app"
        self.cometbft: subprocess.Popen[bytes] | None = None
        self.app: subprocess.Popen[bytes] | None = None
        ports = net.ports
        self.rpc_url = f"http://127.0.0.1:{ports.rpc(index)}"
        self.cometbft_url = f"http://127.0.0.1:{ports.cometbft_rpc(index)}"
        self.client = RpcClient(self.rpc_url, timeout_s=10)
        self.engine = RpcClient(self.cometbft_url, timeout_s=5)

    # processes

    def app_command(self) -> list[str]:
        ports = self.net.ports
        return [
            sys.executable,
            "-m",
            "node.cli.main",
            "start",
            "--home",
            str(self.app_home),
            "--abci",
            f"tcp://127.0.0.1:{ports.abci(self.index)}",
            "--comet-rpc",
            self.cometbft_url,
            "--rpc-listen",
            f"127.0.0.1:{ports.rpc(self.index)}",
            "--metrics-listen",
            f"127.0.0.1:{ports.metrics(self.index)}",
        ]

    def start(self, timeout_s: float = 60) -> None:
        """Its application, then (once the ABCI socket listens) its CometBFT node."""
        if self.running():
            return
        if self.net.app != "kvstore":
            env = {**os.environ, "PYTHONPATH": str(ROOT), **self.net.app_env}
            self.app = spawn_group(self.app_command(), self.home / "app.log", env=env)
            deadline = time.monotonic() + timeout_s
            while not port_open(self.net.ports.abci(self.index)):
                if self.app.poll() is not None:
                    raise TestnetError(
                        f"validator {self.index}: the application exited with code "
                        f"{self.app.returncode} before listening; see {self.home / 'app.log'}\n"
                        + self.log_tail("app.log")
                    )
                if time.monotonic() > deadline:
                    raise TestnetError(f"validator {self.index}: the ABCI socket never opened")
                time.sleep(0.05)
        self.cometbft = spawn_group(
            [str(self.net.binary), "start", "--home", str(self.cometbft_home)],
            self.home / "cometbft.log",
        )

    def running(self) -> bool:
        return any(p is not None and p.poll() is None for p in (self.app, self.cometbft))

    def stop(self) -> tuple[int | None, int | None]:
        """SIGTERM: CometBFT first (it stops calling the application), then the application."""
        codes = stop_group(self.cometbft), stop_group(self.app)
        self.cometbft = self.app = None
        return codes

    def kill(self) -> None:
        """kill -9 of its CometBFT node and its application at once."""
        for child in (self.cometbft, self.app):
            if child is not None:
                signal_group(child, signal.SIGKILL)
        for child in (self.cometbft, self.app):
            if child is not None:
                child.wait()
        self.cometbft = self.app = None

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join((self.home / name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # reads

    def engine_status(self) -> dict[str, Any]:
        return self.engine.call("status")  # type: ignore[no-any-return]

    def height(self) -> int:
        """CometBFT's latest committed height (-1 when its RPC does not answer)."""
        try:
            return int(self.engine_status()["sync_info"]["latest_block_height"])
        except (RpcUnavailable, RpcCallError):
            return -1

    def app_info(self) -> tuple[int, str]:
        """The application's (last height, app hash hex) as CometBFT's /abci_info reports it."""
        info = self.engine.call("abci_info")["response"]
        app_hash = base64.b64decode(info.get("last_block_app_hash") or "").hex()
        return int(info.get("last_block_height") or 0), app_hash

    def header_app_hash(self, height: int) -> str | None:
        """The app hash the header of block `height` carries (the state after height - 1)."""
        try:
            header = self.engine.call("header", height=str(height))["header"]
        except (RpcUnavailable, RpcCallError):
            return None
        return str(header["app_hash"]).lower()

    def status(self) -> ValidatorStatus:
        try:
            engine = self.engine_status()
            peers = int(self.engine.call("net_info")["n_peers"])
            app_height, app_hash = self.app_info()
        except (RpcUnavailable, RpcCallError, KeyError):
            return ValidatorStatus(self.index, up=False)
        return ValidatorStatus(
            self.index,
            up=True,
            height=int(engine["sync_info"]["latest_block_height"]),
            app_height=app_height,
            app_hash=app_hash,
            peers=peers,
            catching_up=bool(engine["sync_info"]["catching_up"]),
        )


class Testnet:
    """N validators in `home`; create() makes the homes, start() runs them, stop() ends them."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        home: pathlib.Path,
        *,
        validators: int = 4,
        ports: Ports | None = None,
        timeouts: Timeouts | None = None,
        genesis: dict[str, Any] | None = None,
        app: str = "perpchain",
        app_env: dict[str, str] | None = None,
        binary: pathlib.Path | None = None,
    ) -> None:
        """`app`: "perpchain" (our application) or "kvstore" (CometBFT's built-in example
        application: the engine and the network without ours, to tell their faults apart)."""
        if validators < 1:
            raise TestnetError("a testnet needs at least one validator")
        self.home = pathlib.Path(home)
        self.count = validators
        self.ports = ports or Ports()
        self.timeouts = timeouts or Timeouts()
        self.genesis = genesis or json.loads((ROOT / "genesis" / "devnet.json").read_text())
        self.app = app
        self.app_env = app_env or {}
        self.binary = binary or cometbft_binary()
        self.validators = [Validator(self, i) for i in range(validators)]

    # --- homes ---

    def create(self) -> None:
        """Fresh homes: `cometbft testnet` keys, patched configs, a CometBFT genesis and ours
        that agree (chain id, validator set, time), and each application's home."""
        if self.home.exists():
            if not (self.home / MARKER).exists():
                raise TestnetError(f"{self.home} exists and is not a testnet home; pick another")
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)
        (self.home / MARKER).write_text("created by scripts/testnet; deleted on the next start\n")
        with tempfile.TemporaryDirectory(dir=self.home) as scratch:
            subprocess.run(
                [
                    str(self.binary),
                    "testnet",
                    "--v",
                    str(self.count),
                    "--o",
                    scratch,
                    "--starting-ip-address",
                    "127.0.0.1",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for v in self.validators:
                v.home.mkdir()
                shutil.move(f"{scratch}/node{v.index}", v.cometbft_home)
        node_ids = [self._node_id(v) for v in self.validators]
        cometbft_genesis = json.loads(
            (self.validators[0].cometbft_home / "config" / "genesis.json").read_text()
        )
        # Power 10 each, not `cometbft testnet`'s 1: CometBFT's block sync hands over to
        # consensus at once on a validator holding >= total/3 in integer division (4 x 1 -> 1),
        # so a restarted validator of 4 would never block-sync (blocksync/reactor.go,
        # localNodeBlocksTheChain); with 10 each, 10 < 40/3.
        for validator in cometbft_genesis["validators"]:
            validator["power"] = str(VALIDATOR_POWER)
        genesis = dict(self.genesis)
        genesis["abci"] = {"validators": validator_entries(cometbft_genesis)}
        cometbft_genesis["chain_id"] = genesis["chain_id"]
        # CometBFT's first block carries the genesis time; ours must be strictly later than
        # our block 0 (the invariant "block time increasing"): 1 ms after our genesis time.
        cometbft_genesis["genesis_time"] = rfc3339_ms(int(genesis["genesis_time_ms"]) + 1)
        self.genesis = genesis
        (self.home / "genesis.json").write_text(json.dumps(genesis, indent=2) + "\n")
        proxy_app = "kvstore" if self.app == "kvstore" else None
        for v in self.validators:
            config_dir = v.cometbft_home / "config"
            (config_dir / "genesis.json").write_text(json.dumps(cometbft_genesis, indent=2) + "\n")
            peers = [
                f"{node_ids[j]}@127.0.0.1:{self.ports.p2p(j)}"
                for j in range(self.count)
                if j != v.index
            ]
            config = config_dir / "config.toml"
            config.write_text(
                patch_config(
                    config.read_text(),
                    i=v.index,
                    ports=self.ports,
                    peers=peers,
                    timeouts=self.timeouts,
                    proxy_app=proxy_app or f"tcp://127.0.0.1:{self.ports.abci(v.index)}",
                )
            )
            if self.app != "kvstore":
                self._init_app(v)

    def _init_app(self, v: Validator) -> None:
        from node.app import init_home

        init_home(v.app_home, self.genesis)

    def _node_id(self, v: Validator) -> str:
        done = subprocess.run(
            [str(self.binary), "show-node-id", "--home", str(v.cometbft_home)],
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    # --- processes ---

    def start(self, indices: list[int] | None = None) -> None:
        for i in indices if indices is not None else range(self.count):
            self.validators[i].start()

    def stop(self) -> None:
        """Every CometBFT node first, then every application."""
        for v in self.validators:
            stop_group(v.cometbft)
            v.cometbft = None
        for v in self.validators:
            stop_group(v.app)
            v.app = None

    def check_alive(self) -> None:
        """Raise if a started child died unexpectedly (with its log's tail)."""
        for v in self.validators:
            for name, child in (("application", v.app), ("cometbft", v.cometbft)):
                if child is not None and child.poll() is not None:
                    log = "app.log" if name == "application" else "cometbft.log"
                    raise TestnetError(
                        f"validator {v.index}: its {name} exited with code {child.returncode}\n"
                        + v.log_tail(log)
                    )

    # --- reads ---

    def statuses(self) -> list[ValidatorStatus]:
        """Every validator's status; `agrees` compares its application's state root after a
        height h (its latest, or h = the network's head - 1 when it is at the head) with the
        app hash CometBFT's header of h + 1 carries on the most advanced validator."""
        out = [v.status() for v in self.validators]
        up = [s for s in out if s.up]
        if not up:
            return out
        top = max(up, key=lambda s: s.height)
        reference = self.validators[top.index]
        for s in up:
            height = min(s.app_height, top.height - 1)
            if height < 1:
                continue
            expected = reference.header_app_hash(height + 1)
            ours: str | None = s.app_hash
            if height != s.app_height:
                try:
                    block = self.validators[s.index].client.call(
                        "chain_getBlock", height=str(height)
                    )
                    ours = str(block["header"]["state_root"])
                except (RpcUnavailable, RpcCallError, KeyError):
                    ours = None
            if expected is not None and ours is not None:
                s.agrees = expected == ours
        return out

    def wait(
        self, what: str, check: Callable[[], Any], timeout_s: float = 60, poll_s: float = 0.2
    ) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TestnetError(f"timed out after {timeout_s:g} s waiting for {what}")
            time.sleep(poll_s)

    def wait_height(
        self, height: int, indices: list[int] | None = None, timeout_s: float = 60
    ) -> None:
        chosen = [self.validators[i] for i in (indices or range(self.count))]
        self.wait(
            f"height {height} on validators {[v.index for v in chosen]}",
            lambda: all(v.height() >= height for v in chosen),
            timeout_s,
        )

    def heights(self, indices: list[int]) -> list[int]:
        return [self.validators[i].height() for i in indices]

    def app_roots(self, indices: list[int], height: int) -> dict[int, str]:
        """Each validator's application's own state root after `height` (its block record),
        once it has the block."""
        out: dict[int, str] = {}

        def reached(v: Validator) -> bool:
            try:
                return int(v.client.call("node_status")["height"]) >= height
            except (RpcUnavailable, RpcCallError):
                return False

        for i in indices:
            v = self.validators[i]
            self.wait(
                f"validator {i}'s application at height {height}",
                functools.partial(reached, v),
                timeout_s=60,
            )
            block = v.client.call("chain_getBlock", height=str(height))
            out[i] = str(block["header"]["state_root"])
        return out

    def equal_roots(self, indices: list[int], height: int) -> str:
        """The one root the applications of `indices` have after `height`, which must also be
        the app hash CometBFT's header of height + 1 carries on each, with the same block
        record (header hash) on each; TestnetError if not."""
        self.wait_height(height + 1, indices)
        roots = self.app_roots(indices, height)
        agreed = {self.validators[i].header_app_hash(height + 1) for i in indices}
        if len(set(roots.values())) != 1:
            raise TestnetError(f"state roots at {height} differ: {roots}")
        if agreed != set(roots.values()):
            raise TestnetError(f"CometBFT's app hash {agreed} at {height} != roots {roots}")
        # and the same block record (header hash) on every application, not only the state
        hashes = {
            i: self.validators[i].client.call("chain_getBlock", height=str(height))["header"][
                "hash"
            ]
            for i in indices
        }
        if len(set(hashes.values())) != 1:
            raise TestnetError(f"block records at {height} differ: {hashes}")
        return next(iter(roots.values()))

    def wait_committed(
        self, tx_hash: str, indices: list[int], timeout_s: float = 60
    ) -> dict[int, dict[str, Any]]:
        """tx_status of `tx_hash` on each validator's application once it is in a block
        there (committed or rejected)."""
        out: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        for i in indices:
            client = self.validators[i].client
            while True:
                self.check_alive()
                try:
                    status = client.call("tx_status", tx_hash=tx_hash)
                except (RpcUnavailable, RpcCallError):
                    status = {"status": "unreachable"}
                if status["status"] in ("committed", "rejected"):
                    out[i] = status
                    break
                if time.monotonic() > deadline:
                    raise TestnetError(f"tx {tx_hash} not in a block on validator {i}: {status}")
                time.sleep(0.1)
        return out

    def live_client(self) -> RpcClient:
        """The JSON-RPC client of the first validator whose application answers."""
        for v in self.validators:
            if v.app is not None and v.app.poll() is None:
                try:
                    v.client.call("node_status")
                    return v.client
                except (RpcUnavailable, RpcCallError):
                    continue
        raise TestnetError("no validator's JSON-RPC answers")


class TxSender:
    """Signs txs with given keys (next nonce read once per key, then counted) and submits them
    to a validator's JSON-RPC `tx_submit`."""

    def __init__(self, chain_id: str) -> None:
        self.chain_id = chain_id.encode()
        self.nonces: dict[bytes, int] = {}

    def submit(self, client: RpcClient, key: Any, body_cls: type, **fields: Any) -> str:
        from node.core.txs import sign_tx

        if key.public_key not in self.nonces:
            reply = client.call("perp_getNonce", address=key.public_key.hex())
            self.nonces[key.public_key] = int(reply["next_nonce"])
        nonce = self.nonces[key.public_key]
        self.nonces[key.public_key] = nonce + 1
        tx = sign_tx(body_cls(nonce=nonce, **fields), key, self.chain_id)
        return str(client.call("tx_submit", tx=tx.raw.hex())["tx_hash"])


# --- the launcher ---------------------------------------------------------------------------


@contextlib.contextmanager
def started(net: Testnet) -> Iterator[Testnet]:
    """start() the homes as they are; stop() on the way out, whatever happens."""
    try:
        net.start()
        yield net
    finally:
        net.stop()


@contextlib.contextmanager
def running(net: Testnet) -> Iterator[Testnet]:
    """create() fresh homes, then as `started`."""
    net.create()
    with started(net):
        yield net


def status_line(statuses: list[ValidatorStatus]) -> str:
    """`v0 812 ok p3  v1 812 ok p3 ...`: CometBFT height, whether the application's app hash
    is the network's, peers; `down`, `DIFFERS`, `sync` (block sync) when so."""
    return "  ".join(s.text() for s in statuses)


def main(argv: list[str] | None = None, out: IO[str] | None = None) -> int:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(
        prog="scripts/testnet",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  ./scripts/testnet\n  ./scripts/testnet --validators 4 --duration 60 "
        "--home /tmp/testnet\n",
    )
    parser.add_argument("--home", default=str(ROOT / ".testnet"), help="recreated (.testnet)")
    parser.add_argument("--genesis", default=str(ROOT / "genesis" / "devnet.json"))
    parser.add_argument("--validators", type=int, default=4, help="validators (default 4)")
    parser.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    parser.add_argument(
        "--port-base", type=int, default=26656, help="CometBFT P2P port of validator 0 (26656)"
    )
    parser.add_argument(
        "--rpc-port", type=int, default=9545, help="perpchain JSON-RPC port of validator 0 (9545)"
    )
    parser.add_argument(
        "--timeout-commit-ms", type=int, default=400, help="CometBFT timeout_commit (400 ms)"
    )
    parser.add_argument("--accounts", type=int, default=16, help="dev traders the bots use")
    parser.add_argument("--orders-per-second", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-bots", action="store_true")
    args = parser.parse_args(argv)
    say = out or sys.stdout

    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        net = Testnet(
            pathlib.Path(args.home),
            validators=args.validators,
            ports=Ports(args.port_base, args.rpc_port),
            timeouts=Timeouts(commit_ms=args.timeout_commit_ms),
            genesis=json.loads(pathlib.Path(args.genesis).read_text()),
        )
    except CometBFTUnavailable as error:
        print(f"testnet: {error}", file=sys.stderr)
        return 2
    print(f"testnet: {args.validators} validators in {args.home}", file=say, flush=True)
    net.create()
    try:
        net.start()
        for v in net.validators:
            print(
                f"testnet: validator {v.index}: RPC {v.rpc_url}  CometBFT {v.cometbft_url}  "
                f"P2P {net.ports.p2p(v.index)}  ABCI {net.ports.abci(v.index)}  logs {v.home}",
                file=say,
                flush=True,
            )
        net.wait_height(1, timeout_s=120)
        print("testnet: the first block is committed", file=say, flush=True)
        return _run(net, args, say, lambda: stop)
    except TestnetError as error:
        print(f"\ntestnet: {error}", file=say, flush=True)
        return 1
    finally:
        print("\ntestnet: stopping", file=say, flush=True)
        net.stop()
        print("testnet: stopped", file=say, flush=True)


def _run(net: Testnet, args: argparse.Namespace, say: IO[str], stopped: Callable[[], bool]) -> int:
    from node.devnet import Bots

    genesis = net.genesis
    traders = min(args.accounts, len(genesis["accounts"]))
    bots = Bots(net.live_client(), genesis, traders, args.seed, oracle_lag_ms=ORACLE_LAG_MS)
    started = time.monotonic()
    last_status = 0.0
    last_txs = -1
    while not stopped() and (args.duration <= 0 or time.monotonic() - started < args.duration):
        net.check_alive()
        tick = time.monotonic()
        if not args.no_bots:
            try:
                bots.feed_oracle()
                bots.trade(args.orders_per_second)
            except RpcUnavailable:
                with contextlib.suppress(TestnetError):
                    bots.client = net.live_client()
        if tick - last_status >= 1.0:
            statuses = net.statuses()
            heights = [s.height for s in statuses if s.up]
            rate = 0.0
            with contextlib.suppress(RpcUnavailable, RpcCallError, TestnetError):
                committed = int(net.live_client().call("node_status")["committed_txs"])
                if last_txs >= 0:
                    rate = (committed - last_txs) / (tick - last_status)
                last_txs = committed
            line = f"height {max(heights, default=-1)}  {rate:6.1f} tx/s  " + status_line(statuses)
            last_status = tick
            print("\r" + line.ljust(110), end="", file=say, flush=True)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
