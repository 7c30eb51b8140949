"""Orders in: the documented order schema, its validation, and the insert into the shop tables.

An order is one JSON object (see ``docs/orders.md``)::

    {"number": "WEB-1042", "date": "2026-05-01", "currency": "NZD",
     "customer": {"email": "jane@example.com", "account_number": "ACC-7", "name": "Jane Smith"},
     "lines": [{"sku": "MUG-BLUE", "description": "Blue mug", "quantity": 2, "unit_price": "12.50",
                "tax_code": "OUTPUT2", "tax_rate": "0.15", "account_code": "200"}],
     "total": "28.76"}

Input is one order (a JSON object, pretty-printed or not), a JSON array of orders, or JSON lines
(one order per line). The input is validated as a batch: the first problem is named with its line
and field in one message, every problem is in the error's detail (``-v``), and nothing of the batch
is written unless all of it is valid. Each order gets its invoice job (with its idempotency key) in
the same transaction.

Money: ``unit_price`` is tax-exclusive unless the order says ``prices_include_tax``; the rule for
both modes is :func:`synccli.connectors.wire.line_amounts` (docs/orders.md, "The money rule").
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import IO, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from synccli import mailsafe
from synccli.connectors.wire import line_amounts
from synccli.errors import UsageError
from synccli.store.db import Store
from synccli.store.invoices import insert_jobs, order_keys_without_job
from synccli.store.models import (
    Connection,
    Customer,
    InvoiceJob,
    Order,
    OrderLine,
    OrderPayment,
)
from synccli.store.orders import customer_by_account, customer_by_email, existing_numbers
from synccli.store.sync_state import posted_before
from synccli.sync import refunds
from synccli.sync.refunds import RefundIn

MAX_LINE = 10 * 1024 * 1024  # bytes per input line (and per multi-line document)
MAX_PLACES = 4  # the store keeps 4 decimal places
MAX_AMOUNT = Decimal("1e12")
KEY_MAX = 128  # idempotency keys: Xero accepts up to 128 characters

# ISO 4217 active codes (2025), without XTS (testing) and XXX (no currency).
_ISO_4217_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN
    BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP
    ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK
    JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK
    MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN
    PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB
    TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG
    XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG ZWL
"""
ISO_4217 = frozenset(_ISO_4217_CODES.split())

ORDER_FIELDS = (
    "number",
    "date",
    "currency",
    "customer",
    "lines",
    "total",
    "subtotal",
    "tax_total",
    "prices_include_tax",
    "payments",
)
PAYMENT_FIELDS = ("amount", "date", "method", "reference")
CUSTOMER_FIELDS = ("email", "account_number", "name", "first_name", "last_name")
LINE_FIELDS = (
    "sku",
    "description",
    "quantity",
    "unit_price",
    "tax_code",
    "tax_rate",
    "account_code",
    "kind",
)
# A line is a product (matched by its sku, created at the provider when missing) or one of these:
# a line without a product code, which is never matched to a product nor creates one.
CODELESS_KINDS = ("shipping", "surcharge", "discount", "gift_card", "other")
LINE_KINDS = ("product", *CODELESS_KINDS)
ALIASES = {  # common names for our fields, for the "did you mean" hint
    "qty": "quantity",
    "price": "unit_price",
    "unit_amount": "unit_price",
    "code": "sku",
    "item_code": "sku",
    "tax": "tax_code",
    "tax_type": "tax_code",
    "account": "account_code",
    "order_number": "number",
    "reference": "number",
    "items": "lines",
    "line_items": "lines",
    "amount": "total",
    "grand_total": "total",
    "order_date": "date",
    "account_no": "account_number",
    "tax_inclusive": "prices_include_tax",
    "prices_include_gst": "prices_include_tax",
    "inclusive": "prices_include_tax",
}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SAFE_KEY = re.compile(r"^[A-Za-z0-9._/-]+$")


# --- the money rule ---------------------------------------------------------------------------
# One rule for the shop's orders and for what the connectors send: wire.line_amounts (the line
# total half up to the cent, then its tax on that amount; round2 above is wire.round_money).


