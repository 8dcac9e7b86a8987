"""Wire compatibility with CometBFT v0.38 itself: tests/abci/golden/vectors.json holds frames
written by CometBFT's own Go types and `abci/types.WriteMessage` (uvarint length prefix),
made by tests/abci/golden/main.go against the module v0.38.26. Our codec must decode each one
to the fields it was made from and encode the same fields to the same bytes."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from node.abci import codec
from node.abci.proto.tendermint.abci import types_pb2 as pb

VECTORS = json.loads((pathlib.Path(__file__).parent / "golden" / "vectors.json").read_text())
SECONDS, NANOS = 1767225661, 5_000_000


def _time(message: Any) -> None:
    message.time.seconds, message.time.nanos = SECONDS, NANOS


def _requests() -> dict[str, pb.Request]:
    out: dict[str, pb.Request] = {}
    out["request_flush"] = codec.request_of("flush")
    out["request_info"] = codec.request_of(
        "info",
        lambda r: (
            setattr(r, "version", "0.38.26"),
            setattr(r, "block_version", 11),
            setattr(r, "p2p_version", 8),
            setattr(r, "abci_version", "2.0.0"),
        ),
    )

    def init(r: Any) -> None:
        _time(r)
        r.chain_id, r.initial_height = "perpchain-devnet-1", 1
        update = r.validators.add()
        update.pub_key.ed25519, update.power = b"\x07" * 32, 10

    out["request_init_chain"] = codec.request_of("init_chain", init)
    out["request_check_tx_recheck"] = codec.request_of(
        "check_tx", lambda r: (setattr(r, "tx", b"tx-bytes"), setattr(r, "type", pb.RECHECK))
    )

    def finalize(r: Any) -> None:
        r.txs.extend([b"a", b"\x01" * 300])
        r.hash, r.height, r.proposer_address = b"\x02" * 32, 12, b"\x03" * 20
        _time(r)
        # gogoproto writes a non-nullable empty message field (2 bytes); proto3 readers take
        # it present or absent alike, and so do we (the decode below).
        r.decided_last_commit.SetInParent()

    out["request_finalize_block"] = codec.request_of("finalize_block", finalize)

    def prepare(r: Any) -> None:
        r.max_tx_bytes, r.height, r.proposer_address = 1_048_576, 12, b"\x03" * 20
        r.txs.append(b"a")
        _time(r)
        r.local_last_commit.SetInParent()

    out["request_prepare_proposal"] = codec.request_of("prepare_proposal", prepare)
    out["request_commit"] = codec.request_of("commit")
    return out


def _responses() -> dict[str, pb.Response]:
    out: dict[str, pb.Response] = {}
    finalize = pb.Response()
    result = finalize.finalize_block.tx_results.add(
        code=3, data=b"\x09", log="BAD_NONCE", codespace="perp"
    )
    result.events.add(type="perp.fill").attributes.add(key="account", value="ab", index=True)
    finalize.finalize_block.app_hash = b"\x04" * 32
    out["response_finalize_block"] = finalize
    info = pb.Response()
    info.info.CopyFrom(
        pb.ResponseInfo(
            data="perpchain",
            version="perpchain/abci-1",
            app_version=1,
            last_block_height=12,
            last_block_app_hash=b"\x04" * 32,
        )
    )
    out["response_info"] = info
    commit = pb.Response()
    commit.commit.retain_height = 5
    out["response_commit"] = commit
    out["response_exception"] = codec.exception_response("boom")
    return out


@pytest.mark.parametrize("name", sorted(_requests()))
def test_requests_match_cometbft_bytes(name: str) -> None:
    ours = _requests()[name]
    golden = bytes.fromhex(VECTORS[name])
    assert codec.encode_request(ours) == golden
    frames = codec.FrameBuffer()
    frames.feed(golden)
    payload = frames.next_frame()
    assert payload is not None and frames.next_frame() is None
    assert codec.decode_request(payload) == ours


@pytest.mark.parametrize("name", sorted(_responses()))
def test_responses_match_cometbft_bytes(name: str) -> None:
    assert codec.encode_response(_responses()[name]).hex() == VECTORS[name]


def test_every_vector_is_checked() -> None:
    assert set(VECTORS) == set(_requests()) | set(_responses())
