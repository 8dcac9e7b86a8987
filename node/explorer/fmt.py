"""Jinja2 filters of the explorer: integers in atoms (decimal strings from the RPC, or ints)
shown in units, times in UTC, hashes shortened. Pure; stdlib only. Integer arithmetic only:
a price of 60000000000 quote atoms is "60,000.00", never a float on the way."""

from __future__ import annotations

import datetime
from typing import Any

QUOTE_DECIMALS = 6  # 10^6 quote atoms per USD (DESIGN.md, decision 9)
SIZE_DECIMALS = 8  # 10^8 size atoms per base unit


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isascii() and value.lstrip("-").isdigit():
        return int(value)
    return None


def units(value: Any, decimals: int, keep: int) -> str:
    """An integer of 10^-decimals units with thousands separators and at least `keep`
    decimals (trailing zeros past them dropped); anything else as given."""
    number = _int(value)
    if number is None:
        return "" if value is None else str(value)
    sign = "-" if number < 0 else ""
    whole, frac = divmod(abs(number), 10**decimals)
    digits = str(frac).rjust(decimals, "0").rstrip("0")
    digits = digits.ljust(keep, "0")
    return f"{sign}{whole:,}" + (f".{digits}" if digits else "")


def quote(value: Any) -> str:
    return units(value, QUOTE_DECIMALS, 2)


def size(value: Any) -> str:
    return units(value, SIZE_DECIMALS, 0)


def ppm(value: Any) -> str:
    """ppm as a percentage: 1,000 ppm is 0.1%."""
    number = _int(value)
    if number is None:
        return "" if value is None else str(value)
    return units(number, 4, 0) + "%"


def utc(value: Any) -> str:
    number = _int(value)
    if number is None:
        return "" if value is None else str(value)
    moment = datetime.datetime.fromtimestamp(number / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{number % 1000:03d}"


def short(value: Any, keep: int = 12) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= keep + 1 else text[:keep] + "…"


FILTERS = {"quote": quote, "size": size, "ppm": ppm, "utc": utc, "short": short}