def order_total(lines: Iterable[Any], inclusive: bool = False) -> Decimal:
    """The order's total by the money rule: exclusive prices, sum(round2(q*p) +
    round2(round2(q*p)*rate)); inclusive prices (``inclusive``), sum(round2(q*p))."""
    result = Decimal("0.00")
    for ln in lines:
        amount, tax = line_amounts(
            Decimal(ln.quantity),
            Decimal(ln.unit_price),
            Decimal(ln.tax_rate or 0),
            inclusive=inclusive,
        )
        result += amount + tax
    return result


def idempotency_key(connection_name: str, number: str) -> str:
    """The stable key an order is posted under: derived from connection and order number only,
    at most 128 characters, header-safe (a digest stands in for unusual or long numbers)."""
    raw = f"synccli:{connection_name}:{number}"
    if len(raw) <= KEY_MAX and SAFE_KEY.match(number):
        return raw
    digest = hashlib.sha256(f"{connection_name}\x00{number}".encode()).hexdigest()[:40]
    return f"synccli:{connection_name[:60]}:h-{digest}"


def queued_number(connection_name: str, key: str) -> str | None:
    """The order number a job's key was derived from, when the key spells it out (a digest
    does not: None). An order the shop renumbers after a post got no clear answer is looked up
    under this number too."""
    prefix = f"synccli:{connection_name}:"
    number = key.removeprefix(prefix)
    if not key.startswith(prefix) or re.fullmatch(r"h-[0-9a-f]{40}", number):
        return None  # a digest (or a number spelt like one: held, the safe side)
    return number if idempotency_key(connection_name, number) == key else None


# --- the validated records --------------------------------------------------------------------
@dataclass
class CustomerIn:
    name: str
    email: str | None = None
    account_number: str | None = None
    first_name: str | None = None
    last_name: str | None = None


@dataclass
class LineIn:
    sku: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    tax_code: str | None = None
    tax_rate: Decimal = Decimal("0")
    account_code: str | None = None
    kind: str = "product"  # or one of CODELESS_KINDS (sku then empty)
    refund_line: int | None = None  # a refund's line: the refunded order's line number


def codeless(line: Any) -> bool:
    """Whether an order line (``LineIn`` or a stored ``OrderLine``) has no product code."""
    return (line.kind or "product") != "product"


@dataclass
class OrderIn:
    """One validated order and the input line it came from."""

    line: int
    number: str
    date: datetime
    currency: str
    customer: CustomerIn
    lines: list[LineIn]
    total: Decimal
    prices_include_tax: bool = False
    payments: list[PaymentIn] = field(default_factory=list)
    # a refund (sync/refunds.py): its currency, customer, lines and total are the refunded
    # order's, filled in when the batch is written (the order may be in the store)
    refund: RefundIn | None = None

    @property
    def refund_of(self) -> str | None:
        return self.refund.of if self.refund is not None else None


@dataclass
class PaymentIn:
    """A payment the customer made (at checkout)."""

    amount: Decimal
    date: datetime
    method: str
    reference: str | None = None


@dataclass
class AddReport:
    connection: str
    added: int = 0
    queued: int = 0  # invoice jobs created
    numbers: list[str] = field(default_factory=list)
    customers_created: int = 0
    dry_run: bool = False  # checked and counted as for real, then nothing written


class _RollBack(Exception):
    """Ends a dry run's transaction without committing it."""


class OrderInputError(UsageError):
    """Bad order input: the message names the first problem, ``problems`` lists all of them."""

    def __init__(self, problems: list[str]) -> None:
        # Input may hold lone surrogates (\ud800 escapes): keep every message printable.
        problems = [p.encode("utf-8", "backslashreplace").decode("utf-8") for p in problems]
        first = problems[0]
        more = len(problems) - 1
        message = (
            first
            if not more
            else f"{first} (and {more} more problem{'s' * (more > 1)}; -v lists them)"
        )
        super().__init__(message, detail="\n".join(problems) if more else None)
        self.problems = problems


# --- reading ----------------------------------------------------------------------------------
def _read_lines(source: bytes | str | IO[bytes]) -> list[bytes]:
    """The input's lines as bytes (line endings removed), refusing any line over 10 MB without
    reading further."""
    if isinstance(source, str):
        stream: IO[bytes] = io.BytesIO(source.encode("utf-8", "surrogateescape"))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        stream = io.BytesIO(bytes(source))
    else:
        stream = source
    lines: list[bytes] = []
    while True:
        chunk = stream.readline(MAX_LINE + 3)
        if not chunk:
            return lines
        content = chunk.rstrip(b"\r\n")
        if len(content) > MAX_LINE:
            raise OrderInputError(
                [f"line {len(lines) + 1}: longer than 10 MB (the limit for one order)"]
            )
        lines.append(content)


