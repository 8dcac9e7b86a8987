"""The devnet launcher end to end: fresh home, sequencer child, oracle and bots, status line,
clean stop with exit 0 (what `./scripts/devnet` runs)."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_devnet_produces_blocks_with_trades_and_stops_cleanly(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "devnet"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.devnet",
            "--home",
            str(home),
            "--duration",
            "8",
            "--rpc-port",
            str(_free_port()),
            "--metrics-port",
            str(_free_port()),
            "--admin-port",
            str(_free_port()),
            "--block-time-ms",
            "100",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.replace("\r", "\n").splitlines()
    heights = [int(line.split()[1]) for line in lines if line.startswith("height ")]
    assert heights and heights[-1] > 5, done.stdout
    # both followers re-execute every block and agree with the sequencer
    status = [line for line in lines if line.startswith("height ")]
    assert all(" f1 " in line and " f2 " in line for line in status), status
    assert "DIFFERS" not in done.stdout and "HALTED" not in done.stdout, done.stdout
    agreeing = [line for line in status if line.split(" f1 ")[1].split()[1:2] == ["ok"]]
    assert agreeing, status
    assert "follower 2 stopped (exit 0)" in done.stdout
    assert "devnet/trader/0" in done.stdout and "node stopped (exit 0)" in done.stdout
    log = (home / "node.log").read_text()
    assert "block.committed" in log and "node.stopped" in log
