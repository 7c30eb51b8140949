"""A local simulator of the Lightspeed Retail **R-Series** API (V3), faithful to the wire format.

Modelled (facts from the provider notes, the Lightspeed provider notes):

- OAuth 2 on the authorization server's paths: ``GET /auth/oauth/authorize`` (auto-approves and
  answers 302 to ``redirect_uri`` with ``code`` and ``state``; codes live 60 s on ``self.clock``;
  PKCE S256 checked when a ``code_challenge`` was sent) and ``POST /auth/oauth/token``
  (form-encoded, JSON also accepted; ``authorization_code`` and ``refresh_token`` grants; client
  id/secret in the body). Refresh tokens are **single-use and rotating**: a spent one answers
  ``400 invalid_grant``. Per the 2026-01-15 changelog the old refresh token is revoked only once
  the new access token is first used (switch ``revoke_on_first_use``). Unused refresh tokens expire
  after 30 days. Errors use the RFC 6749 shape ``error`` / ``error_description`` / ``hint`` /
  ``message``. Access-token lifetime ``token_ttl`` is measured on ``self.clock``; an unknown or
  expired token answers ``401 {"error":"access_denied",...,"hint":"Access token could not be
  verified"}``, a revoked one the hint ``"Access token has been revoked"``.
- ``GET /API/V3/Account.json`` and the account-scoped paths
  ``/API/V3/Account/{accountID}/{Entity}.json`` and ``/{Entity}/{id}.json``; a token used on another
  account's path gets the R-Series 403 body.
- The wire quirks: **every scalar is a JSON string**, a single element comes back as an **object,
  not a list** (on list calls and in nested relations), an empty relation is ``""``, a list with no
  rows carries no entity key at all, a single-record GET carries ``"@attributes": {"count": "1"}``.
- V3 cursor paging: ``@attributes.next`` / ``previous`` are full URLs whose ``after`` / ``before``
  tokens are base64 JSON (``[100]`` or ``["2021-11-01T14:55:51+00:00",544]`` when sorted by
  timeStamp); ``next`` is ``""`` on the last page, ``previous`` ``""`` on the first; ``limit``
  0-100 (default 100) and ``sort`` are appended to ``next``. A re-encoded (damaged) token is a 400.
- Query operators ``field=OP,value`` for ``>``, ``>=``, ``<``, ``<=``, ``><`` (inclusive BETWEEN),
  ``!=``, ``~`` / ``!~`` (LIKE with ``%`` and ``_``; a backslash escapes the next character, as in
  MySQL's LIKE), ``IN,[...]`` (at most 100 values), ``=`` (explicit equal: the rest after ``=,``
  is the value verbatim), plain equality; raw and percent-encoded forms alike. A plain value that
  begins with an operator and a comma (``IN,[A]``, ``~,A%``) is read as that operator, never as
  itself. Dates are ``YYYY-MM-DDTHH:MM:SS±HH:MM`` (``±HHMM`` and ``Z``
  too); a ``+`` sent unencoded decodes to a space and is read as the ``+`` it was, as
  Lightspeed does (issue 17 line 18; the notes' advice to send ``%2B`` still holds for clients).
  ``archived=false|true|only`` (default hides archived), ``load_relations=["..."]`` (a JSON array,
  or ``all``), ``sort=field`` / ``sort=-field`` limited to each entity's sortable fields,
  ``count=1``. Filtering on a relation's field (``Contact.email``, ``ItemShops.qoh``) needs that
  relation loaded.
- Entities: Item (+ ``Prices.ItemPrice[]`` always, ``ItemShops.ItemShop[]`` with shopID 0 = the
  account-wide summary plus shop 1), ItemShop list (stock changes move only ``ItemShop.timeStamp``,
  never ``Item.timeStamp``), Customer (+ Contact with ``Emails.ContactEmail``), Sale (+ SaleLines,
  SalePayments), Shop, Register, Employee, PaymentType, TaxCategory.
- Writes: ``POST Item.json`` (answers with the new ItemShops), ``DELETE Item/{id}.json``
  (archives and zeroes stock: items are never deleted), ``POST Customer.json``, ``POST Sale.json``
  with validation: unknown shop/register/employee/customer/item/taxCategory/paymentType, and a
  completed sale whose payments do not cover its total, answer 400 with the R-Series body
  ``{"httpCode","httpMessage","message","errorClass"}`` (the four fields are documented; the
  message texts are ours). Totals: calcSubtotal = sum(round2(qty*unitPrice)), calcTax1 =
  sum(round2(line*rate of the line's tax category)), calcTotal = their sum; a completed sale lowers
  stock on hand (moving ItemShop.timeStamp). ``GET Sale.json?referenceNumber=X`` finds it again.
  ``POST Sale/{id}/refund.json`` (10 drips, +0.5 per nested entity): a completed refund sale
  whose lines name the SaleLines they give back (``parentSaleLineID``, negative quantities, at
  the sale's prices); only a completed sale, never more than was sold per line (see
  ``h_post_refund`` for the sources).
- The neutral model's ``delete()`` is rendered as what Lightspeed would show: the item is still
  there, **archived, with zero stock** (and, like the neutral mutation, no timestamp moves).
- Leaky bucket per account+client: size 90 (+10 per extra register), drip 1/s (+0.5/s per extra
  register) on ``self.limit_time()``; costs from the notes' table (GET 1, +0.1/+0.2 per to-one /
  to-many relation and doubled on list calls, ``count=1`` = 10, POST/PUT 1 and POST/PUT/DELETE
  Sale 2 (+3 when completed), +0.5 per nested entity in the payload). Headers:
  ``X-LS-API-Bucket-Level`` (``level/size``), ``X-LS-API-Drip-Rate``, ``X-LS-API-Request-Cost``,
  ``X-LS-Acct-Id``, ``X-LS-OAuth-Client-Id``. The request that pushes the level past the size is
  allowed; later ones get 429 with ``X-LS-API-RateLimit-Type: api-leaky-bucket`` and
  ``Retry-After`` in seconds (real seconds: limit-clock seconds divided by the time scale).
  Optional burst limiter (switch ``burst_limiter``, a fixed 1 s window, ``X-LS-API-Burst-Level``,
  type ``api-burst-limiter``).

Switches (constructor keywords) for what the notes mark **unconfirmed** or optional:

- ``revoke_on_first_use=True``: the 2026-01-15 rule; False revokes the old refresh token the moment
  a new one is issued (the pre-2026 behaviour: a lost refresh answer then breaks the chain).
- ``revoke_old_access_on_refresh=True``: a refresh revokes the access token it replaces (what the
  underlying OAuth server library does; not stated by Lightspeed).
- ``acct_in_token_response=True``: the token answer carries ``"acct"`` (the real server only puts it
  in the JWT claim); ``jwt_access_tokens=False``: access tokens shaped like an (unsigned) JWT whose
  payload carries ``acct``, ``aud``, ``scope``, ``exp``.
- ``reject_scope_in_token_request=True``: a ``scope`` field on the token call answers
  ``400 invalid_grant`` (seen by integrators, laravel-lightspeed-retail-api #36).
- ``case_insensitive_equals=True``: string equality and LIKE ignore case (MySQL-style collation).
- ``unique_custom_sku=True``: POST Item with a customSku already in use answers 400 "already
  exists".
- ``unit_price_overrides=True``: an explicit SaleLine ``unitPrice`` replaces the item's price.
- ``reference_number_unique=False``: referenceNumber is not an idempotency key (no guarantee found).
- ``refund_keeps_reference=False``: ``POST Sale/{id}/refund.json`` drops the referenceNumber sent
  with it (no source says the refund endpoint keeps it); True keeps it, as ``POST Sale.json`` does.
- ``burst_limiter=False``; ``registers=1`` (bucket size and drip grow with registers).
- ``uncoded_items`` (default: one for every six products, rounded up): items only this account
  has (gift cards, labour, shipping...), with an empty ``customSku`` and a ``systemSku``, as one
  recorded account had 38 of 234 (issue 17, lines 7 and 18). 0 is the kind behaviour.
- ``paging="cursor"``: V3 ``next``/``previous`` links. ``"offset"`` answers every list in the
  older form (``@attributes`` with ``count``/``offset``/``limit``, no ``next``) and honours
  ``offset``; ``"offset_ignored"`` answers that form but always from the first row (issue 17,
  line 8: a client must go on by offset, or fail loudly, never stop after page 1).
- ``limits`` override dict: ``bucket_size``, ``drip``, ``burst`` (per second, default 20) and
  ``day`` (default None). ``day`` is **not a Lightspeed limit**: it is a test hook modelling an
  account that is cut off for the rest of the UTC day (``self.clock``); it answers 429 with
  ``X-LS-API-RateLimit-Type: api-daily-quota`` and a Retry-After until midnight.

Not modelled: XML (no ``.json`` suffix), V2 ``orderby``, ``or=`` queries, PUT (stock is
moved with the neutral mutations), the refresh throttle (5 per minute), the revoke endpoint's effect
on access tokens, custom fields, matrices, X-Series.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets as pysecrets
import uuid
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from synccli.clock import Clock
from synccli.sandbox.core import (
    LeakyBucket,
    Request,
    Response,
    SandboxApp,
    _json_default,
    ceil_seconds,
    json_body,
)
from synccli.sandbox.data import Customer, Invoice, Product, World, product_revision

DEFAULT_ACCOUNT = "184467"
DEFAULT_CLIENT_ID = "synccli-sandbox-client"
DEFAULT_CLIENT_SECRET = "ls-sandbox-client-secret-0f3c9a"
CENT = Decimal("0.01")
API = "/API/V3/Account"
# Limits high enough never to answer 429 (a benchmark's twin sandbox, throughput runs).
NO_LIMITS: dict[str, float | None] = {"bucket_size": 1e12, "drip": 1e9, "burst": 10**9, "day": None}

_REASON = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
}

TAX_CATEGORIES = [  # (taxCategoryID, tax1Name, tax1Rate)
    ("1", "GST", Decimal("0.15")),
    ("2", "Sales Tax", Decimal("0.0825")),
    ("3", "Exempt", Decimal("0")),
]
PAYMENT_TYPES = [  # (paymentTypeID, name, type)
    ("1", "Cash", "cash"),
    ("2", "Check", "check"),
    ("3", "Credit Card", "credit card"),
    ("4", "Credit Account", "credit account"),
]
EMPLOYEES = [("1", "Sandbox", "Admin"), ("2", "Jane", "Cashier")]
SHOPS = [("1", "Main Store")]
UNCODED_NAMES = ["Gift Card", "Labour (hour)", "Shipping", "Gift Wrap", "Repair", "Deposit"]

# ------------------------------------------------------------------------------------------------
# errors and small helpers


class _Fail(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def ls_error(status: int, message: str, error_class: str = "InvalidArgumentException") -> Response:
    """The R-Series REST error body."""
    return Response(
        status,
        {
            "httpCode": str(status),
            "httpMessage": _REASON.get(status, "Error"),
            "message": message,
            "errorClass": error_class,
        },
    )


def _bad(message: str, error_class: str = "InvalidArgumentException") -> _Fail:
    return _Fail(ls_error(400, message, error_class))


_INVALID_REQUEST = (
    "The request is missing a required parameter, includes an invalid "
    "parameter value, includes a parameter more than once, or is otherwise "
    "malformed."
)
_INVALID_GRANT = (
    "The provided authorization grant (e.g., authorization code, resource "
    "owner credentials) or refresh token is invalid, expired, revoked, does "
    "not match the redirection URI used in the authorization request, or was "
    "issued to another client."
)


def oauth_error(status: int, error: str, description: str, hint: str | None = None) -> Response:
    body = {"error": error, "error_description": description, "message": description}
    if hint:
        body["hint"] = hint
    return Response(status, body)


def fmt_time(dt: datetime) -> str:
    # isoformat(timespec="seconds") drops the microseconds as replace(microsecond=0) would
    return dt.astimezone(UTC).isoformat(timespec="seconds")


def money(value: Decimal) -> str:
    return format(value.quantize(CENT, ROUND_HALF_UP), "f")


def round2(value: Decimal) -> Decimal:
    return value.quantize(CENT, ROUND_HALF_UP)


def num(value: float | Decimal) -> str:
    text = f"{float(value):.3f}".rstrip("0").rstrip(".")
    return text or "0"


def qty(value: Decimal) -> str:
    return format(value.normalize(), "f") if value != value.to_integral() else str(int(value))


def one_or_many(records: list[dict[str, Any]]) -> Any:
    """Lightspeed's collection rendering: "" when empty, an object for one, a list for several."""
    if not records:
        return ""
    return records[0] if len(records) == 1 else records


