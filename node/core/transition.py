"""The state transition: `apply_tx` (one branch per tx) and `apply_block` (begin block funding,
txs in order, end block triggers and liquidations, invariants on the post-state). Imports all
of node.core; nothing outside it.

Rejection is a value: a handler raises TxRejected before anything it wrote is merged, so a
rejected tx changes nothing (not even its signer's nonce) and its receipt carries the code.
InvariantViolation is never caught here: the block is not committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from node.core import codec, keys
from node.core.blocks import BlockEnv, Receipt
from node.core.errors import BlockInvalid, InvariantViolation, NotCanonical, Reject, TxRejected
from node.core.fixed import MAX_PRICE_QUOTE, PPM
from node.core.funding import clamp_rate_ppm, index_delta_quote, premium_rate_ppm
from node.core.invariants import check_invariants
from node.core.liquidation import run_liquidations, run_triggers
from node.core.margin import equity_quote, initial_margin_quote
from node.core.records import (
    Account,
    AccountId,
    CancelReason,
    ChainParams,
    Event,
    EventKind,
    FundingTick,
    Market,
    MarketMode,
    Nonces,
    Order,
    OrderId,
    OrderKind,
    Side,
    TimeInForce,
    event,
    evolve,
)
from node.core.steps import Steps, drive
from node.core.trading import (
    add_order,
    band_quote,
    best_order,
    can_rest,
    existing_market,
    holdings,
    impact_price_quote,
    match_order,
    remove_order,
    require_account,
    rests,
)
from node.core.txs import (
    CancelAll,
    CancelOrder,
    Deposit,
    OracleUpdate,
    PlaceOrder,
    Recovery,
    SetMarketMode,
    SetMarketParams,
    SignedTx,
    Withdraw,
    decode_tx,
    tx_hash,
    validate_tx,
)
from node.core.view import (
    Overlay,
    StateReader,
    get_account,
    get_market,
    get_nonces,
    get_order,
    get_params,
    get_position,
    get_totals,
    iter_account_order_ids,
    iter_markets,
    put_account,
    put_market,
    put_nonces,
    put_totals,
)


@dataclass(frozen=True, slots=True)
class BlockResult:
    writes: tuple[tuple[bytes, bytes | None], ...]  # sorted by key
    receipts: tuple[Receipt, ...]
    events: tuple[Event, ...]  # begin- and end-block events
    liquidations: int
    # (tx hash, error) of each TX_FAILED receipt: not consensus data, for the node's log
    failures: tuple[tuple[bytes, str], ...] = ()


Handler = Callable[[Overlay, Any, bytes, BlockEnv, ChainParams], list[Event]]
ENCODE_STEP = 256  # records encoded between two yields of apply_block_steps


def _authorized(signer: bytes, expected: bytes) -> None:
    if signer != expected:
        raise TxRejected(Reject.UNAUTHORIZED, f"signer {signer.hex()[:16]}")


def _require_market(view: Overlay, market_id: int) -> Market:
    market = get_market(view, market_id)
    if market is None:
        raise TxRejected(Reject.UNKNOWN_MARKET, f"market_id={market_id}")
    return market


def apply_deposit(
    view: Overlay, body: Deposit, signer: bytes, env: BlockEnv, params: ChainParams
) -> list[Event]:
    _authorized(signer, params.bridge_key)
    if body.amount_quote <= 0:
        raise TxRejected(Reject.SIZE_MUST_BE_POSITIVE, f"amount_quote={body.amount_quote}")
    if body.amount_quote > params.max_deposit_quote:
        raise TxRejected(Reject.OUT_OF_RANGE, f"amount_quote={body.amount_quote} over the cap")
    if view.load(keys.deposit(body.deposit_id), bytes) is not None:
        raise TxRejected(Reject.DUPLICATE_DEPOSIT, f"deposit_id={body.deposit_id}")
    account_id = AccountId(body.account)
    account = get_account(view, account_id) or Account(
        account_id=account_id, collateral_quote=0, open_orders=0, markets=()
    )
    put_account(
        view, evolve(account, collateral_quote=account.collateral_quote + body.amount_quote)
    )
    view.put(keys.deposit(body.deposit_id), b"")
    totals = get_totals(view)
    put_totals(
        view, evolve(totals, net_deposits_quote=totals.net_deposits_quote + body.amount_quote)
    )
    return [
        event(
            EventKind.DEPOSIT,
            account=account_id,
            amount_quote=body.amount_quote,
            ref=body.deposit_id,
        )
    ]


def apply_withdraw(
    view: Overlay, body: Withdraw, signer: bytes, env: BlockEnv, params: ChainParams
) -> list[Event]:
    account = require_account(view, signer)
    if body.amount_quote <= 0:
        raise TxRejected(Reject.SIZE_MUST_BE_POSITIVE, f"amount_quote={body.amount_quote}")
    held = holdings(view, account.account_id, account)
    for _, market in held:
        if env.time_ms - market.oracle_time_ms > params.oracle_stale_ms:
            # The margin check below values positions at the oracle: a stale price could let
            # collateral out that a fresh one would show is needed.
            raise TxRejected(
                Reject.ORACLE_STALE, f"market {market.symbol.decode()} has a stale oracle price"
            )
    equity = equity_quote(account, held)
    if body.amount_quote > equity:
        raise TxRejected(
            Reject.INSUFFICIENT_COLLATERAL,
            f"amount_quote={body.amount_quote} > equity_quote={equity}",
        )
    if equity - body.amount_quote < initial_margin_quote(held):
        raise TxRejected(Reject.INSUFFICIENT_MARGIN, "withdrawal would leave the account under IM")
    after = evolve(account, collateral_quote=account.collateral_quote - body.amount_quote)
    put_account(view, after)
    totals = get_totals(view)
    put_totals(
        view, evolve(totals, net_deposits_quote=totals.net_deposits_quote - body.amount_quote)
    )
    return [event(EventKind.WITHDRAW, account=signer, amount_quote=body.amount_quote)]


def apply_place_order(
    view: Overlay, body: PlaceOrder, signer: bytes, env: BlockEnv, params: ChainParams
) -> list[Event]:
    account = require_account(view, signer)
    market = _require_market(view, body.market_id)
    if body.size_atoms <= 0:
        raise TxRejected(Reject.SIZE_MUST_BE_POSITIVE, f"size_atoms={body.size_atoms}")
    if body.size_atoms > params.max_order_size_atoms:
        raise TxRejected(Reject.OUT_OF_RANGE, f"size_atoms={body.size_atoms} over the cap")
    if body.size_atoms % market.step_atoms:
        raise TxRejected(Reject.OFF_STEP, f"size_atoms={body.size_atoms} step={market.step_atoms}")
    conditional = body.kind in (OrderKind.STOP_LOSS, OrderKind.TAKE_PROFIT)
    if body.kind == OrderKind.LIMIT and body.price_quote <= 0:
        raise TxRejected(Reject.PRICE_MUST_BE_POSITIVE, f"price_quote={body.price_quote}")
    if conditional and body.trigger_price_quote <= 0:
        raise TxRejected(Reject.PRICE_MUST_BE_POSITIVE, "a conditional order needs a trigger price")
    for price in (body.price_quote, body.trigger_price_quote):
        if price % market.tick_quote:
            raise TxRejected(Reject.OFF_TICK, f"price {price} tick={market.tick_quote}")
    if body.kind != OrderKind.LIMIT and body.tif == TimeInForce.POST_ONLY:
        raise TxRejected(Reject.MALFORMED, "only limit orders can be post-only")
    _check_band(body, market, conditional)
    if body.reduce_only and body.kind == OrderKind.LIMIT and body.tif != TimeInForce.IOC:
        # A reduce-only order never rests: the position it reduces can shrink under it.
        raise TxRejected(Reject.REDUCE_ONLY_MUST_BE_IOC, f"tif={TimeInForce(body.tif).name}")
    if market.mode in (MarketMode.CANCEL_ONLY, MarketMode.HALTED) or (
        market.mode == MarketMode.POST_ONLY
        and not (body.kind == OrderKind.LIMIT and body.tif == TimeInForce.POST_ONLY)
    ):
        raise TxRejected(
            Reject.MODE_FORBIDS, f"market {market.symbol.decode()} is {market.mode.name}"
        )
    client_key = keys.client_id(account.account_id, body.client_id)
    if view.load(client_key, bytes) is not None:
        raise TxRejected(Reject.DUPLICATE_CLIENT_ID, f"client_id={body.client_id}")
    may_rest = conditional or (body.kind == OrderKind.LIMIT and body.tif != TimeInForce.IOC)
    if may_rest and account.open_orders >= params.max_open_orders:
        raise TxRejected(Reject.TOO_MANY_ORDERS, f"open_orders={account.open_orders}")
    if body.reduce_only and not conditional:
        position = get_position(view, account.account_id, market.market_id)
        size = 0 if position is None else position.size_atoms
        reducible = -size if body.side == Side.BUY else size
        if reducible < body.size_atoms:
            raise TxRejected(
                Reject.REDUCE_ONLY_WOULD_GROW, f"position {size}, order {body.size_atoms}"
            )
    totals = get_totals(view)
    order = Order(
        order_id=OrderId(totals.next_order_id),
        account_id=account.account_id,
        market_id=market.market_id,
        side=body.side,
        kind=body.kind,
        tif=TimeInForce.IOC if body.kind == OrderKind.MARKET else body.tif,
        price_quote=body.price_quote,
        size_atoms=body.size_atoms,
        reduce_only=1 if conditional else body.reduce_only,  # TP/SL only ever reduce
        trigger_price_quote=body.trigger_price_quote if conditional else 0,
        client_id=body.client_id,
    )
    put_totals(view, evolve(totals, next_order_id=totals.next_order_id + 1))
    view.put(client_key, order.order_id.to_bytes(8, "big"))
    events = [
        event(
            EventKind.ORDER_PLACED,
            market_id=order.market_id,
            account=order.account_id,
            order_id=order.order_id,
            ref=order.client_id,
            size_atoms=order.size_atoms if order.side == Side.BUY else -order.size_atoms,
            price_quote=order.price_quote,
        )
    ]
    if conditional:
        add_order(view, order)
        return events
    if order.tif == TimeInForce.POST_ONLY:
        opposite = best_order(
            view, market.market_id, Side.SELL if order.side == Side.BUY else Side.BUY
        )
        if opposite is not None and (
            opposite[1].price_quote <= order.price_quote
            if order.side == Side.BUY
            else opposite[1].price_quote >= order.price_quote
        ):
            raise TxRejected(Reject.POST_ONLY_WOULD_CROSS, f"best {opposite[1].price_quote}")
    remaining, stopped_early = match_order(view, order, params, events)
    # A remainder rests only if it would not cross: matching can stop early (the taker's margin
    # ran out), and a crossed book must never be stored (tests/sim found this one).
    crossing = False
    if remaining and stopped_early:
        opposite = best_order(
            view, market.market_id, Side.SELL if order.side == Side.BUY else Side.BUY
        )
        crossing = opposite is not None and (
            opposite[1].price_quote <= order.price_quote
            if order.side == Side.BUY
            else opposite[1].price_quote >= order.price_quote
        )
    if remaining and rests(order) and not order.reduce_only and not crossing:
        resting = evolve(order, size_atoms=remaining)
        if not can_rest(view, resting):
            raise TxRejected(Reject.INSUFFICIENT_MARGIN, "cannot margin the resting order")
        add_order(view, resting)
    return events


def _check_band(body: PlaceOrder, market: Market, conditional: bool) -> None:
    """A limit price lies within the band around the oracle; a conditional order's worst price
    (0 = any) within the band around its trigger. A market order's worst price is clipped to
    the band when it matches (node.core.trading), so it is not refused here."""
    if body.price_quote > MAX_PRICE_QUOTE or body.trigger_price_quote > MAX_PRICE_QUOTE:
        raise TxRejected(Reject.OUT_OF_RANGE, f"a price above {MAX_PRICE_QUOTE}")
    if body.kind == OrderKind.MARKET or (conditional and body.price_quote == 0):
        return
    reference = body.trigger_price_quote if conditional else market.oracle_price_quote
    low, high = band_quote(market, reference)
    if not low <= body.price_quote <= high:
        raise TxRejected(
            Reject.PRICE_OUT_OF_BAND,
            f"price_quote={body.price_quote} outside [{low}, {high}] around {reference}",
        )


def _owned_order(view: Overlay, account_id: bytes, order_id: int) -> tuple[bytes, Order]:
    found = get_order(view, order_id)
    if found is None or found[1].account_id != account_id:
        raise TxRejected(Reject.UNKNOWN_ORDER, f"order_id={order_id}")
    return found


def apply_cancel_order(
    view: Overlay, body: CancelOrder, signer: bytes, env: BlockEnv, params: ChainParams
) -> list[Event]:
    account = require_account(view, signer)
    order_id = body.order_id
    if order_id == 0:
        raw = view.load(keys.client_id(account.account_id, body.client_id), bytes)
        if raw is None:
            raise TxRejected(Reject.UNKNOWN_ORDER, f"client_id={body.client_id}")
        order_id = int.from_bytes(raw, "big")
    where, order = _owned_order(view, signer, order_id)
    market = existing_market(view, order.market_id)
    if market.mode == MarketMode.HALTED:
        raise TxRejected(Reject.MODE_FORBIDS, f"market {market.symbol.decode()} is HALTED")
    events: list[Event] = []
    remove_order(view, where, order, CancelReason.USER, events)
    return events


def apply_cancel_all(
    view: Overlay, body: CancelAll, signer: bytes, env: BlockEnv, params: ChainParams
) -> list[Event]:
    account = require_account(view, signer)
    if body.market_id:
        _require_market(view, body.market_id)
    events: list[Event] = []
    for order_id in list(iter_account_order_ids(view, account.account_id)):
        where, order = _owned_order(view, signer, order_id)
        if body.market_id and order.market_id != body.market_id:
            continue
        market = existing_market(view, order.market_id)
        if market.mode != MarketMode.HALTED:
            remove_order(view, where, order, CancelReason.USER, events)
    return events


def apply_oracle_update(
    view: Overlay, body: OracleUpdate, signer: bytes, env: BlockEnv, params: ChainParams
) -> list[Event]:
    _authorized(signer, params.oracle_key)
    if body.time_ms > env.time_ms:
        raise TxRejected(Reject.ORACLE_STALE, f"time_ms={body.time_ms} is after the block")
    events = []
    for point in body.prices:
        market = _require_market(view, point.market_id)
        if point.price_quote <= 0:
            raise TxRejected(Reject.PRICE_MUST_BE_POSITIVE, f"market {point.market_id}")
        if body.time_ms <= market.oracle_time_ms:
            raise TxRejected(
                Reject.ORACLE_STALE, f"time_ms={body.time_ms} <= {market.oracle_time_ms}"
            )
        if point.price_quote > MAX_PRICE_QUOTE:
            raise TxRejected(Reject.OUT_OF_RANGE, f"price_quote={point.price_quote}")
        # The cap holds per block, against the price at the block's start: several updates in
        # one block cannot add up to more than one move.
        start = view.base_load(keys.market(market.market_id), Market)
        old = market.oracle_price_quote if start is None else start.oracle_price_quote
        if abs(point.price_quote - old) * PPM > old * params.oracle_max_jump_ppm:
            raise TxRejected(
                Reject.ORACLE_JUMP, f"{old} at the block's start -> {point.price_quote}"
            )
        put_market(
            view, evolve(market, oracle_price_quote=point.price_quote, oracle_time_ms=body.time_ms)
        )
        events.append(
            event(EventKind.ORACLE, market_id=point.market_id, price_quote=point.price_quote)
        )
    return events


def apply_set_market_mode(
    view: Overlay, body: SetMarketMode, signer: bytes, env: BlockEnv, params: ChainParams
) -> list[Event]:
    _authorized(signer, params.operator_key)
    market = _require_market(view, body.market_id)
    put_market(view, evolve(market, mode=body.mode))
    return [event(EventKind.MARKET_MODE, market_id=market.market_id, ref=body.mode)]


def apply_set_market_params(
    view: Overlay, body: SetMarketParams, signer: bytes, env: BlockEnv, params: ChainParams
) -> list[Event]:
    _authorized(signer, params.operator_key)
    market = _require_market(view, body.market_id)
    if not (
        0 < body.maintenance_margin_ppm < body.initial_margin_ppm <= PPM
        and 0 <= body.max_funding_rate_ppm <= PPM
    ):
        raise TxRejected(Reject.BAD_PARAMETER, "need 0 < mmf < imf <= 1e6 and 0 <= cap <= 1e6")
    put_market(
        view,
        evolve(
            market,
            initial_margin_ppm=body.initial_margin_ppm,
            maintenance_margin_ppm=body.maintenance_margin_ppm,
            max_funding_rate_ppm=body.max_funding_rate_ppm,
        ),
    )
    return [event(EventKind.PARAMS, market_id=market.market_id)]


def apply_recovery(
    view: Overlay, body: Recovery, signer: bytes, env: BlockEnv, params: ChainParams
) -> list[Event]:
    """Cancel every resting order (TP/SL conditional orders survive); markets CANCEL_ONLY."""
    _authorized(signer, params.operator_key)
    events: list[Event] = []
    for where, order in list(view.iter_records(keys.BOOK, Order)):
        remove_order(view, where, order, CancelReason.OPERATOR, events)
    for market in list(iter_markets(view)):
        put_market(view, evolve(market, mode=MarketMode.CANCEL_ONLY))
        events.append(
            event(EventKind.MARKET_MODE, market_id=market.market_id, ref=MarketMode.CANCEL_ONLY)
        )
    return events


HANDLERS: dict[type[Any], Handler] = {
    Deposit: apply_deposit,
    Withdraw: apply_withdraw,
    PlaceOrder: apply_place_order,
    CancelOrder: apply_cancel_order,
    CancelAll: apply_cancel_all,
    OracleUpdate: apply_oracle_update,
    SetMarketMode: apply_set_market_mode,
    SetMarketParams: apply_set_market_params,
    Recovery: apply_recovery,
}


def use_nonce(nonces: Nonces, nonce: int, window: int) -> Nonces:
    """The signer's nonces with `nonce` used; BAD_NONCE for a replay or one too far ahead.

    `used` has bit i for base + i (bit 0, the base, is never set once normalised); the stored
    field drops that always-zero bit, so offsets up to 63 (a window of 64) fit int64."""
    offset = nonce - nonces.base_nonce
    used = nonces.used_bits << 1
    if offset < 0 or offset >= window or (used >> offset) & 1:
        raise TxRejected(Reject.BAD_NONCE, f"nonce={nonce} base={nonces.base_nonce}")
    used |= 1 << offset
    base = nonces.base_nonce
    while used & 1:
        used >>= 1
        base += 1
    return Nonces(base_nonce=base, used_bits=used >> 1)


def apply_tx(
    view: Overlay,
    tx: SignedTx,
    env: BlockEnv,
    params: ChainParams,
    *,
    verify_signatures: bool,
    failures: list[tuple[bytes, str]] | None = None,
) -> Receipt:
    """Apply one tx; its receipt records the code.

    Two stages. The stateless checks, the signature and the nonce: a tx refused there changes
    nothing (NONCE_UNUSED_CODES). Then the nonce is consumed and the body runs in a branch: a
    body refused with a code, or one that raises anything but InvariantViolation (a bug or an
    input nothing foresaw: TX_FAILED, described in `failures` for the node's log), changes
    nothing else, and those signed bytes can never be applied again. InvariantViolation and
    MemoryError propagate: the first is our state being wrong, the second is this machine's,
    and neither may become a receipt another node would not write."""
    try:
        if verify_signatures:
            validate_tx(tx, params.chain_id)
        nonces = use_nonce(get_nonces(view, tx.signer), tx.nonce, params.nonce_window)
    except TxRejected as rejected:
        return Receipt(tx_hash=tx.tx_hash, code=rejected.code, events=())
    put_nonces(view, tx.signer, nonces)
    branch = view.branch()
    try:
        events = HANDLERS[type(tx.body)](branch, tx.body, tx.signer, env, params)
        check_branch_fits(branch)
    except TxRejected as rejected:
        return Receipt(tx_hash=tx.tx_hash, code=rejected.code, events=())
    except (InvariantViolation, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - one tx's failure must not stop the chain
        if failures is not None:
            failures.append((tx.tx_hash, f"{type(error).__name__}: {error}"[:500]))
        return Receipt(tx_hash=tx.tx_hash, code=Reject.TX_FAILED, events=())
    branch.merge_into(view)
    return Receipt(tx_hash=tx.tx_hash, code=0, events=tuple(events))


def check_branch_fits(branch: Overlay) -> None:
    """Every record a tx wrote fits its encoding (int64 fields): OUT_OF_RANGE otherwise, so an
    overflow is this tx's rejection and never the block's failure to encode."""
    for value in branch.pending_values():
        if value is not None and type(value) is not bytes and not codec.fits(value):
            raise TxRejected(Reject.OUT_OF_RANGE, f"{type(value).__name__} beyond int64")


_CLOSED = (MarketMode.CANCEL_ONLY, MarketMode.HALTED)


def begin_block(view: Overlay, env: BlockEnv, params: ChainParams) -> list[Event]:
    """Funding ticks due by the block time, each appended to the market's funding log."""
    totals = get_totals(view)
    put_totals(view, evolve(totals, last_block_time_ms=env.time_ms))
    events: list[Event] = []
    interval = params.funding_interval_ms
    for market in list(iter_markets(view)):
        if env.time_ms // interval <= market.last_funding_ms // interval:
            continue
        dt_ms = env.time_ms - market.last_funding_ms
        price = market.oracle_price_quote
        if dt_ms > params.max_funding_gap_ms or market.mode in _CLOSED:
            # A gap (halt, maintenance) accrues nothing, nor does a market closed to trading
            # (CANCEL_ONLY after maintenance or a rollback, HALTED): no one can trade it.
            dt_ms, rate_ppm = 0, 0
        else:
            rate_ppm = clamp_rate_ppm(
                premium_rate_ppm(
                    impact_price_quote(view, market, Side.BUY),
                    impact_price_quote(view, market, Side.SELL),
                    price,
                ),
                market.max_funding_rate_ppm,
            )
        index = market.funding_index_quote + index_delta_quote(
            rate_ppm, price, dt_ms, params.funding_period_ms
        )
        tick = FundingTick(
            market_id=market.market_id,
            seq=market.funding_ticks,
            time_ms=env.time_ms,
            dt_ms=dt_ms,
            rate_ppm=rate_ppm,
            price_quote=price,
            index_before_quote=market.funding_index_quote,
            index_quote=index,
        )
        view.put(keys.funding_tick(market.market_id, tick.seq), tick)
        put_market(
            view,
            evolve(
                market,
                funding_index_quote=index,
                last_funding_ms=env.time_ms,
                funding_ticks=market.funding_ticks + 1,
            ),
        )
        events.append(
            event(
                EventKind.FUNDING_TICK,
                market_id=market.market_id,
                ref=tick.seq,
                amount_quote=index,
                extra=rate_ppm,
                price_quote=price,
            )
        )
    return events


def apply_block(
    reader: StateReader,
    env: BlockEnv,
    txs: Sequence[SignedTx],
    *,
    verify_signatures: bool = True,
    invariants: bool = True,
    full_scan: bool = True,
) -> BlockResult:
    """The block's write set, receipts and events, computed over the state after h-1.

    Raises BlockInvalid for a block of another chain and InvariantViolation when the
    post-state breaks an invariant (nothing may be committed then). `invariants=False` exists
    for tests and the incident drill only: a node passes it only when built with the test-only
    fault injection (node.commands.FaultCommands), which a production config refuses.
    `full_scan=False` checks the per-market invariants only (check_invariants)."""
    return drive(
        apply_block_steps(
            reader,
            env,
            txs,
            verify_signatures=verify_signatures,
            invariants=invariants,
            full_scan=full_scan,
        )
    )


def apply_block_steps(
    reader: StateReader,
    env: BlockEnv,
    txs: Sequence[SignedTx],
    *,
    verify_signatures: bool = True,
    invariants: bool = True,
    full_scan: bool = True,
) -> Steps[BlockResult]:
    """apply_block as a generator that yields after each tx and each end-block phase and
    returns the BlockResult: the same computation, so a caller may interleave other work
    between the steps (the producer answers reads on its event loop) without threads.
    Nothing outside the block's own Overlay changes between steps."""
    view = Overlay(reader)
    params = get_params(view)
    if env.chain_id != params.chain_id:
        raise BlockInvalid(f"block of chain {env.chain_id!r} applied to {params.chain_id!r}")
    block_events = begin_block(view, env, params)
    receipts = []
    failures: list[tuple[bytes, str]] = []
    for tx in txs:
        receipts.append(
            apply_tx(view, tx, env, params, verify_signatures=verify_signatures, failures=failures)
        )
        yield None
    run_triggers(view, params, env.time_ms, block_events)
    yield None
    liquidations = run_liquidations(view, params, env.time_ms, block_events)
    yield None
    if invariants:
        check_invariants(Overlay(reader), view, env, full=full_scan)
        yield None
    writes = []
    for position, pair in enumerate(view.iter_writes()):
        writes.append(pair)
        if position % ENCODE_STEP == ENCODE_STEP - 1:
            yield None
    return BlockResult(
        tuple(writes), tuple(receipts), tuple(block_events), liquidations, tuple(failures)
    )


def decode_block_txs(tx_bytes: Sequence[bytes]) -> list[SignedTx | Receipt]:
    """Each tx decoded, or a MALFORMED receipt for bytes that are not a canonical tx."""
    out: list[SignedTx | Receipt] = []
    for raw in tx_bytes:
        try:
            out.append(decode_tx(raw))
        except NotCanonical:
            out.append(Receipt(tx_hash=tx_hash(raw), code=Reject.MALFORMED, events=()))
    return out


def apply_block_bytes(
    reader: StateReader, env: BlockEnv, tx_bytes: Sequence[bytes], *, verify_signatures: bool = True
) -> BlockResult:
    """apply_block over raw tx bytes; undecodable txs get MALFORMED receipts in place."""
    decoded = decode_block_txs(tx_bytes)
    good = [item for item in decoded if isinstance(item, SignedTx)]
    result = apply_block(reader, env, good, verify_signatures=verify_signatures)
    applied = iter(result.receipts)
    receipts = tuple(next(applied) if isinstance(item, SignedTx) else item for item in decoded)
    return BlockResult(result.writes, receipts, result.events, result.liquidations, result.failures)
