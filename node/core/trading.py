"""Positions, fills, matching and order lifecycle. Imports node.core.{errors,fixed,funding,keys,
margin,records,view}.

Matching is price-time priority on a book stored under keys that sort in priority order
(node.core.keys), fills happen at the maker price, the taker pays the taker fee and the maker
the maker fee (both rounded up, to the fee pool). A resting order of the taker's own account
met during matching is cancelled (self-trade prevention: cancel resting).

Every fill is margin-checked for both accounts (`fill_allowed`, the dYdX v4 rule): after it an
account meets its initial margin, or the fill left it no riskier: new net collateral / new
maintenance margin >= old / old, and with no position left its collateral is not negative. A
maker that fails loses the order and matching goes on; a taker that fails stops matching
(rejected if nothing filled). Fills happen only within the market's price band around the
oracle: the taker's limit is clipped to the band, and a resting order found outside it is
cancelled (OUT_OF_BAND).
"""

from __future__ import annotations

from itertools import islice

from node.core import keys
from node.core.errors import InvariantViolation, Reject, TxRejected
from node.core.fixed import PPM, SIZE_SCALE, div_ceil, div_floor, div_trunc, mul_ppm
from node.core.funding import funding_payment_quote
from node.core.margin import (
    equity_quote,
    initial_margin_quote,
    maintenance_margin_quote,
    requirement_quote,
)
from node.core.records import (
    Account,
    AccountId,
    CancelReason,
    ChainParams,
    Event,
    EventKind,
    Market,
    MarketId,
    Order,
    OrderKind,
    Position,
    Side,
    TimeInForce,
    event,
    evolve,
)
from node.core.view import (
    Overlay,
    get_account,
    get_market,
    get_position,
    get_totals,
    put_account,
    put_market,
    put_position,
    put_totals,
)


def require_account(view: Overlay, account_id: bytes) -> Account:
    account = get_account(view, account_id)
    if account is None:
        raise TxRejected(Reject.UNKNOWN_ACCOUNT, account_id.hex()[:16])
    return account


def existing_account(view: Overlay, account_id: bytes) -> Account:
    """An account the state must hold (an order's or a position's owner): its absence is a
    broken invariant, never a user's mistake."""
    account = get_account(view, account_id)
    if account is None:  # not invariant(): its message would be formatted on every call
        raise InvariantViolation(f"account {account_id.hex()[:16]} is referenced but missing")
    return account


def existing_market(view: Overlay, market_id: int) -> Market:
    market = get_market(view, market_id)
    if market is None:
        raise InvariantViolation(f"market {market_id} is referenced but missing")
    return market


def holdings(
    view: Overlay, account_id: AccountId, account: Account | None = None
) -> list[tuple[Position, Market]]:
    """The account's positions with their markets: point reads through `Account.markets`
    (no ordered scan: this runs for both accounts of every fill). `account`: the record, when
    the caller has read it already."""
    if account is None:
        account = existing_account(view, account_id)
    out = []
    for market_id in account.markets:
        position = get_position(view, account_id, MarketId(market_id))
        market = get_market(view, market_id)
        if position is None or market is None:
            raise InvariantViolation(
                f"account {account_id.hex()[:16]} lists market {market_id} without a position"
            )
        out.append((position, market))
    return out


def risk_quote(view: Overlay, account_id: AccountId) -> tuple[int, int, int]:
    """(net collateral, initial margin, maintenance margin) of the account, at the oracle."""
    account = existing_account(view, account_id)
    held = holdings(view, account_id, account)
    return equity_quote(account, held), initial_margin_quote(held), maintenance_margin_quote(held)


def fill_allowed(before: Overlay, after: Overlay, account_id: AccountId) -> bool:
    """The margin rule of every fill (module docstring): `after` meets initial margin, or it
    is no riskier than `before` by net collateral over maintenance margin (cross-multiplied:
    both requirements are >= 0). Opening from no requirement must meet initial margin; with
    no requirement left the net collateral must not be negative."""
    net, initial, maintenance = risk_quote(after, account_id)
    if net >= initial:
        return True
    if maintenance == 0:
        return False  # initial is 0 too, so net < 0: no position and a debt
    old_net, _, old_maintenance = risk_quote(before, account_id)
    if old_maintenance == 0:
        return False
    return net * old_maintenance >= old_net * maintenance