def as_list(value: Any) -> list[Any]:
    if value in (None, "") or value == []:
        return []
    return value if isinstance(value, list) else [value]


def to_bool(value: Any, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def to_decimal(value: Any, what: str) -> Decimal:
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise _bad(f"Invalid value for {what}: {value!r}") from None
    if not result.is_finite():
        raise _bad(f"Invalid value for {what}: {value!r}")
    return result


_SPACED_OFFSET = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?) (\d\d:?\d\d)")


@lru_cache(maxsize=65536)
def parse_time(text: str) -> datetime | None:
    """An R-Series date: ISO 8601 with ±HH:MM, ±HHMM or Z; None when unreadable."""
    value = text.strip()
    # A '+' sent unencoded arrives as a space ("2024-01-01T00:00:00 00:00"): read as the '+' it
    # was, as Lightspeed does (issue 17, line 18, from recorded answers; darrylmorley/
    # lightspeed-retail-sdk sends ``timeStamp=>,`` and its offset unencoded and works).
    plus = _SPACED_OFFSET.fullmatch(value)
    if plus:
        value = f"{plus.group(1)}+{plus.group(2)}"
    if not value or " " in value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _b64(obj: Any) -> str:
    return base64.b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode()


def _q(value: str) -> str:
    return quote(str(value), safe="")


# ------------------------------------------------------------------------------------------------
# entity specifications


@dataclass
class Spec:
    pk: str
    sortable: tuple[str, ...]
    relations: dict[str, bool] = field(default_factory=dict)  # name -> to-many
    archived: bool = False  # has the archived flag (and the archived= parameter applies)


SPECS: dict[str, Spec] = {
    "Item": Spec("itemID", ("itemID", "timeStamp", "description"), {"ItemShops": True}, True),
    "ItemShop": Spec("itemShopID", ("itemShopID", "itemID", "timeStamp")),
    "Customer": Spec(
        "customerID", ("customerID", "timeStamp", "firstName", "lastName"), {"Contact": False}, True
    ),
    "Sale": Spec(
        "saleID",
        ("saleID", "timeStamp", "completeTime"),
        {"SaleLines": True, "SalePayments": True},
        True,
    ),
    "Shop": Spec("shopID", ("shopID", "name")),
    "Register": Spec("registerID", ("registerID", "name")),
    "Employee": Spec("employeeID", ("employeeID", "lastName")),
    "PaymentType": Spec("paymentTypeID", ("paymentTypeID", "name")),
    "TaxCategory": Spec("taxCategoryID", ("taxCategoryID", "tax1Name")),
}
NESTED_ENTITIES = {
    "SaleLine",
    "SalePayment",
    "ItemPrice",
    "ItemShop",
    "Contact",
    "ContactEmail",
    "ContactPhone",
    "ContactAddress",
    "ContactWebsite",
}
CONTROL = {
    "limit",
    "sort",
    "after",
    "before",
    "load_relations",
    "archived",
    "archive",
    "count",
    "offset",
}
# ``field=OP,value`` [D introduction/parameters/]: the text before the first comma is an operator
# whenever it is one of these, so a plain value such as ``IN,[A]`` or ``~,A%`` is read as a query,
# not as itself. ``=`` is the explicit equal: after ``=,`` the rest is the value, verbatim (issue
# #16 line 15), which is how a client compares any value exactly.
OPERATORS = (">=", "<=", "><", "!=", "!~", ">", "<", "~", "IN", "=")
DATE_FIELDS = {"timeStamp", "createTime", "completeTime", "updateTime"}
# The fields a filter may name through a loaded relation: those its records carry (as rendered
# here); any other is refused as a field the record lacks is ("Invalid field").
SALE_LINE_FIELDS = frozenset(
    {
        "saleLineID",
        "createTime",
        "timeStamp",
        "unitQuantity",
        "unitPrice",
        "normalUnitPrice",
        "discountAmount",
        "discountPercent",
        "avgCost",
        "fifoCost",
        "tax",
        "tax1Rate",
        "tax2Rate",
        "isLayaway",
        "isWorkorder",
        "isSpecialOrder",
        "displayableSubtotal",
        "displayableUnitPrice",
        "calcLineDiscount",
        "calcTransactionDiscount",
        "calcTotal",
        "calcSubtotal",
        "calcTax1",
        "calcTax2",
        "taxClassID",
        "customerID",
        "discountID",
        "employeeID",
        "itemID",
        "noteID",
        "parentSaleLineID",
        "shopID",
        "taxCategoryID",
        "saleID",
    }
)
RELATION_FIELDS: dict[str, frozenset[str]] = {"SaleLines": SALE_LINE_FIELDS}


def nested_count(body: Any, key: str | None = None) -> int:
    """Entities nested in a write payload (each costs +0.5 drip)."""
    total = 0
    if isinstance(body, dict):
        if key in NESTED_ENTITIES:
            total += 1
        for k, v in body.items():
            if isinstance(v, list):
                total += sum(nested_count(item, k) for item in v)
            elif isinstance(v, dict):
                total += nested_count(v, k)
    return total


def request_cost(
    method: str, entity: str, params: dict[str, str], body: Any, is_list: bool
) -> float:
    """The notes' cost table, computed from the request alone."""
    spec = SPECS.get(entity)
    if method == "GET":
        if params.get("count") == "1":
            return 10.0
        cost = 1.0
        names = _relation_names(params.get("load_relations"), spec) if spec else []
        for name in names:
            many = spec.relations.get(name, True) if spec else True
            cost += (0.2 if many else 0.1) * (2 if is_list else 1)
        return round(cost, 3)
    if entity == "Sale/refund":
        # "POST/PUT ... Sale Refund: 10" (notes §5 cost table); nested entities +0.5 each as
        # for every write (the harsher reading: the table does not say the 10 includes them)
        return 10.0 + 0.5 * nested_count(body)
    if entity in ("Sale", "SaleLine"):
        cost = 2.0
        completed = isinstance(body, dict) and to_bool(body.get("completed"))
        if entity == "Sale" and method in ("POST", "PUT") and completed:
            cost += 3.0
    else:
        cost = 1.0
    if method in ("POST", "PUT"):
        cost += 0.5 * nested_count(body)
    return cost


def _relation_names(raw: str | None, spec: Spec | None) -> list[str]:
    if raw is None or raw == "":
        return []
    if raw.strip().lower() == "all":
        return list(spec.relations) if spec else []
    try:
        names = json.loads(raw)
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _bad('load_relations must be a JSON array, e.g. load_relations=["ItemShops"]')
    return names


Row = tuple[dict[str, Any], Callable[[list[str]], dict[str, Any]]]
# entities rendered from products alone: their rows and listings are cached per catalogue change
PRODUCT_ENTITIES = ("Item", "ItemShop")

# ------------------------------------------------------------------------------------------------
# product rows, rendered once per product revision
#
# A full read of 50,000 items rendered every row as dicts and JSON-encoded each page whole. The
# rows of Item and ItemShop are now kept per product (under its revision, see
# synccli.sandbox.data.product_revision, so a change to a product re-renders that product only),
# and each row also keeps its JSON text, written straight from the row's values with the templates
# below: a listing page is those texts joined. The templates must write exactly what json.dumps
# writes for the row dicts (default separators, ASCII escapes);
# tests/test_sandbox_listing_cache.py checks that they do.

_esc = json.encoder.encode_basestring_ascii  # json.dumps' own string encoder (ensure_ascii)

_ITEM_TEXT = (
    '{"itemID": %s, "systemSku": %s, "defaultCost": "0", "avgCost": "0", "discountable": "true", '
    '"tax": "true", "archived": %s, "itemType": %s, "serialized": "false", "description": %s, '
    '"modelYear": "0", "upc": %s, "ean": %s, "customSku": %s, "manufacturerSku": %s, '
    '"createTime": %s, "timeStamp": %s, "publishToEcom": "false", "categoryID": "0", '
    '"taxClassID": "1", "departmentID": "0", "itemMatrixID": "0", "manufacturerID": "0", '
    '"seasonID": "0", "defaultVendorID": "0"'
)
_SHOP_TEXT = (
    '{"itemShopID": %s, "qoh": %s, "sellable": %s, "backorder": "0", "componentQoh": "0", '
    '"componentBackorder": "0", "reorderPoint": "0", "reorderLevel": "0", "timeStamp": %s, '
    '"itemID": %s, "shopID": %s}'
)
_ITEM_SHOPS_TEXT = ', "ItemShops": {"ItemShop": [%s, %s]}'
_ITEM_PRICES_TEXT = (
    ', "Prices": {"ItemPrice": [{"amount": %s, "useTypeID": "1", "useType": "Default"}, '
    '{"amount": "0", "useTypeID": "2", "useType": "MSRP"}, '
    '{"amount": "0", "useTypeID": "3", "useType": "Online"}]}}'
)
SHOP_IDS = ("0", "1")  # the account-wide summary and the one shop
_ZERO = Decimal(0)


def _text(value: Any) -> str:
    """``value`` as json.dumps writes it in a response body."""
    if value.__class__ is str:
        return _esc(value)
    return json.dumps(value, default=_json_default)


def _time_key(raw: str) -> str:
    """``_sort_value`` of a date written by :func:`fmt_time`: the text itself (it is already the
    UTC isoformat, which parse_time reads back and isoformat writes again unchanged)."""
    return raw


# (itemShopID of shop "0", of shop "1", qoh, sellable, timeStamp, itemID): an item's ItemShop rows
ShopValues = tuple[str, str, str, str, str, str]


def _shop_values(p: Product, gone: bool, stamp: str | None = None) -> ShopValues:
    """What an item's ItemShop rows show; ``stamp`` is ``fmt_time(p.stock_updated_at)`` when the
    caller has it already."""
    stock = _ZERO if gone else p.stock
    ts = fmt_time(p.stock_updated_at) if stamp is None else stamp
    first = 100000 + p.seq * 10
    return str(first + 0), str(first + 1), qty(stock), qty(max(stock, _ZERO)), ts, str(p.seq)


def _shop_row(values: ShopValues, n: int) -> dict[str, Any]:
    """Shop ``SHOP_IDS[n]``'s ItemShop row."""
    return {
        "itemShopID": values[n],
        "qoh": values[2],
        "sellable": values[3],
        "backorder": "0",
        "componentQoh": "0",
        "componentBackorder": "0",
        "reorderPoint": "0",
        "reorderLevel": "0",
        "timeStamp": values[4],
        "itemID": values[5],
        "shopID": SHOP_IDS[n],
    }


def _shop_text(values: ShopValues, n: int) -> str:
    """``json.dumps(_shop_row(values, n))``."""
    return _SHOP_TEXT % (
        _esc(values[n]),
        _esc(values[2]),
        _esc(values[3]),
        _text(values[4]),
        _esc(values[5]),
        _esc(SHOP_IDS[n]),
    )


def _row_sort_key(row: dict[str, Any], sort_field: str, pk: str) -> tuple[Any, ...]:
    """A listing's sort key of one rendered row: its sort field, then its id."""
    raw = row[sort_field]
    value = _time_key(raw) if sort_field == "timeStamp" else _sort_value(sort_field, raw)
    return (value, int(row[pk]))


