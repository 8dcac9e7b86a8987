"""The incident drill: the 30-minute maintenance that zeroed every funding index, played on a
local devnet (a sequencer and a follower, real processes, real sockets), and recovered with the
node's own tools. `scripts/drill` runs it for a person to watch; tests/e2e/test_drill.py runs it
and checks every claim.

 1. Trade until leveraged shorts hold positions opened at a high funding index.
 2. `maintenance begin`: operator block (CANCEL_ONLY), pin pre-maintenance-<h>, fencing epoch;
    the sequencer is restarted inside the window (a database upgrade's service restart) and
    comes back in maintenance: the window is stored, not held in memory (issue 13).
 3. Fault hook 1 (test-only): a "migration" zeroes the funding indices around the writer.
 4. `maintenance end` must refuse: verification names `funding_index_quote: stored 0`.
 5. Fault hook 2 (test-only): bypass the pre-commit checks, end maintenance, reopen the markets:
    the sequencer builds blocks on the damaged state and liquidates the shorts.
 6. The follower re-executes, stops at the first invalid state root and says why.
 7. `admin_rollback --to-checkpoint pre-maintenance-<h>`: the damaged rows are restored from the
    history, the reverted blocks archived, the recovery block cancels every resting order except
    TP/SL and re-applies the deposits; the follower checks the operator-signed notice, rolls
    back, resumes, and both nodes agree on the head.

Fault injection exists only on a node started with PERPCHAIN_FAULT_INJECTION=1 (or `[testing]
fault_injection = true`), which NodeConfig refuses unless the chain is a devnet/test chain.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from node.client import RpcCallError, RpcClient
from node.core.crypto import SigningKey
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import Deposit, OracleUpdate, PlaceOrder, PricePoint, sign_tx

ROOT = pathlib.Path(__file__).resolve().parents[1]
USD = 10**6
UNIT = 10**8
SHORTS = 3
DEPOSIT_ID = 90_001

Say = Callable[[str], None]


def drill_genesis() -> dict[str, Any]:
    """The devnet genesis with fast funding (a tick a second over a one-second period, a 2%
    cap) and three thinly collateralised dev accounts for the shorts."""
    doc: dict[str, Any] = json.loads((ROOT / "genesis" / "devnet.json").read_text())
    doc["params"]["funding_interval_ms"] = "1000"
    doc["params"]["funding_period_ms"] = "1000"
    doc["params"]["breaker_notional_quote"] = str(10**18)
    for market in doc["markets"]:
        market["max_funding_rate_ppm"] = "20000"
    for i in range(SHORTS):
        key = SigningKey.from_label(f"drill/short/{i}")
        doc["accounts"].append(
            {"address": key.public_key.hex(), "collateral_quote": str(4_000 * USD)}
        )
    return doc


class Drill:
    def __init__(
        self,
        rpc: str,
        admin: str,
        token: str,
        follower: str,
        say: Say,
        *,
        restart: Callable[[], None] | None = None,
    ) -> None:
        # `restart`: stop the sequencer (SIGTERM) and start it again on the same ports
        # (restart_sequencer); None skips that step.
        self.restart = restart
        self.genesis = drill_genesis()
        self.chain_id = self.genesis["chain_id"].encode()
        self.seq = RpcClient(rpc, timeout_s=30)
        self.admin = RpcClient(admin, token=token, timeout_s=60)
        self.follower = RpcClient(follower, timeout_s=30)
        self.say = say
        self.nonces: dict[bytes, int] = {}
        self.maker = SigningKey.from_label("devnet/trader/0")
        self.shorts = [SigningKey.from_label(f"drill/short/{i}") for i in range(SHORTS)]
        self.depositor = SigningKey.from_label("devnet/trader/5")
        self.facts: dict[str, Any] = {}

    # --- helpers ------------------------------------------------------------------------

    def send(self, key: SigningKey, body_cls: type, **fields: Any) -> str:
        if key.public_key not in self.nonces:
            reply = self.seq.call("perp_getNonce", address=key.public_key.hex())
            self.nonces[key.public_key] = int(reply["next_nonce"])
        nonce = self.nonces[key.public_key]
        self.nonces[key.public_key] = nonce + 1
        tx = sign_tx(body_cls(nonce=nonce, **fields), key, self.chain_id)
        return str(self.seq.call("tx_submit", tx=tx.raw.hex())["tx_hash"])

    def wait_tx(self, tx_hash: str, timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.seq.call("tx_status", tx_hash=tx_hash)
            if status["status"] in ("committed", "rejected"):
                return status  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise TimeoutError(f"tx {tx_hash} not committed")

    def order(self, key: SigningKey, side: Side, size: int, price: int, **kw: Any) -> str:
        fields = {
            "market_id": 1,
            "side": side,
            "kind": OrderKind.LIMIT,
            "tif": TimeInForce.GTC,
            "price_quote": price,
            "size_atoms": size,
            "reduce_only": 0,
            "trigger_price_quote": 0,
            "client_id": int(time.time() * 1000) % 10**9 + len(self.nonces) * 7,
        }
        fields.update(kw)
        return self.send(key, PlaceOrder, **fields)

    def oracle(self) -> str:
        prices = tuple(
            PricePoint(market_id=int(m["id"]), price_quote=int(m["oracle_price_quote"]))
            for m in self.genesis["markets"]
        )
        time_ms = time.time_ns() // 1_000_000 - 20
        return self.send(
            SigningKey.from_label("devnet/oracle"), OracleUpdate, time_ms=time_ms, prices=prices
        )

    def funding_index(self, client: RpcClient | None = None) -> int:
        return int((client or self.seq).call("perp_getMarket", market="1")["funding_index"])

    def until(self, what: str, check: Callable[[], Any], timeout_s: float = 60) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"drill: timed out waiting for {what}")

    # --- the drill ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        say = self.say
        say("1. trading: a maker quotes above the oracle, so funding accrues fast")
        self.wait_tx(self.oracle())
        self.wait_tx(self.order(self.maker, Side.BUY, 5 * UNIT, 61_000 * USD, client_id=1))
        self.wait_tx(self.order(self.maker, Side.SELL, UNIT, 61_200 * USD, client_id=2))
        self.until("a funding index of $5,000", lambda: self.funding_index() >= 5_000 * USD)
        say(f"   funding index {self.funding_index() / USD:,.0f} USD per BTC; the shorts sell")
        for i, key in enumerate(self.shorts):
            receipt = self.wait_tx(
                self.order(
                    key,
                    Side.SELL,
                    UNIT,
                    0,
                    kind=OrderKind.MARKET,
                    tif=TimeInForce.IOC,
                    client_id=10 + i,
                )
            )
            if not (receipt["status"] == "committed"):
                raise RuntimeError(receipt)
        tp = self.order(
            self.shorts[0],
            Side.BUY,
            UNIT,
            0,
            kind=OrderKind.TAKE_PROFIT,
            tif=TimeInForce.IOC,
            trigger_price_quote=50_000 * USD,
            reduce_only=1,
            client_id=99,
        )
        if not (self.wait_tx(tp)["status"] == "committed"):
            raise RuntimeError("the take-profit order was not committed")
        say("   3 shorts of 1 BTC on $4,000 each; short 0 protects itself with a take-profit")

        say("2. maintenance begin")
        begun = self.admin.call("admin_maintenanceBegin", reason="database upgrade")
        checkpoint = begun["checkpoint"]
        self.facts["checkpoint"] = checkpoint
        self.facts["pre_index"] = self.funding_index()
        self.facts["pre_root"] = begun["state_root"]
        say(f"   pinned {checkpoint} at root {begun['state_root'][:16]}, markets CANCEL_ONLY")
        try:
            self.seq.call("tx_submit", tx="00")
        except RpcCallError as refused:
            self.facts["submit_during_maintenance"] = refused.code
        if self.restart is not None:
            self.restart_in_maintenance(begun)

        say("3. fault hook 1: a migration zeroes every funding index around the writer")
        self.admin.call("admin_injectFault", kind="zero_funding_indices")
        say("4. maintenance end must refuse")
        try:
            self.admin.call("admin_maintenanceEnd")
            self.facts["end_refused"] = None
        except RpcCallError as refused:
            self.facts["end_refused"] = refused.message
            self.facts["end_differences"] = (refused.data or {}).get("differences", [])
            say(f"   refused: {refused.message[:110]}")
            for line in self.facts["end_differences"][:3]:
                say(f"     {line}")

        say("5. fault hook 2: bypass the pre-commit checks; end maintenance; reopen the markets")
        self.admin.call("admin_injectFault", kind="bypass_checks")
        self.admin.call("admin_maintenanceEnd")
        for market in self.genesis["markets"]:
            self.admin.call("admin_setMarketMode", market=market["id"], mode="OPEN")
        bridge = SigningKey.from_label("devnet/bridge")
        self.facts["depositor_before"] = int(
            self.seq.call("perp_getAccount", address=self.depositor.public_key.hex())["collateral"]
        )
        deposit = self.send(
            bridge,
            Deposit,
            account=self.depositor.public_key,
            amount_quote=1_000 * USD,
            deposit_id=DEPOSIT_ID,
        )
        self.wait_tx(self.oracle())
        if not (self.wait_tx(deposit)["status"] == "committed"):
            raise RuntimeError("the deposit was not committed")
        liquidated = self.until("liquidations on the damaged chain", self.liquidations_since)
        self.facts["liquidated"] = sorted(liquidated)
        say(f"   the sequencer liquidated {len(liquidated)} accounts on the damaged state")

        say("6. the follower re-executes every block")
        halted = self.until(
            "the follower to halt",
            lambda: (s := self.follower.call("node_status"))["mode"] == "halted" and s,
        )
        self.facts["follower_halt"] = halted["halt_reason"]
        pinned = int(checkpoint.rsplit("-", 1)[1])
        self.facts["corruption_to_halt_blocks"] = int(halted["height"]) + 1 - pinned
        say(f"   follower halted at {halted['height']}: {halted['halt_reason'][:100]}")
        say(
            f"   from the first block built on the damage to the halt: "
            f"{self.facts['corruption_to_halt_blocks']} block(s); nothing invalid was applied"
        )

        say(f"7. admin_rollback to {checkpoint}")
        dry = self.admin.call("admin_rollback", to_checkpoint=checkpoint, dry_run=True)
        self.facts["dry_run_liquidations"] = len(dry["undone"]["liquidations"])
        outcome = self.admin.call(
            "admin_rollback", to_checkpoint=checkpoint, reason="funding indices zeroed"
        )
        self.facts["rollback"] = outcome
        say(
            f"   fork {outcome['fork_id']}: {outcome['from_height']} -> {outcome['to_height']}, "
            f"{outcome['repaired_keys']} damaged rows restored, recovery block "
            f"{outcome['recovery_height']}, {outcome['deposits_reapplied']} deposits re-applied"
        )
        recovery = int(outcome["recovery_height"])
        follower = self.until(
            "the follower to resume and reach the recovery block",
            lambda: (
                (s := self.follower.call("node_status"))["mode"] == "following"
                and int(s["height"]) >= recovery
                and s
            ),
        )
        ours = self.seq.call("chain_getBlock", height=str(recovery))["header"]
        theirs = self.follower.call("chain_getBlock", height=str(recovery))["header"]
        self.facts["agree"] = (
            ours["hash"] == theirs["hash"] and ours["state_root"] == theirs["state_root"]
        )
        self.facts["follower_mode"] = follower["mode"]
        self.facts["follower_notices"] = [
            r["fork_id"] for r in self.follower.call("chain_getRollbacks") if r["notice"]
        ]
        self.facts["post_index"] = self.funding_index()
        self.facts["follower_index"] = self.funding_index(self.follower)
        books = [
            self.seq.call("perp_getOrderBook", market=m["id"]) for m in self.genesis["markets"]
        ]
        self.facts["resting_orders"] = sum(len(b["bids"]) + len(b["asks"]) for b in books)
        short0 = self.seq.call("perp_getAccount", address=self.shorts[0].public_key.hex())
        self.facts["surviving_orders"] = [o["kind"] for o in short0["open_orders"]]
        self.facts["modes"] = sorted({m["mode"] for m in self.seq.call("perp_getMarkets")})
        self.facts["depositor_after"] = int(
            self.seq.call("perp_getAccount", address=self.depositor.public_key.hex())["collateral"]
        )
        say(
            f"   both nodes at block {recovery} with root {ours['state_root'][:16]}; funding index "
            f"{self.facts['post_index'] / USD:,.0f} USD again; orders left: "
            f"{self.facts['surviving_orders']}; markets {self.facts['modes']}"
        )
        say(f"   refund list: perpchain report compensation --fork {outcome['fork_id']}")
        return self.facts

    def restart_in_maintenance(self, begun: dict[str, Any]) -> None:
        """Stop and start the sequencer inside the window: it must come back in maintenance,
        at the same head, producing nothing and refusing txs, until `maintenance end`."""
        if self.restart is None:
            return
        self.say("   restart the sequencer inside the window (SIGTERM, start again)")
        self.restart()
        status = self.seq.call("node_status")
        time.sleep(0.5)  # five block intervals
        held = self.seq.call("node_status")["height"]
        window = status.get("maintenance") or {}
        self.facts["restart_mode"] = status["mode"]
        self.facts["restart_checkpoint"] = window.get("checkpoint")
        self.facts["restart_height_held"] = status["height"] == held == begun["height"]
        try:
            self.seq.call("tx_submit", tx="00")
            self.facts["submit_after_restart"] = None
        except RpcCallError as refused:
            self.facts["submit_after_restart"] = refused.code
        self.say(
            f"   back in {status['mode']} (checkpoint {window.get('checkpoint')}, epoch "
            f"{window.get('epoch')}), height {held}: no block produced, tx_submit answers "
            f"{self.facts['submit_after_restart']}"
        )

    def liquidations_since(self) -> set[str]:
        height = int(self.seq.call("node_status")["height"])
        start = int(self.facts["checkpoint"].rsplit("-", 1)[1]) + 1
        out: set[str] = set()
        for h in range(start, height + 1):
            block = self.seq.call("chain_getBlock", height=str(h))
            for item in block["block_events"]:
                if item["kind"] == "liquidation" and item["counterparty"]:
                    out.add(item["account"])
        return out if len(out) >= SHORTS else set()


def start_nodes(workdir: pathlib.Path) -> tuple[list[subprocess.Popen[str]], dict[str, str]]:
    """A sequencer (admin on, fault injection on, 100 ms blocks) and a follower."""
    from node.app import init_home
    from node.devnet import spawn_node_urls

    genesis = drill_genesis()
    seq_home, follower_home = workdir / "sequencer", workdir / "follower"
    init_home(seq_home, genesis)
    init_home(follower_home, genesis, follower=True)
    env = {"PERPCHAIN_FAULT_INJECTION": "1"}
    seq, urls = spawn_node_urls(
        seq_home, "--block-interval-ms", "100", "--admin-listen", "127.0.0.1:0", env=env
    )
    follower, furls = spawn_node_urls(follower_home, "--follow", urls["rpc"])
    token = (seq_home / "admin.token").read_text().strip()
    return [seq, follower], {
        "rpc": urls["rpc"],
        "admin": urls["admin"],
        "token": token,
        "follower": furls["rpc"],
        "sequencer_home": str(seq_home),
        "follower_home": str(follower_home),
    }


def restart_sequencer(nodes: list[subprocess.Popen[str]], urls: dict[str, str]) -> None:
    """SIGTERM the sequencer (nodes[0]) and start it again on the same RPC and admin ports, so
    the follower and the drill's clients find it where it was; nodes[0] is the new process."""
    from node.devnet import spawn_node_urls, stop_child

    code = stop_child(nodes[0], timeout_s=30)
    if code != 0:
        raise RuntimeError(f"the sequencer exited with code {code} on SIGTERM")
    rpc, admin = (urls[name].removeprefix("http://") for name in ("rpc", "admin"))
    env = {"PERPCHAIN_FAULT_INJECTION": "1"}
    node, _ = spawn_node_urls(
        pathlib.Path(urls["sequencer_home"]),
        "--block-interval-ms",
        "100",
        "--admin-listen",
        admin,
        "--rpc-listen",
        rpc,
        env=env,
    )
    nodes[0] = node


