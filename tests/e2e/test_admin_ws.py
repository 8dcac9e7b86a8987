"""Through a real node: WebSocket new_heads and account subscriptions, and the admin listener
(bearer token, never on the public port): halt -> reads served, /health 503, submissions
refused -> resume."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import trio

from node.app import init_home, run_node
from node.config import NodeConfig
from node.core.crypto import SigningKey
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import PlaceOrder, sign_tx
from tests.rpc.client import WsClient, http_request, rpc_post

GENESIS = pathlib.Path(__file__).resolve().parents[2] / "genesis" / "devnet.json"


def _order(label: str, side: Side, client_id: int) -> str:
    body = PlaceOrder(
        nonce=0,
        market_id=1,
        side=side,
        kind=OrderKind.LIMIT,
        tif=TimeInForce.GTC,
        price_quote=60_000 * 10**6,
        size_atoms=10**8,
        reduce_only=0,
        trigger_price_quote=0,
        client_id=client_id,
    )
    return sign_tx(body, SigningKey.from_label(label), b"perpchain-devnet-1").raw.hex()


def _req(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}


async def test_subscriptions_and_admin_commands(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "home"
    init_home(home, json.loads(GENESIS.read_text()))
    config = NodeConfig.load(
        home,
        env={},
        overrides={
            "rpc.listen": "127.0.0.1:0",
            "admin.enabled": True,
            "admin.listen": "127.0.0.1:0",
            "metrics.enabled": False,
            "block_interval_ms": 50,
        },
    )
    token = (home / "admin.token").read_text().strip()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(run_node, config)
        port, admin_port = bound.rpc.port, bound.admin.port
        maker = SigningKey.from_label("devnet/trader/0").public_key.hex()
        ws = await WsClient.connect(port)
        heads = (await ws.call("subscribe", {"topic": "new_heads"}))["result"]["subscription"]
        fills = (await ws.call("subscribe", {"topic": f"account:{maker}"}))["result"]
        await rpc_post(port, _req("tx_submit", {"tx": _order("devnet/trader/0", Side.SELL, 1)}))
        await rpc_post(port, _req("tx_submit", {"tx": _order("devnet/trader/1", Side.BUY, 1)}))
        seen: dict[str, list[Any]] = {}
        with trio.fail_after(20):
            while not seen.get(fills["subscription"]) or not seen.get(heads):
                message = await ws.recv()
                params = message.get("params", {})
                seen.setdefault(params.get("subscription"), []).append(params.get("result"))
        assert seen[fills["subscription"]][0]["kind"] == "fill"
        assert int(seen[heads][0]["height"]) >= 1 and len(seen[heads][0]["state_root"]) == 64
        await ws.aclose()

        # Admin methods are not on the public port, and need the token on the admin port.
        public = await rpc_post(port, _req("admin_halt"))
        assert public["error"]["code"] == -32601
        wrong = await http_request(
            admin_port,
            "POST",
            body=json.dumps(_req("admin_halt")).encode(),
            headers=[("authorization", "Bearer wrong-token-wrong-token-wrong-token")],
        )
        assert wrong.status == 401
        auth = [("authorization", f"Bearer {token}")]
        halted = await rpc_post(admin_port, _req("admin_halt", {"reason": "drill"}), auth)
        assert halted["result"]["mode"] == "halted"
        status = (await rpc_post(port, _req("node_status")))["result"]
        assert status["mode"] == "halted" and "drill" in status["halt_reason"]
        health = await http_request(port, "GET", "/health")
        assert health.status == 503
        refused = await rpc_post(
            port, _req("tx_submit", {"tx": _order("devnet/trader/2", Side.BUY, 2)})
        )
        assert refused["error"]["code"] == 2001
        height = int(status["height"])
        await trio.sleep(0.3)  # halted: no blocks are produced
        assert int((await rpc_post(port, _req("node_status")))["result"]["height"]) == height
        resumed = await rpc_post(admin_port, _req("admin_resume"), auth)
        assert resumed["result"]["mode"] == "producing"
        with trio.fail_after(10):
            while int((await rpc_post(port, _req("node_status")))["result"]["height"]) == height:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
