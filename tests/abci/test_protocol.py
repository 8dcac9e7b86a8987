"""The socket protocol and the application's refusals, against one application in-process:
malformed frames get an exception response and change nothing; InitChain refuses a chain id,
initial height or validator set other than ours; CheckTx runs our admission (and RECHECK the
nonce rule after a block); an invariant violation in FinalizeBlock answers an exception and
keeps the application halted; Query serves proofs that verify against the app hash."""

from __future__ import annotations

import base64
import json
import pathlib
from typing import Any

import pytest
import trio

from node.abci import application, codec
from node.abci.proto.tendermint.abci import types_pb2 as pb
from node.core import keys as state_keys
from node.core import merkle
from node.core.errors import InvariantViolation, Reject
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import PlaceOrder, sign_tx
from tests.abci.harness import (
    AbciClient,
    block_fill,
    genesis_doc,
    init_chain_fill,
    is_exception,
    orders,
    serving,
)


async def _started(client: AbciClient, doc: dict[str, Any]) -> bytes:
    init = await client.call("init_chain", init_chain_fill(doc["chain_id"]))
    return bytes(init.app_hash)


async def test_malformed_frames_get_an_exception_and_change_nothing(
    tmp_path: pathlib.Path,
) -> None:
    doc, keys = genesis_doc(8)
    async with serving(tmp_path, doc) as (app, address):
        client = await AbciClient.connect(address)
        root = await _started(client, doc)
        txs = orders(doc, keys, 8)
        await client.call("finalize_block", block_fill(1, txs))
        await client.call("commit")
        height, root = app.store.height, app.store.root()

        # An unknown request type (field 30; field 4 is v0.34's retired SetOption), an empty
        # request and bytes that are not protobuf: an exception each, the connection goes on.
        for payload in (b"\xf2\x01\x00", b"", b"\x0a\xff\xff"):
            await client.send_raw(codec.frame(payload))
            response = await client.read_response()
            assert response is not None and response.WhichOneof("value") == "exception"
        echo = await client.call("echo", lambda r: setattr(r, "message", "still here"))
        assert echo.message == "still here"

        # A length prefix that is not a uvarint (11 continuation bytes) and one past the
        # frame limit: an exception, then the server closes that connection.
        for prefix in (b"\xff" * 11, codec.encode_uvarint(1 << 40)):
            broken = await AbciClient.connect(address)
            await broken.send_raw(prefix + b"\x00" * 16)
            response = await broken.read_response()
            assert response is not None and response.WhichOneof("value") == "exception"
            assert await broken.read_response() is None  # closed
            await broken.aclose()

        # A Commit with nothing finalized and a FinalizeBlock at a wrong height: refused.
        assert is_exception(await client.call("commit"))
        assert is_exception(await client.call("finalize_block", block_fill(5, [])))
        assert (app.store.height, app.store.root()) == (height, root)
        info = await client.call("info")
        assert info.last_block_height == height and bytes(info.last_block_app_hash) == root
        await client.aclose()


def test_uvarint_round_trip_and_limits() -> None:
    for value in (0, 1, 127, 128, 300, 1 << 32, (1 << 64) - 1):
        encoded = codec.encode_uvarint(value)
        assert codec.decode_uvarint(encoded) == (value, len(encoded))
        assert codec.decode_uvarint(encoded[:-1]) is None  # incomplete
    with pytest.raises(codec.FrameError):
        codec.decode_uvarint(b"\xff" * 9 + b"\x7f")  # beyond 64 bits
    with pytest.raises(codec.FrameError):
        codec.decode_uvarint(b"\x80" * 10)
    # CometBFT's framing is unsigned: 300 -> ac 02 (zigzag would be d8 04).
    assert codec.encode_uvarint(300) == b"\xac\x02"


async def test_init_chain_refuses_another_chain_height_or_validator_set(
    tmp_path: pathlib.Path,
) -> None:
    doc, _ = genesis_doc(2)
    validator = bytes(range(32))
    doc["abci"] = {"validators": [{"pub_key": base64.b64encode(validator).decode(), "power": 10}]}

    def with_validator(key: bytes, chain_id: str = doc["chain_id"], initial: int = 1) -> Any:
        def fill(req: Any) -> None:
            init_chain_fill(chain_id)(req)
            req.initial_height = initial
            update = req.validators.add()
            update.pub_key.ed25519 = key
            update.power = 10

        return fill

    async with serving(tmp_path, doc) as (app, address):
        client = await AbciClient.connect(address)
        refused = [
            await client.call("init_chain", with_validator(validator, chain_id="other-chain")),
            await client.call("init_chain", with_validator(validator, initial=7)),
            await client.call("init_chain", with_validator(b"\x07" * 32)),
            await client.call("init_chain", lambda r: init_chain_fill(doc["chain_id"])(r)),
        ]
        for response in refused:
            assert is_exception(response)
        assert "other-chain" in refused[0].exception.error
        assert "validator set" in refused[2].exception.error
        assert app.store.height == -1  # nothing written
        ok = await client.call("init_chain", with_validator(validator))
        assert not is_exception(ok) and app.store.height == 0
        again = await client.call("init_chain", with_validator(validator))  # idempotent
        assert bytes(again.app_hash) == bytes(ok.app_hash)
        await client.aclose()


