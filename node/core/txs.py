"""Transactions: body records, the signed envelope, hashing, signing and stateless validation.
Imports node.core.{codec,crypto,errors,fixed,records}.

A signed tx is `[0x30, kind, body, signer, signature]` where `body` is the canonical encoding of
the body record named by `kind`; the signature covers `signing_bytes(domain("tx"), chain_id,
body)`, so a tx of one chain never verifies on another and bytes signed for another purpose
(a block header) can never pass as a tx. Every body carries the signer's nonce.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from node.core import codec
from node.core.crypto import (
    SigningKey,
    check_public_key,
    domain,
    signing_bytes,
    tagged_hash,
    verify_signature,
)
from node.core.errors import NotCanonical, OutOfRange, Reject, TxRejected
from node.core.fixed import I64_MAX
from node.core.records import MarketMode, OrderKind, Side, TimeInForce

MAX_TX_BYTES = 4096
TX_DOMAIN = domain("tx")
TX_HASH_DOMAIN = domain("tx-hash")


class TxKind(enum.IntEnum):
    """Wire tags of tx bodies; append only."""

    DEPOSIT = 1
    WITHDRAW = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    CANCEL_ALL = 5
    ORACLE_UPDATE = 6
    SET_MARKET_MODE = 7
    SET_MARKET_PARAMS = 8
    RECOVERY = 9


@dataclass(frozen=True, slots=True, kw_only=True)
class Deposit:
    """Bridge credit (signed by the bridge key); `deposit_id` makes it idempotent."""

    TAG: ClassVar[int] = TxKind.DEPOSIT
    nonce: int
    account: bytes
    amount_quote: int
    deposit_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Withdraw:
    TAG: ClassVar[int] = TxKind.WITHDRAW
    nonce: int
    amount_quote: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceOrder:
    TAG: ClassVar[int] = TxKind.PLACE_ORDER
    nonce: int
    market_id: int
    side: Side
    kind: OrderKind
    tif: TimeInForce
    price_quote: int  # limit price; market / conditional: worst price, 0 = any
    size_atoms: int
    reduce_only: int  # 0 or 1
    trigger_price_quote: int  # conditional orders only
    client_id: int  # > 0, unique per account


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOrder:
    """Cancel by `order_id`, or by `client_id` when order_id is 0."""

    TAG: ClassVar[int] = TxKind.CANCEL_ORDER
    nonce: int
    order_id: int
    client_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelAll:
    """Cancel every open order of the signer; in one market when `market_id` > 0."""

    TAG: ClassVar[int] = TxKind.CANCEL_ALL
    nonce: int
    market_id: int  # 0 = all markets (market ids start at 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class PricePoint:
    TAG: ClassVar[int] = 0x31
    market_id: int
    price_quote: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OracleUpdate:
    TAG: ClassVar[int] = TxKind.ORACLE_UPDATE
    nonce: int
    time_ms: int
    prices: tuple[PricePoint, ...]  # strictly increasing market ids


@dataclass(frozen=True, slots=True, kw_only=True)
class SetMarketMode:
    TAG: ClassVar[int] = TxKind.SET_MARKET_MODE
    nonce: int
    market_id: int
    mode: MarketMode


@dataclass(frozen=True, slots=True, kw_only=True)
class SetMarketParams:
    TAG: ClassVar[int] = TxKind.SET_MARKET_PARAMS
    nonce: int
    market_id: int
    initial_margin_ppm: int
    maintenance_margin_ppm: int
    max_funding_rate_ppm: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovery:
    """Operator recovery after a rollback: cancel every resting order except stop-loss and
    take-profit orders, and put every market in CANCEL_ONLY."""

    TAG: ClassVar[int] = TxKind.RECOVERY
    nonce: int


Body = (
    Deposit
    | Withdraw
    | PlaceOrder
    | CancelOrder
    | CancelAll
    | OracleUpdate
    | SetMarketMode
    | SetMarketParams
    | Recovery
)
BODY_TYPES: dict[int, type[Any]] = {
    int(cls.TAG): cls
    for cls in (
        Deposit,
        Withdraw,
        PlaceOrder,
        CancelOrder,
        CancelAll,
        OracleUpdate,
        SetMarketMode,
        SetMarketParams,
        Recovery,
    )
}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Envelope:
    TAG: ClassVar[int] = 0x30
    kind: TxKind
    body: bytes
    signer: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedTx:
    """A decoded signed tx: the body record plus the exact bytes that were signed."""

    body: Any
    body_bytes: bytes
    signer: bytes
    signature: bytes
    raw: bytes  # canonical encoding of the whole tx
    tx_hash: bytes

    @property
    def sender(self) -> bytes:
        return self.signer

    @property
    def nonce(self) -> int:
        return int(self.body.nonce)


def tx_hash(data: bytes) -> bytes:
    return tagged_hash(TX_HASH_DOMAIN, data)


def encode_tx(tx: SignedTx) -> bytes:
    return tx.raw


def decode_tx(data: bytes) -> SignedTx:
    """Decode a signed tx; NotCanonical for anything malformed, oversize or non-canonical."""
    if type(data) is not bytes or len(data) > MAX_TX_BYTES:
        raise NotCanonical(f"a tx is bytes of at most {MAX_TX_BYTES}")
    try:
        envelope = codec.decode(data, _Envelope, max_input=MAX_TX_BYTES)
        body_type = BODY_TYPES.get(int(envelope.kind))
        if body_type is None:
            raise NotCanonical(f"unknown tx kind {envelope.kind}")
        body = codec.decode(envelope.body, body_type, max_input=MAX_TX_BYTES)
    except OutOfRange as error:  # e.g. a field of 2**63: malformed like any other bad byte
        raise NotCanonical(f"field out of range: {error}") from None
    if len(envelope.signer) != 32 or len(envelope.signature) != 64:
        raise NotCanonical("signer is 32 bytes and signature 64")
    return SignedTx(
        body=body,
        body_bytes=envelope.body,
        signer=envelope.signer,
        signature=envelope.signature,
        raw=data,
        tx_hash=tx_hash(data),
    )


def sign_tx(body: Any, key: SigningKey, chain_id: bytes) -> SignedTx:
    kind = TxKind(body.TAG)
    body_bytes = codec.encode(body)
    signature = key.sign(signing_bytes(TX_DOMAIN, chain_id, body_bytes))
    raw = codec.encode(
        _Envelope(kind=kind, body=body_bytes, signer=key.public_key, signature=signature)
    )
    return SignedTx(
        body=body,
        body_bytes=body_bytes,
        signer=key.public_key,
        signature=signature,
        raw=raw,
        tx_hash=tx_hash(raw),
    )


def check_signature(tx: SignedTx, chain_id: bytes) -> bool:
    return verify_signature(
        tx.signer, tx.signature, signing_bytes(TX_DOMAIN, chain_id, tx.body_bytes)
    )


def _nonneg(*values: int) -> bool:
    return all(0 <= value <= I64_MAX for value in values)


_RANGE_CHECKS: dict[type[Any], Callable[[Any], bool]] = {
    Deposit: lambda b: _nonneg(b.nonce, b.deposit_id) and len(b.account) == 32,
    Withdraw: lambda b: _nonneg(b.nonce),
    PlaceOrder: lambda b: (
        _nonneg(b.nonce, b.market_id, b.price_quote, b.trigger_price_quote)
        and b.reduce_only in (0, 1)
        and 0 < b.client_id <= I64_MAX
    ),
    CancelOrder: lambda b: _nonneg(b.nonce, b.order_id, b.client_id),
    CancelAll: lambda b: _nonneg(b.nonce, b.market_id),
    OracleUpdate: lambda b: (
        _nonneg(b.nonce, b.time_ms)
        and 0 < len(b.prices) <= 64
        and all(a.market_id < c.market_id for a, c in zip(b.prices, b.prices[1:], strict=False))
    ),
    SetMarketMode: lambda b: _nonneg(b.nonce, b.market_id),
    SetMarketParams: lambda b: _nonneg(
        b.nonce,
        b.market_id,
        b.initial_margin_ppm,
        b.maintenance_margin_ppm,
        b.max_funding_rate_ppm,
    ),
    Recovery: lambda b: _nonneg(b.nonce),
}


def validate_tx(tx: SignedTx, chain_id: bytes) -> None:
    """Stateless checks (mempool admission and block execution): shape, ranges, keys (the
    signer's, a deposit's account: BAD_KEY), signature; in that order of reject codes."""
    if not _RANGE_CHECKS[type(tx.body)](tx.body):
        raise TxRejected(Reject.MALFORMED, f"{type(tx.body).__name__} has fields out of shape")
    # The signer's key is checked before the signature in effect: a signature that verifies
    # implies check_public_key(signer) (crypto.verify_signature), so the pure-integer point
    # check (~0.1 ms) runs only for a signature that failed. tests/core/test_ed25519.py.
    signature_ok = check_signature(tx, chain_id)
    if not signature_ok and not check_public_key(tx.signer):
        raise TxRejected(Reject.BAD_KEY, f"signer {tx.signer.hex()[:16]} is not a valid key")
    if type(tx.body) is Deposit and not check_public_key(tx.body.account):
        raise TxRejected(Reject.BAD_KEY, f"account {tx.body.account.hex()[:16]} is not a valid key")
    if not signature_ok:
        raise TxRejected(Reject.BAD_SIGNATURE, f"signer {tx.signer.hex()[:16]}")
