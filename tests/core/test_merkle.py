"""Merkle hashing rules and proofs: the light client's side.

Proofs verify for present and absent keys (at old heights too, see tests/store), and fail for
wrong values, wrong roots, truncated, extended or altered proofs, without ever raising.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from node.core import codec, merkle
from node.store.flattree import FlatTree

pairs = st.dictionaries(st.binary(min_size=1, max_size=4), st.binary(max_size=4), max_size=40)


def test_empty_root_is_fixed_and_not_zero() -> None:
    assert merkle.reference_root([]) == merkle.EMPTY_ROOT
    assert merkle.EMPTY_ROOT != bytes(32) and len(merkle.EMPTY_ROOT) == 32


def test_domains_separate_leaves_from_nodes() -> None:
    a, b = bytes(32), bytes([1]) * 32
    assert merkle.leaf_hash(a, b) != merkle.node_hash(a, b)
    assert merkle.key_hash(b"x") != merkle.value_hash(b"x")


def test_single_pair_root_is_its_leaf() -> None:
    kh = merkle.key_hash(b"k")
    assert merkle.reference_root([(b"k", b"v")]) == merkle.leaf_hash(kh, merkle.value_hash(b"v"))


@given(pairs)
def test_root_is_independent_of_insertion_order(kv: dict[bytes, bytes]) -> None:
    forward = merkle.reference_root(kv.items())
    backward = merkle.reference_root(reversed(list(kv.items())))
    assert forward == backward == FlatTree.from_pairs(kv.items()).root()


@given(kv=pairs, probe=st.binary(min_size=1, max_size=4))
@settings(max_examples=150)
def test_proofs_verify_present_and_absent_and_fail_when_wrong(
    kv: dict[bytes, bytes], probe: bytes
) -> None:
    root_node = FlatTree.from_pairs(kv.items())
    root = root_node.root()
    for key in list(kv)[:6] + [probe]:
        value = kv.get(key)
        proof = root_node.prove(key)
        assert merkle.verify_proof(root, key, value, proof)
        wrong = b"\x00" if value is None else value + b"!"
        assert not merkle.verify_proof(root, key, wrong, proof)
        if value is not None:
            assert not merkle.verify_proof(root, key, None, proof)
        assert not merkle.verify_proof(bytes(32), key, value, proof)
        if value is not None:  # an inclusion proof speaks for its own key only
            assert not merkle.verify_proof(root, key + b"?", value, proof)
        for cut in {0, 1, len(proof) // 2, len(proof) - 1}:
            assert not merkle.verify_proof(root, key, value, proof[:cut])
        assert not merkle.verify_proof(root, key, value, proof + b"\x00")
        for position in range(0, len(proof), max(1, len(proof) // 12)):
            altered = bytearray(proof)
            altered[position] ^= 0x01
            assert not merkle.verify_proof(root, key, value, bytes(altered))


def test_verify_proof_is_total_on_garbage() -> None:
    root = merkle.reference_root([(b"a", b"1")])
    for junk in [b"", b"\xc1", b"\x90", codec.pack([0x50]), b"\xff" * 100, codec.pack([1, 2, 3])]:
        assert merkle.verify_proof(root, b"a", b"1", junk) is False
    assert merkle.verify_proof(b"short", b"a", b"1", b"") is False


def test_proof_of_other_leaf_must_share_the_path() -> None:
    kv = {bytes([i]): b"v" for i in range(50)}
    root_node = FlatTree.from_pairs(kv.items())
    root = root_node.root()
    for probe in (b"absent-1", b"absent-2", b"zz", b"\x00\x01"):
        proof = codec.decode(root_node.prove(probe), merkle.Proof)
        assert merkle.verify_proof(root, probe, None, codec.encode(proof))
        if proof.terminal == merkle.PROOF_OTHER_LEAF:
            # Claiming the other leaf proves absence of *that* leaf's own key: refused.
            assert proof.leaf_key_hash != merkle.key_hash(probe)


def test_proofs_are_compact() -> None:
    kv = {i.to_bytes(4, "big"): b"x" * 100 for i in range(5000)}
    root_node = FlatTree.from_pairs(kv.items())
    sizes = [len(root_node.prove(key)) for key in list(kv)[:200]]
    # ~log2(5000) = 12.3 siblings of 32 bytes plus a few bytes of framing
    assert sum(sizes) / len(sizes) < 32 * 16


def _definition(keys: list[int], leaves: list[bytes], lo: int, hi: int, depth: int) -> bytes:
    """The subtree hash by the rules of the module docstring, recursively: EMPTY, the lone
    leaf, or the node over the two halves split at `depth` (an empty half is EMPTY)."""
    if hi == lo:
        return merkle.EMPTY
    if hi - lo == 1:
        return leaves[lo]
    mid = lo
    while mid < hi and not (keys[mid] >> (merkle.KEY_BITS - 1 - depth)) & 1:
        mid += 1
    left = _definition(keys, leaves, lo, mid, depth + 1)
    right = _definition(keys, leaves, mid, hi, depth + 1)
    return merkle.node_hash(left, right)


@given(
    prefix_bits=st.integers(0, 3),
    spread=st.sampled_from([2, 5, 9, 256]),
    seeds=st.lists(st.integers(0, 2**256 - 1), max_size=24, unique=True),
)
@settings(max_examples=300)
def test_the_one_pass_root_is_the_recursive_definition(
    prefix_bits: int, spread: int, seeds: list[int]
) -> None:
    """Keys crowded into a few bits make long shared prefixes (one-sided nodes); a subtree at
    a depth > 0 has every key under one prefix."""
    free = merkle.KEY_BITS - prefix_bits
    prefix = (seeds[0] >> free) << free if seeds else 0
    keys = sorted(
        {
            prefix | ((seed % (1 << min(spread, free))) << (free - min(spread, free)))
            for seed in seeds
        }
    )
    leaves = [merkle.node_hash(k.to_bytes(32, "big"), b"leaf") for k in keys]
    expected = _definition(keys, leaves, 0, len(keys), prefix_bits)
    assert merkle.subtree_root(keys, leaves, prefix_bits) == expected
    if prefix_bits == 0:
        assert merkle.root_from_sorted(keys, leaves) == expected


@given(seeds=st.lists(st.integers(0, 2**256 - 1), min_size=1, max_size=12, unique=True))
def test_two_leaves_with_one_key_hash_are_refused_not_hashed(seeds: list[int]) -> None:
    """A repeated key hash (a key given twice) has no place in the tree: the one-pass root
    raises instead of hashing a node over the two (verify's duplicate check rides on it)."""
    keys = sorted(seeds)
    doubled = sorted(keys + keys[:1])
    leaves = [merkle.node_hash(k.to_bytes(32, "big"), b"leaf") for k in doubled]
    with pytest.raises(ValueError, match="one key hash"):
        merkle.subtree_root(doubled, leaves, 0)