def _order(key: Any, chain_id: bytes, nonce: int) -> bytes:
    body = PlaceOrder(
        nonce=nonce,
        market_id=1,
        side=Side.BUY,
        kind=OrderKind.LIMIT,
        tif=TimeInForce.GTC,
        price_quote=59_000 * 10**6,
        size_atoms=100_000,
        reduce_only=0,
        trigger_price_quote=0,
        client_id=nonce + 1,
    )
    return sign_tx(body, key, chain_id).raw


async def test_check_tx_runs_admission_and_recheck_drops_used_nonces(
    tmp_path: pathlib.Path,
) -> None:
    doc, keys = genesis_doc(2)
    chain_id = doc["chain_id"].encode()
    async with serving(tmp_path, doc, max_per_account=3) as (app, address):
        client = await AbciClient.connect(address)
        root = await _started(client, doc)

        def check(raw: bytes, recheck: bool = False) -> Any:
            def fill(req: Any) -> None:
                req.tx = raw
                req.type = pb.RECHECK if recheck else pb.NEW

            return client.call("check_tx", fill)

        good = _order(keys[0], chain_id, 0)
        assert (await check(good)).code == 0
        flipped = bytearray(good)
        flipped[-3] ^= 1
        assert (await check(bytes(flipped))).code == Reject.BAD_SIGNATURE
        assert (await check(b"\x01\x02")).code == Reject.MALFORMED
        assert (await check(b"\x00" * 5000)).code == Reject.MALFORMED
        far = _order(keys[0], chain_id, 64)  # beyond the nonce window
        assert (await check(far)).code == Reject.BAD_NONCE
        assert (await check(_order(keys[0], chain_id, 1))).code == 0
        assert (await check(_order(keys[0], chain_id, 2))).code == 0
        full = await check(_order(keys[0], chain_id, 3))
        assert full.code == application.SENDER_FULL_CODE  # max_per_account=3
        assert app.store.root() == root  # CheckTx never writes

        await client.call("finalize_block", block_fill(1, [good]))
        await client.call("commit")
        assert (await check(good, recheck=True)).code == Reject.BAD_NONCE
        assert (await check(_order(keys[0], chain_id, 1), recheck=True)).code == 0
        await client.aclose()


