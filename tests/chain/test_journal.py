"""The tx journal (node/chain/journal.py) and the mempool's use of it: records round-trip, a torn
last record (a kill -9 mid-append, cut at every byte) is ignored and the good ones before it
kept, a bad checksum stops the read, re-admission goes through the normal checks (a used nonce
is dropped), compaction after a block keeps exactly the pending txs, a rollback's clear empties
it, and the size cap refuses (MEMPOOL_FULL) instead of growing."""

from __future__ import annotations

import pathlib

import pytest

from node.chain.journal import MAGIC, JournalFull, TxJournal, encode_record, read_journal
from node.chain.mempool import Mempool, MempoolFull
from node.config import MempoolSettings
from node.core.crypto import SigningKey
from node.core.txs import Deposit, sign_tx
from tests.e2e.chain import CHAIN_ID, make_chain

BRIDGE = SigningKey.from_label("devnet/bridge")
ACCOUNT = SigningKey.from_label("devnet/trader/0").public_key


def deposit(nonce: int) -> bytes:
    body = Deposit(nonce=nonce, account=ACCOUNT, amount_quote=1, deposit_id=10_000 + nonce)
    return sign_tx(body, BRIDGE, CHAIN_ID).raw


def journal(tmp_path: pathlib.Path, **kwargs: int) -> TxJournal:
    return TxJournal(
        tmp_path / "mempool.journal",
        sync_ms=kwargs.get("sync_ms", 100),
        max_bytes=kwargs.get("max_bytes", 1 << 20),
    )


def test_records_round_trip(tmp_path: pathlib.Path) -> None:
    j = journal(tmp_path)
    j.rewrite([b"a"])
    for raw in (b"bb", b"c" * 5000):
        j.append(raw)
    j.close()
    contents = read_journal(j.path)
    assert contents.records == [b"a", b"bb", b"c" * 5000] and contents.torn_bytes == 0


def test_a_torn_last_record_is_ignored_at_every_cut(tmp_path: pathlib.Path) -> None:
    good = [deposit(0), deposit(1)]
    last = encode_record(deposit(2))
    whole = MAGIC + b"".join(encode_record(r) for r in good) + last
    path = tmp_path / "mempool.journal"
    for cut in range(1, len(last)):
        path.write_bytes(whole[: len(whole) - cut])
        contents = read_journal(path)
        assert contents.records == good, cut
        assert contents.torn_bytes == len(last) - cut
    for cut in range(len(MAGIC)):  # killed while the magic of a new file was written
        path.write_bytes(MAGIC[:cut])
        assert read_journal(path).records == []


def test_a_bad_checksum_stops_the_read(tmp_path: pathlib.Path) -> None:
    records = [encode_record(deposit(n)) for n in range(3)]
    damaged = bytearray(records[1])
    damaged[-1] ^= 1
    path = tmp_path / "mempool.journal"
    path.write_bytes(MAGIC + records[0] + bytes(damaged) + records[2])
    assert read_journal(path).records == [deposit(0)]  # nothing after a bad record is trusted
    path.write_bytes(b"SOMETHING ELSE")
    with pytest.raises(ValueError, match="not a tx journal"):
        read_journal(path)


def _mempool(store: object) -> Mempool:
    genesis_nonce_window = 64
    return Mempool(CHAIN_ID, MempoolSettings(), store, genesis_nonce_window)  # type: ignore[arg-type]


def test_readmission_uses_the_normal_checks(tmp_path: pathlib.Path) -> None:
    from node.store import VersionedStore

    home = tmp_path / "home"
    make_chain(home, 1)
    j = journal(tmp_path)
    j.rewrite([])
    with VersionedStore.open(home / "data") as store:
        first = _mempool(store)
        first.readmit(j)  # empty journal; from now on every admission is journalled
        raws = [deposit(n) for n in range(5)]
        for raw in raws:
            first.add(raw)
        first.add(raws[0])  # a resubmission of a pending tx: idempotent, not journalled again
        assert first.accepted == "journal"
        # garbage and a forged tx in the journal are dropped by the checks, not trusted
        forged = bytearray(deposit(5))
        forged[-1] ^= 1
        j.append(bytes(forged))
        j.close()
        j2 = journal(tmp_path)
        second = _mempool(store)
        readmitted, dropped, torn = second.readmit(j2)
        assert (readmitted, dropped, torn) == (5, 1, 0)
        assert [tx.raw for tx in second.take(100)] == raws  # arrival order kept
        # the rewrite on open kept the 5 good ones only
        assert read_journal(j2.path).records == raws
        j2.close()


def test_compaction_keeps_exactly_the_pending_txs(tmp_path: pathlib.Path) -> None:
    from node.store import VersionedStore

    home = tmp_path / "home"
    make_chain(home, 1)
    with VersionedStore.open(home / "data") as store:
        j = journal(tmp_path)
        mempool = _mempool(store)
        mempool.readmit(j)
        raws = [deposit(n) for n in range(40)]
        for raw in raws:
            mempool.add(raw)
        mempool.take(30)  # "included in a block"
        assert not mempool.compact_journal()  # small: below twice the live bytes + slack
        j.compact([tx.raw for tx in list(mempool._txs.values())])  # noqa: SLF001 - forced
        assert read_journal(j.path).records == raws[30:]
        assert mempool.clear() == 10  # a rollback: the journal is emptied with the pool
        assert read_journal(j.path).records == []
        j.close()


def test_the_size_cap_refuses_instead_of_growing(tmp_path: pathlib.Path) -> None:
    from node.store import VersionedStore

    home = tmp_path / "home"
    make_chain(home, 1)
    record = len(encode_record(deposit(0)))
    with VersionedStore.open(home / "data") as store:
        j = journal(tmp_path, max_bytes=len(MAGIC) + 3 * record)
        mempool = _mempool(store)
        mempool.readmit(j)
        for n in range(3):
            mempool.add(deposit(n))
        with pytest.raises(MempoolFull, match="journal"):
            mempool.add(deposit(3))
        assert len(mempool) == 3  # refused txs are not pending either
        with pytest.raises(JournalFull):
            j.append(b"x")
        j.close()
