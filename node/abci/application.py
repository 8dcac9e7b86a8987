"""perpchain as an ABCI 2.0 application (CometBFT v0.38): one object behind every connection.
Imports node.core, node.store, node.chain (admission check, producer's block assembly and
publication, replay's alerts), node.lane, node.log and node.abci.{codec,events,snapshots}.

CometBFT owns ordering, block time and finality; this object owns admission (CheckTx), the
state root (app_hash) and the invariants (DESIGN.md section 5). Mapping:

- InitChain: block 0 from our genesis file (the store's, when `perpchain init` already wrote
  it); a CometBFT chain id, initial height, validator set or app_state other than ours is
  refused with an exception naming both sides.
- CheckTx: our admission (node.chain.admission.check_tx: size, canonical decoding, key and
  strict signature) plus the nonce window against committed state and a per-signer cap;
  RECHECK after every block re-runs the nonce rule, so used nonces leave CometBFT's mempool.
- PrepareProposal: CometBFT's mempool order (arrival order, as our producer's FIFO), txs that
  fail the stateless checks dropped, at most `max_block_txs` txs and `max_tx_bytes` bytes.
- ProcessProposal: REJECT a block our proposer would not build (undecodable, oversize, bad
  key or signature, duplicate txs, more than MAX_BLOCK_TXS); everything else is for the state
  machine's receipts.
- FinalizeBlock: `apply_block` over the committed head with the header's time (never the wall
  clock), the block staged (not written) and its header built over the new root; tx results
  carry our reject codes and events; app_hash = our state root. An InvariantViolation answers
  an exception (CometBFT stops the validator) and the application stays halted; after a
  restart CometBFT replays the same block and the same violation stops it again.
- Commit: the staged block (state, block record, receipts, indexes, the `abci` record) in
  one atomic batch; nothing was written before it, so a kill -9 between FinalizeBlock and
  Commit leaves the previous height, which Info reports, and CometBFT replays the block.

The consensus connection is the only writer. Requests of all connections are served one at
a time under `lock` (a FinalizeBlock computes in slices of the work lane, so RPC reads of
the committed state go on meanwhile; CheckTx waits for it).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from node.abci import codec
from node.abci.codec import Request, Response
from node.abci.events import abci_events
from node.abci.proto.tendermint.abci import types_pb2 as pb
from node.chain.admission import check_tx
from node.chain.broadcast import Broadcaster
from node.chain.producer import (
    ChainStatus,
    PreparedBlock,
    collector_paused,
    commit_prepared_steps,
    drive_in_slices,
    publish_block,
)
from node.chain.replay import log_block_alerts
from node.core.blocks import (
    GENESIS_PARENT,
    MAX_BLOCK_TXS,
    Block,
    BlockEnv,
    BlockHeader,
    BlockReceipts,
    Receipt,
    header_hash,
    tx_root_steps,
)
from node.core.errors import InvariantViolation, Reject, TxRejected
from node.core.genesis import Genesis, genesis_writes
from node.core.steps import Steps, drive
from node.core.transition import BlockResult, apply_block_steps, decode_block_txs, use_nonce
from node.core.txs import MAX_TX_BYTES, SignedTx, validate_tx
from node.core.view import Overlay, get_nonces
from node.lane import WorkLane
from node.log import log_event, short_hex
from node.store import VersionedStore, blocks_db

logger = logging.getLogger("perpchain.abci")

APP_VERSION = 1
ABCI_RECORD = blocks_db.ABCI  # per height: msgpack [CometBFT block hash, proposer address]
CODESPACE = "perp"
# CheckTx code of a signer whose share of the mempool is full: the JSON-RPC MEMPOOL_FULL code
# (node/rpc/errors.py), outside the Reject codes, which a block's receipts use.
SENDER_FULL_CODE = 2007
VERIFIED_CACHE = 50_000  # decoded txs whose stateless checks passed here (~1 KiB each)
# protobuf overhead of one tx in a block's data: field tag + uvarint length (CometBFT's
# ComputeProtoSizeForTxs counts it against max_tx_bytes)
TX_OVERHEAD_BYTES = 1


class AbciRefused(Exception):
    """A request this application refuses: answered as an exception, nothing changed."""


@dataclass(frozen=True)
class Pending:
    """FinalizeBlock's outcome, written by the next Commit."""

    prepared: PreparedBlock
    result: BlockResult
    txs: int
    started: float
    applied: float