class _ShopRow:
    """An ItemShop row's attach (a constant record), with its JSON text and sort key kept."""

    __slots__ = ("row", "_values", "_n", "_text", "_key_field", "_key_pk", "_key")

    def __init__(self, values: ShopValues, n: int) -> None:
        self.row = _shop_row(values, n)
        self._values = values
        self._n = n
        self._text: bytes | None = None
        self._key_field = self._key_pk = ""  # what _key is the key of
        self._key: tuple[Any, ...] = ()

    def __call__(self, rels: list[str]) -> dict[str, Any]:
        return dict(self.row)

    def text(self, rels: list[str]) -> bytes:
        """``json.dumps(self(rels))``, encoded."""
        if self._text is None:
            self._text = _shop_text(self._values, self._n).encode()
        return self._text

    def sort_key(self, sort_field: str, pk: str) -> tuple[Any, ...]:
        """The listing's ``key`` of this row."""
        if self._key_field != sort_field or self._key_pk != pk:
            self._key = _row_sort_key(self.row, sort_field, pk)
            self._key_field, self._key_pk = sort_field, pk
        return self._key


class _ItemEntry:
    """One item as the account shows it: its Item row (``base``; this object is the row's
    attach), its ItemShop rows, and the JSON texts of both, each made at most once while the
    product keeps its revision. What a listing may not need (stock, price, texts) is made on first
    use, as the uncached attach made it."""

    __slots__ = (
        "product",
        "revision",
        "gone",
        "base",
        "_stamp",
        "_stock",
        "_shops",
        "_price",
        "_text",
        "_text_shops",
        "_key_field",
        "_key_pk",
        "_key",
    )

    def __init__(self, p: Product, gone: bool, codes: dict[str, str] | None = None) -> None:
        self.product = p
        self.revision = product_revision(p)  # before reading the product: see product_revision
        self.gone = gone
        created_at, updated_at, stock_at = p.created_at, p.updated_at, p.stock_updated_at
        created = fmt_time(created_at)
        # a product's dates are often one datetime object: written once, then
        updated = created if updated_at is created_at else fmt_time(updated_at)
        self.base: dict[str, Any] = {
            "itemID": str(p.seq),
            "systemSku": f"21{p.seq:010d}",
            "defaultCost": "0",
            "avgCost": "0",
            "discountable": "true",
            "tax": "true",
            "archived": "true" if (p.archived or gone) else "false",
            "itemType": "default" if p.tracked else "non_inventory",
            "serialized": "false",
            "description": p.name,
            "modelYear": "0",
            "upc": (codes or {}).get("upc", ""),
            "ean": (codes or {}).get("ean", ""),
            "customSku": p.code,
            "manufacturerSku": (codes or {}).get("manufacturerSku", ""),
            "createTime": created,
            "timeStamp": updated,
            "publishToEcom": "false",
            "categoryID": "0",
            "taxClassID": "1",
            "departmentID": "0",
            "itemMatrixID": "0",
            "manufacturerID": "0",
            "seasonID": "0",
            "defaultVendorID": "0",
        }
        self._stamp = (
            updated if stock_at is updated_at else created if stock_at is created_at else None
        )
        self._stock: ShopValues | None = None
        self._shops: list[_ShopRow] | None = None
        self._price: str | None = None
        self._text: bytes | None = None
        self._text_shops: bytes | None = None
        self._key_field = self._key_pk = ""  # what _key is the key of
        self._key: tuple[Any, ...] = ()

    def current(self, p: Product) -> bool:
        """Still what ``p`` renders as: the same product, not changed since."""
        revision = self.revision
        return self.product is p and revision is not None and revision == product_revision(p)

    def stock(self) -> ShopValues:
        if self._stock is None:
            self._stock = _shop_values(self.product, self.gone, self._stamp)
        return self._stock

    def shops(self) -> list[_ShopRow]:
        """The item's ItemShop rows."""
        if self._shops is None:
            values = self.stock()
            self._shops = [_ShopRow(values, n) for n in range(len(SHOP_IDS))]
        return self._shops

    def price(self) -> str:
        if self._price is None:
            self._price = money(self.product.price)
        return self._price

    def __call__(self, rels: list[str]) -> dict[str, Any]:
        out = dict(self.base)
        if "ItemShops" in rels:
            out["ItemShops"] = {"ItemShop": one_or_many([shop(rels) for shop in self.shops()])}
        out["Prices"] = {
            "ItemPrice": [
                {"amount": self.price(), "useTypeID": "1", "useType": "Default"},
                {"amount": "0", "useTypeID": "2", "useType": "MSRP"},
                {"amount": "0", "useTypeID": "3", "useType": "Online"},
            ]
        }
        return out

    def text(self, rels: list[str]) -> bytes:
        """``json.dumps(self(rels))``, encoded."""
        with_shops = "ItemShops" in rels
        text = self._text_shops if with_shops else self._text
        if text is None:
            b = self.base
            out = _ITEM_TEXT % (
                _esc(b["itemID"]),
                _esc(b["systemSku"]),
                _esc(b["archived"]),
                _esc(b["itemType"]),
                _text(b["description"]),
                _text(b["upc"]),
                _text(b["ean"]),
                _text(b["customSku"]),
                _text(b["manufacturerSku"]),
                _text(b["createTime"]),
                _text(b["timeStamp"]),
            )
            if with_shops:  # both shops, so always a list of two
                values = self.stock()
                out += _ITEM_SHOPS_TEXT % (_shop_text(values, 0), _shop_text(values, 1))
            text = (out + _ITEM_PRICES_TEXT % _esc(self.price())).encode()
            if with_shops:
                self._text_shops = text
            else:
                self._text = text
        return text

    def sort_key(self, sort_field: str, pk: str) -> tuple[Any, ...]:
        """The listing's ``key`` of this row."""
        if self._key_field != sort_field or self._key_pk != pk:
            self._key = _row_sort_key(self.base, sort_field, pk)
            self._key_field, self._key_pk = sort_field, pk
        return self._key


# ------------------------------------------------------------------------------------------------
# the app


@dataclass
class _AccessToken:
    account: str
    client_id: str
    expires_at: datetime
    replaces_refresh: str | None = None  # the refresh token spent to obtain this one
    used: bool = False
    revoked: bool = False


@dataclass
class _RefreshToken:
    account: str
    client_id: str
    issued_at: datetime
    access_token: str
    state: str = "active"  # active | spent


@dataclass
class _Code:
    account: str
    client_id: str
    redirect_uri: str | None
    expires_at: datetime
    challenge: str | None = None
    method: str = "plain"
    used: bool = False


