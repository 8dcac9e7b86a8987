"""The JSON-RPC method tables of a node: public reads, tx submission, admin commands. Imports
node.core (types, queries), node.store reads, node.chain (submit/status only), node.rpc.jsonrpc.

Integers are decimal strings in atoms; bytes are lowercase hex; names are snake_case.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from node.chain.mempool import Mempool, MempoolFull
from node.chain.producer import ChainStatus, event_json, header_json
from node.chain.remote import RemoteCallError, RemoteUnavailable
from node.core import merkle, queries
from node.core.blocks import encode_notice, header_hash
from node.core.errors import NONCE_UNUSED_CODES, Reject, TxRejected
from node.core.genesis import Genesis
from node.core.records import Market, MarketMode, Order
from node.core.txs import decode_tx
from node.core.view import Overlay, get_nonces, get_params
from node.rpc.jsonrpc import (
    ErrorCode,
    MethodTable,
    RpcError,
    bool_param,
    check_params,
    hex_param,
    int_param,
    invalid_params,
    not_found,
    str_param,
    tx_rejected,
)
from node.store import HeightUnavailable, VersionedStore, blocks_db


class Commands(Protocol):
    """Operator commands, executed by the writer (never by the RPC handler itself)."""

    def halt(self, reason: str) -> None: ...

    def resume(self) -> None: ...

    def set_market_mode(self, market_id: int, mode: MarketMode) -> str: ...

    async def maintenance_begin(self, reason: str) -> dict[str, Any]: ...

    async def maintenance_end(self, expect_root: bytes | None) -> dict[str, Any]: ...

    async def rollback(
        self, *, to_height: int | None, to_checkpoint: str | None, dry_run: bool, reason: str
    ) -> dict[str, Any]: ...

    async def maintenance_job(self, kind: str) -> dict[str, Any]: ...

    async def checkpoint_create(
        self, name: str, *, height: int | None, reason: str
    ) -> dict[str, Any]: ...

    def checkpoint_list(self) -> list[dict[str, Any]]: ...

    async def checkpoint_delete(self, name: str) -> dict[str, Any]: ...


@dataclass
class NodeContext:
    store: VersionedStore
    genesis: Genesis
    status: ChainStatus
    mempool: Mempool | None  # None on a follower
    commands: Commands | None
    # A follower forwards tx_submit to its source: raw hex -> the source's result.
    forward_tx: Callable[[str], Awaitable[Any]] | None = None
    # TEST-ONLY (the drill): set only on a devnet/test node with testing.fault_injection;
    # admin_injectFault exists only then (node.commands.FaultCommands).
    inject_fault: Callable[[str], Awaitable[Any]] | None = None


MAX_MARKET_ID = 2**32 - 1  # market ids are u32 in the state keys (node.core.keys)
_ASCII_DIGITS = re.compile(r"[0-9]+")
_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # node.ops.checkpoints.NAME_PATTERN
RAW_BLOCKS_MAX_COUNT = 200
RAW_BLOCKS_MAX_BYTES = 4 << 20  # per call; at least one block is always returned


def _s(value: int) -> str:
    return str(value)


def _maintenance_json(window: Any) -> dict[str, str] | None:
    """node_status's `maintenance`: the open window (node.store.Maintenance) or None."""
    if window is None:
        return None
    return {
        "reason": window.reason,
        "checkpoint": window.checkpoint,
        "epoch": _s(window.epoch),
        "height": _s(window.height),
    }


def market_json(market: Market, reader: Any) -> dict[str, Any]:
    bids, asks = queries.book_levels(reader, market.market_id, 1)
    return {
        "market": market.symbol.decode(),
        "market_id": _s(market.market_id),
        "tick_quote": _s(market.tick_quote),
        "step_atoms": _s(market.step_atoms),
        "initial_margin_ppm": _s(market.initial_margin_ppm),
        "maintenance_margin_ppm": _s(market.maintenance_margin_ppm),
        "max_funding_rate_ppm": _s(market.max_funding_rate_ppm),
        "oracle_price": _s(market.oracle_price_quote),
        "oracle_time_ms": _s(market.oracle_time_ms),
        "funding_index": _s(market.funding_index_quote),
        "last_funding_ms": _s(market.last_funding_ms),
        "funding_ticks": _s(market.funding_ticks),
        "open_interest": _s(market.open_interest_atoms),
        "mode": market.mode.name,
        "best_bid": _s(bids[0][0]) if bids else None,
        "best_ask": _s(asks[0][0]) if asks else None,
    }


