"""The state key layout: one prefix byte per record kind. Imports node.core.records.

Integers in keys are fixed-width big-endian so byte order is numeric order; a resting order's
key sorts in book priority (best price first, then arrival), so matching reads the book with one
ordered prefix scan.

    P                                   ChainParams
    T                                   Totals
    M + market:u32                      Market
    A + account:32                      Account
    N + signer:32                       Nonces
    Q + account:32 + market:u32         Position (account's positions, in market order)
    B + market:u32 + side:u8 + price_key:u64 + order:u64   resting Order (price_key: ask = price,
                                        bid = 2^63 - 1 - price, so both sides sort best first)
    O + order:u64                       -> the order's book or trigger key (cancel by id)
    C + account:32 + client:u64         -> order id (client ids are unique per account, forever)
    R + account:32 + order:u64          (empty) the account's open orders
    G + market:u32 + order:u64          conditional (stop-loss / take-profit) Order
    F + market:u32 + seq:u64            FundingTick (the funding log)
    D + deposit_id:u64                  (empty) bridge deposits already credited
"""

from __future__ import annotations

import struct

from node.core.records import AccountId, MarketId, Side

PARAMS = b"P"
TOTALS = b"T"
MARKET = b"M"
ACCOUNT = b"A"
NONCES = b"N"
POSITION = b"Q"
BOOK = b"B"
ORDER_REF = b"O"
CLIENT_ID = b"C"
ACCOUNT_ORDER = b"R"
TRIGGER = b"G"
FUNDING = b"F"
DEPOSIT = b"D"

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_BID_FLIP = 2**63 - 1


def market(market_id: MarketId) -> bytes:
    return MARKET + _U32.pack(market_id)


def account(account_id: AccountId) -> bytes:
    return ACCOUNT + account_id


def nonces(signer: bytes) -> bytes:
    return NONCES + signer


def position(account_id: AccountId, market_id: MarketId) -> bytes:
    return POSITION + account_id + _U32.pack(market_id)


def positions_of(account_id: AccountId) -> bytes:
    return POSITION + account_id


def book_side(market_id: MarketId, side: Side) -> bytes:
    return BOOK + _U32.pack(market_id) + bytes((side,))


def book_order(market_id: MarketId, side: Side, price_quote: int, order_id: int) -> bytes:
    price_key = price_quote if side == Side.SELL else _BID_FLIP - price_quote
    return book_side(market_id, side) + _U64.pack(price_key) + _U64.pack(order_id)


def order_ref(order_id: int) -> bytes:
    return ORDER_REF + _U64.pack(order_id)


def client_id(account_id: AccountId, client: int) -> bytes:
    return CLIENT_ID + account_id + _U64.pack(client)


def account_order(account_id: AccountId, order_id: int) -> bytes:
    return ACCOUNT_ORDER + account_id + _U64.pack(order_id)


def account_orders(account_id: AccountId) -> bytes:
    return ACCOUNT_ORDER + account_id


def trigger(market_id: MarketId, order_id: int) -> bytes:
    return TRIGGER + _U32.pack(market_id) + _U64.pack(order_id)


def triggers_of(market_id: MarketId) -> bytes:
    return TRIGGER + _U32.pack(market_id)


def funding_tick(market_id: MarketId, seq: int) -> bytes:
    return FUNDING + _U32.pack(market_id) + _U64.pack(seq)


def funding_log(market_id: MarketId) -> bytes:
    return FUNDING + _U32.pack(market_id)


def deposit(deposit_id: int) -> bytes:
    return DEPOSIT + _U64.pack(deposit_id)


def u64_at(key: bytes, offset: int) -> int:
    return int(_U64.unpack_from(key, offset)[0])


def u32_at(key: bytes, offset: int) -> int:
    return int(_U32.unpack_from(key, offset)[0])


def describe(key: bytes) -> str:
    """A human name for a state key, for diagnostics (`verify`, follower halts)."""
    if not key:
        return "empty key"
    kind, rest = key[:1], key[1:]
    try:
        if kind == PARAMS:
            return "chain params"
        if kind == TOTALS:
            return "totals"
        if kind == MARKET:
            return f"market #{u32_at(rest, 0)}"
        if kind == ACCOUNT:
            return f"account {rest.hex()[:16]}"
        if kind == NONCES:
            return f"nonces of {rest.hex()[:16]}"
        if kind == POSITION:
            return f"position {rest[:32].hex()[:16]} market #{u32_at(rest, 32)}"
        if kind == BOOK:
            side = "bid" if rest[4] == Side.BUY else "ask"
            return f"order #{u64_at(rest, 13)} ({side}, market #{u32_at(rest, 0)})"
        if kind == ORDER_REF:
            return f"order ref #{u64_at(rest, 0)}"
        if kind == CLIENT_ID:
            return f"client id {u64_at(rest, 32)} of {rest[:32].hex()[:16]}"
        if kind == ACCOUNT_ORDER:
            return f"open order #{u64_at(rest, 32)} of {rest[:32].hex()[:16]}"
        if kind == TRIGGER:
            return f"conditional order #{u64_at(rest, 4)} (market #{u32_at(rest, 0)})"
        if kind == FUNDING:
            return f"funding tick {u64_at(rest, 4)} of market #{u32_at(rest, 0)}"
        if kind == DEPOSIT:
            return f"deposit #{u64_at(rest, 0)}"
    except (struct.error, IndexError):
        pass
    return f"unknown key {key.hex()}"