class LightspeedSandbox(SandboxApp):
    """Lightspeed Retail R-Series V3, see the module docstring for what is and is not modelled."""

    provider = "lightspeed"

    def __init__(
        self,
        *,
        seed: int = 42,
        products: int = 50,
        customers: int = 30,
        clock: Clock | None = None,
        time_scale: float = 1.0,
        faults: str | None = None,
        limits: dict[str, Any] | None = None,
        account_id: str = DEFAULT_ACCOUNT,
        token_ttl: int = 1800,
        revoke_on_first_use: bool = True,
        revoke_old_access_on_refresh: bool = True,
        acct_in_token_response: bool = True,
        jwt_access_tokens: bool = False,
        reject_scope_in_token_request: bool = True,
        case_insensitive_equals: bool = True,
        unique_custom_sku: bool = True,
        unit_price_overrides: bool = True,
        reference_number_unique: bool = False,
        refund_keeps_reference: bool = False,
        burst_limiter: bool = False,
        registers: int = 1,
        paging: str = "cursor",
        uncoded_items: int | None = None,
        **switches: Any,
    ) -> None:
        super().__init__(seed=seed, clock=clock, time_scale=time_scale, faults=faults)
        if switches:
            raise TypeError(f"unknown LightspeedSandbox switches: {', '.join(sorted(switches))}")
        self.tenant = str(account_id)
        self.account_name = "Sandbox Retail Co."
        self.token_ttl = token_ttl
        self.revoke_on_first_use = revoke_on_first_use
        self.revoke_old_access_on_refresh = revoke_old_access_on_refresh
        self.acct_in_token_response = acct_in_token_response
        self.jwt_access_tokens = jwt_access_tokens
        self.reject_scope_in_token_request = reject_scope_in_token_request
        self.case_insensitive_equals = case_insensitive_equals
        self.unique_custom_sku = unique_custom_sku
        self.unit_price_overrides = unit_price_overrides
        self.reference_number_unique = reference_number_unique
        self.refund_keeps_reference = refund_keeps_reference
        self.burst_limiter = burst_limiter
        if paging not in ("cursor", "offset", "offset_ignored"):
            raise ValueError("paging is 'cursor', 'offset' or 'offset_ignored'")
        self.paging = paging
        self.registers = max(1, registers)
        extra = self.registers - 1
        self.limits: dict[str, Any] = {
            "bucket_size": 90 + 10 * extra,
            "drip": 1 + 0.5 * extra,
            "burst": 20,
            "day": None,
        }
        self.limits.update(limits or {})
        self.clients: dict[str, dict[str, Any]] = {}
        self.add_client(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        self.codes: dict[str, _Code] = {}
        self.access_tokens: dict[str, _AccessToken] = {}
        self.refresh_tokens: dict[str, _RefreshToken] = {}
        self.buckets: dict[tuple[str, str], LeakyBucket] = {}
        self.bursts: dict[tuple[str, str], list[float]] = {}  # key -> [window start, used]
        self.day_used: dict[tuple[str, ...], int] = {}
        self.token_calls = 0
        # (method, path, raw query) of the latest API calls, for wire checks
        self.log: deque[tuple[str, str, str]] = deque(maxlen=10_000)
        self._known: dict[str, dict[str, Product]] = {}  # tenant -> product id -> Product
        # tenant -> (live, deleted) items' renderings by product id (see _ItemEntry)
        self._entries: dict[str, tuple[dict[str, _ItemEntry], dict[str, _ItemEntry]]] = {}
        self._company: dict[str, str] = {}
        # tenant -> items only this account has, with no customSku (see ``add_uncoded_items``)
        self._uncoded: dict[str, list[Product]] = {}
        # product id -> its other codes (manufacturerSku, upc, ean), set by POST Item or
        # ``set_codes``; the neutral code is the customSku
        self._codes: dict[str, dict[str, str]] = {}
        self.started = self.clock.now()
        world = self.catalogue.tenant(self.tenant)
        self.catalogue.gen.populate(world, products, customers)
        self.add_uncoded_items((products + 5) // 6 if uncoded_items is None else uncoded_items)
        self._sync(self.tenant)
        self._routes()

    # test helpers -----------------------------------------------------------------------------
    def add_client(
        self, client_id: str, client_secret: str, redirect_uris: list[str] | None = None
    ) -> dict[str, Any]:
        """Register an OAuth client (an app in the Lightspeed developer portal)."""
        self.clients[client_id] = {"secret": client_secret, "redirect_uris": redirect_uris}
        return {"client_id": client_id, "client_secret": client_secret}

    def issue_tokens(
        self, account: str | None = None, client_id: str = DEFAULT_CLIENT_ID, ttl: int | None = None
    ) -> dict[str, Any]:
        """Skip the browser: a token answer as the token endpoint would give it."""
        with self.lock:
            return self._issue(account or self.tenant, client_id, ttl=ttl)

    def credentials(self, account: str | None = None) -> dict[str, Any]:
        """What a connection needs: client id/secret, account id and a fresh token pair."""
        tokens = self.issue_tokens(account)
        return {
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": self.clients[DEFAULT_CLIENT_ID]["secret"],
            "account_id": account or self.tenant,
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "expires_in": tokens["expires_in"],
        }

    def add_uncoded_items(self, n: int, tenant: str | None = None) -> list[Product]:
        """Items only this Lightspeed account has, none with a ``customSku``: gift cards,
        labour, shipping, as real accounts keep them (issue 17 line 7: 38 of 234 items of one
        recorded account had an empty customSku). They are not in the neutral catalogue, so
        no other simulator shows them; their ``systemSku`` is set, as Lightspeed sets it on
        every item."""
        tenant = tenant or self.tenant
        world = self.catalogue.tenant(tenant)
        kept = self._uncoded.setdefault(tenant, [])
        at = self.clock.now() - timedelta(days=90)
        made = []
        for _ in range(n):
            k = len(kept)
            name = f"{UNCODED_NAMES[k % len(UNCODED_NAMES)]} {k // len(UNCODED_NAMES) + 1}"
            item = Product(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"lightspeed/{tenant}/uncoded/{k}")),
                code="",
                name=name,
                description=name,
                price=Decimal("5.00") * (k % 7 + 1),
                stock=Decimal(0),
                updated_at=at,
                stock_updated_at=at,
                created_at=at,
                tracked=False,
                seq=world.seq(),
            )
            kept.append(item)
            made.append(item)
        self._entries.pop(tenant, None)
        return made

    def set_codes(self, product: Product, **codes: str) -> None:
        """Give an item a manufacturerSku, upc or ean (what a merchant types in Lightspeed)."""
        unknown = set(codes) - {"manufacturerSku", "upc", "ean"}
        if unknown:
            raise ValueError(f"not an item code field: {', '.join(sorted(unknown))}")
        self._codes.setdefault(product.id, {}).update(codes)
        product.updated_at = self.clock.now()  # an edit in Lightspeed moves the item's stamp

    def items(self, tenant: str | None = None) -> list[tuple[Product, bool]]:
        """Every item the account shows, as (product, deleted): deleted ones render archived."""
        live, gone = self._item_products(tenant or self.tenant)
        return [(p, False) for p in live] + [(p, True) for p in gone]

    def _item_products(self, tenant: str) -> tuple[list[Product], list[Product]]:
        """The products the account shows: (live ones, deleted ones)."""
        with self.catalogue.lock:
            self._sync(tenant)
            world = self.catalogue.tenant(tenant)
            known = self._known.get(tenant, {})
            return list(world.products.values()) + self._uncoded.get(tenant, []), [
                known[i] for i in world.deleted_products if i in known
            ]

    def bucket(self, account: str | None = None, client_id: str = DEFAULT_CLIENT_ID) -> LeakyBucket:
        key = (account or self.tenant, client_id)
        if key not in self.buckets:
            self.buckets[key] = LeakyBucket(
                float(self.limits["bucket_size"]), float(self.limits["drip"])
            )
        return self.buckets[key]

    def _sync(self, tenant: str) -> None:
        """Remember every product seen, so a neutral delete() can still be shown as archived."""
        world = self.catalogue.tenant(tenant)
        known = self._known.setdefault(tenant, {})
        for pid, p in world.products.items():
            known.setdefault(pid, p)

    # routes -----------------------------------------------------------------------------------
    def _routes(self) -> None:
        acct = r"(?P<account>[^/]+)"
        self.route("GET", r"/auth/oauth/authorize", "oauth.authorize", self.h_authorize)
        self.route("POST", r"/auth/oauth/token", "oauth.token", self.h_token)
        self.route("POST", r"/auth/oauth/revoke", "oauth.revoke", self.h_revoke)
        self.route("GET", r"/API/V3/Account\.json", "Account", self.h_account)
        for entity in SPECS:
            self.route("GET", rf"{API}/{acct}/{entity}\.json", entity, _bind(self.h_list, entity))
            self.route(
                "GET",
                rf"{API}/{acct}/{entity}/(?P<rid>[^/]+)\.json",
                f"{entity}/id",
                _bind(self.h_one, entity),
            )
        for entity, handler in (
            ("Item", self.h_post_item),
            ("Customer", self.h_post_customer),
            ("Sale", self.h_post_sale),
        ):
            self.route("POST", rf"{API}/{acct}/{entity}\.json", f"POST {entity}", handler)
        # a refund of a completed sale, per SaleLine [D tutorials/sales/; notes §4]
        self.route(
            "POST",
            rf"{API}/{acct}/Sale/(?P<rid>[^/]+)/refund\.json",
            "POST Sale/refund",
            self.h_post_refund,
        )
        self.route(
            "DELETE", rf"{API}/{acct}/Item/(?P<rid>[^/]+)\.json", "DELETE Item", self.h_delete_item
        )

    # auth + limits ----------------------------------------------------------------------------
    def before(self, req: Request, endpoint: str) -> Response | None:
        if endpoint.startswith("oauth."):
            return None
        with self.lock:
            self.log.append((req.method, req.path, req.query_string))
            token = self._bearer(req)
            if isinstance(token, Response):
                return token
            req.environ["ls.token"] = token
            match = re.match(rf"^{API}/([^/]+)/", req.path, re.IGNORECASE)
            if match and match.group(1) != token.account:
                return ls_error(
                    403,
                    "Not Authorized: Insufficient rights to perform the request",
                    "InsufficientRightsException",
                )
            cost = self._cost(req, endpoint)
            req.environ["ls.cost"] = cost
            return self._throttle(req, token, cost)

    def _bearer(self, req: Request) -> _AccessToken | Response:
        """The request's access token, or the 401 that refuses it. A token's first use spends
        the refresh token it replaced (when refresh tokens are revoked on first use)."""
        header = req.header("authorization") or ""
        if not header.lower().startswith("bearer "):
            return oauth_error(
                401,
                "access_denied",
                "The resource owner or authorization server denied the request.",
                'Missing "Authorization" header',
            )
        token = self.access_tokens.get(header[7:].strip())
        if token is None or self.clock.now() >= token.expires_at:
            return oauth_error(
                401,
                "access_denied",
                "The resource owner or authorization server denied the request.",
                "Access token could not be verified",
            )
        if token.revoked:
            return oauth_error(
                401,
                "access_denied",
                "The resource owner or authorization server denied the request.",
                "Access token has been revoked",
            )
        if not token.used:
            token.used = True
            if token.replaces_refresh and self.revoke_on_first_use:
                old = self.refresh_tokens.get(token.replaces_refresh)
                if old is not None:
                    old.state = "spent"
        return token

    def _cost(self, req: Request, endpoint: str) -> float:
        """The request's units from the bucket (1 when the request cannot be costed)."""
        entity = endpoint.split("/")[0].removeprefix("POST ").removeprefix("DELETE ")
        if endpoint == "POST Sale/refund":
            entity = "Sale/refund"
        params = dict(parse_qsl(req.query_string, keep_blank_values=True))
        body = None
        if req.method in ("POST", "PUT"):
            try:
                body = req.json()
            except (ValueError, UnicodeDecodeError):
                body = None
        try:
            return request_cost(
                req.method,
                entity,
                params,
                body,
                is_list="/" not in endpoint and req.method == "GET",
            )
        except _Fail:
            return 1.0

    def _throttle(self, req: Request, token: _AccessToken, cost: float) -> Response | None:
        """The 429 of the first limit the request would break (daily quota, burst, leaky
        bucket), or None with the request counted against each."""
        key = (token.account, token.client_id)
        t = self.limit_time()
        day_limit = self.limits.get("day")
        if day_limit is not None:
            refused = self._spend_day(key, token, day_limit)
            if refused is not None:
                return refused
        if self.burst_limiter:
            refused = self._spend_burst(req, key, token, t)
            if refused is not None:
                return refused
        bucket = self.bucket(token.account, token.client_id)
        if not bucket.take(t, cost):
            resp = ls_error(
                429,
                "Rate Limit Exceeded: Please decrease your request volume. "
                "To find out more about our rate limits, please visit: "
                "https://developers.lightspeedhq.com/retail/introduction/ratelimits/",
                "RateLimitedException",
            )
            resp.headers.update(
                {
                    "X-LS-API-RateLimit-Type": "api-leaky-bucket",
                    "Retry-After": ceil_seconds(bucket.retry_after(t) / self.time_scale),
                }
            )
            resp.headers.update(self._bucket_headers(token, 0.0, t))
            return resp
        req.environ["ls.t"] = t
        return None

    def _spend_day(
        self, key: tuple[str, str], token: _AccessToken, day_limit: float
    ) -> Response | None:
        today = self.clock.now().date().isoformat()
        used = self.day_used.get((*key, today), 0)
        if used >= day_limit:
            now = self.clock.now()
            midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            resp = ls_error(
                429,
                "Rate Limit Exceeded: the account's daily allowance is spent",
                "RateLimitedException",
            )
            resp.headers.update(
                {
                    "X-LS-API-RateLimit-Type": "api-daily-quota",
                    "Retry-After": str(int((midnight - now).total_seconds()) or 1),
                    "X-LS-Acct-Id": token.account,
                }
            )
            return resp
        self.day_used[(*key, today)] = used + 1
        return None

    def _spend_burst(
        self, req: Request, key: tuple[str, str], token: _AccessToken, t: float
    ) -> Response | None:
        window = self.bursts.setdefault(key, [t, 0])
        if t - window[0] >= 1.0:
            window[0], window[1] = t, 0
        if window[1] >= int(self.limits["burst"]):
            resp = ls_error(
                429,
                "Rate Limit Exceeded: burst rate limit exceeded",
                "RateLimitedException",
            )
            resp.headers.update(
                {
                    "X-LS-API-RateLimit-Type": "api-burst-limiter",
                    "Retry-After": ceil_seconds((window[0] + 1.0 - t) / self.time_scale),
                    "X-LS-API-Burst-Level": f"{window[1]}/{self.limits['burst']}",
                }
            )
            resp.headers.update(self._bucket_headers(token, 0.0, t))
            return resp
        window[1] += 1
        req.environ["ls.burst"] = f"{window[1]}/{self.limits['burst']}"
        return None

    def _bucket_headers(self, token: _AccessToken, cost: float, t: float) -> dict[str, str]:
        bucket = self.bucket(token.account, token.client_id)
        bucket._drain(t)
        return {
            "X-LS-API-Bucket-Level": f"{num(bucket.level)}/{num(bucket.size)}",
            "X-LS-API-Drip-Rate": num(bucket.drip),
            "X-LS-API-Request-Cost": num(cost),
            "X-LS-Acct-Id": token.account,
            "X-LS-OAuth-Client-Id": token.client_id,
        }

    def after(self, req: Request, endpoint: str, resp: Response) -> None:
        token = req.environ.get("ls.token")
        if token is None or "ls.t" not in req.environ:
            return
        with self.lock:
            resp.headers.update(
                self._bucket_headers(token, req.environ["ls.cost"], req.environ["ls.t"])
            )
            if "ls.burst" in req.environ:
                resp.headers["X-LS-API-Burst-Level"] = req.environ["ls.burst"]

    # OAuth ------------------------------------------------------------------------------------
    def _issue(
        self, account: str, client_id: str, ttl: int | None = None, replaces: str | None = None
    ) -> dict[str, Any]:
        now = self.clock.now()
        ttl = self.token_ttl if ttl is None else ttl
        if self.jwt_access_tokens:
            head = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"RS256"}').rstrip(b"=").decode()
            claims = {
                "iss": "https://cloud.lightspeedapp.com",
                "aud": client_id,
                "sub": "1",
                "acct": account,
                "scope": "employee:all",
                "iat": int(now.timestamp()),
                "nbf": int(now.timestamp()),
                "exp": int(now.timestamp()) + ttl,
                "jti": pysecrets.token_hex(8),
            }
            payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
            access = f"{head}.{payload}.{pysecrets.token_urlsafe(64)}"
        else:
            access = "lsat_" + pysecrets.token_urlsafe(48)
        refresh = "def50200" + pysecrets.token_hex(64)
        self.access_tokens[access] = _AccessToken(
            account, client_id, now + timedelta(seconds=ttl), replaces_refresh=replaces
        )
        self.refresh_tokens[refresh] = _RefreshToken(account, client_id, now, access)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": ttl,
            "access_token": access,
            "refresh_token": refresh,
        }
        if self.acct_in_token_response:
            body["acct"] = account
        return body

    def h_authorize(self, req: Request) -> Response:
        q = req.query
        client = self.clients.get(q.get("client_id", ""))
        if client is None:
            return oauth_error(401, "invalid_client", "Client authentication failed")
        if q.get("response_type") != "code":
            return oauth_error(
                400,
                "unsupported_response_type",
                "The authorization server does not support obtaining an "
                "authorization code using this method.",
                "Check the `response_type` parameter",
            )
        redirect = q.get("redirect_uri")
        allowed = client["redirect_uris"]
        if allowed is not None and redirect not in allowed:
            return oauth_error(401, "invalid_client", "Client authentication failed")
        if not redirect:
            return oauth_error(
                400,
                "invalid_request",
                "The request is missing a required "
                "parameter, includes an invalid parameter value, includes a "
                "parameter more than once, or is otherwise malformed.",
                "Check the `redirect_uri` parameter",
            )
        code = "def502" + pysecrets.token_hex(40)
        self.codes[code] = _Code(
            self.tenant,
            q["client_id"],
            redirect,
            self.clock.now() + timedelta(seconds=60),
            q.get("code_challenge"),
            q.get("code_challenge_method", "plain"),
        )
        params = {"code": code}
        if "state" in q:
            params["state"] = q["state"]
        sep = "&" if "?" in redirect else "?"
        return Response(
            302,
            "",
            {"Location": f"{redirect}{sep}{urlencode(params)}"},
            content_type="text/html; charset=UTF-8",
        )

    def h_token(self, req: Request) -> Response:
        self.token_calls += 1
        ctype = (req.header("content-type") or "").lower()
        if "json" in ctype:
            body = json_body(req)
            form = {k: str(v) for k, v in (body or {}).items()} if isinstance(body, dict) else {}
        else:
            form = req.form()
        grant = form.get("grant_type")
        if not grant:
            return oauth_error(
                400, "invalid_request", _INVALID_REQUEST, "Check the `grant_type` parameter"
            )
        if grant not in ("authorization_code", "refresh_token"):
            return oauth_error(
                400,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
                "Check that all required parameters have been provided",
            )
        client = self.clients.get(form.get("client_id", ""))
        if client is None or client["secret"] != form.get("client_secret"):
            return oauth_error(401, "invalid_client", "Client authentication failed")
        if "scope" in form and self.reject_scope_in_token_request:
            return oauth_error(400, "invalid_grant", _INVALID_GRANT)
        now = self.clock.now()
        with self.lock:
            if grant == "authorization_code":
                return self._grant_code(form, now)
            return self._grant_refresh(form, now)

    def _grant_code(self, form: dict[str, str], now: datetime) -> Response:
        """Exchange an authorization code (once, before it expires, with its PKCE verifier)."""
        code = self.codes.get(form.get("code", ""))
        if not form.get("code"):
            return oauth_error(
                400, "invalid_request", _INVALID_REQUEST, "Check the `code` parameter"
            )
        if code is None or code.client_id != form["client_id"]:
            return oauth_error(
                400, "invalid_grant", _INVALID_GRANT, "Cannot decrypt the authorization code"
            )
        if code.used:
            return oauth_error(
                400, "invalid_grant", _INVALID_GRANT, "Authorization code has been revoked"
            )
        if now >= code.expires_at:
            return oauth_error(
                400, "invalid_grant", _INVALID_GRANT, "Authorization code has expired"
            )
        if code.redirect_uri and form.get("redirect_uri") not in (None, code.redirect_uri):
            return oauth_error(400, "invalid_client", "Client authentication failed")
        if code.challenge:
            verifier = form.get("code_verifier", "")
            if code.method == "S256":
                digest = hashlib.sha256(verifier.encode()).digest()
                computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            else:
                computed = verifier
            if computed != code.challenge:
                return oauth_error(
                    400, "invalid_grant", _INVALID_GRANT, "Failed to verify `code_verifier`."
                )
        code.used = True
        return Response(200, self._issue(code.account, code.client_id))

    def _grant_refresh(self, form: dict[str, str], now: datetime) -> Response:
        """Exchange a refresh token for a new pair (spent now, or on the new token's first use)."""
        raw = form.get("refresh_token")
        if not raw:
            return oauth_error(
                400, "invalid_request", _INVALID_REQUEST, "Check the `refresh_token` parameter"
            )
        token = self.refresh_tokens.get(raw)
        if token is None or token.client_id != form["client_id"]:
            return oauth_error(
                400, "invalid_grant", _INVALID_GRANT, "Cannot decrypt the refresh token"
            )
        if token.state != "active":
            return oauth_error(400, "invalid_grant", _INVALID_GRANT, "Token has been revoked")
        if now >= token.issued_at + timedelta(days=30):
            return oauth_error(400, "invalid_grant", _INVALID_GRANT, "Token has expired")
        if not self.revoke_on_first_use:
            token.state = "spent"
        if self.revoke_old_access_on_refresh:
            old_access = self.access_tokens.get(token.access_token)
            if old_access is not None:
                old_access.revoked = True
        return Response(200, self._issue(token.account, token.client_id, replaces=raw))

    def h_revoke(self, req: Request) -> Response:
        form = req.form() if "json" not in (req.header("content-type") or "") else json_body(req)
        client = self.clients.get(form.get("client_id", ""))
        if client is None or client["secret"] != form.get("client_secret"):
            return oauth_error(401, "invalid_client", "Client authentication failed")
        with self.lock:
            token = self.refresh_tokens.get(form.get("refresh_token", ""))
            if token is not None:
                token.state = "spent"
        return Response(200, {})

    # reads ------------------------------------------------------------------------------------
    def h_account(self, req: Request) -> Response:
        token: _AccessToken = req.environ["ls.token"]
        return Response(
            200,
            {
                "@attributes": {"count": "1"},
                "Account": {
                    "accountID": token.account,
                    "name": self.account_name,
                    "link": {"@attributes": {"href": f"/API/V3/Account/{token.account}"}},
                },
            },
        )

    def h_list(self, req: Request, entity: str, account: str) -> Response:
        try:
            return self._list(req, entity, account)
        except _Fail as fail:
            return fail.response

    def h_one(self, req: Request, entity: str, account: str, rid: str) -> Response:
        try:
            params = dict(parse_qsl(req.query_string, keep_blank_values=True))
            spec = SPECS[entity]
            rels = self._relations(params, spec)
            for base, attach in self._rows(entity, account):
                if base[spec.pk] == rid:
                    return Response(200, {"@attributes": {"count": "1"}, entity: attach(rels)})
            return ls_error(404, f"{entity} not found.", "NotFoundException")
        except _Fail as fail:
            return fail.response

    def _relations(self, params: dict[str, str], spec: Spec) -> list[str]:
        names = _relation_names(params.get("load_relations"), spec)
        for name in names:
            if name not in spec.relations:
                raise _bad(f"Invalid relation: {name}", "InvalidRelationException")
        return names

    def _list(self, req: Request, entity: str, account: str) -> Response:
        pairs = parse_qsl(req.query_string, keep_blank_values=True)
        params = dict(pairs)
        spec = SPECS[entity]
        rels = self._relations(params, spec)
        if params.get("count") == "1" and {"limit", "sort", "after", "before"} & params.keys():
            raise _bad("count cannot be combined with limit, sort, after or before")
        limit = _limit_param(params)
        sort_param = params.get("sort") or spec.pk
        desc = sort_param.startswith("-")
        sort_field = sort_param.lstrip("-")
        if sort_field not in spec.sortable:
            raise _bad(
                f"Invalid sort field: {sort_field}. Sortable fields: " + ", ".join(spec.sortable)
            )
        archived = _archived_param(params)
        filters = [(k, v) for k, v in pairs if k not in CONTROL]
        rows = self._rows(entity, account)
        if rows:
            _check_filters(filters, rows[0][0], spec, rels)
        compiled = [(name, self._compile(name, value)) for name, value in filters]
        row_key = _row_key(entity, sort_field, spec.pk)

        def build() -> tuple[list[Row], list[tuple[Any, ...]]]:
            return _select(rows, spec, archived, compiled, rels, row_key, desc)

        if entity in PRODUCT_ENTITIES:
            # A cursor read asks for the same filtered, sorted listing once per page: build it
            # once per change of the catalogue, not once per page (quadratic at 50,000 items).
            view = ("list", entity, account, tuple(filters), archived, sort_param, tuple(rels))
            selected, keys = self.cached_view((*view, self.case_insensitive_equals), build)
        else:
            selected, keys = build()
        if params.get("count") == "1":
            return Response(200, {"@attributes": {"count": str(len(selected))}})
        if self.paging != "cursor":
            return self._offset_page(req, entity, rels, selected, params, limit)
        start, end = self._cursor_bounds(params, keys, len(selected), desc, sort_field, spec, limit)
        page = selected[start : min(end, start + limit)]
        more = start + len(page) < len(selected)
        listing = _Listing(entity, spec, rels, pairs, limit, sort_param, sort_field)
        return self._cursor_page(req, listing, page, more, start)

    def _cursor_bounds(
        self,
        params: dict[str, str],
        keys: list[tuple[Any, ...]],
        n: int,
        desc: bool,
        sort_field: str,
        spec: Spec,
        limit: int,
    ) -> tuple[int, int]:
        """The rows between the ``after`` and ``before`` tokens: (start, end) in the listing."""
        start, end = 0, n
        if "after" in params:
            token = self._token(params["after"], sort_field, spec)
            # the first row past the token: after it in the listing's order
            start = n - bisect_left(keys, token) if desc else bisect_right(keys, token)
        if "before" in params:
            token = self._token(params["before"], sort_field, spec)
            # the first row at or past the token
            end = n - bisect_right(keys, token) if desc else bisect_left(keys, token)
            start = max(start, end - limit)
        return start, end

    def _cursor_page(
        self, req: Request, listing: _Listing, page: list[Row], more: bool, start: int
    ) -> Response:
        """A page in the V3 form: ``@attributes`` holds the ``next`` and ``previous`` links
        (the query as asked, its limit and sort spelled out, and a token after or before)."""
        entity, spec, rels = listing.entity, listing.spec, listing.rels
        sort_field, limit = listing.sort_field, listing.limit
        base_url = f"{req.environ.get('wsgi.url_scheme', 'http')}://{req.header('host')}{req.path}"
        kept = [(k, v) for k, v in listing.pairs if k not in ("after", "before")]
        names = {k for k, _ in kept}
        if "limit" not in names:
            kept.append(("limit", str(limit)))
        if "sort" not in names:
            kept.append(("sort", listing.sort_param))
        encoded = "&".join(f"{_q(k)}={_q(v)}" for k, v in kept)

        def link(direction: str, base: dict[str, Any]) -> str:
            sort_raw = base[sort_field]
            value = int(sort_raw) if sort_field.endswith("ID") else sort_raw
            token = [value] if sort_field == spec.pk else [value, int(base[spec.pk])]
            return f"{base_url}?{encoded}&{direction}={_q(_b64(token))}"

        nxt = link("after", page[-1][0]) if page and more else ""
        prev = link("before", page[0][0]) if page and start > 0 else ""
        body: dict[str, Any] = {"@attributes": {"next": nxt, "previous": prev}}
        if entity in PRODUCT_ENTITIES:
            # the rows' kept JSON texts, joined as json.dumps would join the rows themselves
            head = json.dumps(body, default=_json_default).encode()
            if not page:
                return Response(200, head)
            head = b"%s, %s: " % (head[:-1], _text(entity).encode())
            texts = [attach.text(rels) for _, attach in page]  # type: ignore[attr-defined]
            if len(texts) == 1:  # one row is an object, not a list
                return Response(200, head + texts[0] + b"}")
            texts[0] = head + b"[" + texts[0]  # the body in one join
            texts[-1] += b"]}"
            return Response(200, b", ".join(texts))
        rendered = [attach(rels) for _, attach in page]
        if rendered:
            body[entity] = rendered[0] if len(rendered) == 1 else rendered
        return Response(200, body)

    def _offset_page(
        self,
        req: Request,
        entity: str,
        rels: list[str],
        selected: list[Row],
        params: dict[str, str],
        limit: int,
    ) -> Response:
        """A page in the older form: ``@attributes`` holds ``count``, ``offset`` and ``limit``
        and no ``next`` (V2 paging, "removed in V3" on 2022-04-11 [D changelog], yet issue 17
        line 8 reports such answers). ``paging="offset"`` honours ``offset``;
        ``"offset_ignored"`` answers the first rows whatever ``offset`` asks."""
        try:
            offset = int(params.get("offset") or 0)
        except ValueError:
            raise _bad("offset must be an integer") from None
        if self.paging == "offset_ignored":
            offset = 0
        page = selected[offset : offset + limit]
        attributes = {"count": str(len(selected)), "offset": str(offset), "limit": str(limit)}
        body: dict[str, Any] = {"@attributes": attributes}
        rendered = [attach(rels) for _, attach in page]
        if rendered:
            body[entity] = rendered[0] if len(rendered) == 1 else rendered
        return Response(200, body)

    def _token(self, raw: str, sort_field: str, spec: Spec) -> tuple[Any, ...]:
        try:
            value = json.loads(base64.b64decode(raw, validate=True).decode())
        except (ValueError, UnicodeDecodeError):
            raise _bad(
                "Invalid pagination cursor: after/before must be taken verbatim from "
                "@attributes.next / previous"
            ) from None
        expected = 1 if sort_field == spec.pk else 2
        if not isinstance(value, list) or len(value) != expected:
            raise _bad("Invalid pagination cursor for this sort")
        if expected == 1:
            return (_sort_value(sort_field, str(value[0])), int(value[0]))
        return (_sort_value(sort_field, str(value[0])), int(value[1]))

    def _compile(self, name: str, raw: str) -> Callable[[str], bool]:
        head, sep, rest = raw.partition(",")
        op, operand = (head, rest) if sep and head in OPERATORS else ("=", raw)
        leaf = name.split(".")[-1]
        ci = self.case_insensitive_equals

        def conv(value: str) -> Any:
            return _operand_value(name, leaf, value, ci)

        def rec(value: str) -> Any:
            return _field_value(leaf, value, ci)

        if op == "IN":
            wanted = {conv(v) for v in _in_values(name, operand)}
            return lambda v: rec(v) in wanted
        if op in ("~", "!~"):
            pattern = "^" + _like_regex(operand) + "$"
            regex = re.compile(pattern, re.DOTALL | (re.IGNORECASE if ci else 0))
            return (lambda v: bool(regex.match(v))) if op == "~" else (lambda v: not regex.match(v))
        if op == "><":
            low_raw, sep2, high_raw = operand.partition(",")
            if not sep2:
                raise _bad(f"BETWEEN needs two values: {name}=><,low,high")
            low, high = conv(low_raw), conv(high_raw)
            return lambda v: (r := rec(v)) is not None and low <= r <= high
        return _comparison(op, conv(operand), rec)

    # rows ---------------------------------------------------------------------------------------
    def _rows(self, entity: str, account: str) -> list[Row]:
        if entity in PRODUCT_ENTITIES:
            # rebuilt only when a product changed (every page of a read used to rebuild them all)
            gone = len(self.catalogue.tenant(account).deleted_products)
            return self.cached_view(
                ("rows", entity, account, gone), lambda: self._build_rows(entity, account)
            )
        return self._build_rows(entity, account)

    def _item_entries(self, account: str) -> list[_ItemEntry]:
        """Every item of the account (as :meth:`items`), each product rendered again only if it
        changed since."""
        kept = self._entries.get(account, ({}, {}))
        now: tuple[dict[str, _ItemEntry], dict[str, _ItemEntry]] = ({}, {})
        out = []
        for gone, products in enumerate(self._item_products(account)):
            was, entries = kept[gone], now[gone]
            for p in products:
                entry = was.get(p.id)
                if entry is None or not entry.current(p):
                    entry = _ItemEntry(p, bool(gone), self._codes.get(p.id))
                entries[p.id] = entry
                out.append(entry)
        self._entries[account] = now
        return out

    def _build_rows(self, entity: str, account: str) -> list[Row]:
        if entity == "Item":
            return [(entry.base, entry) for entry in self._item_entries(account)]
        if entity == "ItemShop":
            return [
                (shop.row, shop) for entry in self._item_entries(account) for shop in entry.shops()
            ]
        world = self.catalogue.tenant(account)
        if entity == "Customer":
            return [self._customer_row(c) for c in world.customers.values()]
        if entity == "Sale":
            return [self._sale_row(inv) for inv in world.invoices.values() if "saleID" in inv.body]
        static = self._static(entity)
        return [(r, _const(r)) for r in static]

    def _static(self, entity: str) -> list[dict[str, Any]]:
        ts = fmt_time(self.started)
        if entity == "Shop":
            return [
                {
                    "shopID": sid,
                    "name": name,
                    "serviceRate": "0",
                    "timeZone": "UTC",
                    "taxLabor": "false",
                    "labelTitle": "Shop Name",
                    "labelMsrp": "false",
                    "archived": "false",
                    "timeStamp": ts,
                    "companyRegistrationNumber": "",
                    "vatNumber": "",
                    "zebraBrowserPrint": "false",
                    "contactID": "1",
                    "taxCategoryID": "1",
                    "receiptSetupID": "1",
                    "ccGatewayID": "0",
                    "priceLevelID": "1",
                }
                for sid, name in SHOPS
            ]
        if entity == "Register":
            return [
                {
                    "registerID": str(i),
                    "name": f"Register {i}",
                    "open": "false",
                    "openTime": "",
                    "openEmployeeID": "0",
                    "cashDrawerID": "0",
                    "requireAuthForCashDrawer": "false",
                    "registerPaymentMethodID": "0",
                    "archived": "false",
                    "timeStamp": ts,
                    "shopID": "1",
                }
                for i in range(1, self.registers + 1)
            ]
        if entity == "Employee":
            return [
                {
                    "employeeID": eid,
                    "firstName": first,
                    "lastName": last,
                    "lockOut": "false",
                    "archived": "false",
                    "timeStamp": ts,
                    "contactID": "0",
                    "clockInEmployeeHoursID": "0",
                    "employeeRoleID": "1",
                    "limitToShopID": "0",
                    "lastShopID": "1",
                    "lastSaleID": "0",
                    "lastRegisterID": "1",
                }
                for eid, first, last in EMPLOYEES
            ]
        if entity == "PaymentType":
            return [
                {
                    "paymentTypeID": pid,
                    "name": name,
                    "requireCustomer": "false",
                    "archived": "false",
                    "internalReserved": "false",
                    "type": kind,
                    "refundAsPaymentTypeID": "0",
                    "channel": "",
                    "timeStamp": ts,
                }
                for pid, name, kind in PAYMENT_TYPES
            ]
        if entity == "TaxCategory":
            return [
                {
                    "taxCategoryID": tid,
                    "isTaxInclusive": "false",
                    "tax1Name": name,
                    "tax2Name": "",
                    "tax1Rate": format(rate, "f"),
                    "tax2Rate": "0",
                    "timeStamp": ts,
                    "TaxCategoryClasses": "",
                }
                for tid, name, rate in TAX_CATEGORIES
            ]
        return []

    def _item_row(self, p: Product, gone: bool) -> Row:
        entry = _ItemEntry(p, gone, self._codes.get(p.id))
        return entry.base, entry

    def _customer_row(self, c: Customer) -> Row:
        base = {
            "customerID": str(c.seq),
            "firstName": c.first_name,
            "lastName": c.last_name,
            "archived": "true" if c.archived else "false",
            "title": "",
            "company": self._company.get(c.id, ""),
            "companyRegistrationNumber": "",
            "vatNumber": "",
            "createTime": fmt_time(c.created_at),
            "timeStamp": fmt_time(c.updated_at),
            "contactID": str(c.seq),
            "creditAccountID": "0",
            "customerTypeID": "0",
            "discountID": "0",
            "taxCategoryID": "0",
            "measurementID": "0",
        }

        def attach(rels: list[str]) -> dict[str, Any]:
            out: dict[str, Any] = dict(base)
            if "Contact" in rels:
                out["Contact"] = self._contact(c)
            return out

        return base, attach

    def _contact(self, c: Customer) -> dict[str, Any]:
        emails = [{"address": c.email, "useType": "Primary"}] if c.email else []
        return {
            "contactID": str(c.seq),
            "custom": "",
            "noEmail": "false",
            "noPhone": "false",
            "noMail": "false",
            "Addresses": "",
            "Phones": "",
            "Emails": {"ContactEmail": one_or_many(emails)} if emails else "",
            "Websites": "",
            "timeStamp": fmt_time(c.updated_at),
        }

    def _sale_row(self, inv: Invoice) -> Row:
        body = inv.body
        base = {k: v for k, v in body.items() if k not in ("SaleLines", "SalePayments")}

        def attach(rels: list[str]) -> dict[str, Any]:
            out = dict(base)
            for rel in ("SaleLines", "SalePayments"):
                if rel in rels:
                    out[rel] = body[rel]
            return out

        return base, attach

    # writes -------------------------------------------------------------------------------------
    def _world(self, account: str) -> World:
        return self.catalogue.tenant(account)

    def h_post_item(self, req: Request, account: str) -> Response:
        body = json_body(req)
        if not isinstance(body, dict):
            return ls_error(400, "Invalid request body: expected an Item object")
        description = str(body.get("description") or "").strip()
        if not description:
            return ls_error(400, "Item description is required.")
        sku = str(body.get("customSku") or "")
        # systemSku is read-only (Lightspeed numbers every item itself): ignored if sent.
        # upc and ean hold 11-14 digits [D endpoints/Item/].
        codes = {
            f: str(body[f]).strip()
            for f in ("manufacturerSku", "upc", "ean")
            if str(body.get(f) or "").strip()
        }
        for f in ("upc", "ean"):
            if f in codes and not re.fullmatch(r"\d{11,14}", codes[f]):
                return ls_error(400, f"Invalid {f}: {codes[f]} (11 to 14 digits)")
        world = self._world(account)
        with self.catalogue.lock:
            if (
                sku
                and self.unique_custom_sku
                and any(p.code == sku for p, _ in self.items(account))
            ):
                return ls_error(
                    400, f"An item with customSku {sku} already exists.", "DuplicateEntryException"
                )
            price = Decimal(0)
            try:
                for row in as_list(
                    (body.get("Prices") or {}).get("ItemPrice")
                    if isinstance(body.get("Prices"), dict)
                    else None
                ):
                    if str(row.get("useTypeID", "")) == "1" or row.get("useType") == "Default":
                        price = to_decimal(row.get("amount", "0"), "ItemPrice.amount")
            except _Fail as fail:
                return fail.response
            now = self.clock.now()
            product = Product(
                id=self.catalogue.gen.uuid(),
                code=sku,
                name=description[:255],
                description=description,
                price=round2(price),
                stock=Decimal(0),
                updated_at=now,
                stock_updated_at=now,
                created_at=now,
                seq=world.seq(),
                tracked=str(body.get("itemType", "default")) != "non_inventory",
            )
            if codes:
                self._codes[product.id] = codes
            world.products[product.id] = product
            self._sync(account)
        rendered = self._item_row(product, False)[1](["ItemShops"])
        self.record_write("product", rendered["itemID"], body, True)
        return Response(200, {"@attributes": {"count": "1"}, "Item": rendered})

    def h_delete_item(self, req: Request, account: str, rid: str) -> Response:
        with self.catalogue.lock:
            for p, gone in self.items(account):
                if str(p.seq) == rid:
                    if not gone:
                        now = self.clock.now()
                        p.archived = True
                        p.stock = Decimal(0)
                        p.updated_at = p.stock_updated_at = now
                    rendered = self._item_row(p, gone)[1](["ItemShops"])
                    self.record_write("product", rid, None, False)
                    return Response(200, {"@attributes": {"count": "1"}, "Item": rendered})
        return ls_error(404, "Item not found.", "NotFoundException")

    def h_post_customer(self, req: Request, account: str) -> Response:
        body = json_body(req)
        if not isinstance(body, dict):
            return ls_error(400, "Invalid request body: expected a Customer object")
        first = str(body.get("firstName") or "").strip()
        last = str(body.get("lastName") or "").strip()
        company = str(body.get("company") or "").strip()
        if not (first or last or company):
            return ls_error(400, "A customer needs a first name, a last name or a company name.")
        email = None
        contact = body.get("Contact")
        if isinstance(contact, dict) and isinstance(contact.get("Emails"), dict):
            for row in as_list(contact["Emails"].get("ContactEmail")):
                if isinstance(row, dict) and row.get("address"):
                    address = str(row["address"]).strip()
                    if "@" not in address:
                        return ls_error(400, f"Invalid email address: {address}")
                    if email is None or row.get("useType") == "Primary":
                        email = address
        world = self._world(account)
        with self.catalogue.lock:
            now = self.clock.now()
            customer = Customer(
                id=self.catalogue.gen.uuid(),
                name=(f"{first} {last}".strip() or company),
                first_name=first,
                last_name=last,
                email=email,
                account_number=None,
                code=f"C{len(world.customers) + 1:05d}",
                updated_at=now,
                created_at=now,
                seq=world.seq(),
            )
            world.customers[customer.id] = customer
            if company:
                self._company[customer.id] = company
        rendered = self._customer_row(customer)[1](["Contact"])
        self.record_write("customer", rendered["customerID"], body, True)
        return Response(200, {"@attributes": {"count": "1"}, "Customer": rendered})

    def h_post_sale(self, req: Request, account: str) -> Response:
        body = json_body(req)
        if not isinstance(body, dict):
            return ls_error(400, "Invalid request body: expected a Sale object")
        try:
            with self.catalogue.lock:
                return self._post_sale(body, account)
        except _Fail as fail:
            return fail.response

    def h_post_refund(self, req: Request, account: str, rid: str) -> Response:
        """``POST Sale/{id}/refund.json``: a refund sale giving back lines of a completed sale
        (notes §4: "Refunds are made per SaleLine", R-Series sales tutorial). Its lines name the
        SaleLine they give back (``parentSaleLineID``) with a negative ``unitQuantity``, as a
        partial refund does (community.lightspeedhq.com discussion 2106); a line is given back
        at its sale's price, never at another (Hyperspace "Syncing Returns back to Lightspeed":
        no changed price on a refunded line), and never more than was sold over every refund.
        The exact request body is unconfirmed: this one is the harsher reading (every line
        named, the payments balancing the refund, as a completed sale's must)."""
        body = json_body(req)
        if not isinstance(body, dict):
            return ls_error(400, "Invalid request body: expected a Sale object")
        try:
            with self.catalogue.lock:
                return self._post_refund(body, account, rid)
        except _Fail as fail:
            return fail.response

    def _post_refund(self, body: dict[str, Any], account: str, rid: str) -> Response:
        world = self._world(account)
        original = next((i.body for i in world.invoices.values() if str(i.seq) == rid), None)
        if original is None:
            return ls_error(404, f"Sale {rid} not found.", "NotFoundException")
        if not to_bool(original.get("completed")) or to_bool(original.get("voided")):
            raise _bad(f"Sale {rid} is not completed: only a completed sale can be refunded.")
        sold = {ln["saleLineID"]: ln for ln in _sale_lines(original)}
        back: dict[str, Decimal] = {}
        for other in world.invoices.values():
            for ln in _sale_lines(other.body):
                if ln.get("parentSaleLineID", "0") in sold:
                    pid = ln["parentSaleLineID"]
                    back[pid] = back.get(pid, Decimal(0)) - Decimal(ln["unitQuantity"])
        raw = body.get("SaleLines")
        lines_in = as_list(raw.get("SaleLine")) if isinstance(raw, dict) else []
        if not lines_in:
            raise _bad("A refund needs at least one SaleLine naming its parentSaleLineID.")
        lines: list[dict[str, Any]] = []
        for n, line in enumerate(lines_in, 1):
            pid = str(line.get("parentSaleLineID", "")) if isinstance(line, dict) else ""
            parent = sold.get(pid)
            if parent is None:
                raise _bad(f"SaleLine {n}: parentSaleLineID {pid or '(missing)'} is no line of "
                           f"sale {rid}.", "NotFoundException")  # fmt: skip
            quantity = to_decimal(line.get("unitQuantity", 0), "unitQuantity")
            left = Decimal(parent["unitQuantity"]) - back.get(pid, Decimal(0))
            if quantity >= 0 or -quantity > left:
                raise _bad(f"SaleLine {n}: refunding {qty(-quantity)} of SaleLine {pid} is more "
                           f"than is left to refund ({qty(left)}).")  # fmt: skip
            back[pid] = back.get(pid, Decimal(0)) - quantity
            lines.append({k: parent[k] for k in ("itemID", "unitPrice", "tax", "taxCategoryID")})
            lines[-1].update(unitQuantity=line["unitQuantity"], parentSaleLineID=pid)
        sale = {**body, "completed": True, "SaleLines": {"SaleLine": lines}}
        if not self.refund_keeps_reference:
            # Unconfirmed: the notes (§4) document referenceNumber on Sale and say of the refund
            # only "POST Sale/{id}/refund.json. Refunds are made per SaleLine"; no source says
            # the refund endpoint keeps a referenceNumber sent with it. The harsher reading (it
            # is dropped: a lost refund cannot be found by it) is the default.
            sale.pop("referenceNumber", None)
            sale.pop("referenceNumberSource", None)
        sale.setdefault("customerID", original.get("customerID"))
        return self._post_sale(sale, account, refund=True)

    def _sale_line(
        self,
        n: int,
        line: Any,
        items: dict[str, Product],
        rates: dict[str, Decimal],
        shop_tax: str,
        refs: _SaleRefs,
    ) -> tuple[dict[str, Any], Decimal, Decimal, bool]:
        """SaleLine ``n`` as stored, its total before tax, its tax and whether it is taxed."""
        sale_id, now = refs.sale_id, refs.now
        if not isinstance(line, dict):
            raise _bad(f"SaleLine {n} is not an object.")
        item_id = str(line.get("itemID", ""))
        product = items.get(item_id)
        if product is None:
            raise _bad(
                f"Invalid itemID: {item_id or '(missing)'} does not exist.", "NotFoundException"
            )
        quantity = to_decimal(line.get("unitQuantity", 1), "unitQuantity")
        parent = str(line.get("parentSaleLineID") or "0")
        if "unitPrice" in line and (self.unit_price_overrides or parent != "0"):
            unit = to_decimal(line["unitPrice"], "unitPrice")
        else:
            unit = product.price
        # A line that leaves ``tax`` out is taxed at the shop's category (R-Series sales
        # tutorial: its SaleLines carry no tax field and come back with calcTax1); only an
        # explicit "tax": false leaves a line untaxed.
        taxed = to_bool(line.get("tax"), default=True)
        category = str(line.get("taxCategoryID") or shop_tax)
        if category not in rates:
            raise _bad(f"Invalid taxCategoryID: {category} does not exist.", "NotFoundException")
        line_total = round2(quantity * unit)
        line_tax = round2(line_total * rates[category]) if taxed else Decimal(0)
        customer_id, employee_id, shop_id = refs.customer_id, refs.employee_id, refs.shop_id
        out = {
            "saleLineID": str(sale_id * 100 + n),
            "createTime": fmt_time(now),
            "timeStamp": fmt_time(now),
            "unitQuantity": qty(quantity),
            "unitPrice": money(unit),
            "normalUnitPrice": money(product.price),
            "discountAmount": "0",
            "discountPercent": "0",
            "avgCost": "0",
            "fifoCost": "0",
            "tax": "true" if taxed else "false",
            "tax1Rate": format(rates[category], "f"),
            "tax2Rate": "0",
            "isLayaway": "false",
            "isWorkorder": "false",
            "isSpecialOrder": "false",
            "displayableSubtotal": money(line_total),
            "displayableUnitPrice": money(unit),
            "calcLineDiscount": "0",
            "calcTransactionDiscount": "0",
            "calcTotal": money(line_total + line_tax),
            "calcSubtotal": money(line_total),
            "calcTax1": money(line_tax),
            "calcTax2": "0",
            "taxClassID": "1",
            "customerID": customer_id,
            "discountID": "0",
            "employeeID": employee_id,
            "itemID": item_id,
            "noteID": "0",
            "parentSaleLineID": parent,
            "shopID": shop_id,
            "taxCategoryID": category,
            "saleID": str(sale_id),
        }
        return out, line_total, line_tax, taxed

    def _sale_payments(
        self, body: dict[str, Any], refs: _SaleRefs
    ) -> tuple[list[dict[str, Any]], Decimal]:
        """The sale's payments as stored, and their sum."""
        sale_id, now = refs.sale_id, refs.now
        register_id, employee_id = refs.register_id, refs.employee_id
        payments_in = as_list(
            (body.get("SalePayments") or {}).get("SalePayment")
            if isinstance(body.get("SalePayments"), dict)
            else None
        )
        pay_types = {p for p, _, _ in PAYMENT_TYPES}
        paid = Decimal(0)
        payments_out = []
        for n, payment in enumerate(payments_in, 1):
            if not isinstance(payment, dict):
                raise _bad(f"SalePayment {n} is not an object.")
            amount = to_decimal(payment.get("amount", 0), "SalePayment.amount")
            ptype = str(payment.get("paymentTypeID", ""))
            if ptype not in pay_types:
                raise _bad(
                    f"Invalid paymentTypeID: {ptype or '(missing)'} does not exist.",
                    "NotFoundException",
                )
            paid += amount
            payments_out.append(
                {
                    "salePaymentID": str(sale_id * 100 + n),
                    "amount": money(amount),
                    "tipAmount": "0",
                    "createTime": fmt_time(now),
                    "archived": "false",
                    "remoteReference": "",
                    "paymentID": "",
                    "saleID": str(sale_id),
                    "paymentTypeID": ptype,
                    "ccChargeID": "0",
                    "refPaymentID": "0",
                    "registerID": register_id,
                    "employeeID": employee_id,
                    "creditAccountID": "0",
                }
            )
        return payments_out, paid

    def _post_sale(self, body: dict[str, Any], account: str, refund: bool = False) -> Response:
        world = self._world(account)

        def ref(name: str, known: set[str], required: bool = True) -> str:
            raw = body.get(name)
            if raw in (None, "", 0, "0"):
                if required:
                    raise _bad(f"{name} is required.")
                return "0"
            value = str(raw)
            if value not in known:
                raise _bad(f"Invalid {name}: {value} does not exist.", "NotFoundException")
            return value

        shop_id = ref("shopID", {s for s, _ in SHOPS})
        register_id = ref("registerID", {str(i) for i in range(1, self.registers + 1)})
        employee_id = ref("employeeID", {e for e, _, _ in EMPLOYEES})
        customers = {str(c.seq): c for c in world.customers.values()}
        customer_id = ref("customerID", set(customers), required=False)
        completed = to_bool(body.get("completed"))
        reference = str(body.get("referenceNumber") or "")
        if (
            reference
            and self.reference_number_unique
            and any(inv.number == reference for inv in world.invoices.values())
        ):
            raise _bad(
                f"A sale with referenceNumber {reference} already exists.",
                "DuplicateEntryException",
            )
        items = {str(p.seq): p for p, _ in self.items(account)}
        rates = {tid: rate for tid, _, rate in TAX_CATEGORIES}
        shop_tax = "1"
        lines_in = as_list(
            (body.get("SaleLines") or {}).get("SaleLine")
            if isinstance(body.get("SaleLines"), dict)
            else None
        )
        if not lines_in:
            raise _bad("A sale needs at least one SaleLine.")
        now = self.clock.now()
        sale_id = world.seq()
        refs = _SaleRefs(sale_id, now, shop_id, register_id, employee_id, customer_id)
        lines_out = []
        subtotal = tax_total = taxable = non_taxable = Decimal(0)
        for n, line in enumerate(lines_in, 1):
            out, line_total, line_tax, taxed = self._sale_line(
                n, line, items, rates, shop_tax, refs
            )
            subtotal += line_total
            tax_total += line_tax
            if taxed:
                taxable += line_total
            else:
                non_taxable += line_total
            lines_out.append(out)
        total = subtotal + tax_total
        payments_out, paid = self._sale_payments(body, refs)
        if completed and round2(paid) < round2(total):
            raise _bad(
                f"Payments ({money(paid)}) do not cover the sale total ({money(total)}): "
                "a completed sale must be balanced.",
                "SaleBalanceException",
            )
        if refund and round2(paid) != round2(total):
            raise _bad(
                f"Payments ({money(paid)}) do not match the refund total ({money(total)}): "
                "a completed sale must be balanced.",
                "SaleBalanceException",
            )
        change = max(Decimal(0), paid - total)
        sale = {
            "saleID": str(sale_id),
            "timeStamp": fmt_time(now),
            "discountPercent": "0",
            "completed": "true" if completed else "false",
            "archived": "false",
            "voided": "false",
            "enablePromotions": "false",
            "isTaxInclusive": "false",
            "createTime": fmt_time(now),
            "updateTime": fmt_time(now),
            "completeTime": fmt_time(now) if completed else "",
            "referenceNumber": reference,
            "referenceNumberSource": str(body.get("referenceNumberSource") or ""),
            "tax1Rate": "0",
            "tax2Rate": "0",
            "change": money(change),
            "receiptPreference": "printed",
            "displayableSubtotal": money(subtotal),
            "ticketNumber": f"22{sale_id:010d}",
            "calcDiscount": "0",
            "calcTotal": money(total),
            "calcSubtotal": money(subtotal),
            "calcTaxable": money(taxable),
            "calcNonTaxable": money(non_taxable),
            "calcAvgCost": "0",
            "calcFIFOCost": "0",
            "calcTax1": money(tax_total),
            "calcTax2": "0",
            "calcPayments": money(paid),
            "calcTips": "0",
            "total": money(total),
            "totalDue": money(total),
            "displayableTotal": money(total),
            "balance": money(max(Decimal(0), total - paid)),
            "customerID": customer_id,
            "discountID": "0",
            "employeeID": employee_id,
            "quoteID": "0",
            "registerID": register_id,
            "shipToID": "0",
            "shopID": shop_id,
            "taxCategoryID": shop_tax,
            "tipEmployeeID": "0",
            "SaleLines": {"SaleLine": one_or_many(lines_out)},
            "SalePayments": {"SalePayment": one_or_many(payments_out)} if payments_out else "",
        }
        if completed:
            for line in lines_out:
                product = items[line["itemID"]]
                product.stock -= Decimal(line["unitQuantity"])
                product.stock_updated_at = now
        inv = Invoice(
            id=self.catalogue.gen.uuid(),
            number=reference,
            customer_id=customers[customer_id].id if customer_id in customers else "",
            total=total,
            body=sale,
            created_at=now,
            updated_at=now,
            seq=sale_id,
        )
        world.invoices[inv.id] = inv
        self.record_write("invoice", str(sale_id), body, True)
        return Response(200, {"@attributes": {"count": "1"}, "Sale": sale})


