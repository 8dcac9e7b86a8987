"""JSON-RPC error objects: the one table of codes (`ErrorCode`), `RpcError`, and the helpers that
build the common ones. Imports the stdlib and node.core.errors (reject codes) only.

Application codes are stable once published; append, never renumber (docs/RPC.md).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final

from node.core.errors import Reject, TxRejected


class ErrorCode(enum.IntEnum):
    """Every error code this node sends. Append only; a published number never changes."""

    # JSON-RPC 2.0 standard codes.
    PARSE_ERROR = -32700  # body is not JSON (or too deep, or not UTF-8, duplicate keys)
    INVALID_REQUEST = -32600  # JSON, but not a valid request object / batch; or too large
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603  # our bug; details are in the node's log, never in the response
    # Application codes. 1001..1999 are `TX_REJECTED_BASE + Reject` (node.core.errors.Reject).
    TX_REJECTED_BASE = 1000
    NODE_HALTED = 2001  # an invariant failed; the node serves reads only (data.reason)
    MAINTENANCE = 2002  # maintenance mode: no txs accepted
    NOT_FOUND = 2003  # block, tx, receipt, account, market... does not exist
    HEIGHT_PRUNED = 2004  # the height asked for is older than the retained history
    DEADLINE_EXCEEDED = 2005  # the request ran longer than the per-request deadline
    SERVER_BUSY = 2006  # connection / request limit reached; retry later
    MEMPOOL_FULL = 2007  # the mempool (or this account's share of it) is full; retry later
    NOT_PRODUCING = 2008  # this node follows another and does not accept txs
    NOT_READY = 2009  # starting up / catching up
    SUBSCRIPTION_LIMIT = 2010  # too many subscriptions on this WebSocket
    UNAUTHORIZED = 2011  # admin listener: missing or wrong bearer token
    WRONG_MODE = 2012  # the command does not apply in the node's mode (data.mode)
    VERIFY_FAILED = 2013  # verification refused the state (data: differences, restore command)
    ROLLBACK_REFUSED = 2014  # a rollback cannot be done as asked


MESSAGES: Final[Mapping[int, str]] = {
    ErrorCode.PARSE_ERROR: "Parse error",
    ErrorCode.INVALID_REQUEST: "Invalid Request",
    ErrorCode.METHOD_NOT_FOUND: "Method not found",
    ErrorCode.INVALID_PARAMS: "Invalid params",
    ErrorCode.INTERNAL_ERROR: "Internal error",
    ErrorCode.NODE_HALTED: "Node halted",
    ErrorCode.MAINTENANCE: "Node in maintenance",
    ErrorCode.NOT_FOUND: "Not found",
    ErrorCode.HEIGHT_PRUNED: "Height pruned",
    ErrorCode.DEADLINE_EXCEEDED: "Deadline exceeded",
    ErrorCode.SERVER_BUSY: "Server busy",
    ErrorCode.MEMPOOL_FULL: "Mempool full",
    ErrorCode.NOT_PRODUCING: "Node does not accept transactions",
    ErrorCode.NOT_READY: "Node not ready",
    ErrorCode.SUBSCRIPTION_LIMIT: "Subscription limit reached",
    ErrorCode.UNAUTHORIZED: "Unauthorized",
    ErrorCode.WRONG_MODE: "Not in this mode",
    ErrorCode.VERIFY_FAILED: "Verification failed",
    ErrorCode.ROLLBACK_REFUSED: "Rollback refused",
}


class RpcError(Exception):
    """An error the client sees: raise it from a handler. `data` must be JSON-serializable."""

    def __init__(self, code: int, message: str | None = None, data: Any = None) -> None:
        self.code = int(code)
        self.message = message if message is not None else MESSAGES.get(self.code, "Error")
        self.data = data
        super().__init__(f"{self.code}: {self.message}")

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(message: str) -> RpcError:
    return RpcError(ErrorCode.INVALID_PARAMS, f"Invalid params: {message}")


def not_found(what: str) -> RpcError:
    """`not_found("block at height 12")` -> 2003 "Not found: block at height 12"."""
    return RpcError(ErrorCode.NOT_FOUND, f"Not found: {what}")


def tx_rejected(rejected: TxRejected) -> RpcError:
    """1000 + Reject code; the name and detail in `data` (STYLE.md section 8)."""
    try:
        name = Reject(rejected.code).name
    except ValueError:
        name = f"REJECT_{rejected.code}"
    data: dict[str, Any] = {"reject": name, "reject_code": rejected.code}
    if rejected.detail:
        data["detail"] = rejected.detail
    return RpcError(
        ErrorCode.TX_REJECTED_BASE + rejected.code, f"Transaction rejected: {name}", data
    )
