"""Plays CometBFT's side of the ABCI socket for the tests and the benchmark: a client that
sends framed Requests (each followed by a Flush, as CometBFT's synchronous calls do) and reads
the responses in order, the block-by-block driver of one height over several applications,
and a workload of signed orders on the devnet genesis."""

from __future__ import annotations

import contextlib
import hashlib
import json
import pathlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from node.abci.client import AbciClient
from node.abci.proto.tendermint.abci import types_pb2 as pb
from node.core.crypto import SigningKey
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import PlaceOrder, sign_tx

ROOT = pathlib.Path(__file__).resolve().parents[2]
USD = 1_000_000
GENESIS_TIME_S = 1_767_225_660  # a minute after the devnet genesis time


def is_exception(response: Any) -> bool:
    return isinstance(response, pb.Response) and response.WhichOneof("value") == "exception"


def genesis_doc(accounts: int, *, seed: str = "abci") -> tuple[dict[str, Any], list[SigningKey]]:
    doc = json.loads((ROOT / "genesis" / "devnet.json").read_text())
    keys = [SigningKey(hashlib.sha256(f"{seed}/{i}".encode()).digest()) for i in range(accounts)]
    doc["accounts"] += [
        {"address": k.public_key.hex(), "collateral_quote": str(1_000_000 * USD)} for k in keys
    ]
    return doc, keys


def orders(
    doc: dict[str, Any], keys: list[SigningKey], count: int, *, start: int = 0, seed: int = 5
) -> list[bytes]:
    """`count` signed limit orders around 60,000 USD (they cross and fill); order i is signed
    by key i % len(keys) with nonce i // len(keys) (keep count / len(keys) within the nonce
    window per block)."""
    chain_id = doc["chain_id"].encode()
    rng = random.Random(seed + start)
    out = []
    for i in range(start, start + count):
        key = keys[i % len(keys)]
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        offset = rng.randint(-20, 20) * USD
        body = PlaceOrder(
            nonce=i // len(keys),
            market_id=1,
            side=side,
            kind=OrderKind.LIMIT,
            tif=TimeInForce.GTC,
            price_quote=60_000 * USD + (offset if side == Side.BUY else -offset),
            size_atoms=rng.randint(1, 20) * 100_000,
            reduce_only=0,
            trigger_price_quote=0,
            client_id=i + 1,
        )
        out.append(sign_tx(body, key, chain_id).raw)
    return out


def init_chain_fill(chain_id: str) -> Callable[[Any], None]:
    def fill(req: Any) -> None:
        req.chain_id = chain_id
        req.initial_height = 1
        req.time.seconds = GENESIS_TIME_S

    return fill


def block_fill(
    height: int, txs: list[bytes], *, proposer: bytes = b"\x01" * 20
) -> Callable[[Any], None]:
    """The fields CometBFT sets on Prepare/Process/FinalizeBlock for `height` (time: one
    second a block after GENESIS_TIME_S, as the header's time)."""

    def fill(req: Any) -> None:
        req.height = height
        req.time.seconds = GENESIS_TIME_S + height
        req.txs.extend(txs)
        req.proposer_address = proposer
        if hasattr(req, "hash"):
            req.hash = hashlib.sha256(b"block/%d/" % height + b"".join(txs)).digest()

    return fill


class AppProcess:
    """One `perpchain start --abci unix://...` process on a home holding only genesis.json
    (InitChain writes block 0)."""

    def __init__(self, home: pathlib.Path, doc: dict[str, Any]) -> None:
        self.home = home
        self.address = f"unix://{home}/abci.sock"
        home.mkdir(parents=True, exist_ok=True)
        (home / "genesis.json").write_text(json.dumps(doc))
        self.process: Any = None

    def start(self) -> None:
        import subprocess
        import sys

        sock = self.home / "abci.sock"
        if sock.exists():
            sock.unlink()
        log = open(self.home / "node.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "node.cli.main",
                "start",
                "--home",
                str(self.home),
                "--abci",
                self.address,
                "--rpc-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
        log.close()

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        sock = self.home / "abci.sock"
        with trio.fail_after(timeout_s):
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.home} exited: {self.log()[-2000:]}")
                if sock.exists():
                    try:
                        stream = await trio.open_unix_socket(str(sock))
                    except OSError:
                        pass  # bound, not listening yet
                    else:
                        await stream.aclose()
                        return
                await trio.sleep(0.05)

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except Exception:  # noqa: BLE001 - a test teardown: make sure it is gone
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return (self.home / "node.log").read_text(errors="replace")


@contextlib.asynccontextmanager
async def serving(
    tmp_path: pathlib.Path, doc: dict[str, Any], **options: Any
) -> AsyncIterator[tuple[Any, str]]:
    """A PerpApplication on a fresh store behind a unix socket, in this process:
    (application, address)."""
    from node.abci.application import PerpApplication
    from node.abci.server import serve_abci
    from node.abci.snapshots import SnapshotManager
    from node.core.genesis import parse_genesis
    from node.store import VersionedStore

    tmp_path.mkdir(parents=True, exist_ok=True)
    snapshot_interval = options.pop("snapshot_interval", 0)
    chunk_bytes = options.pop("chunk_bytes", 1 << 20)
    with VersionedStore.open(tmp_path / "data") as store:
        genesis = parse_genesis(doc)
        snapshots = SnapshotManager(
            store,
            genesis,
            tmp_path / "snapshots",
            interval=snapshot_interval,
            chunk_bytes=chunk_bytes,
        )
        app = PerpApplication(store, genesis, doc, snapshots=snapshots, **options)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(serve_abci, f"unix://{tmp_path}/app.sock", app)
            yield app, address
            nursery.cancel_scope.cancel()


__all__ = ["AbciClient"]
