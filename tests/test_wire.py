"""The wire helpers every connector shares (synccli.connectors.wire), and the one strictness
rule: absent is None, present but unreadable is an error naming the field, never None or 0."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests

from synccli.connectors.wire import (
    MESSAGE_KEYS,
    body_message,
    decimal,
    decimal_or_none,
    error_message,
    instant,
    instant_or_none,
    line_amounts,
    money_text,
    round_money,
    unit_amounts,
)


@pytest.mark.parametrize("absent", [None, "", "   "])
def test_absent_values_read_as_none(absent: Any) -> None:
    assert decimal(absent, "price") is None
    assert instant(absent, "stamp") is None
    assert decimal_or_none(absent) is None and instant_or_none(absent) is None


@pytest.mark.parametrize(
    "value, expected",
    [
        ("12.50", Decimal("12.50")),
        (" 3 ", Decimal(3)),
        (7, Decimal(7)),
        (1.5, Decimal("1.5")),
        (Decimal("-2.25"), Decimal("-2.25")),
    ],
)
def test_numbers_read_in_every_wire_form(value: Any, expected: Decimal) -> None:
    assert decimal(value, "price") == expected == decimal_or_none(value)


@pytest.mark.parametrize(
    "value", ["twelve dollars", "NaN", "Infinity", True, False, {"amount": 1}, [1], float("nan")]
)
def test_an_unreadable_number_is_an_error_naming_the_field_never_none(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^SalesDetails\.UnitPrice .* is not a number"):
        decimal(value, "SalesDetails.UnitPrice")
    assert decimal_or_none(value) is None


@pytest.mark.parametrize(
    "value, expected",
    [
        ("/Date(1551981476267+0000)/", datetime(2019, 3, 7, 17, 57, 56, 267000, tzinfo=UTC)),
        ("\\/Date(1413766150817)\\/", datetime(2014, 10, 20, 0, 49, 10, 817000, tzinfo=UTC)),
        ("/Date(1413766150817+1300)/", datetime(2014, 10, 20, 0, 49, 10, 817000, tzinfo=UTC)),
        ("2021-03-30T19:38:07+00:00", datetime(2021, 3, 30, 19, 38, 7, tzinfo=UTC)),
        ("2021-03-30T19:38:07+0000", datetime(2021, 3, 30, 19, 38, 7, tzinfo=UTC)),
        ("2021-03-30 19:38:07Z", datetime(2021, 3, 30, 19, 38, 7, tzinfo=UTC)),
        ("2014-10-16T14:51:59.073", datetime(2014, 10, 16, 14, 51, 59, 73000, tzinfo=UTC)),
        ("2014-10-20T13:43:41.4712345Z", datetime(2014, 10, 20, 13, 43, 41, 471234, tzinfo=UTC)),
        ("2020-02-06T12:17:43.202-08:00", datetime(2020, 2, 6, 20, 17, 43, 202000, tzinfo=UTC)),
    ],
)
def test_times_read_in_every_wire_form_as_utc(value: str, expected: datetime) -> None:
    assert instant(value, "stamp") == expected == instant_or_none(value)


@pytest.mark.parametrize("value", ["yesterday", "2021-13-45T00:00:00", 1551981476, {"d": 1}])
def test_an_unreadable_time_is_an_error_naming_the_field_never_none(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^timeStamp .* is not a time"):
        instant(value, "timeStamp")
    assert instant_or_none(value) is None


def test_money_rounds_half_up_to_the_cent_once_per_line() -> None:
    assert round_money(Decimal("1.005")) == Decimal("1.01")
    assert round_money(Decimal("-1.005")) == Decimal("-1.01")
    assert money_text(Decimal("12.5")) == "12.50"
    assert line_amounts(Decimal(3), Decimal("0.335"), Decimal("0.15")) == (
        Decimal("1.01"),
        Decimal("0.15"),
    )
    assert line_amounts(Decimal(1), Decimal("2"), None) == (Decimal("2.00"), Decimal("0.00"))


def _wire(value: Decimal) -> Decimal:
    """A number as a JSON double gives it back (``float`` out, its shortest text in)."""
    return Decimal(str(float(value)))


@pytest.mark.parametrize(
    ("quantity", "price", "rate", "sent"),
    [
        # a fraction of a unit: the line's rounded tax over 0.09 is 65.5556, 2.75 cents off
        # price x rate; price x rate itself rounds to the line's tax, so it is sent as is
        ("0.09", "437.2205", "0.15", ("437.2205", "65.583075")),
        ("12", "2.5", "0.15", ("2.5", "0.375")),
        ("1", "-12.34", "0.125", ("-12.34", "-1.5425")),
        ("0", "9.99", "0.15", ("9.99", "1.4985")),
        # 0.0034 x 10 = 0.034 is 0.03, taxed 0.0045 = 0.00; yet 0.034 x 15% = 0.0051 = 0.01:
        # the unit price becomes the line's 0.03 over the quantity (8.83, taxed 1.3245)
        ("0.0034", "10", "0.15", ("8.83", "1.3245")),
    ],
)
def test_unit_amounts_give_the_lines_amounts_with_tax_at_the_rate(
    quantity: str, price: str, rate: str, sent: tuple[str, str]
) -> None:
    q, p, r = Decimal(quantity), Decimal(price), Decimal(rate)
    unit_price, unit_tax = unit_amounts(q, p, r)
    assert (unit_price, unit_tax) == (Decimal(sent[0]), Decimal(sent[1]))


def test_unit_amounts_hold_for_every_generated_line() -> None:
    """quantity x unit price rounds to the line amount, quantity x unit tax to the line tax
    (both as the doubles the wire carries), and the unit tax is the unit price x rate."""
    rng = random.Random(7)
    rates = [Decimal(r) for r in ("0.15", "0.125", "0.0825", "0.08875", "0.1", "0")]
    changed = 0
    for _ in range(20000):
        places = rng.choice((0, 2, 4))  # returns to 50, sales to 5,000 units
        q = Decimal(rng.randint(-50 * 10**places, 5000 * 10**places)).scaleb(-places)
        places = rng.choice((2, 3, 4))
        p = Decimal(rng.randint(-2000 * 10**places, 5000 * 10**places)).scaleb(-places)
        r = rng.choice(rates)
        line, tax = line_amounts(q, p, r)
        unit_price, unit_tax = unit_amounts(q, p, r)
        assert unit_tax == unit_price * r
        price_sent, tax_sent = _wire(unit_price), _wire(unit_tax)
        assert (price_sent, tax_sent) == (unit_price, unit_tax), (q, p, r)
        assert (round_money(q * price_sent), round_money(q * tax_sent)) == (line, tax), (q, p, r)
        changed += unit_price != p
    assert 0 < changed < 1000  # the order's own price, but for the odd fraction of a unit


def answer(status: int, text: str) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = text.encode()
    return resp


def test_error_messages_come_from_the_first_known_key_or_the_status_line() -> None:
    assert error_message(answer(400, '{"Message": "bad", "error": "x"}'), MESSAGE_KEYS) == "bad"
    assert error_message(answer(400, '{"Description": "' + "d" * 400 + '"}'), MESSAGE_KEYS) == (
        "d" * 300
    )
    assert error_message(answer(502, "<html>\nGateway</html>"), MESSAGE_KEYS) == "HTTP 502 <html>"
    assert error_message(answer(500, ""), MESSAGE_KEYS) == "HTTP 500"
    assert error_message(answer(400, "[1]"), MESSAGE_KEYS) == "HTTP 400"
    own = error_message(
        answer(400, '{"Message": "plain", "Elements": 1}'),
        MESSAGE_KEYS,
        own=lambda body: "own" if "Elements" in body else None,
    )
    assert own == "own"


def test_a_refusals_kept_body_gives_its_message() -> None:
    assert body_message('{"Description": "Order exists"}', "Description") == "Order exists"
    assert body_message("not json", "Description") is None
    assert body_message(None, "message") is None
