"""`perpchain forks | verify | rollback | report compensation | snapshot`: offline operator
commands on a stopped node's store (node/ops does the work; this prints it)."""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

from node.cli.common import CliError, Progress, open_store, print_json


def cmd_forks(args: argparse.Namespace) -> int:
    with open_store(args.home) as store:
        forks = store.forks()
    if args.json:
        print_json([fork._asdict() for fork in forks])
        return 0
    if not forks:
        print("no forks: nothing was ever rolled back")
    for fork in forks:
        reason = f": {fork.reason}" if fork.reason else ""
        print(
            f"fork {fork.fork_id}: heights {fork.to_height + 1}..{fork.from_height} reverted, "
            f"restored height {fork.to_height}{reason}"
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from node.app import load_genesis
    from node.ops.verify import verify_chain

    genesis = load_genesis(pathlib.Path(args.home))
    with open_store(args.home, verify_on_open=False) as store:
        try:
            report = verify_chain(
                store,
                genesis,
                from_height=args.from_height,
                from_checkpoint=args.from_checkpoint,
                progress=None if args.json else Progress("verify", "blocks"),
            )
        except KeyError as error:
            raise CliError(error.args[0] if error.args else str(error)) from None
    if args.json:
        print_json(report.to_json())
    else:
        print(report.text())
        if not report.ok:
            print(_restore_hint(args.home, report))
    return 0 if report.ok else 3


def _restore_hint(home: str, report: Any) -> str:
    from node.ops.restore import RestoreRefused, restore_command

    with open_store(home, verify_on_open=False) as store:
        try:
            return f"to restore: {restore_command(store, report, home)[0]}"
        except RestoreRefused as refused:
            return str(refused)


def cmd_rollback(args: argparse.Namespace) -> int:
    from node.app import OPERATOR_KEY_FILE, PRODUCER_KEY_FILE, load_genesis, load_key
    from node.ops.rollback import apply_rollback, complete_recovery, plan_rollback

    home = pathlib.Path(args.home)
    genesis = load_genesis(home)
    if args.submit_recovery:
        return _submit_recovery(args, genesis)
    if args.cometbft_home and not args.dry_run:
        if args.resume or args.repair:
            raise CliError("--cometbft-home goes with --to-height or --to-checkpoint")
        return _rollback_validator(args, genesis)
    with open_store(args.home, verify_on_open=False) as store:
        if args.repair:
            repaired = store.repair_flat()
            if args.json:
                print_json({"repaired_rows": len(repaired), "state_root": store.root().hex()})
            else:
                print(
                    f"restored {len(repaired)} flat rows from the history; "
                    f"root {store.root().hex()}"
                )
            return 0
        producer = load_key(home, PRODUCER_KEY_FILE, "PERPCHAIN_PRODUCER_KEY")
        operator = load_key(home, OPERATOR_KEY_FILE, "PERPCHAIN_OPERATOR_KEY")
        now_ms = time.time_ns() // 1_000_000
        if args.resume:
            if producer is None or operator is None:
                raise CliError("the producer and operator keys are needed (home or environment)")
            outcome = complete_recovery(
                store, genesis, producer=producer, operator=operator, time_ms=now_ms
            )
            if args.json:
                print_json(outcome.to_json() if outcome else None)
            else:
                waiting = "no rollback is waiting for its recovery block"
                print(outcome.text() if outcome else waiting)
            return 0
        plan = plan_rollback(store, to_height=args.to_height, to_checkpoint=args.to_checkpoint)
        if args.dry_run:
            _show(plan, args.json)
            return 0
        if producer is None or operator is None:
            raise CliError("the producer and operator keys are needed (home or environment)")
        outcome = apply_rollback(
            store,
            genesis,
            plan,
            producer=producer,
            operator=operator,
            time_ms=now_ms,
            reason=args.reason,
        )
    _show(outcome, args.json)
    return 0


def find_cometbft(given: str | None) -> pathlib.Path:
    """--cometbft, else $PERPCHAIN_COMETBFT, else `cometbft` on PATH, else the repository's
    build (scripts/cometbft)."""
    import os
    import shutil

    for candidate in (given, os.environ.get("PERPCHAIN_COMETBFT"), shutil.which("cometbft")):
        if candidate:
            return pathlib.Path(candidate)
    built = pathlib.Path(__file__).resolve().parents[2] / ".cometbft" / "bin" / "cometbft"
    if built.exists():
        return built
    raise CliError("no cometbft binary: give --cometbft BIN (or build it with scripts/cometbft)")


def _rollback_validator(args: argparse.Namespace, genesis: Any) -> int:
    """A validator under CometBFT (node.ops.consensus): its store and its CometBFT home back
    to the same height, and with --recovery-out the recovery txs for --submit-recovery."""
    from node.app import OPERATOR_KEY_FILE, load_key
    from node.ops.consensus import recovery_txs, rollback_validator
    from node.ops.rollback import RollbackError

    operator = None
    if args.recovery_out:
        operator = load_key(pathlib.Path(args.home), OPERATOR_KEY_FILE, "PERPCHAIN_OPERATOR_KEY")
        if operator is None:
            raise CliError("--recovery-out needs the operator key (home or environment)")
    with open_store(args.home, verify_on_open=False) as store:
        try:
            outcome = rollback_validator(
                store,
                pathlib.Path(args.cometbft_home),
                find_cometbft(args.cometbft),
                to_height=args.to_height,
                to_checkpoint=args.to_checkpoint,
                reason=args.reason,
            )
            doc = outcome.to_json()
            if operator is not None:
                forks = [f for f in store.forks() if f.to_height == store.height]
                if not forks:
                    raise CliError("no rollback to this height to recover from")
                txs = recovery_txs(store, genesis, forks[-1], operator)
                recovery = {"fork_id": forks[-1].fork_id, "txs": [tx.hex() for tx in txs]}
                pathlib.Path(args.recovery_out).write_text(json.dumps(recovery, indent=2) + "\n")
                doc["recovery"] = {"file": args.recovery_out, **recovery}
        except RollbackError as error:
            raise CliError(str(error)) from None
    if args.json:
        print_json(doc)
    else:
        print(outcome.text())
        if operator is not None:
            print(
                f"recovery txs ({len(doc['recovery']['txs'])}: Recovery, then the reverted "
                f"deposits) in {args.recovery_out}; once the validators run again: perpchain "
                f"rollback --home {args.home} --submit-recovery {args.recovery_out} --rpc URL"
            )
            print(
                f"refund list: perpchain report compensation --home {args.home} "
                f"--fork {doc['recovery']['fork_id']}"
            )
    return 0


def _submit_recovery(args: argparse.Namespace, genesis: Any) -> int:
    """The recovery txs through a validator's JSON-RPC, in order, each waited for: the
    Recovery tx must be committed before the deposits go (they re-apply on its state)."""
    from node.client import RpcCallError, RpcClient
    from node.core.txs import decode_tx

    doc = json.loads(pathlib.Path(args.submit_recovery).read_text())
    client = RpcClient(args.rpc, timeout_s=30)
    results = []
    for raw_hex in doc["txs"]:
        tx = decode_tx(bytes.fromhex(raw_hex))
        try:
            client.call("tx_submit", tx=raw_hex)
        except RpcCallError as error:
            raise CliError(f"tx {tx.tx_hash.hex()} refused: {error}") from None
        deadline = time.monotonic() + 60
        while True:
            status = client.call("tx_status", tx_hash=tx.tx_hash.hex())
            if status["status"] in ("committed", "rejected"):
                break
            if time.monotonic() > deadline:
                raise CliError(f"tx {tx.tx_hash.hex()} not in a block after 60 s")
            time.sleep(0.1)
        results.append(status)
        if status["status"] != "committed":
            raise CliError(f"tx {tx.tx_hash.hex()} rejected: {status.get('code_name')}")
    if args.json:
        print_json(results)
    else:
        print(
            f"recovery of fork {doc['fork_id']}: {len(results)} txs committed at heights "
            + ", ".join(sorted({str(r["height"]) for r in results}))
        )
    return 0


def _show(result: Any, as_json: bool) -> None:
    if as_json:
        print_json(result.to_json())
    else:
        print(result.text())


def cmd_report(args: argparse.Namespace) -> int:
    """`report compensation`: the text (or with --json the JSON document) on stdout; the JSON
    document and the CSV rows also to files with --json-out / --csv."""
    from node.ops.incident import compensation_report

    with open_store(args.home) as store:
        report = compensation_report(store, args.fork, revalued=args.revalued)
    if args.json_out:
        document = json.dumps(report.to_json(), indent=2, sort_keys=True)
        pathlib.Path(args.json_out).write_text(document + "\n")
    if args.csv:
        pathlib.Path(args.csv).write_text(report.to_csv())
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print(report.text())
    return 0


def _snapshot_json(info: Any, path: str, action: str) -> dict[str, Any]:
    return {
        "action": action,
        "path": path,
        "chain_id": info.chain_id.decode(),
        "height": info.height,
        "state_root": info.state_root.hex(),
        "block_hash": info.block_hash.hex(),
        "pairs": info.pairs,
        "chunks": info.chunks,
        "file_bytes": info.file_bytes,
    }


def cmd_snapshot(args: argparse.Namespace) -> int:
    from node.app import DATA_DIR, load_genesis
    from node.ops.snapshot import export_snapshot, import_snapshot
    from node.store import StoreLocked, VersionedStore

    home = pathlib.Path(args.home)
    if args.action == "export":
        if not (home / DATA_DIR).is_dir():
            raise CliError(f"{home} holds no store ({DATA_DIR}/ is missing)")
        try:
            store = VersionedStore.open(home / DATA_DIR)
        except StoreLocked:
            raise CliError(
                f"the store in {home} is in use (is the node running?): stop the node first"
            ) from None
        progress = Progress("snapshot: exported", "pairs")
        with store:
            info = export_snapshot(store, args.height, args.out, progress)
        progress.done()
        if args.json:
            print_json(_snapshot_json(info, args.out, "export"))
            return 0
        print(
            f"exported height {info.height} of chain {info.chain_id.decode()}: {info.pairs:,} "
            f"pairs in {info.chunks} chunks, {info.file_bytes:,} bytes, state root "
            f"{info.state_root.hex()} -> {args.out}"
        )
        return 0
    if not (home / "genesis.json").exists():
        raise CliError(
            f"{home} has no genesis.json: create the home with `perpchain init --genesis FILE "
            f"--home {home}`, remove {home / DATA_DIR}, then import"
        )
    progress = Progress("snapshot: imported", "pairs")
    genesis = load_genesis(home)
    info = import_snapshot(args.file, home / DATA_DIR, genesis=genesis, progress=progress)
    progress.done()
    if args.json:
        print_json(_snapshot_json(info, args.file, "import"))
        return 0
    print(
        f"imported height {info.height} of chain {info.chain_id.decode()}: {info.pairs:,} pairs, "
        f"state root {info.state_root.hex()}, block {info.block_hash.hex()} into {home / DATA_DIR}"
    )
    return 0