def settle_funding(
    view: Overlay, position: Position, market: Market, events: list[Event]
) -> Position:
    """Pay the position's funding since its last settlement; the insurance fund is the
    counterparty (and keeps the rounding residue)."""
    if position.funding_index_quote == market.funding_index_quote:
        return position
    payment = funding_payment_quote(position, market)
    if payment:
        account = existing_account(view, position.account_id)
        put_account(view, evolve(account, collateral_quote=account.collateral_quote + payment))
        totals = get_totals(view)
        put_totals(view, evolve(totals, insurance_fund_quote=totals.insurance_fund_quote - payment))
        events.append(
            event(
                EventKind.FUNDING_SETTLED,
                market_id=market.market_id,
                account=position.account_id,
                size_atoms=position.size_atoms,
                amount_quote=payment,
            )
        )
    return evolve(position, funding_index_quote=market.funding_index_quote)


def change_position(
    view: Overlay,
    account_id: AccountId,
    market: Market,
    delta_atoms: int,
    price_quote: int,
    events: list[Event],
) -> tuple[int, int]:
    """Add `delta_atoms` at `price_quote` to the position (funding settled first); moves the
    notional between the account's balance and the position. Returns (size before, after)."""
    position = get_position(view, account_id, market.market_id)
    if position is None:
        position = Position(
            account_id=account_id,
            market_id=market.market_id,
            size_atoms=0,
            cost_quote=0,
            funding_index_quote=market.funding_index_quote,
        )
    else:
        position = settle_funding(view, position, market, events)
    before = position.size_atoms
    after = before + delta_atoms
    if before == 0 or (before > 0) == (delta_atoms > 0):
        cost = position.cost_quote + div_floor(delta_atoms * price_quote, SIZE_SCALE)
    elif after == 0 or (after > 0) == (before > 0):
        cost = (
            div_trunc(position.cost_quote * after, before)
            if before > 0
            else -div_trunc(-position.cost_quote * after, -before)
        )
    else:  # flipped: the remainder opens at this price
        cost = div_floor(after * price_quote, SIZE_SCALE)
    put_position(view, evolve(position, size_atoms=after, cost_quote=cost))
    if before == 0 or after == 0:  # opened or closed: keep Account.markets in step
        account = existing_account(view, account_id)
        held = set(account.markets)
        held.add(market.market_id) if after else held.discard(market.market_id)
        put_account(view, evolve(account, markets=tuple(sorted(held))))
    return before, after


def apply_fill(
    view: Overlay,
    market: Market,
    *,
    buyer: AccountId,
    seller: AccountId,
    size_atoms: int,
    price_quote: int,
    events: list[Event],
    buyer_fee_quote: int = 0,
    seller_fee_quote: int = 0,
) -> tuple[Market, tuple[int, int], tuple[int, int]]:
    """Move `size_atoms` from seller to buyer at `price_quote`: positions, the notional (one
    floored integer, so the transfer is exact), fees to the fee pool and open interest. No
    margin checks."""
    notional = div_floor(size_atoms * price_quote, SIZE_SCALE)
    buyer_sizes = change_position(view, buyer, market, size_atoms, price_quote, events)
    seller_sizes = change_position(view, seller, market, -size_atoms, price_quote, events)
    for account_id, delta in (
        (buyer, -notional - buyer_fee_quote),
        (seller, notional - seller_fee_quote),
    ):
        account = existing_account(view, account_id)
        put_account(view, evolve(account, collateral_quote=account.collateral_quote + delta))
    if buyer_fee_quote or seller_fee_quote:
        totals = get_totals(view)
        fee_pool = totals.fee_pool_quote + buyer_fee_quote + seller_fee_quote
        put_totals(view, evolve(totals, fee_pool_quote=fee_pool))
    oi_delta = (max(buyer_sizes[1], 0) - max(buyer_sizes[0], 0) + max(seller_sizes[1], 0)) - max(
        seller_sizes[0], 0
    )
    market = evolve(market, open_interest_atoms=market.open_interest_atoms + oi_delta)
    put_market(view, market)
    return market, buyer_sizes, seller_sizes


# ---------------------------------------------------------------------- order lifecycle


