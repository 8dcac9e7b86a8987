"""State records of the exchange: ids, enums and frozen records. Imports nothing from node but
node.core.fixed (scales are documented there).

Every record is a frozen, keyword-only, slotted dataclass with a wire `TAG` (append-only) and is
stored under a key of node.core.keys. Units are the last word of every field name.

Account collateral is the account's signed quote balance (dYdX v4 style): a fill moves the
notional from buyer to seller, so the sum of balances is conserved exactly and equity is
`collateral + sum(size x oracle price) + unsettled funding`. A leveraged long has a negative
balance and a positive position value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar, NewType, TypeVar

AccountId = NewType("AccountId", bytes)  # a 32-byte Ed25519 public key
MarketId = NewType("MarketId", int)
OrderId = NewType("OrderId", int)


class MarketMode(enum.IntEnum):
    OPEN = 0
    POST_ONLY = 1  # only post-only limit orders and cancels
    CANCEL_ONLY = 2  # only cancels (maintenance, staged reopen)
    HALTED = 3  # nothing but operator txs


class Side(enum.IntEnum):
    BUY = 0
    SELL = 1


class OrderKind(enum.IntEnum):
    LIMIT = 0
    MARKET = 1  # IOC at any price up to `price_quote` (0 = no limit)
    STOP_LOSS = 2  # conditional: becomes a reduce-only market order at its trigger
    TAKE_PROFIT = 3


class TimeInForce(enum.IntEnum):
    GTC = 0
    IOC = 1
    POST_ONLY = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainParams:
    """Chain-wide parameters, set at genesis (operator may change the marked ones)."""

    TAG: ClassVar[int] = 0x10
    chain_id: bytes
    bridge_key: bytes
    oracle_key: bytes
    operator_key: bytes
    producer_key: bytes
    liquidator: AccountId  # takes over liquidated positions at the oracle price
    funding_interval_ms: int  # a tick fires when time_ms // interval advances
    funding_period_ms: int  # rate_ppm is per this period: index += rate x price x dt / period
    max_funding_gap_ms: int  # a longer gap (halt, maintenance) accrues nothing
    oracle_stale_ms: int  # triggers and liquidations pause when the oracle is older
    oracle_max_jump_ppm: int  # one update may move a price at most this much
    maker_fee_ppm: int
    taker_fee_ppm: int
    liquidation_penalty_ppm: int  # of the closed notional, to the insurance fund
    max_open_orders: int  # per account, resting plus conditional
    max_order_size_atoms: int
    max_deposit_quote: int
    breaker_notional_quote: int  # more liquidated notional than this in one market and block ...
    breaker_move_ppm: int  # ... without an oracle move of at least this: the market CANCEL_ONLY
    breaker_min_notional_quote: int  # liquidations smaller than this do not count (dust)
    nonce_window: int  # a signer's nonces may arrive out of order within this window (<= 64)


@dataclass(frozen=True, slots=True, kw_only=True)
class Market:
    TAG: ClassVar[int] = 0x11
    market_id: MarketId
    symbol: bytes  # ASCII, e.g. b"BTC-USD-PERP"
    tick_quote: int  # prices are multiples of this
    step_atoms: int  # sizes are multiples of this
    initial_margin_ppm: int
    maintenance_margin_ppm: int
    max_funding_rate_ppm: int  # |rate| cap per funding period
    oracle_price_quote: int  # quote atoms per whole base unit
    oracle_time_ms: int
    funding_index_quote: int  # cumulative funding per whole base unit (longs pay when it rises)
    last_funding_ms: int
    funding_ticks: int  # entries in the funding log; the next tick's sequence number
    open_interest_atoms: int  # sum of long sizes == sum of short sizes
    mode: MarketMode
    price_band_ppm: int  # order prices and fills lie within oracle x (1 +- band)
    impact_notional_quote: int  # the funding premium uses the book's prices for this notional


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    TAG: ClassVar[int] = 0x12
    account_id: AccountId
    collateral_quote: int  # signed quote balance (see module docstring)
    open_orders: int  # resting + conditional orders, capped by max_open_orders
    markets: tuple[int, ...]  # markets where it holds a position, ascending (margin reads)


@dataclass(frozen=True, slots=True, kw_only=True)
class Nonces:
    """Replay protection per signer: nonces below `base_nonce` are used; bit i of `used_bits`
    says whether `base_nonce + 1 + i` is used (base itself is unused by definition, so a window
    of 64 needs bits 0..62 and the field always fits int64). A nonce >= base + window is too
    far ahead."""

    TAG: ClassVar[int] = 0x13
    base_nonce: int  # the lowest unused nonce
    used_bits: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    TAG: ClassVar[int] = 0x14
    account_id: AccountId
    market_id: MarketId
    size_atoms: int  # signed: long > 0; zero positions are deleted, never stored
    cost_quote: int  # signed entry notional (size x entry price), for realized PnL reports
    funding_index_quote: int  # the market index at the last settlement


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    TAG: ClassVar[int] = 0x15
    order_id: OrderId
    account_id: AccountId
    market_id: MarketId
    side: Side
    kind: OrderKind
    tif: TimeInForce
    price_quote: int  # limit price; for market/conditional orders the worst price, 0 = any
    size_atoms: int  # remaining
    reduce_only: int  # 0 or 1
    trigger_price_quote: int  # conditional orders only, else 0
    client_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FundingTick:
    """One entry of a market's Merkleized funding log."""

    TAG: ClassVar[int] = 0x16
    market_id: MarketId
    seq: int
    time_ms: int
    dt_ms: int  # 0 when the gap exceeded max_funding_gap_ms (nothing accrued)
    rate_ppm: int  # per funding period, already clamped to the cap
    price_quote: int  # the oracle price the tick used
    index_before_quote: int
    index_quote: int  # index_before + trunc(rate x price x dt / (period x PPM))


