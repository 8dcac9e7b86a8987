"""The state's Merkle tree in flat arrays: buckets of leaf records under a dense top tree.

Imports node.core.merkle (the hashing rules, proofs) and node.store.errors.

The tree is node.core.merkle's sparse binary tree (collapsed single-leaf subtrees); only its
physical form is chosen here, for bounded memory per key and no Python object per node:

- the key space is cut at depth `depth` (T) into 2**T *buckets*; a bucket is one `bytes` of
  its leaves' records, `key_hash || value_hash` (64 bytes each), sorted by key hash;
- the top of the tree, depth 0..T, is a dense binary heap in two `bytearray`s: node i
  (root 1, children 2i and 2i+1; bucket b is node 2**T + b) has a 32-byte hash and a kind:
  0 empty (hash EMPTY), 1 exactly one leaf below (hash = that leaf's hash), 2 two or more;
- a bucket's own subtree (below depth T) is not stored: it is re-hashed from its records
  when the bucket changes or a proof passes through it. T grows with the state so a bucket
  holds 4 to 8 leaves on average, so that costs a dozen hashes.

Memory is 64 bytes per key (records) plus ~41 bytes per bucket (a `bytes` object and its
slot) plus 33 bytes per top node (two per bucket): 90 to 120 bytes per key, against ~780 for
tuples per node.

Versions: the tree holds the head only. A change set is first computed into a `Delta` (new
buckets and top nodes) without touching the tree, so a staged version can be dropped; `apply`
moves the head. A `Delta` over the head is also how an older version is read (the store
computes one from the diffs since that height): every read method takes an optional delta.
`iter_bytes` / `read_from` persist the whole tree for a fast reopen (docs/STORE.md).
"""

from __future__ import annotations

import array
import hashlib
import io
import itertools
import struct
import zlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from node.core.merkle import (
    EMPTY,
    KEY_DOMAIN,
    LEAF_DOMAIN,
    LEFT_EMPTY_PREFIX,
    NODE_PREFIX,
    PROOF_EMPTY,
    PROOF_LEAF,
    PROOF_OTHER_LEAF,
    VALUE_DOMAIN,
    encode_proof,
    node_hash,
    subtree_root,
)
from node.core.steps import Steps, drive
from node.store.errors import StoreCorrupted

Change = tuple[int, bytes, bytes | None]  # (key hash int, key hash, new value hash or None)
RECORD = 64  # key hash + value hash
MIN_DEPTH = 4
MAX_DEPTH = 24  # < 64: _prefix_root counts bits within a 64-bit prefix
# Leaves per bucket: a change re-hashes its whole bucket, so small buckets are fast (1 M keys,
# 1,000-update blocks: 88 ms a block at 15 a bucket, 71 at 7.6, 43 at 3.8, 54 at 1.9) and
# cost top nodes (33 bytes each) and bucket objects (~41 bytes) per bucket.
TARGET_PER_BUCKET = 4  # at most this many leaves per bucket after a (re)build, on average
# Past this average the buckets are cut again at depth_for's depth: two levels deeper (8 a
# bucket is not under 4 at depth + 1), so a bucket averages 2 to 8 leaves and a regrow comes
# once per 4x growth of the state.
GROW_PER_BUCKET = 8
BUCKETS_PER_STEP = 256  # buckets re-hashed between two yields of compute_steps

_sha256 = hashlib.sha256
_PREFIX = struct.Struct(">Q56x")  # a record's first 64 key hash bits: where its bucket splits
_EMPTY_BUCKET = b""
_MAGIC = b"PCFT\x00\x01"
_HEADER = struct.Struct(">6sBQQ")  # magic, depth, key count, record bytes
_READ_BYTES = 8 << 20  # records read per slice by read_from


def make_change(key: bytes, value: bytes | None) -> Change:
    kh = _sha256(KEY_DOMAIN + key).digest()
    vh = None if value is None else _sha256(VALUE_DOMAIN + value).digest()
    return (int.from_bytes(kh, "big"), kh, vh)


def depth_for(count: int) -> int:
    """The bucket depth for `count` keys: about TARGET_PER_BUCKET leaves per bucket."""
    depth = MIN_DEPTH
    while depth < MAX_DEPTH and count > TARGET_PER_BUCKET << depth:
        depth += 1
    return depth


