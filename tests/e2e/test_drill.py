"""The incident drill end to end through real processes and sockets (node/drill.py): the
maintenance that zeroed every funding index is refused, then forced, the follower stops at the
first invalid root, the operator rollback restores both nodes to one valid head, only TP/SL
orders survive, no deposit is lost, and the compensation report names exactly the accounts the
reverted blocks liquidated."""

from __future__ import annotations

import pathlib

import pytest

from node.drill import DEPOSIT_ID, USD, Drill, restart_sequencer, start_nodes, stop_nodes
from node.ops.incident import compensation_report
from node.store import VersionedStore


@pytest.mark.slow
def test_the_incident_drill(tmp_path: pathlib.Path) -> None:
    lines: list[str] = []
    nodes, urls = start_nodes(tmp_path)
    try:
        facts = Drill(
            urls["rpc"],
            urls["admin"],
            urls["token"],
            urls["follower"],
            lines.append,
            restart=lambda: restart_sequencer(nodes, urls),
        ).run()
    finally:
        codes = stop_nodes(nodes)
    narration = "\n".join(lines)
    assert codes == [0, 0], narration
    # maintenance: txs refused, the end refused with the decoded difference
    assert facts["submit_during_maintenance"] == 2002, narration
    # restarted inside the window, the sequencer came back in maintenance (issue 13)
    assert facts["restart_mode"] == "maintenance", narration
    assert facts["restart_checkpoint"] == facts["checkpoint"], narration
    assert facts["restart_height_held"] and facts["submit_after_restart"] == 2002, narration
    assert facts["end_refused"] and "maintenance end refused" in facts["end_refused"]
    assert any("funding_index_quote: stored 0, replayed" in d for d in facts["end_differences"])
    # the damaged chain liquidated the shorts; the follower refused it
    assert len(facts["liquidated"]) == 3
    assert facts["follower_halt"].startswith("invalid state root at height ")
    assert 1 <= facts["corruption_to_halt_blocks"] <= 3  # the first block that wrote a damaged key
    assert facts["dry_run_liquidations"] >= 3
    # restored: one valid head on both nodes, the funding index back, only TP/SL left
    rollback = facts["rollback"]
    assert rollback["fork_id"] == 1 and rollback["repaired_keys"] >= 1
    assert facts["agree"] and facts["follower_mode"] == "following"
    assert facts["follower_notices"] == ["1"]  # served on to the follower's own followers
    assert facts["post_index"] == facts["pre_index"] == facts["follower_index"] != 0
    assert facts["resting_orders"] == 0
    assert facts["surviving_orders"] == ["take_profit"]
    assert facts["modes"] == ["CANCEL_ONLY"]
    # the deposit made on the damaged chain was re-applied, once
    assert rollback["deposits_reapplied"] == 1
    assert facts["depositor_after"] == facts["depositor_before"] + 1_000 * USD
    # the refund list names exactly the accounts the reverted blocks liquidated
    with VersionedStore.open(pathlib.Path(urls["sequencer_home"]) / "data") as store:
        report = compensation_report(store, 1)
        store.verify()
    liquidated = sorted(row.account.hex() for row in report.accounts if row.liquidations)
    assert liquidated == facts["liquidated"]
    from node.core import keys

    with VersionedStore.open(pathlib.Path(urls["sequencer_home"]) / "data") as store:
        assert store.get(keys.deposit(DEPOSIT_ID)) is not None
