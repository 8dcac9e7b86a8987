"""In-memory, persistent (copy-on-write) sparse Merkle tree. Imports node.core.merkle.

The hashing rules are `node.core.merkle`'s; this module keeps the nodes so that a block of
updates re-hashes only the paths it touches and every older version stays readable by holding
its root (unchanged subtrees are shared between versions, as in a functional map).

Nodes are tuples, chosen for speed over classes:
- `None`: an empty subtree;
- leaf `(hash, key_hash_int, key_hash, value_hash)`;
- internal `(hash, left, right)`, either child possibly `None` (a one-sided node on a shared
  prefix; an internal node never has a leaf beside an empty side: that leaf is collapsed up).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from node.core.merkle import (
    EMPTY,
    KEY_BITS,
    KEY_DOMAIN,
    LEAF_DOMAIN,
    NODE_DOMAIN,
    PROOF_EMPTY,
    PROOF_LEAF,
    PROOF_OTHER_LEAF,
    VALUE_DOMAIN,
    encode_proof,
)
from node.store.errors import StoreCorrupted

Node = Any  # None | leaf 4-tuple | internal 3-tuple (recursive types do not help mypy here)
Change = tuple[int, bytes, bytes | None]  # (key hash int, key hash, new value hash or None)
_sha256 = hashlib.sha256
_TOP = KEY_BITS - 1


def make_change(key: bytes, value: bytes | None) -> Change:
    kh = _sha256(KEY_DOMAIN + key).digest()
    vh = None if value is None else _sha256(VALUE_DOMAIN + value).digest()
    return (int.from_bytes(kh, "big"), kh, vh)


def root_hash(node: Node) -> bytes:
    return EMPTY if node is None else node[0]


def _leaf(change: Change) -> Node:
    kh_int, kh, vh = change
    if vh is None:
        raise StoreCorrupted("a leaf change without a value hash")
    return (_sha256(LEAF_DOMAIN + kh + vh).digest(), kh_int, kh, vh)


def _join(left: Node, right: Node) -> Node:
    """The node over two children at the next depth, collapsing a lone leaf upward."""
    if left is None:
        if right is None or len(right) == 4:
            return right
        return (_sha256(NODE_DOMAIN + EMPTY + right[0]).digest(), None, right)
    if right is None:
        if len(left) == 4:
            return left
        return (_sha256(NODE_DOMAIN + left[0] + EMPTY).digest(), left, None)
    return (_sha256(NODE_DOMAIN + left[0] + right[0]).digest(), left, right)


def build(leaves: list[Node], depth: int = 0) -> Node:
    """A subtree at `depth` over leaves sorted by key hash (all sharing `depth` prefix bits)."""
    if not leaves:
        return None
    keys = [leaf[1] for leaf in leaves]
    return _build(leaves, keys, 0, len(leaves), depth)


def _build(leaves: list[Node], keys: list[int], lo: int, hi: int, depth: int) -> Node:
    if hi - lo == 1:
        return leaves[lo]
    first = keys[lo]
    branch = KEY_BITS - (first ^ keys[hi - 1]).bit_length()
    shift = _TOP - branch
    mid = bisect_left(keys, ((first >> shift) | 1) << shift, lo, hi)
    left = _build(leaves, keys, lo, mid, branch + 1)
    right = _build(leaves, keys, mid, hi, branch + 1)
    node = (_sha256(NODE_DOMAIN + left[0] + right[0]).digest(), left, right)
    for bit_depth in range(branch - 1, depth - 1, -1):  # one-sided nodes over the shared prefix
        if (first >> (_TOP - bit_depth)) & 1:
            node = (_sha256(NODE_DOMAIN + EMPTY + node[0]).digest(), None, node)
        else:
            node = (_sha256(NODE_DOMAIN + node[0] + EMPTY).digest(), node, None)
    return node


def build_from_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> Node:
    """A whole tree from (key, value) pairs in any order (keys unique)."""
    leaves = [_leaf(make_change(key, value)) for key, value in pairs]
    leaves.sort(key=lambda leaf: leaf[1])
    return build(leaves)


def build_from_changes(changes: Iterable[Change]) -> Node:
    """A whole tree from changes that all carry a value hash (keys unique), in any order."""
    leaves = [_leaf(change) for change in changes]
    leaves.sort(key=lambda leaf: leaf[1])
    return build(leaves)


def update(root: Node, changes: list[Change]) -> Node:
    """A new root with `changes` applied (sorted by key hash, unique); `root` is unchanged."""
    if not changes:
        return root
    keys = [change[0] for change in changes]
    return _update(root, 0, keys, changes, 0, len(changes))


def _update(
    node: Node, depth: int, keys: list[int], changes: list[Change], lo: int, hi: int
) -> Node:
    if hi - lo == 1:
        return _update_one(node, depth, changes[lo])
    if node is None:
        return build([_leaf(c) for c in changes[lo:hi] if c[2] is not None], depth)
    if len(node) == 4:
        return _merge_into_leaf(node, depth, changes[lo:hi])
    shift = _TOP - depth
    mid = bisect_left(keys, ((keys[lo] >> shift) | 1) << shift, lo, hi)
    _, left, right = node
    new_left = _update(left, depth + 1, keys, changes, lo, mid) if mid > lo else left
    new_right = _update(right, depth + 1, keys, changes, mid, hi) if hi > mid else right
    if new_left is left and new_right is right:
        return node
    return _join(new_left, new_right)


def _update_one(root: Node, depth: int, change: Change) -> Node:
    """One change under `root`: walk down, then re-hash the path (the hot path of a block)."""
    kh_int, _, vh = change
    nodes: list[Node] = []
    bits: list[int] = []
    node = root
    shift = _TOP - depth
    while node is not None and len(node) == 3:
        bit = (kh_int >> shift) & 1
        nodes.append(node)
        bits.append(bit)
        node = node[1 + bit]
        shift -= 1
    if node is None:
        if vh is None:
            return root  # deleting an absent key
        new = _leaf(change)
    elif node[1] == kh_int:
        if vh == node[3]:
            return root
        new = None if vh is None else _leaf(change)
    elif vh is None:
        return root
    else:
        pair = [node, _leaf(change)] if node[1] < kh_int else [_leaf(change), node]
        new = build(pair, _TOP - shift)
    sha, domain, empty = _sha256, NODE_DOMAIN, EMPTY
    for index in range(len(nodes) - 1, -1, -1):
        parent = nodes[index]
        if bits[index]:
            left = parent[1]
            if left is not None and new is not None:
                new = (sha(domain + left[0] + new[0]).digest(), left, new)
                continue
            right = new
        else:
            right = parent[2]
            if right is not None and new is not None:
                new = (sha(domain + new[0] + right[0]).digest(), new, right)
                continue
            left = new
        if left is None:
            if right is None or len(right) == 4:
                new = right
            else:
                new = (sha(domain + empty + right[0]).digest(), None, right)
        elif len(left) == 4:
            new = left
        else:
            new = (sha(domain + left[0] + empty).digest(), left, None)
    return new


def _merge_into_leaf(leaf: Node, depth: int, changes: list[Change]) -> Node:
    kh_int = leaf[1]
    leaves = []
    replaced = False
    for change in changes:
        if change[0] == kh_int:
            replaced = True
            if change[2] is not None:
                if change[2] == leaf[3]:
                    leaves.append(leaf)
                else:
                    leaves.append(_leaf(change))
        elif change[2] is not None:
            leaves.append(_leaf(change))
    if not replaced:
        leaves.append(leaf)
        leaves.sort(key=lambda item: item[1])
    if len(leaves) == 1:
        return leaves[0]
    return build(leaves, depth)


def lookup(root: Node, kh_int: int) -> bytes | None:
    """The value hash stored under a key hash, or None."""
    node, depth = root, 0
    while node is not None and len(node) == 3:
        node = node[2] if (kh_int >> (_TOP - depth)) & 1 else node[1]
        depth += 1
    if node is None or node[1] != kh_int:
        return None
    return node[3]  # type: ignore[no-any-return]


def prove(root: Node, key: bytes) -> bytes:
    """Canonical proof bytes for `key` (inclusion or non-inclusion); see merkle.verify_proof."""
    kh_int = make_change(key, None)[0]
    siblings: list[bytes] = []
    node, depth = root, 0
    while node is not None and len(node) == 3:
        _, left, right = node
        if (kh_int >> (_TOP - depth)) & 1:
            siblings.append(EMPTY if left is None else left[0])
            node = right
        else:
            siblings.append(EMPTY if right is None else right[0])
            node = left
        depth += 1
    if node is None:
        return encode_proof(siblings, PROOF_EMPTY, None)
    if node[1] == kh_int:
        return encode_proof(siblings, PROOF_LEAF, None)
    return encode_proof(siblings, PROOF_OTHER_LEAF, (node[2], node[3]))


def iter_leaves(root: Node) -> Iterator[Node]:
    """Every leaf in key-hash order."""
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        if len(node) == 4:
            yield node
        else:
            stack.append(node[2])
            stack.append(node[1])
