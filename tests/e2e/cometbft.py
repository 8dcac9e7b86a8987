"""Shared by the real-engine tests (tests/e2e/test_cometbft_*.py): the CometBFT binary or a
skip (a failure under PERPCHAIN_REQUIRE_COMETBFT=1, which .ci/run sets), ports of the xdist
worker, and reads of each validator's own application."""

from __future__ import annotations

import os
import pathlib
import time
from typing import Any

import pytest

from node.client import RpcCallError, RpcClient, RpcUnavailable
from node.core.crypto import SigningKey
from node.core.txs import sign_tx
from node.testnet import CometBFTUnavailable, Ports, Testnet, Timeouts, cometbft_binary, find_ports

REQUIRE_ENV = "PERPCHAIN_REQUIRE_COMETBFT"


def engine() -> pathlib.Path:
    """The pinned CometBFT (built on first use); skip without Go, fail instead in CI."""
    try:
        return cometbft_binary()
    except CometBFTUnavailable as error:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 and {error}")
        pytest.skip(f"real-engine test skipped: {error}")


def worker_ports(validators: int, slot: int) -> Ports:
    """Ports of this xdist worker's `slot`-th network, below the ephemeral range."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    return find_ports(validators, 20_000 + 1_000 * (index % 12) + 500 * slot)


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


def app_root(net: Testnet, index: int, height: int) -> str:
    """Validator `index`'s application's own state root after `height` (its block record)."""
    block = net.validators[index].client.call("chain_getBlock", height=str(height))
    return str(block["header"]["state_root"])


def roots_at(net: Testnet, indices: list[int], height: int) -> dict[int, str]:
    """The state root after `height` on each validator's application, once it has the block."""
    out: dict[int, str] = {}
    for i in indices:
        v = net.validators[i]
        net.wait(
            f"validator {i}'s application at height {height}",
            lambda v=v: int(v.client.call("node_status")["height"]) >= height,
            timeout_s=60,
        )
        out[i] = app_root(net, i, height)
    return out


def header_app_hash(net: Testnet, index: int, height: int) -> str:
    """The app hash CometBFT agreed for the state after `height` (header of height + 1)."""
    value = net.validators[index].header_app_hash(height + 1)
    assert value is not None, f"validator {index} has no header at {height + 1}"
    return value


class Sender:
    """Signs txs with the devnet keys and submits them to a validator's JSON-RPC."""

    def __init__(self, net: Testnet) -> None:
        self.net = net
        self.chain_id = str(net.genesis["chain_id"]).encode()
        self.nonces: dict[bytes, int] = {}

    def submit(self, client: RpcClient, key: SigningKey, body_cls: type, **fields: Any) -> str:
        if key.public_key not in self.nonces:
            reply = client.call("perp_getNonce", address=key.public_key.hex())
            self.nonces[key.public_key] = int(reply["next_nonce"])
        nonce = self.nonces[key.public_key]
        self.nonces[key.public_key] = nonce + 1
        tx = sign_tx(body_cls(nonce=nonce, **fields), key, self.chain_id)
        return str(client.call("tx_submit", tx=tx.raw.hex())["tx_hash"])


def wait_committed(
    net: Testnet, tx_hash: str, indices: list[int], timeout_s: float = 60
) -> dict[int, dict[str, Any]]:
    """tx_status of `tx_hash` on each validator's application once it is in a block there."""
    out: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    for i in indices:
        client = net.validators[i].client
        while True:
            net.check_alive()
            try:
                status = client.call("tx_status", tx_hash=tx_hash)
            except (RpcUnavailable, RpcCallError):
                status = {"status": "unreachable"}
            if status["status"] in ("committed", "rejected"):
                out[i] = status
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"tx {tx_hash} not in a block on validator {i}: {status}")
            time.sleep(0.1)
    return out


def equal_roots(net: Testnet, indices: list[int], height: int) -> str:
    """The applications' own roots after `height` are equal, and equal to the app hash
    CometBFT's header of height + 1 carries."""
    net.wait_height(height + 1, indices)
    roots = roots_at(net, indices, height)
    agreed = {header_app_hash(net, i, height) for i in indices}
    assert len(set(roots.values())) == 1, f"state roots at {height} differ: {roots}"
    assert agreed == set(roots.values()), f"CometBFT's app hash {agreed} != roots {roots}"
    return next(iter(roots.values()))


def heights(net: Testnet, indices: list[int]) -> list[int]:
    return [net.validators[i].height() for i in indices]
