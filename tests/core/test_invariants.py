"""Invariants on the post-state, before commit: the incident, conservation, open interest,
crossed books, time. Each violation names the invariant, the market or account and values."""

from __future__ import annotations

import dataclasses

import pytest

from node.core import codec, keys
from node.core.blocks import BlockEnv
from node.core.errors import InvariantViolation
from node.core.records import Account, Market
from node.core.transition import apply_block
from tests.core.harness import BTC, ETH, UNIT, USD, Chain, Side


def _traded_chain() -> Chain:
    chain = Chain()
    a, b, mm = chain.trader(0), chain.trader(1), chain.trader(2)
    chain.block(
        chain.order(b, Side.SELL, UNIT, 60_000 * USD),
        chain.order(a, Side.BUY, UNIT, 60_000 * USD),
        chain.order(mm, Side.BUY, UNIT, 60_100 * USD),
        chain.order(mm, Side.SELL, UNIT, 60_200 * USD),
    )
    for _ in range(3):
        chain.block(dt_ms=60_000)  # funding ticks move the index
    assert chain.market(BTC).funding_index_quote != 0
    return chain


def _corrupt(chain: Chain, key: bytes, change: dict[str, int], cls: type) -> None:
    raw = chain.state.get(key)
    assert raw is not None
    chain.state.apply([(key, codec.encode(dataclasses.replace(codec.decode(raw, cls), **change)))])


def _next_block(chain: Chain) -> None:
    env = BlockEnv(chain_id=chain.chain_id, height=chain.height + 1, time_ms=chain.time_ms + 1000)
    apply_block(chain.state, env, [])


def test_incident_funding_index_reset_outside_a_tick_is_caught_naming_the_market() -> None:
    """The motivating incident: a migration writing around the writer zeroes every market's
    funding index. The next block's invariants refuse it before anything commits."""
    chain = _traded_chain()
    for market_id in (BTC, ETH):
        _corrupt(chain, keys.market(market_id), {"funding_index_quote": 0}, Market)
    with pytest.raises(InvariantViolation, match="market BTC-USD-PERP funding_index") as caught:
        _next_block(chain)
    assert "funding log" in str(caught.value)


def test_funding_index_moved_within_a_block_outside_a_tick_is_caught() -> None:
    chain = _traded_chain()
    before = chain.market(BTC).funding_index_quote
    _corrupt(chain, keys.market(BTC), {"funding_index_quote": before + 1}, Market)
    with pytest.raises(InvariantViolation, match="funding_index .* outside|is not the funding log"):
        _next_block(chain)


def test_created_quote_breaks_conservation() -> None:
    chain = _traded_chain()
    address = chain.trader(3).public_key
    _corrupt(chain, keys.account(address), {"collateral_quote": 10**12 + 1}, Account)
    with pytest.raises(InvariantViolation, match=r"conservation: .*difference 1\)"):
        _next_block(chain)


def test_open_interest_mismatch_is_caught() -> None:
    chain = _traded_chain()
    _corrupt(chain, keys.market(BTC), {"open_interest_atoms": 5}, Market)
    with pytest.raises(InvariantViolation, match="open interest: market BTC-USD-PERP longs"):
        _next_block(chain)


def test_block_time_must_increase() -> None:
    chain = _traded_chain()
    env = BlockEnv(chain_id=chain.chain_id, height=chain.height + 1, time_ms=chain.time_ms)
    with pytest.raises(InvariantViolation, match="time: block time"):
        apply_block(chain.state, env, [])


def _next_block_scan(chain: Chain, *, full_scan: bool) -> None:
    env = BlockEnv(chain_id=chain.chain_id, height=chain.height + 1, time_ms=chain.time_ms + 1000)
    apply_block(chain.state, env, [], full_scan=full_scan)


def test_between_full_scans_a_conservation_break_waits_for_the_next_one() -> None:
    """`invariant_scan_blocks` spaces out the scans over every account; a quote created out
    of nothing passes a block without the scan and is refused by the next scanning block."""
    chain = _traded_chain()
    address = chain.trader(3).public_key
    _corrupt(chain, keys.account(address), {"collateral_quote": 10**12 + 1}, Account)
    _next_block_scan(chain, full_scan=False)
    with pytest.raises(InvariantViolation, match="conservation"):
        _next_block_scan(chain, full_scan=True)


def test_the_funding_index_is_checked_on_every_block_scan_or_not() -> None:
    chain = _traded_chain()
    _corrupt(chain, keys.market(BTC), {"funding_index_quote": 0}, Market)
    with pytest.raises(InvariantViolation, match="market BTC-USD-PERP funding_index"):
        _next_block_scan(chain, full_scan=False)
