"""`scripts/bench abci`: FinalizeBlock + Commit of blocks of signed orders through the ABCI
socket, beside the native producer on the same blocks, in one run.

Both sides start from the same genesis and apply the same blocks (2,000 signed limit orders
around the oracle price, about half crossing) at the same block times, so their state roots
must be equal at every height (checked, printed). Timed, per block, wall clock:

- native: `Producer.produce_txs` (apply_block with the invariants, stage, sign, one synced
  LevelDB batch) on decoded txs, signatures already checked at admission (as on a node);
- abci: FinalizeBlock then Commit sent by a client over a unix socket to a
  `perpchain start --abci` process (protobuf both ways, the same apply and one synced
  batch), after CheckTx of every tx of the block (untimed, as admission is for the native
  side: signatures verified there are not verified again in FinalizeBlock);
- abci, no CheckTx: a second application process that never saw the txs (a validator
  catching up by block sync), so FinalizeBlock verifies every signature.

The three take turns block by block (native h, abci h, abci cold h, then h+1).

    ./scripts/bench abci [--quick] [--json] [--blocks B] [--txs N] [--accounts A]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

import trio

from node.abci import codec
from node.abci.client import AbciClient
from node.chain.clock import ManualClock
from node.chain.mempool import Mempool
from node.chain.producer import ChainStatus, Producer
from node.config import MempoolSettings
from node.core.crypto import SigningKey
from node.core.genesis import parse_genesis
from node.core.txs import decode_tx
from node.store import VersionedStore, blocks_db

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCK_MS = 1_000  # a block a second, from a minute after the genesis time


def _workload(
    accounts: int, blocks: int, per_block: int
) -> tuple[dict[str, Any], list[list[bytes]]]:
    sys.path.insert(0, str(ROOT))
    from tests.abci.harness import genesis_doc, orders

    doc, keys = genesis_doc(accounts, seed="abci-bench")
    txs = orders(doc, keys, blocks * per_block)
    return doc, [txs[i * per_block : (i + 1) * per_block] for i in range(blocks)]


def _time_ms(doc: dict[str, Any], height: int) -> int:
    return int(doc["genesis_time_ms"]) + 60_000 + height * BLOCK_MS


class Native:
    """The producer on its own store (a home made by `perpchain init`)."""

    def __init__(self, home: pathlib.Path, doc: dict[str, Any]) -> None:
        from node.app import init_home

        init_home(home, doc)
        self.doc = doc
        genesis = parse_genesis(doc)
        self.store = VersionedStore.open(home / "data")
        self.clock = ManualClock(_time_ms(doc, 0))
        block = blocks_db.get_block(self.store, 0)
        assert block is not None
        mempool = Mempool(
            genesis.chain_id, MempoolSettings(), self.store, genesis.params.nonce_window
        )
        self.producer = Producer(
            self.store,
            SigningKey.from_label("devnet/producer"),
            mempool,
            self.clock,
            interval_ms=BLOCK_MS,
            status=ChainStatus(head=block.header),
        )

    def block(self, height: int, raws: list[bytes]) -> tuple[float, bytes]:
        txs = [decode_tx(raw) for raw in raws]  # admission's decoding, untimed
        self.clock.set_ms(_time_ms(self.doc, height))
        started = time.perf_counter()
        header = self.producer.produce_txs(txs)
        spent = time.perf_counter() - started
        assert header is not None
        return spent, header.state_root


class _App:
    """A `perpchain start --abci` process on a home holding genesis.json only."""

    def __init__(self, home: pathlib.Path, doc: dict[str, Any], *, check_txs: bool) -> None:
        home.mkdir(parents=True)
        (home / "genesis.json").write_text(json.dumps(doc))
        self.doc = doc
        self.check_txs = check_txs
        self.check_spent = 0.0
        self.address = f"unix://{home}/abci.sock"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "node.cli.main",
                "start",
                "--home",
                str(home),
                "--abci",
                self.address,
                "--rpc-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(home / "node.log", "wb"),  # noqa: SIM115 - the child owns it
            cwd=ROOT,
        )

    async def start(self) -> None:
        with trio.fail_after(60):
            while True:
                try:
                    self.client = await AbciClient.connect(self.address)
                    break
                except OSError:
                    await trio.sleep(0.05)
        await self.client.call("info")

        def init(req: Any) -> None:
            req.chain_id = self.doc["chain_id"]
            req.initial_height = 1

        await self.client.call("init_chain", init)

    async def block(self, height: int, raws: list[bytes]) -> tuple[float, bytes]:
        if self.check_txs:  # untimed in the block figure, as admission is for the producer
            started = time.perf_counter()
            answers = await self.client.pipeline(
                [
                    codec.request_of("check_tx", lambda r, raw=raw: setattr(r, "tx", raw))
                    for raw in raws
                ]
            )
            self.check_spent += time.perf_counter() - started
            assert all(a.check_tx.code == 0 for a in answers)

        def fill(req: Any) -> None:
            req.height = height
            at = _time_ms(self.doc, height)
            req.time.seconds, req.time.nanos = at // 1000, at % 1000 * 1_000_000
            req.txs.extend(raws)
            req.proposer_address = b"\x01" * 20

        started = time.perf_counter()
        finalized = await self.client.call("finalize_block", fill)
        committed = await self.client.call("commit")
        spent = time.perf_counter() - started
        assert finalized.app_hash and not isinstance(committed, codec.Response)
        return spent, bytes(finalized.app_hash)

    async def stop(self) -> None:
        await self.client.aclose()
        self.process.terminate()
        self.process.wait(timeout=30)


async def run(base: pathlib.Path, doc: dict[str, Any], blocks: list[list[bytes]]) -> dict[str, Any]:
    """The three sides take turns block by block, so a machine whose load changes during the
    run (shared CI cores) weighs on each alike."""
    native = Native(base / "native", doc)
    apps = {
        "abci": _App(base / "abci", doc, check_txs=True),
        "abci_cold": _App(base / "abci-cold", doc, check_txs=False),
    }
    spent = {"native": 0.0, "abci": 0.0, "abci_cold": 0.0}
    roots_equal = True
    try:
        for app in apps.values():
            await app.start()
        for height, raws in enumerate(blocks, start=1):
            seconds, root = native.block(height, raws)
            spent["native"] += seconds
            for name, app in apps.items():
                seconds, app_hash = await app.block(height, raws)
                spent[name] += seconds
                roots_equal = roots_equal and app_hash == root
    finally:
        native.store.close()
        for app in apps.values():
            await app.stop()
    count = sum(len(b) for b in blocks)
    report = {f"{name}_orders_per_s": int(count / s) for name, s in spent.items()}
    report["check_tx_per_s"] = int(count / apps["abci"].check_spent)
    report["roots_equal"] = roots_equal
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench abci", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--blocks", type=int, default=None)
    parser.add_argument("--txs", type=int, default=2000, help="signed orders per block")
    parser.add_argument("--accounts", type=int, default=200)
    args = parser.parse_args(argv)
    nblocks = args.blocks or (2 if args.quick else 6)
    print(
        f"abci bench: {nblocks} blocks x {args.txs} signed orders, {args.accounts} accounts",
        flush=True,
    )
    doc, blocks = _workload(args.accounts, nblocks, args.txs)
    with tempfile.TemporaryDirectory(prefix="abci-bench-") as scratch:
        figures = trio.run(run, pathlib.Path(scratch), doc, blocks)
    native_rate, abci_rate = figures["native_orders_per_s"], figures["abci_orders_per_s"]
    ratio = abci_rate / native_rate
    report = {
        "workload": {"blocks": nblocks, "orders_per_block": args.txs, "accounts": args.accounts},
        **figures,
        "abci_vs_native": round(ratio, 3),
        "python": sys.version.split()[0],
    }
    print(f"native producer (produce_txs, signed at admission): {native_rate:,} orders/s")
    print(
        f"ABCI FinalizeBlock + Commit over the socket:        {abci_rate:,} orders/s "
        f"({ratio:.0%} of native; target >= 80%)"
    )
    print(
        "ABCI, no CheckTx before (signatures in the block):  "
        f"{figures['abci_cold_orders_per_s']:,} orders/s"
    )
    print(
        f"CheckTx pipelined over the socket:                  {figures['check_tx_per_s']:,} txs/s"
    )
    print(f"state roots equal at every height (native = ABCI):  {figures['roots_equal']}")
    if args.json:
        print(json.dumps(report))
    return 0 if figures["roots_equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
