"""A producer's startup over an invalid state: it refuses with the exact command, or restores by
itself with auto_restore; an interrupted rollback is completed before anything else."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
import trio

from node.app import NodeError, run_node
from node.client import RpcClient
from node.ops import faults
from node.store import VersionedStore, blocks_db
from tests.e2e.chain import (
    call,
    damaged_chain,
    make_chain,
    node_config,
    running_node,
    wait_for,
)


def _damaged_chain(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv(faults.ENV, "1")
    return damaged_chain(tmp_path / "home")


async def test_an_invalid_chain_is_refused_with_the_restore_command(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _damaged_chain(tmp_path, monkeypatch)
    with pytest.raises(NodeError) as refused:
        await run_node(node_config(home, auto_restore=False))
    message = str(refused.value)
    assert "invalid state root at height 13" in message
    assert f"perpchain rollback --home {home} --to-checkpoint pre-maintenance-12" in message
    with VersionedStore.open(home / "data", verify_on_open=False) as store:
        assert store.height == 15  # nothing was changed


async def test_auto_restore_rolls_back_to_the_checkpoint_and_produces(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _damaged_chain(tmp_path, monkeypatch)
    async with running_node(home, auto_restore=True, block_interval_ms=50) as (url, _):
        status = await call(url, "node_status")
        assert status["mode"] == "producing" and int(status["height"]) >= 13
        rollbacks = await call(url, "chain_getRollbacks")
        assert [r["to_height"] for r in rollbacks] == ["12"] and rollbacks[0]["notice"]
        with trio.fail_after(10):
            while int((await call(url, "node_status"))["height"]) < 15:
                await trio.sleep(0.05)


async def test_an_interrupted_rollback_is_completed_at_startup(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "home"
    make_chain(home, 8)
    with VersionedStore.open(home / "data") as store:
        store.rollback_to(5, reason="killed before the recovery block")
    async with running_node(home, block_interval_ms=50) as (url, _):
        block = await call(url, "chain_getBlock", height="6", full_txs=True)
        assert block["txs"][0]["kind"] == "Recovery"
        rollbacks = await call(url, "chain_getRollbacks")
        assert rollbacks[0]["notice"] is not None
    with VersionedStore.open(home / "data") as store:
        assert blocks_db.get_notice(store, 1) is not None


async def test_maintenance_commands_through_the_cli(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from node.cli.main import main

    home = tmp_path / "home"
    make_chain(home, 3)
    overrides = {"admin.enabled": True, "admin.listen": "127.0.0.1:0", "block_interval_ms": 50}
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(run_node, node_config(home, **overrides))
        admin = f"http://{bound.admin}"
        url = f"http://{bound.rpc}"

        def cli(*argv: str) -> int:
            return main([*argv, "--admin", admin, "--home", str(home)])

        assert (
            await trio.to_thread.run_sync(cli, "maintenance", "begin", "--reason", "upgrade") == 0
        )
        out = capsys.readouterr().out
        assert "checkpoint pre-maintenance-" in out and "CANCEL_ONLY" in out
        status = await call(url, "node_status")
        assert status["mode"] == "maintenance"
        markets = await call(url, "perp_getMarkets")
        assert {m["mode"] for m in markets} == {"CANCEL_ONLY"}
        assert await trio.to_thread.run_sync(cli, "maintenance", "begin", "--reason", "again") == 1
        token = (home / "admin.token").read_text().strip()
        admin_client = RpcClient(admin, token=token, timeout_s=30)
        job = await trio.to_thread.run_sync(
            lambda: admin_client.call("admin_maintenanceJob", kind="compact")
        )
        assert job["job"] == "compact" and job["state_root"] == status["state_root"]
        wrong = "00" * 32
        assert await trio.to_thread.run_sync(cli, "maintenance", "end", "--expect-root", wrong) == 3
        assert "expected 0000" in capsys.readouterr().err
        assert (await call(url, "node_status"))["mode"] == "maintenance"
        assert await trio.to_thread.run_sync(cli, "maintenance", "job", "compact") == 0
        assert "maintenance job compact done" in capsys.readouterr().out
        assert await trio.to_thread.run_sync(cli, "maintenance", "end") == 0
        assert "verified, producing" in capsys.readouterr().out
        height = int((await call(url, "node_status"))["height"])
        with trio.fail_after(10):
            while int((await call(url, "node_status"))["height"]) <= height:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()


def _zero_funding_from_another_process(data: pathlib.Path) -> list[bytes]:
    """The incident's migration, run by another tool on the stopped node's LevelDB: every
    market's funding index zeroed straight in the flat rows (no block, no diff, no root)."""
    import plyvel

    from node.core import codec, keys
    from node.core.records import Market
    from node.store import schema

    db = plyvel.DB(str(data))
    touched = []
    prefix = schema.flat_key(keys.MARKET)
    for physical, raw in db.iterator(prefix=prefix):
        if len(physical) - 1 != len(keys.market(0)):
            continue
        market = codec.decode_state(raw, Market)
        if market.funding_index_quote != 0:
            db.put(physical, codec.encode(dataclasses.replace(market, funding_index_quote=0)))
            touched.append(physical)
    db.close()
    return touched


async def test_a_clean_stop_reopens_from_the_seal_and_a_migration_around_it_is_still_found(
    tmp_path: pathlib.Path,
) -> None:
    """Issue 14: a restart after a clean stop does not rehash the state (the store's close
    seal), and the startup check still finds the zeroed funding indices when another process
    wrote them while the node was stopped: the seal is void, the open rehashes, and the node
    refuses to produce with the command that repairs it."""
    home = tmp_path / "home"
    make_chain(home, 12, block_ms=20_000, oracle=True)
    async with running_node(home, block_interval_ms=60_000) as (url, _):
        # Its catch-up block (the head is old), then none for a minute: the stop below falls
        # between blocks, as an operator's does (a stop during a commit saves no seal).
        status = await wait_for(url, lambda status: int(status["height"]) >= 13, timeout_s=20)
        assert status["mode"] == "producing"
    with VersionedStore.open(home / "data") as store:
        assert store.open_check == "seal"  # the node's clean stop saved its tree
        head = store.height
    assert _zero_funding_from_another_process(home / "data")
    with pytest.raises(NodeError) as refused:
        await run_node(node_config(home, auto_restore=False))
    message = str(refused.value)
    assert "written around the writer" in message and "funding_index_quote" in message
    assert f"perpchain rollback --home {home} --repair" in message
    with VersionedStore.open(home / "data", verify_on_open=False) as store:
        assert store.open_check == "mismatch" and store.height == head  # nothing was changed
