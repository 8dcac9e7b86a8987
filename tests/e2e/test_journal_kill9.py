"""Accepted txs survive `kill -9` of the producing node before their block (issue 20 §5: 52 of
52 were lost). A real node with a 60 s block interval accepts 52 txs (deposits and orders from
several senders), is killed with SIGKILL before it includes them, and a torn record is left at
the end of its journal; restarted, it holds all 52 again (pending); killed again and restarted
with 20 ms blocks, it includes every one of them exactly once; a third restart re-admits none
(their nonces are used)."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import time

from node.app import init_home
from node.chain.journal import JOURNAL_FILE, read_journal
from node.client import RpcClient
from node.core.crypto import SigningKey
from node.core.txs import Deposit, sign_tx
from node.devnet import spawn_node
from tests.e2e.chain import CHAIN_ID, GENESIS, OrderFlow

TXS = 52


def _start(home: pathlib.Path, interval_ms: int) -> tuple[subprocess.Popen[str], RpcClient]:
    node, url = spawn_node(home, "--block-interval-ms", str(interval_ms))
    return node, RpcClient(url, timeout_s=10)


def _kill9(node: subprocess.Popen[str]) -> None:
    node.send_signal(signal.SIGKILL)
    node.wait(timeout=30)


def _signed_txs() -> list[bytes]:
    bridge = SigningKey.from_label("devnet/bridge")
    account = SigningKey.from_label("devnet/trader/9").public_key
    deposits = [
        sign_tx(
            Deposit(nonce=n, account=account, amount_quote=1_000_000, deposit_id=70_000 + n),
            bridge,
            CHAIN_ID,
        ).raw
        for n in range(TXS // 2)
    ]
    orders = [tx.raw for tx in OrderFlow(seed=5, traders=4).orders(TXS - len(deposits))]
    return [raw for pair in zip(deposits, orders, strict=True) for raw in pair]


def test_accepted_txs_survive_kill_9_before_inclusion(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "home"
    init_home(home, json.loads(GENESIS.read_text()))
    raws = _signed_txs()
    hashes: list[str] = []

    # 1. Accept 52 txs on a node whose next block is a minute away, then kill -9 it.
    node, client = _start(home, 60_000)
    try:
        deadline = time.monotonic() + 30
        while int(client.call("node_status")["height"]) < 1:  # the first block comes at once
            assert time.monotonic() < deadline
            time.sleep(0.05)
        height = int(client.call("node_status")["height"])
        submit_s = []
        for raw in raws:
            started = time.perf_counter()
            answer = client.call("tx_submit", tx=raw.hex())
            submit_s.append(time.perf_counter() - started)
            assert answer["accepted"] == "journal", answer
            hashes.append(answer["tx_hash"])
        status = client.call("node_status")
        assert int(status["height"]) == height and status["mempool_size"] == str(TXS)
    finally:
        _kill9(node)
    print(f"tx_submit round trip: median {sorted(submit_s)[TXS // 2] * 1000:.2f} ms")
    journal = home / JOURNAL_FILE
    assert read_journal(journal).records == raws
    # A torn append: the header and half of one more record, as a kill -9 mid-write leaves it.
    extra = sign_tx(
        Deposit(
            nonce=TXS,
            account=SigningKey.from_label("devnet/trader/9").public_key,
            amount_quote=1,
            deposit_id=79_999,
        ),
        SigningKey.from_label("devnet/bridge"),
        CHAIN_ID,
    ).raw
    with journal.open("ab") as handle:
        handle.write(len(extra).to_bytes(4, "big") + b"\x00\x00\x00\x00" + extra[:10])

    # 2. Restart (blocks still a minute apart): every accepted tx is pending again.
    node, client = _start(home, 60_000)
    try:
        assert client.call("node_status")["mempool_size"] == str(TXS)
        for tx_hash in hashes:
            assert client.call("tx_status", tx_hash=tx_hash)["status"] == "pending", tx_hash
    finally:
        _kill9(node)  # killed again before inclusion: the re-admitted txs were re-journalled
    assert read_journal(journal).records == raws  # the torn tail is gone

    # 3. Restart with 20 ms blocks: all 52 are included, each once.
    node, client = _start(home, 20)
    try:
        deadline = time.monotonic() + 60
        receipts = {}
        while len(receipts) < TXS:
            assert time.monotonic() < deadline, f"{TXS - len(receipts)} txs never included"
            for tx_hash in hashes:
                if tx_hash not in receipts:
                    found = client.call("tx_status", tx_hash=tx_hash)
                    if found["status"] in ("committed", "rejected"):
                        receipts[tx_hash] = found
            time.sleep(0.05)
        deposits = [receipts[h] for h in hashes[0::2]]
        assert all(r["status"] == "committed" for r in deposits), deposits
        assert int(client.call("node_status")["committed_txs"]) == TXS
    finally:
        _kill9(node)

    # 4. A restart after inclusion re-admits nothing (nonces used: dropped by admission).
    node, client = _start(home, 60_000)
    try:
        assert client.call("node_status")["mempool_size"] == "0"
        for tx_hash in hashes:
            assert (
                client.call("tx_status", tx_hash=tx_hash)["height"] == receipts[tx_hash]["height"]
            )
    finally:
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=30) == 0
    assert read_journal(journal).records == []
