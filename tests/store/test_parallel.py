"""The two-process root equals the reference root, including the single-leaf and empty-side
cases at the top of the tree."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from node.core import merkle
from node.store import parallel


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=8), st.binary(max_size=8), max_size=40))
def test_parallel_root_is_the_reference_root(pairs: dict[bytes, bytes]) -> None:
    items = sorted(pairs.items())
    assert parallel.state_root(items, min_keys=0) == merkle.reference_root(items)


def test_large_state_takes_the_parallel_path() -> None:
    items = [(b"key%06d" % i, b"v%d" % i) for i in range(30_000)]
    assert parallel.state_root(items) == merkle.reference_root(items)
