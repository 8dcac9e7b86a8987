"""End-block risk: stop-loss / take-profit triggers, liquidations, deleveraging and the breaker.
Imports node.core.{errors,fixed,funding,keys,margin,records,trading,view}.

Triggers and liquidations act in a market only while it is OPEN with a fresh oracle price. An
account that also holds positions in a paused or stale market is still liquidated: those
positions are valued conservatively (the last good price with a haircut of the market's
initial margin against the holder) and stay where they are; the live ones are closed.

A liquidated account loses its open orders and each live position is taken over at the oracle
price by the liquidator account, if that fill passes the liquidator's margin check (the same
rule as every fill). A penalty (of the closed notional, capped at the equity left) goes to the
insurance fund, and the insurance fund covers negative equity. When the insurance fund cannot
cover a bankrupt account's deficit, or the liquidator cannot margin a take-over, the position
is deleveraged instead (ADL, as dYdX v4 and Hyperliquid do): the opposite positions of the
market, most profitable and most leveraged first, are closed against it at the oracle price,
and each pays its share of the deficit on top (so the fill is at the bankruptcy price), capped
at its own equity. Nothing here halts the chain.

The breaker: when more liquidated notional than `breaker_notional_quote` (liquidations under
`breaker_min_notional_quote` do not count) happens in one market and block while its oracle
moved less than `breaker_move_ppm`, that market goes CANCEL_ONLY and a BREAKER event tells the
operator. One party cannot trip it cheaply: it counts notional, not events.
"""

from __future__ import annotations

from node.core import keys
from node.core.errors import TxRejected, invariant
from node.core.fixed import PPM, SIZE_SCALE, div_ceil, div_floor, mul_ppm
from node.core.funding import funding_payment_quote
from node.core.margin import position_value_quote, requirement_quote
from node.core.records import (
    AccountId,
    CancelReason,
    ChainParams,
    Event,
    EventKind,
    Market,
    MarketId,
    MarketMode,
    Order,
    OrderKind,
    Position,
    Side,
    TimeInForce,
    event,
    evolve,
)
from node.core.trading import (
    apply_fill,
    existing_account,
    existing_market,
    fill_allowed,
    holdings,
    match_order,
    order_event,
    remove_order,
    risk_quote,
)
from node.core.view import (
    Overlay,
    get_position,
    get_totals,
    iter_account_order_ids,
    iter_all_positions,
    iter_markets,
    put_account,
    put_market,
    put_totals,
)


def market_live(market: Market, params: ChainParams, time_ms: int) -> bool:
    """Triggers and liquidations run only for an OPEN market with a fresh oracle price."""
    return (
        market.mode == MarketMode.OPEN and time_ms - market.oracle_time_ms <= params.oracle_stale_ms
    )


def _triggered(order: Order, oracle_quote: int) -> bool:
    falling = order.trigger_price_quote >= oracle_quote  # oracle at or below the trigger
    rising = order.trigger_price_quote <= oracle_quote
    if order.kind == OrderKind.STOP_LOSS:
        return falling if order.side == Side.SELL else rising
    return rising if order.side == Side.SELL else falling


def _reducible_atoms(view: Overlay, order: Order) -> int:
    position = get_position(view, order.account_id, order.market_id)
    size = 0 if position is None else position.size_atoms
    return max(0, -size if order.side == Side.BUY else size)