def _decode(raw: bytes, number: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OrderInputError(
            [f"line {number}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"]
        ) from None
    if number == 1:
        text = text.removeprefix("\ufeff")
    return text


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _json_problem(exc: ValueError, line: int) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"line {line}: invalid JSON: {exc.msg} (column {exc.colno})"
    return f"line {line}: invalid JSON: {exc}"


def parse_orders(source: bytes | str | IO[bytes]) -> list[OrderIn]:
    """Read and validate a batch; raise :class:`OrderInputError` naming every problem."""
    raw_lines = _read_lines(source)
    texts = [_decode(raw, i + 1) for i, raw in enumerate(raw_lines)]
    numbered = [(i + 1, t) for i, t in enumerate(texts) if t.strip()]
    if not numbered:
        raise OrderInputError(["no orders in the input (expected a JSON object or JSON lines)"])
    items: list[tuple[int, Any]] = []
    problems: list[str] = []
    first_no, first_text = numbered[0]
    try:
        _loads(first_text)
        single_line_values = True
    except ValueError:
        single_line_values = False
    if single_line_values:  # JSON lines (or one order on one line)
        for no, text in numbered:
            try:
                items.append((no, _loads(text)))
            except ValueError as exc:
                problems.append(_json_problem(exc, no))
        if len(items) == 1 and isinstance(items[0][1], list):  # an array on one line
            items = [(first_no, v) for v in items[0][1]]
    else:  # one pretty-printed document
        document = "\n".join(texts)
        if len(document.encode("utf-8", "surrogateescape")) > MAX_LINE:
            raise OrderInputError([f"line {first_no}: the document is longer than 10 MB"])
        try:
            value = _loads(document)
        except json.JSONDecodeError as exc:
            raise OrderInputError(
                [f"line {exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})"]
            ) from None
        except ValueError as exc:
            raise OrderInputError([_json_problem(exc, first_no)]) from None
        items = [(first_no, v) for v in value] if isinstance(value, list) else [(first_no, value)]
    orders: list[OrderIn] = []
    seen: dict[str, int] = {}
    for no, value in items:
        v = _Validator(no)
        order = v.order(value)
        problems.extend(v.problems)
        if order is None:
            continue
        if order.number in seen:
            problems.append(
                f"line {no}: order number {order.number!r} appears twice in the input "
                f"(first on line {seen[order.number]})"
            )
            continue
        seen[order.number] = no
        orders.append(order)
    if problems:
        raise OrderInputError(sorted(problems, key=_line_of))
    if not orders:
        raise OrderInputError(["no orders in the input (expected a JSON object or JSON lines)"])
    return orders


def _line_of(problem: str) -> int:
    match = re.match(r"line (\d+):", problem)
    return int(match.group(1)) if match else 0


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, Decimal)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class _Validator:
    """Validates one order value; collects problems as ``line N: <field> <problem>``."""

    def __init__(self, line: int) -> None:
        self.line = line
        self.problems: list[str] = []

    def fail(self, path: str, problem: str) -> None:
        self.problems.append(f"line {self.line}: {path} {problem}")

    def unknown(
        self, obj: dict[str, Any], allowed: tuple[str, ...], prefix: str, what: str
    ) -> None:
        for key in obj:
            if key not in allowed:
                alias = ALIASES.get(str(key).lower())
                hint = (
                    [alias]
                    if alias in allowed
                    else difflib.get_close_matches(str(key), allowed, n=1)
                )
                suffix = f" (did you mean {hint[0]}?)" if hint else ""
                self.fail(f"{prefix}{key}", f"is not a field of {what}{suffix}")

    def string(
        self, obj: dict[str, Any], key: str, path: str, *, required: bool, max_len: int
    ) -> str | None:
        value = obj.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.fail(path, "is required")
            return None
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {_type_name(value)}")
            return None
        # Checked before str.strip(), which would drop a trailing U+2028 or U+001C silently:
        # only ASCII white space around the value is trimmed without a word.
        bad = None if key == "description" else mailsafe.first_unsafe(value.strip(" \t\r\n"))
        value = value.strip()
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(path, "contains an invalid character (a lone surrogate such as \\ud800)")
            return None
        if len(value) > max_len:
            self.fail(path, f"is longer than {max_len} characters")
            return None
        if bad:
            # An order number reaches email subjects; U+2028 and the like break a header.
            self.fail(path, f"contains control characters or line breaks ({bad})")
            return None
        return value

    def number(
        self,
        obj: dict[str, Any],
        key: str,
        path: str,
        *,
        required: bool,
        default: Decimal | None = None,
        minimum: Decimal | None = None,
        maximum: Decimal | None = None,
        places: int = MAX_PLACES,
    ) -> Decimal | None:
        value = obj.get(key)
        if value is None:
            if required:
                self.fail(path, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
            self.fail(path, f"must be a number, not {_type_name(value)}")
            return None
        try:
            number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
        except InvalidOperation:
            self.fail(path, f"must be a number, got {value!r}")
            return None
        if not number.is_finite():
            self.fail(path, f"must be a finite number, got {value!r}")
            return None
        if minimum is not None and number < minimum:
            self.fail(
                path, "must not be negative" if minimum == 0 else f"must be at least {minimum}"
            )
            return None
        if maximum is not None and number > maximum:
            self.fail(path, f"must be at most {maximum}")
            return None
        if abs(number) >= MAX_AMOUNT:
            self.fail(path, "is too large")
            return None
        exponent = number.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > places:
            self.fail(path, f"has more than {places} decimal places")
            return None
        return number

    def when(self, obj: dict[str, Any], key: str, path: str | None = None) -> datetime | None:
        value = obj.get(key)
        path = path or key
        if value is None or value == "":
            self.fail(path, "is required")
            return None
        if not isinstance(value, str):
            self.fail(
                path, f"must be a date string (YYYY-MM-DD or ISO 8601), not {_type_name(value)}"
            )
            return None
        text = value.strip()
        try:
            if len(text) == 10:
                return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            self.fail(path, f"is not a date (YYYY-MM-DD or ISO 8601): {value!r}")
            return None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)

    def order(self, value: Any) -> OrderIn | None:
        if not isinstance(value, dict):
            self.problems.append(
                f"line {self.line}: expected a JSON object (an order), got {_type_name(value)}"
            )
            return None
        if "refund_of" in value:
            return self.refund(value)
        self.unknown(value, ORDER_FIELDS, "", "an order")
        number = self.string(value, "number", "number", required=True, max_len=100)
        when = self.when(value, "date")
        currency = self.currency(value)
        customer = self.customer(value.get("customer"))
        lines = self.lines(value.get("lines"))
        total = self.number(value, "total", "total", required=True, places=2)
        subtotal = self.number(value, "subtotal", "subtotal", required=False, places=2)
        tax_total = self.number(value, "tax_total", "tax_total", required=False, places=2)
        inclusive = self.flag(value, "prices_include_tax")
        payments = self.payments(value.get("payments"))
        if self.problems:
            return None
        assert number and when and currency and customer and lines is not None and total is not None
        self.totals(lines, total, subtotal, tax_total, inclusive)
        paid = sum((p.amount for p in payments), Decimal("0.00"))
        if paid > total:
            self.fail("payments", f"add up to {paid}, more than the order's total {total}")
        if self.problems:
            return None
        return OrderIn(
            self.line, number, when, currency, customer, lines, total, inclusive, payments
        )

    def refund(self, value: dict[str, Any]) -> OrderIn | None:
        """A refund: its own fields now, the rest from its order when the batch is written."""
        number = self.string(value, "number", "number", required=True, max_len=100)
        when = self.when(value, "date")
        refund = refunds.read(self, value)
        if self.problems or refund is None:
            return None
        assert number and when
        return OrderIn(self.line, number, when, "", CustomerIn(""), [], Decimal(0), refund=refund)

    def payments(self, value: Any) -> list[PaymentIn]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail("payments", f"must be an array, not {_type_name(value)}")
            return []
        result = []
        for i, raw in enumerate(value):
            p = f"payments[{i}]"
            if not isinstance(raw, dict):
                self.fail(p, f"must be an object, not {_type_name(raw)}")
                continue
            self.unknown(raw, PAYMENT_FIELDS, f"{p}.", "a payment")
            amount = self.number(raw, "amount", f"{p}.amount", required=True, places=2)
            if amount is not None and amount <= 0:
                self.fail(f"{p}.amount", "must be more than 0")
                amount = None
            when = self.when(raw, "date", f"{p}.date")
            method = self.string(raw, "method", f"{p}.method", required=True, max_len=50)
            reference = self.string(raw, "reference", f"{p}.reference", required=False, max_len=255)
            if amount is not None and when is not None and method:
                result.append(PaymentIn(amount, when, method, reference))
        return result

    def flag(self, obj: dict[str, Any], key: str) -> bool:
        """A JSON boolean; absent or null is false. A string such as "true" is refused: it is
        what a CSV export writes, and "false" would read as true if taken for truthy."""
        value = obj.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {_type_name(value)}")
            return False
        return value

    def currency(self, obj: dict[str, Any]) -> str | None:
        value = self.string(obj, "currency", "currency", required=True, max_len=10)
        if value is None:
            return None
        code = value.upper()
        if code not in ISO_4217:
            self.fail("currency", f"{value!r} is not an ISO 4217 currency code")
            return None
        return code

    def customer(self, value: Any) -> CustomerIn | None:
        if value is None:
            self.fail("customer", "is required")
            return None
        if not isinstance(value, dict):
            self.fail("customer", f"must be an object, not {_type_name(value)}")
            return None
        self.unknown(value, CUSTOMER_FIELDS, "customer.", "the customer")
        email = self.string(value, "email", "customer.email", required=False, max_len=255)
        if email and not EMAIL.match(email):
            self.fail("customer.email", f"is not an email address: {email!r}")
        account = self.string(
            value, "account_number", "customer.account_number", required=False, max_len=100
        )
        name = self.string(value, "name", "customer.name", required=True, max_len=255)
        first = self.string(value, "first_name", "customer.first_name", required=False, max_len=255)
        last = self.string(value, "last_name", "customer.last_name", required=False, max_len=255)
        if not (value.get("email") or value.get("account_number")):
            self.fail("customer.email", "or customer.account_number is required")
        if name is None:
            return None
        return CustomerIn(name, email.lower() if email else None, account, first, last)

    def lines(self, value: Any) -> list[LineIn] | None:
        if value is None:
            self.fail("lines", "is required")
            return None
        if not isinstance(value, list):
            self.fail("lines", f"must be an array, not {_type_name(value)}")
            return None
        if not value:
            self.fail("lines", "must have at least one line")
            return None
        result: list[LineIn] = []
        for i, raw in enumerate(value):
            p = f"lines[{i}]"
            if not isinstance(raw, dict):
                self.fail(p, f"must be an object, not {_type_name(raw)}")
                continue
            self.unknown(raw, LINE_FIELDS, f"{p}.", "an order line")
            kind = self.kind(raw, p)
            if kind == "product":
                sku = self.string(raw, "sku", f"{p}.sku", required=True, max_len=100)
            elif raw.get("sku") is not None:
                # a shipping line with a sku would be matched to a product, or create one
                self.fail(f"{p}.sku", f"must be left out of a {kind} line (it has no product)")
                sku = None
            else:
                sku = ""
            description = self.string(
                raw, "description", f"{p}.description", required=True, max_len=4000
            )
            quantity = self.number(
                raw, "quantity", f"{p}.quantity", required=True, minimum=Decimal(0)
            )
            price = self.number(raw, "unit_price", f"{p}.unit_price", required=True)
            tax_code = self.string(raw, "tax_code", f"{p}.tax_code", required=False, max_len=50)
            rate = self.number(
                raw,
                "tax_rate",
                f"{p}.tax_rate",
                required=False,
                default=Decimal(0),
                minimum=Decimal(0),
                maximum=Decimal(1),
                places=4,
            )
            account = self.string(
                raw, "account_code", f"{p}.account_code", required=False, max_len=50
            )
            if (
                sku is not None
                and kind is not None
                and description
                and quantity is not None
                and price is not None
                and rate is not None
            ):
                result.append(
                    LineIn(sku, description, quantity, price, tax_code, rate, account, kind)
                )
        return result

    def kind(self, raw: dict[str, Any], p: str) -> str | None:
        value = raw.get("kind")
        if value is None:
            return "product"
        if value not in LINE_KINDS:
            self.fail(f"{p}.kind", f"must be one of {', '.join(LINE_KINDS)}, not {value!r}")
            return None
        return str(value)

    def totals(
        self,
        lines: list[LineIn],
        total: Decimal,
        subtotal: Decimal | None,
        tax_total: Decimal | None,
        inclusive: bool = False,
    ) -> None:
        amounts = [
            line_amounts(ln.quantity, ln.unit_price, ln.tax_rate, inclusive=inclusive)
            for ln in lines
        ]
        net = sum((a for a, _ in amounts), Decimal("0.00"))
        tax = sum((t for _, t in amounts), Decimal("0.00"))
        if subtotal is not None and subtotal != net:
            self.fail("subtotal", f"{subtotal} does not match the lines ({net})")
        if tax_total is not None and tax_total != tax:
            self.fail("tax_total", f"{tax_total} does not match the lines ({tax})")
        if total != net + tax:
            rule = (
                "sum of round2(quantity*unit_price), prices including tax"
                if inclusive
                else "sum of round2(quantity*unit_price) + round2(line total*tax_rate)"
            )
            self.fail("total", f"{total} does not match the lines ({net + tax} = {rule})")


