"""Snapshots end to end on real LevelDB: a devnet home produces blocks in-process, exports the
state, a fresh home imports it, `reconcile` accepts it and the next block has the same root as on
the original; every damaged or foreign file is refused with a clear error and leaves nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import shutil
import struct
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from node.app import DATA_DIR, PRODUCER_KEY_FILE, init_home, load_genesis, load_key, reconcile
from node.chain.clock import ManualClock
from node.chain.mempool import Mempool
from node.chain.producer import ChainStatus, Producer
from node.config import MempoolSettings
from node.core import merkle
from node.core.blocks import BlockHeader, decode_block, encode_block, sign_header
from node.core.crypto import SigningKey
from node.core.genesis import Genesis
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import PlaceOrder, sign_tx
from node.ops.snapshot import SnapshotError, export_snapshot, import_snapshot
from node.store import HeightUnavailable, VersionedStore, blocks_db

GENESIS = pathlib.Path(__file__).resolve().parents[2] / "genesis" / "devnet.json"
USD = 10**6
UNIT = 10**8
BLOCKS = 4
CHUNK_PAIRS = 7  # several chunks even for the small devnet state


def _orders(chain_id: bytes, block: int) -> list[bytes]:
    """Resting and crossing limit orders of four traders (state changes every block)."""
    out = []
    for trader in range(4):
        key = SigningKey.from_label(f"devnet/trader/{trader}")
        side = Side.BUY if trader % 2 else Side.SELL
        body = PlaceOrder(
            nonce=block,
            market_id=1,
            side=side,
            kind=OrderKind.LIMIT,
            tif=TimeInForce.GTC,
            price_quote=(60_000 + (block % 3) - trader // 2) * USD,
            size_atoms=UNIT // 10 * (1 + trader),
            reduce_only=0,
            trigger_price_quote=0,
            client_id=block * 10 + trader + 1,
        )
        out.append(sign_tx(body, key, chain_id).raw)
    return out


class Node:
    """A home's store with an in-process producer on a manual clock."""

    def __init__(self, home: pathlib.Path) -> None:
        self.genesis = load_genesis(home)
        key = load_key(home, PRODUCER_KEY_FILE, "PERPCHAIN_PRODUCER_KEY")
        assert key is not None
        self.store = VersionedStore.open(home / DATA_DIR)
        head = reconcile(self.store, self.genesis)
        self.clock = ManualClock(head.time_ms)
        self.mempool = Mempool(
            self.genesis.chain_id, MempoolSettings(), self.store, self.genesis.params.nonce_window
        )
        self.producer = Producer(
            self.store,
            key,
            self.mempool,
            self.clock,
            interval_ms=100,
            status=ChainStatus(head=head),
        )

    def produce(self, txs: list[bytes]) -> BlockHeader:
        for raw in txs:
            self.mempool.add(raw)
        self.clock.advance(100)
        header = self.producer.produce_one()
        assert header is not None
        return header


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A devnet home with blocks 1..BLOCKS, snapshots of the head and of height 2, and the
    state, roots and next block's txs to compare with."""
    base = tmp_path_factory.mktemp("snap")
    home = base / "source"
    init_home(home, json.loads(GENESIS.read_text()))
    node = Node(home)
    for block in range(BLOCKS):
        header = node.produce(_orders(node.genesis.chain_id, block))
    assert header.height == BLOCKS
    head_file, old_file = base / "head.snap", base / "old.snap"
    seen: list[tuple[int, int | None]] = []
    info = export_snapshot(
        node.store, None, head_file, lambda d, t: seen.append((d, t)), chunk_pairs=CHUNK_PAIRS
    )
    old_info = export_snapshot(node.store, 2, old_file, chunk_pairs=CHUNK_PAIRS)
    state = {h: list(node.store.iter_state(h)) for h in (2, BLOCKS)}
    roots = {h: node.store.root(h) for h in (2, BLOCKS)}
    blocks = {h: node.store.record(h, "block") for h in (2, BLOCKS)}
    # The block after the head on the original, for comparison with the imported copy.
    after = node.produce(_orders(node.genesis.chain_id, BLOCKS))
    node.store.close()
    yield {
        "base": base,
        "home": home,
        "genesis": node.genesis,
        "head_file": head_file,
        "old_file": old_file,
        "info": info,
        "old_info": old_info,
        "progress": seen,
        "state": state,
        "roots": roots,
        "blocks": blocks,
        "after": after,
    }