async def test_an_invariant_violation_answers_an_exception_and_stays_halted(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc, keys = genesis_doc(4)
    async with serving(tmp_path, doc) as (app, address):
        client = await AbciClient.connect(address)
        root = await _started(client, doc)
        real = application.apply_block_steps

        def broken(*args: Any, **kwargs: Any) -> Any:
            yield from real(*args, **kwargs)
            raise InvariantViolation("quote was created or destroyed")

        monkeypatch.setattr(application, "apply_block_steps", broken)
        txs = orders(doc, keys, 4)
        response = await client.call("finalize_block", block_fill(1, txs))
        assert is_exception(response)
        assert "invariant violated at height 1" in response.exception.error
        assert is_exception(await client.call("commit"))
        monkeypatch.setattr(application, "apply_block_steps", real)
        # Halted for good in this process: the next FinalizeBlock is refused too.
        assert is_exception(await client.call("finalize_block", block_fill(1, txs)))
        assert app.store.height == 0 and app.store.root() == root
        assert app.status.mode == "halted"
        await client.aclose()


async def test_query_state_proofs_verify_against_the_app_hash(tmp_path: pathlib.Path) -> None:
    doc, keys = genesis_doc(4)

    async def rpc_call(method: str, params: dict[str, Any]) -> Any:
        return {"method": method, "params": params}

    async with serving(tmp_path, doc, rpc_call=rpc_call) as (app, address):
        client = await AbciClient.connect(address)
        await _started(client, doc)
        finalized = await client.call("finalize_block", block_fill(1, orders(doc, keys, 4)))
        await client.call("commit")
        key = state_keys.account(keys[0].public_key)
        answer = await client.call(
            "query",
            lambda r: (
                setattr(r, "path", "/perp/state"),
                setattr(r, "data", key),
                setattr(r, "prove", True),
            ),
        )
        assert answer.code == 0 and answer.height == 1 and answer.value
        (op,) = answer.proof_ops.ops
        assert op.type == "perp:smt"
        assert merkle.verify_proof(bytes(finalized.app_hash), key, bytes(answer.value), op.data)
        absent = state_keys.account(b"\x09" * 32)
        answer = await client.call(
            "query",
            lambda r: (
                setattr(r, "path", "/perp/state"),
                setattr(r, "data", absent),
                setattr(r, "prove", True),
            ),
        )
        assert answer.code == 0 and answer.value == b""
        assert merkle.verify_proof(
            bytes(finalized.app_hash), absent, None, answer.proof_ops.ops[0].data
        )
        negative = await client.call(
            "query",
            lambda r: (
                setattr(r, "path", "/perp/state"),
                setattr(r, "data", key),
                setattr(r, "height", -3),
            ),
        )
        assert negative.code != 0
        pruned = await client.call(
            "query",
            lambda r: (
                setattr(r, "path", "/perp/state"),
                setattr(r, "data", key),
                setattr(r, "height", 99),
            ),
        )
        assert pruned.code == 2  # HeightUnavailable: an answer, not a failure
        call = json.dumps({"method": "perp_getAccount", "params": {"address": "ab"}}).encode()
        answer = await client.call(
            "query", lambda r: (setattr(r, "path", "/perp/rpc"), setattr(r, "data", call))
        )
        assert answer.code == 0
        assert json.loads(answer.value) == {
            "method": "perp_getAccount",
            "params": {"address": "ab"},
        }
        await client.aclose()


async def test_connections_are_served_side_by_side(tmp_path: pathlib.Path) -> None:
    """CometBFT's four connections: each gets its responses in order, while another one is
    busy (requests of all connections are served one at a time under the app's lock)."""
    doc, keys = genesis_doc(20)
    async with serving(tmp_path, doc) as (app, address):
        clients = [await AbciClient.connect(address) for _ in range(4)]
        await _started(clients[0], doc)
        txs = orders(doc, keys, 200)

        async def checks(client: AbciClient) -> None:
            for raw in txs[:50]:
                response = await client.call("check_tx", lambda r, raw=raw: setattr(r, "tx", raw))
                assert response.code == 0

        async with trio.open_nursery() as nursery:
            for client in clients[1:]:
                nursery.start_soon(checks, client)
            # nonces 5..9 of each signer: the checks' nonces 0..2 stay unused (window of 64)
            finalized = await clients[0].call("finalize_block", block_fill(1, txs[100:]))
            await clients[0].call("commit")
        assert app.store.root() == bytes(finalized.app_hash)
        for client in clients:
            await client.aclose()


async def test_a_failing_handler_answers_an_exception_and_the_server_goes_on(
    tmp_path: pathlib.Path,
) -> None:
    doc, _ = genesis_doc(2)
    async with serving(tmp_path, doc) as (app, address):
        client = await AbciClient.connect(address)

        def broken(req: Any) -> Any:
            raise RuntimeError("a bug")

        app.handlers["echo"] = broken
        response = await client.call("echo")
        assert is_exception(response) and "RuntimeError: a bug" in response.exception.error
        info = await client.call("info")
        assert info.last_block_height == 0
        await client.aclose()


async def test_commit_retains_the_last_blocks_but_never_above_a_checkpoint(
    tmp_path: pathlib.Path,
) -> None:
    """`perpchain start --abci --retain-blocks N`: Commit's retain_height lets CometBFT prune
    all but the last N blocks, and stops at the lowest checkpoint (a rollback to it replays)."""
    doc, _ = genesis_doc(4)
    async with serving(tmp_path, doc) as (app, address):
        client = await AbciClient.connect(address)
        await _started(client, doc)
        app.retain_blocks = 3
        retained = []
        for height in range(1, 7):
            await client.call("finalize_block", block_fill(height, []))
            retained.append((await client.call("commit")).retain_height)
            if height == 2:
                app.store.checkpoint("pre-maintenance-2")
        assert retained[:2] == [0, 0] and retained[2:] == [1, 2, 2, 2]
        app.store.delete_checkpoint("pre-maintenance-2")
        await client.call("finalize_block", block_fill(7, []))
        assert (await client.call("commit")).retain_height == 5
        app.retain_blocks = 0
        await client.call("finalize_block", block_fill(8, []))
        assert (await client.call("commit")).retain_height == 0
        await client.aclose()
