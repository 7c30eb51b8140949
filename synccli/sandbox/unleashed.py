"""A local simulator of the Unleashed Software API (``api.unleashedsoftware.com``), JSON only.

Wire facts come from ``docs/providers/unleashed.md``; where those notes mark a fact **unconfirmed**
it is a constructor switch here (keyword argument), listed below with its default.

Modelled
- HMAC auth on every request: ``api-auth-id`` + ``api-auth-signature`` =
  base64(HMAC-SHA256(api key, the query string exactly as received, "" when none)). The path,
  page number, method and body are not signed. A wrong or missing id/signature answers 403 with a
  JSON ``{"Description": ...}`` body. ``Accept`` must name JSON.
- Several accounts (API id/key pair -> tenant); each has its own catalogue and its own quota.
- Paging in the path (``/{Endpoint}/{n}``), ``pageSize`` default 200, max 1000 (larger values are
  clamped), the ``Pagination`` envelope; an empty result has PageNumber 0 and NumberOfPages 0.
  Single objects (``/{Endpoint}/{guid}``) come back bare. Path case does not matter.
- Products: ``GET /Products[/{page}]``, ``GET /Products/{guid}``, ``POST /Products/{guid}``
  (create or update; an update is a full replace: fields left out are blanked). Filters
  ``modifiedSince``, ``productCode`` (prefix, case-insensitive), ``productId`` (comma list),
  ``includeObsolete`` (default false: obsolete products hidden), ``orderBy`` (LastModifiedOn |
  CreatedOn; default sort ProductCode), ``brief``. Archived neutral products are ``Obsolete``.
- StockOnHand: ``GET /StockOnHand[/{page}]``, ``GET /StockOnHand/{productGuid}``; filters
  ``modifiedSince`` (stock timestamp), ``productId``, ``warehouseCode``. A product whose stock was
  never moved and is 0 has no row (Unleashed leaves out products with no transactions).
  Product and stock timestamps are separate: moving stock does not touch the product.
  ``AvailableQty`` = on hand - allocated (Placed orders allocate), and may be negative.
- Customers: ``GET /Customers[/{page}]``, ``GET /Customers/{guid}``, ``POST /Customers/{guid}``
  (create or update, full replace; CustomerCode unique). Filters ``modifiedSince``,
  ``customerCode`` (prefix), ``contactEmail`` (prefix, on the customer's ``Email`` and on the
  ``EmailAddress`` of every one of its contacts: issue 17 line 9 reports the filter matching any
  contact, and the notes list ``contactEmail`` as the filter AT looks customers up by),
  ``customerName`` (exact), ``customer`` (contains, case-sensitive), ``includeObsolete``,
  ``orderBy``. A customer's contacts (``GET /Customers/{guid}/Contacts``, provider notes §3)
  answer the list envelope; the contact's field names (``EmailAddress``, ``FirstName``,
  ``LastName``, ...) are not in the notes and are ours. By default every fourth customer has a
  second contact (an accounts address) besides its primary ``Email``: what a customer listing
  shows is only the primary one (see ``add_contact``).
- SalesOrders: ``GET /SalesOrders[/{page}]`` (``orderNumber`` / ``sourceId`` override every other
  filter; ``modifiedSince``, ``customerCode`` prefix, ``orderStatus`` list, Deleted hidden),
  ``GET /SalesOrders/{guid}``, ``POST /SalesOrders/{guid}`` (create; validation of customer,
  products, tax codes and totals to 2 dp with ``{"Description": ...}`` 400s; unique OrderNumber),
  ``POST /SalesOrders/{guid}/Complete`` (status Completed, stock leaves the warehouse; a
  Completed or Deleted order refuses a POST: it cannot be changed any more).
  By default the Complete call is unreliable, as issue #16 (lines 6 and 15) found the real one:
  see ``complete_answers``. A Completed order stays Completed.
  Valid tax codes: "G.S.T." 0.15, "NONE" 0, "EXEMPT" 0 (matched case-insensitively, FL sent "None").
- ``GET /Warehouses`` (one default warehouse, W1) for cheap authenticated pings.
- JSON dates as .NET ``"\\/Date(ms)\\/"``, 13 hours behind real UTC by default (the 2014 offset
  anomaly, ``timestamp_offset_hours``).
- Monthly call quota per account, counted per calendar month of ``self.clock`` (UTC); every
  authenticated request counts. Optional per-minute window (off by default) on the limit clock.
- Counters (``record_write`` for every write) and the base class faults.

Not modelled: XML bodies, ``PUT``/``DELETE`` on sales orders, ``POST /{Endpoint}`` without a Guid,
``/Invoices`` (invoices are made in the app when an order completes), customer contacts,
``/Products/Obsolete``, assemblies (``isAssembled``), ``asAtDate``, several warehouses, currencies
other than echoing the code, webhooks, per-customer sell prices, order discounts beyond
``DiscountRate`` per line, the exact wording of Unleashed's error Descriptions (ours are plausible
inventions: the notes only establish the top-level ``Description`` key).

Switches (all unconfirmed in the notes):
- ``timestamp_offset_hours`` (13): JSON dates show real UTC minus this many hours, as the 2014
  recordings do (FL cassettes: a product POSTed at about 13:49Z reads ``/Date(1413766150817)/``,
  00:49Z; provider notes §6); filters still compare real UTC. 0 is the kind behaviour.
- ``quota_status`` (429): status served once the monthly quota is spent; ``quota_description``
  is its Description. No remaining-calls header is sent (none is documented).
- ``forbidden_description`` ("Forbidden"): Description of the 403. The oft-quoted
  "ApiId/Signature Invalid" is a client library's own exception text, not a recorded body.
- ``signature_form`` ("raw"): "raw" checks the signature over the query string as received;
  "decoded" over its percent-decoded form, ``+`` read as a space (what AT signs: PHP's
  urldecode; provider notes §1, §11.2). Which one Unleashed checks is unconfirmed, and an
  account may be either (issue 17, line 10). ``bad_signatures`` counts the 403s answered.
- ``accept_status`` (400): status when ``Accept`` does not name JSON (406 for XML-only).
- ``order_repost`` ("update"): POST to an existing SalesOrder Guid updates it; "error" answers 400.
- ``orderby_descending`` (False): direction of ``orderBy`` (undocumented).
- ``rounding`` ("half_up"): how LineTotal / LineTax are rounded ("half_even" = .NET default).
- ``max_query_length`` (None): longer query strings answer 404 like IIS request filtering.
- ``limits``: {"per_month": 15000, "per_minute": None}.
- ``complete_answers`` (("500", "empty")): how the 1st, 2nd, ... ``/Complete`` call of each order
  is answered while the order is not yet Completed: "500" fails (Unleashed's 500 with a
  Description; the order is not completed), "empty" completes it and answers 200 with an empty
  body, "echo" completes it and answers with the order. Calls beyond the list, and calls on a
  Completed order, echo. The notes record no answer body for Complete at all (D-SO names the
  call only) and list 500 among the statuses Unleashed answers (PB); issue #16 reproduced both
  the failed call and the empty answer. ``()`` is the kind behaviour (always "echo").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote_plus

from synccli.clock import Clock
from synccli.sandbox.core import (
    Request,
    Response,
    SandboxApp,
    Window,
    ceil_seconds,
    json_body,
)
from synccli.sandbox.data import Customer, Invoice, Product, World, product_revision
from synccli.sandbox.webhooks import (
    CUSTOMER_FIELDS,
    PRODUCT_FIELDS,
    Delivery,
    Format,
    Outbox,
    Policy,
    Subscription,
    backoff,
    hmac_sha256,
)

GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
PAGE = r"(?:/(?P<page>\d+))?"
CENT = Decimal("0.01")
AVG_COST_SHARE = Decimal("0.45")  # a product's average cost is this share of its price
TAX_CODES = {"G.S.T.": Decimal("0.15"), "NONE": Decimal("0"), "EXEMPT": Decimal("0")}
DEFAULT_LIMITS: dict[str, int | None] = {"per_month": 15000, "per_minute": None}
# Limits high enough never to answer 429 (a benchmark's twin sandbox, throughput runs).
NO_LIMITS: dict[str, int | None] = dict.fromkeys(DEFAULT_LIMITS)
QUOTA_DESCRIPTION = "Monthly API call limit reached for this account"
WAREHOUSE: dict[str, Any] = {
    "WarehouseCode": "W1",
    "WarehouseName": "Main Warehouse",
    "IsDefault": True,
    "Obsolete": False,
    "Guid": "afc4e712-538b-45b4-a07a-d5185e909b62",
}
CURRENCY = {
    "CurrencyCode": "NZD",
    "Description": "New Zealand, Dollars",
    "Guid": "7a5e5a1c-3f4e-4d8a-9f0e-2b6b4b1b9d11",
    "LastModifiedOn": None,
}
CREATED_BY = "api@sandbox.invalid"
ALLOW = {"StockOnHand": "GET", "Warehouses": "GET"}


def sign(api_key: str, query: str) -> str:
    """Unleashed's request signature: base64(HMAC-SHA256(key, query string without '?'))."""
    digest = hmac.new(api_key.encode("utf-8"), query.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def dotnet_date(when: datetime | None, offset_hours: float = 0.0) -> str | None:
    """``/Date(ms)/`` of ``when`` (UTC) shifted back by ``offset_hours``, as the JSON shows it."""
    if when is None:
        return None
    shown = when - timedelta(hours=offset_hours)
    ms = (shown - EPOCH) // _MS
    return f"/Date({ms})/"


# .NET escapes the slashes of its dates: "\/Date(1413424319073)\/"
_DOTNET_DATE = re.compile(r'"/Date\((-?\d+)\)/"')


def dotnet_json(text: str) -> str:
    """JSON text with its dates' slashes escaped as .NET writes them. A date is always a whole JSON
    string (the pattern holds no quote or backslash between its two quotes), so this may be done
    to each value of a record apart, with the same result as to the whole."""
    return _DOTNET_DATE.sub(r'"\\/Date(\1)\\/"', text) if "/Date(" in text else text


# ------------------------------------------------------------------------------------------------
# products and stock rows, rendered once per product revision
#
# A full read of 50,000 products (and their stock) rendered every record as a dict and encoded
# each page of 1,000 whole. Now each record's JSON text is written straight from its values with
# the templates below, kept per product (under its revision, see
# synccli.sandbox.data.product_revision: a change to a product renders that product again), and a
# page is those texts joined. The templates must write exactly what _json writes for product_json
# and stock_json (compact separators, ASCII escapes, .NET dates);
# tests/test_sandbox_listing_cache.py checks that they do.

_esc = json.encoder.encode_basestring_ascii  # json.dumps' own string encoder (ensure_ascii)
_isfinite = math.isfinite
_TIERS = ",".join(
    f'"SellPriceTier{i}":{{"Name":"Sell Price Tier {i}","Value":null}}' for i in range(1, 11)
)
_PRODUCT_TEXT = (
    '{"ProductCode":%s,"ProductDescription":%s,"Barcode":null,"PackSize":null,"Width":null,'
    '"Height":null,"Depth":null,"Weight":null,"MinStockAlertLevel":null,'
    '"MaxStockAlertLevel":null,"ReOrderPoint":null,"UnitOfMeasure":null,"NeverDiminishing":%s,'
    '"LastCost":0.0,"DefaultPurchasePrice":null,"DefaultSellPrice":%s,"AverageLandPrice":0.0,'
    '"Obsolete":%s,"Notes":%s,' + _TIERS + ',"XeroTaxCode":null,'
    '"XeroTaxRate":null,"TaxablePurchase":null,"TaxableSales":true,"XeroSalesTaxCode":null,'
    '"XeroSalesTaxRate":null,"IsComponent":false,"IsAssembledProduct":false,'
    '"CanAutoAssemble":false,"ProductGroup":null,"XeroSalesAccount":null,"BinLocation":null,'
    '"Supplier":null,"SourceId":null,"CreatedBy":%s,"SourceVariantParentId":null,'
    '"IsSellable":true,"IsPurchasable":true,"CreatedOn":%s,"Guid":%s,"LastModifiedOn":%s}'
)
_BRIEF_TEXT = (
    '{"Guid":%s,"ProductCode":%s,"ProductDescription":%s,"DefaultPurchasePrice":null,'
    '"DefaultSellPrice":%s,"SellPriceTier1":{"Name":"Sell Price Tier 1","Value":null},'
    '"DefaultSupplierId":null}'
)
_STOCK_TEXT = (
    '{"ProductCode":%s,"ProductDescription":%s,"ProductGuid":%s,"ProductSourceId":null,'
    '"ProductGroupName":"","WarehouseId":%s,"Warehouse":%s,"WarehouseCode":%s,'
    '"DaysSinceLastSale":0,"OnPurchase":0.0,"AllocatedQty":%s,"AvailableQty":%s,'
    '"QtyOnHand":%s,"AvgCost":%s,"TotalCost":%s,"Guid":%s,"LastModifiedOn":%s}'
)


def _value_text(value: Any) -> str:
    """``value`` as _json writes it (json.dumps, compact, then the .NET dates)."""
    kind = value.__class__
    if kind is str:
        text = _esc(value)
        return dotnet_json(text) if "/Date(" in text else text
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is float:
        return _float_text(value)
    return dotnet_json(json.dumps(value, separators=(",", ":")))


def _float_text(value: float) -> str:
    """A float as json's encoder writes it."""
    if _isfinite(value):
        return float.__repr__(value)
    return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"


def parse_when(value: Any) -> datetime:
    """A date filter or body date: ``YYYY-MM-DD[THH:MM:SS[.fff]][Z]`` or ``/Date(ms)/``; UTC."""
    text = str(value).strip()
    m = re.fullmatch(r"\\?/Date\((-?\d+)(?:[+-]\d{4})?\)\\?/", text)
    if m:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(m.group(1)))
    text = text.replace("Z", "+00:00")
    if "." in text:  # .NET sends up to 7 fraction digits; Python takes at most 6
        head, _, frac = text.partition(".")
        run = re.match(r"\d*", frac)
        assert run is not None  # \d* matches the empty string too
        digits = run.group(0)
        text = f"{head}.{digits[:6].ljust(6, '0')}{frac[len(digits) :]}"
    dt = datetime.fromisoformat(text)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _dec(value: Any, field: str) -> Decimal:
    if value is None or isinstance(value, bool):
        raise _Invalid(f"{field} is required")
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise _Invalid(f"{field} '{value}' is not a number") from None
    if not result.is_finite():
        raise _Invalid(f"{field} '{value}' is not a number")
    return result


