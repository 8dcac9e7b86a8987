"""Operator recovery under consensus: the rollback of one CometBFT validator (its perpchain store
and its CometBFT home) to a height every validator restores, and the recovery txs that then go
through consensus. Imports node.core, node.store, node.ops.{rollback,summary}; runs the
`cometbft` binary (its own `rollback --hard`) as a subprocess.

The single-sequencer rollback (node.ops.rollback) commits its recovery block itself. Under
CometBFT no validator may commit a block alone, and a block the validator set finalized cannot be
un-finalized: the set as a whole abandons the blocks above the restore height, as a coordinated
upgrade does. docs/ABCI.md, "Operator recovery", is the procedure; per validator, stopped:

1. The store rolls back to the target (`rollback_to`, flat state rehashed, the reverted blocks
   archived under a fork id exactly as on a sequencer) and the restored root must equal the
   root in our block record of the target.
2. CometBFT's `rollback --hard` is repeated until its state and block store are at the target;
   the app hash it reports there must equal our restored root: the validator set signed that
   hash in the header of target + 1, so the restored state is the agreed one, not just ours.
3. The double-sign guard (`data/priv_validator_state.json`) is set back to the target: its
   record of votes for the abandoned heights would make the validator refuse to vote for the new
   blocks at those heights. Safe only because every validator abandons those heights together.
   The consensus WAL (`data/cs.wal`), which holds this validator's messages for them, is moved
   aside. Both are kept next to the originals (`*.before-rollback-<target>`).

Every step reads where it stands first (CometBFT's stores through `cometbft inspect`), so an
interrupted or repeated run finishes what is missing and never rolls CometBFT below the target.
A validator behind the target is left as it is: it block-syncs the heights up to the target
from the others, then follows the new blocks.

The recovery (every resting order except TP/SL cancelled, every market CANCEL_ONLY, every
deposit of the reverted blocks re-applied) is the same txs the sequencer's recovery block holds:
`recovery_txs` gives them (the operator's Recovery tx, then the deposits' exact signed bytes),
identical on every validator; the operator submits them through any validator's JSON-RPC once the
validators run again, and consensus puts them in a block like any tx.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from node.core.crypto import SigningKey
from node.core.genesis import Genesis
from node.core.txs import Recovery, decode_tx, sign_tx
from node.core.view import Overlay, get_nonces
from node.ops.rollback import RollbackError, plan_rollback
from node.ops.summary import fork_blocks, summarize_blocks
from node.store import Fork, VersionedStore, blocks_db

PRIV_STATE = "priv_validator_state.json"
WAL_DIR = "cs.wal"
_ROLLED = re.compile(r"Rolled back both state and block to height (\d+) and hash ([0-9A-Fa-f]*)")


@dataclass
class ValidatorRollback:
    """What a validator's rollback did (to_json for --json)."""

    target: int
    app_from: int  # the store's head before (== target when it was already restored)
    fork_id: int | None  # None: the store was not rolled back now (already there, or behind)
    cometbft_steps: int  # `cometbft rollback --hard` runs
    app_hash: str  # the agreed app hash at the target (hex), "" when behind
    behind: bool = False  # below the target: nothing done, it block-syncs up to it
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "app_from": self.app_from,
            "fork_id": self.fork_id,
            "cometbft_steps": self.cometbft_steps,
            "app_hash": self.app_hash,
            "behind": self.behind,
            "notes": self.notes,
        }

    def text(self) -> str:
        if self.behind:
            return (
                f"this validator is at {self.app_from}, below {self.target}: nothing rolled "
                "back; started again, it block-syncs up to the target from the others"
            )
        fork = f"fork {self.fork_id}" if self.fork_id is not None else "store already there"
        lines = [
            f"rolled back {self.app_from} -> {self.target} ({fork}); CometBFT: "
            f"{self.cometbft_steps} x rollback --hard; agreed app hash {self.app_hash}",
            "double-sign guard and consensus WAL reset to the target; start the validator "
            "once every validator is rolled back",
        ]
        return "\n".join(lines + self.notes)


