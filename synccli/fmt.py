"""How numbers and times read, in one place: plain decimals everywhere (``80``, ``12.5``, never
``8E+1`` or ``1.7e+06``); times to the minute for people, ISO 8601 UTC for machines."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal


def number(value: Decimal | float | int) -> str:
    """A number as a plain decimal without trailing zeros: 80, 12.5, 1714285.7.

    ``Decimal.normalize`` alone turns 80.00 into ``8E+1``; ``:g`` turns 1714285.7 into
    ``1.71429e+06``. Floats are first rounded to 6 decimal places (a computed rate such as
    57142.857142857 reads as 57142.857143)."""
    if isinstance(value, int):  # bool too
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        value = Decimal(repr(round(value, 6)))
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def tenths(value: float) -> str:
    """An estimate to a tenth, half up as people round (1.25 reads 1.3, 6.770292 reads 6.8,
    12.0 reads 12): a figure of ``plan``'s, where more places claim a precision it has not."""
    return number(Decimal(repr(round(value, 6))).quantize(Decimal("0.1"), ROUND_HALF_UP))


def every_days(days: Decimal | float | int) -> str:
    """How often, in days: "every day" for one, else "every 7 days", "every 3.5 days"."""
    return "every day" if days == 1 else f"every {number(days)} days"


def minute(value: datetime) -> str:
    """A time for people: ``2026-12-06 14:55 UTC``."""
    return f"{utc(value):%Y-%m-%d %H:%M} UTC"


def iso(value: datetime) -> str:
    """A time for scripts: ISO 8601 in UTC, ``2026-12-06T14:55:02.123456+00:00``."""
    return utc(value).isoformat()


def utc(value: datetime) -> datetime:
    """Aware UTC (the store keeps naive UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