def block_time_ms(timestamp: Any) -> int:
    """A protobuf Timestamp in whole ms (truncated: the same on every validator)."""
    return int(timestamp.seconds) * 1000 + int(timestamp.nanos) // 1_000_000


def abci_record(block_hash: bytes, proposer: bytes) -> bytes:
    return bytes(msgpack.packb([block_hash, proposer], use_bin_type=True))


def decode_abci_record(raw: bytes) -> tuple[bytes, bytes]:
    block_hash, proposer = msgpack.unpackb(raw, raw=True)
    return bytes(block_hash), bytes(proposer)


def expected_validators(genesis_doc: dict[str, Any]) -> list[tuple[bytes, int]] | None:
    """The validator set our genesis file names (`abci.validators`: [{"pub_key": base64 or
    hex Ed25519 key, "power": int or decimal string}]), sorted; None when it names none."""
    section = genesis_doc.get("abci")
    if not isinstance(section, dict) or "validators" not in section:
        return None
    out = []
    for item in section["validators"]:
        text = str(item["pub_key"])
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
        if len(key) != 32:
            raise ValueError(f"genesis abci.validators: {text!r} is not a 32-byte Ed25519 key")
        out.append((key, int(item["power"])))
    return sorted(out)


class PerpApplication:
    """The ABCI application: `await handle(request) -> response` for every connection."""

    def __init__(
        self,
        store: VersionedStore,
        genesis: Genesis,
        genesis_doc: dict[str, Any],
        *,
        status: ChainStatus | None = None,
        broadcaster: Broadcaster | None = None,
        lane: WorkLane | None = None,
        max_tx_bytes: int = MAX_TX_BYTES,
        max_block_txs: int = MAX_BLOCK_TXS,
        max_per_account: int = 256,
        invariant_scan_blocks: int = 1,
        retain_blocks: int = 0,
        snapshots: Any = None,
        rpc_call: Callable[[str, dict[str, Any]], Awaitable[Any]] | None = None,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.genesis_doc = genesis_doc
        self.status = status or ChainStatus()
        self.broadcaster = broadcaster
        self.lane = lane
        self.max_tx_bytes = max_tx_bytes
        self.max_block_txs = max_block_txs
        self.max_per_account = max_per_account
        self.invariant_scan_blocks = invariant_scan_blocks
        self.retain_blocks = retain_blocks
        self.snapshots = snapshots
        self.rpc_call = rpc_call
        self.lock = trio.Lock()
        self.pending: Pending | None = None
        self.halt_reason = ""
        # Txs whose stateless checks passed here (CheckTx, a proposal), decoded, by their
        # bytes: FinalizeBlock neither decodes nor verifies them again.
        self.verified: OrderedDict[bytes, SignedTx] = OrderedDict()
        self.pending_per_signer: dict[bytes, int] = {}
        head = blocks_db.get_block(store, store.height) if store.height >= 0 else None
        self.status.head = None if head is None else head.header
        self.status.mode = "abci"
        self.handlers: dict[str, Callable[[Any], Any]] = {
            "echo": self.echo,
            "flush": self.flush,
            "info": self.info,
            "init_chain": self.init_chain,
            "query": self.query,
            "check_tx": self.check_tx,
            "prepare_proposal": self.prepare_proposal,
            "process_proposal": self.process_proposal,
            "extend_vote": self.extend_vote,
            "verify_vote_extension": self.verify_vote_extension,
            "finalize_block": self.finalize_block,
            "commit": self.commit,
            "list_snapshots": self.list_snapshots,
            "offer_snapshot": self.offer_snapshot,
            "load_snapshot_chunk": self.load_snapshot_chunk,
            "apply_snapshot_chunk": self.apply_snapshot_chunk,
        }

    # --- dispatch ------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """The response to one request; a refusal or a failure is an exception response
        (CometBFT stops on it) and changes nothing."""
        kind = request.WhichOneof("value")
        handler = self.handlers.get(kind or "")
        if handler is None:
            return codec.exception_response(f"unknown request type {kind!r}")
        response = Response()
        try:
            async with self.lock:
                result = handler(getattr(request, kind))
                if isinstance(result, Awaitable):
                    result = await result
        except (AbciRefused, TxRejected) as refused:
            log_event(logger, "abci.refused", level=logging.ERROR, request=kind, error=refused)
            return codec.exception_response(f"{kind}: {refused}")
        except (MemoryError, trio.Cancelled):
            raise
        except Exception as error:  # noqa: BLE001 - one request's failure is its answer
            # A bug or an input nothing foresaw (a Query of a negative height, a store
            # error in Commit): nothing was written that the store did not make atomic, the
            # other connections go on, and CometBFT stops on the exception if it came on the
            # consensus connection; Info then tells it where to resume.
            logger.exception("abci.failed request=%s", kind)
            return codec.exception_response(f"{kind}: {type(error).__name__}: {error}")
        getattr(response, kind).CopyFrom(result)
        return response

    # --- connection-level ------------------------------------------------------------------

    def echo(self, req: Any) -> Any:
        return pb.ResponseEcho(message=req.message)

    def flush(self, req: Any) -> Any:
        return pb.ResponseFlush()

    def info(self, req: Any) -> Any:
        """Last committed height and app hash, from the store (a staged block does not
        count: after a crash CometBFT replays it). Height 0 (only our genesis block) reads
        as no block to CometBFT, which then calls InitChain (idempotent here)."""
        height = max(self.store.height, 0)
        return pb.ResponseInfo(
            data="perpchain",
            version="perpchain/abci-1",
            app_version=APP_VERSION,
            last_block_height=height,
            last_block_app_hash=self.store.root() if height > 0 else b"",
        )

    def extend_vote(self, req: Any) -> Any:
        return pb.ResponseExtendVote(vote_extension=b"")

    def verify_vote_extension(self, req: Any) -> Any:
        status = pb.ResponseVerifyVoteExtension.ACCEPT
        if req.vote_extension:  # we never extend votes
            status = pb.ResponseVerifyVoteExtension.REJECT
        return pb.ResponseVerifyVoteExtension(status=status)

    # --- genesis -------------------------------------------------------------------------

    def init_chain(self, req: Any) -> Any:
        chain_id = self.genesis.chain_id.decode()
        if req.chain_id != chain_id:
            raise AbciRefused(
                f"CometBFT chain_id {req.chain_id!r} is not our genesis chain_id {chain_id!r}"
            )
        if req.initial_height not in (0, 1):
            raise AbciRefused(
                f"initial_height {req.initial_height}: perpchain maps CometBFT height h to its "
                "own height h over its genesis block 0, so the initial height must be 1"
            )
        self._check_validators(req.validators)
        self._check_app_state(req.app_state_bytes)
        if self.store.height > 0:
            raise AbciRefused(
                f"InitChain on a store at height {self.store.height}: it holds another chain's "
                "blocks, or CometBFT's state was reset without the application's"
            )
        if self.store.height < 0:
            self._commit_genesis_block()
        if self.store.root() != self._genesis_root():
            raise AbciRefused("the store's block 0 is not our genesis state")
        log_event(logger, "abci.init_chain", chain_id=chain_id, root=short_hex(self.store.root()))
        return pb.ResponseInitChain(app_hash=self.store.root())

    def _genesis_root(self) -> bytes:
        head = blocks_db.get_block(self.store, 0)
        if head is None:
            raise AbciRefused("no block 0 in the store")
        return self.store.root(0)

    def _check_validators(self, validators: Any) -> None:
        expected = expected_validators(self.genesis_doc)
        given = sorted(
            (bytes(v.pub_key.ed25519), int(v.power))
            for v in validators
            if v.pub_key.WhichOneof("sum") == "ed25519"
        )
        if len(given) != len(validators):
            raise AbciRefused("a CometBFT validator key is not Ed25519")
        if expected is not None and given != expected:
            raise AbciRefused(
                "CometBFT's validator set is not our genesis abci.validators: given "
                + ", ".join(f"{k.hex()[:16]}:{p}" for k, p in given)
                + "; expected "
                + ", ".join(f"{k.hex()[:16]}:{p}" for k, p in expected)
            )

    def _check_app_state(self, app_state: bytes) -> None:
        """CometBFT's genesis app_state is empty, {} / null, or exactly our genesis file."""
        if not app_state.strip():
            return
        try:
            doc = json.loads(app_state)
        except ValueError:
            raise AbciRefused("CometBFT's genesis app_state is not JSON") from None
        if doc in ({}, None) or doc == self.genesis_doc:
            return
        raise AbciRefused("CometBFT's genesis app_state is not our genesis file")

    def _commit_genesis_block(self) -> None:
        genesis = self.genesis
        env = BlockEnv(chain_id=genesis.chain_id, height=0, time_ms=genesis.genesis_time_ms)
        empty = BlockReceipts(receipts=(), block_events=())
        prepared = drive(
            self._prepare_steps(env, None, genesis_writes(genesis), [], empty, b"", b"")
        )
        drive(commit_prepared_steps(self.store, prepared))
        self.status.head = prepared.header

    # --- mempool -------------------------------------------------------------------------

    def _remember_verified(self, tx: SignedTx) -> None:
        self.verified[tx.raw] = tx
        if len(self.verified) > VERIFIED_CACHE:
            self.verified.popitem(last=False)

    def check_tx(self, req: Any) -> Any:
        raw = bytes(req.tx)
        try:
            # A tx that passed the stateless checks here already (the RECHECK of every tx
            # left in CometBFT's mempool after each block) is not verified again.
            tx = self.verified.get(raw) or check_tx(raw, self.genesis.chain_id, self.max_tx_bytes)
            use_nonce(
                get_nonces(Overlay(self.store), tx.signer),
                tx.nonce,
                self.genesis.params.nonce_window,
            )
            count = self.pending_per_signer.get(tx.signer, 0)
            if count >= self.max_per_account:
                return pb.ResponseCheckTx(
                    code=SENDER_FULL_CODE,
                    log=f"sender has {count} pending txs (max_per_account)",
                    codespace=CODESPACE,
                )
        except TxRejected as rejected:
            return pb.ResponseCheckTx(
                code=int(rejected.code),
                log=f"{Reject(rejected.code).name}: {rejected.detail}",
                codespace=CODESPACE,
            )
        self.pending_per_signer[tx.signer] = count + 1
        if raw not in self.verified:
            self._remember_verified(tx)
        return pb.ResponseCheckTx(code=0, gas_wanted=1, data=tx.tx_hash)

    # --- proposals -----------------------------------------------------------------------

    def _stateless_ok(self, raw: bytes) -> SignedTx | None:
        try:
            tx = check_tx(raw, self.genesis.chain_id, self.max_tx_bytes)
        except TxRejected:
            return None
        self._remember_verified(tx)
        return tx

    def prepare_proposal(self, req: Any) -> Any:
        """Our producer's block: arrival order, up to max_block_txs txs within max_tx_bytes;
        a tx that fails the stateless checks is left out (it could only be MALFORMED)."""
        out: list[bytes] = []
        seen: set[bytes] = set()
        budget = req.max_tx_bytes if req.max_tx_bytes > 0 else 1 << 62
        used = 0
        for raw in req.txs:
            if len(out) >= self.max_block_txs:
                break
            size = len(raw) + TX_OVERHEAD_BYTES + len(codec.encode_uvarint(len(raw)))
            if used + size > budget:
                break
            tx = self._stateless_ok(bytes(raw))
            if tx is None or tx.tx_hash in seen:
                continue
            seen.add(tx.tx_hash)
            out.append(bytes(raw))
            used += size
        return pb.ResponsePrepareProposal(txs=out)

    def process_proposal(self, req: Any) -> Any:
        reason = self._proposal_problem(req)
        if reason:
            log_event(
                logger,
                "abci.proposal_rejected",
                level=logging.WARNING,
                height=req.height,
                proposer=bytes(req.proposer_address).hex()[:16],
                reason=reason,
            )
            return pb.ResponseProcessProposal(status=pb.ResponseProcessProposal.REJECT)
        return pb.ResponseProcessProposal(status=pb.ResponseProcessProposal.ACCEPT)

    def _proposal_problem(self, req: Any) -> str:
        if len(req.txs) > MAX_BLOCK_TXS:
            return f"{len(req.txs)} txs > {MAX_BLOCK_TXS}"
        seen: set[bytes] = set()
        for position, raw in enumerate(req.txs):
            try:
                tx = check_tx(bytes(raw), self.genesis.chain_id, self.max_tx_bytes)
            except TxRejected as rejected:
                return f"tx {position}: {Reject(rejected.code).name} {rejected.detail}"
            if tx.tx_hash in seen:
                return f"tx {position}: duplicate"
            seen.add(tx.tx_hash)
            self._remember_verified(tx)
        return ""

    # --- blocks --------------------------------------------------------------------------

    async def finalize_block(self, req: Any) -> Any:
        if self.halt_reason:
            raise AbciRefused(f"halted: {self.halt_reason}")
        head = self.status.head
        if head is None or self.store.height < 0:
            raise AbciRefused("FinalizeBlock before InitChain: the store has no genesis block")
        if req.height != self.store.height + 1:
            raise AbciRefused(
                f"FinalizeBlock at height {req.height}; the application's next height is "
                f"{self.store.height + 1}"
            )
        self.pending = None
        started = time.perf_counter()
        # The header's time, never the wall clock; strictly after the parent's (CometBFT's
        # time is monotonic in ns, ours is ms: two blocks in one ms would otherwise tie).
        env = BlockEnv(
            chain_id=self.genesis.chain_id,
            height=req.height,
            time_ms=max(block_time_ms(req.time), head.time_ms + 1),
        )
        raws = [bytes(raw) for raw in req.txs]
        decoded = self._decode(raws)
        good = [item for item in decoded if isinstance(item, SignedTx)]
        try:
            result = await self._run(
                apply_block_steps(
                    self.store,
                    env,
                    good,
                    verify_signatures=not self._all_verified(good),
                    full_scan=env.height % self.invariant_scan_blocks == 0,
                )
            )
        except InvariantViolation as violation:
            self.halt_reason = f"invariant violated at height {env.height}: {violation}"
            log_event(
                logger,
                "node.halted",
                level=logging.CRITICAL,
                height=env.height,
                root=short_hex(self.store.root()),
                reason=self.halt_reason,
            )
            self.status.mode = "halted"
            self.status.halt_reason = self.halt_reason
            raise AbciRefused(self.halt_reason) from None
        applied_receipts = iter(result.receipts)
        receipts = tuple(
            next(applied_receipts) if isinstance(item, SignedTx) else item for item in decoded
        )
        block_receipts = BlockReceipts(receipts=receipts, block_events=result.events)
        prepared = await self._run(
            self._prepare_steps(
                env,
                head,
                result.writes,
                raws,
                block_receipts,
                bytes(req.proposer_address),
                bytes(req.hash),
            )
        )
        self.pending = Pending(prepared, result, len(raws), started, time.perf_counter())
        return pb.ResponseFinalizeBlock(
            tx_results=[tx_result(receipt) for receipt in receipts],
            events=abci_events(result.events),
            app_hash=prepared.staged.root,
        )

    def _decode(self, raws: list[bytes]) -> list[SignedTx | Receipt]:
        """Each tx decoded (from the cache when it passed the checks here), or a MALFORMED
        receipt in its place, as transition.decode_block_txs."""
        cache = self.verified
        out: list[SignedTx | Receipt] = []
        for raw in raws:
            tx = cache.get(raw)
            out.append(tx if tx is not None else decode_block_txs([raw])[0])
        return out

    def _all_verified(self, txs: list[SignedTx]) -> bool:
        """Every tx passed the stateless checks here already (CheckTx or a proposal) or
        passes them now: then apply_block need not verify signatures again. Otherwise it
        verifies them all and writes the same receipts the checks would imply."""
        for tx in txs:
            if self.verified.get(tx.raw) is tx:
                continue
            try:
                validate_tx(tx, self.genesis.chain_id)
            except TxRejected:
                return False
            self._remember_verified(tx)
        return True

    async def _run(self, steps: Steps[Any]) -> Any:
        """Drive a block's steps, in turns of the work lane when there is one (RPC reads go
        on between them), with the automatic garbage collector off as the producer does
        (node.chain.producer.collector_paused: no young collection walks the block's live
        working set; the one due runs after, once it is freed)."""
        with collector_paused():
            if self.lane is None:
                return drive(steps)
            return await drive_in_slices(steps, self.lane)

    def _prepare_steps(
        self,
        env: BlockEnv,
        parent: BlockHeader | None,
        writes: Any,
        txs: list[bytes],
        receipts: BlockReceipts,
        proposer: bytes,
        block_hash: bytes,
    ) -> Steps[PreparedBlock]:
        """The producer's block assembly (node.chain.producer.prepare_block_steps) with an
        unsigned header: under CometBFT the block is final by the validators' commit, not by
        our producer key. `producer` holds the CometBFT proposer address (20 bytes, so never
        mistaken for an Ed25519 key), `signature` is empty, and the `abci` record keeps the
        CometBFT block hash of the height."""
        index = blocks_db.tx_index(env.height, [r.tx_hash for r in receipts.receipts])
        staged = yield from self.store.stage_steps(dict(writes), index=index)
        root_of_txs = yield from tx_root_steps(txs)
        header = BlockHeader(
            chain_id=env.chain_id,
            height=env.height,
            parent_hash=GENESIS_PARENT if parent is None else header_hash(parent),
            time_ms=env.time_ms,
            tx_root=root_of_txs,
            state_root=staged.root,
            producer=proposer,
            signature=b"",
        )
        block = Block(header=header, txs=tuple(txs))
        yield None
        records = yield from blocks_db.block_records_steps(block, receipts)
        records[ABCI_RECORD] = abci_record(block_hash, proposer)
        return PreparedBlock(staged, header, block, receipts, records, blocks_db.hash_index(block))

    async def commit(self, req: Any) -> Any:
        pending = self.pending
        if pending is None:
            raise AbciRefused(f"Commit without a finalized block above {self.store.height}")
        header = await self._run(commit_prepared_steps(self.store, pending.prepared))
        self.pending = None
        self.status.head = header
        self.status.committed_txs += pending.txs
        self.pending_per_signer.clear()  # CometBFT rechecks what is left in its mempool
        done = time.perf_counter()
        log_block_alerts(logger, header.height, pending.result)
        log_event(
            logger,
            "block.committed",
            level=logging.INFO if pending.txs else logging.DEBUG,
            height=header.height,
            txs=pending.txs,
            root=short_hex(header.state_root),
            apply_ms=round((pending.applied - pending.started) * 1000, 1),
            commit_ms=round((done - pending.applied) * 1000, 1),
        )
        if self.broadcaster is not None:
            publish_block(
                self.broadcaster, header, pending.prepared.receipts.receipts, pending.result.events
            )
        if self.snapshots is not None:
            self.snapshots.after_commit(header.height)
        return pb.ResponseCommit(retain_height=self.retain_height())

    def retain_height(self) -> int:
        """The lowest height CometBFT must keep: 0 (keep all) unless `retain_blocks` is set,
        and never above a pinned checkpoint (a rollback to it needs CometBFT's blocks too)."""
        if self.retain_blocks <= 0:
            return 0
        retain = max(self.store.height - self.retain_blocks + 1, 0)
        for checkpoint in self.store.checkpoints():
            retain = min(retain, checkpoint.height)
        return retain

    # --- queries -------------------------------------------------------------------------

    async def query(self, req: Any) -> Any:
        from node.abci.query import answer_query

        return await answer_query(self, req)

    # --- state sync ----------------------------------------------------------------------

    def list_snapshots(self, req: Any) -> Any:
        if self.snapshots is None:
            return pb.ResponseListSnapshots()
        return self.snapshots.list_snapshots(req)

    def offer_snapshot(self, req: Any) -> Any:
        if self.snapshots is None:
            return pb.ResponseOfferSnapshot(result=pb.ResponseOfferSnapshot.REJECT)
        return self.snapshots.offer_snapshot(req)

    def load_snapshot_chunk(self, req: Any) -> Any:
        if self.snapshots is None:
            return pb.ResponseLoadSnapshotChunk()
        return self.snapshots.load_snapshot_chunk(req)

    def apply_snapshot_chunk(self, req: Any) -> Any:
        if self.snapshots is None:
            return pb.ResponseApplySnapshotChunk(result=pb.ResponseApplySnapshotChunk.ABORT)
        response = self.snapshots.apply_snapshot_chunk(req)
        if self.status.head is None and self.store.height >= 0:
            # Restored: the imported height's block record is the head CometBFT goes on from.
            block = blocks_db.get_block(self.store, self.store.height)
            self.status.head = None if block is None else block.header
        return response


def tx_result(receipt: Receipt) -> Any:
    code = int(receipt.code)
    return pb.ExecTxResult(
        code=code,
        data=receipt.tx_hash,
        log="" if code == 0 else Reject(code).name,
        codespace="" if code == 0 else CODESPACE,
        events=abci_events(receipt.events),
    )
