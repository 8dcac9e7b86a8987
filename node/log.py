"""Structured logging for the shell layers (chain, rpc, ops, cli). Stdlib only; no node imports.

One line per event: `log_event(logger, "block.committed", height=12, txs=40, root=short_hex(r))`
renders as

    2026-11-25T03:35:01.234Z INFO block.committed height=12 txs=40 root=ab12cd34

(`format="kv"`, logfmt-style values: strings with spaces, quotes or `=` are double-quoted and
escaped, bytes become hex, None becomes `null`), or, with `format="json"`, one JSON object per
line: `{"ts": "...", "level": "info", "logger": "...", "event": "block.committed", "height": 12}`.
Records from plain `logger.info("text")` calls (libraries such as hypercorn) render the same way
with the text as the event. Tracebacks follow the line (kv) or go in an `exc` field (json).

Core never logs (STYLE.md section 8); it returns receipts and events and the shell logs them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import IO, Any, Final

LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS: Final = ("kv", "json")

_FIELDS_ATTR: Final = "perp_fields"  # LogRecord attribute that carries log_event's fields
_RESERVED: Final = frozenset({"ts", "level", "logger", "event", "exc"})
_BARE_VALUE: Final = re.compile(r"[^\s\"=\\]+")  # needs no quoting in a key=value line
_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def log_event(
    logger: logging.Logger,
    event: str,
    /,
    *,
    level: int = logging.INFO,
    exc_info: Any = None,
    **fields: Any,
) -> None:
    """Log one structured event: a dotted name (`rpc.internal_error`) and key=value fields.

    Fields are rendered lazily, only when the level is enabled, so DEBUG per-tx events cost a
    level check when off.
    """
    if logger.isEnabledFor(level):
        logger.log(level, event, exc_info=exc_info, extra={_FIELDS_ATTR: fields}, stacklevel=2)


def short_hex(value: bytes, length: int = 8) -> str:
    """The first `length` hex digits of a hash or key, for log lines (`root=ab12cd34`)."""
    return value.hex()[:length]


def render_value(value: Any) -> str:
    """One value as it appears after `key=` in a kv line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    text = value if isinstance(value, str) else str(value)
    if text and _BARE_VALUE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    return str(value)


def _timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class KeyValueFormatter(logging.Formatter):
    """`<ts> <LEVEL> <event> k=v ...`; a traceback, if any, on the following lines."""

    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, Any] = getattr(record, _FIELDS_ATTR, None) or {}
        parts = [_timestamp(record.created), record.levelname, record.getMessage()]
        if not fields and not record.name.startswith("perpchain"):
            parts.append(f"logger={render_value(record.name)}")
        for key, value in fields.items():
            safe_key = key if _KEY.fullmatch(key) else render_value(key)
            parts.append(f"{safe_key}={render_value(value)}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a field named like a reserved key is prefixed with `field_`."""

    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, Any] = getattr(record, _FIELDS_ATTR, None) or {}
        out: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in fields.items():
            out[f"field_{key}" if key in _RESERVED else key] = _json_value(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


class _PerpHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler setup_logging installed, so a second call replaces it."""


def setup_logging(level: str = "info", fmt: str = "kv", stream: IO[str] | None = None) -> None:
    """Route every logger through one handler on the root logger. Idempotent.

    `level` is one of LEVELS, `fmt` one of FORMATS (NodeConfig validates both).
    """
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} must be one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} must be one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _PerpHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _PerpHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(KeyValueFormatter() if fmt == "kv" else JsonFormatter())
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # hypercorn logs "Running on ..." at INFO through its own logger; keep it but quiet access.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
