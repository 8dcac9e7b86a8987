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
