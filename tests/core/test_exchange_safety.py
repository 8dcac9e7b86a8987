"""Exchange safety, tried as an attacker with funded accounts would (issue: exchange safety).
Each test is an observation of the adversarial review: it failed on the old state machine and
states the rule that now holds. Every block here runs the full invariant scan (conservation,
no debt without a position), so "nothing raised" is itself part of each assertion."""

from __future__ import annotations

from typing import Any

import pytest

from node.core import codec
from node.core.blocks import BlockEnv
from node.core.errors import Reject
from node.core.genesis import GenesisError, parse_genesis
from node.core.records import (
    CancelReason,
    EventKind,
    MarketMode,
    Nonces,
    OrderKind,
)
from node.core.transition import HANDLERS, apply_block_bytes
from node.core.txs import (
    SetMarketMode,
    SetMarketParams,
    Withdraw,
    sign_tx,
)
from node.core.view import Overlay, get_nonces, iter_accounts
from tests.core.harness import BTC, SOL, UNIT, USD, Chain, Side, TimeInForce, devnet_doc

PRICE = 60_000 * USD
IOC = TimeInForce.IOC


def _funded(chain: Chain, *amounts_usd: int) -> list[Any]:
    """Fresh accounts with the given collateral (bridge deposits), as an attacker opens them."""
    out = []
    deposits = []
    for i, amount in enumerate(amounts_usd):
        key = chain.key(f"attacker/{i}")
        out.append(key)
        deposits.append(chain.deposit(key.public_key, amount * USD, 9_000 + i))
    receipts = chain.block(*deposits)
    assert [r.code for r in receipts] == [0] * len(amounts_usd)
    return out


def _quote_conserved(chain: Chain) -> None:
    """Collateral + fee pool + insurance == net deposits, and no debt without a position."""
    view = Overlay(chain.state)
    totals = chain.totals()
    accounts = list(iter_accounts(view))
    held = sum(a.collateral_quote for a in accounts)
    assert held + totals.fee_pool_quote + totals.insurance_fund_quote == totals.net_deposits_quote
    assert all(a.collateral_quote >= 0 or a.markets for a in accounts)


def _events(receipts: list[Any], kind: EventKind) -> list[Any]:
    return [e for r in receipts for e in r.events if e.kind == kind]


# ---------------------------------------------------------------- 1. fills, margin, band


