"""`kill -9` of a producing node at random moments: every restart resumes from a committed
block, the height never goes back, and every tx acknowledged as committed is still there."""

from __future__ import annotations

import json
import pathlib
import random
import signal
import subprocess
import time

from node.app import init_home
from node.client import RpcCallError, RpcClient, RpcUnavailable
from node.core.crypto import SigningKey
from node.core.txs import Deposit, sign_tx
from node.devnet import output_tail, spawn_node

ROOT = pathlib.Path(__file__).resolve().parents[2]
GENESIS = ROOT / "genesis" / "devnet.json"
KILLS = 20


def _start(home: pathlib.Path) -> tuple[subprocess.Popen[str], RpcClient]:
    node, url = spawn_node(home, "--block-interval-ms", "20")
    return node, RpcClient(url, timeout_s=5)


def test_kill_9_never_loses_a_committed_tx(tmp_path: pathlib.Path) -> None:
    rng = random.Random(9)
    home = tmp_path / "home"
    doc = json.loads(GENESIS.read_text())
    init_home(home, doc)
    bridge = SigningKey.from_label("devnet/bridge")
    account = SigningKey.from_label("devnet/trader/0").public_key
    chain_id = doc["chain_id"].encode()
    committed: dict[str, int] = {}  # tx hash -> height, acknowledged committed
    last_height = 0
    deposit_id = 0
    for kill in range(KILLS):
        node, client = _start(home)
        try:
            status = client.call("node_status")
            height = int(status["height"])
            assert height >= last_height, f"kill {kill}: height went back {last_height} -> {height}"
            for tx_hash, at in committed.items():
                receipt = client.call("tx_status", tx_hash=tx_hash)
                assert receipt["status"] == "committed" and int(receipt["height"]) == at, kill
            nonce = int(client.call("perp_getNonce", address=bridge.public_key.hex())["next_nonce"])
            pending: list[str] = []
            deadline = time.monotonic() + rng.uniform(0.2, 0.8)
            while time.monotonic() < deadline:
                deposit_id += 1
                body = Deposit(nonce=nonce, account=account, amount_quote=1, deposit_id=deposit_id)
                try:
                    raw = sign_tx(body, bridge, chain_id).raw.hex()
                    pending.append(client.call("tx_submit", tx=raw)["tx_hash"])
                    nonce += 1
                except RpcCallError:
                    nonce = int(
                        client.call("perp_getNonce", address=bridge.public_key.hex())["next_nonce"]
                    )
                for tx_hash in list(pending):
                    receipt = client.call("tx_status", tx_hash=tx_hash)
                    if receipt["status"] == "committed":
                        committed[tx_hash] = int(receipt["height"])
                        pending.remove(tx_hash)
                last_height = max(last_height, int(client.call("node_status")["height"]))
        except RpcUnavailable:
            pass
        finally:
            node.send_signal(signal.SIGKILL)
            node.wait(timeout=30)
    assert len(committed) > KILLS  # the kills landed among committed work


def test_a_follower_killed_at_random_moments_resumes_and_agrees(tmp_path: pathlib.Path) -> None:
    from tests.e2e.chain import make_chain, roots

    rng = random.Random(11)
    seq, follower = tmp_path / "seq", tmp_path / "follower"
    make_chain(seq, 600)  # the follower is killed while catching up, then while following
    init_home(follower, json.loads(GENESIS.read_text()), follower=True)
    sequencer, url = spawn_node(seq, "--block-interval-ms", "20")
    source = RpcClient(url, timeout_s=5)
    last_height, kills, behind = -1, 12, 0
    try:
        for kill in range(kills):
            node, furl = spawn_node(follower, "--follow", url)
            client = RpcClient(furl, timeout_s=5)
            try:
                height = int(client.call("node_status")["height"])
                assert height >= last_height, f"kill {kill}: height went back"
                time.sleep(rng.uniform(0.05, 0.6))
                status = client.call("node_status")
                last_height = max(last_height, int(status["height"]))
                behind += int(status["height"]) < int(status["source_height"] or 0)
            except RpcUnavailable:
                pass
            finally:
                node.send_signal(signal.SIGKILL)
                node.wait(timeout=30)
        node, furl = spawn_node(follower, "--follow", url)
        client = RpcClient(furl, timeout_s=5)
        try:
            target = int(source.call("node_status")["height"])
            deadline = time.monotonic() + 60
            while int(client.call("node_status")["height"]) < target:
                assert time.monotonic() < deadline, "the follower did not catch up"
                time.sleep(0.1)
            assert client.call("node_status")["mode"] == "following"
        finally:
            node.send_signal(signal.SIGTERM)
            assert node.wait(timeout=30) == 0, output_tail(node)
    finally:
        sequencer.send_signal(signal.SIGTERM)
        sequencer.wait(timeout=30)
    assert last_height > 0 and behind >= 3, (last_height, behind)  # kills mid-catch-up
    mine = roots(follower)
    assert len(mine) > 600 and mine == roots(seq)[: len(mine)]
