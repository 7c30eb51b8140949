"""A local simulator of the Xero Accounting API (Items, Contacts, Invoices), its identity server
and its connections endpoint, all served under one host.

Wire facts follow the Xero provider notes (sections cited as §n).

Modelled:
- OAuth2 (§1): ``GET /identity/connect/authorize`` (auto-consent, 302 to ``redirect_uri`` with
  ``code`` and ``state``), ``POST /connect/token`` with client auth by Basic header or form fields,
  grants ``authorization_code``, ``refresh_token`` (rotation; the previous refresh token stays valid
  for a grace period, 30 min on ``self.clock``; unused refresh tokens die after 60 days; a dead one
  gives 400 ``{"error":"invalid_grant"}``) and ``client_credentials`` (custom connections: bound to
  one tenant, no refresh token, no ``xero-tenant-id`` header needed). ``POST /connect/revocation``.
  Access tokens live ``access_ttl`` seconds (1800) on ``self.clock``.
- ``GET /connections`` and ``DELETE /connections/{id}`` (the connection id, not the tenant id).
- Several tenants in one sandbox (``tenants=N``, :meth:`XeroSandbox.add_tenant`). Every Accounting
  call needs ``xero-tenant-id``; a missing, wrong or disconnected tenant gets 403
  ``AuthenticationUnsuccessful``. A bad token gets 401; an expired one 401 ``TokenExpired`` plus
  ``WWW-Authenticate: Bearer error="invalid_token"`` (§6).
- Limits (§7), per tenant: 60 calls/minute (fixed window on ``self.limit_time()``), 5000/day (fixed
  window on ``self.clock``), 5 in flight, and 10,000/minute per app. ``X-MinLimit-Remaining``,
  ``X-DayLimit-Remaining`` and ``X-AppMinLimit-Remaining`` on every Accounting response; a breach
  answers 429 with ``X-Rate-Limit-Problem`` (``minute``, ``day``, ``appminute``, ``concurrent``) and
  ``Retry-After`` (real seconds for the short windows, clock seconds for the day).
- Items (§3): unpaged ``GET /Items`` (``page`` ignored), ``QuantityOnHand`` on tracked items,
  ``where``, ``order``, ``unitdp``, ``If-Modified-Since``; ``GET /Items/{ItemID|Code}``; ``PUT``
  creates, ``POST`` creates or updates (by ItemID or Code); ``DELETE`` answers 204. Codes are unique
  ("Price List Item with Code 'X' already exists"). The rendered items are cached per item and
  re-rendered only when the item changes, so 50,000 items answer in a fraction of a second.
- Contacts (§4): ``page``/``pageSize`` (default 100, clamped to 1000) with the ``pagination``
  object; unpaged answers drop Addresses/Phones; ``where`` on any field (``==`` on Name,
  EmailAddress, AccountNumber are the optimised ones), ``searchTerm``, ``IDs``, ``includeArchived``,
  ``order``, ``If-Modified-Since``. Active names are unique, with Xero's exact message; account
  numbers are unique.
- Invoices (§5): paged like Contacts; ``IDs``, ``InvoiceNumbers``, ``ContactIDs``, ``Statuses``.
  Validation: unknown ItemCode ("Item code 'X' is not valid"), unknown TaxType ("The TaxType code X
  does not exist or cannot be used for this type of transaction."), unknown AccountCode, unknown
  ContactID, a ContactID that is not a GUID (500 ``UnknownErrorException``, xero-node#285), a
  duplicate ACCREC InvoiceNumber on PUT ("Invoice # must be unique."). Money: LineAmount =
  round2(qty x unit), tax per line = round2(LineAmount x rate), Total = SubTotal + TotalTax
  (ROUND_HALF_UP); unit amounts are rounded to 2 dp unless ``unitdp=4``. Tax types and rates:
  :data:`TAX_RATES`. An AUTHORISED ACCREC lowers the stock of tracked items.
  The known contact hazard is modelled: an invoice whose Contact carries a Name without ContactID
  updates the active contact of that name (or creates one), and ContactID plus other fields
  updates that contact; both are counted as customer updates in ``counters.updates``.
- Writes: plural envelope required (unwrapped body -> 400 ``NoDataProcessedException``, ErrorNumber
  17); ``summarizeErrors=false`` -> 200 with each element's outcome; default -> 400
  ``ValidationException`` (``ErrorNumber``, ``Type``, ``Message``, ``Elements``) listing the bad
  elements while valid siblings are still created. A refused element has the shape Xero gives its
  type (OAS examples, see ``_refused``): Items ``ValidationErrors`` alone with a real-looking
  ItemID; Contacts ``HasValidationErrors`` with the nil ContactID; Invoices ``HasErrors`` and
  ``StatusAttributeString: "ERROR"``. Only accepted invoices carry ``StatusAttributeString: "OK"``.
  ``Idempotency-Key`` (<= 128 chars): the stored response is replayed within
  ``idempotency_window`` seconds (default 360) of ``self.clock``; the same key with another
  method, URL or body -> 400. Replays count against the limits.
- Dates: ``/Date(ms+0000)/`` in responses, ``DateString`` on invoices; request dates accepted as
  ``YYYY-MM-DD``, ISO date-times or ``/Date(ms)/``. ``If-Modified-Since`` accepted as ISO-8601 (no
  zone = UTC) or RFC-1123, truncated to the second; records modified *after* it are returned.
- ``GET /api.xro/2.0/Organisation`` for a cheap authenticated ping.
- Every write is counted with ``record_write``; every invoice element received (accepted or
  rejected, not replays) lands in ``counters.requests``.

Switches for facts the notes mark **unconfirmed**:
- ``stock_bumps_item_timestamp`` (False): whether a stock movement moves Item ``UpdatedDateUTC``.
- ``where_case_sensitive`` (True): string ``==`` (and ``.Contains`` / ``.StartsWith`` /
  ``.EndsWith``) in ``where`` compare ordinally, case included, as issue threads report of Xero:
  an Item ``Code`` "DevD" is not found by "devd" (calcinai/xero-php#416, where Xero's team
  advised ``Code.ToLower()``), and ``ToLower()`` is the documented way round it
  (XeroAPI/xero-ruby#184, freakboy3742/pyxero#172 and #227). False compares case-insensitively
  (the kind behaviour). ``.ToLower()`` / ``.ToUpper()`` on a field are accepted either way,
  alone (``EmailAddress.ToLower()=="a@b.c"``) or before a string method
  (``Name.ToLower().Contains("x")``); on a field that is null they yield null (SQL's LOWER), so
  the comparison is false.
- ``code_ttl`` (300 s): authorisation-code lifetime (sources say 5 min or 30 s).
- ``idempotency_window`` (360 s) and the replay semantics (SEC only).
- ``page_size_max`` (1000): pageSize clamp.
- ``page_rows`` (100): rows a page of Contacts or Invoices holds, whatever ``pageSize`` asks for.
  Pages may hold fewer rows than asked while ``pagination`` says more pages follow: issue 17
  (line 18) reports recorded answers doing so. ``pageSize`` is newer than paging itself
  (Xero-OpenAPI PR #597, mid-2024): pages held 100 rows before it (n8n-io/n8n#2391,
  XeroAPI/Xero-Java#245), and the answer still echoes the (clamped) size asked for, so only
  ``pageCount`` / ``itemCount`` tell a client that more follow. None honours ``pageSize``.
- ``unique_invoice_numbers`` (True): PUT of an ACCREC with an existing number fails.
- The exact messages for an unknown ContactID / AccountCode and for idempotency misuse are not
  documented; the texts used here are ours.

- Accounts and payments (``GET /Accounts``, ``PUT`` and ``GET /Payments``): see
  sandbox/xero_payments.py for what is modelled and its sources.

Not modelled: XML, PDFs, attachments, history, credit notes and the other endpoints;
webhooks; tracked-item stock shortage refusals; ``allowBackorders``; item-default inheritance on
ItemCode-only lines; discounts and tracking categories; Starter-tier limits (pass
``limits={"per_day": 1000}``); granular scopes (scopes are recorded, never enforced); request size
limits; the 503 "Organisation offline" form.
"""

from __future__ import annotations

import base64
import json
import re
import secrets as pysecrets
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from synccli.clock import Clock
from synccli.sandbox.core import (
    Request,
    Response,
    SandboxApp,
    Window,
    ceil_seconds,
    json_body,
)
from synccli.sandbox.data import Customer, Invoice, Product, World
from synccli.sandbox.webhooks import (
    CUSTOMER_FIELDS,
    Delivery,
    Format,
    Outbox,
    Policy,
    Subscription,
    backoff,
    hmac_sha256,
)

API = "/api.xro/2.0"
NIL_ID = "00000000-0000-0000-0000-000000000000"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CENT = Decimal("0.01")
Q4 = Decimal("0.0001")

TAX_RATES: dict[str, Decimal] = {
    "OUTPUT2": Decimal("0.15"),
    "OUTPUT": Decimal("0.125"),
    "NONE": Decimal("0"),
    "EXEMPTOUTPUT": Decimal("0"),
    "ZERORATEDOUTPUT": Decimal("0"),
    "INPUT2": Decimal("0.15"),  # purchases side, for item PurchaseDetails
}
SALES_TAX_TYPES = {k for k in TAX_RATES if not k.startswith("INPUT")}
ACCOUNTS = {
    "200": "Sales",
    "260": "Other Revenue",
    "270": "Interest Income",
    "310": "Cost of Goods Sold",
    "400": "Advertising",
    "630": "Inventory",
}
DEFAULT_LIMITS: dict[str, int | None] = {
    "per_minute": 60,
    "per_day": 5000,
    "concurrency": 5,
    "app_per_minute": 10000,
}
# Limits high enough never to answer 429 (a benchmark's twin sandbox, throughput runs).
NO_LIMITS: dict[str, int | None] = dict.fromkeys(DEFAULT_LIMITS)
DEFAULT_SCOPE = (
    "openid profile email offline_access accounting.settings accounting.contacts "
    "accounting.transactions"
)
GUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
MS_DATE_RE = re.compile(r"^/Date\((-?\d+)([+-]\d{2,4})?\)/$")


# dates -----------------------------------------------------------------------------------------
def xero_date(dt: datetime) -> str:
    """``/Date(1551981476267+0000)/``: milliseconds since the epoch, UTC."""
    ms = (dt.astimezone(UTC) - EPOCH) // timedelta(milliseconds=1)
    return f"/Date({ms}+0000)/"


def xero_day(d: date) -> str:
    """A date-only field: UTC midnight in ``/Date()/`` form."""
    return xero_date(datetime(d.year, d.month, d.day, tzinfo=UTC))


def parse_modified_since(text: str | None) -> datetime | None:
    """``If-Modified-Since`` as ISO-8601 (no zone = UTC) or RFC-1123, truncated to the second."""
    if not text:
        return None
    text = text.strip()
    when: datetime | None = None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(microsecond=0)


def parse_body_date(value: Any) -> date | None:
    """A date sent in a request body: ``YYYY-MM-DD``, an ISO date-time or ``/Date(ms)/``."""
    if not isinstance(value, str) or not value:
        return None
    m = MS_DATE_RE.match(value)
    if m:
        return (EPOCH + timedelta(milliseconds=int(m.group(1)))).date()
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def _ms_of(value: Any) -> Any:
    """Sort/compare key for a rendered value: ``/Date()/`` strings become milliseconds."""
    if isinstance(value, str):
        m = MS_DATE_RE.match(value)
        if m:
            return int(m.group(1))
    return value


