"""A CometBFT v0.38 engine for perpchain validators, outside any one network: the pinned binary
(built by scripts/cometbft on first use), loopback port layout, config.toml patching, the
genesis's validator entries, and child processes in their own process groups. Imports
nothing from node but the standard library; node/testnet.py and node/ops/consensus.py use it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMETBFT_SCRIPT = ROOT / "scripts" / "cometbft"
NO_GO_EXIT = 3  # scripts/cometbft: no `go` on PATH


class CometBFTUnavailable(RuntimeError):
    """CometBFT is not built and cannot be (no Go toolchain): the message says what to do."""


class TestnetError(RuntimeError):
    """The testnet cannot start or a validator misbehaved; the message says which and why."""

    __test__ = False  # not a pytest test class


def cometbft_binary(*, build: bool = True) -> pathlib.Path:
    """The pinned CometBFT binary, built by scripts/cometbft when missing (about 2 minutes once).

    Raises CometBFTUnavailable when it is not built and Go is missing (or build=False)."""
    binary = ROOT / ".cometbft" / "bin" / "cometbft"
    if not build:
        if binary.exists():
            return binary
        raise CometBFTUnavailable(f"{binary} is not built; run scripts/cometbft")
    done = subprocess.run(
        [str(COMETBFT_SCRIPT)], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False
    )
    if done.returncode == NO_GO_EXIT:
        raise CometBFTUnavailable(
            "CometBFT is not built and there is no `go` on PATH to build it: install Go >= 1.22 "
            "and run scripts/cometbft"
        )
    if done.returncode != 0:
        raise CometBFTUnavailable(f"scripts/cometbft failed with exit code {done.returncode}")
    return pathlib.Path(done.stdout.strip())


# --- ports and homes ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ports:
    """Loopback ports of validator i: CometBFT at base + 10 i (+0 P2P, +1 RPC, +2 ABCI), the
    perpchain JSON-RPC at rpc_base + 100 i and its metrics at rpc_base + 15 + 100 i."""

    base: int = 26656
    rpc_base: int = 9545

    def p2p(self, i: int) -> int:
        return self.base + 10 * i

    def cometbft_rpc(self, i: int) -> int:
        return self.base + 1 + 10 * i

    def abci(self, i: int) -> int:
        return self.base + 2 + 10 * i

    def rpc(self, i: int) -> int:
        return self.rpc_base + 100 * i

    def metrics(self, i: int) -> int:
        return self.rpc_base + 15 + 100 * i


def ports_free(ports: Ports, validators: int) -> bool:
    """Every port the network would listen on can be bound on loopback now."""
    wanted = []
    for i in range(validators):
        wanted += [
            ports.p2p(i),
            ports.cometbft_rpc(i),
            ports.abci(i),
            ports.rpc(i),
            ports.metrics(i),
        ]
    for port in wanted:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def ports_span(validators: int) -> int:
    """How many consecutive ports from Ports.base a network of `validators` uses."""
    return max(100 * validators - 35, 10 * validators - 8) + 1


def find_ports(
    validators: int, start: int, *, within: tuple[int, int] | None = None, step: int = 50
) -> Ports:
    """Ports for `validators` validators that are free now: CometBFT's at base .. base + 10 n,
    the JSON-RPC at base + 50 + 100 i (+15 metrics). The first free base from `start` up, in
    steps of `step`; with `within` = (low, high) every port stays in [low, high) and the search
    wraps around to low. Tests give each xdist worker its own range below the kernel's
    ephemeral ports (32768), so neither two workers nor the ephemeral ports other tests bind
    collide with them."""
    span = ports_span(validators)
    low, high = within or (start, start + 40 * step + span)
    bases = [*range(start, high - span + 1, step), *range(low, min(start, high - span + 1), step)]
    for base in bases:
        ports = Ports(base=base, rpc_base=base + 50)
        if ports_free(ports, validators):
            return ports
    raise TestnetError(f"no free ports for {validators} validators in [{low}, {high})")


def set_toml(text: str, section: str, key: str, value: str) -> str:
    """Replace `key = ...` inside [section] ("" = the top level) of a CometBFT config.toml with
    `key = value` (value already TOML-encoded). The key must exist: CometBFT writes every key."""
    lines = text.split("\n")
    current = ""
    for n, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1].strip()
            continue
        if current == section and re.match(rf"{re.escape(key)}\s*=", stripped):
            lines[n] = f"{key} = {value}"
            return "\n".join(lines)
    raise TestnetError(f"config.toml has no key {key!r} in [{section}]")


def _toml_string(value: str) -> str:
    return json.dumps(value)


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Consensus timeouts (ms). Fast defaults for a loopback network: a block every ~0.5 s, and a
    round with a missing proposer costs ~1 s."""

    propose_ms: int = 1000
    prevote_ms: int = 200
    precommit_ms: int = 200
    commit_ms: int = 400


