"""Lightspeed Retail **R-Series** (API V3) connector.

Settings (non-secret, ``settings`` dict), with defaults:

- ``base_url``: resource server, default ``https://api.lightspeedapp.com``.
- ``auth_url``: authorization server, default ``https://cloud.lightspeedapp.com`` (the connector
  appends ``/auth/oauth/authorize`` and ``/auth/oauth/token``).
- ``account_id``: the Lightspeed accountID; default None = discovered once (token answer ``acct``,
  the JWT ``acct`` claim, else ``GET /API/V3/Account.json``) and remembered in the token store's
  ``extra["account_id"]``.
- ``client_id``: the OAuth client id (required).
- ``shop_id`` ``"1"``, ``register_id`` ``"1"``, ``employee_id`` ``"1"``, ``payment_type_id``
  ``"1"``: what a posted Sale is rung up on and paid with.
- ``scope``: asked for by :func:`authorize_url`, default ``employee:all``.
- ``sku_field``: the Item field that holds the shop's SKU, default ``customSku``; one of
  ``customSku``, ``systemSku`` (set by Lightspeed on every item, read-only: nothing can be
  created at sale time), ``manufacturerSku``, ``upc``, ``ean``. Pulls, ``find_product`` and
  create-at-sale all use it. An item with nothing in it is read with ``code=""``: the job counts
  it (``status`` shows how many), it is no page error.

Credentials (secret, ``credentials`` dict): ``client_secret`` (required). OAuth tokens live in the
token store; refresh tokens are single-use and rotating, so refreshes run under the store's lock
(:class:`synccli.connectors.auth.OAuth2Auth`, client id/secret in the form body).

How the contract maps onto Lightspeed:

- ``changed_products(since)``: ``Item.json?load_relations=["ItemShops"]&archived=true&sort=timeStamp
  &timeStamp=>,{since}``, following ``@attributes.next`` **verbatim** (its ``after`` token is never
  decoded or re-encoded); a page answered in the older form (``@attributes`` with ``count``/
  ``offset``/``limit`` and no ``next``) goes on by ``offset``, and fails loudly when the answer
  does not follow the offset asked for; 100 items per call, so 2,500 items cost 25 calls.
  ``Page.cursor`` is the newest ``Item.timeStamp`` of the page (the stream is sorted
  ascending). Archived items come back with ``active=False``: Lightspeed never deletes items
  (a DELETE archives them and zeroes stock), so a product deleted in the neutral sandbox model
  also shows up here as archived.
- Stock comes inside the product: ``RemoteProduct.stock`` is the ``qoh`` of the **shopID 0** row
  (Lightspeed's account-wide summary); when an item has no shop-0 row, the sum of its shops' qoh;
  None when it has no ItemShops at all (non-inventory items).
- ``Item.timeStamp`` does not move when stock changes, so incremental pulls must also call
  ``changed_stock(since)``: ``ItemShop.json?shopID=0&sort=timeStamp&timeStamp=>,{since}``. A
  first full pull does not need it (the products carry stock); an incremental pull with nothing
  changed costs 2 calls (one empty Item page, one empty ItemShop page).
- ``get_products(ids)``: ``Item.json?itemID=IN,[...]`` with ItemShops and archived=true, 100 ids per
  call. ``find_product(code)``: ``Item.json?{sku_field}==,X``, then an exact, case-sensitive match
  here. Every look-up value goes with the explicit ``=,`` operator (:func:`exact`).
- Customers: ``Customer.json?load_relations=["Contact"]&archived=true&archive=1`` (archived ones
  too, inactive); ``find_customers(email=)`` (archived ones too) filters with
  ``Contact.email==,{email}`` and keeps only exact case-insensitive matches; Lightspeed has no
  account-number field, so ``find_customers(account=)`` finds nothing (and calls nothing).
  ``create_customer`` POSTs firstName/lastName/Contact.Emails; existing customers are never updated.
- Invoices are Sales: ``post_invoice`` POSTs a completed ``Sale.json`` on the configured shop,
  register and employee, ``referenceNumber`` = invoice number, one payment of the invoice total with
  ``payment_type_id``; each line's ``tax_code`` is a TaxCategory ``tax1Name`` mapped to its
  ``taxCategoryID`` through one cached ``TaxCategory.json`` read (a code a kept copy lacks reads
  it again; a code the list read this run lacks refuses the order here, no sale sent).
  Lightspeed honours no idempotency key: exactly-once relies on ``find_invoice(number)``
  (``Sale.json?referenceNumber==,N``) before any re-post.
- Every collection is normalised (an object, a list or ``""``); every scalar is parsed from its
  string; money is Decimal.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import requests

from synccli import secrets
from synccli.clock import Clock, SystemClock
from synccli.connectors.auth import OAuth2Auth, Tokens, TokenStore, token_request
from synccli.connectors.base import (
    Capabilities,
    Connector,
    DocumentSupport,
    InvoiceDraft,
    InvoiceLine,
    Limits,
    NewCustomer,
    NewProduct,
    Page,
    PostedInvoice,
    RefundTarget,
    RemoteCustomer,
    RemoteProduct,
    RemoteStock,
    payment_type,
)
from synccli.connectors.http import HttpClient, Ledger, Profile, parse_json
from synccli.connectors.paging import NextLink, OffsetCount, every_record, pages
from synccli.connectors.wire import (
    body_message,
    decimal,
    decimal_or_none,
    error_message,
    instant,
    instant_or_none,
    line_amounts,
    money_text,
    round_money,
)
from synccli.errors import BadResponse, ConfigError, Rejected

log = logging.getLogger("synccli.lightspeed")

DEFAULT_BASE_URL = "https://api.lightspeedapp.com"
DEFAULT_AUTH_URL = "https://cloud.lightspeedapp.com"
DEFAULT_SCOPE = "employee:all"
# The Item fields a shop may keep its SKU in (setting ``sku_field``); ``systemSku`` is set by
# Lightspeed on every item and read-only [D endpoints/Item/].
SKU_FIELDS = ("customSku", "systemSku", "manufacturerSku", "upc", "ean")
DEFAULT_SKU_FIELD = "customSku"
PAGE_LIMIT = 100
TAX_LIST = "tax_categories"  # the name its copy is kept under between runs
IN_LIMIT = 100
LIMITS = Limits(bucket_size=90, drip_per_second=1)
ITEM_RELATIONS = '["ItemShops"]'
CUSTOMER_RELATIONS = '["Contact"]'
# Archived customers are read with ``archived=true`` (parameters page) or ``archive=1`` (the
# Customer page); which one the Customer endpoint honours is unconfirmed (provider notes §3), so
# customer reads send both.
ARCHIVED_TOO = [("archived", "true"), ("archive", "1")]
# Request costs from the notes' table, used to pace before the bucket overflows.
COST_GET = 1.0
COST_ITEMS_WITH_SHOPS = 1.4  # list call, one to-many relation: 1 + 2 x 0.2
COST_CUSTOMERS_WITH_CONTACT = 1.2  # list call, one to-one relation: 1 + 2 x 0.1

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------
# PROFILE: how Lightspeed says what is left, and what a 429 means


def _header(resp: requests.Response, name: str) -> str | None:
    """A response header, matched case-insensitively (Lightspeed's header case varies)."""
    value = resp.headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, val in resp.headers.items():
        if key.lower() == lower:
            return val
    return None


def _read_remaining(resp: requests.Response) -> dict[str, float]:
    out: dict[str, float] = {}
    level = _header(resp, "X-LS-API-Bucket-Level")
    if level and "/" in level:
        used, _, size = level.partition("/")
        out["bucket_level"] = float(used)
        out["bucket_size"] = float(size)
    drip = _header(resp, "X-LS-API-Drip-Rate")
    if drip:
        out["drip"] = float(drip)
    return out


def _limit_scope(resp: requests.Response) -> str:
    """A 429 from the leaky bucket or the burst limiter is short: wait Retry-After and go on.
    Lightspeed documents no day or month quota; a 429 whose type names a day/quota, or whose
    Retry-After is an hour or more (an account cut off), stops the job instead of sleeping."""
    kind = (_header(resp, "X-LS-API-RateLimit-Type") or "").lower()
    if "month" in kind:
        return "month"
    if any(word in kind for word in ("day", "daily", "quota")):
        return "day"
    try:
        if float(_header(resp, "Retry-After") or 0) >= 3600:
            return "day"
    except ValueError:
        pass
    return "short"


def _own_message(body: dict[str, Any]) -> str | None:
    if body.get("message") and "httpCode" in body:
        return str(body["message"])[:300]
    if body.get("error"):  # OAuth shape
        detail = body.get("hint") or body.get("error_description") or ""
        return f"{body['error']}: {detail}".strip(": ")[:300]
    return None


def _error_message(resp: requests.Response) -> str:
    return error_message(resp, ("message",), own=_own_message)


PROFILE = Profile(
    read_remaining=_read_remaining,
    limit_scope=_limit_scope,
    error_message=_error_message,
)


# ------------------------------------------------------------------------------------------------
# wire helpers


def as_list(value: Any) -> list[Any]:
    """Normalise a Lightspeed collection: ``""``/None -> [], an object -> [it], a list -> itself."""
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, list):
        return [v for v in value if v not in (None, "")]
    return [value]


