"""The producer's GC policy: objects alive after a block are frozen, and every FULL_GC_BLOCKS
blocks they are thawed and collected in full, between two blocks; production goes on."""

from __future__ import annotations

import gc
import logging
import pathlib

import pytest

from node.app import init_home
from node.chain import producer
from tests.e2e.chain import genesis_doc, running_node, wait_for


async def test_frozen_after_each_block_and_collected_in_full_periodically(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(producer, "FULL_GC_BLOCKS", 3)
    home = tmp_path / "home"
    init_home(home, genesis_doc())
    caplog.set_level(logging.INFO, logger="perpchain.producer")
    try:
        async with running_node(home, block_interval_ms=20) as (url, _):
            await wait_for(url, lambda status: int(status["height"]) >= 8, timeout_s=30)
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # leave this test process as it was
    fulls = [r for r in caplog.records if r.getMessage().startswith("gc.full")]
    assert len(fulls) >= 2, [r.getMessage() for r in caplog.records][-5:]
