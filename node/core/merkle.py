"""Merkle hashing rules, proofs and a reference root. Imports node.core.{codec,crypto,errors}.

The state tree is a sparse binary Merkle tree over `key_hash(key)` (256 bits, MSB first) with
collapsed single-leaf subtrees (as Diem/Aptos JMT):

- an empty subtree hashes to EMPTY (a tagged constant, never a real node's hash);
- a subtree holding exactly one (key, value) is that leaf, wherever it sits:
  `leaf_hash = H(leaf-domain || key_hash || value_hash)`;
- a subtree holding two or more is `node_hash = H(node-domain || left || right)`; a side with no
  leaves contributes EMPTY (so a shared prefix costs one node per bit).

The root is thus a pure function of the set of pairs (`reference_root`), whatever the order of
updates that produced it. Proofs list the siblings from the root down with a bitmap of the
non-empty ones; `verify_proof` is all a light client needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import ClassVar

from node.core import codec
from node.core.crypto import domain
from node.core.errors import NotCanonical, OutOfRange

_sha256 = hashlib.sha256
KEY_DOMAIN = domain("smt-key")
VALUE_DOMAIN = domain("smt-value")
LEAF_DOMAIN = domain("smt-leaf")
NODE_DOMAIN = domain("smt-node")
EMPTY = _sha256(domain("smt-empty")).digest()
EMPTY_ROOT = EMPTY  # the root of the tree with no keys
KEY_BITS = 256

PROOF_EMPTY = 0  # the path ends in an empty subtree: the key is absent
PROOF_LEAF = 1  # the path ends in the key's own leaf: present with the given value
PROOF_OTHER_LEAF = 2  # the path ends in another key's leaf: the key is absent


def key_hash(key: bytes) -> bytes:
    return _sha256(KEY_DOMAIN + key).digest()


def value_hash(value: bytes) -> bytes:
    return _sha256(VALUE_DOMAIN + value).digest()


def leaf_hash(key_hash_: bytes, value_hash_: bytes) -> bytes:
    return _sha256(LEAF_DOMAIN + key_hash_ + value_hash_).digest()


# A node's hash starts from a copy of the hashed domain, then takes its two children: ~20%
# less than hashing domain + left + right, whose two concatenations make two objects. The
# tree's hot loops (blocks, verify) hash ~15 nodes an update.
NODE_PREFIX = _sha256(NODE_DOMAIN)
LEFT_EMPTY_PREFIX = _sha256(NODE_DOMAIN + EMPTY)  # a node whose left side is empty


def node_hash(left: bytes, right: bytes) -> bytes:
    h = NODE_PREFIX.copy()
    h.update(left)
    h.update(right)
    return h.digest()


def bit_at(key_hash_int: int, depth: int) -> int:
    """Bit `depth` (0 = most significant) of a 256-bit key hash held as an int."""
    return (key_hash_int >> (KEY_BITS - 1 - depth)) & 1


def root_from_sorted(key_hashes: list[int], leaf_hashes: list[bytes]) -> bytes:
    """Root over leaves sorted by key hash (ints, strictly increasing); O(n) hashes."""
    return subtree_root(key_hashes, leaf_hashes, 0)


def subtree_root(key_hashes: list[int], leaf_hashes: list[bytes], depth: int) -> bytes:
    """The hash of the subtree at `depth` holding these leaves (sorted, all sharing their
    first `depth` bits): EMPTY, the lone leaf, or the node padded up to `depth`. ValueError on
    two equal key hashes.

    One pass over the leaves with a stack (no recursion, no search): the split depth of two
    neighbours, the first bit where their key hashes differ, says how many pending left
    subtrees close before the next leaf. A stack entry is (hash, its split depth or KEY_BITS
    for a leaf, a key under it, the split depth with what follows); the bottom entry is a
    sentinel that never closes. The hot loop of verify and of every block (inlined: no call
    per node). tests/core/test_merkle.py checks it against the recursive definition."""
    count = len(key_hashes)
    if count == 0:
        return EMPTY
    node, bits = NODE_PREFIX.copy, KEY_BITS
    stack: list[tuple[bytes, int, int, int]] = [(EMPTY, 0, 0, -1)]
    push, pop = stack.append, stack.pop
    digest, split, key = leaf_hashes[0], bits, key_hashes[0]
    previous, following = key, 0
    for index in range(1, count + 1):
        if index < count:
            following = key_hashes[index]
            at = bits - (previous ^ following).bit_length()
            if at == bits:
                raise ValueError("two leaves with one key hash")
        else:
            at = -1  # past the last leaf: close everything but the sentinel
        while stack[-1][3] > at:  # close the pending left subtrees below the next split
            left, left_split, left_key, joint = pop()
            below = joint + 1
            if below < left_split < bits:
                left = _pad(left, left_split, left_key, below)
            if below < split < bits:
                digest = _pad(digest, split, key, below)
            h = node()
            h.update(left)
            h.update(digest)
            digest = h.digest()
            split, key = joint, left_key
        if at < 0:
            break
        push((digest, split, key, at))
        digest, split, key = leaf_hashes[index], bits, following
        previous = following
    return _pad(digest, split, key, depth)


def _pad(digest: bytes, split: int, key: int, depth: int) -> bytes:
    """A subtree whose node sits at depth `split`, seen from `depth` (<= split): one one-sided
    node per bit of the shared prefix in between; a leaf (split KEY_BITS) rises as is."""
    if split == KEY_BITS:
        return digest
    for bit_depth in range(split - 1, depth - 1, -1):
        if (key >> (KEY_BITS - 1 - bit_depth)) & 1:
            h = LEFT_EMPTY_PREFIX.copy()
        else:
            h = NODE_PREFIX.copy()
            h.update(digest)
            digest = EMPTY
        h.update(digest)
        digest = h.digest()
    return digest


def sorted_leaves(pairs: Iterable[tuple[bytes, bytes]]) -> tuple[list[int], list[bytes]]:
    """(key hashes as ints, leaf hashes), both sorted by key hash: the input of
    `root_from_sorted`. Raises ValueError on a duplicate key. The hot loop of `verify()`:
    comprehensions over local names, since three SHA-256 calls per key dominate."""
    sha, kd, vd, ld = _sha256, KEY_DOMAIN, VALUE_DOMAIN, LEAF_DOMAIN
    items = list(pairs)
    khs = [sha(kd + key).digest() for key, _ in items]
    leaves = [
        sha(ld + kh + sha(vd + value).digest()).digest()
        for kh, (_, value) in zip(khs, items, strict=True)
    ]
    order = sorted(range(len(khs)), key=khs.__getitem__)  # bytes order == int order
    ints = [int.from_bytes(khs[i], "big") for i in order]
    for index in range(1, len(ints)):
        if ints[index] == ints[index - 1]:
            raise ValueError(f"duplicate key {items[order[index]][0].hex()}")
    return ints, [leaves[i] for i in order]


def reference_root(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The root of a set of (key, value) pairs, by definition (order-independent)."""
    return root_from_sorted(*sorted_leaves(pairs))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Proof:
    """A path from the root to where `key_hash(key)` ends: a leaf, another leaf or emptiness."""

    TAG: ClassVar[int] = 0x50
    depth: int  # number of siblings, 0..256
    bitmap: bytes  # ceil(depth / 8) bytes; bit i (MSB first) set iff sibling i is not EMPTY
    siblings: bytes  # the non-EMPTY siblings, 32 bytes each, from the root down
    terminal: int  # PROOF_EMPTY, PROOF_LEAF or PROOF_OTHER_LEAF
    leaf_key_hash: bytes  # PROOF_OTHER_LEAF only (else b"")
    leaf_value_hash: bytes  # PROOF_OTHER_LEAF only (else b"")

    def sibling_hashes(self) -> list[bytes]:
        """All `depth` siblings with EMPTY filled in; raises NotCanonical if inconsistent."""
        if not 0 <= self.depth <= KEY_BITS or len(self.bitmap) != (self.depth + 7) // 8:
            raise NotCanonical("proof depth and bitmap disagree")
        bits = int.from_bytes(self.bitmap, "big") if self.bitmap else 0
        padding = len(self.bitmap) * 8 - self.depth
        if bits & ((1 << padding) - 1):
            raise NotCanonical("proof bitmap has bits set past its depth")
        present = bin(bits).count("1")
        if len(self.siblings) != 32 * present:
            raise NotCanonical("proof sibling bytes disagree with its bitmap")
        out: list[bytes] = []
        offset = 0
        for index in range(self.depth):
            if (bits >> (len(self.bitmap) * 8 - 1 - index)) & 1:
                sibling = self.siblings[offset : offset + 32]
                if sibling == EMPTY:
                    raise NotCanonical("proof lists EMPTY as a present sibling")
                out.append(sibling)
                offset += 32
            else:
                out.append(EMPTY)
        return out


