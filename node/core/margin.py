"""Equity and margin requirements of an account. Imports node.core.{fixed,records}.

equity = collateral + sum(size x oracle price, floored) + unsettled funding (floored against the
holder); requirements round up: |size| x oracle price x margin ppm. Cross margin: one account,
all its positions.
"""

from __future__ import annotations

from collections.abc import Iterable

from node.core.fixed import PPM, SIZE_SCALE, div_ceil, div_floor
from node.core.funding import funding_payment_quote
from node.core.records import Account, Market, Position


def position_value_quote(position: Position, market: Market) -> int:
    """Signed mark value at the oracle price, floored (a long's value rounds down)."""
    return div_floor(position.size_atoms * market.oracle_price_quote, SIZE_SCALE)


def requirement_quote(size_atoms: int, market: Market, margin_ppm: int) -> int:
    return div_ceil(abs(size_atoms) * market.oracle_price_quote * margin_ppm, SIZE_SCALE * PPM)


def equity_quote(account: Account, holdings: Iterable[tuple[Position, Market]]) -> int:
    total = account.collateral_quote
    for position, market in holdings:
        total += position_value_quote(position, market) + funding_payment_quote(position, market)
    return total


def initial_margin_quote(holdings: Iterable[tuple[Position, Market]]) -> int:
    return sum(requirement_quote(p.size_atoms, m, m.initial_margin_ppm) for p, m in holdings)


def maintenance_margin_quote(holdings: Iterable[tuple[Position, Market]]) -> int:
    return sum(requirement_quote(p.size_atoms, m, m.maintenance_margin_ppm) for p, m in holdings)
