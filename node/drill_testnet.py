"""The incident drill on the CometBFT testnet (`scripts/drill --testnet`): the maintenance that
went wrong, played on 4 real CometBFT validators with their perpchain applications, and the
validator set restored to the pre-maintenance checkpoint with the node's own tools
(docs/ABCI.md, "Operator recovery"). tests/e2e/test_cometbft_recovery.py runs it and checks
every fact it returns.

 1. Trading: two 20 BTC positions (healthy at 5% / 3% margins) and a resting order.
 2. Maintenance under consensus: the operator's txs put every market in CANCEL_ONLY; every
    validator is stopped and pins `pre-maintenance` at the lowest head of the set
    (`perpchain checkpoint create --height`), then they start again.
 3. The maintenance goes wrong: the operator reopens the market with a 90% maintenance margin;
    the validators, all agreeing, liquidate both healthy accounts; a bridge deposit lands.
 4. Every validator stopped and rolled back, its store and its CometBFT home, to the checkpoint
    (`perpchain rollback --cometbft-home ... --recovery-out`): one target, one agreed app hash,
    one recovery file.
 5. Started again: the restored roots are the pinned ones; the recovery txs (Recovery, then the
    deposit) go through consensus (`perpchain rollback --submit-recovery`); the liquidations are
    undone, the deposit re-applied, resting orders cancelled, every market CANCEL_ONLY.
 6. The compensation report, from every validator's home: the same document.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from node.cometbft import ROOT, TestnetError, Timeouts, find_ports
from node.core.crypto import SigningKey
from node.core.records import MarketMode, OrderKind, Side, TimeInForce
from node.core.txs import (
    Deposit,
    OracleUpdate,
    PlaceOrder,
    PricePoint,
    SetMarketMode,
    SetMarketParams,
)
from node.testnet import ORACLE_LAG_MS, Testnet, TxSender, running, started

UNIT = 10**8
USD = 10**6
CHECKPOINT = "pre-maintenance"
DEPOSIT_ID = 77_001

Say = Callable[[str], None]


def perpchain(*args: str) -> Any:
    """`perpchain ARGS --json` as an operator runs it; its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", "node.cli.main", *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise TestnetError(f"perpchain {' '.join(args)}: {done.stdout}{done.stderr}")
    return json.loads(done.stdout)