def bucket_hash(records: bytes, depth: int) -> tuple[bytes, int]:
    """(hash, kind) of a bucket's subtree at `depth` from its sorted records."""
    size = len(records)
    if size == 0:
        return EMPTY, 0
    sha, ld = _sha256, LEAF_DOMAIN
    if size == RECORD:
        return sha(ld + records).digest(), 1
    leaves = [sha(ld + records[at : at + RECORD]).digest() for at in range(0, size, RECORD)]
    prefixes = [prefix for (prefix,) in _PREFIX.iter_unpack(records)]
    if len(set(prefixes)) == len(prefixes):  # the common case: split within 64 bits
        return _prefix_root(prefixes, leaves, 0, len(leaves), depth), 2
    keys = [int.from_bytes(records[at : at + 32], "big") for at in range(0, size, RECORD)]
    return subtree_root(keys, leaves, depth), 2


def _prefix_root(prefixes: list[int], leaves: list[bytes], lo: int, hi: int, depth: int) -> bytes:
    """merkle.subtree_root of leaves lo..hi (two or more) at `depth`, when their key hashes'
    first 64 bits (`prefixes`, sorted) already tell them apart: a bucket's few leaves split
    top down (recursion as deep as the leaves are many), with no 256-bit ints and no stack.
    tests/store/test_flattree.py checks it against subtree_root."""
    first = prefixes[lo]
    split = 64 - (first ^ prefixes[hi - 1]).bit_length()  # the depth of the node over them
    bit = 1 << (63 - split)
    mid = lo + 1
    while not prefixes[mid] & bit:
        mid += 1
    h = NODE_PREFIX.copy()
    h.update(leaves[lo] if mid - lo == 1 else _prefix_root(prefixes, leaves, lo, mid, split + 1))
    h.update(leaves[mid] if hi - mid == 1 else _prefix_root(prefixes, leaves, mid, hi, split + 1))
    digest = h.digest()
    while split > depth:  # a one-sided node per bit of their shared prefix, up to `depth`
        split -= 1
        if (first >> (63 - split)) & 1:
            h = LEFT_EMPTY_PREFIX.copy()
            h.update(digest)
        else:
            h = NODE_PREFIX.copy()
            h.update(digest)
            h.update(EMPTY)
        digest = h.digest()
    return digest


def _join(left: bytes, left_kind: int, right: bytes, right_kind: int) -> tuple[bytes, int]:
    """The node over two children (merkle's rules: a lone leaf rises, an empty side is EMPTY)."""
    if left_kind == 0:
        if right_kind < 2:
            return right, right_kind
        return node_hash(EMPTY, right), 2
    if right_kind == 0:
        if left_kind == 1:
            return left, 1
        return node_hash(left, EMPTY), 2
    return node_hash(left, right), 2


def heap_of(hashed: list[tuple[bytes, int]]) -> tuple[bytearray, bytearray]:
    """The dense heap (hashes, kinds; node i's children 2i and 2i+1, node 0 unused) whose
    lowest level is `hashed` ((hash, kind) of a power of two of subtrees, from node
    len(hashed)), every node above it hashed: a tree's top over its buckets, or verify's
    over a half's bins."""
    first = len(hashed)
    hashes = bytearray(EMPTY * first) + b"".join(digest for digest, _ in hashed)
    kinds = bytearray(first) + bytes(kind for _, kind in hashed)
    if len(hashes) != 64 * first:
        raise StoreCorrupted("a bucket hash of the wrong size")
    _hash_top(hashes, kinds, first)
    return hashes, kinds


def _hash_top(hashes: bytearray, kinds: bytearray, first: int) -> None:
    """Every node above the buckets (nodes first-1 down to the root), from the buckets' hashes
    and kinds in place: a node's two children are one 64-byte slice of the heap. The rebuilds'
    and a regrow's top (2**T - 1 nodes: ~4 M for a 10 M state), ~1 us a node."""
    node_prefix = NODE_PREFIX.copy
    with memoryview(hashes) as view:
        for node in range(first - 1, 0, -1):
            child = node << 1
            left_kind, right_kind = kinds[child], kinds[child + 1]
            at = child << 5
            if left_kind and right_kind:
                h = node_prefix()
                h.update(view[at : at + 64])
                view[at >> 1 : (at >> 1) + 32] = h.digest()
                kinds[node] = 2
            else:
                digest, kind = _join(
                    bytes(view[at : at + 32]), left_kind, bytes(view[at + 32 : at + 64]), right_kind
                )
                view[at >> 1 : (at >> 1) + 32] = digest
                kinds[node] = kind


