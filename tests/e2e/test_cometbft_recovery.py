"""Operator recovery under consensus (issue 21; docs/ABCI.md, "Operator recovery"), on 4 real
CometBFT validators: the incident the product exists for, with the validator set instead of one
sequencer.

Maintenance under consensus: the operator's txs put every market in CANCEL_ONLY, every
validator is stopped and pins `pre-maintenance` at the same height, and they start again. The
maintenance goes wrong: the operator reopens the market with a maintenance margin of 90%, and the
validators, all agreeing, liquidate two healthy accounts; a bridge deposit lands meanwhile.
Recovery: every validator stopped, `perpchain rollback --cometbft-home ... --to-checkpoint
pre-maintenance` on each (store and CometBFT to the same height, checked against the app hash
the validator set signed), started again, the recovery txs (Recovery, then the reverted
deposit) submitted through one validator's JSON-RPC and committed on all; the compensation
report is the same on every validator.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
from typing import Any

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
from node.store import VersionedStore
from node.testnet import ORACLE_LAG_MS, ROOT, Testnet, running, started
from tests.e2e.cometbft import Sender, equal_roots, make_testnet, wait_committed

ALL = [0, 1, 2, 3]
UNIT = 10**8
USD = 10**6


def cli(*args: str) -> dict[str, Any] | list[Any]:
    done = subprocess.run(
        [sys.executable, "-m", "node.cli.main", *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"perpchain {' '.join(args)}: {done.stdout}{done.stderr}"
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def committed_on_all(net: Testnet, tx: str) -> dict[int, dict[str, Any]]:
    statuses = wait_committed(net, tx, ALL)
    assert {s["status"] for s in statuses.values()} == {"committed"}, json.dumps(statuses[0])
    return statuses


def account(net: Testnet, i: int, key: SigningKey) -> dict[str, Any]:
    return net.validators[i].client.call(  # type: ignore[no-any-return]
        "perp_getAccount", address=key.public_key.hex()
    )


def test_rollback_to_a_pre_maintenance_checkpoint_on_the_validator_set(
    tmp_path: pathlib.Path,
) -> None:
    net = make_testnet(tmp_path / "net", slot=1)
    t0 = time.monotonic()
    market = net.genesis["markets"][0]
    market_id, price = int(market["id"]), int(market["oracle_price_quote"])
    sender = Sender(net)
    oracle = SigningKey.from_label("devnet/oracle")
    operator = SigningKey.from_label("devnet/operator")
    bridge = SigningKey.from_label("devnet/bridge")
    maker, taker, rester, depositor = (
        SigningKey.from_label(f"devnet/trader/{i}") for i in (12, 13, 14, 15)
    )
    v = net.validators

    def oracle_update(i: int) -> str:
        return sender.submit(
            v[i].client,
            oracle,
            OracleUpdate,
            time_ms=time.time_ns() // 1_000_000 - ORACLE_LAG_MS,
            prices=tuple(
                PricePoint(market_id=int(m["id"]), price_quote=int(m["oracle_price_quote"]))
                for m in net.genesis["markets"]
            ),
        )

    def limit(key: SigningKey, side: Side, size: int, at: int, client_id: int, i: int) -> str:
        return sender.submit(
            v[i].client,
            key,
            PlaceOrder,
            market_id=market_id,
            side=side,
            kind=OrderKind.LIMIT,
            tif=TimeInForce.GTC,
            price_quote=at,
            size_atoms=size,
            reduce_only=0,
            trigger_price_quote=0,
            client_id=client_id,
        )

    with running(net):
        net.wait_height(2, timeout_s=90)
        # Trading: a 20 BTC position each side (healthy at 5% / 3% margins), one resting order.
        committed_on_all(net, oracle_update(0))
        committed_on_all(net, limit(maker, Side.SELL, 20 * UNIT, price, 1, 1))
        committed_on_all(
            net,
            sender.submit(
                v[2].client,
                taker,
                PlaceOrder,
                market_id=market_id,
                side=Side.BUY,
                kind=OrderKind.MARKET,
                tif=TimeInForce.IOC,
                price_quote=0,
                size_atoms=20 * UNIT,
                reduce_only=0,
                trigger_price_quote=0,
                client_id=2,
            ),
        )
        committed_on_all(net, limit(rester, Side.BUY, UNIT, price - 1_000 * USD, 3, 3))
        # Maintenance begins: the operator's txs close every market.
        for m in net.genesis["markets"]:
            committed_on_all(
                net,
                sender.submit(
                    v[0].client,
                    operator,
                    SetMarketMode,
                    market_id=int(m["id"]),
                    mode=MarketMode.CANCEL_ONLY,
                ),
            )
        collateral_before = int(account(net, 0, depositor)["collateral"])

    # Every validator stopped: each pins pre-maintenance at the lowest head of the set.
    heads = []
    for validator in v:
        with VersionedStore.open(validator.app_home / "data") as store:
            heads.append(store.height)
    pinned = min(heads)
    for validator in v:
        cli(
            "checkpoint",
            "create",
            "pre-maintenance",
            "--height",
            str(pinned),
            "--home",
            str(validator.app_home),
        )

    with started(net):
        net.wait_height(pinned + 2, timeout_s=90)
        pre_root = equal_roots(net, ALL, pinned)
        # The maintenance goes wrong: reopened with a 90% maintenance margin, the validators
        # liquidate both healthy 20 BTC accounts; a deposit lands meanwhile.
        for body, fields in (
            (SetMarketMode, {"mode": MarketMode.OPEN}),
            (
                SetMarketParams,
                {
                    "initial_margin_ppm": 950_000,
                    "maintenance_margin_ppm": 900_000,
                    "max_funding_rate_ppm": int(market["max_funding_rate_ppm"]),
                },
            ),
        ):
            committed_on_all(
                net, sender.submit(v[1].client, operator, body, market_id=market_id, **fields)
            )
        committed_on_all(net, oracle_update(2))
        deposit = sender.submit(
            v[3].client,
            bridge,
            Deposit,
            account=depositor.public_key,
            amount_quote=1_000 * USD,
            deposit_id=77_001,
        )
        committed_on_all(net, deposit)
        net.wait(
            "the liquidation of both accounts on every validator",
            lambda: all(
                not account(net, i, key)["positions"] for i in ALL for key in (maker, taker)
            ),
            timeout_s=60,
        )
        damaged_height = max(x.height() for x in v)

    # Recovery: every validator stopped, rolled back (store and CometBFT) to the checkpoint.
    outcomes = []
    for validator in v:
        outcomes.append(
            cli(
                "rollback",
                "--home",
                str(validator.app_home),
                "--cometbft-home",
                str(validator.cometbft_home),
                "--cometbft",
                str(net.binary),
                "--to-checkpoint",
                "pre-maintenance",
                "--reason",
                "maintenance liquidated healthy accounts",
                "--recovery-out",
                str(validator.home / "recovery.json"),
            )
        )
    assert {o["target"] for o in outcomes} == {pinned}, outcomes  # type: ignore[index]
    assert {o["app_hash"] for o in outcomes} == {pre_root}, outcomes  # type: ignore[index]
    assert all(o["app_from"] >= damaged_height - 1 for o in outcomes), outcomes  # type: ignore[index]
    recovery_files = {(x.home / "recovery.json").read_text() for x in v}
    assert len(recovery_files) == 1, "the validators disagree on the recovery txs"
    recovery = json.loads(recovery_files.pop())
    assert len(recovery["txs"]) == 2  # the Recovery tx, then the reverted deposit

    with started(net):
        # The restored chain goes on from the checkpoint: its roots are the pinned ones.
        net.wait_height(pinned + 1, timeout_s=90)
        assert equal_roots(net, ALL, pinned) == pre_root
        submitted = cli(
            "rollback",
            "--home",
            str(v[0].app_home),
            "--submit-recovery",
            str(v[0].home / "recovery.json"),
            "--rpc",
            v[0].rpc_url,
        )
        for tx_hex, status in zip(recovery["txs"], submitted, strict=True):
            committed_on_all(net, status["tx_hash"])  # type: ignore[index]
            assert tx_hex
        top = max(x.height() for x in v)
        net.wait_height(top + 2, timeout_s=60)
        equal_roots(net, ALL, top + 1)
        for i in ALL:
            # the liquidations are undone, the deposit re-applied, resting orders cancelled,
            # every market CANCEL_ONLY
            for key in (maker, taker):
                sizes = [abs(int(p["size"])) for p in account(net, i, key)["positions"]]
                assert sizes == [20 * UNIT], (i, sizes)
            assert account(net, i, rester)["open_orders"] == []
            collateral = int(account(net, i, depositor)["collateral"])
            assert collateral == collateral_before + 1_000 * USD
            modes = {m["mode"] for m in v[i].client.call("perp_getMarkets")}
            assert modes == {"CANCEL_ONLY"}, modes

    # The refund list, from any validator's home: the same report on all four.
    reports = [
        cli(
            "report",
            "compensation",
            "--home",
            str(x.app_home),
            "--fork",
            str(recovery["fork_id"]),
        )
        for x in v
    ]
    assert len({r["report_hash"] for r in reports}) == 1, [r["report_hash"] for r in reports]  # type: ignore[index]
    liquidated = {
        row["account"]
        for row in reports[0]["accounts"]  # type: ignore[index]
        if row["liquidations"]
    }
    assert {maker.public_key.hex(), taker.public_key.hex()} <= liquidated, reports[0]
    print(f"cometbft recovery scenario: {time.monotonic() - t0:.1f} s")