# product id -> (product, its revision, the timestamp offset, the product's text)
Kept = dict[str, tuple[Product, int, float, bytes]]


def _kept(texts: Kept, p: Product, offset: float, render: Callable[[], str]) -> bytes:
    """``render()`` encoded, or what it gave before for ``p`` unchanged (and the same offset)."""
    revision = product_revision(p)  # before reading the product: see product_revision
    kept = texts.get(p.id)
    if kept is not None and kept[0] is p and kept[1] == revision and kept[2] == offset:
        return kept[3]
    made = render().encode()
    if revision is not None:
        texts[p.id] = (p, revision, offset, made)
    return made


class _Invalid(Exception):
    """A validation failure answered as 400 {"Description": ...}."""


@dataclass
class Account:
    api_id: str
    api_key: str
    tenant: str


class UnleashedSandbox(SandboxApp):
    """Unleashed's API for tests, the demo and benchmarks. See the module docstring."""

    provider = "unleashed"

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
        timestamp_offset_hours: float = 13.0,
        quota_status: int = 429,
        quota_description: str = QUOTA_DESCRIPTION,
        forbidden_description: str = "Forbidden",
        signature_form: str = "raw",
        accept_status: int = 400,
        order_repost: str = "update",
        orderby_descending: bool = False,
        rounding: str = "half_up",
        max_query_length: int | None = None,
        complete_answers: tuple[str, ...] = ("500", "empty"),
        tenant: str = "unleashed-demo",
    ) -> None:
        super().__init__(seed=seed, clock=clock, time_scale=time_scale, faults=faults)
        if signature_form not in ("raw", "decoded"):
            raise ValueError("signature_form is 'raw' or 'decoded'")
        if order_repost not in ("update", "error"):
            raise ValueError("order_repost is 'update' or 'error'")
        if rounding not in ("half_up", "half_even"):
            raise ValueError("rounding is 'half_up' or 'half_even'")
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.timestamp_offset_hours = timestamp_offset_hours
        self.quota_status = quota_status
        self.quota_description = quota_description
        self.forbidden_description = forbidden_description
        self.signature_form = signature_form
        self.accept_status = accept_status
        self.order_repost = order_repost
        self.orderby_descending = orderby_descending
        self.rounding = ROUND_HALF_UP if rounding == "half_up" else ROUND_HALF_EVEN
        self.max_query_length = max_query_length
        if not set(complete_answers) <= {"500", "empty", "echo"}:
            raise ValueError("complete_answers holds '500', 'empty' or 'echo'")
        self.complete_answers = tuple(complete_answers)
        self.complete_calls: dict[str, int] = {}  # order guid -> Complete calls while not done
        self.bad_signatures = 0  # requests answered 403 for their signature
        self._keys = random.Random(seed * 7919 + 1)
        self.accounts: dict[str, Account] = {}
        self.quota: dict[str, tuple[tuple[int, int], int]] = {}  # tenant -> (month, used)
        self.minute: dict[str, Window] = {}
        # rendered records kept per product revision: (tenant, kind) -> see _texts
        self._kept: dict[tuple[str, str], Kept] = {}
        self._last_date: tuple[Any, Any, str] = (object(), object(), "")  # see _date_text
        self.tenant = tenant
        # customer guid -> its contacts beyond the primary Email (GET /Customers/{guid}/Contacts)
        self.contacts: dict[str, list[dict[str, Any]]] = {}
        self.add_account(tenant, products=products, customers=customers)
        self._routes()

    # accounts -----------------------------------------------------------------------------------
    def add_account(self, tenant: str, *, products: int = 0, customers: int = 0) -> dict[str, str]:
        """Create an account (its own API id/key and catalogue); returns its credentials."""
        api_id = str(uuid.UUID(int=self._keys.getrandbits(128), version=4))
        api_key = base64.b64encode(self._keys.randbytes(48)).decode("ascii")
        self.accounts[api_id] = Account(api_id, api_key, tenant)
        world = self.catalogue.tenant(tenant)
        if products or customers:
            self.catalogue.gen.populate(world, products, customers)
            for c in sorted(world.customers.values(), key=lambda c: c.seq)[3::4]:
                # a second contact, as accounts keep one for invoices (class docstring)
                domain = (c.email or "x@mail.test").rpartition("@")[2]
                self.add_contact(c.id, f"accounts.{c.seq}@{domain}")
        return {"api_id": api_id, "api_key": api_key, "tenant": tenant}

    def add_contact(
        self, customer_guid: str, email: str, first: str = "Accounts", last: str = ""
    ) -> dict[str, Any]:
        """Give a customer one more contact; its email is not the customer's ``Email``."""
        kept = self.contacts.setdefault(customer_guid.lower(), [])
        contact = {
            "Guid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{customer_guid}/contacts/{len(kept)}")),
            "FirstName": first,
            "LastName": last,
            "EmailAddress": email,
            "PhoneNumber": None,
            "MobilePhone": None,
            "IsDefault": False,
        }
        kept.append(contact)
        return contact

    def credentials(self, tenant: str | None = None) -> dict[str, str]:
        """What a connection needs: ``api_id`` (a setting) and ``api_key`` (the secret)."""
        tenant = tenant or self.tenant
        for acct in self.accounts.values():
            if acct.tenant == tenant:
                return {"api_id": acct.api_id, "api_key": acct.api_key, "tenant": tenant}
        raise KeyError(tenant)

    def world(self, tenant: str | None = None) -> World:
        return self.catalogue.tenant(tenant or self.tenant)

    def move_all_stock(self, tenant: str | None = None) -> int:
        """Give every product a stock movement, so each has a StockOnHand row."""
        world = self.world(tenant)
        return len(self.catalogue.change_stock(tenant or self.tenant, len(world.products)))

    def calls_used(self, tenant: str | None = None) -> int:
        """Calls counted against this month's quota so far."""
        month, used = self.quota.get(tenant or self.tenant, ((0, 0), 0))
        now = self.clock.now()
        return used if month == (now.year, now.month) else 0

    # routing ------------------------------------------------------------------------------------
    def _routes(self) -> None:
        r = self.route
        self.webhooks = install_unleashed(self)
        r("GET", f"/Products{PAGE}", "Products", self.list_products)
        r("GET", f"/Products/(?P<guid>{GUID})", "Product", self.get_product)
        r("POST", f"/Products/(?P<guid>{GUID})", "Product", self.post_product)
        r("GET", f"/StockOnHand{PAGE}", "StockOnHand", self.list_stock)
        r("GET", f"/StockOnHand/(?P<guid>{GUID})", "StockOnHandItem", self.get_stock)
        r("GET", f"/Customers{PAGE}", "Customers", self.list_customers)
        r("GET", f"/Customers/(?P<guid>{GUID})", "Customer", self.get_customer)
        r("POST", f"/Customers/(?P<guid>{GUID})", "Customer", self.post_customer)
        r("GET", f"/Customers/(?P<guid>{GUID})/Contacts", "CustomerContacts", self.list_contacts)
        r("GET", f"/SalesOrders{PAGE}", "SalesOrders", self.list_orders)
        r("GET", f"/SalesOrders/(?P<guid>{GUID})", "SalesOrder", self.get_order)
        r("POST", f"/SalesOrders/(?P<guid>{GUID})", "SalesOrder", self.post_order)
        r(
            "POST",
            f"/SalesOrders/(?P<guid>{GUID})/Complete",
            "SalesOrderComplete",
            self.complete_order,
        )
        r("GET", f"/Warehouses{PAGE}", "Warehouses", self.list_warehouses)

    # auth and limits ----------------------------------------------------------------------------
    def before(self, req: Request, endpoint: str) -> Response | None:
        if self.max_query_length and len(req.query_string) > self.max_query_length:
            return Response(
                404,
                "<html><body>404.15 Query String Too Long</body></html>",
                content_type="text/html",
            )
        acct = self.accounts.get(req.header("api-auth-id") or "")
        given = req.header("api-auth-signature") or ""
        if acct is None or not given:
            return self._error(403, self.forbidden_description)
        message = (
            req.query_string if self.signature_form == "raw" else unquote_plus(req.query_string)
        )
        if not hmac.compare_digest(sign(acct.api_key, message), given):
            with self.lock:
                self.bad_signatures += 1
            return self._error(403, self.forbidden_description)
        req.environ["unleashed.tenant"] = acct.tenant
        accept = (req.header("accept") or "").lower()
        if "json" not in accept:
            if "xml" in accept:
                return self._error(406, "This sandbox renders JSON only")
            return self._error(
                self.accept_status, "The Accept header must be application/json or application/xml"
            )
        now = self.clock.now()
        with self.lock:
            month = (now.year, now.month)
            seen, used = self.quota.get(acct.tenant, (month, 0))
            if seen != month:
                used = 0
            quota = self.limits.get("per_month")
            if quota is not None and used >= quota:
                self.quota[acct.tenant] = (month, used)
                return self._error(self.quota_status, self.quota_description)
            per_minute = self.limits.get("per_minute")
            if per_minute:
                window = self.minute.setdefault(acct.tenant, Window(per_minute, 60.0))
                t = self.limit_time()
                if not window.take(t):
                    resp = self._error(429, f"Too many requests: at most {per_minute} per minute")
                    wait = window.retry_after(t) / self.time_scale
                    resp.headers["Retry-After"] = ceil_seconds(wait)
                    return resp
            self.quota[acct.tenant] = (month, used + 1)
        return None

    def after(self, req: Request, endpoint: str, resp: Response) -> None:
        resp.headers.setdefault("Allow", ALLOW.get(endpoint.removesuffix("Item"), "GET, POST"))
        resp.headers.setdefault("Cache-Control", "private")

    # rendering ----------------------------------------------------------------------------------
    def _json(self, body: Any, status: int = 200) -> Response:
        text = dotnet_json(json.dumps(body, separators=(",", ":")))
        return Response(status, text.encode("utf-8"))

    def _error(self, status: int, description: str) -> Response:
        return Response(status, {"Description": description})

    def _date(self, when: datetime | None) -> str | None:
        return dotnet_date(when, self.timestamp_offset_hours)

    def _date_text(self, when: datetime | None) -> str:
        """``_value_text(self._date(when))``: ``"/Date(ms)/"`` with its slashes escaped, written
        directly (dotnet_json would always rewrite it so). The last one written is kept: a
        mutation stamps all the products it changes with one datetime object."""
        offset = self.timestamp_offset_hours
        last = self._last_date
        if when is last[0] and offset is last[1]:
            return last[2]
        shown = dotnet_date(when, offset)
        text = "null" if shown is None else f'"\\{shown[:-1]}\\/"'
        self._last_date = (when, offset, text)
        return text

    def _page(
        self,
        req: Request,
        items: list[Any],
        page: str | None,
        render: Callable[[Any], dict[str, Any]] | None = None,
        text: Callable[[Any], bytes] | None = None,
    ) -> Response:
        """One page of ``items``: records rendered by ``render``, or thunks called as they are
        (only the page's own records are rendered); or, with ``text``, the records' JSON texts
        joined (what _json would write for the rendered records)."""
        q = _query(req)
        try:
            size = int(q.get("pagesize") or 200)
        except ValueError:
            return self._error(400, f"pageSize '{q.get('pagesize')}' is not a number")
        size = min(1000, max(1, size))
        number = max(1, int(page or 1))
        total = len(items)
        if not total:
            pagination = {"NumberOfItems": 0, "PageSize": size, "PageNumber": 0, "NumberOfPages": 0}
            return self._json({"Pagination": pagination, "Items": []})
        pages = math.ceil(total / size)
        chunk = items[(number - 1) * size : number * size]
        pagination = {
            "NumberOfItems": total,
            "PageSize": size,
            "PageNumber": number,
            "NumberOfPages": pages,
        }
        if text is not None:
            head = json.dumps({"Pagination": pagination}, separators=(",", ":")).encode()
            head = head[:-1] + b',"Items":['
            texts = [text(item) for item in chunk]
            if not texts:
                return Response(200, head + b"]}")
            # the body in one join (a page is a megabyte: each extra copy of it shows)
            texts[0] = head + texts[0]
            texts[-1] += b"]}"
            return Response(200, b",".join(texts))
        rendered = [render(item) for item in chunk] if render else [thunk() for thunk in chunk]
        return self._json({"Pagination": pagination, "Items": rendered})

    # products -----------------------------------------------------------------------------------
    def product_json(self, p: Product, brief: bool = False) -> dict[str, Any]:
        price = _num(p.price)
        if brief:
            return {
                "Guid": p.id,
                "ProductCode": p.code,
                "ProductDescription": p.name,
                "DefaultPurchasePrice": None,
                "DefaultSellPrice": price,
                "SellPriceTier1": {"Name": "Sell Price Tier 1", "Value": None},
                "DefaultSupplierId": None,
            }
        body: dict[str, Any] = {
            "ProductCode": p.code,
            "ProductDescription": p.name,
            "Barcode": None,
            "PackSize": None,
            "Width": None,
            "Height": None,
            "Depth": None,
            "Weight": None,
            "MinStockAlertLevel": None,
            "MaxStockAlertLevel": None,
            "ReOrderPoint": None,
            "UnitOfMeasure": None,
            "NeverDiminishing": not p.tracked,
            "LastCost": 0.0,
            "DefaultPurchasePrice": None,
            "DefaultSellPrice": price,
            "AverageLandPrice": 0.0,
            "Obsolete": p.archived,
            "Notes": p.description or None,
        }
        for i in range(1, 11):
            body[f"SellPriceTier{i}"] = {"Name": f"Sell Price Tier {i}", "Value": None}
        body.update(
            {
                "XeroTaxCode": None,
                "XeroTaxRate": None,
                "TaxablePurchase": None,
                "TaxableSales": True,
                "XeroSalesTaxCode": None,
                "XeroSalesTaxRate": None,
                "IsComponent": False,
                "IsAssembledProduct": False,
                "CanAutoAssemble": False,
                "ProductGroup": None,
                "XeroSalesAccount": None,
                "BinLocation": None,
                "Supplier": None,
                "SourceId": None,
                "CreatedBy": CREATED_BY,
                "SourceVariantParentId": None,
                "IsSellable": True,
                "IsPurchasable": True,
                "CreatedOn": self._date(p.created_at),
                "Guid": p.id,
                "LastModifiedOn": self._date(p.updated_at),
            }
        )
        return body

    def list_products(self, req: Request, page: str | None = None) -> Response:
        q = _query(req)
        world = self._world(req)
        order = (q.get("orderby") or "").lower()

        def build() -> list[Product]:
            items = self._filter_products(world, q)
            if order in ("lastmodifiedon", "createdon"):
                key = "updated_at" if order == "lastmodifiedon" else "created_at"
                items.sort(
                    key=lambda p: (getattr(p, key), p.code.lower()),
                    reverse=self.orderby_descending,
                )
            else:
                items.sort(key=lambda p: p.code.lower())
            return items

        # every page of one listing filters and sorts the same catalogue: do it once per change
        view = (
            "products",
            req.environ["unleashed.tenant"],
            *(q.get(k) for k in ("productid", "productcode", "modifiedsince")),
            _truthy(q.get("includeobsolete")),
            order,
            self.orderby_descending,
        )
        try:
            items = self.cached_view(view, build)
        except _Invalid as err:
            return self._error(400, str(err))
        brief = _truthy(q.get("brief"))
        texts = self._texts(req.environ["unleashed.tenant"], "brief" if brief else "product")
        offset = self.timestamp_offset_hours

        def text(p: Product) -> bytes:
            return _kept(texts, p, offset, lambda: self.product_text(p, brief))

        return self._page(req, items, page, text=text)

    def _texts(self, tenant: str, kind: str) -> Kept:
        """The kept texts of one kind of record: product id -> (product, its revision, the
        timestamp offset, text). Those of products gone from the account are let go now and
        then."""
        texts = self._kept.setdefault((tenant, kind), {})
        products = self.world(tenant).products
        if len(texts) > 2 * len(products) + 1000:
            for pid in [pid for pid in texts if pid not in products]:
                del texts[pid]
        return texts

    def product_text(self, p: Product, brief: bool = False) -> str:
        """``product_json(p, brief)`` as _json writes it."""
        price = _num(p.price)
        if brief:
            return _BRIEF_TEXT % (
                _value_text(p.id),
                _value_text(p.code),
                _value_text(p.name),
                _value_text(price),
            )
        created_at, updated_at = p.created_at, p.updated_at
        created = self._date_text(created_at)
        # a product never changed has one datetime object for both: written once, then
        updated = created if updated_at is created_at else self._date_text(updated_at)
        return _PRODUCT_TEXT % (
            _value_text(p.code),
            _value_text(p.name),
            "false" if p.tracked else "true",  # not p.tracked
            _value_text(price),
            _value_text(p.archived),
            _value_text(p.description or None),
            _value_text(CREATED_BY),
            created,
            _value_text(p.id),
            updated,
        )

    def _filter_products(self, world: World, q: dict[str, str]) -> list[Product]:
        items = list(world.products.values())
        if not _truthy(q.get("includeobsolete")):
            items = [p for p in items if not p.archived]
        if q.get("productid"):
            wanted = {g.strip().lower() for g in q["productid"].split(",") if g.strip()}
            items = [p for p in items if p.id.lower() in wanted]
        if q.get("productcode"):
            prefix = q["productcode"].lower()
            items = [p for p in items if p.code.lower().startswith(prefix)]
        if q.get("modifiedsince"):
            since = _since(q["modifiedsince"])
            items = [p for p in items if p.updated_at >= since]
        return items

    def get_product(self, req: Request, guid: str) -> Response:
        p = self._world(req).products.get(guid.lower())
        if p is None:
            return self._error(404, f"Product '{guid}' was not found")
        return self._json(self.product_json(p))

    def post_product(self, req: Request, guid: str) -> Response:
        world = self._world(req)
        body = json_body(req)
        guid = guid.lower()
        try:
            if not isinstance(body, dict):
                raise _Invalid("The request body must be a Product object")
            _check_guid(body, guid)
            code = str(body.get("ProductCode") or "").strip()
            name = str(body.get("ProductDescription") or "").strip()
            if not code:
                raise _Invalid("ProductCode is required")
            if not name:
                raise _Invalid("ProductDescription is required")
            for other in world.products.values():
                if other.id != guid and other.code.lower() == code.lower():
                    raise _Invalid(f"Product code '{code}' already exists")
            price = body.get("DefaultSellPrice")
            price = Decimal("0") if price is None else _dec(price, "DefaultSellPrice")
        except _Invalid as err:
            return self._error(400, str(err))
        now = self.clock.now()
        existing = world.products.get(guid)
        if existing is None:
            product = Product(
                id=guid,
                code=code,
                name=name[:500],
                description=body.get("Notes") or "",
                price=price,
                stock=Decimal(0),
                updated_at=now,
                stock_updated_at=now,
                created_at=now,
                archived=bool(body.get("Obsolete")),
                tracked=not body.get("NeverDiminishing"),
                seq=world.seq(),
            )
            world.products[guid] = product
        else:  # no partial updates: what the body leaves out is blanked
            product = existing
            product.code, product.name = code, name[:500]
            product.description = body.get("Notes") or ""
            product.price = price
            product.archived = bool(body.get("Obsolete"))
            product.tracked = not body.get("NeverDiminishing")
            product.updated_at = now
        self.record_write("product", guid, body, created=existing is None)
        return self._json(self.product_json(product), 201)

    # stock on hand ------------------------------------------------------------------------------
    def _allocated(self, world: World) -> dict[str, Decimal]:
        allocated: dict[str, Decimal] = {}
        for inv in world.invoices.values():
            if inv.body.get("OrderStatus") != "Placed":
                continue
            for line in inv.body["lines"]:
                allocated[line["product_id"]] = (
                    allocated.get(line["product_id"], Decimal(0)) + line["qty"]
                )
        return allocated

    def stock_json(self, p: Product, allocated: Decimal, warehouse: bool) -> dict[str, Any]:
        on_hand = p.stock
        avg = (p.price * AVG_COST_SHARE).quantize(CENT)
        return {
            "ProductCode": p.code,
            "ProductDescription": p.name,
            "ProductGuid": p.id,
            "ProductSourceId": None,
            "ProductGroupName": "",
            "WarehouseId": WAREHOUSE["Guid"] if warehouse else None,
            "Warehouse": WAREHOUSE["WarehouseName"] if warehouse else "",
            "WarehouseCode": WAREHOUSE["WarehouseCode"] if warehouse else "",
            "DaysSinceLastSale": 0,
            "OnPurchase": 0.0,
            "AllocatedQty": float(allocated),
            "AvailableQty": float(on_hand - allocated),
            "QtyOnHand": float(on_hand),
            "AvgCost": float(avg),
            "TotalCost": float((avg * on_hand).quantize(CENT)),
            "Guid": p.id,
            "LastModifiedOn": self._date(p.stock_updated_at),
        }

    def stock_text(self, p: Product, allocated: Decimal, warehouse: bool) -> str:
        """``stock_json(p, allocated, warehouse)`` as _json writes it."""
        on_hand = p.stock
        avg = (p.price * AVG_COST_SHARE).quantize(CENT)
        guid = _value_text(p.id)
        if warehouse:
            where = (
                _value_text(WAREHOUSE["Guid"]),
                _value_text(WAREHOUSE["WarehouseName"]),
                _value_text(WAREHOUSE["WarehouseCode"]),
            )
        else:
            where = ("null", '""', '""')  # None, "", ""
        return _STOCK_TEXT % (
            _value_text(p.code),
            _value_text(p.name),
            guid,
            *where,
            _float_text(float(allocated)),
            _float_text(float(on_hand - allocated)),
            _float_text(float(on_hand)),
            _float_text(float(avg)),
            _float_text(float((avg * on_hand).quantize(CENT))),
            guid,
            self._date_text(p.stock_updated_at),
        )

    def _has_stock_row(self, p: Product, allocated: dict[str, Decimal]) -> bool:
        moved = p.stock_updated_at > p.created_at
        return moved or p.stock != 0 or p.id in allocated

    def list_stock(self, req: Request, page: str | None = None) -> Response:
        q = _query(req)
        world = self._world(req)
        allocated = self._allocated(world)
        warehouse = bool(q.get("warehousecode"))

        def build() -> list[Product]:
            items = [p for p in world.products.values() if self._has_stock_row(p, allocated)]
            if warehouse and q["warehousecode"].lower() != WAREHOUSE["WarehouseCode"].lower():
                items = []
            if q.get("productid"):
                wanted = {g.strip().lower() for g in q["productid"].split(",") if g.strip()}
                items = [p for p in items if p.id.lower() in wanted]
            if q.get("productcode"):
                items = [p for p in items if p.code.lower().startswith(q["productcode"].lower())]
            if q.get("modifiedsince"):
                since = _since(q["modifiedsince"])
                items = [p for p in items if p.stock_updated_at >= since]
            items.sort(key=lambda p: p.code.lower())
            return items

        # as for products: one filter and sort per listing and change, not one per page (the
        # allocations decide which rows exist, so they are part of the view's key)
        view = (
            "stock",
            req.environ["unleashed.tenant"],
            *(q.get(k) for k in ("warehousecode", "productid", "productcode", "modifiedsince")),
            frozenset(allocated),
        )
        try:
            items = self.cached_view(view, build)
        except _Invalid as err:
            return self._error(400, str(err))
        # kept only for products with nothing allocated (what is allocated is not the product's)
        kind = "stock with warehouse" if warehouse else "stock"
        texts = self._texts(req.environ["unleashed.tenant"], kind)
        offset = self.timestamp_offset_hours

        def text(p: Product) -> bytes:
            if p.id in allocated:
                return self.stock_text(p, allocated[p.id], warehouse).encode()
            return _kept(texts, p, offset, lambda: self.stock_text(p, Decimal(0), warehouse))

        return self._page(req, items, page, text=text)

    def get_stock(self, req: Request, guid: str) -> Response:
        world = self._world(req)
        p = world.products.get(guid.lower())
        if p is None:
            return self._error(404, f"Product '{guid}' was not found")
        return self._json(self.stock_json(p, self._allocated(world).get(p.id, Decimal(0)), False))

    # customers ----------------------------------------------------------------------------------
    def customer_json(self, c: Customer) -> dict[str, Any]:
        return {
            "Addresses": [],
            "CustomerCode": _customer_code(c),
            "CustomerName": c.name,
            "GSTVATNumber": None,
            "BankName": None,
            "BankBranch": None,
            "BankAccount": None,
            "Website": None,
            "PhoneNumber": None,
            "FaxNumber": None,
            "MobileNumber": None,
            "DDINumber": None,
            "TollFreeNumber": None,
            "Email": c.email,
            "EmailCC": None,
            "Currency": dict(CURRENCY),
            "Notes": None,
            "Taxable": True,
            "TaxCode": "G.S.T.",
            "XeroContactId": None,
            "SalesPerson": None,
            "DiscountRate": None,
            "PrintPackingSlipInsteadOfInvoice": None,
            "PrintInvoice": None,
            "StopCredit": False,
            "Obsolete": c.archived,
            "XeroSalesAccount": None,
            "XeroCostOfGoodsAccount": None,
            "SellPriceTier": "",
            "SellPriceTierReference": None,
            "CustomerType": "",
            "PaymentTerm": "",
            "ContactFirstName": c.first_name or None,
            "ContactLastName": c.last_name or None,
            "SourceId": None,
            "CreatedBy": CREATED_BY,
            "CreatedOn": self._date(c.created_at),
            "Guid": c.id,
            "LastModifiedOn": self._date(c.updated_at),
        }

    def list_customers(self, req: Request, page: str | None = None) -> Response:
        q = _query(req)
        items = list(self._world(req).customers.values())
        if not _truthy(q.get("includeobsolete")):
            items = [c for c in items if not c.archived]
        if q.get("customercode"):
            prefix = q["customercode"].lower()
            items = [c for c in items if _customer_code(c).lower().startswith(prefix)]
        if q.get("contactemail"):
            prefix = q["contactemail"].lower()
            items = [
                c for c in items if any(e.lower().startswith(prefix) for e in self._emails_of(c))
            ]
        if q.get("customername"):
            items = [c for c in items if c.name.lower() == q["customername"].lower()]
        if q.get("customer"):
            items = [
                c for c in items if q["customer"] in c.name or q["customer"] in _customer_code(c)
            ]
        if q.get("modifiedsince"):
            try:
                since = _since(q["modifiedsince"])
            except _Invalid as err:
                return self._error(400, str(err))
            items = [c for c in items if c.updated_at >= since]
        order = (q.get("orderby") or "").lower()
        if order in ("lastmodifiedon", "createdon"):
            key = "updated_at" if order == "lastmodifiedon" else "created_at"
            items.sort(
                key=lambda c: (getattr(c, key), _customer_code(c).lower()),
                reverse=self.orderby_descending,
            )
        else:
            items.sort(key=lambda c: _customer_code(c).lower())
        return self._page(req, [lambda c=c: self.customer_json(c) for c in items], page)

    def _emails_of(self, c: Customer) -> list[str]:
        """The customer's primary Email and every contact's EmailAddress."""
        extra = [str(x.get("EmailAddress") or "") for x in self.contacts.get(c.id, [])]
        return [e for e in [c.email or "", *extra] if e]

    def list_contacts(self, req: Request, guid: str) -> Response:
        c = self._world(req).customers.get(guid.lower())
        if c is None:
            return self._error(404, f"Customer '{guid}' was not found")
        rows = [dict(x) for x in self.contacts.get(c.id, [])]
        return self._page(req, [lambda r=r: r for r in rows], None)

    def get_customer(self, req: Request, guid: str) -> Response:
        c = self._world(req).customers.get(guid.lower())
        if c is None:
            return self._error(404, f"Customer '{guid}' was not found")
        return self._json(self.customer_json(c))

    def post_customer(self, req: Request, guid: str) -> Response:
        world = self._world(req)
        body = json_body(req)
        guid = guid.lower()
        try:
            if not isinstance(body, dict):
                raise _Invalid("The request body must be a Customer object")
            _check_guid(body, guid)
            code = str(body.get("CustomerCode") or "").strip()
            name = str(body.get("CustomerName") or "").strip()
            if not code:
                raise _Invalid("CustomerCode is required")
            if not name:
                raise _Invalid("CustomerName is required")
            for other in world.customers.values():
                if other.id != guid and _customer_code(other).lower() == code.lower():
                    raise _Invalid(f"Customer code '{code}' already exists")
        except _Invalid as err:
            return self._error(400, str(err))
        now = self.clock.now()
        existing = world.customers.get(guid)
        first, last = body.get("ContactFirstName") or "", body.get("ContactLastName") or ""
        if existing is None:
            customer = Customer(
                id=guid,
                name=name,
                first_name=first,
                last_name=last,
                email=body.get("Email") or None,
                account_number=code,
                code=code,
                updated_at=now,
                created_at=now,
                archived=bool(body.get("Obsolete")),
                seq=world.seq(),
            )
            world.customers[guid] = customer
        else:  # full replace: fields left out are blanked
            customer = existing
            customer.name, customer.first_name, customer.last_name = name, first, last
            customer.email = body.get("Email") or None
            customer.account_number = customer.code = code
            customer.archived = bool(body.get("Obsolete"))
            customer.updated_at = now
        self.record_write("customer", guid, body, created=existing is None)
        return self._json(self.customer_json(customer), 201)

    # sales orders -------------------------------------------------------------------------------
    def order_json(self, inv: Invoice, world: World) -> dict[str, Any]:
        b = inv.body
        customer = world.customers.get(inv.customer_id)
        lines = []
        for line in b["lines"]:
            product = world.products.get(line["product_id"])
            lines.append(
                {
                    "LineNumber": line["number"],
                    "LineType": None,
                    "Product": {
                        "Guid": line["product_id"],
                        "ProductCode": product.code if product else line["code"],
                        "ProductDescription": product.name if product else None,
                    },
                    "DueDate": self._date(b["required"] or b["order_date"]),
                    "OrderQuantity": float(line["qty"]),
                    "UnitPrice": float(line["price"]),
                    "DiscountRate": float(line["discount"]),
                    "LineTotal": float(line["total"]),
                    "Comments": line["comments"],
                    "TaxRate": float(TAX_CODES[line["tax_code"]]),
                    "LineTax": float(line["tax"]),
                    "LineTaxCode": line["tax_code"],
                    "Tax": {
                        "TaxCode": line["tax_code"],
                        "TaxRate": float(TAX_CODES[line["tax_code"]]),
                    },
                    "XeroTaxCode": line["tax_code"],
                    "BCUnitPrice": float(line["price"]),
                    "BCLineTotal": float(line["total"]),
                    "BCLineTax": float(line["tax"]),
                    "Guid": line["guid"],
                    "LastModifiedOn": self._date(inv.updated_at),
                }
            )
        tax_code = b["tax_code"]
        return {
            "SalesOrderLines": lines,
            "OrderNumber": inv.number,
            "OrderDate": self._date(b["order_date"]),
            "RequiredDate": self._date(b["required"]),
            "CompletedDate": self._date(b.get("completed")),
            "OrderStatus": b["OrderStatus"],
            "Customer": {
                "CustomerCode": _customer_code(customer) if customer else None,
                "CustomerName": customer.name if customer else None,
                "Guid": inv.customer_id,
                "LastModifiedOn": self._date(customer.updated_at) if customer else None,
            },
            "CustomerRef": b.get("CustomerRef"),
            "Comments": b.get("Comments"),
            "Warehouse": {**WAREHOUSE, "LastModifiedOn": None},
            "ReceivedDate": None,
            "DeliveryName": b.get("DeliveryName"),
            "DeliveryStreetAddress": b.get("DeliveryStreetAddress"),
            "DeliveryCity": b.get("DeliveryCity"),
            "DeliveryCountry": b.get("DeliveryCountry"),
            "DeliveryPostCode": b.get("DeliveryPostCode"),
            "Currency": {**CURRENCY, "CurrencyCode": b["currency"]},
            "ExchangeRate": 1.0,
            "DiscountRate": 0.0,
            "Tax": {
                "TaxCode": tax_code,
                "Description": None,
                "TaxRate": float(TAX_CODES[tax_code]),
                "CanApplyToExpenses": False,
                "CanApplyToRevenue": True,
                "Guid": "00000000-0000-0000-0000-000000000000",
                "LastModifiedOn": None,
            },
            "TaxRate": float(TAX_CODES[tax_code]),
            "XeroTaxCode": tax_code,
            "SubTotal": float(b["subtotal"]),
            "TaxTotal": float(b["tax_total"]),
            "Total": float(inv.total),
            "TotalVolume": None,
            "TotalWeight": None,
            "BCSubTotal": float(b["subtotal"]),
            "BCTaxTotal": float(b["tax_total"]),
            "BCTotal": float(inv.total),
            "PaymentDueDate": self._date(b["required"] or b["order_date"]),
            "SalesOrderGroup": None,
            "DeliveryMethod": None,
            "SalesPerson": None,
            "SendAccountingJournalOnly": False,
            "SourceId": b.get("SourceId"),
            "CreatedBy": CREATED_BY,
            "CreatedOn": self._date(inv.created_at),
            "Guid": inv.id,
            "LastModifiedOn": self._date(inv.updated_at),
        }

    def list_orders(self, req: Request, page: str | None = None) -> Response:
        q = _query(req)
        world = self._world(req)
        items = list(world.invoices.values())
        if q.get("ordernumber"):  # overrides every other filter
            items = [o for o in items if o.number == q["ordernumber"]]
        elif q.get("sourceid"):
            items = [o for o in items if o.body.get("SourceId") == q["sourceid"]]
        else:
            statuses = {
                s.strip().lower() for s in (q.get("orderstatus") or "").split(",") if s.strip()
            }
            if statuses:
                items = [o for o in items if o.body["OrderStatus"].lower() in statuses]
            else:
                items = [o for o in items if o.body["OrderStatus"] != "Deleted"]
            if q.get("customercode"):
                prefix = q["customercode"].lower()
                items = [
                    o
                    for o in items
                    if o.customer_id in world.customers
                    and _customer_code(world.customers[o.customer_id]).lower().startswith(prefix)
                ]
            if q.get("modifiedsince"):
                try:
                    since = _since(q["modifiedsince"])
                except _Invalid as err:
                    return self._error(400, str(err))
                items = [o for o in items if o.updated_at >= since]
        items.sort(key=lambda o: (o.created_at, o.seq), reverse=True)
        return self._page(req, [lambda o=o: self.order_json(o, world) for o in items], page)

    def get_order(self, req: Request, guid: str) -> Response:
        world = self._world(req)
        inv = world.invoices.get(guid.lower())
        if inv is None:
            return self._error(404, f"Sales order '{guid}' was not found")
        return self._json(self.order_json(inv, world))

    def post_order(self, req: Request, guid: str) -> Response:
        world = self._world(req)
        body = json_body(req)
        guid = guid.lower()
        existing = world.invoices.get(guid)
        try:
            if existing is not None:
                if self.order_repost == "error":
                    raise _Invalid(f"A sales order with Guid '{guid}' already exists")
                if existing.body["OrderStatus"] in ("Completed", "Deleted"):
                    # Both are final statuses (D-SO lists them last). Whether a POST revives a
                    # deleted order is unconfirmed: refusing it is the stricter answer.
                    status = existing.body["OrderStatus"].lower()
                    raise _Invalid(
                        f"Sales order {existing.number} is {status} and cannot be changed"
                    )
            order = self._validate_order(world, body, guid)
        except _Invalid as err:
            return self._error(400, str(err))
        now = self.clock.now()
        if existing is None:
            inv = Invoice(
                id=guid,
                number=order.pop("number"),
                customer_id=order.pop("customer_id"),
                total=order.pop("total"),
                body=order,
                created_at=now,
                updated_at=now,
                seq=world.seq(),
            )
            world.invoices[guid] = inv
        else:
            inv = existing
            inv.number, inv.customer_id = order.pop("number"), order.pop("customer_id")
            inv.total, inv.body, inv.updated_at = order.pop("total"), order, now
        if inv.body["OrderStatus"] == "Placed":  # allocation changes AvailableQty
            for line in inv.body["lines"]:
                if line["product_id"] in world.products:
                    world.products[line["product_id"]].stock_updated_at = now
        self.record_write("invoice", guid, body, created=existing is None)
        return self._json(self.order_json(inv, world), 201)

    def _order_customer(self, world: World, body: dict[str, Any]) -> Customer:
        """The order's customer, named by Guid or by CustomerCode."""
        ref = body.get("Customer") or {}
        customer = None
        if isinstance(ref, dict) and ref.get("Guid"):
            customer = world.customers.get(str(ref["Guid"]).lower())
        elif isinstance(ref, dict) and ref.get("CustomerCode"):
            code = str(ref["CustomerCode"]).lower()
            customer = next(
                (c for c in world.customers.values() if _customer_code(c).lower() == code), None
            )
        else:
            raise _Invalid("Customer is required")
        if customer is None:
            raise _Invalid(
                f"Customer '{ref.get('Guid') or ref.get('CustomerCode')}' does not exist"
            )
        return customer

    def _validate_order(self, world: World, body: Any, guid: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _Invalid("The request body must be a SalesOrder object")
        _check_guid(body, guid)
        customer = self._order_customer(world, body)
        warehouse = (body.get("Warehouse") or {}).get("WarehouseCode")
        if warehouse and warehouse.lower() != WAREHOUSE["WarehouseCode"].lower():
            raise _Invalid(f"Warehouse '{warehouse}' does not exist")
        # Fields left out are filled with the account's defaults (notes §8, FL 2014: warehouse,
        # currency): an order without Tax takes the account's default tax (G.S.T. here) and a
        # line without LineTaxCode the order's. FL's create_order.yml shows TaxCode "None"
        # (rate 0) accepted: the explicit no-tax code.
        order_tax = _tax_code((body.get("Tax") or {}).get("TaxCode") or "G.S.T.")
        number = str(body.get("OrderNumber") or "").strip()
        if not number:
            number = f"SO-{len(world.invoices) + 1:08d}"
        for other in world.invoices.values():
            if other.id != guid and other.number == number:
                raise _Invalid(f"Order number '{number}' already exists")
        lines, subtotal, tax_total = [], Decimal(0), Decimal(0)
        for i, raw in enumerate(body.get("SalesOrderLines") or [], start=1):
            if not isinstance(raw, dict):
                raise _Invalid(f"Line {i}: not a SalesOrderLine object")
            lines.append(self._validate_line(world, raw, i, order_tax, guid))
            subtotal += lines[-1]["total"]
            tax_total += lines[-1]["tax"]
        total = subtotal + tax_total
        for field, expected in (("SubTotal", subtotal), ("TaxTotal", tax_total), ("Total", total)):
            if body.get(field) is not None:
                given = _dec(body[field], field)
                if given.quantize(CENT, self.rounding) != expected:
                    raise _Invalid(f"{field} {given} does not match the lines ({expected})")
        status = str(body.get("OrderStatus") or "Parked")
        if status not in ("Parked", "Placed") or not lines:
            status = "Parked"  # 2014: "Placed" without lines came back "Parked"
        try:
            order_date = (
                parse_when(body["OrderDate"]) if body.get("OrderDate") else self.clock.now()
            )
            required = parse_when(body["RequiredDate"]) if body.get("RequiredDate") else None
        except ValueError as err:
            raise _Invalid(f"Invalid date: {err}") from None
        currency = str((body.get("Currency") or {}).get("CurrencyCode") or CURRENCY["CurrencyCode"])
        extras = (
            "CustomerRef",
            "Comments",
            "SourceId",
            "DeliveryName",
            "DeliveryStreetAddress",
            "DeliveryCity",
            "DeliveryCountry",
            "DeliveryPostCode",
        )
        return {
            "number": number,
            "customer_id": customer.id,
            "total": total,
            "lines": lines,
            "subtotal": subtotal,
            "tax_total": tax_total,
            "tax_code": order_tax,
            "OrderStatus": status,
            "order_date": order_date,
            "required": required,
            "currency": currency,
            **{k: body.get(k) for k in extras},
        }

    def _validate_line(
        self, world: World, raw: dict[str, Any], i: int, order_tax: str, order_guid: str
    ) -> dict[str, Any]:
        ref = raw.get("Product") or {}
        product = None
        if isinstance(ref, dict) and ref.get("Guid"):
            product = world.products.get(str(ref["Guid"]).lower())
        elif isinstance(ref, dict) and ref.get("ProductCode"):
            product = world.product_by_code(str(ref["ProductCode"]))
        else:
            raise _Invalid(f"Line {i}: Product is required")
        if product is None:
            raise _Invalid(
                f"Line {i}: Product '{ref.get('Guid') or ref.get('ProductCode')}' does not exist"
            )
        qty = _dec(raw.get("OrderQuantity"), f"Line {i}: OrderQuantity")
        if qty <= 0:
            raise _Invalid(f"Line {i}: OrderQuantity must be greater than zero")
        price = _dec(raw.get("UnitPrice"), f"Line {i}: UnitPrice")
        discount = _dec(raw.get("DiscountRate") or 0, f"Line {i}: DiscountRate")
        line_tax_code = raw.get("LineTaxCode") or (raw.get("Tax") or {}).get("TaxCode")
        tax_code = _tax_code(line_tax_code) if line_tax_code else order_tax
        if (raw.get("Tax") or {}).get("TaxCode"):
            _tax_code(raw["Tax"]["TaxCode"])
        line_total = (qty * price * (1 - discount)).quantize(CENT, self.rounding)
        line_tax = (line_total * TAX_CODES[tax_code]).quantize(CENT, self.rounding)
        for field, expected in (("LineTotal", line_total), ("LineTax", line_tax)):
            if raw.get(field) is not None:
                given = _dec(raw[field], f"Line {i}: {field}")
                if given != expected:
                    what = (
                        "OrderQuantity x UnitPrice"
                        if field == "LineTotal"
                        else "LineTotal x tax rate"
                    )
                    raise _Invalid(f"Line {i}: {field} {given} does not equal {what} ({expected})")
        return {
            "number": int(raw.get("LineNumber") or i),
            "product_id": product.id,
            "code": product.code,
            "qty": qty,
            "price": price,
            "discount": discount,
            "total": line_total,
            "tax": line_tax,
            "tax_code": tax_code,
            "comments": raw.get("Comments"),
            "guid": str(raw.get("Guid") or uuid.uuid5(uuid.UUID(order_guid), str(i))).lower(),
        }

    def complete_order(self, req: Request, guid: str) -> Response:
        world = self._world(req)
        inv = world.invoices.get(guid.lower())
        if inv is None:
            return self._error(404, f"Sales order '{guid}' was not found")
        if inv.body["OrderStatus"] == "Deleted":
            return self._error(400, f"Sales order {inv.number} is deleted and cannot be completed")
        answer = "echo"
        if inv.body["OrderStatus"] != "Completed":
            n = self.complete_calls[inv.id] = self.complete_calls.get(inv.id, 0) + 1
            if n <= len(self.complete_answers):
                answer = self.complete_answers[n - 1]
            if answer == "500":  # see ``complete_answers``: not completed
                return self._error(500, "An error has occurred while completing the sales order")
        if inv.body["OrderStatus"] != "Completed":  # completing twice is harmless
            now = self.clock.now()
            inv.body["OrderStatus"] = "Completed"
            inv.body["completed"] = now
            inv.updated_at = now
            for line in inv.body["lines"]:
                product = world.products.get(line["product_id"])
                if product is not None and product.tracked:
                    product.stock -= line["qty"]
                    product.stock_updated_at = now
            self.record_write("invoice", inv.id, {"Complete": True}, created=False)
        if answer == "empty":  # completed, but the answer says nothing
            return Response(200, b"")
        return self._json(self.order_json(inv, world))

    def list_warehouses(self, req: Request, page: str | None = None) -> Response:
        return self._page(req, [lambda: {**WAREHOUSE, "LastModifiedOn": None}], page)

    # helpers ------------------------------------------------------------------------------------
    def _world(self, req: Request) -> World:
        return self.catalogue.tenant(req.environ["unleashed.tenant"])


def _query(req: Request) -> dict[str, str]:
    """Query parameters by lower-cased name (ASP.NET binds them case-insensitively)."""
    return {k.lower(): v for k, v in req.query.items()}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def _since(value: str) -> datetime:
    try:
        return parse_when(value)
    except ValueError:
        raise _Invalid(f"modifiedSince '{value}' is not a valid date") from None


def _check_guid(body: dict[str, Any], guid: str) -> None:
    if body.get("Guid") and str(body["Guid"]).lower() != guid:
        raise _Invalid("The Guid in the body does not match the Guid in the URL")


def _tax_code(code: str) -> str:
    for known in TAX_CODES:
        if known.lower() == str(code).strip().lower():
            return known
    raise _Invalid(f"Tax code '{code}' does not exist")


def _customer_code(c: Customer) -> str:
    return c.account_number or c.code


def create(**kw: Any) -> UnleashedSandbox:
    """Build the Unleashed simulator (keywords as :class:`UnleashedSandbox`)."""
    return UnleashedSandbox(**kw)


# --- webhooks -------------------------------------------------------------------------------------
# Unleashed [D-WH ``apidocs.unleashedsoftware.com/Webhooks``: events Customer and Product created /
# updated / deleted, at most 5 subscriptions an account, the same API auth as the rest of the API;
# the body's shape and the signature as integrators implement them, since the page's later sections
# were not retrievable (**unconfirmed**)]: JSON ``{eventNotificationId, subscriptionId, eventType,
# createdOn, data}`` with ``data`` a JSON string holding the record's ``Guid`` only (the record is
# fetched); ``x-unleashed-timestamp`` (Unix seconds) and ``x-unleashed-signature``, base64
# HMAC-SHA256 of ``"{timestamp}.{body}"`` with the subscription's signature key (returned once, at
# creation), signed afresh for each attempt. No retry schedule could be found: one attempt, never
# retried (the harsher reading; ``retries`` sets one). Stock on hand raises no event (not in the
# list). Registration: ``POST /webhooks/subscriptions`` ``{notificationUrl, eventTypes}``
# (**unconfirmed** path), ``GET``, ``DELETE /webhooks/subscriptions/{id}``.
class UnleashedFormat(Format):
    policy = Policy(retry_delays=())
    KINDS = (
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "product.created",
        "product.updated",
        "product.deleted",
    )

    def __init__(self, app: Any, retries: int = 0) -> None:
        self.app = app
        if retries:
            self.policy = Policy(retry_delays=backoff(60.0, retries, 24 * 3600.0))

    def events(self, record: Any, what: str) -> list[str]:
        kind = "product" if isinstance(record, Product) else "customer"
        if isinstance(record, Product) and what not in PRODUCT_FIELDS | {"added", "deleted"}:
            return []  # stock on hand is not a product change (no event listed for it)
        if isinstance(record, Customer) and what not in CUSTOMER_FIELDS | {"added"}:
            return []
        verb = {"added": "created", "deleted": "deleted"}.get(what, "updated")
        return [f"{kind}.{verb}"]

    def render(self, d: Delivery, now: datetime) -> tuple[bytes, dict[str, str]]:
        doc = {
            "eventNotificationId": str(uuid.uuid4()),
            "subscriptionId": d.sub.id,
            "eventType": d.event,
            "createdOn": d.made.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "data": json.dumps({"Guid": d.record.id}),
        }
        return json.dumps(doc).encode("utf-8"), {"Content-Type": "application/json"}

    def sign(self, d: Delivery, now: datetime) -> dict[str, str]:
        stamp = str(int(now.timestamp()))
        message = stamp.encode("ascii") + b"." + (d.body or b"")
        digest = base64.b64encode(hmac_sha256(d.sub.secret or "", message)).decode("ascii")
        return {"x-unleashed-timestamp": stamp, "x-unleashed-signature": digest}


def install_unleashed(app: Any) -> Outbox:
    """Unleashed's sender and its subscription routes (through the API's own auth)."""
    outbox = Outbox(app, UnleashedFormat(app))

    def shown(sub: Subscription, key: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "subscriptionId": sub.id,
            "notificationUrl": sub.url,
            "eventTypes": sorted(sub.events),
            "status": "Active" if sub.active else "Inactive",
        }
        if key:
            out["signatureKey"] = sub.secret
        return out

    def fail(status: int, message: str) -> Response:
        return Response(status, {"description": message})

    def create(req: Request) -> Response:
        tenant = req.environ["unleashed.tenant"]
        body = json_body(req)
        if not isinstance(body, dict) or not isinstance(body.get("notificationUrl"), str):
            return fail(400, "notificationUrl is required")
        kinds = body.get("eventTypes")
        known = UnleashedFormat.KINDS
        if not isinstance(kinds, list) or not kinds or not set(kinds) <= set(known):
            return fail(400, "eventTypes must list one or more of " + ", ".join(known))
        if sum(1 for s in outbox.subscriptions.values() if s.tenant == tenant) >= 5:
            return fail(400, "Maximum of 5 webhook subscriptions per account")  # [D-WH]
        key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        sub_id = str(uuid.uuid4())
        try:
            sub = outbox.subscribe(body["notificationUrl"], kinds, key, tenant, sub_id=sub_id)
        except ValueError as err:
            return fail(400, str(err))
        return Response(201, shown(sub, key=True))

    def listing(req: Request) -> Response:
        tenant = req.environ["unleashed.tenant"]
        items = [shown(s) for s in outbox.subscriptions.values() if s.tenant == tenant]
        return Response(200, {"Items": items})

    def delete(req: Request, wid: str) -> Response:
        sub = outbox.subscriptions.get(wid)
        if sub is None or sub.tenant != req.environ["unleashed.tenant"]:
            return fail(404, "Subscription not found")
        outbox.unsubscribe(wid)
        return Response(204, None)

    app.route("POST", "/webhooks/subscriptions", "WebhookSubscriptions", create)
    app.route("GET", "/webhooks/subscriptions", "WebhookSubscriptions", listing)
    app.route("DELETE", "/webhooks/subscriptions/(?P<wid>[^/]+)", "WebhookSubscriptions", delete)
    return outbox
