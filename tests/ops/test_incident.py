"""The compensation report on a real store and the real state machine: a node home, blocks with
fills, a funding tick, a deposit, a leveraged account liquidated by an oracle move, a
withdrawal and a rejected tx; then `rollback_to` and the report of that fork, checked against
the archived receipts and the states read from the store before and after the rollback."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import pathlib
from typing import Any

import pytest

from node.app import init_home
from node.chain.producer import commit_block
from node.cli.main import main
from node.core import codec, keys, queries
from node.core.blocks import BlockEnv, BlockHeader, BlockReceipts, decode_receipts
from node.core.records import EventKind, OrderKind, Side, TimeInForce, evolve
from node.core.transition import apply_block
from node.core.txs import CancelOrder, SignedTx, Withdraw
from node.core.view import Overlay, get_market
from node.ops.incident import (
    CSV_COLUMNS,
    IncidentError,
    canonical_json,
    compensation_report,
    state_at,
    store_blocks,
    summarize_blocks,
)
from node.store import VersionedStore, blocks_db
from tests.core.harness import BTC, UNIT, USD, Chain

RESTORE = 2  # the height the test rolls back to


class Scenario:
    """Blocks produced in-process on a real home: apply_block + commit_block, no server."""

    def __init__(self, home: pathlib.Path) -> None:
        self.chain = Chain()  # signing and nonces only; the state lives in the store
        init_home(home, self.chain.doc)
        self.store = VersionedStore.open(home / "data")
        block = blocks_db.get_block(self.store, 0)
        assert block is not None
        self.head: BlockHeader = block.header
        self.key = Chain.key("devnet/producer")

    @property
    def time_ms(self) -> int:
        return self.head.time_ms

    def block(self, *txs: SignedTx, at_ms: int) -> BlockReceipts:
        env = BlockEnv(chain_id=self.head.chain_id, height=self.head.height + 1, time_ms=at_ms)
        result = apply_block(self.store, env, txs)
        receipts = BlockReceipts(receipts=result.receipts, block_events=result.events)
        self.head = commit_block(
            self.store, self.key, self.head, env, result.writes, [tx.raw for tx in txs], receipts
        )
        return receipts


def _equity(reader: Any, account: bytes) -> int:
    summary = queries.account_summary(reader, account)
    return 0 if summary is None else int(summary["equity_quote"])


IMPACT_BID = 9_001  # trader 6's client id for the bid that makes the premium positive


def _produce(home: pathlib.Path) -> tuple[Scenario, SignedTx, bytes]:
    """Heights 1..6 on a new home: (the run, the deposit tx, the leveraged account)."""
    run = Scenario(home)
    c = run.chain
    t0 = run.time_ms
    trader = c.trader
    leveraged = Chain.key("test/leveraged")
    ioc: dict[str, Any] = {"kind": OrderKind.LIMIT, "tif": TimeInForce.IOC}
    # 1: a fill (trader 3 buys 2 BTC from trader 2), then a book whose impact bid (for the
    # market's 10,000 USD impact notional) is above the oracle.
    run.block(
        c.order(trader(2), Side.SELL, 2 * UNIT, 60_000 * USD),
        c.order(trader(3), Side.BUY, 2 * UNIT, 60_000 * USD),
        c.order(trader(4), Side.BUY, 2 * UNIT, 59_900 * USD),
        c.order(trader(5), Side.SELL, UNIT // 5, 60_800 * USD),
        c.order(trader(6), Side.BUY, UNIT // 5, 60_100 * USD, client_id=IMPACT_BID),
        at_ms=t0 + 1_000,
    )
    run.block(c.oracle({BTC: 60_000 * USD}, t0 + 2_000), at_ms=t0 + 2_000)
    assert run.head.height == RESTORE
    # 3: a funding tick (the impact bid, trader 6's 0.2 BTC at 60,100, is above the oracle:
    # longs pay), then trader 6 cancels that bid; a deposit.
    deposit = c.deposit(leveraged.public_key, 10_000 * USD, 77)
    run.block(
        c.oracle({BTC: 60_000 * USD}, t0 + 60_500),
        deposit,
        c.sign(CancelOrder, trader(6), order_id=0, client_id=IMPACT_BID),
        at_ms=t0 + 60_500,
    )
    # 4: the new account buys 3 BTC at 18x; trader 3 sells 1 BTC into trader 4's bid (funding
    # settles on that touch).
    fill4 = run.block(
        c.order(trader(1), Side.SELL, 3 * UNIT, 60_000 * USD),
        c.order(leveraged, Side.BUY, 3 * UNIT, 60_000 * USD, **ioc),
        c.order(trader(3), Side.SELL, UNIT, 59_900 * USD, **ioc),
        at_ms=t0 + 61_500,
    )
    assert [r.code for r in fill4.receipts] == [0, 0, 0]
    # 5: the oracle falls 4%: the leveraged account is under maintenance margin.
    liq = run.block(c.oracle({BTC: 57_600 * USD}, t0 + 62_500), at_ms=t0 + 62_500)
    assert any(e.kind == EventKind.LIQUIDATION for e in liq.block_events)
    # 6: a withdrawal, and a rejected one (more than the account's equity).
    run.block(
        c.sign(Withdraw, trader(6), amount_quote=1_000 * USD),
        c.sign(Withdraw, trader(7), amount_quote=10**9 * USD),
        at_ms=t0 + 63_500,
    )
    return run, deposit, leveraged.public_key


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("incident") / "home"
    run, deposit, leveraged = _produce(home)
    c = run.chain
    head = run.head.height
    pre_summary = summarize_blocks(store_blocks(run.store, RESTORE + 1, head))
    reverted_equity = {
        bytes.fromhex(a["address"]): _equity(run.store, bytes.fromhex(a["address"]))
        for a in c.doc["accounts"]
    }
    reverted_equity[leveraged] = _equity(run.store, leveraged)
    liquidator = bytes.fromhex(c.doc["liquidator"]["address"])
    reverted_equity[liquidator] = _equity(run.store, liquidator)
    result = run.store.rollback_to(RESTORE, reason="funding index corrupted")
    assert (result.fork_id, result.from_height, result.to_height) == (1, head, RESTORE)
    restored_block = blocks_db.get_block(run.store, RESTORE)
    assert restored_block is not None
    run.head = restored_block.header
    report = compensation_report(run.store, 1)
    restored_equity = {a: _equity(run.store, a) for a in reverted_equity}
    yield {
        "home": home,
        "run": run,
        "report": report,
        "pre_summary": pre_summary,
        "deposit": deposit,
        "leveraged": leveraged,
        "liquidator": liquidator,
        "reverted_equity": reverted_equity,
        "restored_equity": restored_equity,
        "head": head,
    }
    run.store.close()


def _archived_events(store: VersionedStore, fork_id: int, first: int, last: int) -> list[Any]:
    events = []
    for height in range(first, last + 1):
        raw = store.archived_record(fork_id, height, "receipts")
        assert raw is not None
        receipts = decode_receipts(raw)
        for receipt in receipts.receipts:
            events.extend(receipt.events)
        events.extend(receipts.block_events)
    return events


def _row(report: Any, account: bytes) -> Any:
    return next(item for item in report.accounts if item.account == account)


def test_liquidation_is_listed_for_the_leveraged_account_exactly(incident: Any) -> None:
    report, leveraged = incident["report"], incident["leveraged"]
    row = _row(report, leveraged)
    (liquidation,) = row.liquidations
    assert liquidation.height == RESTORE + 3
    assert liquidation.liquidator == incident["liquidator"]
    assert [(p.market_id, p.size_atoms, p.price_quote) for p in liquidation.positions] == [
        (BTC, 3 * UNIT, 57_600 * USD)
    ]
    # 1% of the closed notional (172,800 USD), below what equity was left (2,710 USD).
    assert liquidation.penalty_quote == 1_728 * USD
    assert liquidation.insurance_cover_quote == 0
    assert row.liquidated_size_atoms == f"{BTC}:{3 * UNIT}"  # per market, never summed
    assert row.fees_quote == 90 * USD  # taker fee: 500 ppm of 180,000 USD
    assert row.deposits_quote == 10_000 * USD
    # bought 3 @ 60,000, taken over 3 @ 57,600
    assert row.realized_pnl_quote == -7_200 * USD
    assert row.equity_restored_quote == 0  # the account did not exist at the restored height
    assert row.equity_reverted_quote == (10_000 - 180_000 - 90 + 172_800 - 1_728) * USD
    others = [item for item in report.accounts if item.account != leveraged]
    assert all(not item.liquidations for item in others)


def test_realized_pnl_of_a_partial_close(incident: Any) -> None:
    row = _row(incident["report"], Chain.key("devnet/trader/3").public_key)
    assert row.realized_pnl_quote == -100 * USD  # 1 of 2 BTC bought @ 60,000 sold @ 59,900
    assert row.funding_quote < 0  # longs paid at the tick; settled when the position moved


def test_funding_sums_match_the_archived_funding_events(incident: Any) -> None:
    report, run = incident["report"], incident["run"]
    events = _archived_events(run.store, 1, RESTORE + 1, incident["head"])
    settled = [e for e in events if e.kind == EventKind.FUNDING_SETTLED]
    assert settled, "the scenario settles funding"
    for row in report.accounts:
        expected = sum(e.amount_quote for e in settled if e.account == row.account)
        assert row.funding_quote == expected
    assert report.totals["funding_quote"] == sum(e.amount_quote for e in settled)
    ticks = [e for e in events if e.kind == EventKind.FUNDING_TICK]
    assert len(report.summary.funding_ticks) == len(ticks) == 3  # one per market at the minute


def test_equity_columns_are_the_states_read_from_the_store(incident: Any) -> None:
    report = incident["report"]
    reverted, restored = incident["reverted_equity"], incident["restored_equity"]
    listed = {row.account for row in report.accounts}
    assert set(report.summary.accounts_touched) <= listed
    for row in report.accounts:
        assert row.equity_reverted_quote == reverted[row.account]
        assert row.equity_restored_quote == restored[row.account]
        assert row.difference_quote == reverted[row.account] - restored[row.account]
    untouched = Chain.key("devnet/trader/9").public_key
    assert untouched not in listed


def reconciles(row: Any) -> bool:
    """The identity every row of the report satisfies (docs/OPERATIONS.md)."""
    return bool(
        row.difference_quote
        == row.realized_pnl_quote
        + row.funding_quote
        - row.fees_quote
        - row.penalty_quote
        + row.insurance_cover_quote
        + row.deposits_quote
        - row.withdrawals_quote
        + row.unrealized_reverted_quote
        - row.unrealized_restored_quote
    )


def test_every_row_reconciles(incident: Any) -> None:
    for row in incident["report"].accounts:
        assert reconciles(row), row.account.hex()


def test_totals_sum_the_rows(incident: Any) -> None:
    report = incident["report"]
    for name, total in report.totals.items():
        if name == "liquidations":
            assert total == sum(len(row.liquidations) for row in report.accounts) == 1
        else:
            assert total == sum(getattr(row, name) for row in report.accounts), name
    # fees paid by accounts went to the fee pool; funding came from the insurance fund
    assert report.totals["fees_quote"] > 0


def test_summary_lists_the_deposit_with_its_raw_tx(incident: Any) -> None:
    summary, deposit = incident["report"].summary, incident["deposit"]
    (item,) = summary.deposits
    assert item.raw_tx == deposit.raw
    assert item.tx_hash == deposit.tx_hash
    assert (item.height, item.tx_index) == (RESTORE + 1, 1)
    assert (item.account, item.amount_quote, item.deposit_id) == (
        incident["leveraged"],
        10_000 * USD,
        77,
    )
    assert summary.blocks == incident["head"] - RESTORE
    assert (summary.txs, summary.txs_applied, summary.txs_rejected) == (
        9,
        8,
        1,
    )  # the cancel of the impact bid too
    assert len(summary.fills) == 2
    assert [(w.account, w.amount_quote) for w in summary.withdrawals] == [
        (Chain.key("devnet/trader/6").public_key, 1_000 * USD)
    ]
    assert list(summary.accounts_touched) == sorted(summary.accounts_touched)
    # what `rollback --dry-run` sees on the store's own blocks is what the archive holds
    assert incident["pre_summary"] == summary
    assert "deposit height=3" in summary.text()


def test_json_and_csv_are_deterministic(incident: Any) -> None:
    report, run = incident["report"], incident["run"]
    again = compensation_report(run.store, 1)
    assert again.to_json() == report.to_json()
    assert again.to_csv() == report.to_csv()
    body = report.to_json()
    claimed = body.pop("report_hash")
    assert claimed == hashlib.sha256(canonical_json(body)).hexdigest() == again.report_hash
    text = json.dumps(body)
    assert "." not in "".join(
        v for row in body["accounts"] for k, v in row.items() if k.endswith("_quote")
    ), "money is integer decimal strings"
    assert "true" not in text and "false" not in text
    rows = list(csv.reader(io.StringIO(report.to_csv())))
    assert rows[0] == list(CSV_COLUMNS)
    assert [r[0] for r in rows[1:]] == sorted(r[0] for r in rows[1:])
    assert len(rows) == 1 + len(report.accounts)
    leveraged = next(r for r in rows if r[0] == incident["leveraged"].hex())
    assert leveraged[1:4] == ["1", f"{BTC}:{3 * UNIT}", "0"]
    assert "report hash " + report.report_hash in report.text()


def test_restored_state_after_the_rollback_is_the_pre_incident_market(incident: Any) -> None:
    market = get_market(Overlay(incident["run"].store), BTC)
    assert market is not None and market.oracle_price_quote == 60_000 * USD


def test_pruned_heights_inside_the_fork_give_the_same_report(
    tmp_path: pathlib.Path, incident: Any
) -> None:
    """Heights 3 and 4 pruned before the rollback: their diffs are merged into height 5's, so
    the replay is checked against one merged diff for 3..5."""
    run, _, _ = _produce(tmp_path / "home")
    try:
        run.store.checkpoint("pre-maintenance", height=RESTORE)
        assert run.store.prune(5) > 0
        assert RESTORE + 1 not in run.store.retained_heights()
        run.store.rollback_to(RESTORE, reason="funding index corrupted")
        assert run.store.archived_record(1, RESTORE + 1, "\x00diff") is None
        report = compensation_report(run.store, 1)
        assert report.to_json() == incident["report"].to_json()
    finally:
        run.store.close()


def test_a_block_committed_after_the_rollback_changes_nothing(incident: Any) -> None:
    run = incident["run"]
    run.block(at_ms=run.time_ms + 1_000)  # e.g. the operator's recovery block
    assert run.store.height > RESTORE
    assert compensation_report(run.store, 1).to_json() == incident["report"].to_json()


def test_a_restored_state_the_fork_was_not_built_on_is_refused(incident: Any) -> None:
    store = incident["run"].store
    state = state_at(store, RESTORE)
    market = get_market(Overlay(state), BTC)
    assert market is not None
    state.apply([(keys.market(BTC), codec.encode(evolve(market, oracle_price_quote=61_000 * USD)))])
    with pytest.raises(IncidentError, match="not the state root .* the fork was built on"):
        compensation_report(store, 1, restored=state)


def test_revalued_adds_the_untouched_accounts_whose_equity_moved(incident: Any) -> None:
    report = compensation_report(incident["run"].store, 1, revalued=True)
    short = Chain.key("devnet/trader/2").public_key  # short 2 BTC since height 1, untouched
    assert short not in {row.account for row in incident["report"].accounts}
    row = _row(report, short)
    assert not row.liquidations and row.fees_quote == row.funding_quote == 0
    assert row.realized_pnl_quote == 0
    # the oracle fell 2,400 USD; the short also has the tick's funding unsettled (+)
    assert row.unrealized_reverted_quote - row.unrealized_restored_quote > 2 * 2_400 * USD
    assert row.difference_quote == row.unrealized_reverted_quote - row.unrealized_restored_quote
    assert {r.account for r in incident["report"].accounts} < {r.account for r in report.accounts}
    untouched = Chain.key("devnet/trader/9").public_key  # no position: nothing moved
    assert untouched not in {r.account for r in report.accounts}


def test_unknown_fork_is_refused(incident: Any) -> None:
    with pytest.raises(IncidentError, match="no fork 9"):
        compensation_report(incident["run"].store, 9)


def test_cli_refuses_while_the_store_is_open(
    incident: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["forks", "--home", str(incident["home"])]) == 1
    err = capsys.readouterr().err
    assert "stop the node" in err and "Traceback" not in err


def test_cli_forks_and_report(
    tmp_path: pathlib.Path, incident: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    report = incident["report"]
    home = str(incident["home"])
    incident["run"].store.close()
    try:
        assert main(["forks", "--home", home]) == 0
        out = capsys.readouterr().out
        assert "fork 1" in out and "funding index corrupted" in out
        json_path, csv_path = tmp_path / "r.json", tmp_path / "r.csv"
        argv = ["report", "compensation", "--home", home, "--fork", "1"]
        assert main([*argv, "--json-out", str(json_path), "--csv", str(csv_path)]) == 0
        out = capsys.readouterr().out
        assert report.report_hash in out
        assert json.loads(json_path.read_text()) == report.to_json()
        assert csv_path.read_text() == report.to_csv()
        assert main([*argv, "--json"]) == 0  # --json: the document on stdout, as everywhere
        assert json.loads(capsys.readouterr().out) == report.to_json()
        assert main([*argv, "--revalued"]) == 0
        assert Chain.key("devnet/trader/2").public_key.hex() in capsys.readouterr().out
        assert main([*argv[:-1], "5"]) == 1
        assert "no fork 5" in capsys.readouterr().err
        assert main(["forks", "--home", str(tmp_path / "nowhere")]) == 1
        assert "no store" in capsys.readouterr().err
    finally:
        incident["run"].store = VersionedStore.open(incident["home"] / "data")


def test_the_archived_head_equals_re_executing_the_fork(incident: Any) -> None:
    """Two independent ways to the reverted head's state agree (re-execution is the fallback
    for forks archived without head values)."""
    from node.ops.incident import archived_fork_head, fork_blocks, get_fork, replay_fork

    store = incident["run"].store
    fork = get_fork(store, 1)
    restored = state_at(store, RESTORE)
    head = store.archived_head(1)
    assert head is not None
    archived, changed_a, root_a = archived_fork_head(store, fork, restored, head)
    replayed, changed_b, root_b = replay_fork(store, fork, restored, list(fork_blocks(store, fork)))
    assert root_a == root_b and dict(archived.items()) == dict(replayed.items())
    assert changed_a == changed_b