def relation(record: dict[str, Any], outer: str, inner: str) -> list[dict[str, Any]]:
    """``record[outer][inner]`` as a list, e.g. relation(item, "ItemShops", "ItemShop")."""
    container = record.get(outer)
    if not isinstance(container, dict):
        return []
    return [r for r in as_list(container.get(inner)) if isinstance(r, dict)]


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes")


def format_since(since: datetime) -> str:
    """The filter's date: whole seconds (rounded down, so nothing is skipped), explicit offset."""
    aware = since if since.tzinfo else since.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0).isoformat()


def encode_query(pairs: list[tuple[str, str]]) -> str:
    """Encode each value once and fully: ``>`` ``,`` ``+`` ``:`` ``[`` ``"`` become %XX, as
    Lightspeed's own ``next`` URLs do (a raw ``+`` would arrive as a space)."""
    return "&".join(f"{key}={quote(str(value), safe='')}" for key, value in pairs)


def exact(value: str) -> str:
    """A query value compared for equality, whatever it holds: ``=,`` names the operator, so a
    value that itself begins with one (``~,``, ``IN,[``, ``><,``, ``>,``) is never read as LIKE, a
    list or a range, and ``%`` / ``_`` are no wildcards; after ``=,`` the rest is the value
    verbatim, commas included [D introduction/parameters/]. Lightspeed's collation may still match
    more (case), so every look-up also compares exactly here."""
    return f"=,{value}"


def jwt_claim(token: str | None, claim: str) -> Any:
    """A claim from a JWT's payload, read without verifying it (only to find the account id)."""
    if not token or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    return data.get(claim) if isinstance(data, dict) else None


# ------------------------------------------------------------------------------------------------
# the connector


def _settings(settings: dict[str, Any]) -> dict[str, Any]:
    s = {
        "base_url": DEFAULT_BASE_URL,
        "auth_url": DEFAULT_AUTH_URL,
        "account_id": None,
        "client_id": None,
        "shop_id": "1",
        "register_id": "1",
        "employee_id": "1",
        "payment_type_id": "1",
        "scope": DEFAULT_SCOPE,
        "sku_field": DEFAULT_SKU_FIELD,
    }
    s.update({k: v for k, v in settings.items() if v is not None})
    s["base_url"] = str(s["base_url"]).rstrip("/")
    s["auth_url"] = str(s["auth_url"]).rstrip("/")
    if s["sku_field"] not in SKU_FIELDS:
        raise ConfigError(
            f"Lightspeed setting sku_field is {s['sku_field']!r}: choose one of "
            + ", ".join(SKU_FIELDS)
        )
    return s


