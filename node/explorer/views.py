"""The explorer's view models: what each page shows, read through the node's public JSON-RPC
handlers (in process, a fixed list of read methods: `READ_METHODS`) and, for what the public
RPC has no method for, through the same read functions of the store and node.ops (recent
blocks' events, checkpoints, the maintenance window, forks and their compensation report).
Nothing here writes: there is no handle to the mempool, the writer or the admin table.
Imports node.core, node.store, node.ops, node.rpc (the method table and its errors).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Any

import trio

from node.chain.producer import ChainStatus, event_json
from node.core.errors import Reject
from node.core.genesis import Genesis
from node.core.txs import decode_tx
from node.explorer.history import BlockHistory
from node.explorer.peers import PeerWatch
from node.lane import WorkLane
from node.ops.checkpoints import list_checkpoints
from node.ops.incident import CompensationReport, IncidentError, compensation_report
from node.rpc.jsonrpc import ErrorCode, MethodTable, RpcError
from node.store import VersionedStore, blocks_db

# The public methods the explorer may call: reads only (tx_submit is not among them, and the
# admin table is never given to it). tests/explorer/test_routes.py pins the list.
READ_METHODS = frozenset(
    {
        "node_status",
        "chain_getBlock",
        "chain_getReceipt",
        "chain_getRollbacks",
        "perp_getMarkets",
        "perp_getMarket",
        "perp_getAccount",
        "perp_getNonce",
        "perp_getOrderBook",
        "perp_getFundingHistory",
        "tx_status",
    }
)
HEX32 = re.compile(r"[0-9a-fA-F]{64}")
SYMBOL = re.compile(r"[A-Za-z0-9._-]{1,64}")
LATEST_BLOCKS = 20
BOOK_DEPTH = 20
FUNDING_POINTS = 500
LISTED_FILLS = 50
MAX_BLOCK_TXS_LISTED = 500  # a block page lists its first 500 txs (a block holds up to 20,000)


class NotFound(Exception):
    """404: the message says what was looked for."""


class BadRequest(Exception):
    """400: the message names the parameter and the rule."""


class ReadOnlyRpc:
    """The read handlers of the public method table, called in process with the same params
    (and the same checks and limits) as over JSON-RPC."""

    def __init__(self, table: MethodTable) -> None:
        self.handlers = {name: table.get(name) for name in sorted(READ_METHODS)}

    async def call(self, method: str, **params: Any) -> Any:
        handler = self.handlers.get(method)
        if handler is None:
            raise PermissionError(f"{method} is not a read method of the explorer")
        try:
            return await handler(params)
        except RpcError as error:
            if error.code in (ErrorCode.NOT_FOUND, ErrorCode.HEIGHT_PRUNED):
                raise NotFound(error.message) from None
            if error.code == ErrorCode.INVALID_PARAMS:
                raise BadRequest(error.message) from None
            raise


def code_name(code: int) -> str:
    if code == 0:
        return "OK"
    try:
        return Reject(code).name
    except ValueError:
        return f"REJECT_{code}"


def _field_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, tuple):
        return ", ".join(str(_field_value(v)) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return " ".join(
            f"{f.name}={_field_value(getattr(value, f.name))}" for f in dataclasses.fields(value)
        )
    return value


def tx_fields(raw_hex: str) -> tuple[str, list[tuple[str, Any]]]:
    """(kind, [(field, value)]) of a signed tx's body, decoded from its canonical bytes."""
    tx = decode_tx(bytes.fromhex(raw_hex))
    body = tx.body
    return type(body).__name__, [
        (f.name, _field_value(getattr(body, f.name))) for f in dataclasses.fields(body)
    ]


