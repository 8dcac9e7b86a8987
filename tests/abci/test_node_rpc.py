"""A validator's node: `run_abci_node` serves the ABCI socket and our JSON-RPC on one store.
Reads (node_status, perp_*, blocks, receipts) answer from the committed blocks CometBFT drove;
tx_submit goes to CometBFT's broadcast_tx_sync (a stand-in CometBFT RPC here: the real engine
is in tests/e2e/test_cometbft_testnet.py) and its CheckTx answer maps to our error codes."""

from __future__ import annotations

import base64
import json
import pathlib
from typing import Any

import h11
import pytest
import trio

from node.abci.node import run_abci_node
from node.client import RpcCallError, RpcClient
from node.config import NodeConfig
from node.core.errors import Reject
from tests.abci.harness import AbciClient, block_fill, genesis_doc, init_chain_fill, orders


async def _call(client: RpcClient, method: str, **params: Any) -> Any:
    return await trio.to_thread.run_sync(lambda: client.call(method, **params))


class FakeComet:
    """Answers broadcast_tx_sync as CometBFT does, from a table raw tx -> CheckTx result."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.answers: dict[bytes, dict[str, Any]] = {}

    async def serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        call = json.loads(body)
        assert call["method"] == "broadcast_tx_sync"
        raw = base64.b64decode(call["params"]["tx"])
        self.received.append(raw)
        result = self.answers.get(raw, {"code": 0, "log": "", "codespace": ""})
        reply = json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": result}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(reply)))]
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
        await stream.send_all(conn.send(h11.Data(data=reply)) + conn.send(h11.EndOfMessage()))
        await stream.aclose()


async def test_a_validator_serves_reads_and_forwards_tx_submit(tmp_path: pathlib.Path) -> None:
    doc, keys = genesis_doc(10)
    home = tmp_path / "val"
    home.mkdir()
    (home / "genesis.json").write_text(json.dumps(doc))
    config = NodeConfig.load(
        home, env={}, overrides={"rpc.listen": "127.0.0.1:0", "metrics.enabled": False}
    )
    comet = FakeComet()
    txs = orders(doc, keys, 40)
    async with trio.open_nursery() as nursery:
        fake_scope = trio.CancelScope()

        async def run_fake(task_status: trio.TaskStatus[Any]) -> None:
            with fake_scope:
                await trio.serve_tcp(comet.serve, 0, host="127.0.0.1", task_status=task_status)

        listeners = await nursery.start(run_fake)
        port = listeners[0].socket.getsockname()[1]
        bound = await nursery.start(
            lambda task_status: run_abci_node(
                config,
                abci_address=f"unix://{tmp_path}/abci.sock",
                comet_rpc=f"http://127.0.0.1:{port}",
                task_status=task_status,
            )
        )
        abci = await AbciClient.connect(bound.abci)
        await abci.call("init_chain", init_chain_fill(doc["chain_id"]))
        finalized = await abci.call("finalize_block", block_fill(1, txs[:30]))
        await abci.call("commit")

        rpc = RpcClient(f"http://{bound.rpc.rpc}")
        status = await _call(rpc, "node_status")
        assert status["mode"] == "abci" and status["height"] == "1"
        assert status["state_root"] == bytes(finalized.app_hash).hex()
        block = await _call(rpc, "chain_getBlock", height="1")
        assert (b"\x01" * 20).hex() in json.dumps(block)  # the proposer, in the header
        account = await _call(rpc, "perp_getAccount", address=keys[0].public_key.hex())
        assert account["address"] == keys[0].public_key.hex()
        receipt = await _call(rpc, "tx_status", tx_hash=finalized.tx_results[0].data.hex())
        assert receipt["status"] == "committed" and receipt["height"] == "1"

        # tx_submit: accepted by CometBFT's CheckTx ...
        answer = await _call(rpc, "tx_submit", tx=txs[30].hex())
        assert answer["accepted"] == "cometbft" and comet.received == [txs[30]]
        # ... refused there with our code ...
        comet.answers[txs[31]] = {"code": 3, "log": "BAD_NONCE: nonce=0", "codespace": "perp"}
        with pytest.raises(RpcCallError) as refused:
            await _call(rpc, "tx_submit", tx=txs[31].hex())
        assert refused.value.code == 1000 + Reject.BAD_NONCE
        # ... or CometBFT unreachable.
        fake_scope.cancel()
        await trio.sleep(0.05)
        with pytest.raises(RpcCallError) as down:
            await _call(rpc, "tx_submit", tx=txs[32].hex())
        assert down.value.code == 2009
        await abci.aclose()
        nursery.cancel_scope.cancel()