def _sale_lines(sale: dict[str, Any]) -> list[dict[str, Any]]:
    lines = sale.get("SaleLines")
    return [ln for ln in as_list(lines.get("SaleLine")) if isinstance(ln, dict)] if lines else []


def _like_regex(pattern: str) -> str:
    r"""A LIKE pattern as a regex: ``%`` any run, ``_`` any one character, and a backslash takes
    the next character literally (MySQL's LIKE, whose default ESCAPE is the backslash; a trailing
    backslash is itself). Lightspeed documents no escape of its own, so a value holding ``\``,
    ``%`` or ``_`` sent with ``~,`` does not find itself reliably."""
    out: list[str] = []
    chars = iter(pattern)
    for c in chars:
        if c == "\\":
            out.append(re.escape(next(chars, "\\")))
        elif c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        else:
            out.append(re.escape(c))
    return "".join(out)


@dataclass(frozen=True)
class _SaleRefs:
    """What every line and payment of a new sale repeats."""

    sale_id: int
    now: datetime
    shop_id: str
    register_id: str
    employee_id: str
    customer_id: str


@dataclass(frozen=True)
class _Listing:
    """What a cursor page repeats in its links: the listing asked for."""

    entity: str
    spec: Spec
    rels: list[str]
    pairs: list[tuple[str, str]]  # the query's parameters, in order
    limit: int
    sort_param: str  # as asked (``-`` first for descending)
    sort_field: str


