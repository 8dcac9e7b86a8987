"""perpchain_txs_committed{outcome} counts every committed tx by its receipt (issue 20: it was
never incremented), read through a real node's /metrics."""

from __future__ import annotations

import json
import pathlib
import re

import trio

from node.app import init_home, run_node
from node.core.crypto import SigningKey
from node.core.txs import CancelOrder, sign_tx
from node.rpc.server import BoundListeners
from tests.e2e.chain import CHAIN_ID, OrderFlow, genesis_doc, node_config
from tests.rpc.client import http_request

_SAMPLE = re.compile(r'^perpchain_txs_committed_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.M)


async def _rpc(port: int, method: str, **params: object) -> dict[str, object]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    answer = (await http_request(port, "POST", "/", body)).json()
    assert "result" in answer, answer
    return answer["result"]  # type: ignore[no-any-return]


async def _committed(metrics_port: int) -> dict[str, float]:
    text = (await http_request(metrics_port, "GET", "/metrics")).body.decode()
    return {outcome: float(value) for outcome, value in _SAMPLE.findall(text)}


async def test_txs_committed_counts_ok_and_rejected_receipts(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "node"
    init_home(home, genesis_doc())
    config = node_config(
        home, **{"metrics.enabled": True, "metrics.listen": "127.0.0.1:0", "block_interval_ms": 50}
    )
    async with trio.open_nursery() as nursery:
        bound: BoundListeners = await nursery.start(run_node, config)
        assert bound.metrics is not None
        rpc, metrics = bound.rpc.port, bound.metrics.port
        assert await _committed(metrics) == {"ok": 0.0, "rejected": 0.0}
        orders = OrderFlow(seed=3, traders=2).orders(4)
        # Cancelling an order that does not exist: admitted, then rejected in the block.
        cancel = sign_tx(
            CancelOrder(nonce=0, order_id=999_999, client_id=0),
            SigningKey.from_label("devnet/trader/7"),
            CHAIN_ID,
        )
        for tx in [*orders, cancel]:
            await _rpc(rpc, "tx_submit", tx=tx.raw.hex())
        with trio.fail_after(30):
            while True:
                status = await _rpc(rpc, "node_status")
                if int(str(status["committed_txs"])) >= 5 and status["mempool_size"] == "0":
                    break
                await trio.sleep(0.05)
        counts = await _committed(metrics)
        receipt = await _rpc(rpc, "tx_status", tx_hash=cancel.tx_hash.hex())
        nursery.cancel_scope.cancel()
    assert receipt["status"] == "rejected"
    assert counts["rejected"] >= 1 and counts["ok"] >= 1
    assert counts["ok"] + counts["rejected"] == int(str(status["committed_txs"])) == 5
