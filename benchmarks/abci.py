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


def native(home: pathlib.Path, doc: dict[str, Any], blocks: list[list[bytes]]) -> dict[str, Any]:
    from node.app import init_home

    init_home(home, doc)
    genesis = parse_genesis(doc)
    roots = []
    spent = 0.0
    with VersionedStore.open(home / "data") as store:
        clock = ManualClock(_time_ms(doc, 0))
        status = ChainStatus(head=blocks_db.get_block(store, 0).header)  # type: ignore[union-attr]
        mempool = Mempool(genesis.chain_id, MempoolSettings(), store, genesis.params.nonce_window)
        producer = Producer(
            store,
            SigningKey.from_label("devnet/producer"),
            mempool,
            clock,
            interval_ms=BLOCK_MS,
            status=status,
        )
        for height, raws in enumerate(blocks, start=1):
            txs = [decode_tx(raw) for raw in raws]  # admission's decoding, untimed
            clock.set_ms(_time_ms(doc, height))
            started = time.perf_counter()
            header = producer.produce_txs(txs)
            spent += time.perf_counter() - started
            assert header is not None
            roots.append(header.state_root)
    count = sum(len(b) for b in blocks)
    return {"orders_per_s": int(count / spent), "seconds": round(spent, 3), "roots": roots}


class _App:
    def __init__(self, home: pathlib.Path, doc: dict[str, Any]) -> None:
        home.mkdir(parents=True)
        (home / "genesis.json").write_text(json.dumps(doc))
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

    async def connect(self) -> AbciClient:
        with trio.fail_after(60):
            while True:
                try:
                    return await AbciClient.connect(self.address)
                except OSError:
                    await trio.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def abci(
    home: pathlib.Path, doc: dict[str, Any], blocks: list[list[bytes]], *, check_txs: bool
) -> dict[str, Any]:
    app = _App(home, doc)
    try:
        client = await app.connect()
        await client.call("info")

        def init(req: Any) -> None:
            req.chain_id = doc["chain_id"]
            req.initial_height = 1

        await client.call("init_chain", init)
        roots: list[bytes] = []
        spent = check_spent = 0.0
        for height, raws in enumerate(blocks, start=1):
            if check_txs:
                started = time.perf_counter()
                answers = await client.pipeline(
                    [
                        codec.request_of("check_tx", lambda r, raw=raw: setattr(r, "tx", raw))
                        for raw in raws
                    ]
                )
                check_spent += time.perf_counter() - started
                assert all(a.check_tx.code == 0 for a in answers)

            def fill(req: Any, height: int = height, raws: list[bytes] = raws) -> None:
                req.height = height
                at = _time_ms(doc, height)
                req.time.seconds, req.time.nanos = at // 1000, at % 1000 * 1_000_000
                req.txs.extend(raws)
                req.proposer_address = b"\x01" * 20

            started = time.perf_counter()
            finalized = await client.call("finalize_block", fill)
            committed = await client.call("commit")
            spent += time.perf_counter() - started
            assert finalized.app_hash and not isinstance(committed, codec.Response)
            roots.append(bytes(finalized.app_hash))
        await client.aclose()
    finally:
        app.stop()
    count = sum(len(b) for b in blocks)
    report: dict[str, Any] = {
        "orders_per_s": int(count / spent),
        "seconds": round(spent, 3),
        "roots": roots,
    }
    if check_txs:
        report["check_tx_per_s"] = int(count / check_spent)
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
        base = pathlib.Path(scratch)
        nat = native(base / "native", doc, blocks)
        via = trio.run(lambda: abci(base / "abci", doc, blocks, check_txs=True))
        cold = trio.run(lambda: abci(base / "abci-cold", doc, blocks, check_txs=False))
    roots_equal = nat["roots"] == via["roots"] == cold["roots"]
    ratio = via["orders_per_s"] / nat["orders_per_s"]
    report = {
        "workload": {"blocks": nblocks, "orders_per_block": args.txs, "accounts": args.accounts},
        "native_orders_per_s": nat["orders_per_s"],
        "abci_orders_per_s": via["orders_per_s"],
        "abci_vs_native": round(ratio, 3),
        "abci_without_check_tx_orders_per_s": cold["orders_per_s"],
        "check_tx_per_s": via["check_tx_per_s"],
        "roots_equal": roots_equal,
        "python": sys.version.split()[0],
    }
    print(f"native producer (produce_txs, signed at admission): {nat['orders_per_s']:,} orders/s")
    print(
        f"ABCI FinalizeBlock + Commit over the socket:        {via['orders_per_s']:,} orders/s "
        f"({ratio:.0%} of native; target >= 80%)"
    )
    print(f"ABCI, no CheckTx before (signatures in the block):  {cold['orders_per_s']:,} orders/s")
    print(f"CheckTx pipelined over the socket:                  {via['check_tx_per_s']:,} txs/s")
    print(f"state roots equal at every height (native = ABCI):  {roots_equal}")
    if args.json:
        print(json.dumps(report))
    return 0 if roots_equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
