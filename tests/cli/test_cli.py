"""The `perpchain` CLI: expected errors are one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import pathlib
import socket

import pytest

from node.cli.main import main
from node.core.crypto import SigningKey

GENESIS = pathlib.Path(__file__).resolve().parents[2] / "genesis" / "devnet.json"


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_keys_list_shows_the_devnet_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "list", "--traders", "2"]) == 0
    out = capsys.readouterr().out
    assert SigningKey.from_label("devnet/trader/1").public_key.hex() in out


def test_status_without_a_node_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--rpc", _dead_url()]) == 1
    err = capsys.readouterr().err
    assert "is the node running?" in err and "Traceback" not in err


def test_init_twice_refuses(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "home")
    assert main(["init", "--genesis", str(GENESIS), "--home", home]) == 0
    assert "initialised" in capsys.readouterr().out
    assert main(["init", "--genesis", str(GENESIS), "--home", home]) == 1
    assert "already holds a node" in capsys.readouterr().err


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tx", "order", "--side", "sideways", "--key", "devnet/trader/0"])
    assert exit_info.value.code == 2


async def test_tx_and_query_commands_against_a_running_node(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`perpchain tx` builds, signs, submits and waits; `query` reads; errors are one line."""
    import json

    import trio

    from tests.e2e.chain import make_chain, running_node

    home = tmp_path / "home"
    make_chain(home, 1)
    async with running_node(home, block_interval_ms=50) as (url, _):

        def cli(*argv: str) -> int:
            return main([*argv, "--rpc", url])

        def run(*argv: str) -> tuple[int, str, str]:
            code = cli(*argv)
            out, err = capsys.readouterr()
            return code, out, err

        async def go(*argv: str) -> tuple[int, str, str]:
            return await trio.to_thread.run_sync(lambda: run(*argv))

        common = ("--key", "devnet/trader/15", "--market", "BTC-USD-PERP", "--size", "100000")
        code, out, _ = await go("tx", "order", *common, "--side", "sell", "--price", "61000000000")
        assert code == 0 and json.loads(out)["status"] == "committed"
        code, out, _ = await go("query", "account", "devnet/trader/15")
        account = json.loads(out)
        assert code == 0 and account["open_orders"][0]["price"] == "61000000000"
        order_id = account["open_orders"][0]["order_id"]
        code, out, _ = await go("query", "book", "BTC-USD-PERP", "--depth", "200")
        assert code == 0 and ["61000000000", "100000"] in json.loads(out)["asks"]
        code, out, _ = await go("tx", "cancel", "--key", "devnet/trader/15", "--order-id", order_id)
        assert code == 0 and json.loads(out)["status"] == "committed"
        # a rejected tx: exit 1 with its receipt (off-tick price)
        code, out, _ = await go("tx", "order", *common, "--side", "buy", "--price", "1")
        assert code == 1 and json.loads(out)["code_name"] == "OFF_TICK"
        # cancel-all with no market cancels in every market (market_id 0), a symbol names one
        eth = ("--key", "devnet/trader/15", "--market", "ETH-USD-PERP", "--size", "1000000")
        for argv in (common, eth):
            price = "61000000000" if argv is common else "3100000000"
            code, out, _ = await go("tx", "order", *argv, "--side", "sell", "--price", price)
            assert code == 0 and json.loads(out)["status"] == "committed"
        code, out, _ = await go("query", "account", "devnet/trader/15")
        assert sorted(o["market_id"] for o in json.loads(out)["open_orders"]) == ["1", "2"]
        code, out, _ = await go("tx", "cancel-all", "--key", "devnet/trader/15")
        assert code == 0 and json.loads(out)["status"] == "committed"
        code, out, _ = await go("query", "account", "devnet/trader/15")
        assert json.loads(out)["open_orders"] == []
        code, _, err = await go("tx", "cancel-all", "--key", "devnet/trader/15", "--market", "X")
        assert code == 1 and err.startswith("perpchain: RPC error 2003")
        code, out, _ = await go("query", "block", "1")
        assert code == 0 and json.loads(out)["header"]["height"] == "1"
        code, _, err = await go("query", "market", "NOPE-PERP")
        assert code == 1 and err.startswith("perpchain: RPC error 2003") and "\n" == err[-1]