class LightspeedConnector(Connector):
    """One Lightspeed Retail (R-Series) account."""

    provider: ClassVar[str] = "lightspeed"
    capabilities: ClassVar[Capabilities] = Capabilities(
        lookup_batch=IN_LIMIT,
        stock_in_product=True,
        idempotency_keys=False,
        cursor_overlap=timedelta(seconds=2),  # timeStamp has whole seconds; the filter is ">"
        limits=LIMITS,
        catalogue_page=PAGE_LIMIT,
        # a SaleLine names an itemID: a line without a product code goes against the
        # connection's non-inventory item (docs/providers.md)
        documents=DocumentSupport(
            tax_inclusive="converted",
            codeless_lines="charge_item",
            payments="in_sale",
            refunds="sale_refund",
        ),
    )

    def __init__(
        self,
        http: HttpClient,
        settings: dict[str, Any],
        *,
        token_store: TokenStore | None = None,
    ) -> None:
        super().__init__(http, _settings(settings))
        self.token_store = token_store
        self._account: str | None = (
            str(self.settings["account_id"]) if self.settings.get("account_id") else None
        )
        self._tax_categories: dict[str, tuple[str, Decimal]] | None = None
        # where the table came from: "store" (kept from an earlier run) or "read" (this run)
        self._tax_source = "none"

    # account ------------------------------------------------------------------------------------
    @property
    def account_id(self) -> str:
        if self._account is None:
            self._account = self.discover_account()
        return self._account

    def discover_account(self) -> str:
        """The accountID: from the token store (token answer ``acct``), the JWT ``acct`` claim,
        else one ``GET /API/V3/Account.json``; remembered in the token store."""
        tokens = self.token_store.load() if self.token_store else Tokens()
        account = tokens.extra.get("account_id") or jwt_claim(tokens.access_token, "acct")
        if not account:
            body = self.http.json("GET", "API/V3/Account.json", cost=COST_GET)
            accounts = as_list(body.get("Account")) if isinstance(body, dict) else []
            if not accounts or not isinstance(accounts[0], dict):
                raise BadResponse("GET /API/V3/Account.json: no Account in the answer")
            account = accounts[0].get("accountID")
        if not account:
            raise BadResponse("could not discover the Lightspeed account id")
        account = str(account)
        if self.token_store is not None and tokens.extra.get("account_id") != account:

            def remember(stored: Tokens) -> Tokens:
                return replace(stored, extra={**stored.extra, "account_id": account})

            self.token_store.update_locked(remember)
        return account

    def _path(self, entity: str) -> str:
        return f"API/V3/Account/{self.account_id}/{entity}.json"

    # paging -------------------------------------------------------------------------------------
    def _pages(
        self,
        entity: str,
        pairs: list[tuple[str, str]],
        convert: Callable[[dict[str, Any]], T],
        *,
        cost: float = COST_GET,
        cursor_field: str | None = "timeStamp",
    ) -> Iterator[Page[T]]:
        """Every page of a listing: ``@attributes.next`` followed verbatim (its ``after`` token
        is never decoded or re-encoded), else the older count/offset form by ``offset``
        (issue 17); a link answered twice stops the walk (:mod:`synccli.connectors.paging`)."""
        path = self._path(entity)
        what = f"{entity}.json"

        def fetch(asked: str | int) -> Any:
            if isinstance(asked, str):
                return self.http.json("GET", asked, query=None, cost=cost)
            # an answer in the older form without ``next``: more rows are counted than read,
            # so the next page is asked for by offset
            asking = [(k, v) for k, v in pairs if k != "offset"] + [("offset", str(asked))]
            query = encode_query(asking if asked else pairs)
            return self.http.json("GET", path, query=query, cost=cost)

        def read(row: Any) -> T:
            if not isinstance(row, dict):
                raise TypeError("not an object")
            return convert(row)

        def line(row: Any, exc: Exception) -> str:
            if not isinstance(row, dict):
                return f"{entity}: unreadable row {str(row)[:60]!r}"
            return f"{entity} {row.get(entity[0].lower() + entity[1:] + 'ID')}: {exc}"

        def stamp(row: Any, record: T | None) -> datetime | None:
            # a record read its stamp from this field already; a row that failed to convert
            # still moves the cursor past it
            if not isinstance(row, dict):
                return None
            ts = getattr(record, "updated_at", None)
            if ts is None or cursor_field != "timeStamp":
                ts = instant_or_none(row.get(cursor_field))
            return ts if isinstance(ts, datetime) else None

        attributes: Callable[[Any], Any] = lambda data: data.get("@attributes")  # noqa: E731
        paginator = NextLink(
            link=lambda data: (attributes(data) or {}).get("next") or None,
            check=self._check_next,
            fallback=OffsetCount(what, attributes),
        )
        yield from pages(
            paginator,
            fetch,
            lambda data: _rows(entity, data),
            read,
            what=what,
            error_line=line,
            stamp=stamp if cursor_field else None,
        )

    def _check_next(self, url: str) -> None:
        """Follow ``next`` only to our own API host: the bearer token goes with it."""
        ours, theirs = urlsplit(self.http.base_url), urlsplit(url)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            raise BadResponse(f"@attributes.next points at another host ({theirs.netloc})")

    def _since(self, pairs: list[tuple[str, str]], since: datetime | None) -> None:
        if since is not None:
            pairs.append(("timeStamp", f">,{format_since(since)}"))

    # products and stock -------------------------------------------------------------------------
    def changed_products(self, since: datetime | None) -> Iterator[Page[RemoteProduct]]:
        pairs = [("load_relations", ITEM_RELATIONS), ("archived", "true"), ("sort", "timeStamp")]
        self._since(pairs, since)
        pairs.append(("limit", str(PAGE_LIMIT)))
        yield from self._pages("Item", pairs, self._product, cost=COST_ITEMS_WITH_SHOPS)

    def changed_stock(self, since: datetime | None) -> Iterator[Page[RemoteStock]]:
        pairs = [("shopID", "0"), ("sort", "timeStamp")]
        self._since(pairs, since)
        pairs.append(("limit", str(PAGE_LIMIT)))
        yield from self._pages("ItemShop", pairs, self._stock)

    def get_products(self, remote_ids: list[str]) -> list[RemoteProduct]:
        ids: list[str] = []
        for rid in remote_ids:
            text = str(rid).strip()
            if text.isdigit() and text not in ids:
                ids.append(text)
        found: dict[str, RemoteProduct] = {}
        for start in range(0, len(ids), IN_LIMIT):
            chunk = ids[start : start + IN_LIMIT]
            pairs = [
                ("itemID", f"IN,[{','.join(chunk)}]"),
                ("load_relations", ITEM_RELATIONS),
                ("archived", "true"),
                ("limit", str(PAGE_LIMIT)),
            ]
            walk = self._pages(
                "Item", pairs, self._product, cost=COST_ITEMS_WITH_SHOPS, cursor_field=None
            )
            for product in every_record(walk, "GET Item.json"):
                found[product.remote_id] = product
        return [found[i] for i in ids if i in found]

    @property
    def sku_field(self) -> str:
        """The Item field that holds the shop's SKU (setting ``sku_field``)."""
        return str(self.settings["sku_field"])

    def find_product(self, code: str) -> RemoteProduct | None:
        pairs = [
            (self.sku_field, exact(code)),
            ("load_relations", ITEM_RELATIONS),
            ("archived", "true"),
        ]
        walk = self._pages(
            "Item", pairs, self._product, cost=COST_ITEMS_WITH_SHOPS, cursor_field=None
        )
        # exact, case-sensitive
        matches = [p for p in every_record(walk, "GET Item.json") if p.code == code]
        matches.sort(key=lambda p: (not p.active, int(p.remote_id)))
        return matches[0] if matches else None

    def create_product(self, product: NewProduct) -> RemoteProduct:
        if self.sku_field == "systemSku":
            # read-only: Lightspeed numbers every item itself, so no item can be made to carry
            # the shop's code there
            raise Rejected(
                f"no Lightspeed item has systemSku {product.code}, and Lightspeed sets systemSku "
                "itself: create the item in Lightspeed, or choose another sku_field"
            )
        body = {
            "description": product.name,
            self.sku_field: product.code,
            "defaultCost": "0",
            "tax": "true",
            "Prices": {
                "ItemPrice": [
                    {"amount": money_text(product.price), "useTypeID": "1", "useType": "Default"}
                ]
            },
        }
        data = self.http.json("POST", self._path("Item"), json_body=body, cost=1.5)
        rows = as_list(data.get("Item")) if isinstance(data, dict) else []
        if not rows:
            raise BadResponse("POST Item.json: no Item in the answer")
        made = self._product(rows[0])
        if made.code != product.code:  # believed only when it carries the code we sent
            raise Rejected(
                f"Lightspeed created item {made.remote_id} with {self.sku_field} "
                f"{made.code!r}, not {product.code!r}"
            )
        return made

    # customers ----------------------------------------------------------------------------------
    def changed_customers(self, since: datetime | None) -> Iterator[Page[RemoteCustomer]]:
        # archived customers too: they come back inactive (never link targets, but known)
        pairs = [("load_relations", CUSTOMER_RELATIONS), *ARCHIVED_TOO, ("sort", "timeStamp")]
        self._since(pairs, since)
        pairs.append(("limit", str(PAGE_LIMIT)))
        yield from self._pages("Customer", pairs, self._customer, cost=COST_CUSTOMERS_WITH_CONTACT)

    def find_customers(
        self, *, email: str | None = None, account: str | None = None
    ) -> list[RemoteCustomer]:
        if not email or not email.strip():
            return []  # no account-number field in Lightspeed: nothing to look up
        wanted = email.strip().casefold()
        # archived ones too: a customer Lightspeed archived is still that customer, never one
        # to create again
        pairs = [
            ("load_relations", CUSTOMER_RELATIONS),
            *ARCHIVED_TOO,
            ("Contact.email", exact(email.strip())),
        ]
        walk = self._pages(
            "Customer",
            pairs,
            self._customer_row,
            cost=COST_CUSTOMERS_WITH_CONTACT,
            cursor_field=None,
        )
        return [
            c for c, addresses in every_record(walk, "GET Customer.json") if wanted in addresses
        ]

    def refinds_customer(self, email: str | None, account: str | None) -> bool:
        # found again by email only (find_customers): no account-number field, and names are
        # not unique in Lightspeed
        return bool(email and email.strip())

    def create_customer(self, customer: NewCustomer) -> RemoteCustomer:
        first, last = customer.first_name, customer.last_name
        if not (first or last):
            name = (customer.name or "").strip()
            first, _, last = name.rpartition(" ")
            if not first:
                first, last = "", name
        body: dict[str, Any] = {"firstName": first or "", "lastName": last or ""}
        nested = 0
        if customer.email:
            body["Contact"] = {
                "Emails": {"ContactEmail": [{"address": customer.email, "useType": "Primary"}]}
            }
            nested = 2
        data = self.http.json(
            "POST", self._path("Customer"), json_body=body, cost=1.0 + 0.5 * nested
        )
        rows = as_list(data.get("Customer")) if isinstance(data, dict) else []
        if not rows:
            raise BadResponse("POST Customer.json: no Customer in the answer")
        return self._customer(rows[0])

    # invoices -----------------------------------------------------------------------------------
    def find_invoice(self, number: str) -> PostedInvoice | None:
        pairs = [("referenceNumber", exact(number)), ("sort", "saleID")]
        walk = self._pages("Sale", pairs, self._sale_row, cursor_field=None)
        matches = [
            invoice
            for invoice, voided in every_record(walk, "GET Sale.json")
            if invoice.number == number and not voided
        ]
        matches.sort(key=lambda inv: (inv.status != "completed", int(inv.remote_id)))
        return matches[0] if matches else None

    def post_invoice(self, invoice: InvoiceDraft, idempotency_key: str) -> PostedInvoice:
        """POST a completed Sale. Lightspeed has no idempotency key (``idempotency_key`` is not
        sent); the job looks the sale up by number with :meth:`find_invoice` before re-posting."""
        categories = self.tax_categories()
        codes = {line.tax_code for line in invoice.lines if line.tax_code}
        if self._tax_source == "store" and not all(self._knows(c, categories) for c in codes):
            categories = self.tax_categories(fresh=True)  # a category added since we kept it
        unknown = sorted(c for c in codes if not self._knows(c, categories))
        if unknown:
            # The list was read this run and lacks the code: Lightspeed would refuse the sale
            # (its taxCategoryID must exist), so it is refused here, without the POST, naming
            # the field and what Lightspeed has to choose from.
            raise Rejected(_unknown_tax(invoice, unknown, categories))
        try:
            return self._post_sale(invoice, categories)
        except Rejected:
            if self._tax_source != "store":
                raise
            # Refused while using a kept table: it may name a category since changed. Read it
            # again; if it did change, the refused sale (nothing was created) goes once more.
            kept = categories
            categories = self.tax_categories(fresh=True)
            if categories == kept:
                raise
            return self._post_sale(invoice, categories)

    def _post_sale(
        self, invoice: InvoiceDraft, categories: dict[str, tuple[str, Decimal]]
    ) -> PostedInvoice:
        body = self.sale_body(invoice, categories)
        lines = body["SaleLines"]["SaleLine"]
        cost = 2.0 + 3.0 + 0.5 * (len(lines) + 1)
        try:
            data = self.http.json("POST", self._path("Sale"), json_body=body, cost=cost)
        except Rejected as err:
            message = body_message(err.body, "message") or err.message
            raise Rejected(
                f"Lightspeed rejected sale {invoice.number}: {message}",
                errors=[message],
                status=err.status,
                body=err.body,
            ) from None
        rows = as_list(data.get("Sale")) if isinstance(data, dict) else []
        if not rows or not isinstance(rows[0], dict):
            raise BadResponse("POST Sale.json: no Sale in the answer")
        posted, _ = self._sale_row(rows[0])
        # the answer echoes the SaleLines (notes §4): what a refund names, kept so the refund
        # need not read the sale again
        kept = _kept_lines(rows[0])
        return replace(posted, detail={"SaleLines": kept}) if kept else posted

    def sale_body(
        self, invoice: InvoiceDraft, categories: dict[str, tuple[str, Decimal]]
    ) -> dict[str, Any]:
        """The completed Sale we POST, paid in full."""
        lines: list[dict[str, Any]] = []
        computed = Decimal(0)
        # a SaleLine's unitPrice is exclusive of tax here (docs/providers.md): inclusive
        # prices go converted, a cent left over as a rounding line
        for line in invoice.exclusive_lines():
            line_total, line_tax = line_amounts(line.quantity, line.unit_price, line.tax_rate)
            computed += line_total + line_tax
            item = self._charge_item() if line.codeless else line.product_remote_id
            entry: dict[str, Any] = {
                "itemID": _int_or_str(item),
                "unitQuantity": format(line.quantity.normalize(), "f"),
                "unitPrice": format(line.unit_price, "f"),  # as given: the money rule rounds lines
            }
            if line.tax_code:
                entry["tax"] = True
                entry["taxCategoryID"] = self._tax_category_id(line.tax_code, categories)
            else:
                entry["tax"] = False
            lines.append(entry)
        total = round_money(invoice.total) if invoice.total is not None else computed
        body: dict[str, Any] = {
            "employeeID": _int_or_str(self.settings["employee_id"]),
            "registerID": _int_or_str(self.settings["register_id"]),
            "shopID": _int_or_str(self.settings["shop_id"]),
            "completed": True,
            "referenceNumber": invoice.number,
            "referenceNumberSource": "synccli",
            "SaleLines": {"SaleLine": lines},
            # the customer's payments when the order carries them (invoices add checked they
            # add up to its total: a completed sale must balance), else paid in full
            "SalePayments": {
                "SalePayment": [
                    {
                        "amount": money_text(p.amount),
                        "paymentTypeID": _int_or_str(payment_type(self.settings, p.method)),
                    }
                    for p in invoice.payments
                ]
                or {
                    "amount": money_text(total),
                    "paymentTypeID": _int_or_str(self.settings["payment_type_id"]),
                }
            },
        }
        if invoice.customer_remote_id:
            body["customerID"] = _int_or_str(invoice.customer_remote_id)
        return body

    def find_refund(self, number: str, target: RefundTarget) -> PostedInvoice | None:
        """The refund sale under our ``referenceNumber`` when the refund endpoint kept it (that
        it does is unconfirmed: docs/providers.md); else a refund sale whose lines give back
        lines of the order's sale (``SaleLines.parentSaleLineID=IN,[...]``), that is none of
        the order's refunds the store records (``target.known``) and, when the refund's lines
        are known (``target.lines``), gives back exactly what ours would: the same SaleLines,
        the same quantities, the same money. A refund made at the till of other lines or
        quantities is never taken for ours."""
        found = self.find_invoice(number)
        if found is not None:
            return _given_back(found)
        sold = self._sold_lines(target)
        expected: tuple[Counter[tuple[str, Decimal]], Decimal] | None = None
        if target.lines:
            try:
                lines, back = self._refund_lines(target.lines, sold, target.remote_id)
            except Rejected:
                return None  # the sale has no such lines left: ours cannot be there either
            expected = _given_lines(lines), back
        parents = [str(ln["saleLineID"]) for ln in sold]
        unknown: list[PostedInvoice] = []
        for chunk in (parents[i : i + 100] for i in range(0, len(parents), 100)):  # IN: ≤ 100
            pairs = [
                ("load_relations", '["SaleLines"]'),
                ("SaleLines.parentSaleLineID", f"IN,[{','.join(chunk)}]"),
                ("sort", "saleID"),
            ]
            # notes §5: 1, a to-many relation on a list +0.4
            walk = self._pages("Sale", pairs, self._refund_row, cost=1.4, cursor_field=None)
            for sale, voided, given in every_record(walk, "GET Sale.json"):
                if (
                    voided
                    or sale.number not in ("", number)  # another number: not this refund
                    or sale.remote_id == target.remote_id
                    or sale.remote_id in target.known
                    or sale.remote_id in {u.remote_id for u in unknown}
                ):
                    continue
                if expected is not None and (
                    given != expected[0] or sale.total is None or -sale.total != expected[1]
                ):
                    continue  # other lines, quantities or money: a refund made elsewhere
                unknown.append(sale)
        if not unknown:
            return None
        first = min(unknown, key=lambda sale: int(sale.remote_id))
        return _given_back(replace(first, number=number))

    def post_refund(self, refund: InvoiceDraft, idempotency_key: str) -> PostedInvoice:
        """``POST Sale/{id}/refund.json`` against the order's sale: each line names the SaleLine
        it gives back (``parentSaleLineID``, from the sale's lines the store kept from its post's
        answer, else read from the sale first: one GET) with a negative quantity, paid back in
        one negative payment of what those lines cost at the sale's prices. No idempotency key:
        the job looks the refund up by number before any re-post."""
        target = refund.refund_of
        assert target is not None
        kept = _stored_lines(target.detail)
        sold = kept if kept is not None else self._read_lines(target.remote_id)
        try:
            return self._post_refund(refund, target, sold)
        except Rejected:
            if kept is None:
                raise
            # Refused against the kept lines: the sale may have changed at Lightspeed since
            # it was posted. Read it; if its lines did change, the refused refund (nothing
            # was made) goes once more against them.
            fresh = self._read_lines(target.remote_id)
            if fresh == kept:
                raise
            return self._post_refund(refund, target, fresh)

    def _post_refund(
        self, refund: InvoiceDraft, target: RefundTarget, sold: list[dict[str, Any]]
    ) -> PostedInvoice:
        lines, back = self._refund_lines(refund.lines, sold, target.remote_id)
        body: dict[str, Any] = {
            "employeeID": _int_or_str(self.settings["employee_id"]),
            "registerID": _int_or_str(self.settings["register_id"]),
            "shopID": _int_or_str(self.settings["shop_id"]),
            "completed": True,
            "referenceNumber": refund.number,
            "referenceNumberSource": "synccli",
            "SaleLines": {"SaleLine": lines},
            "SalePayments": {
                "SalePayment": {
                    "amount": money_text(-back),
                    "paymentTypeID": _int_or_str(self.settings["payment_type_id"]),
                }
            },
        }
        if refund.customer_remote_id:
            body["customerID"] = _int_or_str(refund.customer_remote_id)
        path = self._path(f"Sale/{target.remote_id}/refund")
        cost = 10.0 + 0.5 * (len(lines) + 1)  # notes §5: "Sale Refund" 10, +0.5 nested
        try:
            data = self.http.json("POST", path, json_body=body, cost=cost)
        except Rejected as err:
            message = body_message(err.body, "message") or err.message
            raise Rejected(
                f"Lightspeed refused refund {refund.number} of sale {target.remote_id} "
                f"(order {target.number}): {message}",
                errors=[message],
                status=err.status,
                body=err.body,
            ) from None
        rows = as_list(data.get("Sale")) if isinstance(data, dict) else []
        if not rows or not isinstance(rows[0], dict):
            raise BadResponse("POST Sale/{id}/refund.json: no Sale in the answer")
        posted, _ = self._sale_row(rows[0])
        return _given_back(replace(posted, number=posted.number or refund.number))

    def _sold_lines(self, target: RefundTarget) -> list[dict[str, Any]]:
        """The order's sale's lines: as the store kept them, else read (one GET)."""
        kept = _stored_lines(target.detail)
        return kept if kept is not None else self._read_lines(target.remote_id)

    def _read_lines(self, sale_id: str) -> list[dict[str, Any]]:
        query = urlencode([("load_relations", '["SaleLines"]')])
        data = self.http.json("GET", self._path(f"Sale/{sale_id}"), query=query, cost=1.2)
        rows = as_list(data.get("Sale")) if isinstance(data, dict) else []
        if not rows or not isinstance(rows[0], dict):
            raise BadResponse(f"GET Sale/{sale_id}.json: no Sale in the answer")
        return _kept_lines(rows[0])

    def _refund_lines(
        self, refund: Sequence[InvoiceLine], sold: list[dict[str, Any]], sale_id: str
    ) -> tuple[list[dict[str, Any]], Decimal]:
        """Each refund line against the first SaleLine of its item with enough left (in this
        refund), and the money given back at those SaleLines' prices and tax."""
        used: dict[str, Decimal] = {}
        lines, back = [], Decimal(0)
        for line in refund:
            if line.kind == "other":  # an amount on a line: `invoices add` refuses these
                raise Rejected("Lightspeed refunds whole quantities of a SaleLine, not amounts")
            item = str(self._charge_item() if line.codeless else line.product_remote_id)
            fits = [
                ln
                for ln in sold
                if str(ln.get("itemID")) == item
                and (decimal_or_none(ln.get("unitQuantity")) or Decimal(0))
                - used.get(str(ln["saleLineID"]), Decimal(0))
                >= line.quantity
            ]
            # the same item may be sold on two lines (a product and the charge item): the
            # line at the refunded line's price first
            fits.sort(key=lambda ln: decimal_or_none(ln.get("unitPrice")) != line.unit_price)
            parent = fits[0] if fits else None
            if parent is None:
                raise Rejected(
                    f"sale {sale_id} has no line of item {item} with {line.quantity} left to refund"
                )
            pid = str(parent["saleLineID"])
            used[pid] = used.get(pid, Decimal(0)) + line.quantity
            rate = decimal_or_none(parent.get("tax1Rate")) or Decimal(0)
            taxed = to_bool(parent.get("tax"))
            price = decimal_or_none(parent.get("unitPrice")) or Decimal(0)
            total, tax = line_amounts(line.quantity, price, rate if taxed else Decimal(0))
            back += total + tax
            quantity = format((-line.quantity).normalize(), "f")
            lines.append({"parentSaleLineID": _int_or_str(pid), "unitQuantity": quantity})
        return lines, back

    def _charge_item(self) -> str:
        item = str(self.settings.get("charge_item") or "").strip()
        if not item:  # invoices add and post-invoices refuse such an order before this
            raise Rejected("a line without a product code needs the setting charge_item")
        return item

    def tax_categories(self, *, fresh: bool = False) -> dict[str, tuple[str, Decimal]]:
        """tax1Name -> (taxCategoryID, tax1Rate): read once per run, or taken from an earlier
        run's copy (:meth:`prime`); ``fresh`` reads it again."""
        if self._tax_categories is None or fresh:
            table: dict[str, tuple[str, Decimal]] = {}
            for page in self._pages("TaxCategory", [], lambda r: r, cursor_field=None):
                for row in page.records:
                    name = str(row.get("tax1Name") or "")
                    table[name] = (
                        str(row.get("taxCategoryID")),
                        decimal_or_none(row.get("tax1Rate")) or Decimal(0),  # for reference
                    )
            self._tax_categories = table
            self._tax_source = "read"
        return self._tax_categories

    def prime(self, name: str, value: dict[str, Any]) -> None:
        if name != TAX_LIST or self._tax_categories is not None:
            return
        try:
            table = {str(k): (str(v[0]), Decimal(str(v[1]))) for k, v in value.items()}
        except (TypeError, ValueError, IndexError, ArithmeticError):
            return  # a damaged copy is simply read again
        self._tax_categories, self._tax_source = table, "store"

    def reference_lists(self) -> dict[str, dict[str, Any]]:
        if self._tax_source != "read" or self._tax_categories is None:
            return {}
        return {TAX_LIST: {k: [cid, str(rate)] for k, (cid, rate) in self._tax_categories.items()}}

    @classmethod
    def _knows(cls, code: str, categories: dict[str, tuple[str, Decimal]]) -> bool:
        return cls._tax_category_id(code, categories) != code or code in {
            cid for cid, _ in categories.values()
        }

    @staticmethod
    def _tax_category_id(code: str, categories: dict[str, tuple[str, Decimal]]) -> Any:
        if code in categories:
            return _int_or_str(categories[code][0])
        folded = {name.casefold(): cid for name, (cid, _) in categories.items()}
        if code.casefold() in folded:
            return _int_or_str(folded[code.casefold()])
        if code in {cid for cid, _ in categories.values()}:
            return _int_or_str(code)
        return code  # unknown (post_invoice refuses such an order before sending it)

    # operations ---------------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        resp = self.http.request("GET", "API/V3/Account.json", cost=COST_GET)
        body = parse_json(resp) if resp.content else {}
        accounts = as_list(body.get("Account")) if isinstance(body, dict) else []
        account = (
            accounts[0].get("accountID") if accounts and isinstance(accounts[0], dict) else None
        )
        return {"date": resp.headers.get("Date"), "status": resp.status_code, "account_id": account}

    # the ids a posted Sale names: Shop, Register, Employee, PaymentType (the notes' §2 table,
    # "lookups for creating a Sale"), one call each
    IDS: ClassVar[dict[str, tuple[str, str, str]]] = {
        "shop_id": ("Shop", "shopID", "name"),
        "register_id": ("Register", "registerID", "name"),
        "employee_id": ("Employee", "employeeID", "lastName"),
        "payment_type_id": ("PaymentType", "paymentTypeID", "name"),
    }

    def ids(self) -> dict[str, list[dict[str, str]]]:
        """What each id setting may be set to: ``{"shop_id": [{"id", "name"}], ...}``."""
        out: dict[str, list[dict[str, str]]] = {}
        for setting, (entity, key, label) in self.IDS.items():
            rows: list[dict[str, str]] = []
            for page in self._pages(
                entity, [("limit", str(PAGE_LIMIT))], lambda r: r, cursor_field=None
            ):
                for row in page.records:
                    name = row.get(label) or ""
                    if entity == "Employee":
                        name = f"{row.get('firstName') or ''} {row.get('lastName') or ''}".strip()
                    rows.append({"id": str(row.get(key)), "name": str(name)})
            out[setting] = rows
        return out

    # record mapping -----------------------------------------------------------------------------
    def _product(self, row: dict[str, Any]) -> RemoteProduct:
        """An item; one with no code in the SKU field (``""``, absent) is read all the same,
        with ``code=""``: a real item the job counts, not an unreadable record (issue 17)."""
        item_id = str(row["itemID"])
        raw = row.get(self.sku_field)
        if raw is not None and not isinstance(raw, (str, int)):
            raise ValueError(f"{self.sku_field} is not a string")
        code = "" if raw is None else str(raw)
        if not code.strip():
            code = ""
        for name in ("Prices", "ItemShops"):
            if row.get(name) not in (None, "") and not isinstance(row.get(name), dict):
                raise ValueError(f"{name} is not an object")
        updated = instant(row.get("timeStamp"), "timeStamp")
        price = None
        for entry in relation(row, "Prices", "ItemPrice"):
            if entry.get("useType") == "Default" or str(entry.get("useTypeID")) == "1":
                price = decimal(entry.get("amount"), "price")
                break
        shops = relation(row, "ItemShops", "ItemShop")
        stock: Decimal | None = None
        summary = [s for s in shops if str(s.get("shopID")) == "0"]
        if summary:
            stock = decimal(summary[0].get("qoh"), "qoh")
        elif shops:
            # a shop row without a qoh holds none
            stock = sum((decimal(s.get("qoh"), "qoh") or Decimal(0) for s in shops), Decimal(0))
        description = str(row.get("description") or "")
        return RemoteProduct(
            remote_id=item_id,
            code=code,
            name=description,
            description=description or None,
            price=price,
            active=not to_bool(row.get("archived", "false")),
            updated_at=updated,
            stock=stock,
        )

    @staticmethod
    def _stock(row: dict[str, Any]) -> RemoteStock:
        quantity = decimal(row.get("qoh"), "qoh")
        if quantity is None:
            raise ValueError("no qoh")
        return RemoteStock(
            remote_id=str(row["itemID"]),
            quantity=quantity,
            updated_at=instant(row.get("timeStamp"), "timeStamp"),
        )

    @staticmethod
    def _emails(row: dict[str, Any]) -> list[str]:
        contact = row.get("Contact")
        if not isinstance(contact, dict):
            return []
        emails = relation(contact, "Emails", "ContactEmail")
        emails.sort(key=lambda e: e.get("useType") != "Primary")
        return [str(e["address"]).strip() for e in emails if e.get("address")]

    @classmethod
    def _customer(cls, row: dict[str, Any]) -> RemoteCustomer:
        first = str(row.get("firstName") or "").strip()
        last = str(row.get("lastName") or "").strip()
        name = f"{first} {last}".strip() or str(row.get("company") or "").strip()
        emails = cls._emails(row)
        return RemoteCustomer(
            remote_id=str(row["customerID"]),
            name=name,
            email=emails[0] if emails else None,
            account_number=None,
            active=not to_bool(row.get("archived", "false")),
            updated_at=instant(row.get("timeStamp"), "timeStamp"),
        )

    @classmethod
    def _customer_row(cls, row: dict[str, Any]) -> tuple[RemoteCustomer, set[str]]:
        return cls._customer(row), {e.casefold() for e in cls._emails(row)}

    @classmethod
    def _refund_row(
        cls, row: dict[str, Any]
    ) -> tuple[PostedInvoice, bool, Counter[tuple[str, Decimal]]]:
        """A refund sale as a look-up compares it: the sale, voided or not, and what its lines
        give back."""
        sale, voided = cls._sale_row(row)
        lines = [ln for ln in relation(row, "SaleLines", "SaleLine") if isinstance(ln, dict)]
        return sale, voided, _given_lines(lines)

    @staticmethod
    def _sale_row(row: dict[str, Any]) -> tuple[PostedInvoice, bool]:
        # compared when known: an unreadable total never hides a sale we posted
        total = decimal_or_none(row.get("calcTotal"))
        if total is None:
            total = decimal_or_none(row.get("total"))
        posted = PostedInvoice(
            remote_id=str(row["saleID"]),
            number=str(row.get("referenceNumber") or ""),
            total=total,
            status="completed" if to_bool(row.get("completed")) else "open",
        )
        return posted, to_bool(row.get("voided", "false")) or to_bool(row.get("archived", "false"))


