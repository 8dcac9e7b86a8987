"""Followers through real nodes on real sockets: sync from genesis, follow live heads, refuse a
tampered source with the right reason, forward txs, survive restarts."""

from __future__ import annotations

import dataclasses
import pathlib
import threading
from typing import Any

import pytest
import trio

from node.app import init_home
from node.app import run_node as run_node_task
from node.chain.producer import ChainStatus
from node.client import RpcCallError, RpcClient
from node.core.blocks import Block, decode_block, encode_block, sign_header
from node.core.crypto import SigningKey
from node.core.genesis import parse_genesis
from node.devnet import Bots
from node.rpc.jsonrpc import MethodTable
from node.rpc.methods import NodeContext, build_tables
from node.rpc.server import serve_node_listeners
from node.store import VersionedStore, blocks_db
from tests.e2e.chain import (
    OrderFlow,
    call,
    genesis_doc,
    make_chain,
    node_config,
    roots,
    running_node,
    wait_for,
)

PRODUCER = SigningKey.from_label("devnet/producer")


def _follower_home(path: pathlib.Path) -> pathlib.Path:
    init_home(path, genesis_doc(), follower=True)
    return path


def _bots_thread(url: str, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        bots = Bots(RpcClient(url, timeout_s=20), genesis_doc(), traders=12, seed=5)
        while not stop.is_set():
            try:
                bots.feed_oracle()
                bots.trade(30)
            except Exception:  # noqa: BLE001 - a refused tx or a busy node: keep going
                pass

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
async def test_followers_agree_with_the_sequencer_at_every_height(tmp_path: pathlib.Path) -> None:
    seq = tmp_path / "seq"
    init_home(seq, genesis_doc())
    early, late = _follower_home(tmp_path / "f1"), _follower_home(tmp_path / "f2")
    stop = threading.Event()
    async with running_node(seq, block_interval_ms=20) as (url, _):
        bots = _bots_thread(url, stop)
        async with running_node(early, follow_url=url) as (url1, _):
            await wait_for(url, lambda s: int(s["height"]) >= 250, timeout_s=120)
            async with running_node(late, follow_url=url) as (url2, _):  # catches up 250+
                head = await wait_for(url, lambda s: int(s["height"]) >= 500, timeout_s=120)
                stop.set()
                await trio.to_thread.run_sync(bots.join)
                status = await call(url1, "node_status")
                assert status["mode"] == "following", status
                head = await call(url, "node_status")
                for follower in (url1, url2):
                    await wait_for(follower, lambda s: int(s["height"]) >= int(head["height"]))
                    block = await call(follower, "chain_getBlock", height=head["height"])
                    assert block["header"]["state_root"] == head["state_root"]
                    assert block["header"]["hash"] == head["head_hash"]
                committed = int(head["committed_txs"])
                assert committed > 300, f"too little load: {committed} txs"
    sequencer_roots = roots(seq)
    for follower_home in (early, late):
        mine = roots(follower_home)
        assert len(mine) > int(head["height"]) >= 500
        assert mine == sequencer_roots[: len(mine)]


async def test_a_follower_forwards_transactions_and_serves_reads(tmp_path: pathlib.Path) -> None:
    seq = tmp_path / "seq"
    make_chain(seq, 5)
    follower = _follower_home(tmp_path / "f")
    async with running_node(seq, block_interval_ms=20) as (url, _):
        async with running_node(follower, follow_url=url) as (furl, _):
            await wait_for(furl, lambda s: int(s["height"]) >= 5)
            flow = OrderFlow(3)
            flow.nonces = [
                int((await call(furl, "perp_getNonce", address=k.public_key.hex()))["next_nonce"])
                for k in flow.keys
            ]
            tx = flow.orders(1)[0]
            reply = await call(furl, "tx_submit", tx=tx.raw.hex())
            assert reply["tx_hash"] == tx.tx_hash.hex()
            with trio.fail_after(20):
                while (await call(furl, "tx_status", tx_hash=tx.tx_hash.hex()))[
                    "status"
                ] != "committed":
                    await trio.sleep(0.05)
            # the sequencer's errors come back unchanged
            with pytest.raises(RpcCallError) as refused:
                await call(furl, "tx_submit", tx=tx.raw.hex())
            assert refused.value.code == 1000 + 3 or refused.value.code > 1000
            book = await call(furl, "perp_getOrderBook", market="BTC-USD-PERP")
            assert book["market"] == "BTC-USD-PERP"


# --- a tampering source --------------------------------------------------------------------


def _resign(block: Block, **changes: Any) -> Block:
    header = sign_header(dataclasses.replace(block.header, **changes), PRODUCER)
    return dataclasses.replace(block, header=header)


def _tamper_state_root(block: Block) -> Block:
    return _resign(block, state_root=bytes(32))


def _tamper_tx(block: Block) -> Block:
    return dataclasses.replace(block, txs=block.txs[:-1])


def _tamper_signature(block: Block) -> Block:
    header = dataclasses.replace(block.header, time_ms=block.header.time_ms + 1)
    return dataclasses.replace(block, header=header)


def _tamper_parent(block: Block) -> Block:
    return _resign(block, parent_hash=b"\x07" * 32)


TAMPERS = {
    "state_root": (_tamper_state_root, "invalid state root at height 7: header 0000"),
    "tx": (_tamper_tx, "tx root mismatch at height 7"),
    "signature": (_tamper_signature, "bad producer signature at height 7"),
    "parent": (_tamper_parent, "wrong parent at height 7"),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
async def test_a_follower_refuses_a_tampered_block_with_its_reason(
    tmp_path: pathlib.Path, tamper: str
) -> None:
    seq = tmp_path / "seq"
    make_chain(seq, 10)
    change, expected = TAMPERS[tamper]
    genesis = parse_genesis(genesis_doc())
    store = VersionedStore.open(seq / "data")
    try:
        head = blocks_db.get_block(store, store.height)
        assert head is not None
        status = ChainStatus(mode="producing", head=head.header)
        public, _ = build_tables(NodeContext(store, genesis, status, None, None))
        honest = public.get("chain_getRawBlocks")
        assert honest is not None

        async def tampered(params: dict[str, Any]) -> Any:
            reply = await honest(params)
            start = int(reply["from_height"])
            blocks = reply["blocks"]
            if start <= 7 < start + len(blocks):
                block = decode_block(bytes.fromhex(blocks[7 - start]))
                blocks[7 - start] = encode_block(change(block)).hex()
            return reply

        handlers = {name: public.get(name) for name in public.names()}
        handlers["chain_getRawBlocks"] = tampered
        from node.chain.broadcast import Broadcaster

        follower = _follower_home(tmp_path / "f")
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(
                lambda task_status: serve_node_listeners(
                    node_config(seq),
                    public=MethodTable(handlers),  # type: ignore[arg-type]
                    broadcaster=Broadcaster(),
                    task_status=task_status,
                )
            )
            source = f"http://{bound.rpc}"
            async with running_node(follower, follow_url=source) as (furl, _):
                status_json = await wait_for(furl, lambda s: s["mode"] == "halted")
                assert status_json["height"] == "6", status_json
                assert expected in status_json["halt_reason"], status_json["halt_reason"]
                health = await trio.to_thread.run_sync(_health, furl)
                assert health[0] == 503 and expected in health[1]
                # reads still served at the last valid height
                block6 = await call(furl, "chain_getBlock", height="6")
                assert block6["header"]["state_root"] == store.root(6).hex()
                await trio.sleep(0.3)
                assert (await call(furl, "node_status"))["height"] == "6"
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert roots(follower) == roots(seq)[:7]


def _health(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_a_follower_without_a_source_retries_and_starts_when_it_appears(
    tmp_path: pathlib.Path,
) -> None:
    seq = tmp_path / "seq"
    make_chain(seq, 3)
    follower = _follower_home(tmp_path / "f")
    with trio.socket.socket() as sock:  # reserve a port, then free it for the sequencer
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = f"http://127.0.0.1:{port}"
    async with running_node(follower, follow_url=source) as (furl, _):
        status = await call(furl, "node_status")
        assert status["height"] == "-1" and status["mode"] == "following"
        async with running_node(seq, block_interval_ms=50, **{"rpc.listen": f"127.0.0.1:{port}"}):
            await wait_for(furl, lambda s: int(s["height"]) >= 3, timeout_s=30)


async def test_a_follower_bootstrapped_from_a_snapshot_reaches_the_same_head(
    tmp_path: pathlib.Path,
) -> None:
    import shutil

    from node.ops.snapshot import export_snapshot, import_snapshot

    seq = tmp_path / "seq"
    make_chain(seq, 30)
    with VersionedStore.open(seq / "data") as store:
        export_snapshot(store, 20, tmp_path / "state.snap")
    from_snapshot = _follower_home(tmp_path / "snap")
    shutil.rmtree(from_snapshot / "data")
    import_snapshot(
        tmp_path / "state.snap", from_snapshot / "data", genesis=parse_genesis(genesis_doc())
    )
    from_genesis = _follower_home(tmp_path / "full")
    async with running_node(seq, block_interval_ms=20) as (url, _):
        async with running_node(from_snapshot, follow_url=url) as (surl, _):
            async with running_node(from_genesis, follow_url=url) as (gurl, _):
                head = await wait_for(url, lambda s: int(s["height"]) >= 40)
                for follower in (surl, gurl):
                    await wait_for(follower, lambda s: int(s["height"]) >= int(head["height"]))
                    block = await call(follower, "chain_getBlock", height=head["height"])
                    assert block["header"]["hash"] == head["head_hash"]
                # the snapshot node has no history below its base, and says so
                with pytest.raises(RpcCallError):
                    await call(surl, "chain_getBlock", height="5")
    seq_roots = roots(seq)
    with VersionedStore.open(from_snapshot / "data") as store:
        assert store.retained_heights()[0] == 20
        assert all(store.root(h) == seq_roots[h] for h in store.retained_heights())
    assert roots(from_genesis) == seq_roots[: len(roots(from_genesis))]


async def test_websocket_subscribers_receive_the_rollback_notice(tmp_path: pathlib.Path) -> None:
    from node.chain.remote import connect_remote
    from node.core.blocks import decode_notice, verify_notice

    home = tmp_path / "seq"
    make_chain(home, 6)
    overrides = {"admin.enabled": True, "admin.listen": "127.0.0.1:0", "block_interval_ms": 50}
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(run_node_task, node_config(home, **overrides))
        url = f"http://{bound.rpc}"
        admin = RpcClient(
            f"http://{bound.admin}", token=(home / "admin.token").read_text().strip(), timeout_s=20
        )
        async with connect_remote(url) as remote:
            notices = await remote.subscribe("rollbacks")
            result = await trio.to_thread.run_sync(
                lambda: admin.call("admin_rollback", to_height="4", reason="test")
            )
            with trio.fail_after(10):
                item = await notices.receive()
        assert item["fork_id"] == str(result["fork_id"]) and item["to_height"] == "4"
        notice = decode_notice(bytes.fromhex(item["notice"]))
        assert verify_notice(notice, parse_genesis(genesis_doc()).operator_key)
        nursery.cancel_scope.cancel()