def _limit_param(params: dict[str, str]) -> int:
    """``limit``: 0 to 100, 100 when left out."""
    limit = 100
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            raise _bad("limit must be an integer between 0 and 100") from None
        if not 0 <= limit <= 100:
            raise _bad("limit must be an integer between 0 and 100")
    return limit


def _archived_param(params: dict[str, str]) -> str:
    """``archived`` as given (false, true, only, 0 or 1); ``archive=1`` reads as true."""
    archived = params.get("archived", "false").lower()
    if archived not in ("false", "true", "only", "0", "1"):
        raise _bad("archived must be one of false, true, only")
    if to_bool(params.get("archive")) and archived in ("false", "0"):
        # The Customer page documents ``?archive=1`` for reading archived customers, the
        # parameters page ``archived=true`` [D endpoints/Customer/, D introduction/
        # parameters/]; issue 17 (line 18) reports ``archive=1`` accepted: both are read.
        archived = "true"
    return archived


def _check_filters(
    filters: list[tuple[str, str]], sample: dict[str, Any], spec: Spec, rels: list[str]
) -> None:
    """Refuse a filter on a field the records lack, or on a relation not loaded."""
    for name, _ in filters:
        relation = name.split(".", 1)[0]
        if "." in name:
            if relation not in spec.relations:
                raise _bad(f"Invalid field: {name}")
            if relation not in rels:
                raise _bad(
                    f"Cannot filter on {name}: load the {relation} relation "
                    f'(load_relations=["{relation}"])'
                )
            known = RELATION_FIELDS.get(relation)
            if known is not None and name.split(".", 1)[1] not in known:
                raise _bad(f"Invalid field: {name}")
        elif name not in sample:
            raise _bad(f"Invalid field: {name}")


