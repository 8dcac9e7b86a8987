"""One writer: a LevelDB store held by one process cannot be opened by another process (or by a
second handle in the same one). The second gets a clear StoreLocked at once (no hang, no
damage), the holder keeps committing, and the second opens once the holder has closed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.store import StoreLocked, VersionedStore

ROOT = Path(__file__).resolve().parents[2]
OPENER = """
import sys, time
from node.store import StoreLocked, VersionedStore
start = time.perf_counter()
try:
    VersionedStore.open(sys.argv[1]).close()
except StoreLocked as error:
    print(f"locked after {time.perf_counter() - start:.3f} s:", error)
    sys.exit(3)
print("opened")
"""
HOLDER = """
import sys
from node.store import VersionedStore
store = VersionedStore.open(sys.argv[1])
store.commit({b"holder": b"1"})
print("holding", flush=True)
sys.stdin.readline()
store.commit({b"holder": b"2"})  # still the writer after the others were refused
store.close()
print("closed", flush=True)
"""


def _python(code: str, *args: object, **options: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,  # type: ignore[arg-type]
    )


def _open_in_other_process(path: Path) -> tuple[int, str]:
    child = _python(OPENER, path)
    out, err = child.communicate(timeout=30)  # a hang fails here, not in CI's global timeout
    assert child.returncode in (0, 3), err
    return child.returncode, out


def test_second_process_gets_store_locked_and_the_first_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = VersionedStore.open(path)
    root = store.commit({b"a": b"1"})
    code, out = _open_in_other_process(path)
    assert code == 3 and out.startswith("locked after 0.") and str(path) in out, out
    assert store.commit({b"b": b"2"}) != root  # the holder is unaffected
    store.verify()
    store.close()
    assert _open_in_other_process(path) == (0, "opened\n")
    with VersionedStore.open(path) as reopened:
        assert reopened.height == 1 and reopened.get(b"b") == b"2"
        reopened.verify_history()


def test_store_held_by_another_process_is_refused_here_until_it_closes(tmp_path: Path) -> None:
    path = tmp_path / "db"
    holder = _python(HOLDER, path)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "holding\n", holder.stderr
        for _ in range(3):
            start = time.perf_counter()
            with pytest.raises(StoreLocked, match="in use by another process"):
                VersionedStore.open(path)
            assert time.perf_counter() - start < 1.0
        holder.stdin.write("go on\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "closed\n"
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    with VersionedStore.open(path) as store:
        assert (store.height, store.get(b"holder")) == (1, b"2")
        store.verify_history()


def test_second_handle_in_the_same_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with VersionedStore.open(path) as store:
        store.commit({b"a": b"1"})
        with pytest.raises(StoreLocked):
            VersionedStore.open(path)
        assert store.commit({b"a": b"2"}) == store.root()
        assert store.get(b"a") == b"2"
    with VersionedStore.open(path) as store:
        assert store.height == 1