def patch_config(
    text: str,
    *,
    i: int,
    ports: Ports,
    peers: list[str],
    timeouts: Timeouts,
    proxy_app: str,
) -> str:
    """Validator i's config.toml: loopback ports, its peers, fast timeouts, quiet logs."""
    edits: list[tuple[str, str, str]] = [
        ("", "moniker", _toml_string(f"validator-{i}")),
        ("", "proxy_app", _toml_string(proxy_app)),
        ("", "log_level", _toml_string("*:error,state:info,blocksync:info")),
        ("rpc", "laddr", _toml_string(f"tcp://127.0.0.1:{ports.cometbft_rpc(i)}")),
        ("rpc", "max_body_bytes", str(8 << 20)),
        ("p2p", "laddr", _toml_string(f"tcp://127.0.0.1:{ports.p2p(i)}")),
        ("p2p", "persistent_peers", _toml_string(",".join(peers))),
        ("p2p", "addr_book_strict", "false"),
        ("p2p", "allow_duplicate_ip", "true"),
        ("p2p", "pex", "false"),
        # a validator brought back after a kill redials its peers within a second
        ("p2p", "persistent_peers_max_dial_period", _toml_string("2s")),
        ("mempool", "size", "20000"),
        ("mempool", "max_txs_bytes", str(256 << 20)),
        ("mempool", "cache_size", "100000"),
        ("consensus", "timeout_propose", _toml_string(f"{timeouts.propose_ms}ms")),
        ("consensus", "timeout_propose_delta", _toml_string("200ms")),
        ("consensus", "timeout_prevote", _toml_string(f"{timeouts.prevote_ms}ms")),
        ("consensus", "timeout_prevote_delta", _toml_string("100ms")),
        ("consensus", "timeout_precommit", _toml_string(f"{timeouts.precommit_ms}ms")),
        ("consensus", "timeout_precommit_delta", _toml_string("100ms")),
        ("consensus", "timeout_commit", _toml_string(f"{timeouts.commit_ms}ms")),
        ("consensus", "peer_gossip_sleep_duration", _toml_string("20ms")),
        ("tx_index", "indexer", _toml_string("null")),
    ]
    for section, key, value in edits:
        text = set_toml(text, section, key, value)
    return text


def rfc3339_ms(time_ms: int) -> str:
    """CometBFT's genesis_time format for a ms timestamp (UTC, ms precision)."""
    seconds, ms = divmod(time_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def validator_entries(cometbft_genesis: dict[str, Any]) -> list[dict[str, str]]:
    """Our genesis's `abci.validators` (node.abci.application.expected_validators): each CometBFT
    validator's Ed25519 key (hex) and power (a decimal string, as every integer of our genesis
    JSON)."""
    out = []
    for validator in cometbft_genesis["validators"]:
        key = validator["pub_key"]
        if key["type"] != "tendermint/PubKeyEd25519":
            raise TestnetError(f"validator key type {key['type']} is not Ed25519")
        out.append(
            {"pub_key": base64.b64decode(key["value"]).hex(), "power": str(validator["power"])}
        )
    return out


# --- processes ------------------------------------------------------------------------------


def spawn_group(command: list[str], log: pathlib.Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """A child in its own session (process group), its output appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )


def signal_group(child: subprocess.Popen[Any], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signum)


def stop_group(child: subprocess.Popen[Any] | None, timeout_s: float = 20) -> int | None:
    """SIGTERM the child's process group, wait, SIGKILL the group if it lingers; exit code."""
    if child is None:
        return None
    if child.poll() is None:
        signal_group(child, signal.SIGTERM)
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_group(child, signal.SIGKILL)
            child.wait()
    signal_group(child, signal.SIGKILL)  # anything it left in its group
    return child.returncode


def kill_group(child: subprocess.Popen[Any] | None) -> None:
    """kill -9 of the child's whole process group (a crash, not a stop)."""
    if child is None:
        return
    signal_group(child, signal.SIGKILL)
    child.wait()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