def run_triggers(view: Overlay, params: ChainParams, time_ms: int, events: list[Event]) -> None:
    """Triggered TP/SL orders become reduce-only market orders (worst price: theirs, clipped to
    the band; 0 = the band's edge). One with nothing left to reduce is cancelled."""
    for market in list(iter_markets(view)):
        if not market_live(market, params, time_ms):
            continue
        due = [
            (where, order)
            for where, order in view.iter_records(keys.triggers_of(market.market_id), Order)
            if _triggered(order, market.oracle_price_quote)
        ]
        for where, order in due:
            remove_order(view, where, order, None, events)
            if _reducible_atoms(view, order) == 0:
                events.append(
                    order_event(EventKind.ORDER_CANCELLED, order, ref=CancelReason.REDUCE_ONLY)
                )
                continue
            taker = evolve(order, kind=OrderKind.MARKET, tif=TimeInForce.IOC, reduce_only=1)
            branch = view.branch()
            fill_events: list[Event] = []
            try:
                match_order(branch, taker, params, fill_events)
            except TxRejected:
                events.append(
                    order_event(EventKind.ORDER_CANCELLED, order, ref=CancelReason.TRIGGER_FAILED)
                )
                continue
            branch.merge_into(view)
            events.append(
                order_event(EventKind.TRIGGERED, order, price_quote=market.oracle_price_quote)
            )
            events.extend(fill_events)


def conservative_value_quote(position: Position, market: Market) -> int:
    """A position in a paused or stale market: its value at the last good price, less a
    haircut of the market's initial margin against the holder (a long is worth less, a short
    owes more), plus its unsettled funding."""
    value = position_value_quote(position, market)
    haircut = div_ceil(abs(value) * market.initial_margin_ppm, PPM)
    return value - haircut + funding_payment_quote(position, market)


def valued_quote(position: Position, market: Market, live: bool) -> int:
    """What the position adds to its account's equity: its value at the oracle plus unsettled
    funding in a live market, the conservative value in a paused or stale one."""
    if live:
        return position_value_quote(position, market) + funding_payment_quote(position, market)
    return conservative_value_quote(position, market)


def run_liquidations(view: Overlay, params: ChainParams, time_ms: int, events: list[Event]) -> int:
    """Liquidate every account below maintenance margin that holds a live position, then run
    the breaker; returns how many accounts were liquidated.

    One ordered pass over all positions (grouped by account, key order), markets read once:
    this scan runs every block over every open position."""
    markets = {market.market_id: market for market in iter_markets(view)}
    live = {market_id: market_live(m, params, time_ms) for market_id, m in markets.items()}
    due: list[AccountId] = []
    current: AccountId | None = None
    value = requirement = 0
    any_live = False

    def close_group() -> None:
        if current is None or not any_live or current == params.liquidator:
            return
        account = existing_account(view, current)
        if account.collateral_quote + value < requirement:
            due.append(current)

    for position in iter_all_positions(view):
        if position.account_id != current:
            close_group()
            current, value, requirement, any_live = position.account_id, 0, 0, False
        market = markets[position.market_id]
        any_live = any_live or live[position.market_id]
        value += valued_quote(position, market, live[position.market_id])
        requirement += requirement_quote(position.size_atoms, market, market.maintenance_margin_ppm)
    close_group()
    notional: dict[MarketId, int] = {}
    for account_id in due:
        branch = view.branch()
        branch_events: list[Event] = []
        try:
            closed = liquidate(branch, account_id, params, branch_events, live)
        except TxRejected:
            continue  # an amount beyond int64: leave this account as it is, liquidate the rest
        branch.merge_into(view)
        events.extend(branch_events)
        if sum(closed.values()) >= params.breaker_min_notional_quote:
            for market_id, closed_quote in closed.items():
                notional[market_id] = notional.get(market_id, 0) + closed_quote
    run_breaker(view, params, notional, events)
    return len(due)


def run_breaker(
    view: Overlay, params: ChainParams, notional: dict[MarketId, int], events: list[Event]
) -> None:
    """Put a market CANCEL_ONLY after a liquidation storm without a price move (module doc)."""
    for market_id in sorted(notional):
        if notional[market_id] <= params.breaker_notional_quote:
            continue
        market = existing_market(view, market_id)
        start = view.base_load(keys.market(market_id), Market)
        start_price = market.oracle_price_quote if start is None else start.oracle_price_quote
        move_ppm = abs(market.oracle_price_quote - start_price) * PPM // start_price
        if move_ppm >= params.breaker_move_ppm:
            continue
        put_market(view, evolve(market, mode=MarketMode.CANCEL_ONLY))
        events.append(
            event(
                EventKind.BREAKER,
                market_id=market_id,
                amount_quote=notional[market_id],
                extra=move_ppm,
            )
        )
        events.append(event(EventKind.MARKET_MODE, market_id=market_id, ref=MarketMode.CANCEL_ONLY))


