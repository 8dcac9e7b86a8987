"""NodeConfig: read once at startup from `<home>/config.toml` and `PERPCHAIN_*` variables.

Stdlib only; imports nothing from node. Precedence, lowest first: built-in defaults, the TOML
file, environment variables, explicit overrides (CLI flags). Every problem found is reported at
once in one `ConfigError`, each line naming the source, the setting, the value and the rule:

    config.toml: [rpc] max_batch = 0: must be between 1 and 10000
    PERPCHAIN_BLOCK_INTERVAL_MS='fast': not an integer

TOML layout (every key optional; `home` comes from --home or PERPCHAIN_HOME, never the file):

    block_interval_ms = 250          # producer cadence
    block_max_txs = 5000             # txs the producer puts in one block (the chain's limit
                                     # is 20,000; the rest waits for the next block)
    invariant_scan_blocks = 1        # the invariant scans over every position and account
                                     # every N blocks (1 = every block); the per-market checks,
                                     # the funding index among them, run on every block
    auto_restore = false             # restore the latest pre-maintenance checkpoint on a bad root
    follow_url = "http://host:9545"  # follow this node instead of producing (optional; `follow`
                                     # and PERPCHAIN_FOLLOW are accepted too)
    [rpc]     listen = "127.0.0.1:9545", max_body_bytes, max_batch, max_json_depth,
              deadline_ms, max_connections, max_subscriptions, max_connections_per_client,
              max_requests_per_s_per_client, ws_send_queue_bytes, idle_timeout_ms
    [admin]   enabled = false, listen = "127.0.0.1:9546", token_file = "admin.token",
              allow_remote = false (a non-loopback admin listen is refused without it: plain
              HTTP carries the bearer token; with it, a warning is logged at every start)
    [metrics] enabled = true, listen = "127.0.0.1:9560"
    [mempool] max_txs, max_per_account, max_tx_bytes, check_workers = 1 (processes that check
              tx_submit batches' signatures; 0 = on the event loop), journal = true (accepted
              txs appended to <home>/mempool.journal and re-admitted at restart),
              journal_sync_ms = 100 (fsync at most this long after an append; 0 = before every
              answer), journal_max_bytes (node.chain.journal)
    [testing] fault_injection = false (the drill's admin_injectFault: registered only when
              true, and refused unless the genesis chain id is a devnet/test chain; also
              PERPCHAIN_FAULT_INJECTION=1)
    [log]     level = "info", format = "kv" | "json"
    [explorer] enabled = true (the read-only pages on the public listener, docs/EXPLORER.md),
              peers = "" (comma-separated RPC URLs of followers whose height and root it shows)

Environment: `PERPCHAIN_<KEY>` for top-level keys, `PERPCHAIN_<SECTION>_<KEY>` for the rest,
e.g. PERPCHAIN_RPC_LISTEN=0.0.0.0:9545, PERPCHAIN_ADMIN_ENABLED=true. The prefix is reserved:
an unknown PERPCHAIN_* name is an error (a typo must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import os
import pathlib
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

ENV_PREFIX: Final = "PERPCHAIN_"
CONFIG_FILE_NAME: Final = "config.toml"
# PERPCHAIN_* variables that are not settings: the home and key seeds (node.app.load_key).
NOT_SETTINGS: Final = frozenset(
    ENV_PREFIX + name for name in ("HOME", "PRODUCER_KEY", "OPERATOR_KEY")
)
# Chains on which the test-only fault injection may be switched on: a chain id with a
# `devnet`, `localnet` or `test` component (perpchain-devnet-1, perpchain-test); never
# `testnet` (shared with others) nor any other chain.
TEST_CHAIN_ID: Final = re.compile(r"(?:^|[-_.])(?:devnet|localnet|test)(?:[-_.0-9]|$)")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: Final = ("kv", "json")


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True, slots=True)
class ListenAddr:
    """A host (IP literal or name) and a TCP port; port 0 asks the OS for a free one."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @classmethod
    def parse(cls, text: str) -> ListenAddr:
        """`127.0.0.1:9545`, `[::1]:9545`, `localhost:9545`; raises ValueError with the rule."""
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9545")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            ipaddress.IPv6Address(host)  # raises ValueError naming the address
        elif ":" in host:
            raise ValueError("an IPv6 host must be in brackets, e.g. [::1]:9545")
        if not port_text.isascii() or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError("port must be an integer between 0 and 65535")
        if any(ch.isspace() or ch in "/@?#" for ch in host):
            raise ValueError(f"host {host!r} is not a host name or IP address")
        return cls(host, int(port_text))


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcSettings:
    listen: ListenAddr = ListenAddr("127.0.0.1", 9545)
    max_body_bytes: int = 1 << 20  # HTTP body and WebSocket message
    max_batch: int = 100  # requests in one JSON-RPC batch
    max_json_depth: int = 16  # nesting of arrays/objects in one body
    deadline_ms: int = 10_000  # per request
    max_connections: int = 1_000  # open WebSockets + HTTP requests in flight
    max_subscriptions: int = 32  # per WebSocket
    # Per client address (docs/SECURITY.md, "One client cannot starve the others"); loopback
    # addresses get the same limits (behind a proxy on this host, limit per client there).
    max_connections_per_client: int = 64  # TCP connections open at once, checked at accept
    max_requests_per_s_per_client: int = 1_000  # HTTP requests + WebSocket messages; 0 = off
    ws_send_queue_bytes: int = 1 << 20  # per WebSocket: not yet written; past it, dropped
    idle_timeout_ms: int = 5_000  # request headers must be complete, or keep-alive idle, within


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSettings:
    enabled: bool = False
    listen: ListenAddr = ListenAddr("127.0.0.1", 9546)
    token_file: str = "admin.token"  # relative to home unless absolute
    # The admin listener speaks plain HTTP: its bearer token crosses the network in clear.
    # A non-loopback `listen` is refused unless this says the operator put TLS in front.
    allow_remote: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSettings:
    enabled: bool = True
    listen: ListenAddr = ListenAddr("127.0.0.1", 9560)


