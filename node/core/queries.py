"""Read helpers for RPC, CLI and diagnostics, pure over a StateReader. Imports node.core.{codec,
funding,keys,margin,records,view}."""

from __future__ import annotations

from typing import Any

from node.core import codec, keys
from node.core.errors import InvariantViolation
from node.core.funding import funding_payment_quote
from node.core.margin import equity_quote, initial_margin_quote, maintenance_margin_quote
from node.core.records import (
    Account,
    AccountId,
    FundingTick,
    Market,
    MarketId,
    Nonces,
    Order,
    Position,
    Side,
    Totals,
)
from node.core.view import (
    Overlay,
    StateReader,
    get_account,
    get_market,
    get_order,
    iter_account_order_ids,
    iter_markets,
    iter_positions,
)


def _view(reader: StateReader) -> Overlay:
    return reader if isinstance(reader, Overlay) else Overlay(reader)


def markets(reader: StateReader) -> list[Market]:
    return list(iter_markets(_view(reader)))


def market(reader: StateReader, market_id: int) -> Market | None:
    return get_market(_view(reader), market_id)


def market_by_symbol(reader: StateReader, symbol: str) -> Market | None:
    for item in markets(reader):
        if item.symbol.decode() == symbol:
            return item
    return None


def account_summary(reader: StateReader, address: bytes) -> dict[str, Any] | None:
    """Collateral, positions with unsettled funding, equity, margin requirements, open orders."""
    view = _view(reader)
    account = get_account(view, address)
    if account is None:
        return None
    held = []
    positions = []
    for position in iter_positions(view, AccountId(address)):
        mkt = get_market(view, position.market_id)
        if mkt is None:
            raise InvariantViolation(f"position in unknown market {position.market_id}")
        held.append((position, mkt))
        positions.append(
            {
                "market": mkt.symbol.decode(),
                "market_id": mkt.market_id,
                "size_atoms": position.size_atoms,
                "cost_quote": position.cost_quote,
                "unsettled_funding_quote": funding_payment_quote(position, mkt),
            }
        )
    orders = []
    for order_id in iter_account_order_ids(view, AccountId(address)):
        found = get_order(view, order_id)
        if found is not None:
            orders.append(found[1])
    return {
        "account": account,
        "positions": positions,
        "equity_quote": equity_quote(account, held),
        "initial_margin_quote": initial_margin_quote(held),
        "maintenance_margin_quote": maintenance_margin_quote(held),
        "orders": orders,
    }


def book_levels(
    reader: StateReader, market_id: int, depth: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(bids, asks), best first, as (price_quote, total size_atoms) per level."""
    view = _view(reader)
    sides = []
    for side in (Side.BUY, Side.SELL):
        levels: list[tuple[int, int]] = []
        for _, order in view.iter_records(keys.book_side(MarketId(market_id), side), Order):
            if levels and levels[-1][0] == order.price_quote:
                levels[-1] = (order.price_quote, levels[-1][1] + order.size_atoms)
            elif len(levels) == depth:
                break
            else:
                levels.append((order.price_quote, order.size_atoms))
        sides.append(levels)
    return sides[0], sides[1]


def funding_history(reader: StateReader, market_id: int) -> list[FundingTick]:
    view = _view(reader)
    return [t for _, t in view.iter_records(keys.funding_log(MarketId(market_id)), FundingTick)]


RECORD_TYPES: dict[bytes, type[Any]] = {
    keys.MARKET: Market,
    keys.ACCOUNT: Account,
    keys.POSITION: Position,
    keys.BOOK: Order,
    keys.TRIGGER: Order,
    keys.FUNDING: FundingTick,
    keys.TOTALS: Totals,
    keys.NONCES: Nonces,
}


def decode_value(key: bytes, value: bytes | None) -> Any:
    cls = RECORD_TYPES.get(key[:1])
    if value is None or cls is None:
        return value
    return codec.decode(value, cls)


def decode_key(key: bytes) -> str:
    return keys.describe(key)


def describe_difference(key: bytes, ours: bytes | None, theirs: bytes | None) -> str:
    """e.g. `market #1 BTC-USD-PERP funding_index_quote: stored 0, replayed 18233`."""
    name = decode_key(key)
    try:
        a, b = decode_value(key, ours), decode_value(key, theirs)
    except ValueError:
        return f"{name}: stored {ours!r}, replayed {theirs!r}"
    if a is None or b is None or type(a) is not type(b) or not hasattr(a, "__slots__"):
        return f"{name}: stored {a!r}, replayed {b!r}"
    if isinstance(a, Market):
        name = f"{name} {a.symbol.decode()}"
    fields = [f for f in a.__slots__ if getattr(a, f) != getattr(b, f)]
    return "; ".join(
        f"{name} {f}: stored {getattr(a, f)}, replayed {getattr(b, f)}" for f in fields
    )
