"""Orders, fills, fees, margin, triggers and liquidation in plain numbers, with exact balances."""

from __future__ import annotations

from node.core.errors import Reject
from node.core.records import EventKind, OrderKind
from node.core.txs import CancelOrder, Withdraw
from tests.core.harness import BTC, UNIT, USD, Chain, Side, TimeInForce

PRICE = 60_000 * USD
START = 1_000_000 * USD  # every devnet trader's collateral


def test_fill_at_maker_price_with_fees_and_price_time_priority() -> None:
    chain = Chain()
    m1, m2, taker = chain.trader(0), chain.trader(1), chain.trader(2)
    chain.block(
        chain.order(m1, Side.SELL, UNIT, 60_010 * USD),  # first at 60,010
        chain.order(m2, Side.SELL, UNIT, 60_010 * USD),  # second at the same price
        chain.order(m2, Side.SELL, UNIT, 60_005 * USD),  # better price, later
    )
    [receipt] = chain.block(chain.order(taker, Side.BUY, 3 * UNIT // 2, 60_020 * USD))
    fills = [e for e in receipt.events if e.kind == EventKind.FILL]
    assert [(f.counterparty, f.price_quote, f.size_atoms) for f in fills] == [
        (m2.public_key, 60_005 * USD, UNIT),
        (m1.public_key, 60_010 * USD, UNIT // 2),
    ]
    notional = 60_005 * USD + 30_005 * USD
    taker_fee = (60_005 * USD * 500 + 999_999) // 10**6 + (30_005 * USD * 500 + 999_999) // 10**6
    assert chain.account(taker).collateral_quote == START - notional - taker_fee
    assert chain.account(m1).collateral_quote == START + 30_005 * USD - 30_005 * USD * 200 // 10**6
    assert chain.position(taker) == 3 * UNIT // 2 and chain.position(m1) == -UNIT // 2
    assert chain.market().open_interest_atoms == 3 * UNIT // 2
    assert chain.totals().fee_pool_quote == taker_fee + 12_001_000 + 6_001_000


def test_self_trade_cancels_the_resting_order() -> None:
    chain = Chain()
    a, b = chain.trader(0), chain.trader(1)
    chain.block(
        chain.order(a, Side.SELL, UNIT, PRICE), chain.order(b, Side.SELL, UNIT, PRICE + USD)
    )
    [receipt] = chain.block(chain.order(a, Side.BUY, UNIT, PRICE + USD, tif=TimeInForce.IOC))
    kinds = [e.kind for e in receipt.events]
    assert kinds == [EventKind.ORDER_PLACED, EventKind.ORDER_CANCELLED, EventKind.FILL]
    assert chain.position(a) == UNIT and chain.position(b) == -UNIT
    assert chain.account(a).open_orders == 0


def test_post_only_that_would_cross_is_rejected_and_changes_nothing() -> None:
    chain = Chain()
    a, b = chain.trader(0), chain.trader(1)
    chain.block(chain.order(a, Side.SELL, UNIT, PRICE))
    before = _state_root_without_time(chain)
    [receipt] = chain.block(chain.order(b, Side.BUY, UNIT, PRICE, tif=TimeInForce.POST_ONLY))
    assert receipt.code == Reject.POST_ONLY_WOULD_CROSS
    assert _state_root_without_time(chain) == before


def _state_root_without_time(chain: Chain) -> bytes:
    """The root over everything but the per-block bookkeeping (totals' block time) and the
    signers' nonces (a rejected body still consumes its nonce)."""
    from node.core import keys, merkle

    return merkle.reference_root(
        (k, v) for k, v in chain.state.items() if k != keys.TOTALS and not k.startswith(keys.NONCES)
    )


def test_reduce_only_cannot_grow_and_is_capped() -> None:
    chain = Chain()
    a, b = chain.trader(0), chain.trader(1)
    chain.block(chain.order(b, Side.SELL, 2 * UNIT, PRICE), chain.order(a, Side.BUY, UNIT, PRICE))
    ioc = TimeInForce.IOC
    [grow] = chain.block(chain.order(a, Side.BUY, UNIT, PRICE, reduce_only=1, tif=ioc))
    assert grow.code == Reject.REDUCE_ONLY_WOULD_GROW
    [too_big] = chain.block(chain.order(a, Side.SELL, 2 * UNIT, PRICE, reduce_only=1, tif=ioc))
    assert too_big.code == Reject.REDUCE_ONLY_WOULD_GROW
    chain.block(chain.order(b, Side.BUY, UNIT, PRICE - USD))
    [ok] = chain.block(
        chain.order(
            a, Side.SELL, UNIT, 0, kind=OrderKind.MARKET, tif=TimeInForce.IOC, reduce_only=1
        )
    )
    assert ok.code == 0 and chain.position(a) == 0


def test_insufficient_margin_rejects_the_fill_and_changes_nothing() -> None:
    chain = Chain()
    a, b, c = chain.trader(0), chain.trader(1), chain.trader(2)
    # 1,000,000 USD at 5% IMF buys at most 20M USD of BTC: 333 BTC at 60,000. Ask for 400.
    chain.block(
        chain.order(b, Side.SELL, 200 * UNIT, PRICE), chain.order(c, Side.SELL, 200 * UNIT, PRICE)
    )
    [partial] = chain.block(chain.order(a, Side.BUY, 400 * UNIT, PRICE, tif=TimeInForce.IOC))
    # The first 200 BTC fill (IM 600k) passes; the next one would need 1.2M: matching stops.
    assert partial.code == 0 and chain.position(a) == 200 * UNIT
    before = _state_root_without_time(chain)
    [receipt] = chain.block(chain.order(a, Side.BUY, 200 * UNIT, PRICE, tif=TimeInForce.IOC))
    assert receipt.code == Reject.INSUFFICIENT_MARGIN
    assert _state_root_without_time(chain) == before
    [fits] = chain.block(chain.order(a, Side.BUY, 100 * UNIT, PRICE, tif=TimeInForce.IOC))
    assert fits.code == 0 and chain.position(a) == 300 * UNIT


def test_withdraw_is_margin_checked() -> None:
    chain = Chain()
    a, b = chain.trader(0), chain.trader(1)
    chain.block(
        chain.order(b, Side.SELL, 100 * UNIT, PRICE), chain.order(a, Side.BUY, 100 * UNIT, PRICE)
    )
    # equity ~1,000,000 - fees; IM = 6,000,000 x 5% = 300,000: at most ~700,000 free.
    [too_much] = chain.block(chain.sign(Withdraw, a, amount_quote=800_000 * USD))
    assert too_much.code == Reject.INSUFFICIENT_MARGIN
    [ok] = chain.block(chain.sign(Withdraw, a, amount_quote=600_000 * USD))
    assert ok.code == 0
    assert (
        chain.totals().net_deposits_quote
        == chain.genesis.insurance_fund_quote
        + sum(acc.collateral_quote for acc in chain.genesis.accounts)
        - 600_000 * USD
    )


def test_cancel_by_client_id_and_retry_is_idempotent() -> None:
    chain = Chain()
    a = chain.trader(0)
    [placed] = chain.block(chain.order(a, Side.BUY, UNIT, PRICE - 100 * USD, client_id=77))
    [retry] = chain.block(chain.order(a, Side.BUY, UNIT, PRICE - 100 * USD, client_id=77))
    assert placed.code == 0 and retry.code == Reject.DUPLICATE_CLIENT_ID
    [cancel] = chain.block(chain.sign(CancelOrder, a, order_id=0, client_id=77))
    assert cancel.code == 0 and chain.account(a).open_orders == 0
    [again] = chain.block(chain.sign(CancelOrder, a, order_id=0, client_id=77))
    assert again.code == Reject.UNKNOWN_ORDER


def test_stop_loss_triggers_on_the_oracle_and_closes_the_position() -> None:
    chain = Chain()
    a, b, mm = chain.trader(0), chain.trader(1), chain.trader(2)
    chain.block(chain.order(b, Side.SELL, UNIT, PRICE), chain.order(a, Side.BUY, UNIT, PRICE))
    chain.block(
        chain.order(
            a,
            Side.SELL,
            UNIT,
            0,
            kind=OrderKind.STOP_LOSS,
            tif=TimeInForce.IOC,
            reduce_only=1,
            trigger_price_quote=58_000 * USD,
        ),
        chain.order(mm, Side.BUY, 2 * UNIT, 57_500 * USD),
    )
    chain.block(chain.oracle({BTC: 59_000 * USD}))
    assert chain.position(a) == UNIT  # not yet
    chain.block(chain.oracle({BTC: 57_900 * USD}))
    assert chain.position(a) == 0 and chain.position(mm) == UNIT
    triggered = (
        [e for e in chain.last.events if e.kind == EventKind.TRIGGERED] if chain.last else []
    )
    assert len(triggered) == 1 and triggered[0].account == a.public_key


def test_liquidation_moves_positions_to_the_liquidator_with_penalty() -> None:
    chain = Chain()
    a, b = chain.trader(0), chain.trader(1)
    liquidator = chain.key("devnet/liquidator").public_key
    # a: 320 BTC long at 60,000 (19.2M notional, IM 960k of ~1M equity).
    chain.block(
        chain.order(b, Side.SELL, 320 * UNIT, PRICE), chain.order(a, Side.BUY, 320 * UNIT, PRICE)
    )
    insurance = chain.totals().insurance_fund_quote
    # a's balance: 1,000,000 - 19,200,000 - 9,600 taker fee. At 57,000 its equity is
    # 30,400 USD < maintenance 320 x 57,000 x 3% = 547,200: liquidated at the oracle price.
    chain.block(chain.oracle({BTC: 57_000 * USD}))
    assert chain.position(a) == 0
    assert chain.position(chain.key("devnet/liquidator")) == 320 * UNIT
    # Closing at 57,000 leaves 30,400 USD; the 1% penalty (182,400) is capped at it.
    assert chain.account(a).collateral_quote == 0
    assert chain.totals().insurance_fund_quote == insurance + 30_400 * USD
    events = [e for e in chain.last.events if e.kind == EventKind.LIQUIDATION] if chain.last else []
    assert [(e.account, e.size_atoms, e.price_quote) for e in events[:1]] == [
        (a.public_key, 320 * UNIT, 57_000 * USD)
    ]
    assert events[-1].amount_quote == 30_400 * USD and events[-1].extra == 0
    assert chain.market().open_interest_atoms == 320 * UNIT  # b short, liquidator long
    del liquidator


def test_insurance_covers_negative_equity() -> None:
    chain = Chain()
    a, b = chain.trader(0), chain.trader(1)
    chain.block(
        chain.order(b, Side.SELL, 320 * UNIT, PRICE), chain.order(a, Side.BUY, 320 * UNIT, PRICE)
    )
    chain.block(chain.oracle({BTC: 59_000 * USD}))  # equity 670k >= MM 566k: safe
    assert chain.position(a) == 320 * UNIT
    insurance = chain.totals().insurance_fund_quote
    # Stale oracle: no liquidation while the price is older than oracle_stale_ms.
    chain.block(dt_ms=40_000)
    # A 9% fall in one update: 320 x 5,400 = 1,728,000 loss > 990,400 balance.
    chain.block(chain.oracle({BTC: 54_000 * USD}))
    assert chain.position(a) == 0 and chain.account(a).collateral_quote == 0
    deficit = 1_000_000 - 9_600 - 320 * 6_000
    assert chain.totals().insurance_fund_quote == insurance + deficit * USD