def liquidate(
    view: Overlay,
    account_id: AccountId,
    params: ChainParams,
    events: list[Event],
    live: dict[MarketId, bool],
) -> dict[MarketId, int]:
    """Close the account's live positions (module docstring); returns the closed notional per
    market."""
    for order_id in list(iter_account_order_ids(view, account_id)):
        where = view.load(keys.order_ref(order_id), bytes)
        order = None if where is None else view.load(where, Order)
        invariant(order is not None, f"order {order_id} of {account_id.hex()[:16]} is missing")
        remove_order(view, where, order, CancelReason.LIQUIDATED, events)  # type: ignore[arg-type]
    held = holdings(view, account_id)
    closing = [(p, m) for p, m in held if live[MarketId(m.market_id)]]
    paused = len(closing) < len(held)
    account = existing_account(view, account_id)
    equity = account.collateral_quote + sum(
        valued_quote(p, m, live[MarketId(m.market_id)]) for p, m in held
    )
    deficit = max(0, -equity)
    insurance = get_totals(view).insurance_fund_quote
    deleverage_all = not paused and deficit > insurance
    shares = _deficit_shares(deficit, closing) if deleverage_all else [0] * len(closing)
    closed: dict[MarketId, int] = {}
    for (position, market), share in zip(closing, shares, strict=True):
        size = position.size_atoms
        price = market.oracle_price_quote
        closed[MarketId(market.market_id)] = div_floor(abs(size) * price, SIZE_SCALE)
        taker = None if deleverage_all else _take_over(view, account_id, position, market, params)
        if taker is None:
            _deleverage(view, account_id, size, market, share, events)
        events.append(
            event(
                EventKind.LIQUIDATION,
                market_id=market.market_id,
                account=account_id,
                counterparty=taker or b"",
                size_atoms=size,
                price_quote=price,
            )
        )
    account = existing_account(view, account_id)
    penalty = 0
    if not deleverage_all:
        penalty = min(
            mul_ppm(sum(closed.values()), params.liquidation_penalty_ppm, round_up=False),
            max(account.collateral_quote if not paused else equity, 0),
        )
    collateral = account.collateral_quote - penalty
    totals = get_totals(view)
    # With no position left the insurance fund covers a negative balance, as far as it goes
    # (after deleveraging, only the part the counterparties' equity could not pay).
    cover = min(-collateral, totals.insurance_fund_quote) if collateral < 0 and not paused else 0
    put_account(view, evolve(account, collateral_quote=collateral + cover))
    put_totals(
        view, evolve(totals, insurance_fund_quote=totals.insurance_fund_quote + penalty - cover)
    )
    events.append(
        event(EventKind.LIQUIDATION, account=account_id, amount_quote=penalty, extra=cover)
    )
    return closed


