"""Checkpoints: `perpchain checkpoint create|list|delete` on a stopped home (the store opened
directly) and on a running node through the admin RPC (`admin_checkpoint*`, bearer token,
never on the public port); a pin survives pruning with its state readable and provable."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import trio

from node.app import run_node
from node.cli.main import main
from node.client import RpcCallError, RpcClient
from node.core import merkle
from node.ops import checkpoints
from node.store import HeightUnavailable, VersionedStore
from tests.e2e.chain import make_chain, node_config


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _list(capsys: pytest.CaptureFixture[str], *where: str) -> list[dict[str, Any]]:
    code, out, err = _cli(capsys, "checkpoint", "list", *where, "--json")
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def test_cli_create_list_delete_on_a_stopped_home(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    make_chain(home, 6)
    at = ("--home", str(home))
    with VersionedStore.open(home / "data") as store:
        roots = {h: store.root(h).hex() for h in range(store.height + 1)}
    assert _cli(capsys, "checkpoint", "list", *at)[1] == "no checkpoints\n"

    code, out, _ = _cli(capsys, "checkpoint", "create", "pre-upgrade", "--reason", "v2", *at)
    assert (
        code == 0 and out == f"created checkpoint pre-upgrade at height 6, state root {roots[6]}\n"
    )
    code, out, _ = _cli(capsys, "checkpoint", "create", "early_2.x", "--height", "2", *at)
    assert code == 0 and "at height 2" in out

    listed = _list(capsys, *at)
    assert [(c["name"], c["height"], c["state_root"], c["reason"]) for c in listed] == [
        ("early_2.x", "2", roots[2], ""),
        ("pre-upgrade", "6", roots[6], "v2"),
    ]
    assert all(int(c["created_ms"]) > 1_700_000_000_000 for c in listed)
    code, table, _ = _cli(capsys, "checkpoint", "list", *at)
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "HEIGHT", "STATE", "ROOT", "CREATED", "(UTC)", "REASON"]
    assert (
        lines[2].startswith("pre-upgrade  6 ") and roots[6] in lines[2] and lines[2].endswith("v2")
    )

    # Refusals: one line, exit 1, nothing written.
    for argv, message in (
        (("create", "pre-upgrade"), "exists"),
        (("create", "bad name"), "1 to 64 characters"),
        (("create", "x" * 65), "1 to 64 characters"),
        (("create", "future", "--height", "7"), "not committed"),
        (("delete", "nope"), "no checkpoint named 'nope'"),
    ):
        code, out, err = _cli(capsys, "checkpoint", *argv, *at)
        assert code == 1 and out == "" and message in err and err.count("\n") == 1, (argv, err)
    assert len(_list(capsys, *at)) == 2

    code, out, _ = _cli(capsys, "checkpoint", "delete", "early_2.x", *at)
    assert code == 0 and out.startswith("deleted checkpoint early_2.x at height 2")
    assert [c["name"] for c in _list(capsys, *at)] == ["pre-upgrade"]
    code, _, err = _cli(capsys, "checkpoint", "list")
    assert code == 1 and "--home" in err


def test_cli_refuses_a_store_held_by_a_node(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    make_chain(home, 2)
    with VersionedStore.open(home / "data"):  # the running node's handle
        for argv in (("create", "x"), ("list",), ("delete", "x")):
            code, out, err = _cli(capsys, "checkpoint", *argv, "--home", str(home))
            assert code == 1 and out == ""
            assert err.startswith("perpchain: the node is running") and "--admin URL" in err
            assert err.count("\n") == 1


def test_pinned_checkpoint_survives_prune(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    make_chain(home, 12)
    assert (
        _cli(capsys, "checkpoint", "create", "keep", "--height", "4", "--home", str(home))[0] == 0
    )
    with VersionedStore.open(home / "data") as store:
        root4 = store.root(4)
        keys = [key for key, _ in store.iter_prefix()]
        before = {key: store.get(key, 4) for key in keys}
        assert store.prune(10) > 0
        with pytest.raises(HeightUnavailable):
            store.root(3)
        with pytest.raises(HeightUnavailable):
            store.root(5)
        assert store.root(4) == root4
        for key in keys:
            value = store.get(key, 4)
            assert value == before[key]
            assert merkle.verify_proof(root4, key, value, store.prove(key, 4))
        store.verify_history()
        [info] = checkpoints.list_checkpoints(store)
        assert (info.name, info.height, info.root) == ("keep", 4, root4)
        with pytest.raises(checkpoints.CheckpointError, match="not retained") as refused:
            checkpoints.create_checkpoint(store, "gone", created_ms=1, height=3)
        assert refused.value.kind == "unavailable"
        assert store.rollback_to(4).to_height == 4 and store.root() == root4
        store.verify()
    code, _, err = _cli(capsys, "checkpoint", "create", "p", "--height", "3", "--home", str(home))
    assert code == 1 and "not retained" in err


async def test_admin_rpc_checkpoints_on_a_running_node(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    make_chain(home, 3)
    token_file = home / "admin.token"
    config = node_config(
        home,
        **{"admin.enabled": True, "admin.listen": "127.0.0.1:0", "block_interval_ms": 50},
    )
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(run_node, config)
        admin_url, public_url = f"http://{bound.admin}", f"http://{bound.rpc}"
        admin = RpcClient(admin_url, token=token_file.read_text().strip(), timeout_s=20)
        public = RpcClient(public_url, timeout_s=20)

        async def call(client: RpcClient, method: str, **params: Any) -> Any:
            return await trio.to_thread.run_sync(lambda: client.call(method, **params))

        async def error(client: RpcClient, method: str, **params: Any) -> RpcCallError:
            with pytest.raises(RpcCallError) as raised:
                await call(client, method, **params)
            return raised.value

        created = await call(admin, "admin_checkpointCreate", name="live", reason="drill")
        height = int(created["height"])
        assert height >= 3 and created["reason"] == "drill" and int(created["created_ms"]) > 0
        block = await call(public, "chain_getBlock", height=str(height))
        assert created["state_root"] == block["header"]["state_root"]
        pinned = await call(admin, "admin_checkpointCreate", name="two", height="2")
        assert pinned["height"] == "2"

        assert (await error(admin, "admin_checkpointCreate", name="live")).code == -32602
        assert (await error(admin, "admin_checkpointCreate", name="a/b")).code == -32602
        assert (await error(admin, "admin_checkpointCreate", name="")).code == -32602
        too_high = await error(admin, "admin_checkpointCreate", name="f", height="999999")
        assert too_high.code == -32602 and "not committed" in too_high.message
        assert (await error(admin, "admin_checkpointDelete", name="nope")).code == 2003
        assert (await error(public, "admin_checkpointList")).code == -32601
        stranger = RpcClient(admin_url, token="wrong-token-wrong-token-wrong-token")
        assert (await error(stranger, "admin_checkpointList")).code == 2011

        listed = (await call(admin, "admin_checkpointList"))["checkpoints"]
        assert [(c["name"], c["height"]) for c in listed] == [("two", "2"), ("live", str(height))]
        deleted = await call(admin, "admin_checkpointDelete", name="two")
        assert deleted["name"] == "two"

        # The CLI through the admin RPC, and refused on the store the node holds.
        via = ("--admin", admin_url, "--token-file", str(token_file))

        def cli(*argv: str) -> tuple[int, str, str]:
            return _cli(capsys, *argv)

        code, out, err = await trio.to_thread.run_sync(
            lambda: cli("checkpoint", "create", "cli-made", "--reason", "via rpc", *via)
        )
        assert code == 0 and out.startswith("created checkpoint cli-made at height"), err
        code, out, _ = await trio.to_thread.run_sync(
            lambda: cli("checkpoint", "list", *via, "--json")
        )
        assert sorted(c["name"] for c in json.loads(out)) == ["cli-made", "live"]
        code, out, err = await trio.to_thread.run_sync(
            lambda: cli("checkpoint", "list", "--home", str(home))
        )
        assert code == 1 and "the node is running" in err
        code, out, err = await trio.to_thread.run_sync(
            lambda: cli(
                "checkpoint", "delete", "cli-made", "--admin", admin_url, "--home", str(home)
            )
        )
        assert code == 0 and out.startswith("deleted checkpoint cli-made"), err  # token from HOME
        nursery.cancel_scope.cancel()

    with VersionedStore.open(home / "data") as store:
        [info] = checkpoints.list_checkpoints(store)
        assert (info.name, info.height, info.reason) == ("live", height, "drill")


def test_pins_made_by_other_code_are_listed_and_deleted(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pin whose name or reason text this module did not make (e.g. maintenance's own)."""
    home = tmp_path / "home"
    make_chain(home, 3)
    with VersionedStore.open(home / "data") as store:
        store.checkpoint("maint/1", height=2, reason="maintenance begin")
    [listed] = _list(capsys, "--home", str(home))
    assert (listed["name"], listed["reason"], listed["created_ms"]) == (
        "maint/1",
        "maintenance begin",
        None,
    )
    code, table, _ = _cli(capsys, "checkpoint", "list", "--home", str(home))
    assert table.splitlines()[1].split()[3] == "-"  # no creation time
    code, out, err = _cli(capsys, "checkpoint", "delete", "maint/1", "--home", str(home))
    assert code == 0 and out.startswith("deleted checkpoint maint/1 at height 2"), err
    code, _, err = _cli(capsys, "checkpoint", "delete", "maint/1", "--home", str(home))
    assert code == 1 and "1 to 64 characters" in err