class Views:
    def __init__(
        self,
        *,
        rpc: ReadOnlyRpc,
        store: VersionedStore,
        genesis: Genesis,
        status: ChainStatus,
        peers: PeerWatch | None = None,
        lane: WorkLane | None = None,
    ) -> None:
        self.rpc = rpc
        self.store = store
        self.genesis = genesis
        self.status = status
        self.peers = peers
        self.history = BlockHistory(store, lane=lane)
        self._reports: dict[int, CompensationReport | str] = {}
        self._report_lock = trio.Lock()

    # --- shared ---------------------------------------------------------------------------

    async def chain(self) -> dict[str, Any]:
        """node_status plus the recent pace: block interval and tx/s over the latest blocks."""
        status = await self.rpc.call("node_status")
        latest = await self.history.latest(LATEST_BLOCKS)
        interval_ms = tx_per_s = None
        if len(latest) >= 2:
            span_ms = latest[0].time_ms - latest[-1].time_ms
            if span_ms > 0:
                interval_ms = span_ms // (len(latest) - 1)
                txs = sum(b.txs for b in latest[:-1])
                tx_per_s = f"{txs * 1000 / span_ms:.1f}"
        return {
            **status,
            "block_time_ms": str(latest[0].time_ms) if latest else None,
            "interval_ms": interval_ms,
            "tx_per_s": tx_per_s,
        }

    async def symbols(self) -> dict[str, str]:
        """market id (decimal string) -> symbol."""
        return {m["market_id"]: m["market"] for m in await self.rpc.call("perp_getMarkets")}

    async def latest_json(self) -> list[dict[str, str]]:
        return [
            {
                "height": str(b.height),
                "hash": b.hash,
                "time_ms": str(b.time_ms),
                "txs": str(b.txs),
                "rejected": str(b.rejected),
            }
            for b in await self.history.latest(LATEST_BLOCKS)
        ]

    def peer_states(self) -> list[dict[str, Any]]:
        if self.peers is None:
            return []
        return [state.to_json() for state in self.peers.states.values()]

    # --- pages ----------------------------------------------------------------------------

    async def overview(self) -> dict[str, Any]:
        return {
            "blocks": await self.history.latest(LATEST_BLOCKS),
            "markets": await self.rpc.call("perp_getMarkets"),
            "peers": self.peer_states(),
        }

    async def blocks(self, below: int | None) -> dict[str, Any]:
        blocks = await self.history.latest(50, below=below)
        return {"blocks": blocks, "next_below": blocks[-1].height if blocks else None}

    async def block(self, ref: str) -> dict[str, Any]:
        if ref.isascii() and ref.isdigit() and len(ref) <= 18:
            block = await self.rpc.call("chain_getBlock", height=int(ref), full_txs=True)
        elif HEX32.fullmatch(ref):
            block = await self.rpc.call("chain_getBlock", hash=ref.lower(), full_txs=True)
        else:
            raise BadRequest("a block is a height (digits) or a block hash (64 hex digits)")
        height = int(block["header"]["height"])
        receipts = blocks_db.get_receipts(self.store, height)  # as chain_getReceipt reads them
        txs = []
        for position, item in enumerate(block["txs"][:MAX_BLOCK_TXS_LISTED]):
            receipt = receipts.receipts[position] if receipts is not None else None
            kind, fields = tx_fields(item["raw"])
            code = receipt.code if receipt is not None else 0
            txs.append(
                item
                | {
                    "code_name": code_name(code),
                    "events": [event_json(e) for e in receipt.events] if receipt else [],
                    "body": fields,
                    "kind": kind,
                }
            )
        return {
            "header": block["header"],
            "txs": txs,
            "tx_count": len(block["txs"]),
            "block_events": block["block_events"],
        }

    async def tx(self, tx_hash: str) -> dict[str, Any]:
        if not HEX32.fullmatch(tx_hash):
            raise BadRequest("a tx hash is 64 hex digits")
        status = await self.rpc.call("tx_status", tx_hash=tx_hash.lower())
        if status["status"] == "unknown":
            raise NotFound(f"Not found: tx {tx_hash.lower()}")
        out: dict[str, Any] = {"status": status, "tx": None}
        if "height" in status:
            block = await self.rpc.call(
                "chain_getBlock", height=int(status["height"]), full_txs=True
            )
            item = block["txs"][int(status["index"])]
            kind, fields = tx_fields(item["raw"])
            out["tx"] = item | {"kind": kind, "body": fields}
            out["header"] = block["header"]
        return out

    async def markets(self) -> dict[str, Any]:
        return {"markets": await self.rpc.call("perp_getMarkets")}

    async def market(self, symbol: str) -> dict[str, Any]:
        if not SYMBOL.fullmatch(symbol):
            raise BadRequest("a market is a symbol such as BTC-USD-PERP or an id")
        market = await self.rpc.call("perp_getMarket", market=symbol)
        book = await self.rpc.call("perp_getOrderBook", market=symbol, depth=BOOK_DEPTH)
        funding = await self.rpc.call("perp_getFundingHistory", market=symbol, limit=FUNDING_POINTS)
        fills = await self.market_fills(market["market_id"])
        last = funding[-1] if funding else None
        return {
            "market": market,
            "book": book,
            "funding": funding[-20:][::-1],
            "funding_points": len(funding),
            "funding_rate_ppm": last["rate_ppm"] if last else None,
            "fills": fills,
            "window": self.history.window,
            "symbols": await self.symbols(),
        }

    async def market_fills(self, market_id: str) -> list[dict[str, Any]]:
        """The market's fills in the scanned blocks, newest first (at most LISTED_FILLS)."""
        events = await self.history.events(market_id=market_id)
        return [e for e in events if e["kind"] == "fill"][:LISTED_FILLS]

    async def account_events(self, address: str) -> dict[str, Any]:
        """The account's fills, liquidations, deleveragings and funding settlements in the
        scanned blocks, newest first, and the funding it paid there (quote atoms)."""
        events = await self.history.events(account=address)
        fills = [e for e in events if e["kind"] in ("fill", "liquidation", "deleveraged")]
        funding = [e for e in events if e["kind"] == "funding_settled" and e["account"] == address]
        return {
            "fills": fills[:LISTED_FILLS],
            "funding": funding[:LISTED_FILLS],
            "funding_paid_quote": str(-sum(int(e["amount_quote"]) for e in funding)),
        }

    async def events_json(self, *, market: str | None, account: str | None) -> dict[str, Any]:
        """/events.json?market=ID or ?account=HEX: what the market and account pages list."""
        if market is not None and account is None:
            if not (market.isascii() and market.isdigit() and len(market) <= 10):
                raise BadRequest("market must be a market id (digits)")
            return {"fills": await self.market_fills(str(int(market)))}
        if account is not None and market is None:
            if not HEX32.fullmatch(account):
                raise BadRequest("account must be 64 hex digits")
            return await self.account_events(account.lower())
        raise BadRequest("give one of market or account")

    async def account(self, address: str) -> dict[str, Any]:
        if not HEX32.fullmatch(address):
            raise BadRequest("an address is 64 hex digits (the account's Ed25519 public key)")
        address = address.lower()
        account = await self.rpc.call("perp_getAccount", address=address)
        nonce = await self.rpc.call("perp_getNonce", address=address)
        return {
            "account": account,
            "nonce": nonce,
            "symbols": await self.symbols(),
            **await self.account_events(address),
            "unsettled_funding_quote": sum(
                int(p["unsettled_funding"]) for p in account["positions"]
            ),
            "window": self.history.window,
        }

    async def operations(self) -> dict[str, Any]:
        checkpoints = [c.to_json() for c in list_checkpoints(self.store)]
        window = self.store.maintenance()
        return {
            "checkpoints": checkpoints,
            # Every `maintenance begin` pins pre-maintenance-<height> (DESIGN.md 4): the pins
            # are the history of the windows, the open one is the stored marker.
            "maintenances": [c for c in checkpoints if c["name"].startswith("pre-maintenance-")],
            "window": window,
            "rollbacks": self._rollbacks(await self.rpc.call("chain_getRollbacks")),
        }

    def _rollbacks(self, listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        archived = {str(f.fork_id): f for f in self.store.forks()}
        out = []
        for item in listed:
            fork = archived.get(item["fork_id"])
            out.append(
                item
                | {
                    "archived": fork is not None,
                    "first_reverted": str(int(item["to_height"]) + 1),
                    "reverted_blocks": str(int(item["from_height"]) - int(item["to_height"])),
                }
            )
        return out

    async def report(self, fork_id: int) -> CompensationReport:
        """The compensation report of an archived fork: computed once, in a worker thread (it
        replays the reverted blocks), then kept (an archived fork never changes)."""
        async with self._report_lock:
            found = self._reports.get(fork_id)
            if found is None:
                if fork_id not in {f.fork_id for f in self.store.forks()}:
                    raise NotFound(f"Not found: fork {fork_id} (no archive on this node)")
                try:
                    found = await trio.to_thread.run_sync(compensation_report, self.store, fork_id)
                except IncidentError as error:
                    found = f"the report cannot be made: {error}"
                self._reports[fork_id] = found
        if isinstance(found, str):
            raise NotFound(found)
        return found

    async def fork(self, fork_id: int) -> dict[str, Any]:
        report = await self.report(fork_id)
        rows = report.csv_rows()
        notices = {r["fork_id"]: r for r in await self.rpc.call("chain_getRollbacks")}
        return {
            "report": report,
            "fork": report.fork,
            "notice": notices.get(str(fork_id)),
            "summary": report.summary,
            "columns": rows[0],
            "rows": rows[1:],
            "totals": report.totals,
            "report_hash": report.report_hash,
            "symbols": await self.symbols(),
        }

    async def search(self, query: str) -> str | None:
        """The page a query names: a height, a block hash, a tx hash, an address or a market
        symbol; None when nothing matches."""
        text = query.strip()
        if text.isascii() and text.isdigit() and len(text) <= 18:
            return f"/block/{int(text)}" if int(text) <= self.store.height else None
        if HEX32.fullmatch(text):
            value = text.lower()
            if blocks_db.height_of_hash(self.store, bytes.fromhex(value)) is not None:
                return f"/block/{value}"
            status = await self.rpc.call("tx_status", tx_hash=value)
            if status["status"] != "unknown":
                return f"/tx/{value}"
            try:
                await self.rpc.call("perp_getAccount", address=value)
            except NotFound:
                return None
            return f"/account/{value}"
        if SYMBOL.fullmatch(text):
            for market in await self.rpc.call("perp_getMarkets"):
                if market["market"].lower() == text.lower():
                    return f"/market/{market['market']}"
        return None