def bucket_hashes(buckets: list[bytes], depth: int) -> list[tuple[bytes, int]]:
    """(hash, kind) of each bucket at `depth`."""
    return [bucket_hash(records, depth) for records in buckets]


class Delta:
    """Pending changes over a tree: new bucket records and top nodes, and the new key count.
    Reads through a delta see the tree as if it were applied."""

    __slots__ = ("buckets", "changed", "count", "depth", "_nodes")

    def __init__(self, depth: int, count: int) -> None:
        self.depth = depth
        self.count = count
        self.buckets: dict[int, bytes] = {}
        # The changed top nodes, the root last if any: (nodes, hashes, kinds), as compute
        # makes them and apply takes them; a dict of them only for reads through the delta.
        self.changed: tuple[list[int], list[bytes], list[int]] = ([], [], [])
        self._nodes: dict[int, tuple[bytes, int]] | None = None

    @property
    def nodes(self) -> dict[int, tuple[bytes, int]]:
        if self._nodes is None:
            nodes, digests, kinds = self.changed
            self._nodes = dict(zip(nodes, zip(digests, kinds, strict=True), strict=True))
        return self._nodes


class FlatTree:
    """The head version of the state tree (module docstring)."""

    __slots__ = ("depth", "count", "_buckets", "_hashes", "_kinds")

    def __init__(
        self, depth: int, count: int, buckets: list[bytes], hashes: bytearray, kinds: bytearray
    ) -> None:
        self.depth = depth
        self.count = count
        self._buckets = buckets
        self._hashes = hashes
        self._kinds = kinds

    # ------------------------------------------------------------------ building

    @classmethod
    def empty(cls) -> FlatTree:
        return cls.from_sorted_records([], 0)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[bytes, bytes]]) -> FlatTree:
        """A whole tree from (key, value) pairs in any order (keys unique)."""
        records = []
        for key, value in pairs:
            _, kh, vh = make_change(key, value)
            records.append(kh + vh)  # type: ignore[operator]
        records.sort()
        return cls.from_sorted_records(records, len(records))

    @classmethod
    def from_changes(cls, changes: Iterable[Change]) -> FlatTree:
        """A whole tree from changes that all carry a value hash (keys unique), any order."""
        records = []
        for _, kh, vh in changes:
            if vh is None:
                raise StoreCorrupted("a leaf change without a value hash")
            records.append(kh + vh)
        records.sort()
        return cls.from_sorted_records(records, len(records))

    @classmethod
    def from_sorted_records(cls, records: list[bytes], count: int) -> FlatTree:
        """A tree from 64-byte records sorted by key hash, key hashes unique."""
        depth = depth_for(count)
        return cls._from_buckets(cls.cut(records, depth), count, depth)

    @staticmethod
    def cut(records: list[bytes], depth: int) -> list[bytes]:
        """Sorted 64-byte records (key hashes unique, else StoreCorrupted) as the buckets of
        `depth`."""
        for position in range(1, len(records)):
            if records[position][:32] == records[position - 1][:32]:
                raise StoreCorrupted("two leaves with one key hash")
        return split_sorted(records, depth)

    @classmethod
    def _from_buckets(cls, buckets: list[bytes], count: int, depth: int) -> FlatTree:
        """Hash every bucket (at `depth`) and top node."""
        return cls.assemble(buckets, count, depth, bucket_hashes(buckets, depth))

    @classmethod
    def assemble(
        cls, buckets: list[bytes], count: int, depth: int, hashed: list[tuple[bytes, int]]
    ) -> FlatTree:
        """The tree over `buckets` (the 2**depth buckets of `depth`, `count` records) whose
        (hash, kind) are `hashed` (bucket_hashes, maybe computed elsewhere): the top hashed."""
        first = 1 << depth
        if len(buckets) != first or len(hashed) != first:
            raise StoreCorrupted("buckets and their hashes disagree with the depth")
        hashes, kinds = heap_of(hashed)
        return cls(depth, count, buckets, hashes, kinds)

    def copy(self) -> FlatTree:
        """An independent copy (the buckets' bytes are shared: they are immutable)."""
        return FlatTree(
            self.depth,
            self.count,
            list(self._buckets),
            bytearray(self._hashes),
            bytearray(self._kinds),
        )

    # ------------------------------------------------------------------ reads

    def _node(self, node: int, delta: Delta | None) -> tuple[bytes, int]:
        if delta is not None:
            found = delta.nodes.get(node)
            if found is not None:
                return found
        return bytes(self._hashes[node * 32 : node * 32 + 32]), self._kinds[node]

    def _bucket(self, index: int, delta: Delta | None) -> bytes:
        if delta is not None:
            found = delta.buckets.get(index)
            if found is not None:
                return found
        return self._buckets[index]

    def root(self, delta: Delta | None = None) -> bytes:
        if delta is not None and delta.changed[0][-1:] == [1]:  # a block's: no dict built
            return delta.changed[1][-1]
        return self._node(1, delta)[0]

    def size(self, delta: Delta | None = None) -> int:
        return self.count if delta is None else delta.count

    def lookup(self, kh: bytes, delta: Delta | None = None) -> bytes | None:
        """The value hash stored under a key hash, or None."""
        records = self._bucket(int.from_bytes(kh[:4], "big") >> (32 - self.depth), delta)
        at = _find(records, kh)
        return None if at < 0 else records[at + 32 : at + RECORD]

    def prove(self, key: bytes, delta: Delta | None = None) -> bytes:
        """Canonical proof bytes for `key` (inclusion or non-inclusion); merkle.verify_proof."""
        kh_int, kh, _ = make_change(key, None)
        depth = self.depth
        siblings: list[bytes] = []
        node = 1
        for level in range(depth + 1):
            _, kind = self._node(node, delta)
            if kind == 0:
                return encode_proof(siblings, PROOF_EMPTY, None)
            if kind == 1:
                return _terminal(siblings, kh, self._single_leaf(node, delta))
            if level == depth:
                break
            bit = (kh_int >> (255 - level)) & 1
            siblings.append(self._node(2 * node + 1 - bit, delta)[0])
            node = 2 * node + bit
        records = self._bucket(node - (1 << depth), delta)
        keys = [
            int.from_bytes(records[at : at + 32], "big") for at in range(0, len(records), RECORD)
        ]
        leaves = [
            _sha256(LEAF_DOMAIN + records[at : at + RECORD]).digest()
            for at in range(0, len(records), RECORD)
        ]
        lo, hi, level = 0, len(keys), depth
        while hi - lo >= 2:  # an internal node: split the leaves by the bit at `level`
            shift = 255 - level
            mid = bisect_left(
                keys, ((keys[lo] >> (shift + 1)) << (shift + 1)) | (1 << shift), lo, hi
            )
            if (kh_int >> shift) & 1:
                siblings.append(subtree_root(keys[lo:mid], leaves[lo:mid], level + 1))
                lo = mid
            else:
                siblings.append(subtree_root(keys[mid:hi], leaves[mid:hi], level + 1))
                hi = mid
            level += 1
        if hi == lo:
            return encode_proof(siblings, PROOF_EMPTY, None)
        at = lo * RECORD
        return _terminal(siblings, kh, records[at : at + RECORD])

    def _single_leaf(self, node: int, delta: Delta | None) -> bytes:
        """The record of the one leaf under a kind-1 node."""
        first = 1 << self.depth
        while node < first:
            node = 2 * node if self._node(2 * node, delta)[1] else 2 * node + 1
        records = self._bucket(node - first, delta)
        if len(records) != RECORD:
            raise StoreCorrupted("a single-leaf node over a bucket of another size")
        return records

    def iter_records(self) -> Iterator[bytes]:
        """Every 64-byte record in key-hash order."""
        for records in self._buckets:
            for at in range(0, len(records), RECORD):
                yield records[at : at + RECORD]

    # ------------------------------------------------------------------ writes

    def compute(self, changes: list[Change]) -> Delta:
        """The Delta of `changes` (sorted by key hash, unique) over this tree; the tree is
        unchanged."""
        return drive(self.compute_steps(changes))

    def compute_steps(self, changes: list[Change]) -> Steps[Delta]:
        """`compute` as steps: yields every BUCKETS_PER_STEP buckets re-hashed."""
        depth = self.depth
        delta = Delta(depth, self.count)
        shift = 256 - depth
        first = 1 << depth
        # The changed nodes of one level, sorted, with their hashes and kinds.
        dirty: list[int] = []
        digests: list[bytes] = []
        kinds: list[int] = []
        position, total = 0, len(changes)
        buckets, new_buckets = self._buckets, delta.buckets
        while position < total:
            index = changes[position][0] >> shift
            end = position + 1
            while end < total and changes[end][0] >> shift == index:
                end += 1
            old = buckets[index]  # each bucket comes up once: the changes are sorted
            if end - position == 1:  # the common case: one change, spliced in
                _, kh, vh = changes[position]
                new = _splice(old, kh, vh)
            else:
                new, _ = _merge(old, changes[position:end])
            position = end
            if new == old:
                continue
            delta.count += (len(new) - len(old)) // RECORD
            new_buckets[index] = new
            digest, kind = bucket_hash(new, depth)
            dirty.append(first + index)
            digests.append(digest)
            kinds.append(kind)
            if len(dirty) % BUCKETS_PER_STEP == 0:
                yield None
        all_nodes, all_digests, all_kinds = list(dirty), list(digests), list(kinds)
        # The top, level by level: a changed node's sibling is the next changed node or the
        # tree's own; _join's common case inlined (both sides hold leaves): the hot loop of a
        # block.
        tree_hashes, tree_kinds = self._hashes, self._kinds
        node_prefix = NODE_PREFIX.copy
        left: bytes | bytearray
        right: bytes | bytearray
        while dirty and dirty[0] > 1:
            parents: list[int] = []
            parent_digests: list[bytes] = []
            parent_kinds: list[int] = []
            count = len(dirty)
            dirty.append(0)  # a sentinel: nobody's sibling
            at = 0
            while at < count:
                node = dirty[at]
                if node & 1:  # a right child; its left sibling is the tree's
                    offset = (node - 1) << 5
                    left, left_kind = tree_hashes[offset : offset + 32], tree_kinds[node - 1]
                    right, right_kind = digests[at], kinds[at]
                    at += 1
                elif dirty[at + 1] == node + 1:  # both children changed
                    left, left_kind = digests[at], kinds[at]
                    right, right_kind = digests[at + 1], kinds[at + 1]
                    at += 2
                else:  # a left child; its right sibling is the tree's
                    offset = (node + 1) << 5
                    left, left_kind = digests[at], kinds[at]
                    right, right_kind = tree_hashes[offset : offset + 32], tree_kinds[node + 1]
                    at += 1
                parents.append(node >> 1)
                if left_kind and right_kind:
                    h = node_prefix()
                    h.update(left)
                    h.update(right)
                    parent_digests.append(h.digest())
                    parent_kinds.append(2)
                else:
                    digest, kind = _join(bytes(left), left_kind, bytes(right), right_kind)
                    parent_digests.append(digest)
                    parent_kinds.append(kind)
            dirty, digests, kinds = parents, parent_digests, parent_kinds
            all_nodes += parents
            all_digests += parent_digests
            all_kinds += parent_kinds
        delta.changed = (all_nodes, all_digests, all_kinds)
        return delta

    def apply(self, delta: Delta) -> None:
        """Move the head to `delta` (computed over this tree as it is now)."""
        if delta.depth != self.depth:
            raise StoreCorrupted("a delta computed for another bucket depth")
        buckets, kinds = self._buckets, self._kinds
        for index, records in delta.buckets.items():
            buckets[index] = records
        with memoryview(self._hashes) as hashes:  # its slice assignment is ~2x a bytearray's
            for node, digest, kind in zip(*delta.changed, strict=True):
                at = node << 5
                hashes[at : at + 32] = digest
                kinds[node] = kind
        self.count = delta.count

    def needs_regrow(self) -> bool:
        return self.depth < MAX_DEPTH and self.count > GROW_PER_BUCKET << self.depth

    def recut(self) -> tuple[list[bytes], int, int]:
        """(buckets, count, depth) of this tree's records cut at the depth its size calls for,
        to hash and `assemble`: a regrow, O(state). It takes this tree's buckets as it goes
        (no second copy of the state in memory): this tree is empty afterwards."""
        depth, count = depth_for(self.count), self.count
        buckets = _split(self._buckets, depth, consume=True)
        self._buckets, self.count = [_EMPTY_BUCKET] * len(self._buckets), 0
        return buckets, count, depth

    def regrown(self) -> FlatTree:
        """The same tree at the depth its size calls for (see recut; one process)."""
        buckets, count, depth = self.recut()
        return self._from_buckets(buckets, count, depth)

    # ------------------------------------------------------------------ persistence

    def iter_bytes(self) -> Iterator[bytes]:
        """The whole tree as chunks of bytes: header, per-bucket record counts, records, top
        hashes and kinds, then a CRC-32 of all of it (damage on disk, not an attacker: the
        file is the node's own, and a reopen from it is trusted only after a clean shutdown,
        docs/STORE.md). Streamed, so a close at 10 M keys holds no second copy of the tree."""
        buckets = self._buckets
        crc = 0
        record_bytes = sum(map(len, buckets))
        chunks: Iterator[bytes] = itertools.chain(
            (_HEADER.pack(_MAGIC, self.depth, self.count, record_bytes),),
            (
                struct.pack(f">{len(part)}I", *(len(b) // RECORD for b in part))
                for part in _parts(buckets)
            ),
            (b"".join(part) for part in _parts(buckets)),
            (bytes(self._hashes), bytes(self._kinds)),
        )
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
            yield chunk
        yield struct.pack(">I", crc)

    def to_bytes(self) -> bytes:
        return b"".join(self.iter_bytes())

    @classmethod
    def read_from(cls, stream: BinaryIO) -> FlatTree:
        """The tree `iter_bytes` wrote, read to the end of `stream`; StoreCorrupted if the
        bytes are not one. Records are read in slices of a few MiB, never the file at once."""
        crc = 0

        def read(size: int) -> bytes:
            nonlocal crc
            data = stream.read(size)
            if len(data) != size:
                raise StoreCorrupted("tree snapshot is truncated")
            crc = zlib.crc32(data, crc)
            return data

        magic, depth, count, record_bytes = _HEADER.unpack(read(_HEADER.size))
        if magic != _MAGIC or not MIN_DEPTH <= depth <= MAX_DEPTH or count * RECORD != record_bytes:
            raise StoreCorrupted("tree snapshot has an unknown layout")
        buckets_n, nodes = 1 << depth, 1 << (depth + 1)
        counts = struct.unpack(f">{buckets_n}I", read(4 * buckets_n))
        if sum(counts) != count:
            raise StoreCorrupted("tree snapshot counts disagree")
        buckets: list[bytes] = []
        position = 0
        while position < buckets_n:
            end, size = position, 0
            while end < buckets_n and (size < _READ_BYTES or end == position):
                size += counts[end] * RECORD
                end += 1
            unpack_buckets(read(size), counts[position:end], buckets)
            position = end
        hashes = bytearray(read(32 * nodes))
        kinds = bytearray(read(nodes))
        expected = crc
        if stream.read(5) != struct.pack(">I", expected):
            raise StoreCorrupted("tree snapshot fails its checksum")
        return cls(depth, count, buckets, hashes, kinds)

    @classmethod
    def from_bytes(cls, data: bytes) -> FlatTree:
        return cls.read_from(io.BytesIO(data))


def _parts(buckets: list[bytes], size: int = 4096) -> Iterator[list[bytes]]:
    for start in range(0, len(buckets), size):
        yield buckets[start : start + size]


def _split(blobs: list[bytes], depth: int, *, consume: bool = False) -> list[bytes]:
    """Sorted record blobs (each sorted, in order, e.g. the buckets of a smaller depth) cut
    into the 2**depth buckets of `depth`; `consume` empties each blob once it is cut."""
    buckets = [_EMPTY_BUCKET] * (1 << depth)
    shift = 32 - depth
    for position, blob in enumerate(blobs):
        if consume:
            blobs[position] = _EMPTY_BUCKET
        size, start = len(blob), 0
        while start < size:
            index = int.from_bytes(blob[start : start + 4], "big") >> shift
            end = start + RECORD
            while end < size and int.from_bytes(blob[end : end + 4], "big") >> shift == index:
                end += RECORD
            buckets[index] = blob[start:end] if start or end < size else blob
            start = end
    return buckets


def split_sorted(
    records: list[bytes], depth: int, first: int = 0, size: int | None = None
) -> list[bytes]:
    """A sorted list of records cut into the buckets of `depth` (bisect per bucket): all
    2**depth, or `size` of them from bucket `first` (one half of the tree, whose records
    these all are)."""
    size = (1 << depth) - first if size is None else size
    buckets = [_EMPTY_BUCKET] * size
    shift = 32 - depth
    lo, count = 0, len(records)
    while lo < count:
        index = int.from_bytes(records[lo][:4], "big") >> shift
        hi = count
        if index + 1 < 1 << depth:
            hi = bisect_left(records, ((index + 1) << shift).to_bytes(4, "big"), lo, count)
        buckets[index - first] = b"".join(records[lo:hi])
        lo = hi
    return buckets


def pack_buckets(buckets: list[bytes]) -> tuple[bytes, bytes]:
    """Buckets as (their records joined, their record counts as uint32s): two bytes objects
    to send to another process instead of a list of many."""
    return b"".join(buckets), array.array("I", [len(b) // RECORD for b in buckets]).tobytes()


def unpack_buckets(
    blob: bytes, counts: Iterable[int], into: list[bytes] | None = None
) -> list[bytes]:
    """Buckets cut from their joined records by their record counts (`pack_buckets`' are
    `array.array("I", counts)`), appended to `into` (a new list by default) and returned;
    StoreCorrupted if the counts do not cover the blob."""
    buckets: list[bytes] = [] if into is None else into
    append, at = buckets.append, 0
    for n in counts:
        if n:
            append(blob[at : at + n * RECORD])
            at += n * RECORD
        else:
            append(_EMPTY_BUCKET)
    if at != len(blob):
        raise StoreCorrupted("bucket counts disagree with their records")
    return buckets


def pack_hashes(hashed: list[tuple[bytes, int]]) -> bytes:
    """bucket_hashes' (hash, kind) pairs as 33 bytes each."""
    return b"".join(digest + bytes((kind,)) for digest, kind in hashed)


def unpack_hashes(blob: bytes) -> list[tuple[bytes, int]]:
    return [(blob[at : at + 32], blob[at + 32]) for at in range(0, len(blob), 33)]


def _find(records: bytes, kh: bytes) -> int:
    """Byte offset of the record of `kh` in a bucket, or -1 (binary search over records)."""
    lo, hi = 0, len(records) // RECORD
    while lo < hi:
        mid = (lo + hi) // 2
        probe = records[mid * RECORD : mid * RECORD + 32]
        if probe < kh:
            lo = mid + 1
        elif probe > kh:
            hi = mid
        else:
            return mid * RECORD
    return -1


def _splice(records: bytes, kh: bytes, vh: bytes | None) -> bytes:
    """A bucket's records with one change applied: the record of `kh` replaced, inserted in
    order, or removed (`vh` None)."""
    size = len(records)
    lo, hi = 0, size // RECORD
    while lo < hi:  # the first record not below kh
        mid = (lo + hi) >> 1
        at = mid * RECORD
        if records[at : at + 32] < kh:
            lo = mid + 1
        else:
            hi = mid
    at = lo * RECORD
    if at < size and records[at : at + 32] == kh:
        if vh is None:
            return records[:at] + records[at + RECORD :]
        return records[:at] + kh + vh + records[at + RECORD :]
    if vh is None:
        return records
    return records[:at] + kh + vh + records[at:]


def _merge(records: bytes, changes: list[Change]) -> tuple[bytes, int]:
    """A bucket's records with `changes` applied, and the change in its leaf count."""
    table = {
        records[at : at + 32]: records[at : at + RECORD] for at in range(0, len(records), RECORD)
    }
    before = len(table)
    for _, kh, vh in changes:
        if vh is None:
            table.pop(kh, None)
        else:
            table[kh] = kh + vh
    return b"".join(sorted(table.values())), len(table) - before


def _terminal(siblings: list[bytes], kh: bytes, record: bytes) -> bytes:
    if record[:32] == kh:
        return encode_proof(siblings, PROOF_LEAF, None)
    return encode_proof(siblings, PROOF_OTHER_LEAF, (record[:32], record[32:]))
