"""State access for the pure core: the StateReader protocol, an in-memory state, and the Overlay
of pending writes a block is computed in. Imports node.core.{codec,keys,records}.

`StateReader` is all the core asks of storage: point reads and ordered prefix scans of the
state after the previous block (node.store.VersionedStore satisfies it). An `Overlay` holds
decoded records written during the block (None = deleted) over a reader; `branch()` stacks a
child for one transaction and `merge_into()` folds it back, so a rejected tx changes nothing.
`writes()` is the block's sorted write set.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

from node.core import codec, keys
from node.core.errors import InvariantViolation
from node.core.records import (
    Account,
    AccountId,
    ChainParams,
    Market,
    MarketId,
    Nonces,
    Order,
    Position,
    Totals,
)

R = TypeVar("R")
_MISSING = object()


class StateReader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def iter_prefix(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """(key, value) for keys starting with `prefix` and >= `start`, ascending."""
        ...


def _prefix_end(prefix: bytes) -> bytes | None:
    stripped = prefix.rstrip(b"\xff")
    return None if not stripped else stripped[:-1] + bytes((stripped[-1] + 1,))


def _dedupe(
    merged: Iterator[tuple[bytes, int, Any]],
) -> Iterator[tuple[bytes, int, Any]]:
    """Keep the first (highest-priority layer) entry of each key of a merged stream."""
    last = None
    for item in merged:
        if item[0] != last:
            last = item[0]
            yield item


class MemoryState:
    """A dict-backed StateReader (tests, simulation, benchmarks, replay scratch)."""

    def __init__(self, items: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self._data: dict[bytes, bytes] = dict(items)
        self._keys = sorted(self._data)

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def iter_prefix(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        keys_ = self._keys
        index = bisect_left(keys_, max(prefix, start))
        while index < len(keys_) and keys_[index].startswith(prefix):
            key = keys_[index]
            yield key, self._data[key]
            index += 1

    def apply(self, writes: Iterable[tuple[bytes, bytes | None]]) -> None:
        for key, value in writes:
            if value is None:
                if self._data.pop(key, None) is not None:
                    del self._keys[bisect_left(self._keys, key)]
            else:
                if key not in self._data:
                    insort(self._keys, key)
                self._data[key] = value

    def items(self) -> list[tuple[bytes, bytes]]:
        return [(key, self._data[key]) for key in self._keys]


class Overlay:
    """Pending writes (decoded records, raw bytes, or None = deleted) over a reader or parent."""

    __slots__ = ("_base", "_parent", "_pending", "_sorted", "_dirty", "_cache", "_floors")

    def __init__(self, base: StateReader, *, _parent: Overlay | None = None) -> None:
        self._base = base
        self._parent = _parent
        self._pending: dict[bytes, Any] = {}
        self._sorted: list[bytes] = []  # the pending keys in order (a branch sorts lazily)
        self._dirty = False
        # prefix -> a key: every base key of the prefix at or below it is deleted in this
        # layer or a parent (a book side's consumed top); scans of the base start past it.
        self._floors: dict[bytes, bytes] = {}
        self._cache: dict[bytes, Any] = {}  # decoded base reads (root overlay only)

    def branch(self) -> Overlay:
        return Overlay(self._base, _parent=self)

    def merge_into(self, parent: Overlay) -> None:
        pending = parent._pending
        at_root = parent._parent is None
        for key, value in self._pending.items():
            if value is None and at_root and parent._base.get(key) is None:
                # Created and deleted within the block (an order placed and filled): forget it
                # rather than keep a tombstone every later book scan would step over.
                if key in pending:
                    del pending[key]
                    del parent._sorted[bisect_left(parent._sorted, key)]
                continue
            if key not in pending:
                if at_root:
                    insort(parent._sorted, key)
                else:
                    parent._dirty = True
            pending[key] = value
        for prefix, floor in self._floors.items():
            if floor > parent._floors.get(prefix, b""):
                parent._floors[prefix] = floor

    def raise_floor(self, prefix: bytes, key: bytes) -> None:
        """Declare every base key under `prefix` up to `key` deleted in this layer (the caller
        deleted them: matching removes a book side from the top)."""
        if key > self._floors.get(prefix, b""):
            self._floors[prefix] = key

    def _ordered_keys(self) -> list[bytes]:
        if self._dirty:
            self._sorted = sorted(self._pending)
            self._dirty = False
        return self._sorted

    # ---- reads

    def load(self, key: bytes, cls: type[R]) -> R | None:
        overlay: Overlay | None = self
        while overlay is not None:
            value = overlay._pending.get(key, _MISSING)
            if value is not _MISSING:
                return value  # type: ignore[no-any-return]
            if overlay._parent is None:
                break
            overlay = overlay._parent
        root = overlay
        if root is None:
            raise InvariantViolation("an overlay without a root")
        cached = root._cache.get(key, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[no-any-return]
        raw = root._base.get(key)
        if cls is bytes:  # raw reads are not cached: the same key may later be read decoded
            return raw  # type: ignore[return-value]
        decoded = None if raw is None else codec.decode_state(raw, cls)
        root._cache[key] = decoded
        return decoded

    def get(self, key: bytes) -> bytes | None:
        value = self.load(key, bytes)
        if value is None or type(value) is bytes:
            return value
        return codec.encode(value)

    @staticmethod
    def _layer_stream(
        layer: Overlay, index: int, end: bytes | None, priority: int
    ) -> Iterator[tuple[bytes, int, Any]]:
        sorted_keys, pending = layer._sorted, layer._pending
        while index < len(sorted_keys):
            key = sorted_keys[index]
            if end is not None and key >= end:
                return
            yield key, priority, pending[key]
            index += 1

    def iter_records(self, prefix: bytes, cls: type[R]) -> Iterator[tuple[bytes, R]]:
        """(key, record) under `prefix` in key order, pending writes merged over the base.

        A lazy k-way merge (each layer's sorted keys and the base's ordered scan), so taking
        the best order of a book side costs a few steps however much the block wrote."""
        layers: list[Overlay] = []
        overlay: Overlay | None = self
        while overlay is not None:
            layers.append(overlay)
            overlay = overlay._parent
        root = layers[-1]
        cache = root._cache
        end = _prefix_end(prefix)
        floor = max((layer._floors.get(prefix, b"") for layer in layers), default=b"")
        start = floor + b"\x00" if floor else b""
        streams = []
        for priority, layer in enumerate(layers):
            sorted_keys = layer._ordered_keys()
            index = bisect_left(sorted_keys, prefix)
            if index < len(sorted_keys) and (end is None or sorted_keys[index] < end):
                streams.append(self._layer_stream(layer, index, end, priority))
        if not streams:  # nothing pending under the prefix: the base scan as it is
            for key, raw in root._base.iter_prefix(prefix, start):
                if cls is bytes:
                    yield key, raw  # type: ignore[misc]
                    continue
                cached = cache.get(key, _MISSING)
                if cached is _MISSING or cached is None:
                    cached = cache[key] = codec.decode_state(raw, cls)
                yield key, cached
            return
        pending = streams[0] if len(streams) == 1 else _dedupe(heapq.merge(*streams))
        head = next(pending, None)
        for key, raw in root._base.iter_prefix(prefix, start):
            while head is not None and head[0] < key:
                if head[2] is not None:
                    yield head[0], head[2]
                head = next(pending, None)
            if head is not None and head[0] == key:  # pending overrides the base
                if head[2] is not None:
                    yield key, head[2]
                head = next(pending, None)
                continue
            if cls is bytes:
                yield key, raw  # type: ignore[misc]
                continue
            cached = cache.get(key, _MISSING)
            if cached is _MISSING or cached is None:
                cached = cache[key] = codec.decode_state(raw, cls)
            yield key, cached
        while head is not None:
            if head[2] is not None:
                yield head[0], head[2]
            head = next(pending, None)

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.iter_records(prefix, bytes):
            yield key, value if type(value) is bytes else codec.encode(value)

    def first(self, prefix: bytes, cls: type[R]) -> tuple[bytes, R] | None:
        return next(self.iter_records(prefix, cls), None)

    def base_load(self, key: bytes, cls: type[R]) -> R | None:
        """The record as it stood before the block (the root's base, ignoring every pending
        write): the oracle cap per block compares against it."""
        root = self
        while root._parent is not None:
            root = root._parent
        cached = root._cache.get(key, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[no-any-return]
        raw = root._base.get(key)
        decoded = None if raw is None else codec.decode_state(raw, cls)
        root._cache[key] = decoded
        return decoded

    def pending_values(self) -> Iterable[Any]:
        """The values written in this layer (records, raw bytes, None for deleted)."""
        return self._pending.values()

    # ---- writes

    def put(self, key: bytes, value: Any) -> None:
        if key not in self._pending:
            if self._parent is None:  # the block's layer: kept in order as it grows
                insort(self._sorted, key)
            else:  # a tx's branch: a handful of keys, sorted when first scanned
                self._dirty = True
        self._pending[key] = value

    def delete(self, key: bytes) -> None:
        self.put(key, None)

    def writes(self) -> tuple[tuple[bytes, bytes | None], ...]:
        """The sorted write set (records encoded canonically)."""
        return tuple(self.iter_writes())

    def iter_writes(self) -> Iterator[tuple[bytes, bytes | None]]:
        """The sorted write set one pair at a time (apply_block_steps encodes it in steps)."""
        pending = self._pending
        for key in self._ordered_keys():
            value = pending[key]
            if value is not None and type(value) is not bytes:
                value = codec.encode(value)
            yield key, value


# ---- typed access (get_/put_/iter_ per STYLE §10)


def get_params(view: Overlay) -> ChainParams:
    params = view.load(keys.PARAMS, ChainParams)
    if params is None:
        raise LookupError("state has no chain params (not initialised from genesis)")
    return params


def get_totals(view: Overlay) -> Totals:
    totals = view.load(keys.TOTALS, Totals)
    if totals is None:
        raise LookupError("state has no totals (not initialised from genesis)")
    return totals


def put_totals(view: Overlay, totals: Totals) -> None:
    view.put(keys.TOTALS, totals)


def get_market(view: Overlay, market_id: int) -> Market | None:
    if not 0 <= market_id < 2**32:
        return None
    return view.load(keys.market(MarketId(market_id)), Market)


def put_market(view: Overlay, market: Market) -> None:
    view.put(keys.market(market.market_id), market)


def iter_markets(view: Overlay) -> Iterator[Market]:
    for _, market in view.iter_records(keys.MARKET, Market):
        yield market


def get_account(view: Overlay, account_id: bytes) -> Account | None:
    if len(account_id) != 32:
        return None
    return view.load(keys.account(AccountId(account_id)), Account)


def put_account(view: Overlay, account: Account) -> None:
    view.put(keys.account(account.account_id), account)


def iter_accounts(view: Overlay) -> Iterator[Account]:
    for _, account in view.iter_records(keys.ACCOUNT, Account):
        yield account


def get_nonces(view: Overlay, signer: bytes) -> Nonces:
    return view.load(keys.nonces(signer), Nonces) or Nonces(base_nonce=0, used_bits=0)


def put_nonces(view: Overlay, signer: bytes, nonces: Nonces) -> None:
    view.put(keys.nonces(signer), nonces)


def get_position(view: Overlay, account_id: AccountId, market_id: MarketId) -> Position | None:
    return view.load(keys.position(account_id, market_id), Position)


def put_position(view: Overlay, position: Position) -> None:
    key = keys.position(position.account_id, position.market_id)
    if position.size_atoms == 0:
        view.delete(key)  # zero positions are deleted, never stored
    else:
        view.put(key, position)


def iter_positions(view: Overlay, account_id: AccountId) -> Iterator[Position]:
    for _, position in view.iter_records(keys.positions_of(account_id), Position):
        yield position


def iter_all_positions(view: Overlay) -> Iterator[Position]:
    for _, position in view.iter_records(keys.POSITION, Position):
        yield position


def get_order(view: Overlay, order_id: int) -> tuple[bytes, Order] | None:
    """(the order's book or trigger key, the order), or None."""
    if not 0 <= order_id < 2**64:
        return None
    where = view.load(keys.order_ref(order_id), bytes)
    if where is None:
        return None
    order = view.load(where, Order)
    return None if order is None else (where, order)


def iter_account_order_ids(view: Overlay, account_id: AccountId) -> Iterator[int]:
    for key, _ in view.iter_records(keys.account_orders(account_id), bytes):
        yield keys.u64_at(key, 33)