async def test_writer_commands_map_refusals_to_rpc_codes(tmp_path: pathlib.Path) -> None:
    """The writer's side of admin_checkpoint*: pruned -> 2004, unknown -> 2003, else -32602."""
    from types import SimpleNamespace

    from node.app import WriterCommands, load_genesis
    from node.chain.clock import ManualClock
    from node.rpc.jsonrpc import ErrorCode, RpcError

    home = tmp_path / "home"
    make_chain(home, 8)
    with VersionedStore.open(home / "data") as store:
        producer: Any = SimpleNamespace(
            store=store, clock=ManualClock(start_ms=1_234), lock=trio.Lock()
        )
        commands = WriterCommands(producer, None, load_genesis(home))
        made = await commands.checkpoint_create("a", height=3, reason="r")
        assert made["created_ms"] == "1234" and made["state_root"] == store.root(3).hex()
        store.prune(6)
        for call, code in (
            (lambda: commands.checkpoint_create("b", height=2, reason=""), ErrorCode.HEIGHT_PRUNED),
            (
                lambda: commands.checkpoint_create("a", height=None, reason=""),
                ErrorCode.INVALID_PARAMS,
            ),
            (
                lambda: commands.checkpoint_create("c", height=9, reason=""),
                ErrorCode.INVALID_PARAMS,
            ),
            (lambda: commands.checkpoint_delete("zz"), ErrorCode.NOT_FOUND),
        ):
            with pytest.raises(RpcError) as refused:
                await call()
            assert refused.value.code == code
        assert [c["name"] for c in commands.checkpoint_list()] == ["a"]
        assert (await commands.checkpoint_delete("a"))["height"] == "3"
        assert commands.checkpoint_list() == []
