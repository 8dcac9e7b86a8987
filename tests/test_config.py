"""NodeConfig: defaults, TOML, environment overrides, and one clear error listing every problem."""

from __future__ import annotations

import pathlib

import pytest

from node.config import (
    SETTINGS,
    ConfigError,
    ListenAddr,
    NodeConfig,
    default_config_toml,
    env_name,
)


def write(home: pathlib.Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)


def problems(home: pathlib.Path, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        NodeConfig.load(home, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def test_defaults_without_a_config_file(tmp_path: pathlib.Path) -> None:
    config = NodeConfig.load(tmp_path, env={})
    assert config.home == tmp_path
    assert config.rpc.listen == ListenAddr("127.0.0.1", 9545)
    assert config.admin.listen == ListenAddr("127.0.0.1", 9546) and not config.admin.enabled
    assert config.metrics.listen == ListenAddr("127.0.0.1", 9560) and config.metrics.enabled
    assert config.block_interval_ms == 250
    assert config.rpc.max_body_bytes == 1 << 20 and config.rpc.max_batch == 100
    assert config.follow_url is None and config.auto_restore is False
    assert config.admin_token_path == tmp_path / "admin.token"
    assert (config.log.level, config.log.format) == ("info", "kv")


def test_toml_then_env_then_overrides(tmp_path: pathlib.Path) -> None:
    write(
        tmp_path,
        """
block_interval_ms = 500
auto_restore = true
follow_url = "http://10.0.0.1:9545"
[rpc]
listen = "0.0.0.0:8545"
max_batch = 20
[admin]
enabled = true
[mempool]
max_txs = 1000
max_per_account = 10
[log]
format = "json"
""",
    )
    env = {
        "PERPCHAIN_BLOCK_INTERVAL_MS": "100",
        "PERPCHAIN_RPC_LISTEN": "[::1]:9000",
        "PERPCHAIN_ADMIN_ENABLED": "false",
        "PERPCHAIN_LOG_LEVEL": "debug",
        "HOME": "/ignored",
        "PATH": "/usr/bin",  # not ours
    }
    config = NodeConfig.load(tmp_path, env=env, overrides={"rpc.max_batch": 7})
    assert config.block_interval_ms == 100
    assert config.auto_restore is True
    assert config.follow_url == "http://10.0.0.1:9545"
    assert config.rpc.listen == ListenAddr("::1", 9000) and str(config.rpc.listen) == "[::1]:9000"
    assert config.rpc.max_batch == 7
    assert config.admin.enabled is False
    assert (config.mempool.max_txs, config.mempool.max_per_account) == (1000, 10)
    assert (config.log.level, config.log.format) == ("debug", "json")


def test_home_from_env_and_missing_home(tmp_path: pathlib.Path) -> None:
    assert NodeConfig.load(env={"PERPCHAIN_HOME": str(tmp_path)}).home == tmp_path
    with pytest.raises(ConfigError, match="pass --home DIR or set PERPCHAIN_HOME"):
        NodeConfig.load(env={})


def test_every_problem_is_reported_at_once_naming_source_value_and_rule(
    tmp_path: pathlib.Path,
) -> None:
    write(
        tmp_path,
        """
block_interval_ms = 0
home = "/elsewhere"
colour = "red"
[rpc]
max_batch = "10"
max_bach = 5
listen = "localhost"
[log]
level = "loud"
""",
    )
    found = problems(
        tmp_path, env={"PERPCHAIN_MEMPOOL_MAX_TXS": "many", "PERPCHAIN_RPC_MAX_BATCHES": "3"}
    )
    text = "\n".join(found)
    expected = [
        "block_interval_ms = 0: must be between 10 and 60000",
        "config.toml: home is chosen with --home or PERPCHAIN_HOME",
        "config.toml: colour: unknown setting",
        "config.toml: [rpc] max_batch = '10': must be an integer, not str",
        "config.toml: [rpc] max_bach: unknown setting (did you mean rpc.max_batch?)",
        "config.toml: [rpc] listen = 'localhost': must be HOST:PORT",
        "PERPCHAIN_MEMPOOL_MAX_TXS='many': not an integer",
        "PERPCHAIN_RPC_MAX_BATCHES: unknown setting (did you mean PERPCHAIN_RPC_MAX_BATCH?)",
    ]
    # Type errors stop before range checks, so the TOML/env problems are listed first;
    # the range problem (block_interval_ms) shows once those are fixed.
    for line in expected[1:]:
        assert line in text, text
    write(tmp_path, "block_interval_ms = 0\n[log]\nlevel = 'loud'\n")
    text = "\n".join(problems(tmp_path, env={}))
    assert expected[0] in text and "log.level = 'loud': must be one of debug, info" in text


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"PERPCHAIN_RPC_LISTEN": "127.0.0.1:70000"}, "port must be an integer between 0"),
        ({"PERPCHAIN_RPC_LISTEN": "::1:9545"}, "IPv6 host must be in brackets"),
        ({"PERPCHAIN_ADMIN_ENABLED": "maybe"}, "must be true or false"),
        ({"PERPCHAIN_FOLLOW_URL": "ftp://x"}, "must be an http(s):// or ws(s):// URL"),
        (
            {"PERPCHAIN_MEMPOOL_MAX_PER_ACCOUNT": "100", "PERPCHAIN_MEMPOOL_MAX_TXS": "10"},
            "must be <= mempool.max_txs = 10",
        ),
        ({"PERPCHAIN_MEMPOOL_MAX_TX_BYTES": "600000"}, "does not fit rpc.max_body_bytes"),
        (
            {"PERPCHAIN_ADMIN_ENABLED": "1", "PERPCHAIN_ADMIN_LISTEN": "127.0.0.1:9545"},
            "admin.listen = 127.0.0.1:9545: the same address as rpc.listen",
        ),
        ({"PERPCHAIN_LOG_FORMAT": "xml"}, "must be one of kv, json"),
        ({"PERPCHAIN_RPC_DEADLINE_MS": "-5"}, "must be between 10 and 600000"),
    ],
)
def test_invalid_values(tmp_path: pathlib.Path, env: dict[str, str], fragment: str) -> None:
    assert any(fragment in line for line in problems(tmp_path, env=env))