# --- writing ----------------------------------------------------------------------------------
def _local_customer(
    s: Session, connection_id: int, c: CustomerIn, now: datetime, cache: dict[str, Customer]
) -> tuple[Customer, bool]:
    """The shop's customer for this order (by email, then account number), created if new."""
    keys = [
        k for k in (c.email and f"e:{c.email}", c.account_number and f"a:{c.account_number}") if k
    ]
    for key in keys:
        if key in cache:
            return cache[key], False
    found = customer_by_email(s, connection_id, c.email) if c.email else None
    if found is None and c.account_number:
        found = customer_by_account(s, connection_id, c.account_number)
    created = found is None
    if found is None:
        found = Customer(
            connection_id=connection_id,
            name=c.name,
            email=c.email,
            account_number=c.account_number,
            first_name=c.first_name,
            last_name=c.last_name,
            created_at=now,
        )
        s.add(found)
        s.flush()
    for key in keys:
        cache[key] = found
    return found, created


def lookup_values(o: OrderIn | Order) -> list[tuple[str, str]]:
    """(field, value) of everything a provider is asked to find by value for this order."""
    if isinstance(o, Order):
        email, account, skus = o.customer_email, o.customer_account, [ln.sku for ln in o.lines]
    else:
        email, account = o.customer.email, o.customer.account_number
        skus = [ln.sku for ln in o.lines]
    values = [("number", o.number), ("customer.email", email)]
    values.append(("customer.account_number", account))
    values += [(f"lines[{i}].sku", sku) for i, sku in enumerate(skus) if sku]
    return [(path, value) for path, value in values if value]