def _row_key(entity: str, sort_field: str, pk: str) -> Callable[[Row], tuple[Any, ...]]:
    """A row's place in the listing: its sort field, then its primary key."""
    if entity in PRODUCT_ENTITIES:  # the same key, kept with each product's rendering

        def kept_key(row: Row) -> tuple[Any, ...]:
            return row[1].sort_key(sort_field, pk)  # type: ignore[attr-defined]

        return kept_key

    def row_key(row: Row) -> tuple[Any, ...]:
        base = row[0]
        return (_sort_value(sort_field, base[sort_field]), int(base[pk]))

    return row_key


def _select(
    rows: list[Row],
    spec: Spec,
    archived: str,
    compiled: list[tuple[str, Callable[[str], bool]]],
    rels: list[str],
    row_key: Callable[[Row], tuple[Any, ...]],
    desc: bool,
) -> tuple[list[Row], list[tuple[Any, ...]]]:
    """The rows the filters keep, in the listing's order, and their keys in ascending order
    (for bisecting: the page bounds are counts of keys below a token)."""
    selected = [
        row for row in rows if _shown(row[0], spec, archived) and _matches(row, compiled, rels)
    ]
    selected.sort(key=row_key, reverse=desc)
    ascending = [row_key(row) for row in selected]
    if desc:
        ascending.reverse()
    return selected, ascending


