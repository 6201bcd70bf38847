"""Money: exact decimals, never floats. Amounts charged are USD with 6 decimals (micro-dollars);
costs keep the catalog's full precision until they are charged.

On the wire (SPEC §10) an amount is a decimal string or a JSON number with at most 6 decimals,
in a field whose name ends in ``_usd``; Ringside answers with strings (``"0.000150"``).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from ringside.errors import InvalidRequest

MICRO = Decimal("0.000001")
ZERO = Decimal(0)
# What NUMERIC(18, 6) holds: 12 digits before the point.
_MAX = Decimal("999999999999.999999")


def charge(amount: Decimal) -> Decimal:
    """An exact amount rounded to what is charged: micro-dollars, half up."""
    return amount.quantize(MICRO, rounding=ROUND_HALF_UP)


def format_usd(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount.quantize(MICRO))


def parse_usd(
    value: Any, param: str, *, allow_negative: bool = False, allow_zero: bool = True
) -> Decimal:
    """A wire amount as an exact Decimal. JSON numbers must reach here already as Decimal
    (``read_json(exact=True)``) or int: a float has lost its exactness before we see it."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise InvalidRequest(f"'{param}' must be a decimal string such as \"10.00\".", param=param)
    try:
        amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise InvalidRequest(
            f"'{param}' must be a decimal amount in USD such as \"10.00\".", param=param
        ) from None
    if not amount.is_finite():
        raise InvalidRequest(f"'{param}' must be a finite amount.", param=param)
    # Before quantizing: a huge amount with many decimals would overflow the context.
    if abs(amount) > _MAX:
        raise InvalidRequest(f"'{param}' is too large.", param=param)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6 and amount != amount.quantize(MICRO):
        raise InvalidRequest(f"'{param}' has more than 6 decimals.", param=param)
    if amount < 0 and not allow_negative:
        raise InvalidRequest(f"'{param}' cannot be negative.", param=param)
    if amount == 0 and not allow_zero:
        raise InvalidRequest(f"'{param}' cannot be zero.", param=param)
    return amount.quantize(MICRO)
