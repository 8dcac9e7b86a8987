"""The drill's fault injection is test-only (issue 20 §5): a normal node has no admin_injectFault
(method not found, -32601, on both listeners; in no method table), a node started with the
switch on a devnet has it, and a production chain refuses the switch at startup with a message
that says why (config.toml or PERPCHAIN_FAULT_INJECTION=1; NodeConfig, `perpchain start`, and
run_node for a config built another way)."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys

import pytest
import trio

from node import config as node_config
from node.app import NodeError, init_home, run_node
from node.client import RpcCallError, RpcClient
from node.config import ConfigError, NodeConfig, fault_injection_refusal
from node.devnet import ROOT, spawn_node_urls, stop_child
from tests.e2e.chain import genesis_doc

METHOD_NOT_FOUND = -32601
PRODUCTION = "perpchain-mainnet-1"


def _home(tmp_path: pathlib.Path, chain_id: str | None = None) -> pathlib.Path:
    doc = genesis_doc()
    if chain_id is not None:
        doc["chain_id"] = chain_id
    home = tmp_path / "home"
    init_home(home, doc)
    return home


def _clients(urls: dict[str, str], home: pathlib.Path) -> tuple[RpcClient, RpcClient]:
    token = (home / "admin.token").read_text().strip()
    return RpcClient(urls["rpc"], timeout_s=10), RpcClient(urls["admin"], token=token)


def test_a_normal_node_has_no_fault_injection(tmp_path: pathlib.Path) -> None:
    home = _home(tmp_path)
    node, urls = spawn_node_urls(
        home, "--admin-listen", "127.0.0.1:0", env={"PERPCHAIN_FAULT_INJECTION": "0"}
    )
    try:
        public, admin = _clients(urls, home)
        assert admin.call("admin_checkpointList") == {"checkpoints": []}  # the listener works
        for client in (admin, public):
            with pytest.raises(RpcCallError) as refused:
                client.call("admin_injectFault", kind="zero_funding_indices")
            assert refused.value.code == METHOD_NOT_FOUND, refused.value
    finally:
        assert stop_child(node) == 0


def test_no_method_table_lists_it_on_a_normal_node(tmp_path: pathlib.Path) -> None:
    from node.chain.mempool import Mempool
    from node.chain.producer import ChainStatus
    from node.config import MempoolSettings
    from node.core.genesis import parse_genesis
    from node.rpc.methods import NodeContext, build_tables
    from node.store import VersionedStore

    home = _home(tmp_path)
    genesis = parse_genesis(genesis_doc())
    with VersionedStore.open(home / "data") as store:
        mempool = Mempool(genesis.chain_id, MempoolSettings(), store, 64)
        public, admin = build_tables(NodeContext(store, genesis, ChainStatus(), mempool, None))
        names = public.names() + admin.names()
        assert "admin_checkpointCreate" in names
        assert not [name for name in names if "fault" in name.lower()]


def test_a_devnet_node_with_the_switch_has_it(tmp_path: pathlib.Path) -> None:
    home = _home(tmp_path)
    node, urls = spawn_node_urls(
        home, "--admin-listen", "127.0.0.1:0", env={"PERPCHAIN_FAULT_INJECTION": "1"}
    )
    try:
        public, admin = _clients(urls, home)
        with pytest.raises(RpcCallError) as refused:
            admin.call("admin_injectFault", kind="nothing")
        assert refused.value.code == -32602 and "unknown fault" in refused.value.message
        with pytest.raises(RpcCallError) as public_refused:  # never on the public listener
            public.call("admin_injectFault", kind="nothing")
        assert public_refused.value.code == METHOD_NOT_FOUND
    finally:
        assert stop_child(node) == 0


@pytest.mark.parametrize(
    ("chain_id", "allowed"),
    [
        ("perpchain-devnet-1", True),
        ("perpchain-test", True),
        ("local-localnet", True),
        ("test-2", True),
        ("perpchain-mainnet-1", False),
        ("perpchain-testnet-1", False),  # shared with others: not a place for faults
        ("perpchain", False),
        ("contest-1", False),
        ("devnetwork", False),
    ],
)
def test_which_chains_allow_it(chain_id: str, allowed: bool) -> None:
    assert (fault_injection_refusal(chain_id) is None) is allowed


def test_a_production_config_with_the_switch_is_refused(tmp_path: pathlib.Path) -> None:
    home = _home(tmp_path, PRODUCTION)
    with pytest.raises(ConfigError, match=f"refused on chain '{PRODUCTION}'"):
        NodeConfig.load(home, env={"PERPCHAIN_FAULT_INJECTION": "1"})
    (home / "config.toml").write_text("[testing]\nfault_injection = true\n")
    with pytest.raises(ConfigError, match="allowed only on a devnet or test chain"):
        NodeConfig.load(home, env={})
    (home / "config.toml").write_text("[testing]\nfault_injection = false\n")
    assert not NodeConfig.load(home, env={}).testing.fault_injection

    # `perpchain start`: one line on stderr, exit code 1, nothing served
    (home / "config.toml").write_text("[testing]\nfault_injection = true\n")
    started = subprocess.run(
        [sys.executable, "-m", "node.cli.main", "start", "--home", str(home)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert started.returncode == 1, started.stderr
    assert f"refused on chain '{PRODUCTION}'" in started.stderr, started.stderr


def test_run_node_refuses_a_config_built_without_the_loader(tmp_path: pathlib.Path) -> None:
    home = _home(tmp_path, PRODUCTION)
    config = dataclasses.replace(
        NodeConfig.load(home, env={}), testing=node_config.TestingSettings(fault_injection=True)
    )

    async def start() -> None:
        await run_node(config)

    with pytest.raises(NodeError, match="refused on chain"):
        trio.run(start)


def test_the_drill_genesis_is_a_devnet() -> None:
    from node.drill import drill_genesis

    assert fault_injection_refusal(json.loads(json.dumps(drill_genesis()))["chain_id"]) is None
