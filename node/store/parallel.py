"""Root recomputation on two cores, for `verify()` of a large state. Imports node.core.merkle.

The parent hashes the keys and splits them by the first bit of the key hash; a forked child
computes the right subtree while the parent computes the left; the root is the node over the
two (with the single-leaf and empty-side rules of node.core.merkle). The child only hashes and
writes 32 bytes to a pipe, then `_exit`s, so forking from a threaded program is safe. Any
failure of the child falls back to the single-process reference computation.
"""

from __future__ import annotations

import hashlib
import os

from node.core import merkle

PARALLEL_MIN_KEYS = 20_000


def _half_root(khs: list[bytes], values: list[bytes]) -> tuple[bytes, int]:
    """(subtree hash at depth 1, leaf count) of one half."""
    sha, vd, ld = hashlib.sha256, merkle.VALUE_DOMAIN, merkle.LEAF_DOMAIN
    leaves = [
        sha(ld + kh + sha(vd + v).digest()).digest() for kh, v in zip(khs, values, strict=True)
    ]
    order = sorted(range(len(khs)), key=khs.__getitem__)
    ints = [int.from_bytes(khs[i], "big") for i in order]
    return merkle.subtree_root(ints, [leaves[i] for i in order], 1), len(khs)


def _combine(left: tuple[bytes, int], right: tuple[bytes, int]) -> bytes:
    (left_hash, left_count), (right_hash, right_count) = left, right
    if left_count + right_count == 0:
        return merkle.EMPTY_ROOT
    if left_count + right_count == 1:  # a lone leaf is the root itself
        return left_hash if left_count else right_hash
    return merkle.node_hash(left_hash, right_hash)


def state_root(pairs: list[tuple[bytes, bytes]], *, min_keys: int = PARALLEL_MIN_KEYS) -> bytes:
    """The Merkle root of `pairs` (unique keys), on two processes when it pays."""
    if len(pairs) < min_keys or not hasattr(os, "fork") or (os.cpu_count() or 1) < 2:
        return merkle.reference_root(pairs)
    sha, kd = hashlib.sha256, merkle.KEY_DOMAIN
    khs = [sha(kd + key).digest() for key, _ in pairs]
    bits = [kh[0] >> 7 for kh in khs]
    halves = tuple(
        (
            [kh for kh, bit in zip(khs, bits, strict=True) if bit == side],
            [p[1] for p, bit in zip(pairs, bits, strict=True) if bit == side],
        )
        for side in (0, 1)
    )
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the right half, 32 bytes to the pipe, nothing else
        code = 1
        try:
            os.close(read_end)
            digest, count = _half_root(*halves[1])
            os.write(write_end, digest + count.to_bytes(8, "big"))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        left = _half_root(*halves[0])
        data = b""
        while len(data) < 40:
            chunk = os.read(read_end, 40 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    if len(data) != 40 or status != 0:
        return merkle.reference_root(pairs)  # the child failed: do it here
    return _combine(left, (data[:32], int.from_bytes(data[32:], "big")))
