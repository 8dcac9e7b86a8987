"""Funding: rate from the premium, index advance per tick, lazy settlement. Imports
node.core.{fixed,records}.

The cumulative index F (quote atoms per whole base unit) rises when longs pay. A tick at time t
with rate r (ppm per funding period, clamped to the market cap) and oracle price p advances
F by trunc(r x p x dt / (period x PPM)), where dt is the time since the previous tick; a gap
longer than the configured maximum (halt, maintenance) accrues nothing, nor does a tick while
the market is CANCEL_ONLY or HALTED (maintenance, the recovery after a rollback). A position
settles on every touch: payment to the holder = floor(-size x (F_now - F_position) /
SIZE_SCALE), which rounds against the holder in both signs; the residue stays with the
insurance fund, which is the counterparty of every settlement (tests/core/test_funding.py pins
both signs).
"""

from __future__ import annotations

from node.core.fixed import PPM, SIZE_SCALE, div_floor, div_trunc
from node.core.records import Market, Position


def premium_rate_ppm(
    impact_bid_quote: int | None, impact_ask_quote: int | None, oracle_price_quote: int
) -> int:
    """(max(0, impact bid - oracle) - max(0, oracle - impact ask)) / oracle in ppm, truncated
    (Binance's and dYdX's premium): the impact prices are the average prices of filling the
    market's impact notional on each side, so one small order cannot move the rate. 0 when a
    side is thinner than the impact notional."""
    if impact_bid_quote is None or impact_ask_quote is None or oracle_price_quote <= 0:
        return 0
    premium = max(0, impact_bid_quote - oracle_price_quote) - max(
        0, oracle_price_quote - impact_ask_quote
    )
    return div_trunc(premium * PPM, oracle_price_quote)


def clamp_rate_ppm(rate_ppm: int, cap_ppm: int) -> int:
    return max(-cap_ppm, min(cap_ppm, rate_ppm))


def index_delta_quote(rate_ppm: int, price_quote: int, dt_ms: int, period_ms: int) -> int:
    """The index advance of one tick, truncated toward zero (named rounding: the funding log
    re-derives it exactly, and the residue never reaches a position)."""
    return div_trunc(rate_ppm * price_quote * dt_ms, period_ms * PPM)


def max_index_delta_quote(cap_ppm: int, price_quote: int, dt_ms: int, period_ms: int) -> int:
    return index_delta_quote(cap_ppm, price_quote, dt_ms, period_ms)


def funding_payment_quote(position: Position, market: Market) -> int:
    """Signed amount paid *to* the holder. Floor rounds against the holder in both signs."""
    index_delta = market.funding_index_quote - position.funding_index_quote
    return div_floor(-index_delta * position.size_atoms, SIZE_SCALE)