def unsearchable(provider: str, orders: list[OrderIn]) -> list[str]:
    """Values the connection's provider cannot look up exactly (after a lost answer such a look-up
    could miss our own invoice, product or customer, and post or create it twice), each named."""
    from synccli.sync.context import connector_class  # the connectors, only when adding

    connector = connector_class(provider)
    problems = []
    for o in orders:
        for path, value in lookup_values(o):
            why = connector.unmatchable(value)
            if why:
                problems.append(f"line {o.line}: {path} {value!r} {why}")
    return problems


def unsupported(
    provider: str,
    orders: list[OrderIn],
    settings: dict[str, Any] | None = None,
    *,
    connection: str = "NAME",
) -> list[str]:
    """Orders asking for what the connection's provider cannot do (its capabilities'
    ``documents``, and the connection's ``settings`` where a provider needs one for it), one
    problem each, naming what is not supported (and, by ``connection``, the command that
    sets what is missing)."""
    problems = []
    for o in orders:
        paid = sum((p.amount for p in o.payments), Decimal(0)) if o.payments else None
        why = cannot_take(
            provider,
            o.prices_include_tax,
            any(codeless(ln) for ln in o.lines),
            settings or {},
            paid,
            o.total,
            connection=connection,
            refund=o.refund is not None,
            refund_amount=o.refund is not None and any(r.amount for r in o.refund.lines or []),
        )
        if why:
            problems.append(f"line {o.line}: {why}")
    return problems


