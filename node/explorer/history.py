"""Recent blocks as the explorer lists them: header fields, tx counts and events, read with the
same store functions as `chain_getBlock` / `chain_getReceipt` (node.store.blocks_db) and kept
in a small cache keyed by (height, state root), so a rollback's new block at a height is never
served from the old one. Imports node.core, node.store and node.chain.producer (event_json).

The public RPC has no "fills of an account" or "recent fills of a market" method: the explorer
scans the last `window` blocks (default 200) through this cache, and says on the page that the
lists cover that window.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import trio

from node.chain.producer import event_json
from node.core.blocks import header_hash
from node.core.records import EventKind
from node.lane import WorkLane
from node.store import HeightUnavailable, VersionedStore, blocks_db

HISTORY_BLOCKS = 200  # blocks scanned for an account's or a market's recent events
CACHE_BLOCKS = 1_024
LISTED_EVENTS = (
    EventKind.FILL,
    EventKind.FUNDING_SETTLED,
    EventKind.LIQUIDATION,
    EventKind.DELEVERAGED,
    EventKind.TRIGGERED,
    EventKind.DEPOSIT,
    EventKind.WITHDRAW,
)


@dataclass(frozen=True, slots=True)
class BlockBrief:
    height: int
    hash: str
    time_ms: int
    state_root: str
    txs: int
    rejected: int
    events: tuple[dict[str, Any], ...]  # event_json + height + tx_hash ("" for block events)


class BlockHistory:
    def __init__(
        self, store: VersionedStore, *, window: int = HISTORY_BLOCKS, lane: WorkLane | None = None
    ) -> None:
        self.store = store
        self.window = window
        # Reading a block that is not cached takes a turn of the work lane (node.lane), as a
        # JSON-RPC batch entry does: a page that reads 200 blocks cannot hold the event loop
        # from the producer (which goes first) or from the reads. No lane (a follower): each
        # such block yields to the loop.
        self.lane = lane
        self._cache: OrderedDict[tuple[int, bytes], BlockBrief] = OrderedDict()

    async def brief(self, height: int) -> BlockBrief | None:
        try:
            root = self.store.root(height)
        except HeightUnavailable:
            return None
        key = (height, root)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        if self.lane is None:
            await trio.sleep(0)
            return self._read(key)
        async with self.lane.turn():
            return self._read(key)

    def _read(self, key: tuple[int, bytes]) -> BlockBrief | None:
        height = key[0]
        block = blocks_db.get_block(self.store, height)
        if block is None:
            return None
        receipts = blocks_db.get_receipts(self.store, height)
        events: list[dict[str, Any]] = []
        rejected = 0
        if receipts is not None:
            for receipt in receipts.receipts:
                rejected += receipt.code != 0
                for item in receipt.events:
                    if item.kind in LISTED_EVENTS:
                        events.append(
                            event_json(item) | {"height": height, "tx_hash": receipt.tx_hash.hex()}
                        )
            for item in receipts.block_events:
                if item.kind in LISTED_EVENTS:
                    events.append(event_json(item) | {"height": height, "tx_hash": ""})
        brief = BlockBrief(
            height=height,
            hash=header_hash(block.header).hex(),
            time_ms=block.header.time_ms,
            state_root=block.header.state_root.hex(),
            txs=len(block.txs),
            rejected=rejected,
            events=tuple(events),
        )
        self._cache[key] = brief
        while len(self._cache) > CACHE_BLOCKS:
            self._cache.popitem(last=False)
        return brief

    async def latest(self, count: int, *, below: int | None = None) -> list[BlockBrief]:
        """Up to `count` blocks, newest first, from the head (or from `below` - 1)."""
        top = self.store.height if below is None else min(below - 1, self.store.height)
        out = []
        for height in range(top, max(-1, top - count), -1):
            brief = await self.brief(height)
            if brief is None:
                break
            out.append(brief)
        return out

    async def events(
        self, *, account: str | None = None, market_id: str | None = None
    ) -> list[Any]:
        """Events of the last `window` blocks, newest first, that involve `account` (either
        side) and/or are in `market_id`."""
        out = []
        for brief in await self.latest(self.window):
            for item in reversed(brief.events):
                if account is not None and account not in (item["account"], item["counterparty"]):
                    continue
                if market_id is not None and item["market_id"] != market_id:
                    continue
                out.append(item)
        return out