# the SaleLine fields a refund reads: which line, of what item, how many, at what price and tax
_KEPT_FIELDS = ("saleLineID", "itemID", "unitQuantity", "unitPrice", "tax", "tax1Rate")


def _unknown_tax(
    invoice: InvoiceDraft, unknown: list[str], categories: dict[str, tuple[str, Decimal]]
) -> str:
    """What the merchant reads about an order naming tax codes Lightspeed has no category for."""
    named = ", ".join(
        f"line {n} tax_code {line.tax_code!r}"
        for n, line in enumerate(invoice.lines, 1)
        if line.tax_code in unknown
    )
    known = ", ".join(sorted(name for name in categories if name)) or "none"
    return (
        f"sale {invoice.number} not sent: no Lightspeed tax category has the tax1Name or "
        f"taxCategoryID of {named} (in the list read from Lightspeed this run); its "
        f"categories are: {known}"
    )


def _kept_lines(sale: dict[str, Any]) -> list[dict[str, Any]]:
    """A sale's own SaleLines (not those giving back another sale's), the fields a refund
    reads, as text."""
    return [
        {k: str(ln[k]) for k in _KEPT_FIELDS if ln.get(k) is not None}
        for ln in relation(sale, "SaleLines", "SaleLine")
        if isinstance(ln, dict) and ln.get("saleLineID")
    ]


