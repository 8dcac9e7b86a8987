"""Typed method params: every malformed value becomes -32602 naming the param and the rule.
Imports the stdlib and node.rpc.errors / node.rpc.parsing only.

Integers are taken as canonical decimal strings (`"123"`: no sign but `-`, no leading zeros, no
spaces, ASCII digits only) or as JSON integers within +-(2^53 - 1), the range every JSON
implementation (JavaScript's included) carries exactly. Never a float (`5.0`, `1e3`), a boolean,
or anything outside the param's own range. Answers render integers as decimal strings
(`render_int`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from node.rpc.errors import invalid_params
from node.rpc.parsing import json_type

I64_MIN: Final = -(2**63)
I64_MAX: Final = 2**63 - 1
JSON_SAFE_INT: Final = 2**53 - 1  # the largest integer a JSON number may carry here

# `[0-9]` in a str pattern is ASCII only (`\d` would take "٣" or "²"-like digits).
_DECIMAL: Final = re.compile(r"-?(?:0|[1-9][0-9]{0,39})")
REQUIRED: Final[Any] = object()  # sentinel: a param without a default must be present


def _show(value: str) -> str:
    """A client's string in a message: short, and escaped (ascii) so any code point renders."""
    return ascii(value[:50]) + ("..." if len(value) > 50 else "")


def parse_int(value: Any, *, name: str, min_value: int = 0, max_value: int = I64_MAX) -> int:
    """`"123"` or `123` -> 123, within [min_value, max_value]. Raises -32602 naming `name` and
    the rule for anything else (see the module docstring)."""
    kind = type(value)
    if kind is int:
        if not -JSON_SAFE_INT <= value <= JSON_SAFE_INT:
            raise invalid_params(
                f"{name}: a JSON integer must lie within +-{JSON_SAFE_INT} (2^53 - 1); "
                'send a larger value as a decimal string such as "9007199254740993"'
            )
    elif kind is str:
        if not _DECIMAL.fullmatch(value) or value == "-0":
            raise invalid_params(
                f"{name}={_show(value)} is not a canonical decimal integer string "
                '(ASCII digits, no sign but "-", no leading zeros)'
            )
        value = int(value)
    else:
        raise invalid_params(
            f'{name} must be an integer (a decimal string such as "123", or a JSON integer), '
            f"not {json_type(value)}"
        )
    if not min_value <= value <= max_value:
        raise invalid_params(f"{name}={value} must be between {min_value} and {max_value}")
    return int(value)


def render_int(value: int) -> str:
    """123 -> `"123"`: how integers (amounts in atoms, heights) travel in JSON."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"render_int expects an int, got {type(value).__name__}")
    return str(value)


def check_params(params: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Reject names the method does not take (a typo must not silently mean 'absent')."""
    allowed_set = set(allowed)
    unknown = sorted(name for name in params if name not in allowed_set)
    if unknown:
        raise invalid_params(f"unknown param {_show(unknown[0])}; expected {sorted(allowed_set)}")


def _take(params: Mapping[str, Any], name: str, default: Any) -> tuple[bool, Any]:
    if name in params and params[name] is not None:
        return True, params[name]
    if default is REQUIRED:
        raise invalid_params(f"missing required param {name!r}")
    return False, default


def int_param(
    params: Mapping[str, Any],
    name: str,
    *,
    default: Any = REQUIRED,
    min_value: int = 0,
    max_value: int = I64_MAX,
) -> Any:
    """An integer param (`parse_int`); `default` (any value, e.g. None) when absent or null."""
    present, value = _take(params, name, default)
    if not present:
        return value
    return parse_int(value, name=name, min_value=min_value, max_value=max_value)


def str_param(
    params: Mapping[str, Any],
    name: str,
    *,
    default: Any = REQUIRED,
    max_len: int = 256,
    choices: Iterable[str] | None = None,
) -> Any:
    present, value = _take(params, name, default)
    if not present:
        return value
    if not isinstance(value, str):
        raise invalid_params(f"{name} must be a string, not {json_type(value)}")
    if len(value) > max_len:
        raise invalid_params(f"{name} is {len(value)} characters long, the limit is {max_len}")
    if choices is not None:
        options = list(choices)
        if value not in options:
            raise invalid_params(f"{name}={_show(value)} must be one of {options}")
    return value


def bool_param(params: Mapping[str, Any], name: str, *, default: Any = REQUIRED) -> Any:
    present, value = _take(params, name, default)
    if not present:
        return value
    if not isinstance(value, bool):
        raise invalid_params(f"{name} must be true or false, not {json_type(value)}")
    return value


_HEX: Final = re.compile(r"(?:0x)?((?:[0-9a-fA-F]{2})*)")


def hex_param(
    params: Mapping[str, Any],
    name: str,
    *,
    default: Any = REQUIRED,
    length: int | None = None,
    max_bytes: int = 1 << 20,
) -> Any:
    """Hex string (optional `0x`) -> bytes; `length` pins the byte count (32 for a hash),
    `max_bytes` bounds it."""
    present, value = _take(params, name, default)
    if not present:
        return value
    if not isinstance(value, str):
        raise invalid_params(f"{name} must be a hex string, not {json_type(value)}")
    if len(value) > 2 * max_bytes + 2:
        raise invalid_params(f"{name} is longer than {max_bytes} bytes")
    match = _HEX.fullmatch(value)
    if match is None:
        raise invalid_params(f"{name} must be hex digits in pairs (optionally 0x-prefixed)")
    data = bytes.fromhex(match.group(1))
    if length is not None and len(data) != length:
        raise invalid_params(f"{name} must be {length} bytes, got {len(data)}")
    if len(data) > max_bytes:
        raise invalid_params(f"{name} is {len(data)} bytes, the limit is {max_bytes}")
    return data