def order_key(order: Order) -> bytes:
    if order.kind in (OrderKind.STOP_LOSS, OrderKind.TAKE_PROFIT):
        return keys.trigger(order.market_id, order.order_id)
    return keys.book_order(order.market_id, order.side, order.price_quote, order.order_id)


def add_order(view: Overlay, order: Order) -> None:
    where = order_key(order)
    view.put(where, order)
    view.put(keys.order_ref(order.order_id), where)
    view.put(keys.account_order(order.account_id, order.order_id), b"")
    account = existing_account(view, order.account_id)
    put_account(view, evolve(account, open_orders=account.open_orders + 1))


def remove_order(
    view: Overlay, where: bytes, order: Order, reason: CancelReason | None, events: list[Event]
) -> None:
    view.delete(where)
    view.delete(keys.order_ref(order.order_id))
    view.delete(keys.account_order(order.account_id, order.order_id))
    account = existing_account(view, order.account_id)
    put_account(view, evolve(account, open_orders=account.open_orders - 1))
    if reason is not None:
        events.append(order_event(EventKind.ORDER_CANCELLED, order, ref=reason))


def order_event(kind: EventKind, order: Order, **fields: int | bytes) -> Event:
    """An event about `order` (market, account, order id, remaining size preset)."""
    base: dict[str, int | bytes] = {
        "market_id": order.market_id,
        "account": order.account_id,
        "order_id": order.order_id,
        "size_atoms": order.size_atoms,
    }
    return event(kind, **(base | fields))


def best_order(view: Overlay, market_id: MarketId, side: Side) -> tuple[bytes, Order] | None:
    return view.first(keys.book_side(market_id, side), Order)


def band_quote(market: Market, reference_quote: int) -> tuple[int, int]:
    """The lowest and highest price allowed around `reference_quote` (the oracle for fills
    and limit orders, a conditional order's trigger for its worst price):
    reference x (1 -+ price_band_ppm), rounded inward."""
    spread = reference_quote * market.price_band_ppm
    return div_ceil(reference_quote * PPM - spread, PPM), (reference_quote * PPM + spread) // PPM


def taker_limit_quote(side: Side, limit_quote: int, market: Market) -> int:
    """The taker's limit clipped to the band (0, a market order's "any", is the band's edge)."""
    low, high = band_quote(market, market.oracle_price_quote)
    if side == Side.BUY:
        return high if limit_quote == 0 else min(limit_quote, high)
    return low if limit_quote == 0 else max(limit_quote, low)


def _crosses(side: Side, limit_quote: int, maker_price_quote: int) -> bool:
    return (
        maker_price_quote <= limit_quote if side == Side.BUY else maker_price_quote >= limit_quote
    )


def _beyond_band(side: Side, maker_price_quote: int, market: Market) -> bool:
    """A resting order on the far side of the band from the taker's limit (a sell below the
    band for a buyer, a buy above it for a seller): it may not fill, and it is cancelled."""
    low, high = band_quote(market, market.oracle_price_quote)
    return maker_price_quote < low if side == Side.BUY else maker_price_quote > high