def _stored_lines(detail: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The SaleLines the store kept from the sale's post, or None (none kept, or not in the
    shape we keep: then the sale is read)."""
    lines = (detail or {}).get("SaleLines")
    if not isinstance(lines, list) or not lines:
        return None
    if not all(isinstance(ln, dict) and ln.get("saleLineID") for ln in lines):
        return None
    return lines


def _given_lines(lines: list[dict[str, Any]]) -> Counter[tuple[str, Decimal]]:
    """What refund lines give back: (parent SaleLine, quantity given back) with their counts."""
    out: Counter[tuple[str, Decimal]] = Counter()
    for ln in lines:
        quantity = decimal_or_none(ln.get("unitQuantity"))
        parent = str(ln.get("parentSaleLineID") or "0")
        if quantity is not None and parent != "0":
            out[(parent, (-quantity).normalize())] += 1
    return out


def _given_back(refund: PostedInvoice) -> PostedInvoice:
    """A refund sale's total is negative at Lightspeed; the job compares the money given back."""
    return replace(refund, total=-refund.total if refund.total is not None else None)


def _rows(entity: str, data: Any) -> list[Any]:
    """The rows of a list answer; an answer that is no list (an error envelope on a 200, a
    scalar where the rows belong) is a bad response, not an empty list."""
    if not isinstance(data, dict):
        raise BadResponse(f"GET {entity}.json: expected an object, got {type(data).__name__}")
    raw = data.get(entity)
    if raw is None and "@attributes" not in data:
        # a 200 carrying an error envelope, not an empty list
        message = data.get("message") or data.get("httpMessage") or "no " + entity
        raise BadResponse(f"GET {entity}.json: {str(message)[:200]}")
    if isinstance(raw, (str, int, float)) and raw != "":
        raise BadResponse(f"GET {entity}.json: {entity} is not a list or an object")
    return as_list(raw)


