"""State sync as CometBFT runs it: a validator lists its snapshots, a new node (a home with
genesis.json only) accepts an offer with the light client's app hash, receives the chunks
(a corrupted one is refetched), and then goes on from that height with the same app hash."""

from __future__ import annotations

import pathlib
from typing import Any

from node.abci.proto.tendermint.abci import types_pb2 as pb
from tests.abci.harness import (
    AbciClient,
    block_fill,
    genesis_doc,
    init_chain_fill,
    orders,
    serving,
)


def _offer(snapshot: Any, app_hash: bytes) -> Any:
    def fill(req: Any) -> None:
        req.snapshot.CopyFrom(snapshot)
        req.app_hash = app_hash

    return fill


def _chunk(index: int, chunk: bytes, sender: str = "peer-a") -> Any:
    def fill(req: Any) -> None:
        req.index, req.chunk, req.sender = index, chunk, sender

    return fill


async def test_a_new_node_restores_a_snapshot_and_follows_on(tmp_path: pathlib.Path) -> None:
    doc, keys = genesis_doc(30)
    txs = orders(doc, keys, 300)
    options = {"snapshot_interval": 2, "chunk_bytes": 4096}
    async with serving(tmp_path / "a", doc, **options) as (source, source_address):
        async with serving(tmp_path / "b", doc, **options) as (fresh, fresh_address):
            a = await AbciClient.connect(source_address)
            b = await AbciClient.connect(fresh_address)
            await a.call("init_chain", init_chain_fill(doc["chain_id"]))
            app_hashes = {}
            for height in range(1, 5):
                block = txs[(height - 1) * 60 : height * 60]
                finalized = await a.call("finalize_block", block_fill(height, block))
                await a.call("commit")
                app_hashes[height] = bytes(finalized.app_hash)

            listed = await a.call("list_snapshots")
            assert [s.height for s in listed.snapshots] == [2, 4]
            snapshot = listed.snapshots[-1]
            assert snapshot.format == 1 and snapshot.chunks > 1

            # A snapshot whose root is not the light client's app hash: refused at the end,
            # and the store stays empty.
            offered = await b.call("offer_snapshot", _offer(snapshot, app_hashes[3]))
            assert offered.result == pb.ResponseOfferSnapshot.ACCEPT
            for index in range(snapshot.chunks):
                chunk = await a.call(
                    "load_snapshot_chunk",
                    lambda r, i=index: (
                        setattr(r, "height", 4),
                        setattr(r, "format", 1),
                        setattr(r, "chunk", i),
                    ),
                )
                applied = await b.call("apply_snapshot_chunk", _chunk(index, chunk.chunk))
            assert applied.result == pb.ResponseApplySnapshotChunk.REJECT_SNAPSHOT
            assert fresh.store.height == -1

            offered = await b.call("offer_snapshot", _offer(snapshot, app_hashes[4]))
            assert offered.result == pb.ResponseOfferSnapshot.ACCEPT
            for index in range(snapshot.chunks):
                chunk = await a.call(
                    "load_snapshot_chunk",
                    lambda r, i=index: (
                        setattr(r, "height", 4),
                        setattr(r, "format", 1),
                        setattr(r, "chunk", i),
                    ),
                )
                if index == 1:  # damaged on the way: refetched, the sender banned
                    bad = await b.call("apply_snapshot_chunk", _chunk(1, b"x" + chunk.chunk[1:]))
                    assert bad.result == pb.ResponseApplySnapshotChunk.RETRY
                    assert list(bad.refetch_chunks) == [1]
                    assert list(bad.reject_senders) == ["peer-a"]
                applied = await b.call("apply_snapshot_chunk", _chunk(index, chunk.chunk, "b"))
                assert applied.result == pb.ResponseApplySnapshotChunk.ACCEPT
            info = await b.call("info")
            assert info.last_block_height == 4
            assert bytes(info.last_block_app_hash) == app_hashes[4]

            # Both go on from height 5 with one app hash.
            block = txs[240:300]
            hashes = set()
            for client in (a, b):
                finalized = await client.call("finalize_block", block_fill(5, block))
                await client.call("commit")
                hashes.add(bytes(finalized.app_hash))
            assert len(hashes) == 1

            # A node with state refuses offers.
            refused = await a.call("offer_snapshot", _offer(snapshot, app_hashes[4]))
            assert refused.result == pb.ResponseOfferSnapshot.ABORT
            await a.aclose()
            await b.aclose()