def test_unreadable_toml_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    write(tmp_path, "[rpc\n")
    assert "cannot read" in problems(tmp_path, env={})[0]
    assert "no such file" in problems(tmp_path, env={}, config_file=tmp_path / "nope.toml")[0]


def test_unknown_override_is_an_error(tmp_path: pathlib.Path) -> None:
    assert "unknown setting" in problems(tmp_path, env={}, overrides={"rpc.lisen": "x"})[0]


def test_every_setting_has_an_env_name_and_round_trips(tmp_path: pathlib.Path) -> None:
    assert env_name("rpc.max_batch") == "PERPCHAIN_RPC_MAX_BATCH"
    assert len({env_name(name) for name in SETTINGS}) == len(SETTINGS)  # no two collide
    assert "block_interval_ms" in SETTINGS and "mempool.max_tx_bytes" in SETTINGS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:0", ListenAddr("127.0.0.1", 0)),
        ("[::1]:1", ListenAddr("::1", 1)),
        ("localhost:9545", ListenAddr("localhost", 9545)),
        ("0.0.0.0:9545", None),
    ],
)
def test_listen_addr(text: str, expected: ListenAddr | None) -> None:
    addr = ListenAddr.parse(text)
    assert expected is None or addr == expected
    assert str(addr) == text
    assert addr.is_loopback == (addr.host != "0.0.0.0")


def test_default_config_toml_loads_to_the_defaults(tmp_path: pathlib.Path) -> None:
    write(tmp_path, default_config_toml())
    assert NodeConfig.load(tmp_path, env={}) == NodeConfig(home=tmp_path)


def test_home_that_is_a_file_is_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "file").write_text("")
    assert "is not a directory" in problems(tmp_path / "file", env={})[0]


def test_follow_is_an_alias_of_follow_url(tmp_path: pathlib.Path) -> None:
    (tmp_path / "config.toml").write_text('follow = "http://10.0.0.1:9545"\n')
    assert NodeConfig.load(tmp_path, env={}).follow_url == "http://10.0.0.1:9545"
    config = NodeConfig.load(tmp_path, env={"PERPCHAIN_FOLLOW": "http://10.0.0.2:9545"})
    assert config.follow_url == "http://10.0.0.2:9545"


def test_block_max_txs_is_bounded_by_the_chain_limit(tmp_path: pathlib.Path) -> None:
    from node.core.blocks import MAX_BLOCK_TXS

    assert NodeConfig.load(tmp_path, env={}).block_max_txs == 5_000
    ok = NodeConfig.load(tmp_path, env={"PERPCHAIN_BLOCK_MAX_TXS": str(MAX_BLOCK_TXS)})
    assert ok.block_max_txs == MAX_BLOCK_TXS
    with pytest.raises(ConfigError, match=f"must be between 1 and {MAX_BLOCK_TXS}"):
        NodeConfig.load(tmp_path, env={"PERPCHAIN_BLOCK_MAX_TXS": str(MAX_BLOCK_TXS + 1)})
