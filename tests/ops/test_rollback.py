"""Operator rollback on a real store and the real state machine: dry run, apply, the recovery
block (only TP/SL orders survive, markets CANCEL_ONLY, deposits re-applied), the signed notice,
completion after a crash between the rollback and the recovery block, and the restore of a
chain built on rows written around the writer."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from node.app import PRODUCER_KEY_FILE, load_key
from node.core import keys, queries
from node.core.blocks import verify_notice
from node.core.crypto import SigningKey
from node.core.genesis import parse_genesis
from node.core.records import MarketMode, OrderKind, Side, TimeInForce
from node.core.txs import Deposit, PlaceOrder, SignedTx, sign_tx
from node.core.view import Overlay, get_nonces
from node.ops import faults
from node.ops.incident import compensation_report
from node.ops.rollback import (
    RollbackError,
    apply_rollback,
    complete_recovery,
    pending_recovery,
    plan_rollback,
    rollbacks,
)
from node.ops.verify import verify_chain
from node.store import VersionedStore, blocks_db
from tests.e2e.chain import CHAIN_ID, UNIT, USD, commit_txs, damaged_chain, genesis_doc, make_chain

GENESIS = parse_genesis(genesis_doc())
OPERATOR = SigningKey.from_label("devnet/operator")
BRIDGE = SigningKey.from_label("devnet/bridge")
A, B, C = (SigningKey.from_label(f"devnet/trader/{i}") for i in (10, 11, 12))


def _sign(store: VersionedStore, key: SigningKey, body_cls: type, **fields: Any) -> SignedTx:
    nonce = get_nonces(Overlay(store), key.public_key).base_nonce + fields.pop("offset", 0)
    return sign_tx(body_cls(nonce=nonce, **fields), key, CHAIN_ID)


def _order(
    store: VersionedStore, key: SigningKey, side: Side, size: int, price: int, **kw: Any
) -> SignedTx:
    fields: dict[str, Any] = {
        "market_id": 1,
        "side": side,
        "kind": OrderKind.LIMIT,
        "tif": TimeInForce.GTC,
        "price_quote": price,
        "size_atoms": size,
        "reduce_only": 0,
        "trigger_price_quote": 0,
        "client_id": 1,
    }
    fields.update(kw)
    return _sign(store, key, PlaceOrder, **fields)


class Run:
    def __init__(self, home: pathlib.Path) -> None:
        self.home = home
        key = load_key(home, PRODUCER_KEY_FILE, "PERPCHAIN_PRODUCER_KEY")
        assert key is not None
        self.producer = key
        self.store = VersionedStore.open(home / "data", verify_on_open=False)

    @property
    def head(self) -> Any:
        block = blocks_db.get_block(self.store, self.store.height)
        assert block is not None
        return block.header

    def block(self, *txs: SignedTx, invariants: bool = True) -> Any:
        head = self.head
        return commit_txs(
            self.store, self.producer, head, list(txs), head.time_ms + 250, invariants=invariants
        )


@pytest.fixture
def run(tmp_path: pathlib.Path) -> Any:
    home = tmp_path / "home"
    make_chain(home, 3)
    r = Run(home)
    # B goes long 1 BTC and protects it with a stop-loss; A rests a bid (to be cancelled)
    r.block(_order(r.store, A, Side.SELL, UNIT, 60_000 * USD, client_id=1))
    r.block(_order(r.store, B, Side.BUY, UNIT, 60_000 * USD, client_id=1))
    r.block(
        _order(
            r.store,
            B,
            Side.SELL,
            UNIT // 2,
            0,
            kind=OrderKind.STOP_LOSS,
            tif=TimeInForce.IOC,
            trigger_price_quote=50_000 * USD,
            reduce_only=1,
            client_id=2,
        ),
        _order(r.store, A, Side.BUY, UNIT, 55_000 * USD, client_id=3),
    )
    r.store.checkpoint("pre-maintenance-6")
    # reverted later: a deposit to C, C trades
    r.block(
        _sign(
            r.store, BRIDGE, Deposit, account=C.public_key, amount_quote=5_000 * USD, deposit_id=77
        )
    )
    r.block(_order(r.store, C, Side.BUY, UNIT // 10, 55_000 * USD, client_id=9))
    r.block()
    yield r
    r.store.close()


def test_dry_run_lists_what_would_be_undone_and_changes_nothing(run: Run) -> None:
    root, height = run.store.root(), run.store.height
    plan = plan_rollback(run.store, to_checkpoint="pre-maintenance-6")
    assert (plan.target, plan.head) == (6, 9)
    undone = plan.to_json()["undone"]
    assert [d["deposit_id"] for d in undone["deposits"]] == ["77"]
    assert C.public_key.hex() in undone["accounts_touched"]
    assert "would undo" in plan.text()
    assert (run.store.root(), run.store.height) == (root, height)
    with pytest.raises(RollbackError, match="no checkpoint 'nope'"):
        plan_rollback(run.store, to_checkpoint="nope")
    with pytest.raises(RollbackError, match="not below the head"):
        plan_rollback(run.store, to_height=9)


def test_rollback_restores_cancels_all_but_tp_sl_and_reapplies_deposits(run: Run) -> None:
    target_root = run.store.root(6)
    plan = plan_rollback(run.store, to_checkpoint="pre-maintenance-6")
    outcome = apply_rollback(
        run.store,
        GENESIS,
        plan,
        producer=run.producer,
        operator=OPERATOR,
        time_ms=run.head.time_ms + 1_000,
        reason="pre-maintenance restore",
    )
    assert (outcome.fork_id, outcome.from_height, outcome.to_height) == (1, 9, 6)
    assert run.store.height == 7 and outcome.recovery.height == 7
    assert run.store.root(6) == target_root
    # only the stop-loss order survives; every market is CANCEL_ONLY
    orders = queries.account_summary(run.store, A.public_key)["orders"]
    assert orders == []
    b_orders = queries.account_summary(run.store, B.public_key)["orders"]
    assert [o.kind for o in b_orders] == [OrderKind.STOP_LOSS]
    assert all(m.mode == MarketMode.CANCEL_ONLY for m in queries.markets(run.store))
    # C's deposit of a reverted block is credited again, exactly once
    c = queries.account_summary(run.store, C.public_key)
    assert c is not None and c["account"].collateral_quote == 1_005_000 * USD  # genesis 1M + 5k
    assert run.store.get(keys.deposit(77)) is not None
    # the notice is signed by the genesis operator and names the blocks
    ((fork, notice),) = rollbacks(run.store)
    assert notice is not None and verify_notice(notice, GENESIS.operator_key)
    assert (notice.fork_id, notice.to_height, notice.from_height) == (1, 6, 9)
    assert not verify_notice(notice, GENESIS.producer_key)
    assert pending_recovery(run.store) is None
    assert verify_chain(run.store, GENESIS, from_height=0).ok
    report = compensation_report(run.store, 1)
    assert C.public_key in {row.account for row in report.accounts}


def test_a_crash_between_the_rollback_and_the_recovery_block_is_completed(run: Run) -> None:
    run.store.rollback_to(6, reason="crashed before the recovery block")
    assert pending_recovery(run.store) is not None
    outcome = complete_recovery(
        run.store, GENESIS, producer=run.producer, operator=OPERATOR, time_ms=0
    )
    assert outcome is not None and outcome.deposits_reapplied == 1
    assert run.store.height == 7 and pending_recovery(run.store) is None
    assert (
        complete_recovery(run.store, GENESIS, producer=run.producer, operator=OPERATOR, time_ms=0)
        is None
    )


def test_wrong_keys_are_refused(run: Run) -> None:
    plan = plan_rollback(run.store, to_height=6)
    with pytest.raises(RollbackError, match="operator"):
        apply_rollback(
            run.store, GENESIS, plan, producer=run.producer, operator=A, time_ms=0, reason=""
        )
    assert run.store.height == 9


def test_restore_of_a_chain_built_on_rows_written_around_the_writer(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(faults.ENV, "1")
    home = damaged_chain(tmp_path / "home", after_blocks=4)
    r = Run(home)
    try:
        assert (
            verify_chain(r.store, GENESIS, from_checkpoint="pre-maintenance-12").first_invalid == 13
        )
        good = r.store.root(12)
        plan = plan_rollback(r.store, to_checkpoint="pre-maintenance-12")
        outcome = apply_rollback(
            r.store,
            GENESIS,
            plan,
            producer=r.producer,
            operator=OPERATOR,
            time_ms=r.head.time_ms + 1,
            reason="funding indices zeroed by a migration",
        )
        assert outcome.repaired_keys >= 1
        assert r.store.root(12) == good
        market = queries.market(r.store, 1)
        assert market is not None and market.funding_index_quote != 0
        report = verify_chain(r.store, GENESIS, from_height=0)
        assert report.ok, report.text()
    finally:
        r.store.close()
    with VersionedStore.open(home / "data") as store:  # opens with its root check
        assert store.height == 13
