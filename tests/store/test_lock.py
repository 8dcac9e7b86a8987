"""One writer: a LevelDB store held by one process cannot be opened by another; the second
gets a clear StoreLocked promptly (no hang, no damage) and succeeds once the first closes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from node.store import VersionedStore

ROOT = Path(__file__).resolve().parents[2]
OPENER = """
import sys
from node.store import StoreLocked, VersionedStore
try:
    VersionedStore.open(sys.argv[1]).close()
except StoreLocked as error:
    print("locked:", error)
    sys.exit(3)
print("opened")
"""


def _open_in_other_process(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OPENER, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_second_process_gets_store_locked_and_the_first_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = VersionedStore.open(path)
    root = store.commit({b"a": b"1"})
    other = _open_in_other_process(path)
    assert other.returncode == 3, other.stderr
    assert "locked:" in other.stdout and str(path) in other.stdout
    assert store.commit({b"b": b"2"}) != root  # the holder is unaffected
    store.verify()
    store.close()
    after = _open_in_other_process(path)
    assert after.returncode == 0 and after.stdout.strip() == "opened", after.stderr
    with VersionedStore.open(path) as reopened:
        assert reopened.height == 1 and reopened.get(b"b") == b"2"
