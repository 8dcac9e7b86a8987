"""Four application processes driven as CometBFT drives its validators: the handshake (Info +
InitChain), then per height PrepareProposal on the proposer, ProcessProposal, FinalizeBlock and
Commit on all four; their app hashes must agree at every height. A tampered proposal is
rejected by all; a kill -9 of one application between FinalizeBlock and Commit is recovered
through Info (CometBFT replays the block) with no divergence."""

from __future__ import annotations

import pathlib

from node.abci.proto.tendermint.abci import types_pb2 as pb
from node.core.blocks import header_hash
from node.core.errors import Reject
from node.store import VersionedStore, blocks_db
from tests.abci.harness import (
    AbciClient,
    AppProcess,
    block_fill,
    genesis_doc,
    init_chain_fill,
    is_exception,
    orders,
)

VALIDATORS = 4
HEIGHTS = 6
PER_BLOCK = 120
ACCOUNTS = 60


def _proposer(height: int) -> bytes:
    return bytes([height % VALIDATORS]) * 20


async def _finalize_and_commit(
    clients: list[AbciClient], height: int, txs: list[bytes]
) -> list[bytes]:
    hashes = []
    for client in clients:
        finalized = await client.call(
            "finalize_block", block_fill(height, txs, proposer=_proposer(height))
        )
        assert not is_exception(finalized), finalized
        hashes.append(bytes(finalized.app_hash))
    for client in clients:
        committed = await client.call("commit")
        assert not is_exception(committed), committed
    return hashes


async def test_four_applications_agree_reject_tampering_and_survive_kill_9(
    tmp_path: pathlib.Path,
) -> None:
    doc, keys = genesis_doc(ACCOUNTS)
    apps = [AppProcess(tmp_path / f"val{i}", doc) for i in range(VALIDATORS)]
    for app in apps:
        app.start()
    try:
        for app in apps:
            await app.wait_ready()
        clients = [await AbciClient.connect(app.address) for app in apps]
        # Handshake: no block yet, so InitChain; every app reports our genesis root.
        roots = set()
        for client in clients:
            info = await client.call("info")
            assert info.last_block_height == 0 and info.last_block_app_hash == b""
            init = await client.call("init_chain", init_chain_fill(doc["chain_id"]))
            roots.add(bytes(init.app_hash))
        assert len(roots) == 1

        txs = orders(doc, keys, HEIGHTS * PER_BLOCK)
        fills = 0
        for height in range(1, HEIGHTS + 1):
            mempool = txs[(height - 1) * PER_BLOCK : height * PER_BLOCK]
            proposer = clients[height % VALIDATORS]
            prepared = await proposer.call(
                "prepare_proposal",
                block_fill(height, mempool, proposer=_proposer(height)),
            )
            block = list(prepared.txs)
            assert block == mempool  # arrival order, nothing dropped

            if height == 2:
                # Tampered: one byte of one signed tx flipped (bad signature or undecodable),
                # then a tx over max_tx_bytes, then the same tx twice: all rejected by all.
                flipped = bytearray(block[7])
                flipped[-5] ^= 0x01
                for bad in (
                    block[:7] + [bytes(flipped)] + block[8:],
                    block + [b"\x00" * 5000],
                    block + [block[0]],
                ):
                    for client in clients:
                        verdict = await client.call(
                            "process_proposal", block_fill(height, bad, proposer=_proposer(height))
                        )
                        assert verdict.status == pb.ResponseProcessProposal.REJECT

            for client in clients:
                verdict = await client.call(
                    "process_proposal", block_fill(height, block, proposer=_proposer(height))
                )
                assert verdict.status == pb.ResponseProcessProposal.ACCEPT

            if height == 4:
                # kill -9 of validator 1 after FinalizeBlock, before Commit.
                victim = 1
                finalized = []
                for client in clients:
                    response = await client.call(
                        "finalize_block", block_fill(height, block, proposer=_proposer(height))
                    )
                    finalized.append(bytes(response.app_hash))
                assert len(set(finalized)) == 1
                apps[victim].kill9()
                await clients[victim].aclose()
                for i, client in enumerate(clients):
                    if i != victim:
                        await client.call("commit")
                apps[victim].start()
                await apps[victim].wait_ready()
                clients[victim] = await AbciClient.connect(apps[victim].address)
                info = await clients[victim].call("info")
                # The staged block was never written: Info says height 3, CometBFT replays 4.
                assert info.last_block_height == height - 1
                replayed = await clients[victim].call(
                    "finalize_block", block_fill(height, block, proposer=_proposer(height))
                )
                assert bytes(replayed.app_hash) == finalized[0]
                await clients[victim].call("commit")
                hashes = finalized
            else:
                hashes = await _finalize_and_commit(clients, height, block)
            assert len(set(hashes)) == 1, f"height {height}: app hashes differ"
            for client in clients:
                info = await client.call("info")
                assert info.last_block_height == height
                assert bytes(info.last_block_app_hash) == hashes[0]

        for client in clients:
            await client.aclose()
    finally:
        for app in apps:
            app.stop()

    # Every store holds the same blocks and receipts; trades happened.
    heads = set()
    for app in apps:
        with VersionedStore.open(app.home / "data") as store:
            assert store.height == HEIGHTS
            block = blocks_db.get_block(store, HEIGHTS)
            assert block is not None and block.header.producer == _proposer(HEIGHTS)
            heads.add((store.root(), header_hash(block.header)))
            for height in range(1, HEIGHTS + 1):
                receipts = blocks_db.get_receipts(store, height)
                assert receipts is not None
                assert all(r.code in (0, Reject.INSUFFICIENT_MARGIN) for r in receipts.receipts)
                fills += sum(
                    1 for r in receipts.receipts for e in r.events if e.kind.name == "FILL"
                )
    assert len(heads) == 1
    assert fills > 0
