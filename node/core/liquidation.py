"""End-block risk: stop-loss / take-profit triggers, then liquidations. Imports node.core.{errors,
fixed,keys,margin,records,trading,view}.

Both pause for a market whose oracle is stale or whose mode is not OPEN (an account holding any
position in a paused market is not liquidated: its equity cannot be trusted). A liquidated
account loses its open orders; each position is taken over by the liquidator account at the
oracle price; a penalty (of the closed notional, capped at what equity is left) goes to the
insurance fund, and the insurance fund covers negative equity.
"""

from __future__ import annotations

from node.core import keys
from node.core.errors import TxRejected
from node.core.fixed import SIZE_SCALE, div_floor, mul_ppm
from node.core.funding import funding_payment_quote
from node.core.margin import position_value_quote, requirement_quote
from node.core.records import (
    AccountId,
    CancelReason,
    ChainParams,
    Event,
    EventKind,
    Market,
    MarketMode,
    Order,
    OrderKind,
    Side,
    TimeInForce,
    event,
    evolve,
)
from node.core.trading import (
    apply_fill,
    holdings,
    match_order,
    order_event,
    remove_order,
)
from node.core.view import (
    Overlay,
    get_account,
    get_market,
    get_totals,
    iter_account_order_ids,
    iter_all_positions,
    iter_markets,
    put_account,
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


def run_triggers(view: Overlay, params: ChainParams, time_ms: int, events: list[Event]) -> None:
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
            taker = evolve(order, kind=OrderKind.MARKET, tif=TimeInForce.IOC)
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


def run_liquidations(view: Overlay, params: ChainParams, time_ms: int, events: list[Event]) -> int:
    """Liquidate every account below maintenance margin; returns how many.

    One ordered pass over all positions (grouped by account, key order), markets read once:
    this scan runs every block over every open position."""
    markets = {market.market_id: market for market in iter_markets(view)}
    live = {market_id: market_live(m, params, time_ms) for market_id, m in markets.items()}
    due: list[AccountId] = []
    current: AccountId | None = None
    value = requirement = 0
    skip = False

    def close_group() -> None:
        if current is None or skip or current == params.liquidator:
            return
        account = get_account(view, current)
        assert account is not None
        if account.collateral_quote + value < requirement:
            due.append(current)

    for position in iter_all_positions(view):
        if position.account_id != current:
            close_group()
            current, value, requirement, skip = position.account_id, 0, 0, False
        market = markets[position.market_id]
        skip = skip or not live[position.market_id]
        value += position_value_quote(position, market) + funding_payment_quote(position, market)
        requirement += requirement_quote(position.size_atoms, market, market.maintenance_margin_ppm)
    close_group()
    for account_id in due:
        liquidate(view, account_id, params, events)
    return len(due)


def liquidate(
    view: Overlay, account_id: AccountId, params: ChainParams, events: list[Event]
) -> None:
    for order_id in list(iter_account_order_ids(view, account_id)):
        where = view.load(keys.order_ref(order_id), bytes)
        assert where is not None
        order = view.load(where, Order)
        assert order is not None
        remove_order(view, where, order, CancelReason.LIQUIDATED, events)
    closed_notional = 0
    for position, _ in holdings(view, account_id):
        market = get_market(view, position.market_id)
        assert market is not None
        size = position.size_atoms
        price = market.oracle_price_quote
        buyer, seller = (
            (params.liquidator, account_id) if size > 0 else (account_id, params.liquidator)
        )
        apply_fill(
            view,
            market,
            buyer=buyer,
            seller=seller,
            size_atoms=abs(size),
            price_quote=price,
            events=events,
        )
        closed_notional += div_floor(abs(size) * price, SIZE_SCALE)
        events.append(
            event(
                EventKind.LIQUIDATION,
                market_id=market.market_id,
                account=account_id,
                counterparty=params.liquidator,
                size_atoms=size,
                price_quote=price,
            )
        )
    account = get_account(view, account_id)
    assert account is not None
    penalty = min(
        mul_ppm(closed_notional, params.liquidation_penalty_ppm, round_up=False),
        max(account.collateral_quote, 0),
    )
    collateral = account.collateral_quote - penalty
    cover = -collateral if collateral < 0 else 0  # the insurance fund covers negative equity
    put_account(view, evolve(account, collateral_quote=collateral + cover))
    totals = get_totals(view)
    put_totals(
        view, evolve(totals, insurance_fund_quote=totals.insurance_fund_quote + penalty - cover)
    )
    events.append(
        event(EventKind.LIQUIDATION, account=account_id, amount_quote=penalty, extra=cover)
    )
