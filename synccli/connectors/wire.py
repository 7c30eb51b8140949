"""Reading and writing the values every provider's wire format shares: decimals, dates and
times, money rounding, and the message of an error answer. Each exists here once; the
connectors keep only what is their provider's own (which fields, which keys).

The one strictness rule
-----------------------
A value the provider leaves out (``None``, JSON null, ``""`` or blanks) reads as ``None``: the
provider did not say. A value that is there but cannot be read (a word where a number belongs,
``NaN`` or ``Infinity``, a ``true``, a date that is no date, an object) raises ``ValueError``
naming the field: it is never read as ``None`` or ``0``. Inside a page reader that makes the row
a ``Page.errors`` entry (:data:`synccli.connectors.paging.ROW_ERRORS`), so the other rows still
apply and the broken one is reported, never applied as "nothing" (a ``None`` price or stock would
wipe the shop's value, a ``0`` would be a wrong one) and never as a crash. Every field a record
(``RemoteProduct``, ``RemoteStock``, ``RemoteCustomer``) is built from is read this way:
:func:`decimal` and :func:`instant`.

The ``*_or_none`` forms read the same formats and answer ``None`` for an unreadable value. They
are for values no record is built from, where an unreadable value costs nothing: a stamp read
only to move a listing's cursor past a row its reader reported, or to tell whether a listing
shifted while paged; a tax rate kept for reference; the total of an invoice found or posted,
which is compared when known and must never make an invoice we posted look unposted.

Dates and times: ``/Date(ms)/`` (milliseconds since the epoch, UTC; an offset such as ``+1300``
is informational, and Unleashed may escape the slashes) as Xero and Unleashed write them, and
ISO-8601 with ``Z``, ``+00:00``, ``+0000``, a space for ``T``, up to seven fraction digits
(.NET) or no zone at all (taken as UTC). Every time comes back aware, in UTC.

Money: half up to the cent, once per line (the shared money rule).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal, InvalidOperation
from typing import Any

import requests

from synccli.clock import utc

CENT = Decimal("0.01")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS_DATE = re.compile(r"^\\?/Date\((-?\d+)([+-]\d{2,4})?\)\\?/$")


def version_stamp(version: int) -> datetime:
    """A provider's change counter (Lightspeed X-Series' version) as the instant the store keeps
    cursors and record stamps in: microseconds after 1970, so versions order as instants do."""
    return EPOCH + timedelta(microseconds=max(0, int(version)))


def stamp_version(value: datetime | None) -> int:
    """The version a stored cursor or stamp stands for (0: from the start)."""
    if value is None:
        return 0
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return max(0, (aware - EPOCH) // timedelta(microseconds=1))


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# decimals ---------------------------------------------------------------------------------------
def _number(value: Any) -> Decimal | None:
    """The finite number ``value`` holds, or None when it holds none (a bool is no number)."""
    if isinstance(value, bool):
        return None
    if type(value) is Decimal:  # a parser that reads numbers as Decimal made it one already
        number = value
    else:
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            return None
    return number if number.is_finite() else None


def decimal(value: Any, field: str) -> Decimal | None:
    """A number; None when absent; ``ValueError`` naming ``field`` when unreadable."""
    if _absent(value):
        return None
    number = _number(value)
    if number is None:
        raise ValueError(f"{field} {str(value)[:60]!r} is not a number")
    return number


def decimal_or_none(value: Any) -> Decimal | None:
    """A number, or None when absent or unreadable (see the module docstring for where)."""
    return None if _absent(value) else _number(value)


# dates and times --------------------------------------------------------------------------------
def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    m = _MS_DATE.match(text)
    if m:
        return EPOCH + timedelta(milliseconds=int(m.group(1)))
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError:
        return None


def instant(value: Any, field: str) -> datetime | None:
    """A time in UTC; None when absent; ``ValueError`` naming ``field`` when unreadable."""
    if _absent(value):
        return None
    when = _time(value)
    if when is None:
        raise ValueError(f"{field} {str(value)[:60]!r} is not a time")
    return when


def instant_or_none(value: Any) -> datetime | None:
    """A time in UTC, or None when absent or unreadable (see the module docstring for where)."""
    return None if _absent(value) else _time(value)


# money ------------------------------------------------------------------------------------------
def round_money(value: Decimal) -> Decimal:
    """Half up to the cent."""
    return value.quantize(CENT, ROUND_HALF_UP)


def money_text(value: Decimal) -> str:
    """An amount as the wire's text, rounded half up to the cent (``12.50``)."""
    return format(round_money(value), "f")