def _int_or_str(value: Any) -> Any:
    text = str(value).strip()
    return int(text) if text.isdigit() else text


# ------------------------------------------------------------------------------------------------
# wiring


def connect(
    settings: dict[str, Any],
    credentials: dict[str, Any],
    *,
    token_store: TokenStore,
    ledger: Ledger | None = None,
    clock: Clock | None = None,
    time_scale: float = 1.0,
    pace: bool = True,
    timeout: tuple[float, float] = (5.0, 30.0),
) -> LightspeedConnector:
    """A connector for one Lightspeed account (see the module docstring for the keys)."""
    s = _settings(settings)
    if not s.get("client_id"):
        raise ConfigError("Lightspeed settings need client_id")
    secret = credentials.get("client_secret")
    if not secret:
        raise ConfigError("Lightspeed credentials need client_secret")
    secrets.register(secret)
    stored = token_store.load()
    secrets.register(stored.access_token, stored.refresh_token)
    auth = OAuth2Auth(
        token_url=f"{s['auth_url']}/auth/oauth/token",
        client_id=str(s["client_id"]),
        client_secret=str(secret),
        store=token_store,
        clock=clock,
        basic_auth=False,  # Lightspeed wants client_id/client_secret in the form body
    )
    http = HttpClient(
        s["base_url"],
        auth=auth,
        limits=LIMITS,
        profile=PROFILE,
        ledger=ledger,
        clock=clock,
        time_scale=time_scale,
        timeout=timeout,
        pace=pace,
    )
    return LightspeedConnector(http, s, token_store=token_store)


