"""The operator's commands end to end on a stopped node's home: verify finds the damage and
prints the restore command, rollback --dry-run / apply, verify passes again, the report."""

from __future__ import annotations

import pathlib

import pytest

from node.cli.main import main
from node.ops import faults
from node.store import VersionedStore
from tests.e2e.chain import extend_chain, make_chain


def test_verify_rollback_verify_report(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(faults.ENV, "1")
    home = tmp_path / "home"
    make_chain(home, 12, block_ms=20_000, oracle=True)
    assert main(["verify", "--home", str(home)]) == 0
    assert "VALID: every state root from 0 to 12 verifies" in capsys.readouterr().out
    assert main(["forks", "--home", str(home)]) == 0
    with VersionedStore.open(home / "data") as store:
        store.checkpoint("pre-maintenance-12")
        faults.zero_funding_indices(store)
    out = capsys.readouterr()
    assert main(["verify", "--home", str(home)]) == 3
    out = capsys.readouterr().out
    assert "stored 0, replayed" in out and "perpchain rollback --home" in out and "--repair" in out
    extend_chain(
        home, 3, block_ms=20_000, oracle=True, seed=2, verify_on_open=False, invariants=False
    )
    assert main(["verify", "--home", str(home), "--from-checkpoint", "pre-maintenance-12"]) == 3
    out = capsys.readouterr().out
    assert "INVALID: invalid state root at height 13" in out
    assert f"perpchain rollback --home {home} --to-checkpoint pre-maintenance-12" in out
    assert (
        main(
            ["rollback", "--home", str(home), "--to-checkpoint", "pre-maintenance-12", "--dry-run"]
        )
        == 0
    )
    assert "would undo" in capsys.readouterr().out
    assert main(["rollback", "--home", str(home), "--to-checkpoint", "pre-maintenance-12"]) == 0
    out = capsys.readouterr().out
    assert "rolled back 15 -> 12 (fork 1" in out and "report compensation --fork 1" in out
    assert main(["verify", "--home", str(home)]) == 0
    capsys.readouterr()
    assert main(["report", "compensation", "--home", str(home), "--fork", "1"]) == 0
    assert main(["verify", "--home", str(home), "--from-checkpoint", "nope"]) == 1
    assert "no checkpoint named 'nope'" in capsys.readouterr().err
    assert main(["rollback", "--home", str(home), "--resume"]) == 0
    assert "no rollback is waiting" in capsys.readouterr().out


def test_repair_restores_rows_written_around_the_writer_without_losing_blocks(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(faults.ENV, "1")
    home = tmp_path / "home"
    make_chain(home, 12, block_ms=20_000, oracle=True)
    with VersionedStore.open(home / "data") as store:
        faults.zero_funding_indices(store)
    assert main(["verify", "--home", str(home)]) == 3
    assert main(["rollback", "--home", str(home), "--repair"]) == 0
    assert "restored 1 flat rows from the history" in capsys.readouterr().out
    assert main(["verify", "--home", str(home)]) == 0
    with VersionedStore.open(home / "data") as store:
        assert store.height == 12
