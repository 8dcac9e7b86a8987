"""Fixed-point scales, int64 bounds and named roundings. Imports only node.core.errors.

Money is `int`: quote atoms (10^6 per USD), size atoms (10^8 per base unit), ppm (10^6 = 100%).
No `/`, float, round() or Decimal: every division states its rounding.
"""

from __future__ import annotations

from node.core.errors import OutOfRange

QUOTE_SCALE = 10**6  # 1 USD = 1_000_000 quote atoms          suffix _quote
SIZE_SCALE = 10**8  # 1 base unit = 100_000_000 size atoms    suffix _atoms
PPM = 10**6  # rates, fees, margin fractions                  suffix _ppm
I64_MIN, I64_MAX = -(2**63), 2**63 - 1  # every stored integer fits (msgpack's signed range)
U64_MAX = 2**64 - 1
# The largest price anywhere (orders, triggers, oracle): a billion USD per base unit. With every
# size below I64_MAX, a notional (size x price / SIZE_SCALE) stays below 2^113 in Python and is
# range-checked before it is stored.
MAX_PRICE_QUOTE = 10**15


def check_i64(value: int, name: str = "value") -> int:
    """Return `value` if it fits in int64, else raise OutOfRange naming it."""
    if not I64_MIN <= value <= I64_MAX:
        raise OutOfRange(f"{name}={value} does not fit in int64")
    return value


def div_floor(numerator: int, denominator: int) -> int:
    """Division rounding toward minus infinity."""
    if denominator <= 0:
        raise ValueError(f"denominator={denominator} must be > 0")
    return numerator // denominator


def div_ceil(numerator: int, denominator: int) -> int:
    """Division rounding toward plus infinity."""
    if denominator <= 0:
        raise ValueError(f"denominator={denominator} must be > 0")
    return -((-numerator) // denominator)


def div_trunc(numerator: int, denominator: int) -> int:
    """Division rounding toward zero."""
    if denominator <= 0:
        raise ValueError(f"denominator={denominator} must be > 0")
    quotient = abs(numerator) // denominator
    return quotient if numerator >= 0 else -quotient


def mul_ppm(amount: int, ppm: int, *, round_up: bool) -> int:
    """amount * ppm / 1e6 for amount >= 0. There is no default: the caller states the rounding."""
    if amount < 0 or ppm < 0:
        raise ValueError(f"mul_ppm takes amount={amount} >= 0 and ppm={ppm} >= 0")
    product = amount * ppm
    return div_ceil(product, PPM) if round_up else product // PPM


def notional_quote(size_atoms: int, price_quote: int, *, round_up: bool) -> int:
    """|size| x price in quote atoms (price is quote atoms per whole base unit)."""
    product = abs(size_atoms) * price_quote
    return div_ceil(product, SIZE_SCALE) if round_up else product // SIZE_SCALE