def _fresh_home(source: dict[str, Any], name: str) -> pathlib.Path:
    """A node home created by init, its data/ removed: genesis.json and keys only."""
    home = source["base"] / name
    home.mkdir()
    for item in ("genesis.json", "config.toml", PRODUCER_KEY_FILE):
        shutil.copy(source["home"] / item, home / item)
    return home


def test_export_writes_chunks_and_reports_progress(source: dict[str, Any]) -> None:
    info = source["info"]
    pairs = source["state"][BLOCKS]
    assert info.height == BLOCKS and info.pairs == len(pairs) > 3 * CHUNK_PAIRS
    assert info.chunks == -(-len(pairs) // CHUNK_PAIRS)
    assert info.state_root == source["roots"][BLOCKS] == merkle.reference_root(pairs)
    assert info.file_bytes == source["head_file"].stat().st_size
    assert source["progress"][-1] == (len(pairs), None)
    assert [d for d, _ in source["progress"]] == sorted(d for d, _ in source["progress"])
    assert not list(source["base"].glob(".*tmp*"))


def test_import_then_reconcile_and_the_next_block_matches(source: dict[str, Any]) -> None:
    home = _fresh_home(source, "imported")
    seen: list[tuple[int, int | None]] = []
    info = import_snapshot(
        source["head_file"],
        home / DATA_DIR,
        genesis=source["genesis"],
        progress=lambda d, t: seen.append((d, t)),
    )
    assert info == dataclasses.replace(source["info"], file_bytes=info.file_bytes)
    assert seen == source["progress"]
    node = Node(home)  # reconcile accepts the imported head
    store = node.store
    try:
        assert store.height == BLOCKS and store.root() == source["roots"][BLOCKS]
        assert list(store.iter_state()) == source["state"][BLOCKS]
        for key, value in source["state"][BLOCKS][::5]:
            assert store.get(key) == value
            assert merkle.verify_proof(store.root(), key, value, store.prove(key))
        block = blocks_db.get_block(store, BLOCKS)
        assert block is not None and store.record(BLOCKS, "block") == source["blocks"][BLOCKS]
        assert blocks_db.height_of_hash(store, info.block_hash) == BLOCKS
        receipts = blocks_db.get_receipts(store, BLOCKS)
        assert receipts is not None and len(receipts.receipts) == 4
        for position, receipt in enumerate(receipts.receipts):
            assert blocks_db.locate_tx(store, receipt.tx_hash) == (BLOCKS, position)
        with pytest.raises(HeightUnavailable):
            store.get(b"\x01", BLOCKS - 1)
        after = node.produce(_orders(node.genesis.chain_id, BLOCKS))
        assert after == source["after"]  # same root, same signed header, same hash
        store.verify_history()
        store.rollback_to(BLOCKS)
        assert store.root() == source["roots"][BLOCKS]
    finally:
        store.close()


def test_import_at_an_older_height(source: dict[str, Any]) -> None:
    home = _fresh_home(source, "older")
    info = import_snapshot(source["old_file"], home / DATA_DIR, genesis=source["genesis"])
    assert info.height == 2 and info.state_root == source["roots"][2]
    with VersionedStore.open(home / DATA_DIR) as store:
        assert reconcile(store, source["genesis"]).height == 2
        assert list(store.iter_state()) == source["state"][2]
        assert store.record(2, "block") == source["blocks"][2]


def test_export_of_a_pruned_height_is_refused(source: dict[str, Any], tmp_path) -> None:
    with VersionedStore.open(source["home"] / DATA_DIR) as store:
        with pytest.raises(HeightUnavailable):
            export_snapshot(store, BLOCKS + 7, tmp_path / "x.snap")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- refusals


def _frames(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(preamble, [(kind, payload)]) of a snapshot file, by the documented layout."""
    preamble, offset, frames = data[:10], 10, []
    while offset < len(data):
        kind, length = (
            data[offset : offset + 1],
            struct.unpack(">I", data[offset + 1 : offset + 5])[0],
        )
        frames.append((kind, data[offset + 37 : offset + 37 + length]))
        offset += 37 + length
    return preamble, frames


def _assemble(preamble: bytes, frames: list[tuple[bytes, bytes]], *, fix_trailer: bool) -> bytes:
    """The file with each frame's checksum recomputed (and the trailer's digest, if asked)."""
    out = [preamble]
    running = hashlib.sha256()
    for kind, payload in frames:
        if kind == b"C":
            running.update(hashlib.sha256(payload).digest())
        if kind == b"T" and fix_trailer:
            count, chunks, _ = msgpack.unpackb(payload)
            payload = msgpack.packb([count, chunks, running.digest()])
        out.append(kind + struct.pack(">I", len(payload)) + hashlib.sha256(payload).digest())
        out.append(payload)
    return b"".join(out)


def _edit_chunk(data: bytes, index: int, edit: Any) -> bytes:
    preamble, frames = _frames(data)
    chunks = [i for i, (kind, _) in enumerate(frames) if kind == b"C"]
    kind, payload = frames[chunks[index]]
    pairs = msgpack.unpackb(payload)
    edit(pairs)
    frames[chunks[index]] = (kind, msgpack.packb(pairs, use_bin_type=True))
    return _assemble(preamble, frames, fix_trailer=True)


def _resigned(data: bytes, key: SigningKey) -> bytes:
    preamble, frames = _frames(data)
    chain_id, height, block_raw, receipts_raw = msgpack.unpackb(frames[0][1])
    block = decode_block(block_raw)
    forged = dataclasses.replace(block, header=sign_header(block.header, key))
    header = msgpack.packb([chain_id, height, encode_block(forged), receipts_raw])
    return _assemble(preamble, [(b"H", header)] + frames[1:], fix_trailer=True)


def _trailer(data: bytes, edit: Any) -> bytes:
    preamble, frames = _frames(data)
    frames[-1] = (b"T", msgpack.packb(edit(msgpack.unpackb(frames[-1][1]))))
    return _assemble(preamble, frames, fix_trailer=False)


def _swap_first_two(pairs: list[Any]) -> None:
    pairs[0], pairs[1] = pairs[1], pairs[0]


def _tamper_value(pairs: list[Any]) -> None:
    pairs[2][1] = pairs[2][1] + b"\x00"


def _offset_in_chunk(data: bytes, index: int) -> int:
    _, frames = _frames(data)
    offset = 10
    for kind, payload in frames:
        if kind == b"C" and index == 0:
            return offset + 37 + len(payload) // 2
        index -= kind == b"C"
        offset += 37 + len(payload)
    raise AssertionError("no such chunk")


CASES: list[tuple[str, Any, str]] = [
    ("bad magic", lambda d: b"PERPSNAX" + d[8:], "not a perpchain snapshot"),
    ("bad version", lambda d: d[:8] + b"\x00\x09" + d[10:], "format version 9"),
    ("empty file", lambda d: b"", "truncated snapshot: magic"),
    ("cut in preamble", lambda d: d[:5], "truncated snapshot: magic"),
    ("cut in header", lambda d: d[:60], "truncated snapshot: header frame"),
    ("cut mid chunk 2", lambda d: d[: _offset_in_chunk(d, 2)], "truncated snapshot: chunk 2"),
    (
        "cut before trailer",
        lambda d: d[: len(d) - len(_frames(d)[1][-1][1]) - 37],
        r"chunk \d+ or trailer",
    ),
    ("cut in trailer", lambda d: d[:-1], "truncated snapshot"),
    ("trailing bytes", lambda d: d + b"\x00", "after the trailer"),
    (
        "flipped byte in chunk 1",
        lambda d: (o := _offset_in_chunk(d, 1), d[:o] + bytes([d[o] ^ 1]) + d[o + 1 :])[1],
        "chunk 1 at byte .* fails its sha256 checksum",
    ),
    ("trailer pair count", lambda d: _trailer(d, lambda t: [t[0] + 1, t[1], t[2]]), "trailer"),
    ("trailer digest", lambda d: _trailer(d, lambda t: [t[0], t[1], b"\x00" * 32]), "digest"),
    ("keys not ascending", lambda d: _edit_chunk(d, 1, _swap_first_two), "not ascending"),
    ("tampered value", lambda d: _edit_chunk(d, 3, _tamper_value), "does not match the signed"),
    (
        "header re-signed by another key",
        lambda d: _resigned(d, SigningKey.from_label("mallory")),
        "not signed by the genesis producer",
    ),
]


@pytest.mark.parametrize("mutate, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_file_is_refused_and_leaves_nothing(
    source: dict[str, Any], tmp_path: pathlib.Path, mutate: Any, message: str
) -> None:
    bad = tmp_path / "bad.snap"
    bad.write_bytes(mutate(source["head_file"].read_bytes()))
    data_dir = tmp_path / "home" / DATA_DIR
    with pytest.raises(SnapshotError, match=message):
        import_snapshot(bad, data_dir, genesis=source["genesis"])
    assert list((tmp_path / "home").iterdir()) == []


def test_another_chain_is_refused(source: dict[str, Any], tmp_path: pathlib.Path) -> None:
    other: Genesis = dataclasses.replace(source["genesis"], chain_id=b"perpchain-other")
    with pytest.raises(SnapshotError, match="snapshot of chain b'perpchain-devnet-1'"):
        import_snapshot(source["head_file"], tmp_path / DATA_DIR, genesis=other)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_store_is_never_overwritten(source: dict[str, Any]) -> None:
    data_dir = source["home"] / DATA_DIR
    before = sorted(p.name for p in data_dir.iterdir())
    with pytest.raises(SnapshotError, match="not empty"):
        import_snapshot(source["head_file"], data_dir, genesis=source["genesis"])
    assert sorted(p.name for p in data_dir.iterdir()) == before
    assert not list(source["home"].glob(".data.import-*"))


# --------------------------------------------------------------------------- CLI


def test_cli_export_and_import(
    source: dict[str, Any], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from node.cli.main import main

    home, out = source["home"], tmp_path / "cli.snap"
    export = ["snapshot", "export", "--home", str(home), "--height", "3", "--out", str(out)]
    with VersionedStore.open(home / DATA_DIR):  # as a running node holds it
        assert main(export) == 1
    assert "stop the node first" in capsys.readouterr().err and not out.exists()
    assert main(export) == 0
    assert "exported height 3 of chain perpchain-devnet-1" in capsys.readouterr().out

    fresh = _fresh_home(source, "cli-import")
    assert main(["snapshot", "import", str(out), "--home", str(fresh)]) == 0
    assert "imported height 3" in capsys.readouterr().out
    with VersionedStore.open(fresh / DATA_DIR) as store:
        assert reconcile(store, source["genesis"]).height == 3
    for home_dir, message in ((fresh, "not empty"), (tmp_path / "bare", "no genesis.json")):
        assert main(["snapshot", "import", str(out), "--home", str(home_dir)]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
