"""Merkle hashing rules and proofs: the light client's side.

Proofs verify for present and absent keys (at old heights too, see tests/store), and fail for
wrong values, wrong roots, truncated, extended or altered proofs, without ever raising.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings

from node.core import codec, merkle
from node.store import tree

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
    assert forward == backward == tree.root_hash(tree.build_from_pairs(kv.items()))


@given(kv=pairs, probe=st.binary(min_size=1, max_size=4))
@settings(max_examples=150)
def test_proofs_verify_present_and_absent_and_fail_when_wrong(
    kv: dict[bytes, bytes], probe: bytes
) -> None:
    root_node = tree.build_from_pairs(kv.items())
    root = tree.root_hash(root_node)
    for key in list(kv)[:6] + [probe]:
        value = kv.get(key)
        proof = tree.prove(root_node, key)
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
    root_node = tree.build_from_pairs(kv.items())
    root = tree.root_hash(root_node)
    for probe in (b"absent-1", b"absent-2", b"zz", b"\x00\x01"):
        proof = codec.decode(tree.prove(root_node, probe), merkle.Proof)
        assert merkle.verify_proof(root, probe, None, codec.encode(proof))
        if proof.terminal == merkle.PROOF_OTHER_LEAF:
            # Claiming the other leaf proves absence of *that* leaf's own key: refused.
            assert proof.leaf_key_hash != merkle.key_hash(probe)


def test_proofs_are_compact() -> None:
    kv = {i.to_bytes(4, "big"): b"x" * 100 for i in range(5000)}
    root_node = tree.build_from_pairs(kv.items())
    sizes = [len(tree.prove(root_node, key)) for key in list(kv)[:200]]
    # ~log2(5000) = 12.3 siblings of 32 bytes plus a few bytes of framing
    assert sum(sizes) / len(sizes) < 32 * 16