def _shown(base: dict[str, Any], spec: Spec, archived: str) -> bool:
    """Whether ``archived`` lists the record."""
    if spec.archived and "archived" in base:
        flag = base["archived"] == "true"
        if archived in ("false", "0") and flag or archived == "only" and not flag:
            return False
    return True


def _matches(row: Row, compiled: list[tuple[str, Callable[[str], bool]]], rels: list[str]) -> bool:
    """Whether every filter passes (one of a relation's values passing is enough)."""
    base, attach = row
    full = None
    for name, test in compiled:
        if "." in name:
            full = full or attach(rels)
            values = _relation_values(full, name)
        else:
            values = [base[name]]
        if not any(test(v) for v in values):
            return False
    return True


def _field_value(leaf: str, value: str, ci: bool) -> Any:
    """A record's field as a filter compares it: a date, a number (None when not one) or text
    (case-folded when equality ignores case)."""
    if leaf in DATE_FIELDS:
        return parse_time(value)
    if leaf.endswith("ID") or leaf in ("qoh", "amount", "unitQuantity"):
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return value.casefold() if ci else value


def _operand_value(name: str, leaf: str, value: str, ci: bool) -> Any:
    """A filter's operand, read as its field is; an unreadable date is refused."""
    if leaf in DATE_FIELDS:
        parsed = parse_time(value)
        if parsed is None:
            raise _bad(
                f"Invalid date for {name}: {value!r}. Use YYYY-MM-DDTHH:MM:SS±HH:MM "
                "and send '+' as %2B",
                "InvalidParameterException",
            )
        return parsed
    return _field_value(leaf, value, ci)


def _in_values(name: str, operand: str) -> list[str]:
    """The values of ``IN,[a,b,c]``: a bracketed list of at most 100."""
    inner = operand.strip()
    if not (inner.startswith("[") and inner.endswith("]")):
        raise _bad(f"IN needs a list: {name}=IN,[1,2,3]")
    values = [v.strip().strip('"') for v in inner[1:-1].split(",") if v.strip()]
    if len(values) > 100:
        raise _bad(f"Too many values for IN on {name}: at most 100 are allowed")
    return values


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _comparison(op: str, target: Any, rec: Callable[[str], Any]) -> Callable[[str], bool]:
    """The test of a plain comparison. A missing or unreadable value on either side only
    passes ``!=`` (against a present one); values that cannot be ordered never pass."""
    fn = _COMPARE[op]

    def test(v: str) -> bool:
        r = rec(v)
        if r is None or target is None:
            return op == "!=" and r != target
        try:
            return fn(r, target)
        except TypeError:
            return False

    return test


def _bind(handler: Callable[..., Response], entity: str) -> Callable[..., Response]:
    def bound(req: Request, **groups: str) -> Response:
        return handler(req, entity, **groups)

    return bound


def _const(record: dict[str, Any]) -> Callable[[list[str]], dict[str, Any]]:
    return lambda rels: dict(record)


def _sort_value(field_name: str, raw: str) -> Any:
    if field_name.endswith("ID"):
        try:
            return int(raw)
        except ValueError:
            return 0
    if field_name in DATE_FIELDS:
        parsed = parse_time(raw) if raw else None
        return parsed.isoformat() if parsed else ""
    return raw.casefold()


def _relation_values(record: dict[str, Any], name: str) -> list[str]:
    rel, _, sub = name.partition(".")
    value = record.get(rel)
    if rel == "Contact" and sub == "email":
        emails = value.get("Emails") if isinstance(value, dict) else ""
        return [
            str(e.get("address", ""))
            for e in as_list(emails.get("ContactEmail") if isinstance(emails, dict) else None)
        ]
    if (
        isinstance(value, dict)
        and len(value) == 1
        and not isinstance(next(iter(value.values())), str)
    ):
        rows = as_list(next(iter(value.values())))
    else:
        rows = as_list(value)
    return [str(r.get(sub, "")) for r in rows if isinstance(r, dict)]


def create(**kw: Any) -> LightspeedSandbox:
    """Module-level factory used by the demo and the CLI's ``sandbox`` command."""
    return LightspeedSandbox(**kw)
