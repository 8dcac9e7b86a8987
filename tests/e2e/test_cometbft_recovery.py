"""Operator recovery under consensus (issue 21; docs/ABCI.md, "Operator recovery"): the incident
drill on 4 real CometBFT validators (node/drill_testnet.py, `scripts/drill --testnet`), every
fact it reports checked.

A maintenance under consensus (markets closed by operator txs, `pre-maintenance` pinned at the
same height on every validator) goes wrong: the set liquidates two healthy accounts and a
deposit lands. Every validator is rolled back, store and CometBFT, with `perpchain rollback
--cometbft-home`; the recovery txs go through consensus; the compensation report is the same
on every validator.
"""

from __future__ import annotations

import pathlib
import time

from node.core.crypto import SigningKey
from node.drill_testnet import UNIT, USD, TestnetDrill
from tests.e2e.cometbft import make_testnet


def test_rollback_to_a_pre_maintenance_checkpoint_on_the_validator_set(
    tmp_path: pathlib.Path,
) -> None:
    net = make_testnet(tmp_path / "net", slot=1)
    t0 = time.monotonic()
    lines: list[str] = []
    facts = TestnetDrill(net, lines.append).run()
    pinned = facts["pinned"]
    # every validator went back to the pinned height, on the app hash the set agreed there
    outcomes = facts["outcomes"]
    assert {o["target"] for o in outcomes} == {pinned}, outcomes
    assert {o["app_hash"] for o in outcomes} == {facts["pre_root"]}, outcomes
    assert all(o["app_from"] >= facts["damaged_height"] - 1 for o in outcomes), outcomes
    assert all(o["fork_id"] is not None and not o["behind"] for o in outcomes), outcomes
    repeat = facts["repeat"]  # the same rollback again finds both at the target
    assert (repeat["fork_id"], repeat["cometbft_steps"]) == (None, 0), repeat
    assert repeat["app_hash"] == facts["pre_root"], repeat
    assert facts["restored_root"] == facts["pre_root"]
    # one recovery file: the Recovery tx, then the reverted deposit; committed on all
    assert facts["recovery_files_equal"], "the validators disagree on the recovery txs"
    assert len(facts["recovery"]["txs"]) == 2
    assert [s["status"] for s in facts["submitted"]] == ["committed", "committed"]
    assert facts["agreed_after"]
    for i in range(4):
        assert facts["positions"][i] == [20 * UNIT, 20 * UNIT], facts["positions"]
        assert facts["resting_orders"][i] == 0, facts["resting_orders"]
        assert facts["depositor_collateral"][i] == facts["collateral_before"] + 1_000 * USD
        assert facts["modes"][i] == ["CANCEL_ONLY"], facts["modes"]
    # the refund list is the same document on every validator and names both accounts
    assert len(set(facts["report_hashes"])) == 1, facts["report_hashes"]
    liquidated = {SigningKey.from_label(f"devnet/trader/{i}").public_key.hex() for i in (12, 13)}
    assert liquidated <= set(facts["liquidated"]), facts["liquidated"]
    assert any("compensation report" in line for line in lines), lines
    print(f"cometbft recovery drill: {time.monotonic() - t0:.1f} s")