def encode_proof(siblings: list[bytes], terminal: int, other: tuple[bytes, bytes] | None) -> bytes:
    """Canonical proof bytes from siblings (root down) and what the path ends in."""
    depth = len(siblings)
    bits = 0
    present: list[bytes] = []
    for sibling in siblings:
        bits <<= 1
        if sibling != EMPTY:
            bits |= 1
            present.append(sibling)
    width = (depth + 7) // 8
    bits <<= width * 8 - depth
    proof = Proof(
        depth=depth,
        bitmap=bits.to_bytes(width, "big") if width else b"",
        siblings=b"".join(present),
        terminal=terminal,
        leaf_key_hash=other[0] if other else b"",
        leaf_value_hash=other[1] if other else b"",
    )
    return codec.encode(proof)


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: bytes) -> bool:
    """True iff `proof` shows that under `root`, `key` maps to `value` (None: key absent).

    Pure and total: malformed or truncated proofs return False, they never raise.
    """
    if type(root) is not bytes or len(root) != 32 or type(key) is not bytes:
        return False
    try:
        parsed = codec.decode(proof, Proof, max_input=64 * 1024)
        siblings = parsed.sibling_hashes()
    except (NotCanonical, OutOfRange):
        return False
    kh = key_hash(key)
    kh_int = int.from_bytes(kh, "big")
    depth = parsed.depth
    if parsed.terminal == PROOF_LEAF:
        if value is None or parsed.leaf_key_hash or parsed.leaf_value_hash:
            return False
        digest = leaf_hash(kh, value_hash(value))
    elif parsed.terminal == PROOF_OTHER_LEAF:
        other_kh, other_vh = parsed.leaf_key_hash, parsed.leaf_value_hash
        if value is not None or len(other_kh) != 32 or len(other_vh) != 32 or other_kh == kh:
            return False
        other_int = int.from_bytes(other_kh, "big")
        if depth and (other_int ^ kh_int) >> (KEY_BITS - depth):  # must share the path prefix
            return False
        digest = leaf_hash(other_kh, other_vh)
    elif parsed.terminal == PROOF_EMPTY:
        if value is not None or parsed.leaf_key_hash or parsed.leaf_value_hash:
            return False
        digest = EMPTY
    else:
        return False
    for index in range(depth - 1, -1, -1):
        if bit_at(kh_int, index):
            digest = node_hash(siblings[index], digest)
        else:
            digest = node_hash(digest, siblings[index])
    return digest == root
