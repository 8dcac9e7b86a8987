"""Funding in plain numbers: the tick's index advance, its cap, both signs of settlement and
their rounding against the holder, the gap rule, and the funding log."""

from __future__ import annotations

from dataclasses import replace

from node.core.funding import (
    clamp_rate_ppm,
    funding_payment_quote,
    index_delta_quote,
    premium_rate_ppm,
)
from node.core.records import AccountId, MarketId, Position
from tests.core.harness import BTC, UNIT, USD, Chain, Side, TimeInForce

HOUR_MS = 3_600_000


def _position(size_atoms: int, index_quote: int) -> Position:
    return Position(
        account_id=AccountId(b"\x01" * 32),
        market_id=MarketId(BTC),
        size_atoms=size_atoms,
        cost_quote=0,
        funding_index_quote=index_quote,
    )


def test_index_advance_is_rate_times_price_times_dt_over_period() -> None:
    # 0.1% per hour of $60,000 over one minute = $1 per BTC.
    assert index_delta_quote(1000, 60_000 * USD, 60_000, HOUR_MS) == 1 * USD
    # 61 s: 1,016,666.67 truncates toward zero in both signs.
    assert index_delta_quote(1000, 60_000 * USD, 61_000, HOUR_MS) == 1_016_666
    assert index_delta_quote(-1000, 60_000 * USD, 61_000, HOUR_MS) == -1_016_666


def test_premium_and_clamp() -> None:
    # Impact bid above the oracle: (60,100 - 60,000) / 60,000; the ask's side adds nothing.
    assert premium_rate_ppm(60_100 * USD, 60_200 * USD, 60_000 * USD) == 1666
    assert premium_rate_ppm(59_900 * USD, 59_950 * USD, 60_000 * USD) == -833
    assert premium_rate_ppm(59_900 * USD, 60_100 * USD, 60_000 * USD) == 0  # oracle inside
    assert premium_rate_ppm(None, 60_000 * USD, 60_000 * USD) == 0
    assert clamp_rate_ppm(2500, 1000) == 1000 and clamp_rate_ppm(-2500, 1000) == -1000


def test_funding_payment_rounds_against_holder_in_both_signs() -> None:
    market = replace(Chain().market(BTC), funding_index_quote=1_016_666)
    # 0.003 BTC x 1,016,666 / 1e8 = 3,049.998 quote atoms.
    assert funding_payment_quote(_position(300_000, 0), market) == -3050  # long pays, rounded up
    assert funding_payment_quote(_position(-300_000, 0), market) == 3049  # short gets, rounded down
    market = replace(market, funding_index_quote=-1_016_666)
    assert funding_payment_quote(_position(300_000, 0), market) == 3049
    assert funding_payment_quote(_position(-300_000, 0), market) == -3050


def test_tick_settles_lazily_and_the_residue_stays_in_insurance() -> None:
    chain = Chain()
    a, b, mm = chain.trader(0), chain.trader(1), chain.trader(2)
    # a long 0.003 BTC from b at 60,000; a two-sided book above the oracle makes the premium
    # positive (impact bid 100 over the oracle: 1,666 ppm, clamped to the 1,000 ppm cap).
    chain.block(
        chain.order(b, Side.SELL, 300_000, 60_000 * USD),
        chain.order(a, Side.BUY, 300_000, 60_000 * USD),
        chain.order(mm, Side.BUY, UNIT // 5, 60_100 * USD),  # 0.2 BTC: past the impact notional
        chain.order(mm, Side.SELL, UNIT // 5, 60_200 * USD),
        dt_ms=59_500,
    )
    before_a, before_b = chain.account(a).collateral_quote, chain.account(b).collateral_quote
    insurance = chain.totals().insurance_fund_quote
    chain.block(dt_ms=1_500)  # crosses the minute: dt since genesis 61,000 ms
    market = chain.market(BTC)
    assert market.funding_index_quote == 1_016_666 and market.funding_ticks == 1
    assert chain.summary(a)["positions"][0]["unsettled_funding_quote"] == -3050
    # A fill touches the position and settles it: a pays 3,050, b receives 3,049 (plus each
    # fill's notional and 500 ppm taker fee, rounded up).
    chain.block(chain.order(a, Side.BUY, UNIT // 1000, 60_200 * USD, tif=TimeInForce.IOC))
    chain.block(chain.order(b, Side.SELL, UNIT // 1000, 60_100 * USD, tif=TimeInForce.IOC))
    assert chain.account(a).collateral_quote == before_a - 3050 - 60_200_000 - 30_100
    assert chain.account(b).collateral_quote == before_b + 3049 + 60_100_000 - 30_050
    assert chain.totals().insurance_fund_quote == insurance + 1


def test_a_gap_longer_than_the_maximum_accrues_nothing() -> None:
    chain = Chain()
    a, b = chain.trader(0), chain.trader(1)
    chain.block(
        chain.order(a, Side.BUY, UNIT // 1000, 60_100 * USD),
        chain.order(b, Side.SELL, UNIT // 1000, 60_200 * USD),
    )
    chain.block(dt_ms=30 * 60_000)  # a 30-minute halt: beyond max_funding_gap_ms (5 min)
    market = chain.market(BTC)
    assert market.funding_ticks == 1 and market.funding_index_quote == 0
    tick = chain.last.events[0] if chain.last else None
    assert tick is not None and tick.extra == 0


def test_a_market_closed_to_trading_accrues_nothing_and_resumes_when_reopened() -> None:
    from node.core.records import MarketMode
    from node.core.txs import SetMarketMode

    chain = Chain()
    a, b = chain.trader(0), chain.trader(1)
    operator = chain.key("devnet/operator")
    chain.block(
        chain.order(a, Side.BUY, UNIT // 5, 60_100 * USD),
        chain.order(b, Side.SELL, UNIT // 5, 60_200 * USD),
        chain.sign(SetMarketMode, operator, market_id=BTC, mode=MarketMode.CANCEL_ONLY),
        dt_ms=1_000,
    )
    chain.block(dt_ms=60_000)  # a tick inside the maximum gap, but the market is closed
    market = chain.market(BTC)
    assert market.funding_ticks == 1 and market.funding_index_quote == 0
    chain.block(
        chain.sign(SetMarketMode, operator, market_id=BTC, mode=MarketMode.OPEN), dt_ms=1_000
    )
    chain.block(dt_ms=60_000)  # open again: the premium accrues (capped at 1,000 ppm)
    market = chain.market(BTC)
    assert market.funding_ticks == 2 and market.funding_index_quote > 0