def _deficit_shares(deficit: int, closing: list[tuple[Position, Market]]) -> list[int]:
    """The deficit split over the positions by notional at the oracle (floored; the last one
    takes the remainder, so the shares add up exactly)."""
    notionals = [
        div_floor(abs(p.size_atoms) * m.oracle_price_quote, SIZE_SCALE) for p, m in closing
    ]
    total = sum(notionals)
    if not closing:
        return []
    if total == 0:
        return [0] * (len(closing) - 1) + [deficit]
    shares = [deficit * n // total for n in notionals[:-1]]
    return [*shares, deficit - sum(shares)]


def _take_over(
    view: Overlay, account_id: AccountId, position: Position, market: Market, params: ChainParams
) -> bytes | None:
    """The liquidator takes the position at the oracle price if that fill passes its margin
    check (then the liquidator's id), else nothing changes (None)."""
    size = position.size_atoms
    liquidator = params.liquidator
    buyer, seller = (liquidator, account_id) if size > 0 else (account_id, liquidator)
    branch = view.branch()
    fill_events: list[Event] = []
    apply_fill(
        branch,
        existing_market(branch, market.market_id),
        buyer=buyer,
        seller=seller,
        size_atoms=abs(size),
        price_quote=market.oracle_price_quote,
        events=fill_events,
    )
    if not fill_allowed(view, branch, liquidator):
        return None
    branch.merge_into(view)
    return liquidator


def _deleverage(
    view: Overlay,
    bankrupt: AccountId,
    size_atoms: int,
    market: Market,
    deficit_quote: int,
    events: list[Event],
) -> None:
    """Close the bankrupt account's `size_atoms` in `market` against opposite positions, ranked
    by `_adl_rank`, at the oracle price; each pays its share of `deficit_quote` on top (floored
    by size; the last takes the remainder), at most its equity. What no one could pay stays on
    the bankrupt account (the insurance fund covers it as far as it goes)."""
    price = market.oracle_price_quote
    sign = 1 if size_atoms > 0 else -1
    candidates = sorted(
        (
            (_adl_rank(view, p, market), p)
            for p in iter_all_positions(view)
            if p.market_id == market.market_id
            and p.account_id != bankrupt
            and (p.size_atoms > 0) != (sign > 0)
        ),
        key=lambda item: item[0],
    )
    remaining = abs(size_atoms)
    paid = 0
    carry = 0
    for (_, _, _, equity_cap), counter in candidates:
        if remaining == 0:
            break
        take = min(remaining, abs(counter.size_atoms))
        remaining -= take
        target = (
            deficit_quote - paid - carry
            if remaining == 0
            else deficit_quote * take // abs(size_atoms)
        )
        pay = max(0, min(target + carry, equity_cap))
        carry = target + carry - pay
        buyer, seller = (
            (counter.account_id, bankrupt) if sign > 0 else (bankrupt, counter.account_id)
        )
        apply_fill(
            view,
            existing_market(view, market.market_id),
            buyer=buyer,
            seller=seller,
            size_atoms=take,
            price_quote=price,
            events=events,
        )
        if pay:
            _move_quote(view, counter.account_id, bankrupt, pay)
        paid += pay
        events.append(
            event(
                EventKind.DELEVERAGED,
                market_id=market.market_id,
                account=bankrupt,
                counterparty=counter.account_id,
                size_atoms=sign * take,
                price_quote=price,
                amount_quote=pay,
            )
        )
    invariant(remaining == 0, f"deleveraging: {remaining} atoms found no opposite position")


def _adl_rank(view: Overlay, position: Position, market: Market) -> tuple[int, int, bytes, int]:
    """Sort key of a deleveraging candidate: accounts with positive equity first, then by
    unrealised profit ratio x leverage (pnl / |cost| x notional / equity, in ppm, highest
    first), then by account id; the last item is what the account can pay (its equity)."""
    net, _, _ = risk_quote(view, position.account_id)
    value = position_value_quote(position, market)
    pnl = value - position.cost_quote
    notional = abs(value)
    cost = abs(position.cost_quote)
    if net <= 0:
        return (1, 0, position.account_id, 0)
    score = pnl * notional * PPM // (max(cost, 1) * net)
    return (0, -score, position.account_id, net)


def _move_quote(view: Overlay, payer: AccountId, payee: AccountId, amount_quote: int) -> None:
    for account_id, delta in ((payer, -amount_quote), (payee, amount_quote)):
        account = existing_account(view, account_id)
        put_account(view, evolve(account, collateral_quote=account.collateral_quote + delta))