def cannot_take(
    provider: str,
    inclusive: bool,
    has_codeless: bool,
    settings: dict[str, Any],
    paid: Decimal | None = None,
    total: Decimal | None = None,
    *,
    connection: str = "NAME",
    refund: bool = False,
    refund_amount: bool = False,
) -> str:
    """Why the provider (with this connection's settings) cannot take an order asking for
    tax-inclusive prices, lines without a product code or payments (``paid``: their sum, None
    when the order has none), or a refund (``refund``), or ""."""
    from synccli.sync.context import connector_class  # the connectors, only when adding

    documents = connector_class(provider).capabilities.documents
    missing = documents.lacks(
        tax_inclusive=inclusive,
        codeless=has_codeless,
        payments=paid is not None,
        refund=refund,
        refund_amount=refund_amount,
    )
    if missing:
        return f"{provider} cannot take {' or '.join(missing)} (README: the provider table)"
    if paid is not None and documents.payments == "in_sale" and paid != total:
        # a completed sale must balance (R-Series sales tutorial), and it is rung up complete
        return (
            f"payments add up to {paid}, not the order's total {total}: {provider} rings the "
            "sale up paid in full"
        )
    if (
        paid is not None
        and documents.payments == "applied"
        and not str(settings.get("payment_account_code") or "").strip()
    ):
        return (
            f"{provider} applies payments into the account named by the connection's "
            f"payment_account_code: set it first (synccli connections set {connection} "
            "payment_account_code=...)"
        )
    needs = []
    if has_codeless and documents.codeless_lines == "charge_item":
        needs.append("lines without a product code")
    if inclusive and documents.tax_inclusive == "converted":
        needs.append("the rounding line of tax-inclusive prices")
    if needs and not settings.get("charge_item"):
        return (
            f"{provider} takes {' and '.join(needs)} only against a service item: set the "
            f"connection's charge_item first (synccli connections set {connection} "
            "charge_item=...)"
        )
    return ""


