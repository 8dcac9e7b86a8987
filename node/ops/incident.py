"""The compensation report of a rollback (`compensation_report`, for `report compensation`),
over the summary of the reverted blocks (node.ops.summary, whose names are re-exported here).
Imports node.core, node.store and node.ops.summary; pure over the store (reads only).

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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from node.core import keys, merkle
from node.core.blocks import (
    Block,
    BlockEnv,
    BlockReceipts,
    header_hash,
)
from node.core.errors import BlockInvalid, InvariantViolation
from node.core.funding import funding_payment_quote
from node.core.margin import equity_quote, position_value_quote
from node.core.transition import apply_block_bytes
from node.core.view import (
    MemoryState,
    Overlay,
    StateReader,
    get_account,
    get_market,
    iter_positions,
)
from node.ops.summary import (
    BlockSummary,
    Deleveraging,
    DepositItem,
    FillItem,
    FundingSettlement,
    FundingTickItem,
    IncidentError,
    LiquidatedPosition,
    Liquidation,
    WithdrawalItem,
    fork_blocks,
    format_sizes,
    get_fork,
    liquidation_json,
    record_json,
    sizes_by_market,
    store_blocks,
    summarize_blocks,
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
    "deleveraged_quote",
)


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
    liquidated_size_atoms: str  # |size| closed per market, "market:atoms ..." (node.ops.summary)
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
    deleveraged_quote: int  # ADL: + received as a bankrupt account, - paid as a counterparty

    def to_json(self) -> dict[str, Any]:
        out = record_json(self)
        out["liquidations"] = [liquidation_json(item) for item in self.liquidations]
        return out

    def csv_row(self) -> list[str]:
        row = [self.account.hex(), str(len(self.liquidations))]
        return row + [str(getattr(self, name)) for name in CSV_COLUMNS[2:]]


_TOTAL_FIELDS = (
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
    "deleveraged_quote",
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
    deleveraged_quote: int = 0


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
    for item in summary.deleveragings:
        of(item.bankrupt).deleveraged_quote += item.paid_quote
        of(item.counterparty).deleveraged_quote -= item.paid_quote
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
        liquidated_size_atoms=format_sizes(
            sizes_by_market(p for item in liquidations for p in item.positions)
        ),
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
        deleveraged_quote=flows.deleveraged_quote,
    )


__all__ = [
    "AccountCompensation",
    "AccountState",
    "BlockSummary",
    "CompensationReport",
    "Deleveraging",
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