@dataclass(frozen=True, slots=True, kw_only=True)
class MempoolSettings:
    max_txs: int = 50_000
    max_per_account: int = 256
    max_tx_bytes: int = 4_096
    check_workers: int = 1
    journal: bool = True  # accepted txs journalled in <home>/mempool.journal (node.chain.journal)
    journal_sync_ms: int = 100  # fsync at most this long after an append; 0: before each answer
    journal_max_bytes: int = 256 << 20  # appends refused (2007) past this until compacted


@dataclass(frozen=True, slots=True, kw_only=True)
class TestingSettings:
    """Test-only switches. A production config refuses them (see `fault_injection_refusal`)."""

    fault_injection: bool = False  # registers admin_injectFault (node.ops.faults, the drill)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExplorerSettings:
    enabled: bool = True  # GET pages on the public listener (node.explorer); read-only
    peers: str = ""  # comma-separated RPC URLs (followers) whose height and root it compares


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    level: str = "info"
    format: str = "kv"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    home: pathlib.Path
    block_interval_ms: int = 250
    block_max_txs: int = 5_000
    invariant_scan_blocks: int = 1
    auto_restore: bool = False
    follow_url: str | None = None
    rpc: RpcSettings = field(default_factory=RpcSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    mempool: MempoolSettings = field(default_factory=MempoolSettings)
    log: LogSettings = field(default_factory=LogSettings)
    testing: TestingSettings = field(default_factory=TestingSettings)
    explorer: ExplorerSettings = field(default_factory=ExplorerSettings)

    @property
    def admin_token_path(self) -> pathlib.Path:
        return self.home / self.admin.token_file

    @classmethod
    def load(
        cls,
        home: str | os.PathLike[str] | None = None,
        *,
        config_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> NodeConfig:
        """Build and validate the configuration; raise ConfigError listing every problem.

        `home`: the --home flag (else PERPCHAIN_HOME). `config_file`: defaults to
        `<home>/config.toml`, which may be absent (defaults apply). `env`: defaults to
        os.environ. `overrides`: dotted names to values, e.g. {"rpc.listen": "127.0.0.1:0"}.
        """
        return _Loader(env=os.environ if env is None else env).load(home, config_file, overrides)


# --- settings table -------------------------------------------------------------------------
# One row per setting: dotted name -> (parser from TOML/env value, check of the parsed value).
# Parsers raise ValueError with the rule; checks return a problem text or None.

Check = Callable[[Any], str | None]
_SECTIONS: Final[dict[str, type]] = {
    "rpc": RpcSettings,
    "admin": AdminSettings,
    "metrics": MetricsSettings,
    "mempool": MempoolSettings,
    "log": LogSettings,
    "testing": TestingSettings,
    "explorer": ExplorerSettings,
}


def _between(low: int, high: int) -> Check:
    return lambda value: None if low <= value <= high else f"must be between {low} and {high}"


def _one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def _urls(value: str) -> str | None:
    for url in filter(None, (part.strip() for part in value.split(","))):
        if not url.startswith(("http://", "https://")) or _url(url):
            return f"{url!r} is not an http(s):// URL with a host"
    return None


def _url(value: str | None) -> str | None:
    if value is None:
        return None
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https", "ws", "wss") or not parsed.hostname:
        return "must be an http(s):// or ws(s):// URL with a host"
    return None


_CHECKS: Final[dict[str, Check]] = {
    "block_interval_ms": _between(10, 60_000),
    "block_max_txs": _between(1, 20_000),  # node.core.blocks.MAX_BLOCK_TXS (a test checks)
    "invariant_scan_blocks": _between(1, 1_000_000),
    "follow_url": _url,
    "rpc.max_body_bytes": _between(1_024, 64 << 20),
    "rpc.max_batch": _between(1, 10_000),
    "rpc.max_json_depth": _between(4, 256),
    "rpc.deadline_ms": _between(10, 600_000),
    "rpc.max_connections": _between(1, 100_000),
    "rpc.max_subscriptions": _between(0, 10_000),
    "rpc.max_connections_per_client": _between(1, 100_000),
    "rpc.max_requests_per_s_per_client": _between(0, 1_000_000),
    "rpc.ws_send_queue_bytes": _between(16 << 10, 1 << 30),
    "rpc.idle_timeout_ms": _between(100, 600_000),
    "admin.token_file": lambda value: None if value.strip() else "must not be empty",
    "mempool.max_txs": _between(1, 10_000_000),
    "mempool.max_per_account": _between(1, 1_000_000),
    "mempool.max_tx_bytes": _between(64, 1 << 20),
    "mempool.check_workers": _between(0, 64),
    "mempool.journal_sync_ms": _between(0, 60_000),
    "mempool.journal_max_bytes": _between(1 << 20, 1 << 40),
    "log.level": _one_of(*LOG_LEVELS),
    "log.format": _one_of(*LOG_FORMATS),
    "explorer.peers": _urls,
}


def _parse_int(value: Any, from_env: bool) -> int:
    if from_env and isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.lstrip("-").isdigit() and len(text) <= 19):
            raise ValueError("not an integer")
        return int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, not {type(value).__name__}")
    return value


def _parse_bool(value: Any, from_env: bool) -> bool:
    if from_env and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("must be true or false")
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {type(value).__name__}")
    return value


def _parse_str(value: Any, from_env: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    return value


def _parse_optional_str(value: Any, from_env: bool) -> str | None:
    text = _parse_str(value, from_env).strip()
    return text or None


def _parse_listen(value: Any, from_env: bool) -> ListenAddr:
    if isinstance(value, ListenAddr):
        return value
    return ListenAddr.parse(_parse_str(value, from_env).strip())


_PARSERS: Final[dict[Any, Callable[[Any, bool], Any]]] = {
    "int": _parse_int,
    "bool": _parse_bool,
    "str": _parse_str,
    "str | None": _parse_optional_str,
    "ListenAddr": _parse_listen,
}


def _settings() -> dict[str, Callable[[Any, bool], Any]]:
    """Every dotted setting name with its parser, from the dataclass fields."""
    table: dict[str, Callable[[Any, bool], Any]] = {}
    for f in dataclasses.fields(NodeConfig):
        if f.name in _SECTIONS or f.name == "home":
            continue
        table[f.name] = _PARSERS[f.type]
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            table[f"{section}.{f.name}"] = _PARSERS[f.type]
    return table


SETTINGS: Final = _settings()


def env_name(dotted: str) -> str:
    """`rpc.max_batch` -> `PERPCHAIN_RPC_MAX_BATCH`."""
    return ENV_PREFIX + dotted.replace(".", "_").upper()


ALIASES: Final = {"follow": "follow_url"}  # `follow = URL` reads as follow_url
_ENV_NAMES: Final = (
    {env_name(name): name for name in SETTINGS}
    | {env_name(alias): name for alias, name in ALIASES.items()}
    # The drill's historical switch, now a setting like any other (and refused like it).
    | {ENV_PREFIX + "FAULT_INJECTION": "testing.fault_injection"}
)


def fault_injection_refusal(chain_id: str) -> str | None:
    """Why fault injection may not run on chain `chain_id`, or None on a devnet/test chain."""
    if TEST_CHAIN_ID.search(chain_id):
        return None
    return (
        f"testing.fault_injection = true: refused on chain {chain_id!r}. Fault injection "
        "(admin_injectFault, the incident drill) writes around the writer and skips the "
        "invariant checks; it is allowed only on a devnet or test chain (a chain id with a "
        "'devnet', 'localnet' or 'test' component, e.g. perpchain-devnet-1). Remove it from "
        "config.toml / unset PERPCHAIN_FAULT_INJECTION"
    )


class _Loader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.values: dict[str, Any] = {}

    def set(self, dotted: str, raw: Any, source: str, from_env: bool) -> None:
        try:
            self.values[dotted] = SETTINGS[dotted](raw, from_env)
        except ValueError as error:
            self.problems.append(f"{source}: {error}")

    def load(
        self,
        home: str | os.PathLike[str] | None,
        config_file: str | os.PathLike[str] | None,
        overrides: Mapping[str, Any] | None,
    ) -> NodeConfig:
        home_path = self.resolve_home(home)
        if home_path is not None:
            path = pathlib.Path(config_file) if config_file else home_path / CONFIG_FILE_NAME
            if config_file is not None or path.exists():
                self.read_toml(path)
        self.read_env()
        for dotted, raw in (overrides or {}).items():
            if dotted not in SETTINGS:
                self.problems.append(f"override {dotted!r}: unknown setting{_suggest(dotted)}")
            else:
                self.set(dotted, raw, f"override {dotted}={raw!r}", from_env=False)
        if home_path is None or self.problems:
            raise ConfigError(self.problems)
        config = self.build(home_path)
        self.validate(config)
        if self.problems:
            raise ConfigError(self.problems)
        return config

    def resolve_home(self, home: str | os.PathLike[str] | None) -> pathlib.Path | None:
        text = os.fspath(home) if home is not None else self.env.get(ENV_PREFIX + "HOME", "")
        if not text:
            self.problems.append("home: pass --home DIR or set PERPCHAIN_HOME")
            return None
        path = pathlib.Path(text).expanduser().absolute()
        if path.exists() and not path.is_dir():
            self.problems.append(f"home {path}: exists and is not a directory")
            return None
        return path

    def read_toml(self, path: pathlib.Path) -> None:
        name = path.name
        try:
            with path.open("rb") as file:
                document = tomllib.load(file)
        except FileNotFoundError:
            self.problems.append(f"{path}: no such file")
            return
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            self.problems.append(f"{path}: cannot read: {error}")
            return
        for key, raw in document.items():
            key = ALIASES.get(key, key)
            if key in _SECTIONS:
                if not isinstance(raw, dict):
                    self.problems.append(f"{name}: {key} must be a [{key}] table")
                    continue
                for sub_key, sub_raw in raw.items():
                    dotted = f"{key}.{sub_key}"
                    if dotted not in SETTINGS:
                        self.problems.append(
                            f"{name}: [{key}] {sub_key}: unknown setting{_suggest(dotted)}"
                        )
                    else:
                        self.set(dotted, sub_raw, f"{name}: [{key}] {sub_key} = {sub_raw!r}", False)
            elif key == "home":
                self.problems.append(f"{name}: home is chosen with --home or PERPCHAIN_HOME")
            elif key not in SETTINGS:
                self.problems.append(f"{name}: {key}: unknown setting{_suggest(key)}")
            else:
                self.set(key, raw, f"{name}: {key} = {raw!r}", from_env=False)

    def read_env(self) -> None:
        for name in sorted(self.env):
            if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
                continue
            dotted = _ENV_NAMES.get(name)
            if dotted is None:
                close = difflib.get_close_matches(name, _ENV_NAMES, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.problems.append(f"{name}: unknown setting{hint}")
                continue
            self.set(dotted, self.env[name], f"{name}={self.env[name]!r}", from_env=True)

    def build(self, home: pathlib.Path) -> NodeConfig:
        top = {k: v for k, v in self.values.items() if "." not in k}
        sections: dict[str, Any] = {}
        for section, cls in _SECTIONS.items():
            fields = {
                k.split(".", 1)[1]: v for k, v in self.values.items() if k.startswith(section + ".")
            }
            sections[section] = cls(**fields)
        return NodeConfig(home=home, **top, **sections)

    def validate(self, config: NodeConfig) -> None:
        for dotted, check in _CHECKS.items():
            value = _get(config, dotted)
            problem = check(value)
            if problem:
                self.problems.append(f"{dotted} = {value!r}: {problem}")
        mempool, rpc = config.mempool, config.rpc
        if mempool.max_per_account > mempool.max_txs:
            self.problems.append(
                f"mempool.max_per_account = {mempool.max_per_account}: must be <= "
                f"mempool.max_txs = {mempool.max_txs}"
            )
        # tx_submit carries the tx as hex (2 characters a byte) inside a JSON-RPC envelope.
        if 2 * mempool.max_tx_bytes + 512 > rpc.max_body_bytes:
            self.problems.append(
                f"mempool.max_tx_bytes = {mempool.max_tx_bytes}: a tx_submit of that size "
                f"(hex) does not fit rpc.max_body_bytes = {rpc.max_body_bytes}"
            )
        admin = config.admin
        if admin.enabled and not admin.listen.is_loopback and not admin.allow_remote:
            self.problems.append(
                f"admin.listen = {admin.listen}: not a loopback address; the admin listener "
                "speaks plain HTTP, so its bearer token would cross the network in clear. "
                "Bind it to 127.0.0.1 or [::1], or put a TLS proxy in front and set "
                "admin.allow_remote = true (PERPCHAIN_ADMIN_ALLOW_REMOTE=1)"
            )
        if config.testing.fault_injection:
            self.check_fault_injection(config.home)
        listeners = [("rpc.listen", config.rpc.listen)]
        if config.admin.enabled:
            listeners.append(("admin.listen", config.admin.listen))
        if config.metrics.enabled:
            listeners.append(("metrics.listen", config.metrics.listen))
        seen: dict[tuple[str, int], str] = {}
        for name, addr in listeners:
            key = (addr.host, addr.port)
            if addr.port != 0 and key in seen:
                self.problems.append(f"{name} = {addr}: the same address as {seen[key]}")
            seen.setdefault(key, name)

    def check_fault_injection(self, home: pathlib.Path) -> None:
        """The test-only switch is refused unless the home's genesis is a devnet/test chain."""
        path = home / "genesis.json"
        try:
            chain_id = json.loads(path.read_text())["chain_id"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            self.problems.append(
                f"testing.fault_injection = true: cannot read the chain id from {path} "
                f"({error}); fault injection is allowed only on a devnet or test chain"
            )
            return
        problem = fault_injection_refusal(str(chain_id))
        if problem:
            self.problems.append(problem)


def default_config_toml() -> str:
    """A config.toml listing every setting at its default (for `perpchain init`)."""
    defaults = NodeConfig(home=pathlib.Path("."))
    lines = ["# perpchain node configuration; PERPCHAIN_* variables override these.", ""]
    current = ""
    for dotted in SETTINGS:
        section, _, key = dotted.rpartition(".")
        if section != current:
            lines += ["", f"[{section}]"]
            current = section
        value = _get(defaults, dotted)
        if value is None:
            lines.append(f'# {key} = ""')
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _get(config: NodeConfig, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _suggest(dotted: str) -> str:
    close = difflib.get_close_matches(dotted, SETTINGS, n=1)
    return f" (did you mean {close[0]}?)" if close else ""