def discover_account(
    settings: dict[str, Any], credentials: dict[str, Any], token_store: TokenStore, **kw: Any
) -> str:
    """The accountID this connection's tokens belong to (token answer ``acct``, JWT claim, or
    ``GET /API/V3/Account.json``); saved in the token store's ``extra["account_id"]``."""
    conn = connect({**settings, "account_id": None}, credentials, token_store=token_store, **kw)
    return conn.discover_account()


def authorize_url(
    settings: dict[str, Any], redirect_uri: str, state: str, *, code_challenge: str | None = None
) -> str:
    """Where to send the merchant to grant access (``employee:all`` unless ``scope`` is set)."""
    s = _settings(settings)
    params = {
        "response_type": "code",
        "client_id": s["client_id"],
        "scope": s["scope"],
        "state": state,
        "redirect_uri": redirect_uri,
    }
    if code_challenge:
        params.update(code_challenge=code_challenge, code_challenge_method="S256")
    return f"{s['auth_url']}/auth/oauth/authorize?{urlencode(params)}"


def exchange_code(
    settings: dict[str, Any],
    credentials: dict[str, Any],
    code: str,
    redirect_uri: str,
    *,
    code_verifier: str | None = None,
    clock: Clock | None = None,
) -> Tokens:
    """Trade an authorization code for tokens (form-encoded, no ``scope``: a JSON body with a
    scope is refused). ``extra["account_id"]`` comes from the answer's ``acct`` or the JWT."""
    s = _settings(settings)
    secret = str(credentials.get("client_secret") or "")
    if not s.get("client_id") or not secret:
        raise ConfigError("Lightspeed needs client_id (settings) and client_secret (credentials)")
    secrets.register(secret)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier:
        form["code_verifier"] = code_verifier
    body = token_request(
        f"{s['auth_url']}/auth/oauth/token",
        form,
        client_id=str(s["client_id"]),
        client_secret=secret,
        basic_auth=False,
    )
    now = (clock or SystemClock()).now()
    account = body.get("acct") or jwt_claim(body.get("access_token"), "acct")
    extra = {"account_id": str(account)} if account else {}
    return Tokens(
        access_token=body["access_token"],
        refresh_token=body.get("refresh_token"),
        expires_at=now + timedelta(seconds=int(body.get("expires_in", 1800))),
        extra=extra,
    )
