"""Issue 20, operator side: the admin listener is not exposed by accident, a bad token file is one
line and a non-zero exit, and the node's own client never goes through a proxy."""

from __future__ import annotations

import http.server
import json
import logging
import os
import pathlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
import trio

from node.client import RpcClient
from node.config import ConfigError, NodeConfig
from node.rpc.jsonrpc import MethodTable
from node.rpc.server import serve_node_listeners

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load(home: pathlib.Path, env: dict[str, str] | None = None, **overrides: Any) -> NodeConfig:
    return NodeConfig.load(home, env=env or {}, overrides=overrides)


# --- (1) the admin listener off loopback -------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:9546", "[::]:9546", "10.1.2.3:9546", "node.lan:9546"])
def test_admin_listener_off_loopback_is_refused_without_allow_remote(
    tmp_path: pathlib.Path, listen: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **{"admin.enabled": True, "admin.listen": listen})
    (problem,) = [p for p in info.value.problems if p.startswith("admin.listen")]
    assert "not a loopback address" in problem and "admin.allow_remote = true" in problem
    # The same through the environment, and through the TOML file.
    with pytest.raises(ConfigError):
        load(tmp_path, {"PERPCHAIN_ADMIN_ENABLED": "1", "PERPCHAIN_ADMIN_LISTEN": listen})
    (tmp_path / "config.toml").write_text(f'[admin]\nenabled = true\nlisten = "{listen}"\n')
    with pytest.raises(ConfigError):
        load(tmp_path)


def test_admin_listener_off_loopback_is_allowed_when_asked(tmp_path: pathlib.Path) -> None:
    config = load(
        tmp_path,
        {"PERPCHAIN_ADMIN_ALLOW_REMOTE": "true"},
        **{"admin.enabled": True, "admin.listen": "0.0.0.0:9546"},
    )
    assert config.admin.allow_remote and not config.admin.listen.is_loopback
    (tmp_path / "config.toml").write_text(
        '[admin]\nenabled = true\nlisten = "0.0.0.0:9546"\nallow_remote = true\n'
    )
    assert load(tmp_path).admin.allow_remote


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:9546", "127.0.0.2:9546", "[::1]:9546", "localhost:1"]
)
def test_admin_listener_on_loopback_needs_nothing(tmp_path: pathlib.Path, listen: str) -> None:
    assert load(tmp_path, **{"admin.enabled": True, "admin.listen": listen}).admin.enabled


def test_a_disabled_admin_listener_is_not_checked(tmp_path: pathlib.Path) -> None:
    assert not load(tmp_path, **{"admin.listen": "0.0.0.0:9546"}).admin.enabled


async def test_a_remote_admin_listener_logs_a_warning_at_every_start(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load(
        tmp_path,
        **{
            "admin.enabled": True,
            "admin.allow_remote": True,
            "admin.listen": "0.0.0.0:0",
            "rpc.listen": "127.0.0.1:0",
            "metrics.enabled": False,
        },
    )
    admin = MethodTable({"admin_ping": _ping})
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="perpchain.rpc"):
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(serve_node_listeners, config, public=MethodTable(), admin=admin)
                )
                nursery.cancel_scope.cancel()
        warnings = [r for r in caplog.records if "rpc.admin_listener_remote" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


async def _ping(params: dict[str, Any]) -> Any:
    return "pong"


# --- (2) a token file with a wrong mode --------------------------------------------------------


def test_a_token_file_with_a_wrong_mode_is_one_line_and_exit_1(tmp_path: pathlib.Path) -> None:
    from node.app import init_home
    from tests.e2e.chain import genesis_doc

    home = tmp_path / "node"
    init_home(home, genesis_doc())
    token = home / "admin.token"
    token.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPCHAIN_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.cli.main",
            "start",
            "--home",
            str(home),
            "--rpc-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("perpchain:")]
    assert errors == [f"perpchain: admin token {token} has mode 644; run chmod 600 {token}"]


# --- (3) no proxy for the node's own calls -----------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[tuple[str, str]]  # (path, authorization) of every request seen
    answer: bytes

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.hits.append((self.path, self.headers.get("authorization", "")))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def _server(answer: Any) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    hits: list[tuple[str, str]] = []
    handler = type("Handler", (_Recorder,), {"hits": hits, "answer": json.dumps(answer).encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hits
    finally:
        server.shutdown()
        server.server_close()


def test_the_client_never_goes_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    with _server({"jsonrpc": "2.0", "result": "from the node", "id": 1}) as (node_port, node_hits):
        with _server({"jsonrpc": "2.0", "result": "from the proxy", "id": 1}) as (
            proxy_port,
            proxy_hits,
        ):
            for name in ("NO_PROXY", "no_proxy"):
                monkeypatch.delenv(name, raising=False)
            for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
                monkeypatch.setenv(name, f"http://127.0.0.1:{proxy_port}")
            client = RpcClient(f"http://127.0.0.1:{node_port}/", token="s3cret" * 6)
            assert client.call("admin_halt", reason="x") == "from the node"
    assert node_hits == [("/", "Bearer " + "s3cret" * 6)]
    assert proxy_hits == []  # urlopen would have sent the call, token and all, here
