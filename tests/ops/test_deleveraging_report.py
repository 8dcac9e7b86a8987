"""A deleveraging (ADL) in reverted blocks: the rollback's summary lists it and the
compensation report shows who received and who paid the bankrupt account's deficit, with each
row still reconciling (the ADL transfer is part of the fill's price: realized PnL)."""

from __future__ import annotations

import pathlib

from node.app import init_home
from node.chain.producer import commit_block
from node.core.blocks import BlockEnv, BlockReceipts
from node.core.records import EventKind, Side
from node.core.transition import apply_block
from node.core.txs import SignedTx
from node.ops.incident import compensation_report
from node.store import VersionedStore, blocks_db
from tests.core.harness import BTC, UNIT, USD, Chain, devnet_doc
from tests.ops.test_incident import reconciles


def test_the_report_of_a_rollback_over_a_deleveraging(tmp_path: pathlib.Path) -> None:
    doc = devnet_doc()
    doc["insurance_fund_quote"] = str(1_000 * USD)  # too small for the coming bankruptcy
    chain = Chain(doc)
    home = tmp_path / "home"
    init_home(home, doc)
    key = Chain.key("devnet/producer")
    with VersionedStore.open(home / "data") as store:
        genesis_block = blocks_db.get_block(store, 0)
        assert genesis_block is not None
        head = genesis_block.header

        def block(*txs: SignedTx, dt_ms: int = 1_000) -> BlockReceipts:
            nonlocal head
            env = BlockEnv(
                chain_id=head.chain_id, height=head.height + 1, time_ms=head.time_ms + dt_ms
            )
            result = apply_block(store, env, txs)
            receipts = BlockReceipts(receipts=result.receipts, block_events=result.events)
            head = commit_block(
                store, key, head, env, result.writes, [t.raw for t in txs], receipts
            )
            return receipts

        a, b = chain.trader(0), chain.trader(1)
        block(
            chain.order(b, Side.SELL, 320 * UNIT, 60_000 * USD),
            chain.order(a, Side.BUY, 320 * UNIT, 60_000 * USD),
        )
        block(chain.oracle({BTC: 59_000 * USD}, head.time_ms + 1))
        restore = head.height
        block(dt_ms=40_000)  # the oracle goes stale: no liquidation meanwhile
        crash = block(chain.oracle({BTC: 54_000 * USD}, head.time_ms + 1_000))
        adl = [e for e in crash.block_events if e.kind == EventKind.DELEVERAGED]
        assert [(e.account, e.counterparty) for e in adl] == [(a.public_key, b.public_key)]
        paid = adl[0].amount_quote
        assert paid > 1_000 * USD

        store.rollback_to(restore, reason="test")
        report = compensation_report(store, 1)
    [item] = report.summary.deleveragings
    assert (item.bankrupt, item.counterparty, item.paid_quote) == (a.public_key, b.public_key, paid)
    rows = {row.account: row for row in report.accounts}
    assert rows[a.public_key].deleveraged_quote == paid
    assert rows[b.public_key].deleveraged_quote == -paid
    assert rows[a.public_key].liquidated_size_atoms == f"{BTC}:{320 * UNIT}"
    assert report.totals["deleveraged_quote"] == 0
    assert reconciles(rows[a.public_key]) and reconciles(rows[b.public_key])
    assert report.to_json()["summary"]["deleveragings"][0]["paid_quote"] == str(paid)
