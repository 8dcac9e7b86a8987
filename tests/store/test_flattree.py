"""The flat-array tree (node/store/flattree.py) against the definition in node.core.merkle.

The bucket depth is a physical choice only: at every depth the root is `reference_root` of the
pairs and every proof is the same bytes and verifies; a Delta read before `apply` answers as the
applied tree does; the bytes of `to_bytes` come back as the same tree, and damaged bytes are
refused.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from node.core import merkle
from node.store import StoreCorrupted
from node.store.flattree import (
    MIN_DEPTH,
    FlatTree,
    _merge,
    _splice,
    bucket_hash,
    make_change,
    split_sorted,
)

keys = st.binary(min_size=1, max_size=3)
states = st.dictionaries(keys, st.binary(max_size=3), max_size=60)
updates = st.dictionaries(keys, st.none() | st.binary(max_size=3), max_size=30)


def _at_depth(kv: dict[bytes, bytes], depth: int) -> FlatTree:
    records = sorted(merkle.key_hash(k) + merkle.value_hash(v) for k, v in kv.items())
    return FlatTree._from_buckets(split_sorted(records, depth), len(records), depth)


@given(kv=states, depth=st.integers(MIN_DEPTH, 12), probe=keys)
@settings(max_examples=150)
def test_every_depth_gives_the_reference_root_and_the_same_proofs(
    kv: dict[bytes, bytes], depth: int, probe: bytes
) -> None:
    tree, base = _at_depth(kv, depth), FlatTree.from_pairs(kv.items())
    root = merkle.reference_root(kv.items())
    assert tree.root() == base.root() == root and tree.count == len(kv)
    for key in list(kv)[:8] + [probe]:
        proof = tree.prove(key)
        assert proof == base.prove(key)
        assert merkle.verify_proof(root, key, kv.get(key), proof)
        expected = None if key not in kv else merkle.value_hash(kv[key])
        assert tree.lookup(merkle.key_hash(key)) == expected


@given(kv=states, blocks=st.lists(updates, max_size=4), depth=st.integers(MIN_DEPTH, 9))
@settings(max_examples=120)
def test_a_delta_reads_as_the_applied_tree_and_leaves_the_head_alone(
    kv: dict[bytes, bytes], blocks: list[dict[bytes, bytes | None]], depth: int
) -> None:
    tree = _at_depth(kv, depth)
    for block in blocks:
        before = tree.root()
        delta = tree.compute(sorted(make_change(k, v) for k, v in block.items()))
        assert tree.root() == before  # computing changes nothing
        for key, value in block.items():
            if value is None:
                kv.pop(key, None)
            else:
                kv[key] = value
        root = merkle.reference_root(kv.items())
        assert tree.root(delta) == root and delta.count == len(kv)
        for key in list(block)[:5]:
            assert merkle.verify_proof(root, key, kv.get(key), tree.prove(key, delta))
        tree.apply(delta)
        assert tree.root() == root and tree.count == len(kv)
        for key in list(block)[:5]:
            assert tree.prove(key) == FlatTree.from_pairs(kv.items()).prove(key)


def test_the_tree_regrows_its_buckets_as_the_state_grows() -> None:
    kv = {i.to_bytes(4, "big"): b"v" for i in range(3000)}
    tree = FlatTree.empty()
    assert tree.depth == MIN_DEPTH
    items = sorted(kv.items())
    for start in range(0, len(items), 500):
        tree.apply(tree.compute(sorted(make_change(k, v) for k, v in items[start : start + 500])))
        if tree.needs_regrow():
            tree = tree.regrown()
    assert tree.depth > MIN_DEPTH + 2 and tree.count == 3000
    assert tree.root() == merkle.reference_root(kv.items())


def test_bytes_round_trip_and_damage_is_refused() -> None:
    kv = {i.to_bytes(3, "big"): bytes([i % 7]) for i in range(700)}
    tree = FlatTree.from_pairs(kv.items())
    data = tree.to_bytes()
    again = FlatTree.from_bytes(data)
    assert again.root() == tree.root() and again.depth == tree.depth
    assert [again.prove(k) for k in list(kv)[:20]] == [tree.prove(k) for k in list(kv)[:20]]
    for position in (0, 7, len(data) // 2, len(data) - 40, len(data) - 1):
        damaged = bytearray(data)
        damaged[position] ^= 0x10
        with pytest.raises(StoreCorrupted):
            FlatTree.from_bytes(bytes(damaged))
    with pytest.raises(StoreCorrupted):
        FlatTree.from_bytes(data[:-5])


@given(
    bucket=st.lists(st.binary(min_size=32, max_size=32), max_size=9, unique=True),
    target=st.integers(0, 9),
    fresh=st.binary(min_size=32, max_size=32),
    value=st.none() | st.binary(min_size=32, max_size=32),
)
def test_one_change_spliced_into_a_bucket_is_the_merge(
    bucket: list[bytes], target: int, fresh: bytes, value: bytes | None
) -> None:
    """The block's common case (one change in a bucket) is spliced in by binary search; it
    must equal the general merge for an insert, a replace and a delete, present or absent."""
    records = b"".join(sorted(kh + kh[::-1] for kh in bucket))
    kh = bucket[target] if target < len(bucket) else fresh
    change = (int.from_bytes(kh, "big"), kh, value)
    assert _splice(records, kh, value) == _merge(records, [change])[0]


# Key hashes of a bucket at depth 4 (first 4 bits 0101), built to split anywhere: the bits
# after the shared prefix come from a few seeds, so neighbours may share 64 bits or more (the
# 256-bit fallback) and split at bit 63 (the last bit of the fast path's prefix) or before.
_bucket_keys = st.lists(
    st.tuples(st.integers(0, 2**60 - 1), st.sampled_from([0, 1, 2**191, 2**191 + 1])).map(
        lambda pair: ((0b0101 << 252) | (pair[0] << 192) | pair[1]).to_bytes(32, "big")
    ),
    min_size=2,
    max_size=10,
    unique=True,
)


@given(bucket=_bucket_keys, low_bits=st.booleans())
@settings(max_examples=300)
def test_a_bucket_hashes_as_its_subtree_by_the_definition(
    bucket: list[bytes], low_bits: bool
) -> None:
    """bucket_hash splits a bucket's leaves by their first 64 key hash bits when those tell
    them apart, else by all 256: either way it is merkle.subtree_root of the leaves."""
    if low_bits:  # neighbours that differ only in the last bit of the 64-bit prefix
        bucket = sorted(
            {kh[:7] + bytes([kh[7] & 0xFE | bit]) + kh[8:] for kh in bucket for bit in (0, 1)}
        )
    records = sorted(kh + bytes(reversed(kh)) for kh in bucket)
    leaves = [merkle.leaf_hash(record[:32], record[32:]) for record in records]
    keys = [int.from_bytes(record[:32], "big") for record in records]
    expected = merkle.subtree_root(keys, leaves, 4)
    assert bucket_hash(b"".join(records), 4) == (expected, 2)