# error messages ---------------------------------------------------------------------------------
# where an error answer's message is looked for when a provider has no shape of its own
MESSAGE_KEYS = ("Message", "message", "Description", "Detail", "error_description", "error")


def error_message(
    resp: requests.Response,
    keys: tuple[str, ...],
    *,
    own: Callable[[dict[str, Any]], str | None] | None = None,
) -> str:
    """What an error answer says: ``own(body)`` first (a provider's own shape), else the first
    of ``keys`` the JSON body holds (cut to 300 characters); a body that is no JSON gives its
    status and first line; a JSON body saying nothing we know gives its status."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()
        first = text.splitlines()[0][:200] if text else ""
        return f"HTTP {resp.status_code} {first}".strip()
    if isinstance(body, dict):
        said = own(body) if own is not None else None
        if said:
            return said
        for key in keys:
            if body.get(key):
                return str(body[key])[:300]
    return f"HTTP {resp.status_code}"


def body_message(body: str | None, key: str) -> str | None:
    """The message a refusal's kept body (``Rejected.body``) holds under ``key``, or None."""
    if not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict) and data.get(key):
        return str(data[key])
    return None


def line_amounts(
    quantity: Decimal,
    unit_price: Decimal,
    tax_rate: Decimal | None,
    *,
    inclusive: bool = False,
) -> tuple[Decimal, Decimal]:
    """(line amount before tax, line tax) by the one money rule every provider is held to.

    Exclusive prices: the line rounded half up to the cent, then its tax on that rounded amount,
    rounded the same way. Inclusive prices (``inclusive``): the line rounded half up to the cent
    is what the customer pays; its tax is the tax fraction of that amount, ``rate / (1 + rate)``,
    rounded half up to the cent, and the amount before tax is the rest. That is how Xero
    computes a line under ``LineAmountTypes: Inclusive`` (its spec's example: 20.00 inclusive
    at 9.5% has TaxAmount 1.74 and SubTotal 18.26), so the two totals agree to the cent."""
    rate = tax_rate or Decimal(0)
    line = round_money(quantity * unit_price)
    if inclusive:
        tax = round_money(line * rate / (1 + rate))
        return line - tax, tax
    return line, round_money(line * rate)


def unit_amounts(
    quantity: Decimal, unit_price: Decimal, tax_rate: Decimal | None
) -> tuple[Decimal, Decimal]:
    """(unit price, unit tax) for a wire whose line carries both per unit and whose provider
    works out each line as ``round2(quantity x unit)`` (Lightspeed X-Series): quantity x each
    rounds to :func:`line_amounts`' figure, and the unit tax is exactly unit price x rate,
    the form of every documented example, so no check of tax against rate can refuse it.

    Spreading the line's rounded tax over the quantity instead is off by up to half a cent
    over the quantity: 2.75 cents a unit on 0.09 of a unit. The order's unit price is kept
    unless its tax at the rate, times the quantity, rounds off the line's (rounding twice,
    once for the line and once for its tax, can differ from rounding once): then the unit
    price is the rounded line over the quantity, at the fewest decimals that hold, rounded
    away from zero so the tax never falls back across a half cent. Each value is checked as
    the double a JSON number is read into."""
    rate = tax_rate or Decimal(0)
    line, tax = line_amounts(quantity, unit_price, rate)
    candidates = [unit_price] + [
        (line / quantity).quantize(Decimal(1).scaleb(-places), ROUND_UP)
        for places in range(2, 13)
        if quantity
    ]
    for price in candidates:
        sent = (price, price * rate)
        if all(Decimal(str(float(v))) == v for v in sent) and (
            round_money(quantity * sent[0]),
            round_money(quantity * sent[1]),
        ) == (line, tax):
            return sent
    # none holds only past a double's 15 digits (units by the hundred thousand): sent as the
    # order has it, the provider's answer says what is off
    return unit_price, unit_price * rate


def whole_number(value: Any) -> int | None:
    """A JSON integer (not a boolean), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def named_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The rows not deleted (``deleted_at`` unset), each as its id and name."""
    return [
        {"id": str(r.get("id")), "name": str(r.get("name") or r.get("display_name") or "")}
        for r in rows
        if not r.get("deleted_at")
    ]