def add_orders(
    store: Store,
    connection: Connection,
    source: bytes | str | IO[bytes],
    now: datetime | None = None,
    *,
    dry_run: bool = False,
) -> AddReport:
    """Validate a batch of orders and write all of it (orders, lines, customers, invoice jobs)
    in one transaction, or nothing. Raises :class:`OrderInputError` (exit 2) naming the problem.
    ``dry_run``: every check and count made as for real (numbers already taken included), then
    the transaction is rolled back."""
    now = now or datetime.now(UTC)
    orders = parse_orders(source)
    problems = unsupported(
        connection.provider, orders, connection.settings, connection=connection.name
    )
    problems += unsearchable(connection.provider, orders)
    if problems:
        raise OrderInputError(problems)
    report = AddReport(connection.name, dry_run=dry_run)
    try:
        with store.locked() as s:
            taken = existing_numbers(s, connection.id, [o.number for o in orders])
            if taken:
                raise OrderInputError(
                    [
                        f"line {o.line}: order number {o.number!r} already exists for connection "
                        f"{connection.name!r}"
                        for o in orders
                        if o.number in taken
                    ]
                )
            cache: dict[str, Customer] = {}
            seen = posted_before(s, connection.id, [o.number for o in orders])
            known = _resolve_refunds(s, connection, orders)
            for o in orders:
                customer_id = known.get(o.number)
                if customer_id is None:
                    customer, created = _local_customer(s, connection.id, o.customer, now, cache)
                    report.customers_created += created
                    customer_id = customer.id
                order = Order(
                    connection_id=connection.id,
                    number=o.number,
                    date=o.date,
                    currency=o.currency,
                    customer_id=customer_id,
                    customer_email=o.customer.email,
                    customer_account=o.customer.account_number,
                    customer_name=o.customer.name,
                    total=o.total,
                    created_at=now,
                    prices_include_tax=o.prices_include_tax,
                    refund_of=o.refund_of,
                )
                order.lines = [
                    OrderLine(
                        line_no=i + 1,
                        sku=ln.sku,
                        description=ln.description,
                        quantity=ln.quantity,
                        unit_price=ln.unit_price,
                        tax_code=ln.tax_code,
                        tax_rate=ln.tax_rate,
                        account_code=ln.account_code,
                        kind=None if ln.kind == "product" else ln.kind,
                        refund_line=ln.refund_line,
                    )
                    for i, ln in enumerate(o.lines)
                ]
                order.payments = [
                    OrderPayment(
                        payment_no=i + 1,
                        amount=p.amount,
                        date=p.date,
                        method=p.method,
                        reference=p.reference,
                    )
                    for i, p in enumerate(o.payments)
                ]
                s.add(order)
                s.flush()
                state, why = refunds.first_state(s, connection.id, o.refund_of)
                s.add(
                    InvoiceJob(
                        connection_id=connection.id,
                        order_id=order.id,
                        state=state,
                        last_error=why,
                        idempotency_key=idempotency_key(connection.name, o.number),
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                        maybe_sent=o.number in seen,  # posted before its row was deleted
                    )
                )
                report.added += 1
                report.queued += 1
                report.numbers.append(o.number)
            s.flush()
            if dry_run:
                raise _RollBack
    except _RollBack:
        pass
    except IntegrityError:
        # Another `invoices add` inserted one of these numbers between our check and our write.
        raise OrderInputError(
            [
                "an order number of this batch was added by another process meanwhile; "
                "nothing written"
            ]
        ) from None
    return report