def stop_nodes(nodes: list[subprocess.Popen[str]]) -> list[int]:
    """The follower first, then the sequencer; their exit codes in that order."""
    from node.devnet import stop_child

    return [stop_child(node, timeout_s=30) for node in reversed(nodes)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/drill", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", help="where the two node homes go (default: a temp dir)")
    parser.add_argument(
        "--testnet",
        action="store_true",
        help="play it on 4 CometBFT validators instead (node/drill_testnet.py; docs/ABCI.md)",
    )
    args = parser.parse_args(argv)
    if args.testnet:
        from node.drill_testnet import main as testnet_drill

        return testnet_drill(["--workdir", args.workdir] if args.workdir else [])

    def say(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="perpchain-drill-") as scratch:
        workdir = pathlib.Path(args.workdir or scratch)
        os.makedirs(workdir, exist_ok=True)
        say(f"drill: a sequencer and a follower in {workdir}")
        nodes, urls = start_nodes(workdir)
        try:
            facts = Drill(
                urls["rpc"],
                urls["admin"],
                urls["token"],
                urls["follower"],
                say,
                restart=lambda: restart_sequencer(nodes, urls),
            ).run()
        finally:
            stop_nodes(nodes)
        from node.cli.main import main as cli

        say("8. the compensation report (node stopped):")
        cli(
            [
                "report",
                "compensation",
                "--home",
                urls["sequencer_home"],
                "--fork",
                str(facts["rollback"]["fork_id"]),
            ]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
