"""What a run of blocks did: `summarize_blocks` (for `rollback --dry-run` and the compensation
report) over the store's own blocks (`store_blocks`) or a fork's archived ones (`fork_blocks`).
Imports node.core and node.store; reads only.

Every list is built from the blocks' receipts and block events: fills, liquidations (each with
the positions it closed, taken over by the liquidator or deleveraged), deleveragings (ADL:
who paid a bankrupt account's deficit, per counterparty), deposits, withdrawals, funding ticks
and settlements, and every account an event touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from node.core.blocks import Block, BlockReceipts, decode_block, decode_receipts
from node.core.records import Event, EventKind
from node.store import VersionedStore, blocks_db
from node.store.versioned import Fork


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

    def sizes_atoms(self) -> dict[int, int]:
        """|size| closed per market: sizes of different markets are in different units (atoms
        of each market's base unit) and are never added together."""
        return sizes_by_market(self.positions)


def sizes_by_market(positions: Iterable[LiquidatedPosition]) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for position in positions:
        sizes[position.market_id] = sizes.get(position.market_id, 0) + abs(position.size_atoms)
    return sizes


def format_sizes(sizes: dict[int, int]) -> str:
    """Sizes per market as one field: "market:atoms" in market order, space separated."""
    return " ".join(f"{market}:{size}" for market, size in sorted(sizes.items()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Deleveraging:
    """Part of a bankrupt account's position closed against an opposite one (ADL), at the
    oracle price plus `paid_quote`, which the counterparty paid towards the deficit."""

    height: int
    market_id: int
    bankrupt: bytes
    counterparty: bytes
    size_atoms: int  # signed, the bankrupt account's side
    price_quote: int  # the oracle price
    paid_quote: int


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
    deleveragings: tuple[Deleveraging, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "first_height": _opt(self.first_height),
            "last_height": _opt(self.last_height),
            "blocks": str(self.blocks),
            "txs": str(self.txs),
            "txs_applied": str(self.txs_applied),
            "txs_rejected": str(self.txs_rejected),
            "fills": [record_json(item) for item in self.fills],
            "liquidations": [liquidation_json(item) for item in self.liquidations],
            "deposits": [record_json(item) for item in self.deposits],
            "withdrawals": [record_json(item) for item in self.withdrawals],
            "funding_ticks": [record_json(item) for item in self.funding_ticks],
            "funding_settlements": [record_json(item) for item in self.funding_settlements],
            "accounts_touched": [account.hex() for account in self.accounts_touched],
            "deleveragings": [record_json(item) for item in self.deleveragings],
        }

    def text(self) -> str:
        span = (
            "no blocks"
            if self.first_height is None
            else f"heights {self.first_height}..{self.last_height} ({self.blocks} blocks)"
        )
        lines = [
            f"{span}: {self.txs} txs ({self.txs_applied} applied, {self.txs_rejected} rejected), "
            f"{len(self.fills)} fills, {len(self.liquidations)} liquidations "
            f"({len(self.deleveragings)} deleveragings), "
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
        return record_json(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{type(value).__name__} has no report JSON form")


def record_json(record: Any) -> dict[str, Any]:
    return {name: _json_value(getattr(record, name)) for name in record.__slots__}


def liquidation_json(item: Liquidation) -> dict[str, Any]:
    out = record_json(item)
    out["size_atoms"] = format_sizes(item.sizes_atoms())
    return out


def summarize_blocks(blocks: Iterable[tuple[Block, BlockReceipts]]) -> BlockSummary:
    """Counts and lists of what the blocks did, in block, tx and event order.

    Fills are FILL events (matching and triggered orders; a liquidation's takeover is listed
    under its Liquidation, not as a fill). A Liquidation gathers the account's per-position
    LIQUIDATION events (with a market; counterparty = the liquidator, or none when the position
    was deleveraged) and ends at its penalty event (no market: amount = penalty, extra =
    insurance cover). A deleveraged position's DELEVERAGED events (one per counterparty) are
    listed in `deleveragings`."""
    first: int | None = None
    last: int | None = None
    count = txs = applied = 0
    fills: list[FillItem] = []
    liquidations: list[Liquidation] = []
    deposits: list[DepositItem] = []
    withdrawals: list[WithdrawalItem] = []
    deleveragings: list[Deleveraging] = []
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
                elif kind == EventKind.LIQUIDATION and item.market_id:
                    pending.setdefault(item.account, []).append(
                        LiquidatedPosition(
                            market_id=item.market_id,
                            size_atoms=item.size_atoms,
                            price_quote=item.price_quote,
                        )
                    )
                    if item.counterparty:
                        pending_liquidator[item.account] = item.counterparty
                elif kind == EventKind.DELEVERAGED:
                    deleveragings.append(
                        Deleveraging(
                            height=height,
                            market_id=item.market_id,
                            bankrupt=item.account,
                            counterparty=item.counterparty,
                            size_atoms=item.size_atoms,
                            price_quote=item.price_quote,
                            paid_quote=item.amount_quote,
                        )
                    )
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
        deleveragings=tuple(deleveragings),
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
