"""Incident tooling: what a run of blocks did (`summarize_blocks`, for `rollback --dry-run`) and
the compensation report of a rollback (`compensation_report`, for `report compensation`).
Imports node.core and node.store; pure over the store (reads only, writes nothing).

A rollback (`VersionedStore.rollback_to`) archives the reverted heights under a fork id: their
block and receipts records, and each height's diff, which holds the *previous* value of every
key the height changed. The value a key had at the reverted head is in no diff when its last
change was inside the fork, so the state at the reverted head is rebuilt by replaying the
archived blocks with the real state machine on the restored state, and every replayed height
is checked against the archive: its receipts and block events must be the archived ones, the
old values it overwrote must be the archived diff, and the final state must hash to the
archived root of the reverted head. Any difference refuses the report (IncidentError): a
refund list computed on a state that is not the one the chain had is worse than none.

Definitions (docs/OPERATIONS.md, "Compensation report"), all money in quote atoms, signed:

    funding       sum of the account's FUNDING_SETTLED amounts (+ received, - paid)
    fees          taker fees (FILL.amount, as taker) + maker fees (FILL.extra, as maker)
    penalty       liquidation penalties (to the insurance fund); cover: insurance cover received
    realized_pnl  trade cash flow + change of cost basis, over the reverted blocks:
                  d(collateral) - funding + fees + penalty - cover - deposits + withdrawals
                  + d(sum of cost_quote); exact (fills and liquidations are the only other
                  collateral moves), and it carries the floor of each opening fill's cost basis
    unrealized    sum over positions of (value at the oracle - cost_quote + unsettled funding)
    equity        collateral + position values at that state's oracle prices + unsettled funding
                  (node.core.margin.equity_quote); 0 for an account that does not exist there
    difference    equity_reverted - equity_restored
                  = realized_pnl + funding - fees - penalty + cover + deposits - withdrawals
                    + (unrealized_reverted - unrealized_restored)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from node.core import keys, merkle
from node.core.blocks import (
    Block,
    BlockEnv,
    BlockReceipts,
    decode_block,
    decode_receipts,
    header_hash,
)
from node.core.errors import BlockInvalid, InvariantViolation
from node.core.funding import funding_payment_quote
from node.core.margin import equity_quote, position_value_quote
from node.core.records import Event, EventKind
from node.core.transition import apply_block_bytes
from node.core.view import (
    MemoryState,
    Overlay,
    StateReader,
    get_account,
    get_market,
    iter_positions,
)
from node.store import VersionedStore, blocks_db, schema
from node.store.versioned import Fork

REPORT_VERSION = 1
CSV_COLUMNS = (
    "account",
    "liquidations",
    "liquidated_size_atoms",
    "funding_quote",
    "realized_pnl_quote",
    "fees_quote",
    "equity_restored_quote",
    "equity_reverted_quote",
    "difference_quote",
    "penalty_quote",
    "insurance_cover_quote",
    "deposits_quote",
    "withdrawals_quote",
    "unrealized_restored_quote",
    "unrealized_reverted_quote",
)


class IncidentError(ValueError):
    """The report cannot be made as asked (unknown fork, missing archive, replay mismatch)."""


# ---------------------------------------------------------------------- block summary


@dataclass(frozen=True, slots=True, kw_only=True)
class FillItem:
    height: int
    market_id: int
    taker: bytes
    maker: bytes
    size_atoms: int  # signed from the taker's side: + bought
    price_quote: int
    taker_fee_quote: int
    maker_fee_quote: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LiquidatedPosition:
    market_id: int
    size_atoms: int  # signed, the account's side of the position that was closed
    price_quote: int  # the oracle price it was taken over at


@dataclass(frozen=True, slots=True, kw_only=True)
class Liquidation:
    """One liquidation of one account: every position it held, then one penalty."""

    height: int
    account: bytes
    liquidator: bytes
    positions: tuple[LiquidatedPosition, ...]
    penalty_quote: int
    insurance_cover_quote: int

    @property
    def size_atoms(self) -> int:
        """Sum of |size| closed, over markets (atoms of each market's base unit)."""
        return sum(abs(p.size_atoms) for p in self.positions)


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositItem:
    """A bridge deposit applied in the blocks; `raw_tx` is the exact signed tx, so a rollback
    can re-submit it (its deposit id is free again once the block is reverted)."""

    height: int
    tx_index: int
    tx_hash: bytes
    account: bytes
    amount_quote: int
    deposit_id: int
    raw_tx: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class WithdrawalItem:
    height: int
    tx_hash: bytes
    account: bytes
    amount_quote: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FundingTickItem:
    height: int
    market_id: int
    seq: int
    rate_ppm: int
    index_quote: int  # the market's funding index after the tick
    price_quote: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FundingSettlement:
    height: int
    market_id: int
    account: bytes
    size_atoms: int
    amount_quote: int  # paid to the holder (negative: paid by the holder)


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockSummary:
    first_height: int | None  # None when no blocks were given
    last_height: int | None
    blocks: int
    txs: int
    txs_applied: int
    txs_rejected: int
    fills: tuple[FillItem, ...]
    liquidations: tuple[Liquidation, ...]
    deposits: tuple[DepositItem, ...]
    withdrawals: tuple[WithdrawalItem, ...]
    funding_ticks: tuple[FundingTickItem, ...]
    funding_settlements: tuple[FundingSettlement, ...]
    accounts_touched: tuple[bytes, ...]  # sorted: every account or counterparty of an event

    def to_json(self) -> dict[str, Any]:
        return {
            "first_height": _opt(self.first_height),
            "last_height": _opt(self.last_height),
            "blocks": str(self.blocks),
            "txs": str(self.txs),
            "txs_applied": str(self.txs_applied),
            "txs_rejected": str(self.txs_rejected),
            "fills": [_record_json(item) for item in self.fills],
            "liquidations": [_liquidation_json(item) for item in self.liquidations],
            "deposits": [_record_json(item) for item in self.deposits],
            "withdrawals": [_record_json(item) for item in self.withdrawals],
            "funding_ticks": [_record_json(item) for item in self.funding_ticks],
            "funding_settlements": [_record_json(item) for item in self.funding_settlements],
            "accounts_touched": [account.hex() for account in self.accounts_touched],
        }

    def text(self) -> str:
        span = (
            "no blocks"
            if self.first_height is None
            else f"heights {self.first_height}..{self.last_height} ({self.blocks} blocks)"
        )
        lines = [
            f"{span}: {self.txs} txs ({self.txs_applied} applied, {self.txs_rejected} rejected), "
            f"{len(self.fills)} fills, {len(self.liquidations)} liquidations, "
            f"{len(self.deposits)} deposits, {len(self.withdrawals)} withdrawals, "
            f"{len(self.funding_ticks)} funding ticks, "
            f"{len(self.accounts_touched)} accounts touched"
        ]
        for item in self.deposits:
            lines.append(
                f"  deposit height={item.height} account={item.account.hex()} "
                f"amount_quote={item.amount_quote} deposit_id={item.deposit_id} "
                f"tx={item.tx_hash.hex()}"
            )
        for out in self.withdrawals:
            lines.append(
                f"  withdrawal height={out.height} account={out.account.hex()} "
                f"amount_quote={out.amount_quote} tx={out.tx_hash.hex()}"
            )
        for liq in self.liquidations:
            lines.append(
                f"  liquidation height={liq.height} account={liq.account.hex()} "
                f"positions={len(liq.positions)} penalty_quote={liq.penalty_quote}"
            )
        return "\n".join(lines)


def _opt(value: int | None) -> str | None:
    return None if value is None else str(value)


def _json_value(value: Any) -> Any:
    """Canonical JSON values: integers as decimal strings, bytes as hex."""
    if isinstance(value, bool):
        raise TypeError("no booleans in a report")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (tuple, list)):
        return [_json_value(item) for item in value]
    if hasattr(value, "__slots__"):
        return _record_json(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{type(value).__name__} has no report JSON form")


def _record_json(record: Any) -> dict[str, Any]:
    return {name: _json_value(getattr(record, name)) for name in record.__slots__}


def _liquidation_json(item: Liquidation) -> dict[str, Any]:
    out = _record_json(item)
    out["size_atoms"] = str(item.size_atoms)
    return out


def summarize_blocks(blocks: Iterable[tuple[Block, BlockReceipts]]) -> BlockSummary:
    """Counts and lists of what the blocks did, in block, tx and event order.

    Fills are FILL events (matching and triggered orders; a liquidation's takeover is listed
    under its Liquidation, not as a fill). A Liquidation gathers the account's per-position
    LIQUIDATION events (counterparty = liquidator) and ends at its penalty event (no
    counterparty: amount = penalty, extra = insurance cover)."""
    first: int | None = None
    last: int | None = None
    count = txs = applied = 0
    fills: list[FillItem] = []
    liquidations: list[Liquidation] = []
    deposits: list[DepositItem] = []
    withdrawals: list[WithdrawalItem] = []
    ticks: list[FundingTickItem] = []
    settlements: list[FundingSettlement] = []
    touched: set[bytes] = set()
    for block, receipts in blocks:
        height = block.header.height
        first = height if first is None else first
        last = height
        count += 1
        if len(receipts.receipts) != len(block.txs):
            raise IncidentError(
                f"height {height}: {len(block.txs)} txs but {len(receipts.receipts)} receipts"
            )
        txs += len(block.txs)
        streams: list[tuple[tuple[Event, ...], int | None, bytes, bytes]] = []
        for index, (raw, receipt) in enumerate(zip(block.txs, receipts.receipts, strict=True)):
            if receipt.code == 0:
                applied += 1
                streams.append((receipt.events, index, receipt.tx_hash, raw))
        streams.append((receipts.block_events, None, b"", b""))
        pending: dict[bytes, list[LiquidatedPosition]] = {}
        pending_liquidator: dict[bytes, bytes] = {}
        for events, position, tx_hash, raw in streams:
            for item in events:
                for party in (item.account, item.counterparty):
                    if party:
                        touched.add(bytes(party))
                kind = item.kind
                if kind == EventKind.FILL:
                    fills.append(
                        FillItem(
                            height=height,
                            market_id=item.market_id,
                            taker=item.account,
                            maker=item.counterparty,
                            size_atoms=item.size_atoms,
                            price_quote=item.price_quote,
                            taker_fee_quote=item.amount_quote,
                            maker_fee_quote=item.extra,
                        )
                    )
                elif kind == EventKind.LIQUIDATION and item.counterparty:
                    pending.setdefault(item.account, []).append(
                        LiquidatedPosition(
                            market_id=item.market_id,
                            size_atoms=item.size_atoms,
                            price_quote=item.price_quote,
                        )
                    )
                    pending_liquidator[item.account] = item.counterparty
                elif kind == EventKind.LIQUIDATION:
                    liquidations.append(
                        Liquidation(
                            height=height,
                            account=item.account,
                            liquidator=pending_liquidator.pop(item.account, b""),
                            positions=tuple(pending.pop(item.account, [])),
                            penalty_quote=item.amount_quote,
                            insurance_cover_quote=item.extra,
                        )
                    )
                elif kind == EventKind.DEPOSIT:
                    if position is None:
                        raise RuntimeError("a deposit is always a tx")
                    deposits.append(
                        DepositItem(
                            height=height,
                            tx_index=position,
                            tx_hash=tx_hash,
                            account=item.account,
                            amount_quote=item.amount_quote,
                            deposit_id=item.ref,
                            raw_tx=raw,
                        )
                    )
                elif kind == EventKind.WITHDRAW:
                    withdrawals.append(
                        WithdrawalItem(
                            height=height,
                            tx_hash=tx_hash,
                            account=item.account,
                            amount_quote=item.amount_quote,
                        )
                    )
                elif kind == EventKind.FUNDING_TICK:
                    ticks.append(
                        FundingTickItem(
                            height=height,
                            market_id=item.market_id,
                            seq=item.ref,
                            rate_ppm=item.extra,
                            index_quote=item.amount_quote,
                            price_quote=item.price_quote,
                        )
                    )
                elif kind == EventKind.FUNDING_SETTLED:
                    settlements.append(
                        FundingSettlement(
                            height=height,
                            market_id=item.market_id,
                            account=item.account,
                            size_atoms=item.size_atoms,
                            amount_quote=item.amount_quote,
                        )
                    )
        if pending:
            raise IncidentError(f"height {height}: liquidated positions without a penalty event")
    return BlockSummary(
        first_height=first,
        last_height=last,
        blocks=count,
        txs=txs,
        txs_applied=applied,
        txs_rejected=txs - applied,
        fills=tuple(fills),
        liquidations=tuple(liquidations),
        deposits=tuple(deposits),
        withdrawals=tuple(withdrawals),
        funding_ticks=tuple(ticks),
        funding_settlements=tuple(settlements),
        accounts_touched=tuple(sorted(touched)),
    )


def store_blocks(
    store: VersionedStore, first: int, last: int
) -> Iterator[tuple[Block, BlockReceipts]]:
    """The store's own blocks first..last (e.g. H+1..head for `rollback --dry-run`)."""
    for height in range(first, last + 1):
        block = blocks_db.get_block(store, height)
        receipts = blocks_db.get_receipts(store, height)
        if block is None or receipts is None:
            raise IncidentError(f"no block or receipts record at height {height}")
        yield block, receipts


def fork_blocks(store: VersionedStore, fork: Fork) -> Iterator[tuple[Block, BlockReceipts]]:
    """The archived blocks of a fork, to_height+1..from_height, in order."""
    for height in range(fork.to_height + 1, fork.from_height + 1):
        raw_block = store.archived_record(fork.fork_id, height, blocks_db.BLOCK)
        raw_receipts = store.archived_record(fork.fork_id, height, blocks_db.RECEIPTS)
        if raw_block is None or raw_receipts is None:
            raise IncidentError(
                f"fork {fork.fork_id}: no archived block or receipts of height {height}"
            )
        block = decode_block(raw_block)
        if block.header.height != height:
            raise IncidentError(
                f"fork {fork.fork_id}: the archived block of height {height} says "
                f"{block.header.height}"
            )
        yield block, decode_receipts(raw_receipts)


def get_fork(store: VersionedStore, fork_id: int) -> Fork:
    for fork in store.forks():
        if fork.fork_id == fork_id:
            return fork
    known = ", ".join(str(f.fork_id) for f in store.forks()) or "none"
    raise IncidentError(f"no fork {fork_id} in this store (forks: {known})")


# ---------------------------------------------------------------------- compensation report


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountState:
    """What the report reads of one account in one state."""

    exists: bool
    collateral_quote: int
    cost_quote: int  # sum of the positions' cost basis
    unrealized_quote: int  # sum of (value at the oracle - cost + unsettled funding)
    equity_quote: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountCompensation:
    account: bytes
    liquidations: tuple[Liquidation, ...]
    liquidated_size_atoms: int
    penalty_quote: int
    insurance_cover_quote: int
    funding_quote: int
    fees_quote: int
    deposits_quote: int
    withdrawals_quote: int
    realized_pnl_quote: int
    unrealized_restored_quote: int
    unrealized_reverted_quote: int
    equity_restored_quote: int
    equity_reverted_quote: int
    difference_quote: int

    def to_json(self) -> dict[str, Any]:
        out = _record_json(self)
        out["liquidations"] = [_liquidation_json(item) for item in self.liquidations]
        return out

    def csv_row(self) -> list[str]:
        row = [self.account.hex(), str(len(self.liquidations))]
        return row + [str(getattr(self, name)) for name in CSV_COLUMNS[2:]]


_TOTAL_FIELDS = (
    "liquidated_size_atoms",
    "penalty_quote",
    "insurance_cover_quote",
    "funding_quote",
    "fees_quote",
    "deposits_quote",
    "withdrawals_quote",
    "realized_pnl_quote",
    "unrealized_restored_quote",
    "unrealized_reverted_quote",
    "equity_restored_quote",
    "equity_reverted_quote",
    "difference_quote",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationReport:
    chain_id: bytes
    fork: Fork
    restored_root: bytes  # state root at fork.to_height
    reverted_root: bytes  # state root at fork.from_height (checked against the archive)
    summary: BlockSummary
    accounts: tuple[AccountCompensation, ...]  # sorted by account
    totals: dict[str, int] = field(default_factory=dict)  # sums of the account columns

    def body(self) -> dict[str, Any]:
        return {
            "report": "compensation",
            "version": str(REPORT_VERSION),
            "chain_id": self.chain_id.decode("utf-8", "replace"),
            "fork": {
                "fork_id": str(self.fork.fork_id),
                "from_height": str(self.fork.from_height),
                "to_height": str(self.fork.to_height),
                "reason": self.fork.reason,
            },
            "restored_root": self.restored_root.hex(),
            "reverted_root": self.reverted_root.hex(),
            "summary": self.summary.to_json(),
            "accounts": [item.to_json() for item in self.accounts],
            "totals": {name: str(value) for name, value in sorted(self.totals.items())},
        }

    @property
    def report_hash(self) -> str:
        """sha256 of the canonical JSON of `body()` (sorted keys, no spaces, ASCII)."""
        return hashlib.sha256(canonical_json(self.body())).hexdigest()

    def to_json(self) -> dict[str, Any]:
        out = self.body()
        out["report_hash"] = self.report_hash
        return out

    def csv_rows(self) -> list[list[str]]:
        """The header, then one row per account (sorted by account)."""
        return [list(CSV_COLUMNS)] + [item.csv_row() for item in self.accounts]

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows(self.csv_rows())
        return out.getvalue()

    def text(self) -> str:
        fork = self.fork
        lines = [
            f"compensation report: fork {fork.fork_id} reverted heights "
            f"{fork.to_height + 1}..{fork.from_height}, restored height {fork.to_height}"
            + (f" ({fork.reason})" if fork.reason else ""),
            f"restored root {self.restored_root.hex()}, reverted root {self.reverted_root.hex()}",
            self.summary.text(),
            f"{len(self.accounts)} accounts (quote atoms; difference = equity reverted - "
            "restored):",
        ]
        for item in self.accounts:
            lines.append(
                f"  {item.account.hex()} liquidations={len(item.liquidations)} "
                f"funding={item.funding_quote} realized_pnl={item.realized_pnl_quote} "
                f"fees={item.fees_quote} equity_restored={item.equity_restored_quote} "
                f"equity_reverted={item.equity_reverted_quote} "
                f"difference={item.difference_quote}"
            )
        totals = self.totals
        lines.append(
            f"totals: liquidations={totals.get('liquidations', 0)} "
            f"funding={totals['funding_quote']} realized_pnl={totals['realized_pnl_quote']} "
            f"fees={totals['fees_quote']} penalties={totals['penalty_quote']} "
            f"difference={totals['difference_quote']}"
        )
        lines.append(f"report hash {self.report_hash}")
        return "\n".join(lines)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def read_account(reader: StateReader, account_id: bytes) -> AccountState:
    """Collateral, cost basis, unrealized PnL and equity (node.core.margin) of one account."""
    view = reader if isinstance(reader, Overlay) else Overlay(reader)
    account = get_account(view, account_id)
    if account is None:
        return AccountState(
            exists=False, collateral_quote=0, cost_quote=0, unrealized_quote=0, equity_quote=0
        )
    held = []
    cost = unrealized = 0
    for position in iter_positions(view, account.account_id):
        market = get_market(view, position.market_id)
        if market is None:
            raise IncidentError(f"position of {account_id.hex()} in unknown market")
        held.append((position, market))
        cost += position.cost_quote
        unrealized += (
            position_value_quote(position, market)
            - position.cost_quote
            + funding_payment_quote(position, market)
        )
    return AccountState(
        exists=True,
        collateral_quote=account.collateral_quote,
        cost_quote=cost,
        unrealized_quote=unrealized,
        equity_quote=equity_quote(account, held),
    )


def state_at(store: VersionedStore, height: int) -> MemoryState:
    """The whole state at a retained height, in memory: the head's flat state with the keys
    changed since `height` put back (store.diff)."""
    try:
        items = dict(store.iter_prefix(b""))
        for key, old, _ in store.diff(height, store.height):
            if old is None:
                items.pop(key, None)
            else:
                items[key] = old
    except ValueError as error:  # HeightUnavailable is a ValueError
        raise IncidentError(f"the state at height {height} is not readable: {error}") from None
    return MemoryState(items.items())


def _restored_state(store: VersionedStore, fork: Fork, first_block: Block | None) -> MemoryState:
    """The state at fork.to_height, checked to be the state the fork's first block was built
    on: a later rollback below to_height, then new blocks, would make that height another
    chain's."""
    if fork.to_height > store.height:
        raise IncidentError(
            f"fork {fork.fork_id} restored height {fork.to_height}, but the head is "
            f"{store.height}: a later rollback went below it"
        )
    state = state_at(store, fork.to_height)
    header = blocks_db.get_block(store, fork.to_height)
    if header is None:
        raise IncidentError(f"no block record at the restored height {fork.to_height}")
    if header.header.state_root != store.root(fork.to_height):
        raise IncidentError(f"the block at {fork.to_height} does not carry the stored root")
    if first_block is not None and first_block.header.parent_hash != header_hash(header.header):
        raise IncidentError(
            f"fork {fork.fork_id} was not built on the current block {fork.to_height} "
            "(a later rollback replaced it)"
        )
    return state


def replay_fork(
    store: VersionedStore,
    fork: Fork,
    restored: MemoryState,
    blocks: list[tuple[Block, BlockReceipts]],
) -> tuple[MemoryState, set[bytes], bytes]:
    """The state at the reverted head: the archived blocks re-applied with the real state
    machine on a copy of the restored state, each height checked against the archive
    (receipts, events, diffs) and the result against the archived root. Returns the state,
    every state key the fork changed, and the state's root."""
    state = MemoryState(restored.items())
    changed: set[bytes] = set()
    segment: dict[bytes, bytes | None] = {}  # old values since the last archived diff
    for block, receipts in blocks:
        header = block.header
        env = BlockEnv(chain_id=header.chain_id, height=header.height, time_ms=header.time_ms)
        try:
            result = apply_block_bytes(state, env, block.txs)
        except (BlockInvalid, InvariantViolation) as error:
            raise IncidentError(f"replaying height {header.height}: {error}") from None
        replayed = BlockReceipts(receipts=result.receipts, block_events=result.events)
        if replayed != receipts:
            raise IncidentError(
                f"replaying height {header.height} does not reproduce its archived receipts "
                "(the blocks were made by other code, or the state was changed outside blocks)"
            )
        for key, value in result.writes:
            old = state.get(key)
            if old != value:
                segment.setdefault(key, old)
                changed.add(key)
        state.apply(result.writes)
        if store.archived_record(fork.fork_id, header.height, schema.ARCHIVED_DIFF) is not None:
            archived = dict(store.archived_diff(fork.fork_id, header.height))
            if archived != segment:
                differing = sorted(set(archived) ^ set(segment)) or sorted(
                    k for k in archived if archived[k] != segment.get(k)
                )
                raise IncidentError(
                    f"replaying height {header.height} does not reproduce its archived diff "
                    f"(first differing key: {keys.describe(differing[0])})"
                )
            segment = {}
    if segment:
        raise IncidentError(f"fork {fork.fork_id}: no archived diff of the reverted head")
    root = store.archived_record(fork.fork_id, fork.from_height, schema.ARCHIVED_ROOT)
    computed = merkle.reference_root(state.items())
    if root != computed or (blocks and blocks[-1][0].header.state_root != computed):
        raise IncidentError(
            f"the replayed state at {fork.from_height} hashes to {computed.hex()}, "
            f"not the archived root {root.hex() if root else None}"
        )
    return state, changed, computed


def archived_fork_head(
    store: VersionedStore,
    fork: Fork,
    restored: MemoryState,
    head: dict[bytes, bytes | None],
) -> tuple[MemoryState, set[bytes], bytes]:
    """The state at the reverted head: the restored state with the archived head values of
    every key the fork changed, checked against the archived root. No re-execution, so it also
    works for blocks that were built on state damaged outside blocks (the incident)."""
    state = MemoryState(restored.items())
    changed = set(head)  # every key some reverted height changed (perhaps back again)
    state.apply(sorted(head.items()))
    root = store.archived_record(fork.fork_id, fork.from_height, schema.ARCHIVED_ROOT)
    computed = merkle.reference_root(state.items())
    if root != computed:
        raise IncidentError(
            f"the reverted head state of fork {fork.fork_id} hashes to {computed.hex()}, "
            f"not the archived root {root.hex() if root else None}"
        )
    return state, changed, computed


def _revalued_accounts(
    restored: MemoryState, reverted: MemoryState, touched: set[bytes]
) -> set[bytes]:
    """Accounts the blocks did not touch whose equity still differs: their positions were
    revalued by oracle updates and funding ticks."""
    out = set()
    for state in (restored, reverted):
        for key, _ in state.iter_prefix(keys.ACCOUNT):
            account = key[1:]
            if account not in touched and account not in out:
                if read_account(restored, account) != read_account(reverted, account):
                    out.add(account)
    return out


def _accounts_in_keys(changed: Iterable[bytes]) -> set[bytes]:
    out = set()
    for key in changed:
        if key[:1] in (keys.ACCOUNT, keys.POSITION) and len(key) >= 33:
            out.add(key[1:33])
    return out


def compensation_report(
    store: VersionedStore,
    fork_id: int,
    *,
    restored: MemoryState | None = None,
    revalued: bool = False,
) -> CompensationReport:
    """Per account touched by the reverted blocks of `fork_id`: what those blocks did to it and
    its equity at the restored height vs at the reverted head (see the module docstring).

    Rows: every account or counterparty of an event of the blocks and every account whose
    account or position records they changed; with `revalued`, also every other account whose
    equity differs (positions revalued by oracle and funding moves, nothing done by it).

    The restored state is the store's state at fork.to_height (any retained height; usually
    the head right after the rollback), unless `restored` gives it (e.g. from a snapshot when
    that height was pruned; the replay checks it anyway). The reverted head state
    is the replay of the archived blocks on it (`replay_fork`), checked against the archive."""
    fork = get_fork(store, fork_id)
    blocks = list(fork_blocks(store, fork))
    given = restored is not None
    if restored is None:
        restored = _restored_state(store, fork, blocks[0][0] if blocks else None)
    restored_root = merkle.reference_root(restored.items())
    if not given and restored_root != store.root(fork.to_height):
        raise IncidentError(f"the state read at {fork.to_height} does not hash to its root")
    base = blocks_db.get_block(store, fork.to_height) if fork.to_height <= store.height else None
    if (
        base is not None
        and blocks
        and blocks[0][0].header.parent_hash == header_hash(base.header)
        and restored_root != base.header.state_root
    ):
        raise IncidentError(
            f"the restored state hashes to {restored_root.hex()}, not the state root "
            f"{base.header.state_root.hex()} of block {fork.to_height} the fork was built on"
        )
    head = store.archived_head(fork_id)
    if head is not None:
        reverted, changed, reverted_root = archived_fork_head(store, fork, restored, head)
    else:  # a fork archived without its head values: re-execute its blocks
        reverted, changed, reverted_root = replay_fork(store, fork, restored, blocks)
    summary = summarize_blocks(blocks)
    touched = set(summary.accounts_touched) | _accounts_in_keys(changed)
    if revalued:
        touched |= _revalued_accounts(restored, reverted, touched)
    accounts = sorted(touched)
    flows = _flows(summary)
    rows = [
        _account_row(account, flows.get(account) or _Flows(), restored, reverted)
        for account in accounts
    ]
    totals = {name: sum(getattr(row, name) for row in rows) for name in _TOTAL_FIELDS}
    totals["liquidations"] = sum(len(row.liquidations) for row in rows)
    chain_id = blocks[0][0].header.chain_id if blocks else b""
    return CompensationReport(
        chain_id=chain_id,
        fork=fork,
        restored_root=restored_root,
        reverted_root=reverted_root,
        summary=summary,
        accounts=tuple(rows),
        totals=totals,
    )


@dataclass(slots=True)
class _Flows:
    """What the events of the blocks did to one account (sums in quote atoms)."""

    liquidations: list[Liquidation] = field(default_factory=list)
    funding_quote: int = 0
    fees_quote: int = 0
    deposits_quote: int = 0
    withdrawals_quote: int = 0


def _flows(summary: BlockSummary) -> dict[bytes, _Flows]:
    """One pass over the summary's lists, per account."""
    flows: dict[bytes, _Flows] = {}

    def of(account: bytes) -> _Flows:
        found = flows.get(account)
        if found is None:
            found = flows[account] = _Flows()
        return found

    for liquidation in summary.liquidations:
        of(liquidation.account).liquidations.append(liquidation)
    for settlement in summary.funding_settlements:
        of(settlement.account).funding_quote += settlement.amount_quote
    for fill in summary.fills:
        of(fill.taker).fees_quote += fill.taker_fee_quote
        of(fill.maker).fees_quote += fill.maker_fee_quote
    for deposit in summary.deposits:
        of(deposit.account).deposits_quote += deposit.amount_quote
    for withdrawal in summary.withdrawals:
        of(withdrawal.account).withdrawals_quote += withdrawal.amount_quote
    return flows


def _account_row(
    account: bytes, flows: _Flows, restored: StateReader, reverted: StateReader
) -> AccountCompensation:
    liquidations = tuple(flows.liquidations)
    penalty = sum(item.penalty_quote for item in liquidations)
    cover = sum(item.insurance_cover_quote for item in liquidations)
    funding, fees = flows.funding_quote, flows.fees_quote
    deposits, withdrawals = flows.deposits_quote, flows.withdrawals_quote
    before = read_account(restored, account)
    after = read_account(reverted, account)
    # Collateral moves only by trade cash, fees, funding, transfers, penalties and cover, so
    # what is left of its change is the trade cash flow; with the change of the cost basis it
    # is the realized PnL (tests/ops/test_incident.py reconciles every column).
    realized = (
        after.collateral_quote
        - before.collateral_quote
        - funding
        + fees
        + penalty
        - cover
        - deposits
        + withdrawals
        + after.cost_quote
        - before.cost_quote
    )
    return AccountCompensation(
        account=account,
        liquidations=liquidations,
        liquidated_size_atoms=sum(item.size_atoms for item in liquidations),
        penalty_quote=penalty,
        insurance_cover_quote=cover,
        funding_quote=funding,
        fees_quote=fees,
        deposits_quote=deposits,
        withdrawals_quote=withdrawals,
        realized_pnl_quote=realized,
        unrealized_restored_quote=before.unrealized_quote,
        unrealized_reverted_quote=after.unrealized_quote,
        equity_restored_quote=before.equity_quote,
        equity_reverted_quote=after.equity_quote,
        difference_quote=after.equity_quote - before.equity_quote,
    )


__all__ = [
    "AccountCompensation",
    "AccountState",
    "BlockSummary",
    "CompensationReport",
    "DepositItem",
    "FillItem",
    "FundingSettlement",
    "FundingTickItem",
    "IncidentError",
    "LiquidatedPosition",
    "Liquidation",
    "WithdrawalItem",
    "canonical_json",
    "compensation_report",
    "fork_blocks",
    "get_fork",
    "read_account",
    "replay_fork",
    "state_at",
    "store_blocks",
    "summarize_blocks",
]