def resolve_target(
    store: VersionedStore, *, to_height: int | None, to_checkpoint: str | None
) -> int:
    if (to_height is None) == (to_checkpoint is None):
        raise RollbackError("give exactly one of a height or a checkpoint")
    if to_checkpoint is not None:
        try:
            return store.get_checkpoint(to_checkpoint).height
        except KeyError:
            names = ", ".join(c.name for c in store.checkpoints()) or "none"
            raise RollbackError(f"no checkpoint {to_checkpoint!r} (checkpoints: {names})") from None
    assert to_height is not None
    return to_height


def cometbft_rollback_once(cometbft: pathlib.Path, home: pathlib.Path) -> tuple[int, str]:
    """One `cometbft rollback --hard`: the (height, app hash hex) CometBFT is at after it."""
    done = subprocess.run(
        [str(cometbft), "rollback", "--hard", "--home", str(home)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = _ROLLED.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RollbackError(
            f"cometbft rollback --hard --home {home} failed (exit {done.returncode}; is the "
            f"CometBFT node stopped?): {(done.stderr or done.stdout).strip()[-400:]}"
        )
    return int(found.group(1)), found.group(2).lower()


def _write_json(path: pathlib.Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def _keep_aside(path: pathlib.Path, target: int) -> None:
    """Move `path` to `<path>.before-rollback-<target>` (a numbered suffix if that exists)."""
    if not path.exists():
        return
    aside = path.with_name(f"{path.name}.before-rollback-{target}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.before-rollback-{target}.{n}")
    os.replace(path, aside)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CometBFTStores:
    """The block and state stores of a stopped CometBFT node, read through `cometbft inspect`
    (its read-only RPC over them, made for a node that cannot start); a context manager."""

    def __init__(self, cometbft: pathlib.Path, home: pathlib.Path) -> None:
        self.port = _free_port()
        self.errors = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [
                str(cometbft),
                "inspect",
                "--home",
                str(home),
                "--rpc.laddr",
                f"tcp://127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.errors,  # a file, not a pipe: nothing reads it until it exits
        )

    def __enter__(self) -> CometBFTStores:
        deadline = time.monotonic() + 20
        while True:
            try:
                self.height()
                return self
            except OSError:
                if self.process.poll() is not None:
                    self.errors.seek(0)
                    error = self.errors.read().decode(errors="replace")
                    self.errors.close()
                    raise RollbackError(
                        f"cometbft inspect exited with code {self.process.returncode} (is the "
                        f"CometBFT node stopped?): {error.strip()[-400:]}"
                    ) from None
                if time.monotonic() > deadline:
                    self.__exit__()  # __exit__ is not called when __enter__ raises
                    raise RollbackError("cometbft inspect did not answer") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.errors.close()

    def call(self, method: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        url = f"http://127.0.0.1:{self.port}/{method}" + (f"?{query}" if query else "")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=10) as response:
            reply = json.loads(response.read())
        if "error" in reply:
            raise RollbackError(f"cometbft inspect {method}: {reply['error']}")
        return reply["result"]

    def height(self) -> int:
        """The block store's last height."""
        return int(self.call("blockchain", minHeight="1", maxHeight="1")["last_height"])

    def app_hash_after(self, height: int) -> str | None:
        """The app hash the application returned for `height` (hex), None when CometBFT's state
        store has no results of that height (its block was stored, its state not saved)."""
        try:
            results = self.call("block_results", height=str(height))
        except (RollbackError, OSError):
            return None
        return base64.b64decode(results.get("app_hash") or "").hex()


def rollback_validator(
    store: VersionedStore,
    cometbft_home: pathlib.Path,
    cometbft: pathlib.Path,
    *,
    to_height: int | None = None,
    to_checkpoint: str | None = None,
    reason: str = "operator rollback under consensus",
) -> ValidatorRollback:
    """Roll one stopped validator back to the target (module docstring, steps 1-3).
    Re-entrant: every step reads where it stands first (a store at the target is not rolled
    back again; CometBFT's height is read through `cometbft inspect`)."""
    data = cometbft_home / "data"
    if not (data / "blockstore.db").exists():
        raise RollbackError(f"{cometbft_home} is not a CometBFT home with blocks (no data/)")
    target = resolve_target(store, to_height=to_height, to_checkpoint=to_checkpoint)
    app_from = store.height
    with CometBFTStores(cometbft, cometbft_home) as stores:
        engine_from = stores.height()
        agreed = stores.app_hash_after(target) if engine_from == target else None
    if app_from < target or engine_from < target:
        return ValidatorRollback(target, app_from, None, 0, "", behind=True)

    # 1. The store.
    fork_id = None
    if store.height > target:
        block = blocks_db.get_block(store, target)
        if block is None:
            raise RollbackError(f"no block record at height {target}")
        plan_rollback(store, to_height=target)  # the same checks as a sequencer's rollback
        result = store.rollback_to(target, reason=reason, check_flat=True)
        if store.root() != block.header.state_root:
            raise RollbackError(
                f"the restored root {store.root().hex()} is not the root of block {target} "
                f"{block.header.state_root.hex()}"
            )
        fork_id = result.fork_id

    # 2. CometBFT, down to the target; the app hash it holds there must be our root.
    steps = 0
    notes: list[str] = []
    height = engine_from
    while agreed is None:
        height, agreed = cometbft_rollback_once(cometbft, cometbft_home)
        steps += 1
        if height > target:
            agreed = None
    if height < target:
        # Its state store was one block behind its block store at the target (stopped
        # between the two writes): both are at `height` now and block `target`, canonical,
        # comes back from the other validators by block sync.
        store.rollback_to(height, reason=reason + " (follows CometBFT)", check_flat=False)
        notes.append(f"CometBFT's state was at {height}; block {target} is block-synced again")
    root = store.root().hex()
    if agreed != root:
        raise RollbackError(
            f"CometBFT's app hash at {height} is {agreed}, the restored root is {root}: this "
            "store's state is not the one the validator set agreed; do not start this "
            "validator (restore its store from another validator's snapshot)"
        )

    # 3. Double-sign guard and WAL back to the restore height.
    state_path = data / PRIV_STATE
    if state_path.exists():
        current = json.loads(state_path.read_text())
        if int(current.get("height", "0")) > height:
            _keep_aside(state_path, height)
            _write_json(state_path, {"height": str(height), "round": 0, "step": 0})
    _keep_aside(data / WAL_DIR, height)
    return ValidatorRollback(target, app_from, fork_id, steps, agreed, notes=notes)


def recovery_txs(
    store: VersionedStore, genesis: Genesis, fork: Fork, operator: SigningKey
) -> list[bytes]:
    """The txs of the recovery under consensus, in order: the operator's Recovery tx (next
    nonce at the restored height), then every deposit of the reverted blocks, exact bytes. The
    same on every validator rolled back to the same height (Ed25519 signatures are
    deterministic), so any one of them can produce the list."""
    if operator.public_key != genesis.operator_key:
        raise RollbackError("the operator key does not match the genesis operator")
    if store.height != fork.to_height:
        raise RollbackError(
            f"fork {fork.fork_id} restored height {fork.to_height}, the store is at "
            f"{store.height}: the recovery txs are for the height right after a rollback"
        )
    nonce = get_nonces(Overlay(store), operator.public_key).base_nonce
    recovery = sign_tx(Recovery(nonce=nonce), operator, genesis.chain_id)
    summary = summarize_blocks(list(fork_blocks(store, fork)))
    deposits = [decode_tx(item.raw_tx).raw for item in summary.deposits]
    return [recovery.raw, *deposits]
