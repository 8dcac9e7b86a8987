"""Invariants checked on the post-state of every block before anything may commit. Imports
node.core.{blocks,errors,fixed,funding,keys,records,view}.

Each violation raises InvariantViolation naming the invariant, the market or account, and the
values. This is the check that stops the motivating incident: a funding index that moved
outside a tick (e.g. reset to zero by a migration writing around the writer) no longer equals
the last entry of the market's funding log, and the block is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.core import keys
from node.core.errors import invariant
from node.core.fixed import PPM
from node.core.funding import index_delta_quote
from node.core.records import FundingTick, Market, MarketId, Order, Side, Totals
from node.core.view import (
    Overlay,
    get_params,
    get_totals,
    iter_accounts,
    iter_all_positions,
    iter_markets,
)

if TYPE_CHECKING:
    from node.core.blocks import BlockEnv


def _name(market: Market) -> str:
    return market.symbol.decode("ascii", "replace")


def check_funding(pre: Market | None, post: Market, period_ms: int, view: Overlay) -> None:
    """The index moves only by the ticks of this block, each within the cap in force when it
    ran (the pre-block one: ticks run at the block's start, and a parameter change in the block
    applies from the next tick), and equals the last entry of the funding log."""
    name = _name(post)
    cap_ppm = (pre or post).max_funding_rate_ppm
    first_new = 0 if pre is None else pre.funding_ticks
    invariant(
        post.funding_ticks >= first_new,
        f"funding: market {name} funding log shrank from {first_new} to {post.funding_ticks}",
    )
    index = 0 if pre is None else pre.funding_index_quote
    if pre is not None and first_new > 0:
        last = view.load(keys.funding_tick(post.market_id, first_new - 1), FundingTick)
        invariant(
            last is not None and last.index_quote == pre.funding_index_quote,
            f"funding: market {name} funding_index {pre.funding_index_quote} before this block "
            f"is not the funding log's {None if last is None else last.index_quote}",
        )
    for seq in range(first_new, post.funding_ticks):
        tick = view.load(keys.funding_tick(post.market_id, seq), FundingTick)
        if tick is None:
            invariant(False, f"funding: market {name} tick {seq} missing from the log")
            return
        derived = index + index_delta_quote(tick.rate_ppm, tick.price_quote, tick.dt_ms, period_ms)
        invariant(
            abs(tick.rate_ppm) <= cap_ppm,
            f"funding: market {name} tick {seq} rate {tick.rate_ppm} ppm beyond cap {cap_ppm}",
        )
        invariant(
            tick.index_before_quote == index and tick.index_quote == derived,
            f"funding: market {name} tick {seq} index {tick.index_quote} does not re-derive "
            f"(before {tick.index_before_quote}, expected {index} -> {derived})",
        )
        index = derived
    invariant(
        post.funding_index_quote == index,
        f"funding: market {name} funding_index moved outside a funding tick: "
        f"stored {post.funding_index_quote}, funding log {index}",
    )


def check_invariants(pre: Overlay, post: Overlay, env: BlockEnv, *, full: bool = True) -> None:
    """Raise InvariantViolation if the post-state breaks an invariant. Every block: time,
    insurance, each market's funding index (the incident), oracle price and uncrossed book.
    `full` adds the scans over every position and account: open interest, each account's
    markets, no debt without a position, conservation of quote (`invariant_scan_blocks` spaces
    them out). The liquidation breaker is a market rule now (node.core.liquidation), not a halt."""
    params = get_params(post)
    pre_totals = get_totals(pre)
    totals = get_totals(post)
    invariant(
        env.time_ms > pre_totals.last_block_time_ms,
        f"time: block time {env.time_ms} does not increase past {pre_totals.last_block_time_ms}",
    )
    invariant(
        totals.insurance_fund_quote >= 0,
        f"insurance: insurance fund is negative: {totals.insurance_fund_quote}",
    )

    markets: dict[MarketId, Market] = {}
    for market in iter_markets(post):
        markets[market.market_id] = market
        before = pre.load(keys.market(market.market_id), Market)
        check_funding(before, market, params.funding_period_ms, post)
        invariant(
            market.oracle_price_quote > 0,
            f"oracle: market {_name(market)} oracle price {market.oracle_price_quote} <= 0",
        )
        if before is not None:
            move_ppm = abs(market.oracle_price_quote - before.oracle_price_quote) * PPM
            invariant(
                move_ppm <= before.oracle_price_quote * params.oracle_max_jump_ppm,
                f"oracle: market {_name(market)} moved {before.oracle_price_quote} -> "
                f"{market.oracle_price_quote} in one block, beyond the cap",
            )
        bid = post.first(keys.book_side(market.market_id, Side.BUY), Order)
        ask = post.first(keys.book_side(market.market_id, Side.SELL), Order)
        invariant(
            bid is None or ask is None or bid[1].price_quote < ask[1].price_quote,
            f"book: market {_name(market)} is crossed: bid "
            f"{None if bid is None else bid[1].price_quote} >= ask "
            f"{None if ask is None else ask[1].price_quote}",
        )

    if full:
        _check_positions_and_accounts(post, totals, markets)


def _check_positions_and_accounts(
    post: Overlay, totals: Totals, markets: dict[MarketId, Market]
) -> None:
    longs: dict[int, int] = {}
    shorts: dict[int, int] = {}
    held: dict[bytes, list[int]] = {}
    for position in iter_all_positions(post):
        invariant(
            position.size_atoms != 0,
            f"positions: zero position stored for {position.account_id.hex()[:16]}",
        )
        invariant(
            position.market_id in markets,
            f"positions: position in unknown market {position.market_id}",
        )
        held.setdefault(position.account_id, []).append(position.market_id)
        book = longs if position.size_atoms > 0 else shorts
        book[position.market_id] = book.get(position.market_id, 0) + abs(position.size_atoms)
    for market_id, market in sorted(markets.items()):
        long_atoms, short_atoms = longs.get(market_id, 0), shorts.get(market_id, 0)
        invariant(
            long_atoms == short_atoms == market.open_interest_atoms,
            f"open interest: market {_name(market)} longs {long_atoms}, shorts {short_atoms}, "
            f"open_interest {market.open_interest_atoms}",
        )

    total_quote = totals.fee_pool_quote + totals.insurance_fund_quote
    for account in iter_accounts(post):
        total_quote += account.collateral_quote
        invariant(account.open_orders >= 0, f"orders: {account.account_id.hex()[:16]} count < 0")
        invariant(
            account.collateral_quote >= 0 or bool(account.markets),
            f"debt: account {account.account_id.hex()[:16]} holds no position and has "
            f"collateral {account.collateral_quote} < 0",
        )
        invariant(
            list(account.markets) == held.get(account.account_id, []),
            f"positions: account {account.account_id.hex()[:16]} lists markets "
            f"{list(account.markets)}, holds {held.get(account.account_id, [])}",
        )
    difference = total_quote - totals.net_deposits_quote
    invariant(
        difference == 0,
        f"conservation: collateral + fee pool + insurance = {total_quote}, "
        f"net deposits = {totals.net_deposits_quote} (difference {difference})",
    )