def order_json(order: Order) -> dict[str, Any]:
    return {
        "order_id": _s(order.order_id),
        "market_id": _s(order.market_id),
        "side": order.side.name.lower(),
        "kind": order.kind.name.lower(),
        "tif": order.tif.name.lower(),
        "price": _s(order.price_quote),
        "size": _s(order.size_atoms),
        "reduce_only": bool(order.reduce_only),
        "trigger_price": _s(order.trigger_price_quote),
        "client_id": _s(order.client_id),
    }


def build_tables(ctx: NodeContext) -> tuple[MethodTable, MethodTable]:
    public = MethodTable()
    admin = MethodTable()
    store = ctx.store

    def resolve_market(params: dict[str, Any]) -> Market:
        """`market`: an id (integer, or a string of ASCII digits) or a symbol (any other
        string). `str.isdigit()` would take "²" for an id: ASCII only."""
        value = params.get("market")
        if type(value) is str and not _ASCII_DIGITS.fullmatch(value):
            name = str_param(params, "market", max_len=64)
            found = queries.market_by_symbol(store, name)
            what = ascii(name)
        else:
            market_id = int_param(params, "market", max_value=MAX_MARKET_ID)
            found = queries.market(store, market_id)
            what = str(market_id)
        if found is None:
            raise not_found(f"market {what}")
        return found

    @public.method("node_status")
    async def node_status(params: dict[str, Any]) -> Any:
        check_params(params, ())
        head = ctx.status.head
        return {
            "chain_id": ctx.genesis.chain_id.decode(),
            "height": _s(store.height),
            "head_hash": header_hash(head).hex() if head else None,
            "state_root": store.root().hex(),
            "mode": ctx.status.mode,
            "halt_reason": ctx.status.halt_reason or None,
            "maintenance": _maintenance_json(ctx.status.maintenance),
            "mempool_size": _s(len(ctx.mempool)) if ctx.mempool is not None else "0",
            "committed_txs": _s(ctx.status.committed_txs),
            "producer": ctx.genesis.producer_key.hex(),
            "source": ctx.status.source or None,
            "source_height": _s(ctx.status.source_height) if ctx.status.source else None,
        }

    @public.method("chain_getBlock")
    async def get_block(params: dict[str, Any]) -> Any:
        check_params(params, ("height", "hash", "full_txs"))
        height = int_param(params, "height", default=None)
        block_hash = hex_param(params, "hash", default=None, length=32)
        full = bool_param(params, "full_txs", default=False)
        if (height is None) == (block_hash is None):
            raise invalid_params("give exactly one of height or hash")
        if block_hash is not None:
            height = blocks_db.height_of_hash(store, block_hash)
            if height is None:
                raise not_found(f"block {block_hash.hex()}")
        block = blocks_db.get_block(store, height)
        if block is None:
            raise not_found(f"block at height {height}")
        receipts = blocks_db.get_receipts(store, height)
        txs: list[Any] = []
        for position, raw in enumerate(block.txs):
            tx = decode_tx(raw)
            if not full:
                txs.append(tx.tx_hash.hex())
                continue
            receipt = receipts.receipts[position] if receipts else None
            txs.append(
                {
                    "tx_hash": tx.tx_hash.hex(),
                    "kind": type(tx.body).__name__,
                    "signer": tx.signer.hex(),
                    "nonce": _s(tx.nonce),
                    "raw": raw.hex(),
                    "code": _s(receipt.code) if receipt else None,
                }
            )
        return {
            "header": header_json(block.header),
            "txs": txs,
            "block_events": [event_json(e) for e in receipts.block_events] if receipts else [],
        }

    @public.method("chain_getRawBlocks")
    async def get_raw_blocks(params: dict[str, Any]) -> Any:
        """Canonical block bytes from `from_height`, for followers: up to `count` blocks or
        RAW_BLOCKS_MAX_BYTES, whichever comes first, stopping at the head."""
        check_params(params, ("from_height", "count"))
        start = int_param(params, "from_height", min_value=0)
        count = int_param(params, "count", default=50, min_value=1, max_value=RAW_BLOCKS_MAX_COUNT)
        blocks: list[str] = []
        size = 0
        for height in range(start, min(start + count, store.height + 1)):
            raw = store.record(height, blocks_db.BLOCK)
            if raw is None:
                if not blocks:
                    raise RpcError(ErrorCode.HEIGHT_PRUNED, f"block {height} is not retained")
                break
            blocks.append(raw.hex())
            size += len(raw)
            if size >= RAW_BLOCKS_MAX_BYTES:
                break
        return {"from_height": _s(start), "head": _s(store.height), "blocks": blocks}

    def receipt_json(tx_hash: bytes) -> dict[str, Any] | None:
        location = blocks_db.locate_tx(store, tx_hash)
        if location is None:
            return None
        height, position = location
        receipts = blocks_db.get_receipts(store, height)
        if receipts is None:
            raise RpcError(ErrorCode.INTERNAL_ERROR, f"no receipts record at height {height}")
        receipt = receipts.receipts[position]
        try:
            name = Reject(receipt.code).name if receipt.code else "OK"
        except ValueError:
            name = f"REJECT_{receipt.code}"
        return {
            "tx_hash": tx_hash.hex(),
            "height": _s(height),
            "index": _s(position),
            "code": _s(receipt.code),
            "code_name": name,
            # A tx past its signature and nonce checks used its nonce, even if its body was
            # rejected: those signed bytes can never be applied again (docs/PROTOCOL.md).
            "nonce_used": receipt.code not in NONCE_UNUSED_CODES,
            "events": [event_json(e) for e in receipt.events],
        }

    @public.method("chain_getReceipt")
    async def get_receipt(params: dict[str, Any]) -> Any:
        check_params(params, ("tx_hash",))
        tx_hash = hex_param(params, "tx_hash", length=32)
        found = receipt_json(tx_hash)
        if found is None:
            raise not_found(f"receipt of {tx_hash.hex()}")
        return found

    @public.method("chain_getProof")
    async def get_proof(params: dict[str, Any]) -> Any:
        check_params(params, ("key", "height"))
        key = hex_param(params, "key", max_bytes=256)
        height = int_param(params, "height", default=store.height)
        if not key:
            raise invalid_params("key must not be empty")
        try:
            value = store.get(key, height)
            proof = store.prove(key, height)
            root = store.root(height)
        except HeightUnavailable as error:
            raise RpcError(ErrorCode.HEIGHT_PRUNED, str(error)) from None
        if not merkle.verify_proof(root, key, value, proof):  # our store is wrong: say so
            raise RpcError(ErrorCode.INTERNAL_ERROR, "the proof does not verify against the root")
        return {
            "key": key.hex(),
            "value": None if value is None else value.hex(),
            "proof": proof.hex(),
            "root": root.hex(),
            "height": _s(height),
        }

    @public.method("perp_getMarkets")
    async def get_markets(params: dict[str, Any]) -> Any:
        check_params(params, ())
        return [market_json(m, store) for m in queries.markets(store)]

    @public.method("perp_getMarket")
    async def get_market(params: dict[str, Any]) -> Any:
        check_params(params, ("market",))
        return market_json(resolve_market(params), store)

    @public.method("perp_getAccount")
    async def get_account(params: dict[str, Any]) -> Any:
        check_params(params, ("address",))
        address = hex_param(params, "address", length=32)
        summary = queries.account_summary(store, address)
        if summary is None:
            raise not_found(f"account {address.hex()}")
        account = summary["account"]
        return {
            "address": address.hex(),
            "collateral": _s(account.collateral_quote),
            "equity": _s(summary["equity_quote"]),
            "initial_margin": _s(summary["initial_margin_quote"]),
            "maintenance_margin": _s(summary["maintenance_margin_quote"]),
            "positions": [
                {
                    "market": p["market"],
                    "market_id": _s(p["market_id"]),
                    "size": _s(p["size_atoms"]),
                    "cost": _s(p["cost_quote"]),
                    "unsettled_funding": _s(p["unsettled_funding_quote"]),
                }
                for p in summary["positions"]
            ],
            "open_orders": [order_json(o) for o in summary["orders"]],
        }

    @public.method("perp_getNonce")
    async def get_nonce(params: dict[str, Any]) -> Any:
        check_params(params, ("address",))
        address = hex_param(params, "address", length=32)
        view = Overlay(store)
        nonces = get_nonces(view, address)
        window = get_params(view).nonce_window
        used = [
            _s(nonces.base_nonce + 1 + bit)
            for bit in range(window - 1)
            if (nonces.used_bits >> bit) & 1
        ]
        # next_nonce is the lowest unused one; nonces up to next_nonce + window - 1 are
        # accepted in any order, except those already used (a second signer of the same key
        # picks a free one: perpchain tx does).
        return {
            "address": address.hex(),
            "next_nonce": _s(nonces.base_nonce),
            "window": _s(window),
            "used": used,
        }

    @public.method("perp_getOrderBook")
    async def get_book(params: dict[str, Any]) -> Any:
        check_params(params, ("market", "depth"))
        market = resolve_market(params)
        depth = int_param(params, "depth", default=20, min_value=1, max_value=500)
        bids, asks = queries.book_levels(store, market.market_id, depth)
        return {
            "market": market.symbol.decode(),
            "height": _s(store.height),
            "bids": [[_s(p), _s(s)] for p, s in bids],
            "asks": [[_s(p), _s(s)] for p, s in asks],
        }

    @public.method("perp_getFundingHistory")
    async def get_funding(params: dict[str, Any]) -> Any:
        check_params(params, ("market", "limit"))
        market = resolve_market(params)
        limit = int_param(params, "limit", default=100, min_value=1, max_value=1000)
        ticks = queries.funding_history(store, market.market_id)[-limit:]
        return [
            {
                "seq": _s(t.seq),
                "time_ms": _s(t.time_ms),
                "dt_ms": _s(t.dt_ms),
                "rate_ppm": _s(t.rate_ppm),
                "price": _s(t.price_quote),
                "funding_index": _s(t.index_quote),
            }
            for t in ticks
        ]

    @public.prefetch("tx_submit")
    async def tx_submit_prefetch(batch: list[dict[str, Any]]) -> None:
        # The signatures of a whole batch checked in the admission process, in one hand-off.
        if ctx.mempool is None or ctx.status.mode != "producing":
            return
        raws = []
        for params in batch:
            try:
                raws.append(hex_param(params, "tx", max_bytes=1 << 16))
            except RpcError:
                continue  # its handler answers the error
        await ctx.mempool.precheck(raws)

    @public.method("tx_submit")
    async def tx_submit(params: dict[str, Any]) -> Any:
        check_params(params, ("tx",))
        raw = hex_param(params, "tx", max_bytes=1 << 16)
        if ctx.mempool is None and ctx.forward_tx is not None:
            try:
                return await ctx.forward_tx(raw.hex())
            except RemoteCallError as error:  # the source's own answer, unchanged
                raise RpcError(error.code, error.message, error.data) from None
            except RemoteUnavailable as error:
                raise RpcError(ErrorCode.NOT_READY, f"source unavailable: {error}") from None
        if ctx.mempool is None:
            raise RpcError(ErrorCode.NOT_PRODUCING, "this node does not produce blocks")
        if ctx.status.mode == "halted":
            raise RpcError(ErrorCode.NODE_HALTED, f"node halted: {ctx.status.halt_reason}")
        if ctx.status.mode == "maintenance":
            raise RpcError(ErrorCode.MAINTENANCE, "maintenance: no transactions accepted")
        try:
            # Signature and decoding were pre-checked in the admission process for a batch
            # (tx_submit_prefetch); what is left is the nonce window and the caps.
            tx = ctx.mempool.add(raw)
        except TxRejected as rejected:
            raise tx_rejected(rejected) from None
        except MempoolFull as full:
            raise RpcError(ErrorCode.MEMPOOL_FULL, str(full)) from None
        # `accepted` says what the answer promises (docs/RPC.md, "What tx_submit promises").
        journal = ctx.mempool.journal
        if journal is not None:
            await journal.sync_for_answer()
        return {"tx_hash": tx.tx_hash.hex(), "accepted": ctx.mempool.accepted}

    @public.method("tx_status")
    async def tx_status(params: dict[str, Any]) -> Any:
        check_params(params, ("tx_hash",))
        tx_hash = hex_param(params, "tx_hash", length=32)
        found = receipt_json(tx_hash)
        if found is not None:
            status = "committed" if found["code"] == "0" else "rejected"
            return {"status": status, **found}
        if ctx.mempool is not None and tx_hash in ctx.mempool:
            return {"status": "pending", "tx_hash": tx_hash.hex()}
        return {"status": "unknown", "tx_hash": tx_hash.hex()}

    def commands() -> Commands:
        if ctx.commands is None:
            raise RpcError(ErrorCode.NOT_PRODUCING, "no writer on this node")
        return ctx.commands

    @admin.method("admin_halt")
    async def admin_halt(params: dict[str, Any]) -> Any:
        check_params(params, ("reason",))
        reason = str_param(params, "reason", default="operator halt")
        commands().halt(f"operator: {reason}")
        return {"mode": ctx.status.mode}

    @admin.method("admin_resume")
    async def admin_resume(params: dict[str, Any]) -> Any:
        check_params(params, ())
        commands().resume()
        return {"mode": ctx.status.mode}

    @admin.method("admin_setMarketMode")
    async def admin_set_mode(params: dict[str, Any]) -> Any:
        check_params(params, ("market", "mode"))
        market = resolve_market(params)
        mode = str_param(params, "mode", choices=[m.name for m in MarketMode])
        tx_hash = commands().set_market_mode(market.market_id, MarketMode[mode])
        return {"tx_hash": tx_hash}

    @admin.method("admin_maintenanceBegin")
    async def admin_maintenance_begin(params: dict[str, Any]) -> Any:
        check_params(params, ("reason",))
        return await commands().maintenance_begin(str_param(params, "reason", default=""))

    @admin.method("admin_maintenanceEnd")
    async def admin_maintenance_end(params: dict[str, Any]) -> Any:
        check_params(params, ("expect_root",))
        expect = hex_param(params, "expect_root", default=None, length=32)
        return await commands().maintenance_end(expect)

    @admin.method("admin_maintenanceJob")
    async def admin_maintenance_job(params: dict[str, Any]) -> Any:
        check_params(params, ("kind",))
        return await commands().maintenance_job(str_param(params, "kind", max_len=32))

    @admin.method("admin_rollback")
    async def admin_rollback(params: dict[str, Any]) -> Any:
        check_params(params, ("to_height", "to_checkpoint", "dry_run", "reason"))
        to_checkpoint = str_param(params, "to_checkpoint", default=None, max_len=64)
        if to_checkpoint is not None and not _CHECKPOINT_NAME.fullmatch(to_checkpoint):
            raise invalid_params(
                f"to_checkpoint={ascii(to_checkpoint)}: a checkpoint name is 1 to 64 characters "
                "from A-Z a-z 0-9 . _ -"
            )
        return await commands().rollback(
            to_height=int_param(params, "to_height", default=None),
            to_checkpoint=to_checkpoint,
            dry_run=bool_param(params, "dry_run", default=False),
            reason=str_param(params, "reason", default="operator rollback", max_len=200),
        )

    inject_fault = ctx.inject_fault
    if inject_fault is not None:

        @admin.method("admin_injectFault")
        async def admin_inject_fault(params: dict[str, Any]) -> Any:
            """Test-only (the incident drill); registered only with testing.fault_injection."""
            check_params(params, ("kind",))
            return await inject_fault(str_param(params, "kind", max_len=64))

    @public.method("chain_getRollbacks")
    async def get_rollbacks(params: dict[str, Any]) -> Any:
        """Every rollback of this chain with its operator-signed notice, by fork id; then this
        node's own rollbacks that carry none (made directly on its store)."""
        check_params(params, ())
        out: list[dict[str, str | None]] = [
            {
                "fork_id": _s(n.fork_id),
                "from_height": _s(n.from_height),
                "to_height": _s(n.to_height),
                "reason": n.reason.decode(errors="replace"),
                "notice": encode_notice(n).hex(),
            }
            for n in blocks_db.notices(store)
        ]
        noticed = {(n["from_height"], n["to_height"]) for n in out}
        for fork in store.forks():
            if (_s(fork.from_height), _s(fork.to_height)) not in noticed:
                out.append(
                    {
                        "fork_id": _s(fork.fork_id),
                        "from_height": _s(fork.from_height),
                        "to_height": _s(fork.to_height),
                        "reason": fork.reason,
                        "notice": None,
                    }
                )
        return out

    # Checkpoints (pins that pruning never removes); the writer checks names and heights.
    @admin.method("admin_checkpointCreate")
    async def admin_checkpoint_create(params: dict[str, Any]) -> Any:
        check_params(params, ("name", "reason", "height"))
        name = str_param(params, "name", max_len=64)
        reason = str_param(params, "reason", default="")
        height = int_param(params, "height", default=None)
        return await commands().checkpoint_create(name, height=height, reason=reason)

    @admin.method("admin_checkpointList")
    async def admin_checkpoint_list(params: dict[str, Any]) -> Any:
        check_params(params, ())
        return {"checkpoints": commands().checkpoint_list()}

    @admin.method("admin_checkpointDelete")
    async def admin_checkpoint_delete(params: dict[str, Any]) -> Any:
        check_params(params, ("name",))
        return await commands().checkpoint_delete(str_param(params, "name", max_len=64))

    return public, admin