def match_order(
    view: Overlay, taker: Order, params: ChainParams, events: list[Event]
) -> tuple[int, bool]:
    """Match `taker` against the opposite side; returns (unfilled size, whether matching
    stopped before the book stopped crossing). Raises INSUFFICIENT_MARGIN if the first fill
    would leave the taker under initial margin."""
    market_id = taker.market_id
    opposite = Side.SELL if taker.side == Side.BUY else Side.BUY
    sign = 1 if taker.side == Side.BUY else -1
    remaining = taker.size_atoms
    filled_any = False
    side_prefix = keys.book_side(market_id, opposite)
    market = existing_market(view, market_id)  # the oracle and band hold for the whole match
    limit = taker_limit_quote(taker.side, taker.price_quote, market)
    queue: list[tuple[bytes, Order]] = []
    while remaining > 0:
        # The next makers in priority order, a few at a time: processing a maker changes only
        # that maker, so the rest of a batch stays valid; a fresh scan starts past the makers
        # already removed.
        if not queue:
            queue = list(islice(view.iter_records(side_prefix, Order), 4))
            queue.reverse()
            if not queue:
                break
        where, maker = queue.pop()
        if not _crosses(taker.side, limit, maker.price_quote):
            break
        if _beyond_band(taker.side, maker.price_quote, market):
            remove_order(view, where, maker, CancelReason.OUT_OF_BAND, events)
            view.raise_floor(side_prefix, where)
            continue
        if maker.account_id == taker.account_id:
            remove_order(view, where, maker, CancelReason.SELF_TRADE, events)
            continue
        size = min(remaining, maker.size_atoms)
        if taker.reduce_only:
            position = get_position(view, taker.account_id, market_id)
            reducible = 0 if position is None else max(0, -sign * position.size_atoms)
            size = min(size, reducible)
            if size == 0:
                return remaining, True
        market = existing_market(view, market_id)
        branch = view.branch()
        fill_events: list[Event] = []
        buyer, seller = (
            (taker.account_id, maker.account_id)
            if taker.side == Side.BUY
            else (maker.account_id, taker.account_id)
        )
        notional = div_floor(size * maker.price_quote, SIZE_SCALE)
        taker_fee = mul_ppm(notional, params.taker_fee_ppm, round_up=True)
        maker_fee = mul_ppm(notional, params.maker_fee_ppm, round_up=True)
        buyer_fee, seller_fee = (
            (taker_fee, maker_fee) if taker.side == Side.BUY else (maker_fee, taker_fee)
        )
        apply_fill(
            branch,
            market,
            buyer=buyer,
            seller=seller,
            size_atoms=size,
            price_quote=maker.price_quote,
            events=fill_events,
            buyer_fee_quote=buyer_fee,
            seller_fee_quote=seller_fee,
        )
        if not fill_allowed(view, branch, maker.account_id):
            remove_order(view, where, maker, CancelReason.MAKER_MARGIN, events)
            continue
        if not fill_allowed(view, branch, taker.account_id):
            if not filled_any:
                raise TxRejected(Reject.INSUFFICIENT_MARGIN, taker.account_id.hex()[:16])
            return remaining, True
        branch.merge_into(view)
        events.extend(fill_events)
        if size == maker.size_atoms:
            remove_order(view, where, maker, None, events)
            view.raise_floor(side_prefix, where)  # the side's top is consumed up to here
        else:
            view.put(where, evolve(maker, size_atoms=maker.size_atoms - size))
        events.append(
            event(
                EventKind.FILL,
                market_id=market_id,
                account=taker.account_id,
                counterparty=maker.account_id,
                order_id=maker.order_id,
                ref=taker.order_id,
                size_atoms=sign * size,
                price_quote=maker.price_quote,
                amount_quote=taker_fee,
                extra=maker_fee,
            )
        )
        remaining -= size
        filled_any = True
    return remaining, False


def can_rest(view: Overlay, order: Order) -> bool:
    """Initial margin of the positions plus this order's own requirement at the oracle."""
    account = existing_account(view, order.account_id)
    market = existing_market(view, order.market_id)
    held = holdings(view, order.account_id, account)
    need = initial_margin_quote(held) + requirement_quote(
        order.size_atoms, market, market.initial_margin_ppm
    )
    return equity_quote(account, held) >= need


def rests(order: Order) -> bool:
    return order.kind == OrderKind.LIMIT and order.tif in (TimeInForce.GTC, TimeInForce.POST_ONLY)


IMPACT_MAX_ORDERS = 1_000  # resting orders an impact price walks at most (per side, per tick)


def impact_price_quote(view: Overlay, market: Market, side: Side) -> int | None:
    """The average price of filling the market's impact notional against the `side` of the
    book (the bids for the impact bid), or None when the side is thinner than that within
    IMPACT_MAX_ORDERS orders. Rounded toward the oracle's side of the book: the bid down, the
    ask up, so rounding never adds premium."""
    need = market.impact_notional_quote * SIZE_SCALE  # in size atoms x quote per unit
    value = size = 0
    orders = view.iter_records(keys.book_side(market.market_id, side), Order)
    for _, order in islice(orders, IMPACT_MAX_ORDERS):
        order_value = order.size_atoms * order.price_quote
        if value + order_value >= need:
            take = div_ceil(need - value, order.price_quote)
            value += take * order.price_quote
            size += take
            return value // size if side == Side.BUY else div_ceil(value, size)
        value += order_value
        size += order.size_atoms
    return None
