"""`./scripts/testnet` end to end (python -m node.testnet): one validator for a few seconds with
the bots; the status line shows it committing with its app hash agreeing, and SIGINT (Ctrl-C)
stops every child, leaving no process behind."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time

from node.testnet import ROOT
from tests.e2e.cometbft import engine, worker_ports


def test_testnet_launcher_runs_and_ctrl_c_stops_everything(tmp_path: pathlib.Path) -> None:
    engine()
    ports = worker_ports(1, slot=2)
    home = tmp_path / "testnet"
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.testnet",
            "--validators",
            "1",
            "--home",
            str(home),
            "--port-base",
            str(ports.base),
            "--rpc-port",
            str(ports.rpc_base),
            "--timeout-commit-ms",
            "200",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # as a terminal's foreground group: Ctrl-C reaches it alone
    )
    assert launcher.stdout is not None
    lines: list[str] = []
    children: list[int] = []
    try:
        for line in iter(launcher.stdout.readline, ""):  # the status lines end in \r, not here
            lines.append(line)
            if "the first block is committed" in line:
                break
        time.sleep(6)  # a few status lines
        children = _descendants(launcher.pid)
        assert children, "the launcher started no processes:\n" + "".join(lines)
        os.killpg(launcher.pid, signal.SIGINT)
        out, _ = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:  # a failure above: never leave the network running
            os.killpg(launcher.pid, signal.SIGINT)
            try:
                launcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                for pid in [launcher.pid, *children]:  # each leads its own process group
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
    text = "".join(lines) + out
    assert launcher.returncode == 0, text
    status = [s for s in text.replace("\r", "\n").splitlines() if s.startswith("height ")]
    assert any(" v0 " in s and " ok " in s + " " for s in status), text
    assert max(int(s.split()[1]) for s in status) >= 2, status
    assert "testnet: stopped" in text
    time.sleep(0.5)
    alive = [pid for pid in children if _alive(pid)]
    assert not alive, f"left running after Ctrl-C: {alive}"
    assert (home / "validator-0" / "cometbft.log").exists()


def _descendants(pid: int) -> list[int]:
    """Every process whose parent chain leads to `pid` (children in their own sessions too)."""
    parents: dict[int, int] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current:
                out.append(child)
                frontier.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
