"""Shared by the real-engine tests (tests/e2e/test_cometbft_*.py): the CometBFT binary or a
skip (a failure under PERPTEST_REQUIRE_COMETBFT=1, which .ci/run sets), ports of the xdist
worker, and reads of each validator's own application."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest

from node.cometbft import CometBFTUnavailable, Ports, Timeouts, cometbft_binary, find_ports
from node.testnet import Testnet, TxSender

REQUIRE_ENV = "PERPTEST_REQUIRE_COMETBFT"


def engine() -> pathlib.Path:
    """The pinned CometBFT (built on first use); skip without Go, fail instead in CI."""
    try:
        return cometbft_binary()
    except CometBFTUnavailable as error:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 and {error}")
        pytest.skip(f"real-engine test skipped: {error}")


def worker_ports(validators: int, slot: int) -> Ports:
    """Free ports in this xdist worker's own range of 1,000 (20,000 + 1,000 x worker, below
    the ephemeral range), searched from the `slot`-th third of it so consecutive tests of a
    worker do not meet the TIME_WAIT sockets of the one before."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    low = 20_000 + 1_000 * (index % 12)
    return find_ports(validators, low + 400 * slot, within=(low, low + 1_000))


def make_testnet(
    home: pathlib.Path, *, validators: int = 4, slot: int = 0, **kwargs: Any
) -> Testnet:
    return Testnet(
        home,
        validators=validators,
        ports=worker_ports(validators, slot),
        timeouts=Timeouts(propose_ms=800, prevote_ms=150, precommit_ms=150, commit_ms=300),
        binary=engine(),
        **kwargs,
    )


def roots_at(net: Testnet, indices: list[int], height: int) -> dict[int, str]:
    return net.app_roots(indices, height)


class Sender(TxSender):
    def __init__(self, net: Testnet) -> None:
        super().__init__(str(net.genesis["chain_id"]))


def wait_committed(
    net: Testnet, tx_hash: str, indices: list[int], timeout_s: float = 60
) -> dict[int, dict[str, Any]]:
    return net.wait_committed(tx_hash, indices, timeout_s)


def equal_roots(net: Testnet, indices: list[int], height: int) -> str:
    return net.equal_roots(indices, height)


def heights(net: Testnet, indices: list[int]) -> list[int]:
    return net.heights(indices)
