"""One application in-process behind a unix socket: handshake and a few blocks."""

from __future__ import annotations

import json
import pathlib

import trio

from node.abci.application import PerpApplication
from node.abci.server import serve_abci
from node.core.genesis import parse_genesis
from node.store import VersionedStore, blocks_db
from tests.abci.harness import AbciClient, block_fill, genesis_doc, init_chain_fill, orders


async def test_handshake_and_blocks_in_process(tmp_path: pathlib.Path) -> None:
    doc, keys = genesis_doc(40)
    genesis = parse_genesis(doc)
    with VersionedStore.open(tmp_path / "data") as store:
        app = PerpApplication(store, genesis, json.loads(json.dumps(doc)))
        async with trio.open_nursery() as nursery:
            address = await nursery.start(serve_abci, f"unix://{tmp_path}/app.sock", app)
            client = await AbciClient.connect(address)
            info = await client.call("info")
            assert info.last_block_height == 0
            init = await client.call("init_chain", init_chain_fill(doc["chain_id"]))
            assert len(init.app_hash) == 32
            txs = orders(doc, keys, 200)
            for height in (1, 2):
                batch = txs[(height - 1) * 100 : height * 100]
                prepared = await client.call("prepare_proposal", block_fill(height, batch))
                assert list(prepared.txs) == batch
                processed = await client.call("process_proposal", block_fill(height, batch))
                assert processed.status == 1
                finalized = await client.call("finalize_block", block_fill(height, batch))
                assert len(finalized.tx_results) == 100
                assert all(r.code == 0 for r in finalized.tx_results)
                await client.call("commit")
                assert store.height == height
                assert store.root() == finalized.app_hash
            info = await client.call("info")
            assert info.last_block_height == 2
            block = blocks_db.get_block(store, 2)
            assert block is not None and block.header.producer == b"\x01" * 20
            nursery.cancel_scope.cancel()