@dataclass(frozen=True, slots=True, kw_only=True)
class Totals:
    """Chain-wide balances: conservation is collateral + fee pool + insurance == net deposits."""

    TAG: ClassVar[int] = 0x17
    net_deposits_quote: int
    fee_pool_quote: int
    insurance_fund_quote: int  # also the named home of funding and liquidation residues
    next_order_id: int
    last_block_time_ms: int


class EventKind(enum.IntEnum):
    DEPOSIT = 1
    WITHDRAW = 2
    ORDER_PLACED = 3
    ORDER_CANCELLED = 4
    FILL = 5
    FUNDING_TICK = 6
    FUNDING_SETTLED = 7
    LIQUIDATION = 8
    TRIGGERED = 9
    ORACLE = 10
    MARKET_MODE = 11
    INSURANCE_COVER = 12
    PARAMS = 13
    DELEVERAGED = 14  # a bankrupt account's position closed against an opposite one (ADL)
    BREAKER = 15  # a liquidation storm without a price move: the market went CANCEL_ONLY


class CancelReason(enum.IntEnum):
    USER = 0
    SELF_TRADE = 1  # the resting order of the same account was removed (self-trade prevention)
    MAKER_MARGIN = 2  # the maker could no longer margin the fill
    LIQUIDATED = 3
    OPERATOR = 4  # operator recovery block
    REDUCE_ONLY = 5  # nothing left to reduce
    TRIGGER_FAILED = 6
    OUT_OF_BAND = 7  # a resting order's price left the band around the oracle


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """A flat event record; unused fields are 0 / b"". Fields by kind:
    FILL: market, account = taker, counterparty = maker, order_id = maker order, ref = taker
    order, size (taker side signed: + bought), price, amount = taker fee, extra = maker fee.
    LIQUIDATION, one per closed position: market, account, counterparty = liquidator, size closed
    (signed, account's side), price (the oracle); then one per liquidated account, without
    market or counterparty: amount = penalty, extra = insurance cover. FUNDING_SETTLED: amount
    paid to the holder (signed). FUNDING_TICK: ref = seq, amount = new index, extra = rate ppm.
    DELEVERAGED, one per counterparty: market, account = the bankrupt account, counterparty = the
    deleveraged one, size (bankrupt side, signed), price = the oracle, amount = what the
    counterparty paid over the oracle price (so the fill was at the bankruptcy price).
    BREAKER: market, amount = liquidated notional, extra = the oracle move in ppm."""

    TAG: ClassVar[int] = 0x20
    kind: EventKind
    market_id: int
    account: bytes
    counterparty: bytes
    order_id: int
    ref: int
    size_atoms: int
    price_quote: int
    amount_quote: int
    extra: int


R = TypeVar("R")


_UNCHANGED: Any = object()
_EVOLVERS: dict[type[Any], Any] = {}


def _make_evolver(cls: type[Any]) -> Any:
    """Generate `f(record, *, field=<unchanged>, ...)` for one record class: copies the
    record with some fields changed, without the frozen dataclass __init__."""
    names = cls.__slots__
    params = ", ".join(f"{name}=_U" for name in names)
    lines = [f"def evolve(r, *, {params}):", "    n = _new(_C)"]
    lines += [f"    _set(n, {name!r}, r.{name} if {name} is _U else {name})" for name in names]
    lines.append("    return n")
    namespace: dict[str, Any] = {
        "_U": _UNCHANGED,
        "_new": object.__new__,
        "_C": cls,
        "_set": object.__setattr__,
    }
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from the class's own fields
    return namespace["evolve"]


def evolve(record: R, **changes: Any) -> R:
    """`dataclasses.replace` for our frozen slotted records, without re-running __init__
    (several times faster; matching replaces several records per fill)."""
    cls = type(record)
    evolver = _EVOLVERS.get(cls)
    if evolver is None:
        evolver = _EVOLVERS[cls] = _make_evolver(cls)
    return evolver(record, **changes)  # type: ignore[no-any-return]


_EVENT_FIELDS = (
    "market_id",
    "account",
    "counterparty",
    "order_id",
    "ref",
    "size_atoms",
    "price_quote",
    "amount_quote",
    "extra",
)
_EVENT_DEFAULTS: dict[str, int | bytes] = {
    "market_id": 0,
    "account": b"",
    "counterparty": b"",
    "order_id": 0,
    "ref": 0,
    "size_atoms": 0,
    "price_quote": 0,
    "amount_quote": 0,
    "extra": 0,
}


def event(kind: EventKind, **fields: int | bytes) -> Event:
    """An Event with unnamed fields 0 / b"" (built without the frozen __init__: hot path)."""
    new = object.__new__(Event)
    setter = object.__setattr__
    setter(new, "kind", kind)
    for name in _EVENT_FIELDS:
        setter(new, name, fields.pop(name) if name in fields else _EVENT_DEFAULTS[name])
    if fields:
        raise TypeError(f"Event has no fields {sorted(fields)}")
    return new
