"""Error types shared by every layer. Imports nothing from node.

- `NotCanonical`: bytes that are not the one canonical encoding of a record (bad input).
- `Reject` / `TxRejected`: a transaction refused with a stable numeric code (bad input).
- `BlockInvalid`: a foreign or replayed block is wrong; refuse it and keep running.
- `InvariantViolation`: our own bug or corrupted state; halt, never commit.
"""

from __future__ import annotations

import enum


class PerpError(Exception):
    """Base of every error perpchain raises on purpose."""


class NotCanonical(PerpError, ValueError):
    """Input bytes are not the canonical encoding (or not decodable at all)."""


class OutOfRange(PerpError, ValueError):
    """An integer lies outside the range a field or the wire allows."""


class Reject(enum.IntEnum):
    """Receipt codes in the order checks run. Append only; retired numbers stay reserved."""

    MALFORMED = 1
    BAD_SIGNATURE = 2
    BAD_NONCE = 3
    UNKNOWN_MARKET = 4
    SIZE_MUST_BE_POSITIVE = 5
    ACCOUNTS_MUST_DIFFER = 6
    UNKNOWN_ACCOUNT = 7
    INSUFFICIENT_MARGIN = 8
    UNAUTHORIZED = 9  # the signer may not send this kind of tx (bridge, oracle, operator keys)
    OFF_TICK = 10  # a price is not a multiple of the market's tick
    OFF_STEP = 11  # a size is not a multiple of the market's step
    OUT_OF_RANGE = 12  # a value beyond int64 or a parameter cap (rejected, never clamped)
    MODE_FORBIDS = 13  # the market's mode (POST_ONLY, CANCEL_ONLY, HALTED) forbids the tx
    POST_ONLY_WOULD_CROSS = 14
    REDUCE_ONLY_WOULD_GROW = 15
    DUPLICATE_CLIENT_ID = 16  # a retried submission: the first one stands
    UNKNOWN_ORDER = 17
    ORACLE_STALE = 18  # an oracle update dated at or before the market's, or after the block
    ORACLE_JUMP = 19  # a price move beyond the genesis bound in one update
    PRICE_MUST_BE_POSITIVE = 20
    INSUFFICIENT_COLLATERAL = 21  # a withdrawal beyond the free collateral
    TOO_MANY_ORDERS = 22  # per-account cap on open orders
    DUPLICATE_DEPOSIT = 23  # a bridge deposit id already credited
    BAD_PARAMETER = 24  # an operator parameter outside its allowed range
    BAD_KEY = 25  # a small-order or non-canonical Ed25519 public key (no one could sign for it)
    TX_FAILED = (
        26  # an unexpected error while applying the tx: the tx is rejected, the block goes on
    )
    PRICE_OUT_OF_BAND = 27  # a limit or worst price outside the market's band around the oracle
    REDUCE_ONLY_MUST_BE_IOC = 28  # a reduce-only order cannot rest (GTC, post-only)


# Codes a tx can get before its nonce is consumed: the stateless checks, the signature and the
# nonce itself. Every other code comes from the body, after the nonce was consumed (as a Cosmos
# SDK account's sequence advances in the ante handler): those signed bytes can never run again.
NONCE_UNUSED_CODES = frozenset(
    {Reject.MALFORMED, Reject.BAD_SIGNATURE, Reject.BAD_NONCE, Reject.BAD_KEY}
)


class TxRejected(PerpError):
    """A transaction is refused; the state is unchanged and the receipt carries `code`."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = int(code)
        self.detail = detail
        super().__init__(f"{_code_name(self.code)}: {detail}" if detail else _code_name(self.code))


def _code_name(code: int) -> str:
    try:
        return Reject(code).name
    except ValueError:
        return f"REJECT_{code}"


class BlockInvalid(PerpError):
    """A block from outside (replay, follower sync) does not verify."""


class InvariantViolation(PerpError):
    """A state invariant does not hold: never caught inside transaction processing."""


def invariant(ok: bool, message: str) -> None:
    """Raise InvariantViolation unless `ok`. Unlike `assert`, `python -O` cannot strip it."""
    if not ok:
        raise InvariantViolation(message)
