"""Step generators give exactly the bytes of the one-shot computation they slice up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.core.blocks import (
    RECEIPT_STEP,
    TX_ROOT_STEP,
    BlockReceipts,
    Receipt,
    decode_receipts,
    encode_receipts,
    encode_receipts_steps,
    tx_root,
    tx_root_steps,
)
from node.core.records import EventKind, event
from node.core.steps import drive

events = st.builds(
    lambda kind, market, size, account: event(
        kind, market_id=market, size_atoms=size, account=account
    ),
    st.sampled_from(list(EventKind)),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.binary(max_size=32),
)
receipts = st.builds(
    lambda tx_hash, code, evs: Receipt(tx_hash=tx_hash, code=code, events=tuple(evs)),
    st.binary(min_size=32, max_size=32),
    st.integers(min_value=0, max_value=40),
    st.lists(events, max_size=3),
)


@given(
    items=st.lists(receipts, max_size=3 * RECEIPT_STEP + 5),
    block_events=st.lists(events, max_size=4),
)
def test_receipts_encoded_in_steps_are_the_canonical_bytes(
    items: list[Receipt], block_events: list
) -> None:
    record = BlockReceipts(receipts=tuple(items), block_events=tuple(block_events))
    encoded = drive(encode_receipts_steps(record))
    assert encoded == encode_receipts(record)
    assert decode_receipts(encoded) == record


def test_large_receipt_counts_use_the_wider_array_headers() -> None:
    one = Receipt(tx_hash=b"\x01" * 32, code=0, events=())
    for count in (15, 16, 65_535, 65_536):
        record = BlockReceipts(receipts=(one,) * count, block_events=())
        assert drive(encode_receipts_steps(record)) == encode_receipts(record)


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=3 * TX_ROOT_STEP + 3))
def test_tx_root_in_steps_is_the_tx_root(txs: list[bytes]) -> None:
    assert drive(tx_root_steps(txs)) == tx_root(txs)


@pytest.mark.parametrize("count", [0, 1, TX_ROOT_STEP - 1, TX_ROOT_STEP, TX_ROOT_STEP + 1, 2_100])
def test_tx_root_in_steps_across_step_boundaries(count: int) -> None:
    txs = [b"tx %d" % n for n in range(count)]
    assert drive(tx_root_steps(txs)) == tx_root(txs)