def _dec(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _round2(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _num(value: Decimal) -> float | int:
    """A JSON number for a Decimal."""
    return int(value) if value == value.to_integral_value() else float(value)


# the `where` mini-language ---------------------------------------------------------------------
def _unquote(item: str) -> str:
    return item[1:-1] if len(item) >= 2 and item[0] == item[-1] == '"' else item


class WhereError(ValueError):
    pass


# A string literal runs from one double quote to the next: a backslash is an ordinary character
# and nothing escapes a double quote. Xero's ``where`` is a Dynamic LINQ expression; a name holding
# a double quote cannot be searched, whether sent raw or with ``\"`` ("QueryParseException: Syntax
# error", XeroAPI/Xero-Java#347; "No property or field 'Bat' exists", waynerobinson/xeroizer#160).
_WHERE_TOKEN = re.compile(
    r'\s*(?:(?P<str>"[^"]*")|(?P<num>-?\d+(?:\.\d+)?)'
    r"|(?P<op>==|!=|>=|<=|&&|\|\||[<>(),!=])|(?P<word>\.?[A-Za-z_][A-Za-z0-9_.]*))"
)
_METHODS = {"contains", "startswith", "endswith"}
_TRANSFORMS = {"tolower": str.lower, "toupper": str.upper}  # .NET String.ToLower / ToUpper


class _Where:
    """Parses Xero's C#-like filters into a predicate over a rendered record.

    Supports ``==``/``!=``/``<``/``>``/``<=``/``>=``, ``AND``/``&&``, ``OR``/``||``, ``NOT``/``!``,
    parentheses, ``.Contains("x")``/``.StartsWith``/``.EndsWith``, ``true``/``false``/``null``,
    ``Guid("…")`` and ``DateTime(y,m,d[,h,m,s])``; dotted paths such as ``Contact.ContactID``.
    """

    def __init__(self, text: str, kind: str, fields: set[str], case_sensitive: bool) -> None:
        self.kind = kind
        self.fields = {f.lower(): f for f in fields}
        self.case_sensitive = case_sensitive
        self.toks = self._tokenize(text)
        self.i = 0

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        toks: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _WHERE_TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise WhereError(f"Syntax error at position {pos}")
            kind = m.lastgroup or ""
            toks.append((kind, m.group(kind)))
            pos = m.end()
        return toks

    def _peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def _next(self) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise WhereError("Syntax error: unexpected end of expression")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def _expect(self, value: str) -> None:
        if self._next()[1] != value:
            raise WhereError(f"Syntax error: '{value}' expected")

    def parse(self) -> Callable[[dict], bool]:
        pred = self._or()
        if self.i != len(self.toks):
            raise WhereError(f"Syntax error near '{self._peek()}'")
        return pred

    def _or(self) -> Callable[[dict], bool]:
        left = self._and()
        while (self._peek() or "").upper() in ("OR", "||"):
            self._next()
            right = self._and()
            left = (lambda a, b: lambda r: a(r) or b(r))(left, right)
        return left

    def _and(self) -> Callable[[dict], bool]:
        left = self._unary()
        while (self._peek() or "").upper() in ("AND", "&&"):
            self._next()
            right = self._unary()
            left = (lambda a, b: lambda r: a(r) and b(r))(left, right)
        return left

    def _unary(self) -> Callable[[dict], bool]:
        tok = (self._peek() or "").upper()
        if tok in ("NOT", "!"):
            self._next()
            inner = self._unary()
            return lambda r: not inner(r)
        if tok == "(":
            self._next()
            inner = self._or()
            self._expect(")")
            return inner
        return self._comparison()

    def _getter(self, path: list[str]) -> Callable[[dict], Any]:
        head = self.fields.get(path[0].lower())
        if head is None:
            raise WhereError(f"No property or field '{path[0]}' exists in type '{self.kind}'")
        rest = path[1:]

        def get(rec: dict) -> Any:
            value: Any = rec.get(head)
            for part in rest:
                if not isinstance(value, dict):
                    return None
                value = next((v for k, v in value.items() if k.lower() == part.lower()), None)
            return value

        return get

    def _comparison(self) -> Callable[[dict], bool]:
        kind, word = self._next()
        if kind != "word":
            raise WhereError(f"Syntax error near '{word}'")
        path = word.split(".")
        if len(path) > 1 and path[-1].lower() in _TRANSFORMS and self._peek() == "(":
            # Field.ToLower(), then a comparison or a chained string method
            change = _TRANSFORMS[path.pop().lower()]
            self._next()
            self._expect(")")
            raw = self._getter(path)

            def get(r: dict) -> Any:
                value = raw(r)
                return change(value) if isinstance(value, str) else None

            nxt = self._peek() or ""
            if nxt.startswith(".") and nxt[1:].lower() in _METHODS:
                method = self._next()[1][1:].lower()
                self._expect("(")
                arg = self._value()
                self._expect(")")
                return lambda r: self._string_method(get(r), method, arg)
            return self._compared(get)
        if len(path) > 1 and path[-1].lower() in _METHODS and self._peek() == "(":
            method = path.pop().lower()
            self._next()
            arg = self._value()
            self._expect(")")
            field_of = self._getter(path)
            return lambda r: self._string_method(field_of(r), method, arg)
        return self._compared(self._getter(path))

    def _compared(self, get: Callable[[dict], Any]) -> Callable[[dict], bool]:
        op = self._peek()
        if op not in ("==", "!=", "<", ">", "<=", ">=", "="):
            return lambda r: bool(get(r))
        self._next()
        value = self._value()
        return lambda r: self._compare(get(r), "==" if op == "=" else op, value)

    def _value(self) -> Any:
        kind, tok = self._next()
        if kind == "str":
            return tok[1:-1]  # verbatim: no escapes (see _WHERE_TOKEN)
        if kind == "num":
            return Decimal(tok)
        low = tok.lower()
        if low in ("true", "false"):
            return low == "true"
        if low == "null":
            return None
        if low == "guid":
            self._expect("(")
            inner = self._value()
            self._expect(")")
            return inner
        if low == "datetime":
            self._expect("(")
            parts = [int(self._value())]
            while self._peek() == ",":
                self._next()
                parts.append(int(self._value()))
            self._expect(")")
            # the query gives the parts (year to microsecond), which the stubs cannot count
            return datetime(*parts, tzinfo=UTC)  # type: ignore[misc, arg-type]
        raise WhereError(f"Syntax error near '{tok}'")

    def _norm(self, value: Any) -> Any:
        return value if self.case_sensitive or not isinstance(value, str) else value.casefold()

    def _compare(self, actual: Any, op: str, expected: Any) -> bool:
        if isinstance(expected, datetime):
            ms = _ms_of(actual)
            if not isinstance(ms, int):
                return False
            actual, expected = ms, (expected - EPOCH) // timedelta(milliseconds=1)
        elif isinstance(expected, Decimal):
            actual = _dec(actual)
        elif isinstance(expected, str) and isinstance(actual, str):
            actual, expected = self._norm(actual), self._norm(expected)
        if op == "==":
            return actual == expected
        if op == "!=":
            return actual != expected
        if actual is None or expected is None:
            return False
        try:
            return {
                "<": actual < expected,
                ">": actual > expected,
                "<=": actual <= expected,
                ">=": actual >= expected,
            }[op]
        except TypeError:
            return False

    def _string_method(self, actual: Any, method: str, arg: Any) -> bool:
        if not isinstance(actual, str) or not isinstance(arg, str):
            return False
        actual, arg = self._norm(actual), self._norm(arg)
        if method == "contains":
            return arg in actual
        if method == "startswith":
            return actual.startswith(arg)
        return actual.endswith(arg)


def _order_key(order: str | None, default: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """``"UpdatedDateUTC ASC, Name DESC"`` -> [(field, descending)]."""
    if not order:
        return default
    out = []
    for part in order.split(","):
        bits = part.split()
        if bits:
            out.append((bits[0], len(bits) > 1 and bits[1].upper() == "DESC"))
    return out or default


def _sort(records: list[dict], order: list[tuple[str, bool]], tiebreak: str) -> list[dict]:
    records = sorted(records, key=lambda r: str(r.get(tiebreak, "")))
    for name, desc in reversed(order):
        key = next((k for k in (records[0] if records else {}) if k.lower() == name.lower()), name)

        def sort_key(r: dict, key: str = key) -> tuple:
            v = _ms_of(r.get(key))
            if isinstance(v, str):
                v = v.casefold()
            return (v is not None, v if v is not None else 0)

        records.sort(key=sort_key, reverse=desc)
    return records


# state -----------------------------------------------------------------------------------------
@dataclass
class _Client:
    client_id: str
    secret: str
    custom_tenant: str | None = None  # client_credentials connections are bound to one org
    # The redirect URIs registered with the app; None: any (the default app of a sandbox). An
    # authorisation request must name one exactly (RFC 6749 §3.1.2.3; Xero's app settings take
    # a list of redirect URIs and its login page refuses any other with "Invalid redirect_uri").
    redirect_uris: list[str] | None = None


@dataclass
class _Grant:
    """An access token."""

    client_id: str
    tenants: list[str]
    expires_at: datetime
    scope: str
    custom_tenant: str | None = None
    auth_event: str = ""


@dataclass
class _Refresh:
    client_id: str
    tenants: list[str]
    scope: str
    expires_at: datetime
    rotated_at: datetime | None = None  # set once spent; valid for the grace period after
    auth_event: str = ""


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scope: str
    tenants: list[str]
    expires_at: datetime
    used: bool = False


@dataclass
class _Org:
    tenant_id: str
    name: str
    connection_id: str
    created_at: datetime
    connected: bool = True


@dataclass
class _Limits:
    minute: Window
    day: Window


@dataclass
class _Stored:
    """An idempotent request and the response it got."""

    fingerprint: tuple[str, str, str, bytes]
    status: int
    body: Any
    at: datetime


@dataclass
class _TenantExtra:
    """Xero-only fields the neutral model does not carry."""

    item_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    customer_extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    is_customer: set[str] = field(default_factory=set)
    invoice_seq: int = 0
    credit_notes: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> record
    credit_seq: int = 0
    # the chart of accounts and the payments (sandbox/xero_payments.py)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)


# One element of a write: (element, request, world, tenant extras, id in the path) -> (the
# element's answer, its validation errors).
_WriteOne = Callable[
    [dict[str, Any], Request, World, _TenantExtra, str | None], tuple[dict, list[str]]
]


@dataclass
class _InvoiceHead:
    """An invoice element's header fields, as read (and checked) before its lines."""

    kind: Any  # as sent, or the existing invoice's
    status: Any
    amount_types: Any
    number: Any
    issued: date | None  # None when unreadable (an error was recorded)
    due: date | None


# An invoice line as answered, the item it names (if any) and its quantity.
_InvoiceLine = tuple[dict[str, Any], Product | None, Decimal]
AMOUNT_TYPES = ("Exclusive", "Inclusive", "NoTax")


def _head_refusals(
    noun: str,
    el: dict[str, Any],
    kind: Any,
    kinds: tuple[str, ...],
    status: Any,
    statuses: tuple[str, ...],
    taken: Callable[[Any], bool],
    today: date,
    errors: list[str],
) -> tuple[Any, Any, date | None]:
    """The header checks an invoice and a credit note share, each refusal added to ``errors``
    in Xero's order, worded with the document's ``noun`` ("Invoice", "Credit Note"): its
    type, status, LineAmountTypes, number (``taken``: already in use) and date. Answers the
    LineAmountTypes, the number and the date (None when unreadable)."""
    if kind not in kinds:
        errors.append(f"{noun} Type must be specified")
    if status not in statuses:
        errors.append(f"{noun} Status '{status}' is not valid")
    amount_types = el.get("LineAmountTypes") or "Exclusive"
    if amount_types not in AMOUNT_TYPES:
        errors.append(f"LineAmountTypes '{amount_types}' is not valid")
    number = el.get(noun.replace(" ", "") + "Number")
    if number and taken(number):
        errors.append(f"{noun} # must be unique.")
    issued = parse_body_date(el.get("Date")) if el.get("Date") else today
    if issued is None:
        errors.append(f"'{el.get('Date')}' is not a valid date")
    return amount_types, number, issued


def _words(text: str) -> set[str]:
    return set(text.split())


ITEM_FIELDS = _words(
    "ItemID Code Name Description PurchaseDescription UpdatedDateUTC PurchaseDetails "
    "SalesDetails IsTrackedAsInventory InventoryAssetAccountCode TotalCostPool "
    "QuantityOnHand IsSold IsPurchased"
)
CONTACT_FIELDS = _words(
    "ContactID ContactNumber AccountNumber ContactStatus Name FirstName LastName "
    "EmailAddress UpdatedDateUTC IsSupplier IsCustomer Addresses Phones ContactGroups "
    "HasAttachments HasValidationErrors DefaultCurrency"
)
CONTACT_WRITABLE = _words(
    "Name FirstName LastName EmailAddress AccountNumber ContactNumber ContactStatus Addresses "
    "Phones ContactPersons"
)
CREDIT_NOTE_FIELDS = _words(
    "Type CreditNoteID CreditNoteNumber Reference Contact Date Status LineAmountTypes SubTotal "
    "TotalTax Total RemainingCredit CurrencyCode UpdatedDateUTC"
)
INVOICE_FIELDS = _words(
    "Type InvoiceID InvoiceNumber Reference Contact Date DueDate Status LineAmountTypes "
    "SubTotal TotalTax Total AmountDue AmountPaid CurrencyCode UpdatedDateUTC SentToContact "
    "IsDiscounted HasAttachments"
)


# Credit notes and their allocations --------------------------------------------------------------
# Spec: createCreditNotes (PUT /CreditNotes, the plural envelope, summarizeErrors, unitdp,
# Idempotency-Key), getCreditNotes (where, order, page), createCreditNoteAllocation (PUT
# /CreditNotes/{id}/Allocations: Allocation requires Amount, Invoice and Date). An allocation
# cannot be sent inline with a new credit note (xeroizer#196: Xero support). Refusals of an
# allocation, in Xero's words (xeroizer#320, xero-php#251): "The invoice you are trying to
# allocate to has already been paid off" and "Credit Note cannot be allocated as amount is
# greater than amount outstanding" (over the invoice's AmountDue or the note's RemainingCredit).
# The other messages are ours. Credit note numbers are kept unique like invoice numbers (not
# documented either way: the harsher choice).
class _CreditNotes:
    """The credit note endpoints, mixed into :class:`XeroSandbox`."""

    def _get_credit_notes(self: Any, req: Request) -> Response:
        _, _, extra = self._tenant(req)
        records = [dict(r) for r in extra.credit_notes.values()]
        try:
            records = self._filter(req, "CreditNote", CREDIT_NOTE_FIELDS, records)
        except WhereError as err:
            return self._query_error(err)
        records = _sort(
            records, _order_key(req.query.get("order"), [("UpdatedDateUTC", False)]), "CreditNoteID"
        )
        paging = self._paging(req)
        if paging is None:
            return self._list("CreditNotes", records)
        return self._paged("CreditNotes", records, paging)

    def _get_credit_note(self: Any, req: Request, ident: str) -> Response:
        _, _, extra = self._tenant(req)
        rec = extra.credit_notes.get(ident.lower())
        return self._list("CreditNotes", [rec]) if rec else self._not_found()

    def _write_credit_notes(self: Any, req: Request) -> Response:
        return self._write(req, "CreditNotes", self._one_credit_note)

    def _one_credit_note(
        self: Any,
        el: dict[str, Any],
        req: Request,
        world: World,
        extra: _TenantExtra,
        ident: str | None,
    ) -> tuple[dict, list[str]]:
        errors: list[str] = []
        kind = el.get("Type")
        status = el.get("Status") or "DRAFT"
        amount_types, number, issued = _head_refusals(
            "Credit Note",
            el,
            kind,
            ("ACCRECCREDIT", "ACCPAYCREDIT"),
            status,
            ("DRAFT", "SUBMITTED", "AUTHORISED"),
            lambda n: any(c.get("CreditNoteNumber") == n for c in extra.credit_notes.values()),
            self.clock.now().date(),
            errors,
        )
        head = _InvoiceHead(kind, status, amount_types, number, issued, None)
        lines, sub, tax_total = self._lines(
            el, world, head, req, errors, "Credit Note must have at least one line item"
        )
        contact = None
        if not errors:
            contact = self._resolve_contact(world, extra, el.get("Contact") or {}, errors)
        if errors or contact is None or issued is None:
            return {**el, "CreditNoteID": NIL_ID}, errors
        extra.credit_seq += 1
        now, total = self.clock.now(), sub + tax_total
        note_id = self.catalogue.gen.uuid()
        rec = {
            "Type": kind,
            "CreditNoteID": note_id,
            "CreditNoteNumber": number or f"CN-{extra.credit_seq:04d}",
            "Reference": el.get("Reference", ""),
            "Contact": {"ContactID": contact.id, "Name": contact.name},
            "Date": xero_day(issued),
            "DateString": f"{issued.isoformat()}T00:00:00",
            "Status": status,
            "LineAmountTypes": amount_types,
            "LineItems": [out for out, _, _ in lines],
            "SubTotal": _num(sub),
            "TotalTax": _num(tax_total),
            "Total": _num(total),
            "RemainingCredit": _num(total),
            "Allocations": [],
            "CurrencyCode": el.get("CurrencyCode") or "NZD",
            "UpdatedDateUTC": xero_date(now),
            "HasErrors": False,
        }
        extra.credit_notes[note_id] = rec
        if kind == "ACCRECCREDIT" and status == "AUTHORISED":
            for _, item, qty in lines:  # goods given back return to stock
                if item is not None and item.tracked:
                    item.stock += qty
                    item.stock_updated_at = now
        self.record_write("credit_note", note_id, el, True)
        return rec, []

    def _write_allocations(self: Any, req: Request, ident: str) -> Response:
        _, _, extra = self._tenant(req)
        if ident.lower() not in extra.credit_notes:
            return self._not_found()
        return self._write(req, "Allocations", self._one_allocation, ident.lower())

    def _one_allocation(
        self: Any,
        el: dict[str, Any],
        req: Request,
        world: World,
        extra: _TenantExtra,
        ident: str | None,
    ) -> tuple[dict, list[str]]:
        note = extra.credit_notes[str(ident)]
        errors: list[str] = []
        invoice_id = str((el.get("Invoice") or {}).get("InvoiceID") or "")
        inv = self._find_invoice(world, invoice_id) if invoice_id else None
        amount = _dec(el.get("Amount"))
        day = parse_body_date(el.get("Date")) if el.get("Date") else None
        if inv is None:
            errors.append(f"Invoice with InvoiceID {invoice_id or '(none)'} could not be found.")
        if amount is None or amount <= 0:
            errors.append("Amount must be greater than zero")
        if day is None:
            errors.append("Date must be specified")
        if note["Status"] not in ("AUTHORISED",):
            errors.append("Credit Note must be AUTHORISED before it can be allocated")
        if inv is not None and amount is not None and amount > 0:
            due = Decimal(str(inv.body.get("AmountDue", 0)))
            if inv.body["Type"] != "ACCREC" or inv.customer_id != note["Contact"]["ContactID"]:
                errors.append("Credit Note cannot be allocated to an incorrect invoice type")
            elif due <= 0:
                errors.append("The invoice you are trying to allocate to has already been paid off")
            elif amount > due or amount > Decimal(str(note["RemainingCredit"])):
                errors.append(
                    "Credit Note cannot be allocated as amount is greater than amount outstanding"
                )
        if errors or inv is None or amount is None or day is None:
            return {**el}, errors
        now = self.clock.now()
        due = Decimal(str(inv.body["AmountDue"])) - amount
        credited = Decimal(str(inv.body.get("AmountCredited", 0))) + amount
        inv.body = {**inv.body, "AmountDue": _num(due), "AmountCredited": _num(credited)}
        if due == 0:
            inv.body["Status"] = "PAID"
        inv.updated_at = now
        left = Decimal(str(note["RemainingCredit"])) - amount
        allocation = {
            "AllocationID": self.catalogue.gen.uuid(),
            "Amount": _num(amount),
            "Date": xero_day(day),
            "Invoice": {"InvoiceID": inv.id, "InvoiceNumber": inv.number},
        }
        note["Allocations"] = [*note["Allocations"], allocation]
        note["RemainingCredit"] = _num(left)
        note["Status"] = "PAID" if left == 0 else note["Status"]
        note["UpdatedDateUTC"] = xero_date(now)
        self.record_write("allocation", allocation["AllocationID"], el, True)
        return {**allocation, "CreditNote": {"CreditNoteID": note["CreditNoteID"]}}, []


class XeroSandbox(_CreditNotes, SandboxApp):
    """The Xero simulator. See the module docstring for what it models."""

    provider = "xero"

    def __init__(
        self,
        *,
        seed: int = 42,
        products: int = 50,
        customers: int = 30,
        clock: Clock | None = None,
        time_scale: float = 1.0,
        faults: str | None = None,
        limits: dict[str, int | None] | None = None,
        tenants: int = 1,
        access_ttl: int = 1800,
        refresh_grace: int = 1800,
        refresh_ttl_days: int = 60,
        code_ttl: int = 300,
        idempotency_window: int = 360,
        page_size_max: int = 1000,
        page_rows: int | None = 100,
        stock_bumps_item_timestamp: bool = False,
        where_case_sensitive: bool = True,
        unique_invoice_numbers: bool = True,
    ) -> None:
        super().__init__(seed=seed, clock=clock, time_scale=time_scale, faults=faults)
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.access_ttl = access_ttl
        self.refresh_grace = timedelta(seconds=refresh_grace)
        self.refresh_ttl = timedelta(days=refresh_ttl_days)
        self.code_ttl = timedelta(seconds=code_ttl)
        self.idempotency_window = timedelta(seconds=idempotency_window)
        self.page_size_max = page_size_max
        self.page_rows = page_rows
        self.stock_bumps_item_timestamp = stock_bumps_item_timestamp
        self.where_case_sensitive = where_case_sensitive
        self.unique_invoice_numbers = unique_invoice_numbers

        self.orgs: dict[str, _Org] = {}
        self.clients: dict[str, _Client] = {}
        self.grants: dict[str, _Grant] = {}
        self.refresh_tokens: dict[str, _Refresh] = {}
        self.codes: dict[str, _Code] = {}
        self.extra: dict[str, _TenantExtra] = {}
        self._limits: dict[str, _Limits] = {}
        self._app_windows: dict[str, Window] = {}
        self._idem: dict[tuple[str, str], _Stored] = {}
        self._inflight: Counter[str] = Counter()
        self._limit_lock = threading.Lock()
        self._item_cache: dict[tuple[str, bool], tuple[tuple, dict, bytes]] = {}

        self.tenant = ""
        for i in range(tenants):
            tid = self.add_tenant(products=products, customers=customers)
            if i == 0:
                self.tenant = tid
        self.client_id, self.client_secret = self.add_client()
        self._routes()

    # helpers for tests and the demo ------------------------------------------------------------
    def add_tenant(self, name: str | None = None, *, products: int = 0, customers: int = 0) -> str:
        """Add an organisation (tenant) with seeded data; returns its tenant id."""
        with self.lock:
            tid = self.catalogue.gen.uuid()
            world = self.catalogue.tenant(tid)
            self.catalogue.gen.populate(world, products, customers)
            n = len(self.orgs) + 1
            self.orgs[tid] = _Org(
                tid, name or f"Demo Company {n}", self.catalogue.gen.uuid(), self.clock.now()
            )
            self.extra[tid] = _TenantExtra()
            return tid

    def add_client(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        custom_tenant: str | None = None,
        redirect_uris: list[str] | None = None,
    ) -> tuple[str, str]:
        """Register an app. ``custom_tenant`` makes it a custom connection (client_credentials);
        ``redirect_uris`` are the only ones its authorisation requests may name."""
        client_id = client_id or uuid.uuid4().hex.upper()
        client_secret = client_secret or pysecrets.token_urlsafe(36)
        self.clients[client_id] = _Client(client_id, client_secret, custom_tenant, redirect_uris)
        return client_id, client_secret

    def issue_tokens(
        self,
        client_id: str | None = None,
        tenants: list[str] | None = None,
        *,
        ttl: int | None = None,
        scope: str = DEFAULT_SCOPE,
    ) -> dict[str, Any]:
        """Tokens as the authorization-code flow would give them, without the browser."""
        client_id = client_id or self.client_id
        tenants = list(tenants or [self.tenant])
        event = str(uuid.uuid4())
        return self._issue(client_id, tenants, scope, event, ttl=ttl, refresh=True)

    def credentials(
        self, tenant: str | None = None, *, grant: str = "authorization_code"
    ) -> dict[str, Any]:
        """Everything a connection needs: client id/secret, tokens (auth code) and tenant id."""
        tenant = tenant or self.tenant
        if grant == "client_credentials":
            cid, secret = self.add_client(custom_tenant=tenant)
            return {"client_id": cid, "client_secret": secret, "tenant_id": tenant}
        tokens = self.issue_tokens(self.client_id, [tenant])
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "tenant_id": tenant,
            **tokens,
        }

    def expire_access_tokens(self) -> None:
        """Make every access token expired (as if 30 minutes had passed)."""
        past = self.clock.now() - timedelta(seconds=1)
        for g in self.grants.values():
            g.expires_at = past

    def world(self, tenant: str | None = None) -> World:
        return self.catalogue.tenant(tenant or self.tenant)

    # routing -----------------------------------------------------------------------------------
    def _routes(self) -> None:
        gid = r"(?P<ident>[^/]+)"
        self.route("GET", "/identity/connect/authorize", "identity.authorize", self._authorize)
        self.route("POST", "/connect/token", "identity.token", self._token)
        self.route("POST", "/connect/revocation", "identity.revoke", self._revoke)
        self.route("GET", "/connections", "connections", self._connections)
        self.webhooks = install_xero(self)
        self.route("DELETE", f"/connections/{gid}", "connections", self._disconnect)
        self.route("GET", f"{API}/Organisation", "Organisation", self._organisation)
        self.route("GET", f"{API}/Items", "Items", self._get_items)
        self.route("GET", f"{API}/Items/{gid}", "Items", self._get_item)
        self.route("PUT", f"{API}/Items", "Items", self._write_items)
        self.route("POST", f"{API}/Items", "Items", self._write_items)
        self.route("POST", f"{API}/Items/{gid}", "Items", self._write_items)
        self.route("DELETE", f"{API}/Items/{gid}", "Items", self._delete_item)
        self.route("GET", f"{API}/Contacts", "Contacts", self._get_contacts)
        self.route("GET", f"{API}/Contacts/{gid}", "Contacts", self._get_contact)
        self.route("PUT", f"{API}/Contacts", "Contacts", self._write_contacts)
        self.route("POST", f"{API}/Contacts", "Contacts", self._write_contacts)
        self.route("POST", f"{API}/Contacts/{gid}", "Contacts", self._write_contacts)
        self.route("GET", f"{API}/Invoices", "Invoices", self._get_invoices)
        self.route("GET", f"{API}/Invoices/{gid}", "Invoices", self._get_invoice)
        self.route("PUT", f"{API}/Invoices", "Invoices", self._write_invoices)
        self.route("POST", f"{API}/Invoices", "Invoices", self._write_invoices)
        self.route("POST", f"{API}/Invoices/{gid}", "Invoices", self._write_invoices)
        self.route("GET", f"{API}/CreditNotes", "CreditNotes", self._get_credit_notes)
        self.route("GET", f"{API}/CreditNotes/{gid}", "CreditNotes", self._get_credit_note)
        self.route("PUT", f"{API}/CreditNotes", "CreditNotes", self._write_credit_notes)
        self.route(
            "PUT", f"{API}/CreditNotes/{gid}/Allocations", "Allocations", self._write_allocations
        )
        from synccli.sandbox.xero_payments import PaymentRoutes  # it reads this module's helpers

        pay = PaymentRoutes(self)
        self.route("GET", f"{API}/Accounts", "Accounts", pay.get_accounts)
        self.route("GET", f"{API}/Payments", "Payments", pay.get_payments)
        self.route("PUT", f"{API}/Payments", "Payments", pay.write_payments)

    # auth, tenant and limits -------------------------------------------------------------------
    def handle(self, req: Request) -> Response | None:
        key = req.header("xero-tenant-id") or req.header("authorization") or ""
        with self._limit_lock:
            self._inflight[key] += 1
            req.environ["xero.inflight"] = self._inflight[key]
        try:
            return super().handle(req)
        finally:
            with self._limit_lock:
                self._inflight[key] -= 1

    def before(self, req: Request, endpoint: str) -> Response | None:
        if endpoint.startswith(("identity.", "sandbox.")):  # sandbox.: the portal's stand-in
            return None
        auth = req.header("authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        grant = self.grants.get(token)
        now = self.clock.now()
        if grant is None:
            return _problem(
                401,
                "Unauthorized",
                "AuthenticationUnsuccessful",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if now >= grant.expires_at:
            at = grant.expires_at.strftime("%m/%d/%Y %H:%M:%S")
            return _problem(
                401,
                "Unauthorized",
                f"TokenExpired: token expired at {at}",
                {
                    "WWW-Authenticate": 'Bearer error="invalid_token", '
                    f"error_description=\"The token expired at '{at}'\""
                },
            )
        req.environ["xero.grant"] = grant
        if endpoint == "connections":
            return None
        tenant = (req.header("xero-tenant-id") or "").strip().lower()
        if grant.custom_tenant:
            tenant = tenant or grant.custom_tenant
            allowed = tenant == grant.custom_tenant
        else:
            allowed = tenant in grant.tenants
        org = self.orgs.get(tenant)
        if not allowed or org is None or not org.connected:
            return _problem(403, "Forbidden", "AuthenticationUnsuccessful")
        req.environ["xero.tenant"] = tenant
        return self._take_limits(req, tenant, grant.client_id)

    def _take_limits(self, req: Request, tenant: str, client_id: str) -> Response | None:
        t = self.limit_time()
        day_t = self.clock.now().timestamp()
        with self._limit_lock:
            st = self._limits.get(tenant)
            if st is None:
                st = _Limits(
                    Window(self.limits["per_minute"], 60.0), Window(self.limits["per_day"], 86400.0)
                )
                self._limits[tenant] = st
            app = self._app_windows.setdefault(
                client_id, Window(self.limits["app_per_minute"], 60.0)
            )
            problem, wait = None, 0.0
            concurrency = self.limits.get("concurrency")
            if st.day.limit is not None and st.day.remaining(day_t) <= 0:
                problem, wait = "day", st.day.retry_after(day_t)
            elif st.minute.limit is not None and st.minute.remaining(t) <= 0:
                problem, wait = "minute", st.minute.retry_after(t) / self.time_scale
            elif app.limit is not None and app.remaining(t) <= 0:
                problem, wait = "appminute", app.retry_after(t) / self.time_scale
            elif concurrency is not None and req.environ.get("xero.inflight", 0) > concurrency:
                problem, wait = "concurrent", 1.0 / self.time_scale
            else:
                st.day.take(day_t)
                st.minute.take(t)
                app.take(t)
            remaining = {
                "X-MinLimit-Remaining": st.minute.remaining(t) if st.minute.limit else None,
                "X-DayLimit-Remaining": st.day.remaining(day_t) if st.day.limit else None,
                "X-AppMinLimit-Remaining": app.remaining(t) if app.limit else None,
            }
        headers = {k: str(v) for k, v in remaining.items() if v is not None}
        req.environ["xero.remaining"] = headers
        if problem is None:
            return None
        retry = str(int(wait) + 1) if problem == "day" else ceil_seconds(wait)
        return _problem(
            429,
            "Too Many Requests",
            f"Rate limit exceeded ({problem})",
            {**headers, "X-Rate-Limit-Problem": problem, "Retry-After": retry},
        )

    def after(self, req: Request, endpoint: str, resp: Response) -> None:
        resp.headers.update(req.environ.get("xero.remaining", {}))
        resp.headers.setdefault("Xero-Correlation-Id", str(uuid.uuid4()))

    # identity ----------------------------------------------------------------------------------
    def _issue(
        self,
        client_id: str,
        tenants: list[str],
        scope: str,
        event: str,
        *,
        ttl: int | None = None,
        refresh: bool,
        custom_tenant: str | None = None,
    ) -> dict[str, Any]:
        now = self.clock.now()
        ttl = self.access_ttl if ttl is None else ttl
        access = pysecrets.token_urlsafe(48)
        self.grants[access] = _Grant(
            client_id, list(tenants), now + timedelta(seconds=ttl), scope, custom_tenant, event
        )
        out: dict[str, Any] = {
            "access_token": access,
            "expires_in": ttl,
            "token_type": "Bearer",
            "scope": scope,
            "expires_at": now + timedelta(seconds=ttl),
        }
        if refresh:
            rt = pysecrets.token_urlsafe(32)
            self.refresh_tokens[rt] = _Refresh(
                client_id, list(tenants), scope, now + self.refresh_ttl, None, event
            )
            out["refresh_token"] = rt
        return out

    def _client_auth(self, req: Request, form: dict[str, str]) -> _Client | None:
        auth = req.header("authorization") or ""
        cid, secret = form.get("client_id", ""), form.get("client_secret", "")
        if auth[:6].lower() == "basic ":
            try:
                cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
        client = self.clients.get(cid)
        if client is None or not pysecrets.compare_digest(client.secret, secret):
            return None
        return client

    def _token(self, req: Request) -> Response:
        form = req.form()
        client = self._client_auth(req, form)
        if client is None:
            return Response(400, {"error": "invalid_client"})
        grant = form.get("grant_type")
        now = self.clock.now()
        if grant == "authorization_code":
            code = self.codes.get(form.get("code", ""))
            if (
                code is None
                or code.used
                or now >= code.expires_at
                or code.client_id != client.client_id
                or code.redirect_uri != form.get("redirect_uri")
            ):
                return Response(400, {"error": "invalid_grant"})
            code.used = True
            body = self._issue(
                client.client_id,
                code.tenants,
                code.scope,
                str(uuid.uuid4()),
                refresh="offline_access" in code.scope.split(),
            )
        elif grant == "refresh_token":
            rt = self.refresh_tokens.get(form.get("refresh_token", ""))
            if (
                rt is None
                or rt.client_id != client.client_id
                or now >= rt.expires_at
                or (rt.rotated_at is not None and now >= rt.rotated_at + self.refresh_grace)
            ):
                return Response(400, {"error": "invalid_grant"})
            if rt.rotated_at is None:
                rt.rotated_at = now
            body = self._issue(client.client_id, rt.tenants, rt.scope, rt.auth_event, refresh=True)
        elif grant == "client_credentials":
            if not client.custom_tenant:
                return Response(400, {"error": "unauthorized_client"})
            body = self._issue(
                client.client_id,
                [client.custom_tenant],
                form.get("scope") or DEFAULT_SCOPE,
                str(uuid.uuid4()),
                refresh=False,
                custom_tenant=client.custom_tenant,
            )
        else:
            return Response(400, {"error": "unsupported_grant_type"})
        body.pop("expires_at", None)
        return Response(200, body, {"Cache-Control": "no-store"})

    def _revoke(self, req: Request) -> Response:
        form = req.form()
        if self._client_auth(req, form) is None:
            return Response(400, {"error": "invalid_client"})
        self.refresh_tokens.pop(form.get("token", ""), None)
        return Response(200, None)

    def _authorize(self, req: Request) -> Response:
        q = req.query
        client = self.clients.get(q.get("client_id", ""))
        if (
            client is None
            or q.get("response_type") != "code"
            or not q.get("redirect_uri")
            or (client.redirect_uris is not None and q["redirect_uri"] not in client.redirect_uris)
        ):
            return Response(
                400,
                "<html><body>Error: unauthorized_client</body></html>",
                content_type="text/html",
            )
        code = pysecrets.token_urlsafe(24)
        scope = q.get("scope") or DEFAULT_SCOPE
        tenants = [t for t, o in self.orgs.items() if o.connected]
        self.codes[code] = _Code(
            client.client_id, q["redirect_uri"], scope, tenants, self.clock.now() + self.code_ttl
        )
        params = {"code": code, "scope": scope}
        if "state" in q:
            params["state"] = q["state"]
        sep = "&" if "?" in q["redirect_uri"] else "?"
        return Response(302, None, {"Location": q["redirect_uri"] + sep + urlencode(params)})

    def _connections(self, req: Request) -> Response:
        grant: _Grant = req.environ["xero.grant"]
        tenants = [grant.custom_tenant] if grant.custom_tenant else grant.tenants
        out = []
        for tid in tenants:
            org = self.orgs.get(tid)
            if org is None or not org.connected:
                continue
            stamp = org.created_at.strftime("%Y-%m-%dT%H:%M:%S.%f0")
            out.append(
                {
                    "id": org.connection_id,
                    "authEventId": grant.auth_event or NIL_ID,
                    "tenantId": tid,
                    "tenantType": "ORGANISATION",
                    "tenantName": org.name,
                    "createdDateUtc": stamp,
                    "updatedDateUtc": stamp,
                }
            )
        return Response(200, out)

    def _disconnect(self, req: Request, ident: str) -> Response:
        grant: _Grant = req.environ["xero.grant"]
        org = next((o for o in self.orgs.values() if o.connection_id == ident.lower()), None)
        if org is None or org.tenant_id not in grant.tenants:
            return _problem(404, "NotFound", "The resource you're looking for cannot be found")
        for g in self.grants.values():
            if g.client_id == grant.client_id and org.tenant_id in g.tenants:
                g.tenants.remove(org.tenant_id)
        for r in self.refresh_tokens.values():
            if r.client_id == grant.client_id and org.tenant_id in r.tenants:
                r.tenants.remove(org.tenant_id)
        return Response(204, None)

    # Accounting: shared ------------------------------------------------------------------------
    def _tenant(self, req: Request) -> tuple[str, World, _TenantExtra]:
        tid = req.environ["xero.tenant"]
        return tid, self.catalogue.tenant(tid), self.extra[tid]

    def _head(self) -> dict[str, Any]:
        return {
            "Id": str(uuid.uuid4()),
            "Status": "OK",
            "ProviderName": "synccli sandbox",
            "DateTimeUTC": xero_date(self.clock.now()).replace("+0000", ""),
        }

    def _envelope(self, name: str, parts: list[bytes], pagination: dict | None = None) -> bytes:
        head = self._head()
        if pagination is not None:
            head["pagination"] = pagination
        prefix = json.dumps(head, separators=(",", ":"))[:-1]
        return b"".join([prefix.encode(), f',"{name}":['.encode(), b",".join(parts), b"]}"])

    def _list(self, name: str, records: list[dict], pagination: dict | None = None) -> Response:
        parts = [_compact(r) for r in records]
        return Response(200, self._envelope(name, parts, pagination))

    def _filter(self, req: Request, kind: str, fields: set[str], records: list[dict]) -> list[dict]:
        where = req.query.get("where")
        if not where:
            return records
        pred = _Where(where, kind, fields, self.where_case_sensitive).parse()
        return [r for r in records if pred(r)]

    def _paging(self, req: Request) -> tuple[int, int] | None:
        q = req.query
        if "page" not in q:
            return None
        try:
            page = max(1, int(q["page"]))
        except ValueError:
            page = 1
        try:
            size = int(q.get("pageSize") or 100)
        except ValueError:
            size = 100
        return page, min(max(size, 1), self.page_size_max)

    def _paged(self, name: str, records: list[dict], paging: tuple[int, int]) -> Response:
        page, size = paging
        # what a page holds may be fewer rows than the size it echoes (see ``page_rows``)
        rows = min(size, self.page_rows) if self.page_rows else size
        count = len(records)
        pages = (count + rows - 1) // rows
        chunk = records[(page - 1) * rows : page * rows]
        pagination = {"page": page, "pageSize": size, "pageCount": pages, "itemCount": count}
        return self._list(name, chunk, pagination)

    def _query_error(self, err: WhereError) -> Response:
        return Response(
            400, {"ErrorNumber": 16, "Type": "QueryParseException", "Message": str(err)}
        )

    def _not_found(self) -> Response:
        return _problem(404, "NotFound", "The resource you're looking for cannot be found")

    def _organisation(self, req: Request) -> Response:
        tid, _, _ = self._tenant(req)
        org = self.orgs[tid]
        body = {
            **self._head(),
            "Organisations": [
                {
                    "OrganisationID": tid,
                    "APIKey": "",
                    "Name": org.name,
                    "LegalName": org.name,
                    "Version": "NZ",
                    "OrganisationType": "COMPANY",
                    "BaseCurrency": "NZD",
                    "CountryCode": "NZ",
                    "IsDemoCompany": False,
                    "OrganisationStatus": "ACTIVE",
                    "Timezone": "NEWZEALANDSTANDARDTIME",
                    "ShortCode": "!" + tid[:5],
                    "CreatedDateUTC": xero_date(org.created_at),
                }
            ],
        }
        return Response(200, body)

    # writes: envelope, summarizeErrors, idempotency ---------------------------------------------
    def _write(
        self,
        req: Request,
        plural: str,
        one: _WriteOne,
        ident: str | None = None,
    ) -> Response:
        tid, world, extra = self._tenant(req)
        key = req.header("idempotency-key")
        if key is not None:
            if len(key) > 128 or not key:
                return _validation_simple("Idempotency-Key must be between 1 and 128 characters")
            now = self.clock.now()
            fingerprint = (req.method, req.path, req.query_string, req.body)
            stored = self._idem.get((tid, key))
            if stored is not None and now - stored.at < self.idempotency_window:
                if stored.fingerprint != fingerprint:
                    return _validation_simple(
                        f"Idempotency-Key '{key}' is used with a different request"
                    )
                return Response(stored.status, stored.body)
        resp = self._write_now(req, plural, one, tid, world, extra, ident)
        if key is not None:
            self._idem[(tid, key)] = _Stored(fingerprint, resp.status, resp.body, now)
        return resp

    def _write_now(
        self,
        req: Request,
        plural: str,
        one: _WriteOne,
        tid: str,
        world: World,
        extra: _TenantExtra,
        ident: str | None,
    ) -> Response:
        body = json_body(req)
        elements = body.get(plural) if isinstance(body, dict) else None
        if not isinstance(elements, list):
            singular = plural[:-1]
            return Response(
                400,
                {
                    "ErrorNumber": 17,
                    "Type": "NoDataProcessedException",
                    "Message": "No data has been processed for this endpoint. This endpoint is "
                    f"expecting {singular} data to be specifed in the request body.",
                },
            )
        summarize = req.query.get("summarizeErrors", "true").lower() != "false"
        results, bad = [], []
        for el in elements:
            if not isinstance(el, dict):
                el = {}
            out, errors = one(el, req, world, extra, ident)
            if errors:
                out = _refused(plural, out, errors)
                bad.append(out)
            elif not summarize and plural == "Invoices":
                # createInvoices example: StatusAttributeString OK; the createItems and
                # createContacts examples carry no status on an accepted element
                out = {**out, "StatusAttributeString": "OK"}
            results.append(out)
        if bad and summarize:
            return Response(
                400,
                {
                    "ErrorNumber": 10,
                    "Type": "ValidationException",
                    "Message": "A validation exception occurred",
                    "Elements": bad,
                },
            )
        return Response(200, {**self._head(), plural: results})

    # Items -------------------------------------------------------------------------------------
    def _item_updated(self, p: Product) -> datetime:
        if self.stock_bumps_item_timestamp and p.stock_updated_at > p.updated_at:
            return p.stock_updated_at
        return p.updated_at

    def _item_meta(self, extra: _TenantExtra, p: Product) -> dict[str, Any]:
        return extra.item_meta.get(p.id) or {
            "AccountCode": "200",
            "TaxType": "OUTPUT2",
            "COGSAccountCode": "310",
            "InventoryAssetAccountCode": "630",
            "PurchaseTaxType": "INPUT2",
        }

    def _render_item(self, p: Product, extra: _TenantExtra, unitdp4: bool) -> tuple[dict, bytes]:
        """The cached rendering of one item; re-rendered only when the item changed."""
        updated = self._item_updated(p)
        meta = extra.item_meta.get(p.id)
        sig = (
            p.code,
            p.name,
            p.description,
            p.price,
            p.stock,
            updated,
            p.archived,
            p.tracked,
            tuple(meta.items()) if meta else None,
        )
        ck = (p.id, unitdp4)
        hit = self._item_cache.get(ck)
        if hit is not None and hit[0] == sig:
            return hit[1], hit[2]
        meta = self._item_meta(extra, p)
        q = Q4 if unitdp4 else CENT
        price = p.price.quantize(q, rounding=ROUND_HALF_UP)
        cost = _round2(p.price * Decimal("0.4"))
        rec: dict[str, Any] = {"ItemID": p.id, "Code": p.code}
        if not p.archived:
            rec["Description"] = p.description
        rec["PurchaseDescription"] = p.description
        rec["UpdatedDateUTC"] = xero_date(updated)
        if p.tracked:
            rec["PurchaseDetails"] = {
                "UnitPrice": _num(cost),
                "COGSAccountCode": meta.get("COGSAccountCode", "310"),
                "TaxType": meta.get("PurchaseTaxType", "INPUT2"),
            }
        else:
            rec["PurchaseDetails"] = {}
        rec["SalesDetails"] = (
            {}
            if p.archived
            else {
                "UnitPrice": _num(price),
                "AccountCode": meta.get("AccountCode", "200"),
                "TaxType": meta.get("TaxType", "OUTPUT2"),
            }
        )
        rec["Name"] = p.name
        rec["IsTrackedAsInventory"] = p.tracked
        if p.tracked:
            rec["InventoryAssetAccountCode"] = meta.get("InventoryAssetAccountCode", "630")
            rec["TotalCostPool"] = _num(_round2(cost * p.stock))
            rec["QuantityOnHand"] = _num(p.stock)
        rec["IsSold"] = not p.archived
        rec["IsPurchased"] = True
        encoded = _compact(rec)
        self._item_cache[ck] = (sig, rec, encoded)
        return rec, encoded

    def _get_items(self, req: Request) -> Response:
        tid, world, extra = self._tenant(req)
        q = req.query
        unitdp4 = q.get("unitdp") == "4"
        since = parse_modified_since(req.header("if-modified-since"))
        rendered = []
        for p in world.products.values():
            if since is not None and self._item_updated(p) <= since:
                continue
            rendered.append(self._render_item(p, extra, unitdp4))
        try:
            if q.get("where"):
                pred = _Where(q["where"], "Item", ITEM_FIELDS, self.where_case_sensitive).parse()
                rendered = [r for r in rendered if pred(r[0])]
        except WhereError as err:
            return self._query_error(err)
        if q.get("order"):
            order = _order_key(q["order"], [("Code", False)])
            by_id = {r[0]["ItemID"]: r[1] for r in rendered}
            recs = _sort([r[0] for r in rendered], order, "ItemID")
            parts = [by_id[r["ItemID"]] for r in recs]
        else:
            rendered.sort(key=lambda r: r[0]["Code"])
            parts = [r[1] for r in rendered]
        return Response(200, self._envelope("Items", parts))

    def _find_item(self, world: World, ident: str) -> Product | None:
        p = world.products.get(ident.lower())
        return p or next((x for x in world.products.values() if x.code == ident), None)

    def _get_item(self, req: Request, ident: str) -> Response:
        _, world, extra = self._tenant(req)
        p = self._find_item(world, ident)
        if p is None:
            return self._not_found()
        rec, _ = self._render_item(p, extra, req.query.get("unitdp") == "4")
        return self._list("Items", [rec])

    def _delete_item(self, req: Request, ident: str) -> Response:
        _, world, _ = self._tenant(req)
        p = self._find_item(world, ident)
        if p is None:
            return self._not_found()
        del world.products[p.id]
        world.deleted_products.add(p.id)
        self.record_write("product", p.id, {"deleted": True}, False)
        return Response(204, None)

    def _write_items(self, req: Request, ident: str | None = None) -> Response:
        return self._write(req, "Items", self._one_item, ident)

    def _one_item(
        self,
        el: dict[str, Any],
        req: Request,
        world: World,
        extra: _TenantExtra,
        ident: str | None,
    ) -> tuple[dict, list[str]]:
        code = el.get("Code")
        existing = None
        if req.method == "POST":
            target = el.get("ItemID") or ident
            existing = self._find_item(world, target) if target else None
            if existing is None and code:
                existing = world.product_by_code(code)
        errors = self._item_errors(el, world, existing)
        sales = el.get("SalesDetails") or {}
        tax = sales.get("TaxType")
        account = sales.get("AccountCode")
        price = _dec(sales.get("UnitPrice"))
        if errors:
            return {**el, "ItemID": NIL_ID}, errors
        purchase = el.get("PurchaseDetails") or {}
        meta = {
            "AccountCode": account or "200",
            "TaxType": tax or "OUTPUT2",
            "COGSAccountCode": purchase.get("COGSAccountCode") or "310",
            "PurchaseTaxType": purchase.get("TaxType") or "INPUT2",
            "InventoryAssetAccountCode": el.get("InventoryAssetAccountCode") or "630",
        }
        p, created = self._apply_item(el, world, existing, price)
        extra.item_meta[p.id] = meta
        self.record_write("product", p.id, el, created)
        rec, _ = self._render_item(p, extra, True)
        return {**rec, "ValidationErrors": []}, []

    def _item_errors(self, el: dict[str, Any], world: World, existing: Product | None) -> list[str]:
        """An item element's validation errors, in the order Xero lists them."""
        errors: list[str] = []
        code = el.get("Code")
        if not code:
            errors.append("Price List Item Code must be supplied")
        elif len(code) > 30:
            errors.append("The Code field must be 30 characters or fewer")
        elif existing is None or existing.code != code:
            clash = next(
                (p for p in world.products.values() if _same(p.code, code) and p is not existing),
                None,
            )
            if clash is not None:
                errors.append(f"Price List Item with Code '{code}' already exists")
        name = el.get("Name")
        if existing is None and not name:
            errors.append("Item Name must be supplied")
        elif name and len(name) > 50:
            errors.append("The Name field must be 50 characters or fewer")
        sales = el.get("SalesDetails") or {}
        tax = sales.get("TaxType")
        if tax and tax not in SALES_TAX_TYPES:
            errors.append(
                f"The TaxType code {tax} does not exist or cannot be used for this type of "
                "transaction."
            )
        account = sales.get("AccountCode")
        if account and account not in ACCOUNTS:
            errors.append(f"Account code '{account}' is not a valid code for this document.")
        return errors

    def _apply_item(
        self, el: dict[str, Any], world: World, existing: Product | None, price: Decimal | None
    ) -> tuple[Product, bool]:
        """Create the item or update ``existing`` from a valid element: (the item, created)."""
        now = self.clock.now()
        code: str = el["Code"]  # a valid element has one
        name = el.get("Name")  # a new item's is given (refused otherwise)
        purchase = el.get("PurchaseDetails") or {}
        if existing is None:
            assert name
            p = Product(
                id=self.catalogue.gen.uuid(),
                code=code,
                name=name[:50],
                description=el.get("Description") or "",
                price=(price or Decimal(0)).quantize(Q4),
                stock=Decimal(0),
                updated_at=now,
                stock_updated_at=now,
                created_at=now,
                tracked=bool(
                    el.get("InventoryAssetAccountCode") and purchase.get("COGSAccountCode")
                ),
                seq=world.seq(),
            )
            world.products[p.id] = p
            created = True
        else:
            p = existing
            p.code = code
            if name:
                p.name = name[:50]
            if "Description" in el:
                p.description = el.get("Description") or ""
            if price is not None:
                p.price = price.quantize(Q4)
            if el.get("IsSold") is False:
                p.archived = True
            elif el.get("IsSold") is True:
                p.archived = False
            p.updated_at = now
            created = False
        return p, created

    # Contacts ----------------------------------------------------------------------------------
    def _render_contact(self, c: Customer, extra: _TenantExtra, full: bool) -> dict:
        more = extra.customer_extra.get(c.id, {})
        rec: dict[str, Any] = {"ContactID": c.id}
        if c.code:
            rec["ContactNumber"] = c.code
        if c.account_number:
            rec["AccountNumber"] = c.account_number
        rec["ContactStatus"] = "ARCHIVED" if c.archived else "ACTIVE"
        rec["Name"] = c.name
        if c.first_name:
            rec["FirstName"] = c.first_name
        if c.last_name:
            rec["LastName"] = c.last_name
        if c.email:
            rec["EmailAddress"] = c.email
        rec["BankAccountDetails"] = ""
        if full:
            rec["Addresses"] = more.get("Addresses") or [
                {
                    "AddressType": "STREET",
                    "City": "",
                    "Region": "",
                    "PostalCode": "",
                    "Country": "",
                },
                {"AddressType": "POBOX", "City": "", "Region": "", "PostalCode": "", "Country": ""},
            ]
            rec["Phones"] = more.get("Phones") or [
                {"PhoneType": t, "PhoneNumber": "", "PhoneAreaCode": "", "PhoneCountryCode": ""}
                for t in ("DEFAULT", "DDI", "FAX", "MOBILE")
            ]
        rec["UpdatedDateUTC"] = xero_date(c.updated_at)
        rec["ContactGroups"] = []
        rec["IsSupplier"] = False
        rec["IsCustomer"] = c.id in extra.is_customer
        if full:
            rec["ContactPersons"] = more.get("ContactPersons", [])
        rec["HasAttachments"] = False
        rec["HasValidationErrors"] = False
        return rec

    def _get_contacts(self, req: Request) -> Response:
        _, world, extra = self._tenant(req)
        q = req.query
        paging = self._paging(req)
        since = parse_modified_since(req.header("if-modified-since"))
        include_archived = q.get("includeArchived", "").lower() == "true"
        ids = {i.strip().lower() for i in q.get("IDs", "").split(",") if i.strip()}
        term = q.get("searchTerm", "").casefold()
        chosen = []
        for c in world.customers.values():
            if c.archived and not include_archived and not ids:
                continue
            if since is not None and c.updated_at <= since:
                continue
            if ids and c.id not in ids:
                continue
            if term and not any(
                term in (v or "").casefold()
                for v in (c.name, c.first_name, c.last_name, c.code, c.email)
            ):
                continue
            chosen.append(c)
        records = [self._render_contact(c, extra, paging is not None) for c in chosen]
        try:
            records = self._filter(req, "Contact", CONTACT_FIELDS, records)
        except WhereError as err:
            return self._query_error(err)
        records = _sort(records, _order_key(q.get("order"), [("Name", False)]), "ContactID")
        if paging is None:
            return self._list("Contacts", records)
        return self._paged("Contacts", records, paging)

    def _find_contact(self, world: World, ident: str) -> Customer | None:
        c = world.customers.get(ident.lower())
        return c or next((x for x in world.customers.values() if x.code == ident), None)

    def _get_contact(self, req: Request, ident: str) -> Response:
        _, world, extra = self._tenant(req)
        c = self._find_contact(world, ident)
        if c is None:
            return self._not_found()
        return self._list("Contacts", [self._render_contact(c, extra, True)])

    def _write_contacts(self, req: Request, ident: str | None = None) -> Response:
        return self._write(req, "Contacts", self._one_contact, ident)

    def _name_taken(self, world: World, name: str, other_than: Customer | None) -> bool:
        return any(
            not c.archived and c is not other_than and _same(c.name.strip(), name.strip())
            for c in world.customers.values()
        )

    def _contact_errors(self, world: World, el: dict, existing: Customer | None) -> list[str]:
        errors = []
        name = el.get("Name")
        if existing is None and not (name or "").strip():
            errors.append("Contact Name cannot be empty.")
        elif name and len(name) > 255:
            errors.append("The Name field must be 255 characters or fewer")
        elif name and self._name_taken(world, name, existing):
            errors.append(
                f"The contact name {name} is already assigned to another contact. The contact "
                "name must be unique across all active contacts."
            )
        account = el.get("AccountNumber")
        if account and any(
            c.account_number == account and c is not existing for c in world.customers.values()
        ):
            errors.append(
                "The Account Number already exists. Please enter a different Account Number."
            )
        email = el.get("EmailAddress")
        if email and ("@" not in email or len(email) > 255):
            errors.append("Email address must be valid.")
        return errors

    def _apply_contact(
        self, world: World, extra: _TenantExtra, el: dict, existing: Customer | None
    ) -> Customer:
        now = self.clock.now()
        if existing is None:
            c = Customer(
                id=self.catalogue.gen.uuid(),
                name=el["Name"].strip(),
                first_name=el.get("FirstName") or "",
                last_name=el.get("LastName") or "",
                email=el.get("EmailAddress"),
                account_number=el.get("AccountNumber"),
                code=el.get("ContactNumber") or "",
                updated_at=now,
                created_at=now,
                seq=world.seq(),
            )
            world.customers[c.id] = c
        else:
            c = existing
            for key, attr in (
                ("Name", "name"),
                ("FirstName", "first_name"),
                ("LastName", "last_name"),
                ("EmailAddress", "email"),
                ("AccountNumber", "account_number"),
                ("ContactNumber", "code"),
            ):
                if key in el:
                    setattr(c, attr, el[key] or ("" if attr in ("name", "code") else None))
            if el.get("ContactStatus") in ("ACTIVE", "ARCHIVED"):
                c.archived = el["ContactStatus"] == "ARCHIVED"
            c.updated_at = now
        keep = {k: el[k] for k in ("Addresses", "Phones", "ContactPersons") if k in el}
        if keep or existing is not None:
            merged = extra.customer_extra.setdefault(c.id, {})
            merged.update(keep)
            if existing is not None and "ContactPersons" not in el:
                merged["ContactPersons"] = []  # left out of the payload: wiped (§4)
        return c

    def _one_contact(
        self,
        el: dict[str, Any],
        req: Request,
        world: World,
        extra: _TenantExtra,
        ident: str | None,
    ) -> tuple[dict, list[str]]:
        existing = None
        if req.method == "POST":
            target = el.get("ContactID") or ident
            if target:
                existing = self._find_contact(world, target)
                if existing is None:
                    return {**el}, [f"The contact with ContactID {target} could not be found."]
        errors = self._contact_errors(world, el, existing)
        if errors:
            return {**el, "ContactID": NIL_ID, "ContactStatus": "ACTIVE"}, errors
        c = self._apply_contact(world, extra, el, existing)
        self.record_write("customer", c.id, el, existing is None)
        return self._render_contact(c, extra, True), []

    # Invoices ----------------------------------------------------------------------------------
    def _get_invoices(self, req: Request) -> Response:
        _, world, _ = self._tenant(req)
        q = req.query
        paging = self._paging(req)
        since = parse_modified_since(req.header("if-modified-since"))

        def csv(name: str, lower: bool = False) -> set[str]:
            # a comma-separated list whose items may be quoted: the spec's own example is
            # ``"INV-001", "INV-002"`` (InvoiceNumbers); no escape for a comma is documented
            vals = {_unquote(v.strip()) for v in q.get(name, "").split(",") if v.strip()}
            return {v.lower() for v in vals} if lower else vals

        ids, numbers = csv("IDs", True), csv("InvoiceNumbers")
        contacts, statuses = csv("ContactIDs", True), csv("Statuses")
        records = []
        for inv in world.invoices.values():
            body = inv.body
            if since is not None and inv.updated_at <= since:
                continue
            if ids and inv.id not in ids:
                continue
            if numbers and inv.number not in numbers:
                continue
            if contacts and inv.customer_id not in contacts:
                continue
            if statuses and body["Status"] not in statuses:
                continue
            rec = {**body, "UpdatedDateUTC": xero_date(inv.updated_at)}
            if paging is None:
                rec.pop("LineItems", None)  # unpaged multi-record GETs drop line items (§2)
            records.append(rec)
        try:
            records = self._filter(req, "Invoice", INVOICE_FIELDS, records)
        except WhereError as err:
            return self._query_error(err)
        records = _sort(
            records, _order_key(q.get("order"), [("UpdatedDateUTC", False)]), "InvoiceID"
        )
        if paging is None:
            return self._list("Invoices", records)
        return self._paged("Invoices", records, paging)

    def _find_invoice(self, world: World, ident: str) -> Invoice | None:
        inv = world.invoices.get(ident.lower())
        return inv or next((i for i in world.invoices.values() if i.number == ident), None)

    def _get_invoice(self, req: Request, ident: str) -> Response:
        _, world, _ = self._tenant(req)
        inv = self._find_invoice(world, ident)
        if inv is None:
            return self._not_found()
        return self._list("Invoices", [{**inv.body, "UpdatedDateUTC": xero_date(inv.updated_at)}])

    def _write_invoices(self, req: Request, ident: str | None = None) -> Response:
        # A ContactID that is not a GUID fails the whole call with a 500 (xero-node#285).
        body = json_body(req)
        if isinstance(body, dict) and isinstance(body.get("Invoices"), list):
            for el in body["Invoices"]:
                cid = (
                    ((el or {}).get("Contact") or {}).get("ContactID")
                    if isinstance(el, dict)
                    else None
                )
                if cid is not None and not GUID_RE.match(str(cid)):
                    return Response(
                        500,
                        {
                            "ErrorNumber": 500,
                            "Type": "UnknownErrorException",
                            "Message": "An error occurred in Xero. Check the API Status page "
                            "http://status.developer.xero.com for current service status.",
                        },
                    )
        return self._write(req, "Invoices", self._one_invoice, ident)

    def _contact_valid(
        self, world: World, details: dict, contact: Customer | None, errors: list[str]
    ) -> bool:
        """Whether an invoice's contact details may be written (to ``contact``, or a new one);
        their refusals are the invoice's."""
        problems = self._contact_errors(world, details, contact)
        errors.extend(problems)
        return not problems

    def _resolve_contact(
        self, world: World, extra: _TenantExtra, sent: dict, errors: list[str]
    ) -> Customer | None:
        """The invoice's contact, with Xero's overwrite behaviour for extra contact fields."""
        cid = sent.get("ContactID")
        details = {k: v for k, v in sent.items() if k in CONTACT_WRITABLE}
        if cid:
            c = world.customers.get(str(cid).lower())
            if c is None:
                errors.append(f"The contact with ContactID {cid} could not be found.")
                return None
            if details:  # ContactID plus other fields: the contact is updated (§4)
                if not self._contact_valid(world, details, c, errors):
                    return None
                self._apply_contact(world, extra, details, c)
                self.record_write("customer", c.id, details, False)
            return c
        name = (sent.get("Name") or "").strip()
        if not name:
            errors.append("A Contact must be specified for this type of transaction")
            return None
        match = next(
            (c for c in world.customers.values() if not c.archived and _same(c.name, name)), None
        )
        if match is not None:  # a name match overwrites that contact's details (§4)
            self._apply_contact(world, extra, details, match)
            self.record_write("customer", match.id, details, False)
            return match
        if not self._contact_valid(world, details, None, errors):
            return None
        c = self._apply_contact(world, extra, details, None)
        self.record_write("customer", c.id, details, True)
        return c

    def _one_invoice(
        self,
        el: dict[str, Any],
        req: Request,
        world: World,
        extra: _TenantExtra,
        ident: str | None,
    ) -> tuple[dict, list[str]]:
        errors: list[str] = []
        now = self.clock.now()
        existing = self._invoice_target(el, req, world, ident, errors)
        head = self._invoice_head(el, req, world, existing, now, errors)
        # an update may leave its lines out (they stay); a new invoice must have some
        missing = "Invoice must have at least one line item" if existing is None else None
        lines, sub, tax_total = self._lines(el, world, head, req, errors, missing)
        contact = None
        if not errors:
            contact = self._resolve_contact(world, extra, el.get("Contact") or {}, errors)
        if errors:
            echo = {**el, "InvoiceID": NIL_ID}
            for key in ("Date", "DueDate"):
                d = parse_body_date(el.get(key))
                if d is not None:
                    echo[key] = xero_day(d)
            with self.counters.lock:
                self.counters.requests.append(
                    {"kind": "invoice", "id": None, "body": el, "rejected": True}
                )
            return echo, errors
        assert contact is not None
        rec = self._save_invoice(
            el, world, extra, existing, head, lines, sub, tax_total, contact, now
        )
        return rec, []

    def _invoice_target(
        self,
        el: dict[str, Any],
        req: Request,
        world: World,
        ident: str | None,
        errors: list[str],
    ) -> Invoice | None:
        """The invoice a POST updates (by id, or by number), or None for a new one."""
        existing = None
        if req.method == "POST":
            target = el.get("InvoiceID") or ident
            if target:
                existing = self._find_invoice(world, str(target))
                if existing is None:
                    errors.append(f"Invoice with InvoiceID {target} could not be found.")
            elif el.get("InvoiceNumber"):  # POST overwrites by number (pyxero#328, unconfirmed)
                existing = self._find_invoice(world, el["InvoiceNumber"])
        return existing

    def _invoice_head(
        self,
        el: dict[str, Any],
        req: Request,
        world: World,
        existing: Invoice | None,
        now: datetime,
        errors: list[str],
    ) -> _InvoiceHead:
        """The element's header fields, each refusal added to ``errors`` in Xero's order."""
        kind = el.get("Type") or (existing.body["Type"] if existing else None)
        status = el.get("Status") or (existing.body["Status"] if existing else "DRAFT")
        amount_types, number, inv_date = _head_refusals(
            "Invoice",
            el,
            kind,
            ("ACCREC", "ACCPAY"),
            status,
            ("DRAFT", "SUBMITTED", "AUTHORISED", "DELETED", "VOIDED"),
            lambda n: kind == "ACCREC" and req.method == "PUT" and self._number_taken(world, n),
            now.date(),
            errors,
        )
        due = parse_body_date(el.get("DueDate")) if el.get("DueDate") else None
        currency = el.get("CurrencyCode")
        if currency is not None and not (
            isinstance(currency, str) and re.fullmatch("[A-Z]{3}", currency)
        ):
            # CurrencyCode is an enum of upper-case ISO 4217 codes (OAS ``CurrencyCode``), read
            # the .NET way, case included: Xero answers an unknown value with "Requested value
            # 'TRY' was not found." (XeroAPI/Xero-NetStandard#656), so "nzd" is refused too.
            errors.append(f"Requested value '{currency}' was not found.")
        return _InvoiceHead(kind, status, amount_types, number, inv_date, due)

    def _number_taken(self, world: World, number: Any) -> bool:
        """A new sales invoice's number already in use (when numbers are kept unique)."""
        return self.unique_invoice_numbers and any(
            i.number == number and i.body["Type"] == "ACCREC" for i in world.invoices.values()
        )

    def _lines(
        self,
        el: dict[str, Any],
        world: World,
        head: _InvoiceHead,
        req: Request,
        errors: list[str],
        missing: str | None,
    ) -> tuple[list[_InvoiceLine], Decimal, Decimal]:
        """An invoice's or a credit note's lines as answered, with its subtotal and tax; no
        lines at all is refused with ``missing`` (None: allowed), each line's refusals added
        to ``errors``."""
        raw_lines = el.get("LineItems")
        if not isinstance(raw_lines, list) or not raw_lines:
            if missing is not None:
                errors.append(missing)
            raw_lines = []
        unitdp4 = req.query.get("unitdp") == "4"
        lines: list[_InvoiceLine] = []
        sub, tax_total = Decimal(0), Decimal(0)
        for line in raw_lines:
            out, item, qty, net, line_tax = self._invoice_line(
                line if isinstance(line, dict) else {}, world, head, unitdp4, errors
            )
            sub += net
            tax_total += line_tax
            lines.append((out, item, qty))
        return lines, sub, tax_total

    def _invoice_line(
        self,
        line: dict[str, Any],
        world: World,
        head: _InvoiceHead,
        unitdp4: bool,
        errors: list[str],
    ) -> tuple[dict[str, Any], Product | None, Decimal, Decimal, Decimal]:
        """One line as answered, its item, quantity, net amount and tax; refusals to ``errors``."""
        code = line.get("ItemCode")
        item = None
        if code:
            item = world.product_by_code(code)
            if item is None:
                errors.append(f"Item code '{code}' is not valid")
        tax = line.get("TaxType")
        if tax is not None and tax not in SALES_TAX_TYPES:
            errors.append(
                f"The TaxType code {tax} does not exist or cannot be used for this type of "
                "transaction."
            )
        account = line.get("AccountCode")
        if account is not None and account not in ACCOUNTS:
            errors.append(f"Account code '{account}' is not a valid code for this document.")
        desc = line.get("Description")
        if not desc and item is None:
            errors.append("Description must be specified")
        qty = _dec(line.get("Quantity"))
        qty = Decimal(1) if qty is None else qty
        unit = _dec(line.get("UnitAmount")) or Decimal(0)
        unit = unit.quantize(Q4 if unitdp4 else CENT, rounding=ROUND_HALF_UP)
        # A line without TaxType gets its account's default tax type: Xero's LineItem docs
        # call TaxType "an override if the default Tax Code for the selected AccountCode is
        # not correct"; the spec's Accounts example gives 200 Sales TaxType OUTPUT2, the
        # default of every revenue account here. So an untaxed line must say NONE.
        rate = TAX_RATES.get(tax or "OUTPUT2", Decimal(0))
        if head.amount_types == "NoTax":
            rate = Decimal(0)
        amount = _round2(qty * unit)
        if head.amount_types == "Inclusive":
            # the line amount includes its tax, which is worked out of it per line: the spec's
            # Inclusive invoice example (UnitAmount 20.00 at 9.5%) answers TaxAmount 1.74,
            # SubTotal 18.26, Total 20.00
            line_tax = _round2(amount * rate / (1 + rate))
            net = amount - line_tax
        else:
            line_tax = _round2(amount * rate)
            net = amount
        out: dict[str, Any] = {
            "LineItemID": str(uuid.uuid4()),
            "Description": desc or (item.description if item else ""),
            "Quantity": _num(qty),
            "UnitAmount": _num(unit),
            "TaxType": tax or "OUTPUT2",
            "TaxAmount": _num(line_tax),
            "LineAmount": _num(amount),
            "AccountCode": account or "200",
            "Tracking": [],
        }
        if code:
            out = {"ItemCode": code, **out}
        return out, item, qty, net, line_tax

    def _save_invoice(
        self,
        el: dict[str, Any],
        world: World,
        extra: _TenantExtra,
        existing: Invoice | None,
        head: _InvoiceHead,
        lines: list[_InvoiceLine],
        sub: Decimal,
        tax_total: Decimal,
        contact: Customer,
        now: datetime,
    ) -> dict[str, Any]:
        """Store a valid invoice element (new, or over ``existing``) and answer its record; a
        sales invoice newly authorised takes its tracked items' quantities out of stock."""
        kind, status = head.kind, head.status
        inv_date = head.issued
        assert inv_date is not None  # an unreadable date was refused
        if existing is None:
            extra.invoice_seq += 1
        number = head.number or (existing.number if existing else f"INV-{extra.invoice_seq:04d}")
        inv_id = existing.id if existing else self.catalogue.gen.uuid()
        total = sub + tax_total
        due = head.due or (inv_date + timedelta(days=30))
        rec = {
            "Type": kind,
            "InvoiceID": inv_id,
            "InvoiceNumber": number,
            "Reference": el.get(
                "Reference", existing.body.get("Reference", "") if existing else ""
            ),
            "Payments": existing.body.get("Payments", []) if existing else [],
            "Prepayments": [],
            "Overpayments": [],
            "AmountDue": _num(total),
            "AmountPaid": 0,
            "SentToContact": False,
            "CurrencyRate": 1,
            "IsDiscounted": False,
            "HasAttachments": False,
            "HasErrors": False,
            "Contact": {
                "ContactID": contact.id,
                "ContactStatus": "ARCHIVED" if contact.archived else "ACTIVE",
                "Name": contact.name,
                "HasValidationErrors": False,
            },
            "DateString": f"{inv_date.isoformat()}T00:00:00",
            "Date": xero_day(inv_date),
            "DueDateString": f"{due.isoformat()}T00:00:00",
            "DueDate": xero_day(due),
            "Status": status,
            "LineAmountTypes": head.amount_types,
            "LineItems": [out for out, _, _ in lines]
            or (existing.body["LineItems"] if existing else []),
            "SubTotal": _num(sub),
            "TotalTax": _num(tax_total),
            "Total": _num(total),
            "UpdatedDateUTC": xero_date(now),
            "CurrencyCode": el.get("CurrencyCode") or "NZD",
        }
        was_authorised = existing is not None and existing.body["Status"] == "AUTHORISED"
        if existing is None:
            world.invoices[inv_id] = Invoice(
                inv_id, number, contact.id, total, rec, now, now, world.seq()
            )
        else:
            existing.number, existing.customer_id, existing.total = number, contact.id, total
            existing.body, existing.updated_at = rec, now
        if kind == "ACCREC" and status == "AUTHORISED" and not was_authorised:
            extra.is_customer.add(contact.id)
            for _, item, qty in lines:
                if item is not None and item.tracked:
                    item.stock -= qty
                    item.stock_updated_at = now
        self.record_write("invoice", inv_id, el, existing is None)
        return rec


def _refused(plural: str, out: dict[str, Any], errors: list[str]) -> dict[str, Any]:
    """A refused element, in the shape Xero gives each element type (OAS examples):

    - Items (createItems example): ``ValidationErrors`` and nothing else, no status, no
      HasErrors, and a real-looking ItemID that names no item (the example's a4544d51-...).
    - Contacts (createContacts 400 example): the nil ContactID, ``HasValidationErrors: true`` and
      ``ValidationErrors``, no status.
    - Invoices (xero-node#177; the OAS BankTransactions example for the status):
      ``HasErrors: true``, ``StatusAttributeString: "ERROR"``, ``ValidationErrors``, nil id.
    """
    messages = [{"Message": m} for m in errors]
    flags = ("HasErrors", "HasValidationErrors", "StatusAttributeString", "ValidationErrors")
    el = {k: v for k, v in out.items() if k not in flags}
    if plural == "Items":
        return {**el, "ItemID": str(uuid.uuid4()), "ValidationErrors": messages}
    if plural == "Allocations":  # the spec's Allocation has a status string, no HasErrors
        return {**el, "StatusAttributeString": "ERROR", "ValidationErrors": messages}
    if plural == "Payments":  # createPayments example: the PaymentID and status stay
        return {**el, "HasValidationErrors": True, "ValidationErrors": messages}
    if plural == "Contacts":
        return {
            **el,
            "ContactID": NIL_ID,
            "HasValidationErrors": True,
            "ValidationErrors": messages,
        }
    return {**el, "HasErrors": True, "StatusAttributeString": "ERROR", "ValidationErrors": messages}


def _same(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()


def _compact(rec: Any) -> bytes:
    return json.dumps(rec, separators=(",", ":")).encode()


def _problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    """Xero's RFC 7807-style error body for 401/403/404/429."""
    body: dict[str, Any] = {
        "Type": None,
        "Title": title,
        "Status": status,
        "Detail": detail,
        "Instance": str(uuid.uuid4()),
        "Extensions": {},
    }
    return Response(status, body, dict(headers or {}))


def _validation_simple(message: str) -> Response:
    return Response(
        400,
        {
            "ErrorNumber": 10,
            "Type": "ValidationException",
            "Message": message,
        },
    )


def rfc1123(dt: datetime) -> str:
    """An If-Modified-Since value in pyxero's format."""
    return format_datetime(dt.astimezone(UTC), usegmt=True)


def create(**kw: Any) -> XeroSandbox:
    """Build a Xero sandbox (the lead's wiring calls this)."""
    return XeroSandbox(**kw)


# --- webhooks -------------------------------------------------------------------------------------
# Xero [``developer.xero.com/documentation/webhooks/configuring-your-server``; OAS-ID
# ``xero-webhooks.yaml``]: JSON ``{"events": [...], "firstEventSequence", "lastEventSequence",
# "entropy"}``, each event ``resourceUrl``, ``resourceId``, ``eventDateUtc``, ``eventType`` (CREATE,
# UPDATE), ``eventCategory`` (CONTACT, INVOICE; no Items), ``tenantId``, ``tenantType``; the record
# itself is not in it. ``x-xero-signature``: base64 HMAC-SHA256 of the body with the webhook key.
# The endpoint must answer 200 with **no body** within 5 s (else it is retried "with decreasing
# frequency for up to 24 hours. After 24 hours the webhook will be disabled"); a subscription starts
# with an "Intent to receive" check: several POSTs with ``"events": []``, some signed with the key
# and some not; only 200 to every good one and 401 to every bad one makes it active. Subscriptions
# are made in the developer portal only: the sandbox's stand-in is ``POST /sandbox/webhooks`` (no
# such route exists at Xero).
class XeroFormat(Format):
    policy = Policy(
        retry_delays=backoff(60.0, 14, 24 * 3600.0),
        empty_answer=True,
        disable_after=24 * 3600.0,
    )
    ITR_GOOD, ITR_BAD = 2, 2  # intent-to-receive POSTs signed with the key, and not

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sequence = 0

    def events(self, record: Any, what: str) -> list[str]:
        if isinstance(record, Customer) and (what in CUSTOMER_FIELDS or what == "added"):
            return ["CONTACT"]  # Items raise no event [OAS-ID]
        return []

    def render(self, d: Delivery, now: datetime) -> tuple[bytes, dict[str, str]]:
        self.sequence += 1
        event = {
            "resourceUrl": f"https://api.xero.com/api.xro/2.0/Contacts/{d.record.id}",
            "resourceId": d.record.id,
            "eventDateUtc": d.made.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
            "eventType": "CREATE" if d.what == "added" else "UPDATE",
            "eventCategory": d.event,
            "tenantId": d.sub.tenant,
            "tenantType": "ORGANISATION",
        }
        body = self.envelope([event], self.sequence, self.sequence)
        return body, self.headers(body, d.sub.secret or "")

    @staticmethod
    def envelope(events: list[dict[str, Any]], first: int, last: int) -> bytes:
        entropy = pysecrets.token_hex(10).upper()
        doc = {
            "events": events,
            "firstEventSequence": first,
            "lastEventSequence": last,
            "entropy": entropy,
        }
        return json.dumps(doc).encode("utf-8")

    @staticmethod
    def headers(body: bytes, key: str) -> dict[str, str]:
        signature = base64.b64encode(hmac_sha256(key, body)).decode("ascii")
        return {"Content-Type": "application/json; charset=utf-8", "x-xero-signature": signature}


def intent_to_receive(outbox: Outbox, sub: Subscription, now: datetime) -> None:
    """Xero's check of a new (or re-enabled) subscription: it becomes OK only if every correctly
    signed request got 200 and every incorrectly signed one 401, each in time and without a body."""
    fmt = outbox.format
    assert isinstance(fmt, XeroFormat)
    passed = True
    tries = [True] * fmt.ITR_GOOD + [False] * fmt.ITR_BAD
    outbox.rng.shuffle(tries)
    for good in tries:
        body = fmt.envelope([], 0, 0)
        key = (sub.secret or "") if good else pysecrets.token_urlsafe(32)
        status, ok = outbox.post(sub.url, body, fmt.headers(body, key))
        expected = ok if good else status == 401
        passed = passed and expected
        sub.extra.setdefault("intent_answers", []).append((good, status))
    sub.status = "OK" if passed else "INTENT_FAILED"
    outbox.stats["intent_ok" if passed else "intent_failed"] += 1


def install_xero(app: Any) -> Outbox:
    """Xero's sender and the sandbox-only stand-in for the developer portal's webhook page."""
    outbox = Outbox(app, XeroFormat(app))
    outbox.check = intent_to_receive

    def shown(sub: Subscription, key: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": sub.id,
            "url": sub.url,
            "status": sub.status,
            "tenantId": sub.tenant,
        }
        if key:
            out["key"] = sub.secret
        return out

    def create(req: Request) -> Response:
        body = json_body(req)
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            return Response(400, {"message": "url required"})
        tenant = str(body.get("tenantId") or app.tenant).lower()
        key = base64.b64encode(pysecrets.token_bytes(64)).decode("ascii")
        try:
            sub = outbox.subscribe(body["url"], ["CONTACT"], key, tenant, status="PENDING")
        except ValueError as err:
            return Response(400, {"message": str(err)})
        return Response(201, shown(sub, key=True))

    def one(req: Request, wid: str) -> Response:
        sub = outbox.subscriptions.get(wid)
        if sub is None:
            return Response(404, {"message": "no such webhook"})
        if req.method == "POST":  # re-enable: a new intent-to-receive check
            sub.status, sub.failing_since = "PENDING", None
            outbox.checks.append(sub)
        return Response(200, shown(sub))

    app.route("POST", "/sandbox/webhooks", "sandbox.webhooks", create)
    app.route("GET", "/sandbox/webhooks/(?P<wid>[^/]+)", "sandbox.webhooks", one)
    app.route("POST", "/sandbox/webhooks/(?P<wid>[^/]+)/intent", "sandbox.webhooks", one)
    return outbox
