"""Structured logging: one key=value line per event, or one JSON object per line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from node.log import log_event, render_value, setup_logging, short_hex


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield io.StringIO()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_kv_line(stream: io.StringIO) -> None:
    setup_logging("info", "kv", stream)
    logger = logging.getLogger("perpchain.chain")
    root = bytes.fromhex("ab12cd34" + "00" * 28)
    log_event(logger, "block.committed", height=12, txs=40, root=short_hex(root), apply_ms=3)
    log_event(logger, "tx.admitted", level=logging.DEBUG, nonce=1)  # below the level
    line = stream.getvalue().strip()
    assert line.endswith(" INFO block.committed height=12 txs=40 root=ab12cd34 apply_ms=3")
    assert line.count("\n") == 0 and line[:4].isdigit() and "Z INFO" in line


def test_kv_values_are_quoted_when_needed() -> None:
    assert render_value("halted: open interest") == '"halted: open interest"'
    assert render_value('a"b') == '"a\\"b"'
    assert render_value("k=v") == '"k=v"'
    assert render_value("") == '""'
    assert render_value(None) == "null"
    assert render_value(True) == "true"
    assert render_value(b"\x01\xff") == "01ff"
    assert render_value("line\nbreak") == '"line\\nbreak"'


def test_json_lines_with_exception(stream: io.StringIO) -> None:
    setup_logging("debug", "json", stream)
    logger = logging.getLogger("perpchain.rpc")
    try:
        raise KeyError("x")
    except KeyError as exc:
        log_event(
            logger,
            "rpc.internal_error",
            level=logging.ERROR,
            exc_info=exc,
            method="echo",
            event="shadow",
            key=b"\x01",
        )
    record = json.loads(stream.getvalue())
    assert record["event"] == "rpc.internal_error" and record["level"] == "error"
    assert record["method"] == "echo" and record["field_event"] == "shadow"
    assert record["key"] == "01" and "KeyError" in record["exc"]


def test_setup_is_idempotent_and_validates(stream: io.StringIO) -> None:
    setup_logging("info", "kv", stream)
    setup_logging("info", "kv", stream)
    logging.getLogger("perpchain.x").info("plain message")
    assert stream.getvalue().count("plain message") == 1
    with pytest.raises(ValueError, match="log level"):
        setup_logging("loud")
    with pytest.raises(ValueError, match="log format"):
        setup_logging("info", "xml")
