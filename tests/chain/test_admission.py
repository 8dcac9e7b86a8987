"""Admission: the checks in the worker process give exactly the in-process outcome, the
mempool uses them, and a pool that dies costs nothing but speed."""

from __future__ import annotations

import os
import pathlib
import signal
import time
from collections.abc import Iterator

import pytest

from node.chain.admission import CheckPool, check_batch, check_tx
from node.chain.mempool import Mempool
from node.config import MempoolSettings
from node.core.crypto import SigningKey
from node.core.errors import Reject, TxRejected
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import PlaceOrder, SignedTx, sign_tx
from node.core.view import MemoryState

CHAIN = b"perpchain-test"
KEY = SigningKey.from_label("test/admission")


def order(nonce: int, chain_id: bytes = CHAIN) -> bytes:
    body = PlaceOrder(
        nonce=nonce,
        market_id=1,
        side=Side.BUY,
        kind=OrderKind.LIMIT,
        tif=TimeInForce.GTC,
        price_quote=60_000 * 10**6,
        size_atoms=100_000,
        reduce_only=0,
        trigger_price_quote=0,
        client_id=nonce + 1,
    )
    return sign_tx(body, KEY, chain_id).raw


def forged(raw: bytes) -> bytes:
    """The same tx with one bit of its signature flipped (the signature is the last field)."""
    return raw[:-1] + bytes([raw[-1] ^ 1])


CASES = {
    "good": order(0),
    "bad signature": forged(order(1)),
    "other chain": order(2, chain_id=b"another-chain"),
    "malformed": b"\x93\x01\x02",
    "oversize": b"\x00" * 5000,
}
EXPECTED = {
    "good": 0,
    "bad signature": Reject.BAD_SIGNATURE,
    "other chain": Reject.BAD_SIGNATURE,
    "malformed": Reject.MALFORMED,
    "oversize": Reject.MALFORMED,
}


def outcome(raw: bytes) -> int:
    try:
        check_tx(raw, CHAIN, 4096)
    except TxRejected as rejected:
        return rejected.code
    return 0


def test_in_process_checks_name_what_failed() -> None:
    assert {name: outcome(raw) for name, raw in CASES.items()} == EXPECTED
    batch = check_batch(list(CASES.values()), CHAIN, 4096)
    assert [0 if isinstance(item, SignedTx) else item[0] for item in batch] == list(
        EXPECTED.values()
    )


@pytest.fixture
def pool() -> Iterator[CheckPool]:
    checks = CheckPool(CHAIN, 4096, workers=1)
    yield checks
    checks.close()


async def test_the_pool_gives_the_in_process_outcomes(pool: CheckPool) -> None:
    results = await pool.check_many(list(CASES.values()))
    assert results is not None
    for (name, raw), result in zip(CASES.items(), results, strict=True):
        if EXPECTED[name] == 0:
            assert isinstance(result, SignedTx) and result.raw == raw
            assert result.tx_hash == check_tx(raw, CHAIN, 4096).tx_hash
        else:
            assert isinstance(result, TxRejected) and result.code == EXPECTED[name], name


async def test_the_mempool_admits_prechecked_txs_as_it_would_unchecked(pool: CheckPool) -> None:
    raws = [order(n) for n in range(8)] + [forged(order(8)), order(0)]
    answers = []
    for mempool_pool in (pool, None):
        mempool = Mempool(CHAIN, MempoolSettings(), MemoryState(), 64, pool=mempool_pool)
        await mempool.precheck(raws)
        seen = []
        for raw in raws:
            try:
                seen.append(mempool.add(raw).tx_hash.hex())
            except TxRejected as rejected:
                seen.append(int(rejected.code))
        answers.append((seen, len(mempool)))
    assert answers[0] == answers[1]
    assert (
        answers[0][0][8] == Reject.BAD_SIGNATURE and answers[0][1] == 8
    )  # resubmission: idempotent


async def test_a_dead_worker_means_checks_in_process(pool: CheckPool) -> None:
    assert await pool.check_many([order(0)]) is not None
    for pid in list(pool._executor._processes):  # type: ignore[union-attr]  # noqa: SLF001
        os.kill(pid, signal.SIGKILL)
    assert await pool.check_many([order(1)]) is None
    assert not pool.alive
    mempool = Mempool(CHAIN, MempoolSettings(), MemoryState(), 64, pool=pool)
    await mempool.precheck([order(1)])  # nothing happens
    assert mempool.add(order(1)).nonce == 1
    with pytest.raises(TxRejected) as rejected:
        mempool.add(forged(order(2)))
    assert rejected.value.code == Reject.BAD_SIGNATURE


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return found


def test_the_worker_of_a_node_killed_with_sigkill_exits(tmp_path: pathlib.Path) -> None:
    from node.app import init_home
    from node.devnet import spawn_node
    from tests.e2e.chain import genesis_doc

    home = tmp_path / "home"
    init_home(home, genesis_doc())
    node, _ = spawn_node(home)
    deadline = time.monotonic() + 20
    while not (workers := _children(node.pid)):
        assert time.monotonic() < deadline, "the node started no admission worker"
        time.sleep(0.05)
    node.send_signal(signal.SIGKILL)
    node.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive := {pid for pid in workers if os.path.exists(f"/proc/{pid}")}:
        stats = {
            pid: open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] for pid in alive
        }
        if all(state == "Z" for state in stats.values()):
            break  # exited, waiting to be reaped by init
        assert time.monotonic() < deadline, f"workers outlived their node: {stats}"
        time.sleep(0.1)


def test_ctrl_c_of_a_node_stops_it_and_its_worker_silently(tmp_path: pathlib.Path) -> None:
    """A terminal's Ctrl-C is SIGINT to the whole foreground process group: the node stops as
    on SIGTERM and its admission worker exits with it, with no KeyboardInterrupt traceback."""
    import subprocess

    from node.app import init_home
    from node.devnet import ROOT, node_command
    from tests.e2e.chain import genesis_doc

    home = tmp_path / "home"
    init_home(home, genesis_doc())
    node = subprocess.Popen(
        node_command(home, "127.0.0.1:0", "127.0.0.1:0"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"},
        start_new_session=True,  # its own process group, as a shell job has
    )
    try:
        deadline = time.monotonic() + 30
        while not (workers := _children(node.pid)):
            assert time.monotonic() < deadline, "the node started no admission worker"
            time.sleep(0.05)
        # At once: the SIGINT lands while the worker still imports, before its initializer
        # ignores SIGINT (it was born with SIGINT blocked: parallel.spawning).
        os.killpg(node.pid, signal.SIGINT)
        try:
            output, _ = node.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # say where it hung: its threads' stacks and output
            tree = {pid: _state(pid) for pid in [node.pid, *_children(node.pid)]}
            os.kill(node.pid, signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack
            time.sleep(1)
            os.killpg(node.pid, signal.SIGKILL)
            output, _ = node.communicate(timeout=30)
            pytest.fail(
                f"the node did not stop on SIGINT in 30 s; processes {tree}\n{output[-4000:]}"
            )
    finally:
        if node.poll() is None:
            node.kill()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-2000:]
    assert node.returncode in (0, -signal.SIGINT, 130), (node.returncode, output[-2000:])
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") and _state(pid) != "Z" for pid in workers):
        assert time.monotonic() < deadline, "the worker outlived its node"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
