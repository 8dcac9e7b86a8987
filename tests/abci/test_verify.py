"""`perpchain verify` on a chain committed under CometBFT: its headers are unsigned (final by
the validators' commit) and name the proposer's address, so the replay takes them as consensus
blocks and checks that the state follows from the blocks, as on a sequencer's chain; a signed
or re-rooted block in such a chain is found."""

from __future__ import annotations

import dataclasses
import pathlib

from node.core import codec
from node.core.blocks import Block
from node.core.genesis import parse_genesis
from node.ops.verify import verify_chain
from node.store import blocks_db, schema
from node.store.versioned import _seal
from tests.abci.harness import AbciClient, block_fill, genesis_doc, init_chain_fill, orders


async def test_verify_replays_a_consensus_chain_and_finds_a_bad_block(
    tmp_path: pathlib.Path,
) -> None:
    from tests.abci.harness import serving

    doc, keys = genesis_doc(4)
    async with serving(tmp_path, doc) as (app, address):
        client = await AbciClient.connect(address)
        await client.call("init_chain", init_chain_fill(doc["chain_id"]))
        for height in range(1, 5):
            txs = orders(doc, keys, 8, start=8 * (height - 1))
            await client.call("finalize_block", block_fill(height, txs))
            await client.call("commit")
        await client.aclose()
        store, genesis = app.store, parse_genesis(doc)
        report = verify_chain(store, genesis, from_height=0)
        assert report.ok, report.text()
        assert report.blocks_replayed == 4 and report.txs_replayed == 32
        # A block whose root was changed after the fact is found at its height.
        block = blocks_db.get_block(store, 3)
        assert block is not None and blocks_db.is_consensus_chain(store, 3)
        header = dataclasses.replace(block.header, state_root=bytes(32))
        forged = codec.encode(Block(header=header, txs=block.txs))
        store._write([(schema.record_key(3, blocks_db.BLOCK.encode()), _seal(forged))])
        report = verify_chain(store, genesis, from_height=0)
        assert not report.ok and report.first_invalid == 3, report.text()
        # A header dressed as a sequencer's (a 32-byte producer and a signature) inside a
        # consensus chain is refused by name; removing the consensus record of a block does
        # not let it pass either (then it is a sequencer's block without its signature).
        block = blocks_db.get_block(store, 2)
        assert block is not None
        header = dataclasses.replace(block.header, producer=bytes(32), signature=bytes(64))
        dressed = codec.encode(Block(header=header, txs=block.txs))
        store._write([(schema.record_key(2, blocks_db.BLOCK.encode()), _seal(dressed))])
        report = verify_chain(store, genesis, from_height=0)
        assert report.first_invalid == 2 and "not a consensus block" in report.reason
        store._write([(schema.record_key(1, blocks_db.ABCI.encode()), None)])
        report = verify_chain(store, genesis, from_height=0)
        assert report.first_invalid == 1 and "bad producer signature" in report.reason