class TestnetDrill:
    __test__ = False  # not a pytest test class

    def __init__(self, net: Testnet, say: Say) -> None:
        self.net = net
        self.say = say
        self.v = net.validators
        self.all = list(range(net.count))
        self.sender = TxSender(str(net.genesis["chain_id"]))
        self.market = net.genesis["markets"][0]
        self.market_id = int(self.market["id"])
        self.price = int(self.market["oracle_price_quote"])
        self.oracle = SigningKey.from_label("devnet/oracle")
        self.operator = SigningKey.from_label("devnet/operator")
        self.bridge = SigningKey.from_label("devnet/bridge")
        self.maker, self.taker, self.rester, self.depositor = (
            SigningKey.from_label(f"devnet/trader/{i}") for i in (12, 13, 14, 15)
        )
        self.facts: dict[str, Any] = {}
        self.client_ids = itertools.count(1)

    # --- helpers ------------------------------------------------------------------------

    def send(self, i: int, key: SigningKey, body: type, **fields: Any) -> dict[int, Any]:
        """Submit through validator i's JSON-RPC; wait until it is committed on all."""
        tx = self.sender.submit(self.v[i % self.net.count].client, key, body, **fields)
        statuses = self.net.wait_committed(tx, self.all)
        if {s["status"] for s in statuses.values()} != {"committed"}:
            raise TestnetError(f"tx {tx} was not committed: {json.dumps(statuses[0])}")
        return statuses

    def oracle_update(self, i: int) -> None:
        prices = tuple(
            PricePoint(market_id=int(m["id"]), price_quote=int(m["oracle_price_quote"]))
            for m in self.net.genesis["markets"]
        )
        time_ms = time.time_ns() // 1_000_000 - ORACLE_LAG_MS
        self.send(i, self.oracle, OracleUpdate, time_ms=time_ms, prices=prices)

    def order(self, i: int, key: SigningKey, side: Side, size: int, **fields: Any) -> None:
        values = {
            "market_id": self.market_id,
            "side": side,
            "kind": OrderKind.LIMIT,
            "tif": TimeInForce.GTC,
            "price_quote": self.price,
            "size_atoms": size,
            "reduce_only": 0,
            "trigger_price_quote": 0,
            "client_id": next(self.client_ids),
        }
        values.update(fields)
        self.send(i, key, PlaceOrder, **values)

    def account(self, i: int, key: SigningKey) -> dict[str, Any]:
        answer: dict[str, Any] = self.v[i].client.call(
            "perp_getAccount", address=key.public_key.hex()
        )
        return answer

    def stores_heads(self) -> list[int]:
        from node.store import VersionedStore

        heads = []
        for validator in self.v:
            with VersionedStore.open(validator.app_home / "data") as store:
                heads.append(store.height)
        return heads

    # --- the drill ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Create the homes, play every step; the facts (module docstring)."""
        net, say, facts = self.net, self.say, self.facts
        with running(net):
            net.wait_height(2, timeout_s=120)
            say("1. trading: two 20 BTC positions and a resting bid, each tx on all validators")
            self.oracle_update(0)
            self.order(1, self.maker, Side.SELL, 20 * UNIT)
            self.order(
                2, self.taker, Side.BUY, 20 * UNIT, kind=OrderKind.MARKET, tif=TimeInForce.IOC,
                price_quote=0,
            )  # fmt: skip
            self.order(3, self.rester, Side.BUY, UNIT, price_quote=self.price - 1_000 * USD)
            say("2. maintenance begins: the operator's txs put every market in CANCEL_ONLY")
            for m in net.genesis["markets"]:
                self.send(
                    0, self.operator, SetMarketMode, market_id=int(m["id"]),
                    mode=MarketMode.CANCEL_ONLY,
                )  # fmt: skip
            facts["collateral_before"] = int(self.account(0, self.depositor)["collateral"])
        heads = self.stores_heads()
        pinned = min(heads)
        facts["pinned"] = pinned
        for validator in self.v:
            perpchain(
                "checkpoint", "create", CHECKPOINT, "--height", str(pinned),
                "--home", str(validator.app_home), "--reason", "maintenance",
            )  # fmt: skip
        say(f"   every validator stopped (heads {heads}) and pinned {CHECKPOINT} at {pinned}")

        with started(net):
            net.wait_height(pinned + 2, timeout_s=120)
            facts["pre_root"] = net.equal_roots(self.all, pinned)
            say("3. the maintenance goes wrong: the market reopens with a 90% maintenance margin")
            self.send(
                1, self.operator, SetMarketMode, market_id=self.market_id, mode=MarketMode.OPEN
            )
            self.send(
                1, self.operator, SetMarketParams, market_id=self.market_id,
                initial_margin_ppm=950_000, maintenance_margin_ppm=900_000,
                max_funding_rate_ppm=int(self.market["max_funding_rate_ppm"]),
            )  # fmt: skip
            self.oracle_update(2)
            self.send(
                3, self.bridge, Deposit, account=self.depositor.public_key,
                amount_quote=1_000 * USD, deposit_id=DEPOSIT_ID,
            )  # fmt: skip
            net.wait(
                "the liquidation of both accounts on every validator",
                lambda: all(
                    not self.account(i, key)["positions"]
                    for i in self.all
                    for key in (self.maker, self.taker)
                ),
                timeout_s=60,
            )
            facts["damaged_height"] = max(net.heights(self.all))
            say(
                f"   the validator set liquidated both healthy accounts (head "
                f"{facts['damaged_height']}); a deposit landed"
            )

        say(f"4. every validator stopped and rolled back to {CHECKPOINT} (store and CometBFT)")
        outcomes = []
        for validator in self.v:
            outcomes.append(
                perpchain(
                    "rollback",
                    "--home",
                    str(validator.app_home),
                    "--cometbft-home",
                    str(validator.cometbft_home),
                    "--cometbft",
                    str(net.binary),
                    "--to-checkpoint",
                    CHECKPOINT,
                    "--reason",
                    "maintenance liquidated healthy accounts",
                    "--recovery-out",
                    str(validator.home / "recovery.json"),
                )  # fmt: skip
            )
        facts["outcomes"] = outcomes
        # Run again (an operator unsure it went through): it finds both at the target and
        # changes nothing.
        facts["repeat"] = perpchain(
            "rollback", "--home", str(self.v[0].app_home),
            "--cometbft-home", str(self.v[0].cometbft_home), "--cometbft", str(net.binary),
            "--to-checkpoint", CHECKPOINT,
        )  # fmt: skip
        files = {(x.home / "recovery.json").read_text() for x in self.v}
        facts["recovery_files_equal"] = len(files) == 1
        recovery = json.loads(sorted(files)[0])
        facts["recovery"] = recovery
        for i, outcome in enumerate(outcomes):
            say(
                f"   validator {i}: {outcome['app_from']} -> {outcome['target']}, CometBFT "
                f"{outcome['cometbft_steps']} x rollback --hard, app hash "
                f"{outcome['app_hash'][:16]}"
            )

        with started(net):
            net.wait_height(pinned + 1, timeout_s=120)
            facts["restored_root"] = net.equal_roots(self.all, pinned)
            say(f"5. restarted; the recovery txs ({len(recovery['txs'])}) through consensus")
            facts["submitted"] = perpchain(
                "rollback", "--home", str(self.v[0].app_home),
                "--submit-recovery", str(self.v[0].home / "recovery.json"),
                "--rpc", self.v[0].rpc_url,
            )  # fmt: skip
            for status in facts["submitted"]:
                net.wait_committed(status["tx_hash"], self.all)
            top = max(net.heights(self.all))
            net.wait_height(top + 2, timeout_s=60)
            facts["agreed_after"] = net.equal_roots(self.all, top + 1)
            facts["positions"] = {
                i: sorted(
                    abs(int(p["size"]))
                    for key in (self.maker, self.taker)
                    for p in self.account(i, key)["positions"]
                )
                for i in self.all
            }
            facts["resting_orders"] = {
                i: len(self.account(i, self.rester)["open_orders"]) for i in self.all
            }
            facts["depositor_collateral"] = {
                i: int(self.account(i, self.depositor)["collateral"]) for i in self.all
            }
            facts["modes"] = {
                i: sorted({m["mode"] for m in self.v[i].client.call("perp_getMarkets")})
                for i in self.all
            }
            say(
                f"   positions back (BTC) {[p / UNIT for p in facts['positions'][0]]}, resting "
                f"orders "
                f"{facts['resting_orders'][0]}, deposit re-applied, markets {facts['modes'][0]}"
            )

        say(f"6. compensation report of fork {recovery['fork_id']}, on every validator")
        reports = [
            perpchain(
                "report",
                "compensation",
                "--home",
                str(x.app_home),
                "--fork",
                str(recovery["fork_id"]),
            )  # fmt: skip
            for x in self.v
        ]
        facts["report_hashes"] = [r["report_hash"] for r in reports]
        facts["liquidated"] = sorted(
            row["account"] for row in reports[0]["accounts"] if row["liquidations"]
        )
        say(
            f"   the same report on all {len(reports)} (hash {reports[0]['report_hash'][:16]}); "
            f"liquidated accounts to refund: {len(facts['liquidated'])}"
        )
        return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/drill --testnet", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--workdir", help="where the testnet homes go (default: a temp dir)")
    parser.add_argument("--port-base", type=int, default=26656)
    parser.add_argument("--rpc-port", type=int, default=9545)
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="perpchain-drill-testnet-") as scratch:
        workdir = pathlib.Path(args.workdir or scratch)
        ports = find_ports(4, args.port_base)
        net = Testnet(
            workdir / "testnet",
            ports=ports,
            timeouts=Timeouts(propose_ms=800, prevote_ms=150, precommit_ms=150, commit_ms=300),
        )
        say(f"drill: 4 CometBFT validators in {workdir / 'testnet'} (P2P from {ports.base})")
        TestnetDrill(net, say).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