def test_an_absurd_price_is_refused_outside_the_band() -> None:
    """Observed: a reducing fill at any price skipped every margin check; two accounts with
    1,000 USD made one rich and the other deeply negative. Now prices lie in the band."""
    chain = Chain()
    a, b = _funded(chain, 1_000, 1_000)
    chain.block(
        chain.order(b, Side.SELL, UNIT // 10, PRICE),
        chain.order(a, Side.BUY, UNIT // 10, PRICE, tif=IOC),
    )
    assert chain.position(a) == UNIT // 10
    [high] = chain.block(chain.order(b, Side.BUY, UNIT // 10, 6_000_000 * USD))
    [low] = chain.block(chain.order(a, Side.SELL, UNIT // 10, USD, tif=IOC))
    assert (high.code, low.code) == (Reject.PRICE_OUT_OF_BAND, Reject.PRICE_OUT_OF_BAND)
    # The band's edges themselves are accepted: oracle x (1 +- 10%).
    [edge] = chain.block(chain.order(b, Side.BUY, UNIT // 10, 66_000 * USD, tif=IOC))
    assert edge.code == 0
    _quote_conserved(chain)


def test_a_taker_cannot_lose_more_than_it_has_in_a_reducing_fill() -> None:
    chain = Chain()
    a, b = _funded(chain, 5_000, 1_000)
    size = 3 * UNIT // 10  # 0.3 BTC: 18,000 USD notional, IM 900 of b's ~999
    chain.block(
        chain.order(b, Side.SELL, size, PRICE), chain.order(a, Side.BUY, size, PRICE, tif=IOC)
    )
    chain.block(chain.order(a, Side.SELL, size, 66_000 * USD))  # a asks at the band's top
    before = (chain.account(a).collateral_quote, chain.account(b).collateral_quote)
    # b buys its short back at 66,000: a loss of 1,800 USD on ~999 of equity.
    [taker] = chain.block(chain.order(b, Side.BUY, size, 66_000 * USD, tif=IOC))
    assert taker.code == Reject.INSUFFICIENT_MARGIN
    assert (chain.account(a).collateral_quote, chain.account(b).collateral_quote) == before
    assert chain.position(b) == -size
    _quote_conserved(chain)


def test_a_maker_that_cannot_margin_its_fill_loses_the_order_and_matching_goes_on() -> None:
    chain = Chain()
    a, b, c = _funded(chain, 5_000, 3_000, 5_000)
    size = 3 * UNIT // 10
    chain.block(
        chain.order(b, Side.SELL, size, PRICE), chain.order(a, Side.BUY, size, PRICE, tif=IOC)
    )
    # b bids 65,000 for its short back while it can margin that, then withdraws down to IM.
    chain.block(
        chain.order(b, Side.BUY, size, 65_000 * USD), chain.order(c, Side.BUY, size, 64_000 * USD)
    )
    [out] = chain.block(chain.sign(Withdraw, b, amount_quote=2_000 * USD))
    assert out.code == 0
    [sell] = chain.block(chain.order(a, Side.SELL, size, 0, kind=OrderKind.MARKET, tif=IOC))
    assert sell.code == 0
    cancelled = _events([sell], EventKind.ORDER_CANCELLED)
    assert [(e.account, e.ref) for e in cancelled] == [(b.public_key, CancelReason.MAKER_MARGIN)]
    fills = _events([sell], EventKind.FILL)
    assert [(f.counterparty, f.price_quote) for f in fills] == [(c.public_key, 64_000 * USD)]
    assert chain.position(b) == -size and chain.position(a) == 0
    _quote_conserved(chain)


def test_a_stop_loss_with_worst_price_zero_fills_only_inside_the_band() -> None:
    """Observed: a stop-loss whose worst price is 0 sold into a colluding bid at any price."""
    chain = Chain()
    a, b = _funded(chain, 1_000, 5_000)
    size = 3 * UNIT // 10
    chain.block(
        chain.order(b, Side.SELL, size, PRICE), chain.order(a, Side.BUY, size, PRICE, tif=IOC)
    )
    stop = chain.order(
        a, Side.SELL, size, 0, kind=OrderKind.STOP_LOSS, tif=IOC, trigger_price_quote=59_500 * USD
    )
    [placed, bid] = chain.block(stop, chain.order(b, Side.BUY, size, 54_000 * USD))
    assert (placed.code, bid.code) == (0, 0)
    chain.block(chain.oracle({BTC: 59_400 * USD}))
    # Selling at 54,000 would leave a with -801 USD and no position: the fill is refused.
    failed = (
        [e for e in chain.last.events if e.kind == EventKind.ORDER_CANCELLED] if chain.last else []
    )
    assert [e.ref for e in failed] == [CancelReason.TRIGGER_FAILED]
    assert chain.position(a) == size and chain.position(b) == -size
    _quote_conserved(chain)


def test_triggered_orders_are_reduce_only() -> None:
    """Observed: a triggered stop could open or grow a position."""
    chain = Chain()
    a, mm = chain.trader(0), chain.trader(2)
    chain.block(chain.order(mm, Side.BUY, 2 * UNIT, 59_000 * USD))
    # No position: a "stop-loss" sell is accepted but can only ever reduce.
    [placed] = chain.block(
        chain.order(
            a,
            Side.SELL,
            UNIT,
            0,
            kind=OrderKind.STOP_LOSS,
            tif=IOC,
            trigger_price_quote=59_900 * USD,
        )
    )
    assert placed.code == 0
    chain.block(chain.oracle({BTC: 59_800 * USD}))
    assert chain.position(a) == 0
    cancelled = (
        [e for e in chain.last.events if e.kind == EventKind.ORDER_CANCELLED] if chain.last else []
    )
    assert [e.ref for e in cancelled] == [CancelReason.REDUCE_ONLY]


# ---------------------------------------------------------------- 2. nothing raises


def test_nonce_base_plus_63_is_encodable_and_the_window_still_works() -> None:
    """Observed: nonce base + 63 set bit 63 of the bitmap; its int64 encoding overflowed and
    apply_block raised: any funded account could stop the producer."""
    chain = Chain()
    a = chain.trader(0)
    late = sign_tx(Withdraw(nonce=63, amount_quote=USD), a, chain.chain_id)
    [receipt] = chain.block(late)
    assert receipt.code == 0
    nonces = get_nonces(Overlay(chain.state), a.public_key)
    assert codec.fits(nonces) and nonces == Nonces(base_nonce=0, used_bits=1 << 62)
    for nonce in range(63):
        [ok] = chain.block(sign_tx(Withdraw(nonce=nonce, amount_quote=USD), a, chain.chain_id))
        assert ok.code == 0
    assert get_nonces(Overlay(chain.state), a.public_key) == Nonces(base_nonce=64, used_bits=0)
    [again] = chain.block(late)
    assert again.code == Reject.BAD_NONCE


def test_numbers_at_the_int64_edge_are_rejects_not_crashes() -> None:
    chain = Chain(devnet_doc(max_deposit_quote=2**63 - 1, max_order_size_atoms=2**63 - 1))
    a = chain.trader(0)
    huge = 2**63 - 1
    receipts = chain.block(
        chain.order(a, Side.BUY, UNIT, huge - huge % USD),  # a price near int64's maximum
        chain.order(a, Side.BUY, huge - huge % 100_000, PRICE),  # a size near it
        chain.deposit(a.public_key, huge, 77),  # collateral past int64
    )
    assert [r.code for r in receipts] == [
        Reject.OUT_OF_RANGE,
        Reject.INSUFFICIENT_MARGIN,
        Reject.OUT_OF_RANGE,
    ]
    _quote_conserved(chain)


def test_raw_tx_bytes_with_a_field_past_int64_are_malformed() -> None:
    """Observed: a price of 2**63 in raw tx bytes made apply_block_bytes raise OutOfRange."""
    import msgpack

    chain = Chain()
    good = chain.order(chain.trader(0), Side.BUY, UNIT, PRICE)
    kind, body, signer, signature = msgpack.unpackb(good.raw)[1:]
    fields = msgpack.unpackb(body)
    fields[6] = 2**63  # price_quote
    bad = msgpack.packb([0x30, kind, msgpack.packb(fields), signer, signature])
    env = BlockEnv(chain_id=chain.chain_id, height=1, time_ms=chain.time_ms + 1)
    result = apply_block_bytes(chain.state, env, [bad, good.raw])
    assert [r.code for r in result.receipts] == [Reject.MALFORMED, 0]


def test_an_unexpected_error_in_one_tx_rejects_that_tx_and_the_block_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain = Chain()
    a, b = chain.trader(0), chain.trader(1)

    def broken(*_: Any) -> Any:
        raise ZeroDivisionError("a bug nobody foresaw")

    monkeypatch.setitem(HANDLERS, Withdraw, broken)
    failing = chain.sign(Withdraw, a, amount_quote=USD)
    receipts = chain.block(failing, chain.order(b, Side.BUY, UNIT, PRICE - USD))
    assert [r.code for r in receipts] == [Reject.TX_FAILED, 0]
    assert chain.last is not None
    assert chain.last.failures == ((failing.tx_hash, "ZeroDivisionError: a bug nobody foresaw"),)
    assert get_nonces(Overlay(chain.state), a.public_key).base_nonce == 1  # consumed


# ---------------------------------------------------------------- 3. no replay


def test_a_rejected_tx_consumes_its_nonce_and_cannot_be_replayed_later() -> None:
    """Observed: a tx rejected in a block left its nonce unused; the same signed bytes were
    applied later, once they would succeed."""
    chain = Chain()
    [a] = _funded(chain, 1_000)
    withdraw = chain.sign(Withdraw, a, amount_quote=2_000 * USD)
    [first] = chain.block(withdraw)
    assert first.code == Reject.INSUFFICIENT_COLLATERAL
    chain.block(chain.deposit(a.public_key, 5_000 * USD, 1))
    [replay] = chain.block(withdraw)
    assert replay.code == Reject.BAD_NONCE
    assert chain.account(a).collateral_quote == 6_000 * USD


# ---------------------------------------------------------------- 4. no user halts the chain


def _leveraged_long(chain: Chain, size: int = 320 * UNIT) -> tuple[Any, Any]:
    a, b = chain.trader(0), chain.trader(1)
    chain.block(chain.order(b, Side.SELL, size, PRICE), chain.order(a, Side.BUY, size, PRICE))
    return a, b


def _margins_doubled(chain: Chain) -> Any:
    """The operator raises BTC's margins to 20% / 10%: a liquidation wave with no price move."""
    return chain.sign(
        SetMarketParams,
        chain.key("devnet/operator"),
        market_id=BTC,
        initial_margin_ppm=200_000,
        maintenance_margin_ppm=100_000,
        max_funding_rate_ppm=1000,
    )


def test_a_liquidation_storm_without_a_price_move_closes_that_market_not_the_chain() -> None:
    """Observed: ~51 liquidations in one block tripped the breaker and halted the chain."""
    chain = Chain()
    a, _ = _leveraged_long(chain)
    chain.block(chain.order(chain.trader(3), Side.BUY, UNIT, 59_000 * USD, market_id=BTC))
    # The maintenance margin is raised (no price move): a's long and b's short, 19.2M USD
    # each, are liquidated.
    chain.block(_margins_doubled(chain))
    assert chain.position(a) == 0 and chain.position(chain.trader(1)) == 0
    assert chain.market(BTC).mode == MarketMode.CANCEL_ONLY
    assert chain.market(2).mode == MarketMode.OPEN  # the other markets trade on
    breaker = [e for e in chain.last.events if e.kind == EventKind.BREAKER] if chain.last else []
    assert [(e.market_id, e.amount_quote, e.extra) for e in breaker] == [(BTC, 38_400_000 * USD, 0)]
    _quote_conserved(chain)


def test_many_dust_liquidations_do_not_trip_the_breaker() -> None:
    # Any counted notional past the 1,000 USD dust floor would trip it.
    chain = Chain(devnet_doc(breaker_notional_quote=1_000 * USD))
    keys_ = _funded(chain, *([40] * 60))
    maker = chain.trader(0)
    size = UNIT // 100  # 0.01 BTC, 600 USD: under the dust floor
    chain.block(chain.order(maker, Side.SELL, 60 * size, PRICE))
    chain.block(*(chain.order(k, Side.BUY, size, PRICE, tif=IOC) for k in keys_))
    assert all(chain.position(k) == size for k in keys_)
    chain.block(_margins_doubled(chain))  # all 60 under maintenance at once, no price move
    assert all(chain.position(k) == 0 for k in keys_)
    assert chain.market(BTC).mode == MarketMode.OPEN
    _quote_conserved(chain)


def test_a_bankruptcy_past_the_insurance_fund_deleverages_instead_of_halting() -> None:
    """Observed: a bankruptcy larger than the insurance fund halted the chain."""
    doc = devnet_doc()
    doc["insurance_fund_quote"] = str(1_000 * USD)
    chain = Chain(doc)
    a, b = _leveraged_long(chain)
    chain.block(chain.oracle({BTC: 59_000 * USD}))
    chain.block(dt_ms=40_000)  # stale oracle: no liquidation meanwhile
    balance = chain.account(a).collateral_quote
    chain.block(chain.oracle({BTC: 54_000 * USD}))
    deficit = -(balance + 320 * 54_000 * USD)
    assert deficit > 1_000 * USD
    assert chain.position(a) == 0 and chain.position(b) == 0
    assert chain.account(a).collateral_quote == 0
    deleveraged = (
        [e for e in chain.last.events if e.kind == EventKind.DELEVERAGED] if chain.last else []
    )
    assert [(e.account, e.counterparty, e.size_atoms, e.amount_quote) for e in deleveraged] == [
        (a.public_key, b.public_key, 320 * UNIT, deficit)
    ]
    assert chain.totals().insurance_fund_quote == 1_000 * USD  # untouched
    _quote_conserved(chain)


def test_deleveraging_takes_the_more_leveraged_counterparty_first_and_shares_the_deficit() -> None:
    """Two shorts of equal size and profit against one bankrupt long: the one with less equity
    (more leverage) is deleveraged first; each pays the deficit in proportion to the size it
    takes, and no one pays more than its equity."""
    doc = devnet_doc()
    doc["insurance_fund_quote"] = str(1_000 * USD)
    chain = Chain(doc)
    a, b, c = chain.trader(0), chain.trader(1), chain.trader(2)
    chain.block(chain.deposit(b.public_key, 5_000_000 * USD, 1))  # b: less leveraged
    chain.block(
        chain.order(b, Side.SELL, 160 * UNIT, PRICE),
        chain.order(c, Side.SELL, 160 * UNIT, PRICE),
        chain.order(a, Side.BUY, 320 * UNIT, PRICE),
    )
    chain.block(chain.oracle({BTC: 59_000 * USD}))
    chain.block(dt_ms=40_000)
    balance = chain.account(a).collateral_quote
    chain.block(chain.oracle({BTC: 54_000 * USD}))
    deficit = -(balance + 320 * 54_000 * USD)
    assert chain.last is not None
    adl = [e for e in chain.last.events if e.kind == EventKind.DELEVERAGED]
    assert [(e.counterparty, e.size_atoms) for e in adl] == [
        (c.public_key, 160 * UNIT),
        (b.public_key, 160 * UNIT),
    ]
    assert [e.amount_quote for e in adl] == [deficit // 2, deficit - deficit // 2]
    assert chain.position(b) == chain.position(c) == chain.position(a) == 0
    _quote_conserved(chain)


def test_a_liquidator_that_cannot_margin_the_take_over_is_replaced_by_deleveraging() -> None:
    doc = devnet_doc()
    doc["liquidator"]["collateral_quote"] = "0"
    chain = Chain(doc)
    a, b = _leveraged_long(chain)
    insurance = chain.totals().insurance_fund_quote
    chain.block(chain.oracle({BTC: 57_000 * USD}))
    assert chain.position(a) == 0 and chain.position(b) == -0  # b's short closed against a
    assert chain.position(chain.key("devnet/liquidator")) == 0
    assert chain.totals().insurance_fund_quote > insurance  # the penalty still went there
    _quote_conserved(chain)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"insurance_fund_quote": "0"}, "insurance_fund_quote=0"),
        ({"markets": [{"price_band_ppm": "30000"}]}, "price_band_ppm=30000 must exceed"),
        ({"params": {"breaker_min_notional_quote": str(10**18)}}, "breaker_min_notional"),
        ({"markets": [{"oracle_price_quote": str(10**16)}]}, "oracle_price_quote"),
    ],
)
def test_genesis_refuses_parameters_the_rules_cannot_live_with(
    change: dict[str, Any], message: str
) -> None:
    doc = devnet_doc()
    for name, value in change.items():
        if name == "markets":
            doc["markets"][0].update(value[0])
        elif name == "params":
            doc["params"].update(value)
        else:
            doc[name] = value
    with pytest.raises(GenesisError, match=message):
        parse_genesis(doc)


# ---------------------------------------------------------------- 5. the remaining holes


def test_a_dust_position_in_a_paused_market_does_not_block_liquidation_elsewhere() -> None:
    chain = Chain()
    a, b = _leveraged_long(chain)
    chain.block(
        chain.order(b, Side.SELL, UNIT, 150 * USD, market_id=SOL),
        chain.order(a, Side.BUY, UNIT, 150 * USD, market_id=SOL),
    )
    operator = chain.key("devnet/operator")
    chain.block(chain.sign(SetMarketMode, operator, market_id=SOL, mode=MarketMode.POST_ONLY))
    chain.block(chain.oracle({BTC: 57_000 * USD}))
    assert chain.position(a) == 0  # the BTC position was liquidated
    assert chain.position(a, SOL) == UNIT  # the paused market's position stays
    _quote_conserved(chain)


def test_a_withdrawal_against_a_stale_oracle_is_refused() -> None:
    chain = Chain()
    a, _ = _leveraged_long(chain, UNIT)
    chain.block(dt_ms=40_000)  # past oracle_stale_ms
    [stale] = chain.block(chain.sign(Withdraw, a, amount_quote=USD))
    assert stale.code == Reject.ORACLE_STALE
    chain.block(chain.oracle({BTC: PRICE}))
    [fresh] = chain.block(chain.sign(Withdraw, a, amount_quote=USD))
    assert fresh.code == 0


def test_lowering_the_funding_cap_in_a_tick_block_applies_from_the_next_tick() -> None:
    """Observed: lowering a market's funding cap in a block that also had a funding tick
    halted the chain (the invariant checked the tick against the new cap)."""
    chain = Chain()
    mm = chain.trader(2)
    chain.block(
        chain.order(mm, Side.BUY, UNIT, 60_100 * USD),
        chain.order(mm, Side.SELL, UNIT, 60_200 * USD),
        dt_ms=59_000,
    )
    operator = chain.key("devnet/operator")
    lower = chain.sign(
        SetMarketParams,
        operator,
        market_id=BTC,
        initial_margin_ppm=50_000,
        maintenance_margin_ppm=30_000,
        max_funding_rate_ppm=0,
    )
    chain.block(lower, dt_ms=2_000)  # this block's tick ran first, at the 1,000 ppm cap
    ticks = [e for e in chain.last.events if e.kind == EventKind.FUNDING_TICK] if chain.last else []
    assert [(e.market_id, e.extra) for e in ticks if e.market_id == BTC] == [(BTC, 1000)]
    index = chain.market(BTC).funding_index_quote
    chain.block(dt_ms=60_000)
    assert chain.market(BTC).funding_index_quote == index  # the new cap of 0 from then on


def test_one_tiny_order_cannot_pin_the_funding_rate() -> None:
    """Observed: one tiny order on an empty side pinned the rate at its cap."""
    chain = Chain()
    mm = chain.trader(2)
    chain.block(
        chain.order(mm, Side.BUY, 100_000, 65_000 * USD),  # 0.001 BTC, 65 USD
        chain.order(mm, Side.SELL, 100_000, 65_500 * USD),
        dt_ms=59_000,
    )
    chain.block(dt_ms=2_000)
    assert chain.market(BTC).funding_ticks == 1
    assert chain.market(BTC).funding_index_quote == 0


def test_oracle_updates_in_one_block_move_the_price_at_most_the_cap() -> None:
    """Observed: five updates of +9.x% in one block moved a price +54-61%."""
    chain = Chain()
    updates = [
        chain.oracle({BTC: PRICE * (100 + 9 * (i + 1)) // 100}, chain.time_ms + 1 + i)
        for i in range(5)
    ]
    receipts = chain.block(*updates, dt_ms=10)
    assert [r.code for r in receipts] == [0] + [Reject.ORACLE_JUMP] * 4
    assert chain.market(BTC).oracle_price_quote == PRICE * 109 // 100
