"""`verify`: replay the stored blocks on a scratch copy and compare every state root; a write
around the writer is found and named, before and after blocks are built on it."""

from __future__ import annotations

import pathlib

import pytest

from node.core.genesis import parse_genesis
from node.ops import faults
from node.ops.verify import verify_chain
from node.store import VersionedStore
from tests.e2e.chain import extend_chain, genesis_doc, make_chain

GENESIS = parse_genesis(genesis_doc())


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.ENV, "1")


def _chain(tmp_path: pathlib.Path) -> pathlib.Path:
    home = tmp_path / "home"
    # 20 s blocks with fresh oracle prices: a funding tick every third block
    make_chain(home, 12, block_ms=20_000, oracle=True)
    return home


def test_an_honest_chain_verifies_from_genesis_and_from_a_checkpoint(
    tmp_path: pathlib.Path,
) -> None:
    home = _chain(tmp_path)
    with VersionedStore.open(home / "data") as store:
        store.checkpoint("pre-maintenance-6", height=6)
        report = verify_chain(store, GENESIS)
        assert report.ok, report.text()
        assert (report.from_height, report.blocks_replayed) == (0, 12)
        assert report.txs_replayed == 12 * 7 + 1  # + the maker bid (tests/e2e/chain.py)
        seen: list[tuple[int, int]] = []
        report = verify_chain(
            store,
            GENESIS,
            from_checkpoint="pre-maintenance-6",
            progress=lambda d, t: seen.append((d, t)),
        )
        assert report.ok and report.blocks_replayed == 6 and seen[-1] == (6, 6)
        assert "VALID" in report.text()


def test_a_write_around_the_writer_is_found_and_named(tmp_path: pathlib.Path, faulty: None) -> None:
    home = _chain(tmp_path)
    with VersionedStore.open(home / "data") as store:
        index = _funding_index(store)
        assert index != 0, "the chain should have accrued funding"
        assert faults.zero_funding_indices(store) == [1]
        report = verify_chain(store, GENESIS, from_height=6)
        assert not report.ok and not report.flat_ok and report.first_invalid is None
        assert "written around the writer" in report.reason
        assert any(
            f"BTC-USD-PERP funding_index_quote: stored 0, replayed {index}" in d
            for d in report.differences
        ), report.differences


def test_blocks_built_on_damaged_rows_fail_at_the_first_one(
    tmp_path: pathlib.Path, faulty: None
) -> None:
    home = _chain(tmp_path)
    with VersionedStore.open(home / "data") as store:
        store.checkpoint("pre-maintenance-12")
        faults.zero_funding_indices(store)
    extend_chain(
        home, 4, block_ms=20_000, oracle=True, seed=2, verify_on_open=False, invariants=False
    )
    with VersionedStore.open(home / "data", verify_on_open=False) as store:
        report = verify_chain(store, GENESIS, from_checkpoint="pre-maintenance-12")
        assert report.first_invalid == 13, report.text()
        assert report.reason.startswith("invalid state root at height 13: header ")
        assert any("funding_index_quote: stored " in d for d in report.differences), (
            report.differences
        )
        assert "INVALID" in report.text()


def _funding_index(store: VersionedStore) -> int:
    from node.core import queries

    market = queries.market(store, 1)
    assert market is not None
    return market.funding_index_quote
