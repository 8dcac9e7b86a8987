"""End to end through a real node: LevelDB, the producer task, hypercorn on real sockets."""

from __future__ import annotations

import json
import pathlib
import urllib.request
from typing import Any

import trio

from node.app import init_home, run_node
from node.client import RpcCallError, RpcClient
from node.config import NodeConfig
from node.core import merkle
from node.core.crypto import SigningKey
from node.core.errors import Reject
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import PlaceOrder, sign_tx

GENESIS = pathlib.Path(__file__).resolve().parents[2] / "genesis" / "devnet.json"
USD = 10**6
UNIT = 10**8


async def _call(client: RpcClient, method: str, **params: Any) -> Any:
    return await trio.to_thread.run_sync(lambda: client.call(method, **params))


async def _wait_receipt(client: RpcClient, tx_hash: str) -> dict[str, Any]:
    with trio.fail_after(20):
        while True:
            status = await _call(client, "tx_status", tx_hash=tx_hash)
            if status["status"] in ("committed", "rejected"):
                return status  # type: ignore[no-any-return]
            await trio.sleep(0.05)


def _order(key: SigningKey, nonce: int, side: Side, size: int, price: int, client_id: int) -> bytes:
    body = PlaceOrder(
        nonce=nonce,
        market_id=1,
        side=side,
        kind=OrderKind.LIMIT,
        tif=TimeInForce.GTC,
        price_quote=price,
        size_atoms=size,
        reduce_only=0,
        trigger_price_quote=0,
        client_id=client_id,
    )
    return sign_tx(body, key, b"perpchain-devnet-1").raw


def _post(url: str, batch: list[dict[str, Any]]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(batch).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


def _flip_last(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])


async def test_orders_fill_and_proofs_verify_through_a_real_node(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "home"
    init_home(home, json.loads(GENESIS.read_text()))
    config = NodeConfig.load(
        home,
        env={},
        overrides={
            "rpc.listen": "127.0.0.1:0",
            "metrics.enabled": False,
            "block_interval_ms": 50,
        },
    )
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(run_node, config)
        client = RpcClient(f"http://{bound.rpc}")
        status = await _call(client, "node_status")
        assert (
            status["mode"] in ("producing", "starting")
            and status["chain_id"] == "perpchain-devnet-1"
        )

        a, b = SigningKey.from_label("devnet/trader/0"), SigningKey.from_label("devnet/trader/1")
        sell = await _call(
            client, "tx_submit", tx=_order(a, 0, Side.SELL, UNIT, 60_000 * USD, 1).hex()
        )
        buy = await _call(
            client, "tx_submit", tx=_order(b, 0, Side.BUY, UNIT, 60_000 * USD, 1).hex()
        )
        assert (await _wait_receipt(client, sell["tx_hash"]))["code"] == "0"
        receipt = await _wait_receipt(client, buy["tx_hash"])
        assert receipt["code"] == "0"
        assert [e["kind"] for e in receipt["events"]] == ["order_placed", "fill"]

        account = await _call(client, "perp_getAccount", address=b.public_key.hex())
        assert account["positions"][0]["size"] == str(UNIT)
        market = await _call(client, "perp_getMarket", market="BTC-USD-PERP")
        assert market["open_interest"] == str(UNIT)

        # A proof of b's position verifies against the state root in the block header.
        from node.core import keys

        key = keys.position(b.public_key, 1)
        proof = await _call(client, "chain_getProof", key=key.hex())
        block = await _call(client, "chain_getBlock", height=proof["height"])
        root = bytes.fromhex(block["header"]["state_root"])
        value = bytes.fromhex(proof["value"])
        assert merkle.verify_proof(root, key, value, bytes.fromhex(proof["proof"]))
        assert not merkle.verify_proof(root, key, value + b"x", bytes.fromhex(proof["proof"]))

        # Bad input: a replay, random bytes, a bad signature: errors, the node stays up.
        root_before = (await _call(client, "node_status"))["state_root"]
        for bad, code in (
            (_order(b, 0, Side.BUY, UNIT, 60_000 * USD, 2), 1000 + Reject.BAD_NONCE),
            (b"\x93\x01\x02", 1000 + Reject.MALFORMED),
            (
                _flip_last(_order(b, 1, Side.BUY, UNIT, 60_000 * USD, 3)),
                1000 + Reject.BAD_SIGNATURE,
            ),
        ):
            try:
                await _call(client, "tx_submit", tx=bad.hex())
                raise AssertionError(f"accepted a bad tx {bad.hex()[:40]} expecting {code}")
            except RpcCallError as error:
                assert error.code in (code, 1000 + Reject.BAD_SIGNATURE), error
        with trio.fail_after(5):
            while (await _call(client, "node_status"))["height"] == status["height"]:
                await trio.sleep(0.05)
        assert (await _call(client, "perp_getAccount", address=b.public_key.hex()))["positions"][0][
            "size"
        ] == str(UNIT)
        del root_before

        # A batch: its signatures are checked together in the admission process, and each
        # entry gets the answer a single submission would, in order.
        batch = [
            _order(a, 1, Side.SELL, UNIT, 61_000 * USD, 4),
            _flip_last(_order(a, 2, Side.SELL, UNIT, 61_000 * USD, 5)),
            b"\x93\x01\x02",
            _order(b, 0, Side.BUY, UNIT, 60_000 * USD, 2),  # a replay
            _order(a, 2, Side.SELL, UNIT, 61_000 * USD, 6),
        ]
        body = [
            {"jsonrpc": "2.0", "id": n, "method": "tx_submit", "params": {"tx": raw.hex()}}
            for n, raw in enumerate(batch)
        ]
        answers = await trio.to_thread.run_sync(_post, f"http://{bound.rpc}", body)
        assert [answer["id"] for answer in answers] == list(range(5))
        assert [answer.get("error", {}).get("code") for answer in answers] == [
            None,
            1000 + Reject.BAD_SIGNATURE,
            1000 + Reject.MALFORMED,
            1000 + Reject.BAD_NONCE,
            None,
        ]
        for answer in (answers[0], answers[4]):
            assert (await _wait_receipt(client, answer["result"]["tx_hash"]))["code"] == "0"
        nursery.cancel_scope.cancel()