def _resolve_refunds(s: Session, connection: Connection, orders: list[OrderIn]) -> dict[str, int]:
    """Give each refund of the batch its order's currency, customer, tax mode, lines and total
    (the order from the store, or from the batch), checking that it gives back no more than
    was sold; raise :class:`OrderInputError` naming every problem. Returns the shop's customer
    id of each refund whose order is in the store (it is that order's customer)."""
    problems: list[str] = []
    batch = {o.number: o for o in orders if o.refund is None}
    originals: dict[str, refunds.Original] = {}
    customers: dict[str, int] = {}
    for o in orders:
        if o.refund is None:
            continue

        def fail(path: str, problem: str, line: int = o.line) -> None:
            problems.append(f"line {line}: {path} {problem}")

        of = o.refund.of
        if of not in originals:
            found = (
                refunds.original_in_batch(batch[of])
                if of in batch
                else refunds.original_in_store(s, connection.id, of)
            )
            if found is None:
                fail(
                    "refund_of",
                    f"{of!r} is no order of connection {connection.name!r} (add the order "
                    "first, or in the same input before the refund)",
                )
                continue
            originals[of] = found
        original = originals[of]
        lines = refunds.resolve(o.refund, original, fail)
        if lines is None:
            continue
        o.currency, o.customer, o.lines = original.currency, original.customer, lines
        o.prices_include_tax = original.inclusive
        o.total = order_total(lines, original.inclusive)
        if o.refund.total is not None and o.refund.total != o.total:
            fail("total", f"{o.refund.total} does not match the refund's lines ({o.total})")
        if original.customer_id is not None:
            customers[o.number] = original.customer_id
        why = cannot_take(
            connection.provider,
            o.prices_include_tax,
            any(codeless(ln) for ln in lines),
            connection.settings or {},
            connection=connection.name,
        )
        if why:
            fail("refund_of", f"{of!r}: {why}")
    if problems:
        raise OrderInputError(problems)
    return customers


def enqueue_missing(store: Store, connection: Connection, now: datetime) -> int:
    """Give every order of the connection that has no invoice job one (rows the shop inserted
    straight into ``orders``/``order_lines``). Safe to run concurrently: the database's unique
    keys decide, and a second runner's insert does nothing."""
    with store.locked() as s:
        missing = order_keys_without_job(s, connection.id)
        if not missing:
            return 0
        # An order inserted again after its row (and job) went, under a number posted before: the
        # shop's "update" may be a delete and an insert. Looked up before it is posted again.
        seen = posted_before(s, connection.id, [number for _, number in missing])
        rows = [
            {
                "connection_id": connection.id,
                "order_id": order_id,
                "state": "pending",
                "idempotency_key": idempotency_key(connection.name, number),
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "maybe_sent": number in seen,
            }
            for order_id, number in missing
        ]
        return insert_jobs(s, rows)
