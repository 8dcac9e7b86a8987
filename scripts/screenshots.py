"""Screenshots of the explorer's main pages for README.md, written to docs/img/.

    ./scripts/screenshots [--out docs/img] [--seconds 20]

Starts a devnet briefly (sequencer, two followers, bots; free ports from 19545 up, home in a
temp dir), lets it trade for `--seconds`, and takes the chain, market, account and block pages in
headless Chromium (Debian's chromium + chromium-driver, driven by selenium); halts the
sequencer through its admin listener for the red banner and resumes it. Then plays the incident
drill (node/drill.py) and takes its operations page, its market (a funding index that climbs
tick by tick) and the fork page of its rollback.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.client import RpcClient, RpcUnavailable  # noqa: E402
from node.core.crypto import SigningKey  # noqa: E402
from tests.explorer.browser import start_browser, unavailable  # noqa: E402

WIDTH = 1280
MAX_HEIGHT = 1700


def shoot(driver: Any, url: str, path: pathlib.Path, *, settle_s: float = 2.5) -> None:
    driver.set_window_size(WIDTH, 900)
    driver.get(url)
    time.sleep(settle_s)  # the WebSocket connects, the charts draw, a few heads arrive
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    driver.set_window_size(WIDTH, min(int(height) + 20, MAX_HEIGHT))
    time.sleep(0.4)
    driver.save_screenshot(str(path))
    print(f"screenshots: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def wait_height(client: RpcClient, height: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if int(client.call("node_status")["height"]) >= height:
                return
        except RpcUnavailable:
            pass
        time.sleep(0.25)
    raise SystemExit(f"screenshots: the devnet did not reach height {height}")


def free_base_port() -> int:
    """A port P with P, P+1, P+15 and the followers' P+100 i (+15) all free (the devnet's)."""
    for base in range(19545, 60000, 2000):
        wanted = [base, base + 1, base + 15] + [base + 100 * i + d for i in (1, 2) for d in (0, 15)]
        try:
            for port in wanted:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise SystemExit("screenshots: no free ports for the devnet")


def devnet_pages(driver: Any, out: pathlib.Path, workdir: pathlib.Path, seconds: float) -> None:
    port = free_base_port()
    home = workdir / "devnet"
    devnet = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.devnet",
            "--home",
            str(home),
            "--rpc-port",
            str(port),
            "--metrics-port",
            str(port + 15),
            "--admin-port",
            str(port + 1),
            "--followers",
            "2",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        client = RpcClient(base, timeout_s=5)
        wait_height(client, 5)
        time.sleep(seconds)
        trader = SigningKey.from_label("devnet/trader/1").public_key.hex()
        shoot(driver, base + "/", out / "explorer-chain.png")
        # the bots requote all the time: wait for a book with a few levels a side
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            book = client.call("perp_getOrderBook", market="BTC-USD-PERP", depth=5)
            if len(book["bids"]) >= 3 and len(book["asks"]) >= 3:
                break
            time.sleep(0.2)
        shoot(driver, base + "/market/BTC-USD-PERP", out / "explorer-market.png", settle_s=1.0)
        shoot(driver, f"{base}/account/{trader}", out / "explorer-account.png")
        height = int(client.call("node_status")["height"])
        busiest = max(
            range(max(1, height - 40), height),
            key=lambda h: len(client.call("chain_getBlock", height=h)["txs"]),
        )
        shoot(driver, f"{base}/block/{busiest}", out / "explorer-block.png")
        token = (home / "admin.token").read_text().strip()
        admin = RpcClient(f"http://127.0.0.1:{port + 1}", token=token)
        admin.call("admin_halt", reason="invariant: market 1 open interest differs (screenshot)")
        try:
            shoot(driver, base + "/", out / "explorer-halted.png", settle_s=1.5)
        finally:
            admin.call("admin_resume")
    finally:
        devnet.send_signal(signal.SIGINT)
        try:
            devnet.wait(timeout=60)
        except subprocess.TimeoutExpired:
            devnet.kill()


def drill_pages(driver: Any, out: pathlib.Path, workdir: pathlib.Path) -> None:
    from node.drill import Drill, start_nodes, stop_nodes

    nodes, urls = start_nodes(workdir / "drill")
    try:
        Drill(urls["rpc"], urls["admin"], urls["token"], urls["follower"], lambda _: None).run()
        shoot(driver, urls["rpc"] + "/ops", out / "explorer-ops.png")
        # the drill's fast funding: the index climbs tick by tick
        shoot(driver, urls["rpc"] + "/market/BTC-USD-PERP", out / "explorer-funding.png")
        shoot(driver, urls["rpc"] + "/fork/1", out / "explorer-fork.png")
    finally:
        stop_nodes(nodes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/screenshots", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    parser.add_argument("--seconds", type=float, default=20, help="devnet trading before shots")
    args = parser.parse_args(argv)
    problem = unavailable()
    if problem:
        print(f"screenshots: {problem} (apt-get install -y chromium chromium-driver)")
        return 1
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    driver = start_browser(WIDTH, 900)
    try:
        with tempfile.TemporaryDirectory(prefix="perpchain-screenshots-") as scratch:
            devnet_pages(driver, out, pathlib.Path(scratch), args.seconds)
            drill_pages(driver, out, pathlib.Path(scratch))
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
