"""Lightspeed Retail **X-Series** (formerly Vend) connector, API version 2026-07.

Sources: the provider notes (``providers/lightspeed-x.md``, keys such as [D-PAG]) and the official
spec (``tests/specs/``; the tests check every request sent here against it). Settings: registry.

- Cursors: X-Series pages by **version**, one integer counter per store [D-PAG]. The store keeps
  cursors as instants, so a version travels as that many microseconds after 1970
  (:func:`version_stamp`), before any run's start; a record's ``updated_at`` is its version the
  same way, so the jobs rank and clamp versions without knowing.
- ``changed_products``/``changed_customers``: ``GET /products|customers?deleted=true&after=V``,
  1000 a page, a short page ends it; deleted or inactive rows come back ``active=False``.
  ``changed_stock``: ``POST /inventory``, ascending (its default is descending), its own cursor.
- ``get_products``: 100 ids a ``/search`` and one ``/inventory_levels``; the sweep lists the
  whole catalogue when cheaper. ``find_product``: ``GET /products?sku=``; ``find_customers``:
  ``/search`` by email, then code; all compared exactly here (the server's matching is not ours).
- Sales: posted under our own ``id``, a UUID derived from the store and the order number
  (:func:`sale_id`), so ``find_invoice(number)`` is ``GET /sales/{id}``: 200 found, 404 absent
  (the job posts again only then) [notes §12].
- Limits: ``300 x registers + 50`` calls per 300 s [D-RL], paced and steered by
  ``X-RateLimit-Remaining``, counted across runs by the ledger; a 429's ``Retry-After`` is an
  HTTP date, read against the answer's ``Date``.
- Reference lists (taxes, outlets, registers, payment types, the token's user): read once a day,
  kept by the store (:meth:`LightspeedXConnector.prime`); ``authorize`` stores the ids they give.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlencode

from synccli import secrets
from synccli.clock import Clock, SystemClock
from synccli.connectors.auth import OAuth2Auth, PersonalToken, Tokens, TokenStore, token_request
from synccli.connectors.base import (
    Capabilities,
    Connector,
    DocumentSupport,
    InvoiceDraft,
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
from synccli.connectors.http import HttpClient, Ledger, Profile, parse_json, x_ratelimit
from synccli.connectors.paging import ROW_ERRORS, ShortPageCursor, convert_rows, pages
from synccli.connectors.wire import (
    decimal,
    decimal_or_none,
    line_amounts,
    named_rows,
    round_money,
    stamp_version,
    unit_amounts,
    version_stamp,
)
from synccli.connectors.wire import (
    whole_number as _int,
)
from synccli.errors import AuthError, BadResponse, ConfigError, Rejected, SyncError

API = "api/2026-07"
TOKEN_PATH = "api/1.0/token"
DEFAULT_BASE_URL = "https://{domain_prefix}.retail.lightspeed.app"
DEFAULT_AUTH_URL = "https://secure.retail.lightspeed.app"
# [notes §1] what synccli reads and writes; ``webhooks`` is not asked for
DEFAULT_SCOPE = (
    "products:read products:write inventory:read customers:read customers:write sales:read "
    "sales:write outlets:read registers:read payment_types:read taxes:read users:read "
    "retailer:read"
)
PAGE = 1000  # [notes §3] the spec names no cap; 1000 is what clients are served
BATCH = 100  # ids one /search carries (a 4 kB query)
INVENTORY_PAGE = 5000  # [SPEC InventoryRequest.size maximum]
WINDOW = 300.0  # seconds [D-RL]
REFERENCE = "x_series_reference"  # the name its copy is kept under between runs
T = TypeVar("T")
SALE_NS = uuid.UUID("0b0e6f4e-3c51-5c1e-9d0b-2f3f6c1d7a10")
log = logging.getLogger("synccli.lightspeed_x")


def limits_for(registers: int = 1) -> Limits:
    """Calls allowed per 5 minutes [D-RL]."""
    return Limits(window_calls=300 * max(1, registers) + 50, window_seconds=WINDOW)


def sale_id(domain_prefix: str, number: str) -> str:
    """Our sale's id: the same UUID for the same order number in the same store, so a post
    whose answer was lost is found by ``GET /sales/{id}`` and never posted twice."""
    return str(uuid.uuid5(SALE_NS, f"{domain_prefix.lower()}\x00{number}"))


PROFILE = Profile(
    read_remaining=x_ratelimit,  # [D-RL] X-RateLimit-Remaining steers the pacer
    limit_scope=lambda resp: "short",  # one 5-minute window, no day or month quota [D-RL]
)


# ------------------------------------------------------------------------------------------------
# the connector


def _settings(settings: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = dict(base_url=DEFAULT_BASE_URL, auth_url=DEFAULT_AUTH_URL, registers=1)
    s.update({k: v for k, v in settings.items() if v is not None})
    prefix = str(s.get("domain_prefix") or "")
    if "{domain_prefix}" in str(s["base_url"]):
        if not prefix:
            raise ConfigError("Lightspeed X-Series settings need domain_prefix (the store)")
        s["base_url"] = str(s["base_url"]).replace("{domain_prefix}", prefix)
    s["base_url"] = str(s["base_url"]).rstrip("/")
    s["auth_url"] = str(s["auth_url"]).rstrip("/")
    s["registers"] = max(1, int(str(s["registers"])))  # checked when set (registry)
    return s


class LightspeedXConnector(Connector):
    """One Lightspeed Retail X-Series store."""

    provider: ClassVar[str] = "lightspeed-x"
    capabilities: ClassVar[Capabilities] = Capabilities(
        lookup_batch=BATCH,  # ids a look-up call pair carries (search, levels)
        stock_in_product=False,
        idempotency_keys=True,  # our own sale id, derived from the order
        cursor_overlap=timedelta(0),  # versions are given at write time [notes §3]
        limits=limits_for(1),
        catalogue_page=PAGE,
        version_stamps=True,
        # a line names a product: codeless ones go against the charge_item setting's
        documents=DocumentSupport("converted", "charge_item", "in_sale", "return_sale"),
    )

    def __init__(self, http: HttpClient, settings: dict[str, Any]) -> None:
        super().__init__(http, _settings(settings))
        self._reference: dict[str, Any] | None = None
        self._reference_source = "none"  # "store" (an earlier run's copy) or "read"
        self.prefix = str(self.settings.get("domain_prefix") or http.base_url)  # sale ids

    # paging -------------------------------------------------------------------------------------
    def _feed(
        self, resource: str, after: int, convert: Callable[[dict[str, Any]], T], **params: Any
    ) -> Iterator[Page[T]]:
        """A version-cursor list [D-PAG], walked by the shared page generator."""

        def fetch(asked: int) -> Any:
            query = {"after": asked, "page_size": PAGE, **params}
            return self.http.json("GET", f"{API}/{resource}", params=query)

        walk = ShortPageCursor(f"/{resource}", after, PAGE)
        yield from pages(
            walk, fetch, lambda body: _rows(body, resource), convert, **_walk(resource)
        )

    # products and stock -------------------------------------------------------------------------
    def changed_products(self, since: datetime | None) -> Iterator[Page[RemoteProduct]]:
        yield from self._feed("products", stamp_version(since), _product, deleted="true")

    def changed_stock(self, since: datetime | None) -> Iterator[Page[RemoteStock]]:
        """The inventory feed by its own cursor [SPEC ListInventoryRecords]: a bare array, asked
        ascending (the default is descending), deleted products' rows included."""
        outlet = self.outlet_id()

        def fetch(asked: int) -> Any:
            body = {"after": asked, "size": INVENTORY_PAGE, "sort_direction": "asc"}
            body["include_deleted"] = True
            rows = self.http.json("POST", f"{API}/inventory", json_body=body, retry=True)
            if not isinstance(rows, list):
                raise BadResponse("POST /inventory: expected an array of inventory records")
            top = max(
                (_int(r.get("version")) or 0 for r in rows if isinstance(r, dict)),
                default=0,
            )
            return {"data": rows, "version": {"max": top or None}}

        walk = ShortPageCursor("/inventory", stamp_version(since), INVENTORY_PAGE)
        mine = lambda row: _stock(row) if row.get("outlet_id") == outlet else None  # noqa: E731
        for page in pages(walk, fetch, lambda body: body["data"], mine, **_walk("inventory")):
            kept = [r for r in page.records if r is not None]
            yield Page(kept, cursor=page.cursor, number=page.number, errors=page.errors)

    def get_products(self, remote_ids: list[str]) -> list[RemoteProduct]:
        """100 ids a call pair: ``/search`` by repeated ``_id`` (deleted ones too) and the levels
        snapshot ``POST /inventory_levels`` [SPEC]. An id the search leaves out is confirmed by
        ``GET /products/{id}`` before it counts as gone: absence is not deletion."""
        ids = list(dict.fromkeys(str(r).strip().lower() for r in remote_ids if str(r).strip()))
        out: list[RemoteProduct] = []
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            query = [("type", "products"), ("deleted", "true"), ("page_size", PAGE)]
            body = self.http.json(
                "GET", f"{API}/search", params=query + [("_id", i) for i in chunk]
            )
            rows = {
                str(r.get("id")).lower(): r for r in _rows(body, "search") if isinstance(r, dict)
            }
            found: dict[str, RemoteProduct] = {}
            for rid in chunk:
                row = rows.get(rid)
                product = self._one_product(rid) if row is None else None
                if row is not None and not row.get("deleted_at"):
                    product = _product(row)  # a deleted row is gone: no need to ask again
                if product is not None:
                    found[rid] = product
            levels = self._levels(list(found)) if found else {}
            for rid, product in found.items():
                product.stock = levels.get(rid)
                out.append(product)
        return out

    def _levels(self, ids: list[str]) -> dict[str, Decimal]:
        """Our outlet's level of each product (a snapshot; inactive ones too)."""
        body = {"product_ids": ids, "size": 10000, "include_inactive": True}
        rows = self.http.json("POST", f"{API}/inventory_levels", json_body=body, retry=True)
        outlet = self.outlet_id()
        mine = [r for r in rows or [] if isinstance(r, dict) and r.get("location_id") == outlet]
        try:
            levels = {str(r["product_id"]).lower(): _level(r) for r in mine}
        except ROW_ERRORS as exc:  # a look-up that cannot read a row fails (wire's rule)
            raise BadResponse(f"POST /inventory_levels: {exc}") from None
        return {rid: level for rid, level in levels.items() if level is not None}

    def _one_product(self, rid: str) -> RemoteProduct | None:
        resp = self.http.request("GET", f"{API}/products/{rid}", ok=(404,))
        if resp.status_code == 404:
            return None
        row = _data(parse_json(resp), f"GET /products/{rid}")
        if row.get("deleted_at"):
            return None  # deleted: gone, as a 404 says it (which one answers is unconfirmed)
        return _product(row)

    def find_product(self, code: str) -> RemoteProduct | None:
        body = self.http.json("GET", f"{API}/products", params={"sku": code})
        found = convert_rows(_rows(body, "products"), _product)[0]
        matches = [p for p in found if p.code == code]  # exact, case-sensitive, here
        matches.sort(key=lambda p: (not p.active, p.remote_id))
        if matches:
            rid = matches[0].remote_id
            matches[0].stock = self._levels([rid]).get(rid)
        return matches[0] if matches else None

    def create_product(self, product: NewProduct) -> RemoteProduct:
        body: dict[str, Any] = {"name": product.name, "sku": product.code, "is_active": True}
        body["price_excluding_tax"] = float(round_money(product.price))
        if product.description:
            body["description"] = product.description
        data = self.http.json("POST", f"{API}/products", json_body=body)
        ids = data.get("data") if isinstance(data, dict) else None
        if not isinstance(ids, list) or len(ids) != 1 or not isinstance(ids[0], str):
            raise BadResponse("POST /products: expected the new product's id in data")
        made = RemoteProduct(ids[0].lower(), product.code, product.name, product.description)
        made.price, made.stock = product.price, Decimal(0)
        return made

    # customers ----------------------------------------------------------------------------------
    def changed_customers(self, since: datetime | None) -> Iterator[Page[RemoteCustomer]]:
        yield from self._feed("customers", stamp_version(since), _customer, deleted="true")

    def find_customers(
        self, *, email: str | None = None, account: str | None = None
    ) -> list[RemoteCustomer]:
        found: dict[str, RemoteCustomer] = {}
        email, account = (email or "").strip(), (account or "").strip()
        for c in self._search_customers("email", email) if email else []:
            if (c.email or "").strip().casefold() == email.casefold():  # exact, folded case
                found[c.remote_id] = c
        for c in self._search_customers("customer_code", account) if account else []:
            if c.account_number == account:
                found[c.remote_id] = c
        return list(found.values())

    def _search_customers(self, field: str, value: str) -> list[RemoteCustomer]:
        params = {"type": "customers", field: value, "deleted": "true", "page_size": PAGE}
        body = self.http.json("GET", f"{API}/search", params=params)
        return convert_rows(_rows(body, "search"), _customer)[0]

    def create_customer(self, customer: NewCustomer) -> RemoteCustomer:
        first, last = customer.first_name, customer.last_name
        if not (first or last):
            first, _, last = (customer.name or "").strip().rpartition(" ")
        body: dict[str, Any] = {"first_name": first or None, "last_name": last or None}
        if customer.email:
            body["email"] = customer.email
        if customer.account_number:
            body["customer_code"] = customer.account_number
        if not (first or last):
            body["company_name"] = customer.name
        data = self.http.json("POST", f"{API}/customers", json_body=body)
        row = data.get("data") if isinstance(data, dict) else None
        if not isinstance(row, dict):
            raise BadResponse("POST /customers: no data in the answer")
        made = _customer(row)
        if customer.account_number and made.account_number != customer.account_number:
            raise Rejected(
                f"Lightspeed created customer {made.remote_id} with code "
                f"{made.account_number!r}, not {customer.account_number!r}"
            )
        return made

    # invoices -----------------------------------------------------------------------------------
    def find_invoice(self, number: str) -> PostedInvoice | None:
        rid = sale_id(self.prefix, number)
        resp = self.http.request("GET", f"{API}/sales/{rid}", ok=(404,))
        if resp.status_code == 404:
            return None
        row = _data(parse_json(resp), f"GET /sales/{rid}")
        posted = _sale(row, number)
        return None if posted.status == "voided" else posted

    def finish_found(self, found: PostedInvoice) -> PostedInvoice:
        if found.status not in ("closed", "pending"):
            raise Rejected(f"sale {found.number} is at Lightspeed as {found.status}, not closed")
        return found

    def find_refund(self, number: str, target: RefundTarget) -> PostedInvoice | None:
        return self.find_invoice(number)  # a return is a sale under our own id too

    def post_refund(self, refund: InvoiceDraft, idempotency_key: str) -> PostedInvoice:
        """A return: the sale with negative quantities and payment, naming the sale it returns
        (``return_for``, as the X spec's initReturnSale example shows one); total given back."""
        return self.post_invoice(refund, idempotency_key)

    def post_invoice(self, invoice: InvoiceDraft, idempotency_key: str) -> PostedInvoice:
        """POST the sale under our own id (stored with the job: it is derived from the order),
        after which ``find_invoice`` finds it by that id; a refund as a return (post_refund)."""
        back = -1 if invoice.refund_of is not None else 1
        ref = self.reference()
        taxes: dict[str, tuple[str, Decimal]] = ref["taxes"]
        lines, computed = [], Decimal(0)
        for line in invoice.exclusive_lines():  # inclusive prices: converted (base.py)
            tax_id, rate = self._tax(line.tax_code, line.tax_rate, taxes)
            computed += sum(line_amounts(line.quantity, line.unit_price, rate))
            # per unit [SPEC LineItemTax], tax = price x rate; x quantity, the line's (wire.py)
            price, unit_tax = unit_amounts(line.quantity, line.unit_price, rate)
            product = self.settings.get("charge_item") if line.codeless else line.product_remote_id
            item = {"product": {"id": product}, "quantity": float(line.quantity * back)}
            item["pricing"] = {"price": float(price)}
            item["tax"] = {"id": tax_id, "amount": float(unit_tax)}
            lines.append(item)
        # paid in full at the store's own reckoning: a shop total that differs shows as the
        # sale's total against ours (a mismatch the job reports), not as a refused payment
        total = computed
        rid = sale_id(self.prefix, invoice.number)
        pays = {**self.settings, "payment_type_id": ref["payment_type_id"]}
        body: dict[str, Any] = {
            "id": rid,
            "source": {"author_id": ref["user_id"], "register_id": ref["register_id"]},
            "state": "closed",
            "date": invoice.date.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "note": invoice.reference or invoice.number,
            "line_items": lines,
            "payments": [  # the order's own payments (they add up to its total), else in full
                {"amount": float(p.amount), "type": {"config_id": payment_type(pays, p.method)}}
                for p in invoice.payments
            ]
            or [{"amount": float(total * back), "type": {"config_id": ref["payment_type_id"]}}],
        }
        if invoice.refund_of is not None:
            body["return_for"] = invoice.refund_of.remote_id
        body["source"].update(id=invoice.number, type="synccli")  # our order, on every read
        if invoice.customer_remote_id:
            body["customer_id"] = invoice.customer_remote_id
        try:
            data = self.http.json("POST", f"{API}/sales", json_body=body)
        except Rejected as err:
            why = f"Lightspeed rejected sale {invoice.number}: {err.message}"
            raise Rejected(why, errors=[err.message], status=err.status, body=err.body) from None
        posted = _sale(_data(data, "POST /sales"), invoice.number)
        if posted.remote_id != rid:
            raise BadResponse(f"POST /sales: answered sale {posted.remote_id}, not ours ({rid})")
        return posted

    @staticmethod
    def _tax(
        code: str | None, rate: Decimal, taxes: dict[str, tuple[str, Decimal]]
    ) -> tuple[str, Decimal]:
        """The tax id for a line and the rate it charges: its code by name or id, a tax of its
        rate, else "No Tax"."""
        if code:
            for name, (tid, tax_rate) in taxes.items():
                if code.casefold() in (name.casefold(), tid.casefold()):
                    return tid, tax_rate
            return code, rate or Decimal(0)  # unknown: sent as is, Lightspeed says why
        if rate:
            for tid, tax_rate in taxes.values():
                if tax_rate == rate:
                    return tid, tax_rate
        no_tax = taxes.get("No Tax")  # [SPEC] tax-free lines point at the tax named "No Tax"
        if no_tax is None:
            raise Rejected("the store has no tax named 'No Tax' for lines without tax")
        return no_tax

    # reference lists ----------------------------------------------------------------------------
    def outlet_id(self) -> str:
        return str(self.settings.get("outlet_id") or self.reference()["outlet_id"])

    def reference(self, *, fresh: bool = False, every: bool = False) -> dict[str, Any]:
        """Taxes, and the outlet, register, user and payment type a sale needs where no setting
        names them: read once a day (kept by the store, :meth:`prime`) or when ``fresh``;
        ``every`` list, set or not (for ``ids``). Set ids cost no call: taxes alone, a day."""
        if self._reference is None or fresh:
            s = self.settings
            needed = {"outlets": "outlet_id", "registers": "register_id", "taxes": "-"}
            needed["payment_types"] = "payment_type_id"  # taxes: always ("-" is never set)
            lists = {n: self._all(n) if every or not s.get(k) else [] for n, k in needed.items()}
            user = s.get("user_id") or _data(self.http.json("GET", f"{API}/user"), "/user")["id"]
            taxes = {str(t.get("name")): [str(t.get("id")), str(_rate(t))] for t in lists["taxes"]}
            no_tax = s.get("no_tax_id")  # the setting names "No Tax" when set
            taxes.update({"No Tax": [str(no_tax), "0"]} if no_tax else {})
            outlet = s.get("outlet_id") or _first(lists["outlets"], "outlet")
            at_outlet = [r for r in lists["registers"] if r.get("outlet_id") == outlet]
            live = [p for p in lists["payment_types"] if not p.get("disabled")]
            self._reference = {
                "taxes": taxes,
                "outlet_id": outlet,
                "register_id": s.get("register_id")
                or _first(at_outlet or lists["registers"], "register"),
                "user_id": str(user),
                "payment_type_id": s.get("payment_type_id") or _first(live, "payment type"),
                "lists": {k: named_rows(v) for k, v in lists.items()},
            }
            self._reference_source = "read"
        out = dict(self._reference)
        out["taxes"] = {k: (v[0], Decimal(str(v[1]))) for k, v in self._reference["taxes"].items()}
        return out

    def _all(self, resource: str) -> list[dict[str, Any]]:
        return [r for page in self._feed(resource, 0, lambda r: r) for r in page.records]

    def prime(self, name: str, value: dict[str, Any]) -> None:
        if name == REFERENCE and self._reference is None and isinstance(value.get("taxes"), dict):
            self._reference, self._reference_source = dict(value), "store"

    def reference_lists(self) -> dict[str, dict[str, Any]]:
        fresh = self._reference_source == "read" and self._reference is not None
        return {REFERENCE: self._reference} if fresh and self._reference else {}

    # operations ---------------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        resp = self.http.request("GET", f"{API}/retailer")
        retailer = _data(parse_json(resp), "GET /retailer")
        found = {"store": retailer.get("domain_prefix"), "organisation": retailer.get("name")}
        return {"date": resp.headers.get("Date"), "status": resp.status_code, **found}

    def ids(self) -> dict[str, list[dict[str, str]]]:
        """What each id setting may be: outlets, registers, payment types, taxes, users."""
        lists = {**self.reference(fresh=True, every=True)["lists"], "users": self._all("users")}
        pick = ("outlet", "register", "payment_type", "no_tax", "user")
        named = ("outlets", "registers", "payment_types", "taxes", "users")
        return {f"{key}_id": named_rows(lists[name]) for key, name in zip(pick, named, strict=True)}


# ------------------------------------------------------------------------------------------------
# record mapping


def _rows(body: Any, resource: str) -> list[Any]:
    """``{data: [...], version: {min, max}}`` [SPEC *Collection]: its rows."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise BadResponse(f"GET /{resource}: expected {{data: [...]}}")
    return list(body["data"])


def _row_stamp(row: Any, record: Any) -> datetime | None:
    """A row's version as an instant: a row that failed to read still moves the cursor."""
    version = _int(row.get("version")) if isinstance(row, dict) else None
    return version_stamp(version) if version is not None else None


def _walk(resource: str) -> dict[str, Any]:
    """What every feed tells the page generator: its name, error lines, versions as stamps."""
    line = lambda row, exc: f"{row.get('id') if isinstance(row, dict) else row}: {exc}"  # noqa: E731
    return {"what": f"/{resource}", "error_line": line, "stamp": _row_stamp}


def _data(body: Any, where: str) -> dict[str, Any]:
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]  # /user's example is a one-row array, its schema an object [SPEC]
    if not isinstance(data, dict):
        raise BadResponse(f"{where}: no data object in the answer")
    return data


def _rate(tax: dict[str, Any]) -> Decimal:
    """A tax's rate: the sum of its rates [SPEC Tax.rates]."""
    rates = (decimal_or_none(r.get("rate")) for r in tax.get("rates") or [])
    return sum((rate or Decimal(0) for rate in rates), Decimal(0))


def _first(rows: list[dict[str, Any]], what: str) -> str:
    for live in named_rows(rows):
        return live["id"]
    raise ConfigError(f"the Lightspeed store lists no {what}")


def _version(row: dict[str, Any]) -> int:
    if (value := _int(row.get("version"))) is None:
        raise ValueError(f"version {row.get('version')!r} is not an integer")
    return value


def _product(row: dict[str, Any]) -> RemoteProduct:
    code = row.get("sku")
    if code is not None and not isinstance(code, str):
        raise ValueError("sku is not a string")
    price = decimal(row.get("price_excluding_tax"), "price_excluding_tax")
    name, described = str(row.get("variant_name") or row.get("name") or ""), row.get("description")
    if not isinstance(row.get("active", True), bool):
        raise ValueError(f"active {str(row.get('active'))[:20]!r} is not a boolean")
    active = row.get("active") is not False and not row.get("deleted_at")
    code, stamp = code if code and code.strip() else "", version_stamp(_version(row))
    text = str(described) if described else None
    return RemoteProduct(str(row["id"]).lower(), code, name, text, price, active, stamp)


def _level(row: dict[str, Any]) -> Decimal | None:
    return decimal(row.get("current_inventory_level"), "current_inventory_level")


def _stock(row: dict[str, Any]) -> RemoteStock:
    if (quantity := _level(row)) is None:
        raise ValueError("no current_inventory_level")
    quantity = Decimal(0) if row.get("deleted_at") else quantity  # deleted: none left to sell
    return RemoteStock(str(row["product_id"]).lower(), quantity, None, version_stamp(_version(row)))


def _customer(row: dict[str, Any]) -> RemoteCustomer:
    first = str(row.get("first_name") or "").strip()
    last = str(row.get("last_name") or "").strip()
    name = f"{first} {last}".strip() or str(row.get("name") or row.get("company_name") or "")
    email = str(row["email"]).strip() if row.get("email") else None
    code = str(row["customer_code"]) if row.get("customer_code") else None
    version = _int(row.get("version"))
    stamp = version_stamp(version) if version is not None else None
    return RemoteCustomer(
        str(row["id"]).lower(), name.strip(), email, code, not row.get("deleted_at"), stamp
    )


def _sale(row: dict[str, Any], number: str) -> PostedInvoice:
    raw = row.get("totals")
    totals: dict[str, Any] = raw if isinstance(raw, dict) else {}
    total = decimal_or_none(totals.get("price_incl_tax"))
    price, tax = decimal_or_none(totals.get("price")), decimal_or_none(totals.get("tax"))
    if total is None and price is not None:
        total = price + (tax or Decimal(0))
    total = round_money(total) if total is not None else None
    if total is not None and row.get("return_for"):  # a return: what it gave back
        total = -total
    return PostedInvoice(
        str(row.get("id") or "").lower(), number, total, str(row.get("state") or "")
    )


# ------------------------------------------------------------------------------------------------
# wiring


def connect(
    settings: dict[str, Any],
    credentials: dict[str, Any],
    *,
    token_store: TokenStore,
    ledger: Ledger | None = None,
    clock: Clock | None = None,
    **http: Any,  # time_scale, pace, timeout: as for every connector
) -> LightspeedXConnector:
    """A connector for one store: a personal token when one is given, else OAuth."""
    s = _settings(settings)
    auth: Any
    personal = credentials.get("personal_token")
    if s.get("grant") == "personal_token":
        personal = personal or credentials.get("client_secret")  # given as the secret
    if personal:
        secrets.register(personal)
        auth = PersonalToken(str(personal))
    else:
        secret = credentials.get("client_secret")
        if not s.get("client_id") or not secret:
            why = "client_id and client_secret, or a personal_token"
            raise ConfigError(f"Lightspeed X-Series needs {why}")
        secrets.register(secret)
        stored = token_store.load()
        secrets.register(stored.access_token, stored.refresh_token)
        token_url, client = f"{s['base_url']}/{TOKEN_PATH}", str(s["client_id"])
        # rotating refresh tokens [D-RT]: refreshed one at a time under the store's lock
        auth = OAuth2Auth(
            token_url=token_url,
            client_id=client,
            client_secret=str(secret),
            store=token_store,
            clock=clock,
            basic_auth=False,
        )
    limits = limits_for(int(s["registers"]))
    use = getattr(ledger, "use_limits", None)
    if use is not None:
        use(limits)  # this store's window, from its register count
    session = HttpClient(
        s["base_url"], auth=auth, limits=limits, profile=PROFILE, ledger=ledger, clock=clock, **http
    )
    return LightspeedXConnector(session, s)


def authorize_url(settings: dict[str, Any], redirect_uri: str, state: str) -> str:
    """Where the retailer grants access [D-AUTH]; ``scope`` is required since 2026-06 [D-SCOPE]."""
    scope = settings.get("scope") or DEFAULT_SCOPE
    params = dict(response_type="code", client_id=settings.get("client_id") or "", scope=scope)
    params.update(redirect_uri=redirect_uri, state=state)
    auth_url = str(settings.get("auth_url") or DEFAULT_AUTH_URL).rstrip("/")
    return f"{auth_url}/connect?{urlencode(params)}"


def exchange_code(
    settings: dict[str, Any],
    credentials: dict[str, Any],
    code: str,
    redirect_uri: str,
    *,
    callback: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> Tokens:
    """Trade the code at the store's own token URL [D-AUTH], the callback's ``domain_prefix``;
    that and the ids a sale needs go in ``extra``, for the connection's settings."""
    prefix = (callback or {}).get("domain_prefix") or settings.get("domain_prefix")
    if not prefix:
        raise AuthError("the authorisation callback named no domain_prefix (the store)")
    s = _settings({**settings, "domain_prefix": prefix})
    if not s.get("client_id") or not (secret := str(credentials.get("client_secret") or "")):
        raise ConfigError("Lightspeed X-Series needs client_id and client_secret to authorise")
    secrets.register(secret)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    url, client = f"{s['base_url']}/{TOKEN_PATH}", str(s["client_id"])
    body = token_request(url, form, client_id=client, client_secret=secret, basic_auth=False)
    expires = (clock or SystemClock()).now() + timedelta(seconds=int(body.get("expires_in", 86400)))
    extra: dict[str, Any] = {"domain_prefix": str(body.get("domain_prefix") or prefix)}
    registry_ids = ("outlet_id", "register_id", "user_id", "payment_type_id", "no_tax_id")
    try:  # the ids a sale needs, from the store's lists (5 calls)
        http = HttpClient(s["base_url"], auth=PersonalToken(body["access_token"]), profile=PROFILE)
        ref = LightspeedXConnector(http, s).reference()
        ref["no_tax_id"] = ref["taxes"]["No Tax"][0]
        extra.update({k: ref[k] for k in registry_ids})
    except (SyncError, KeyError) as err:  # the job finds them at its first sale instead
        log.warning("ids not found at authorisation: %s", err)
    return Tokens(body["access_token"], body.get("refresh_token"), expires, extra)


def webhook_events(body: bytes, query: Mapping[str, str], received: datetime) -> Any:
    """The one change a form delivery carries: its ``payload``, the record in API 1.0 [D-WH]."""
    from synccli import registry
    from synccli.webhooks import parse

    kind, payload, record = parse.form_delivery(body, query.get("type"))
    stream = registry.get("lightspeed-x").webhooks_support.stream(kind)
    if stream is None:
        return [], 1
    stock = stream == "stock"  # one product's level at one outlet: the product changed
    entity = parse.text(record.get("product_id" if stock else "id"), "id")
    place = f":{record.get('outlet_id')}" if stock else ""
    args = (kind, stream, entity, place, record, payload, received)
    return [(None, parse.record_event("lightspeed-x", *args))], 0


def webhook_signed(target: Any, header: Callable[[str], str | None], body: bytes, now: Any) -> bool:
    """An OAuth app's ``X-Signature`` must verify where it comes (a personal token signs none)."""
    from synccli.webhooks import verify

    signature, oauth = header("x-signature"), target.settings.get("grant") != "personal_token"
    if signature is None or not oauth or not target.app_secret:
        return True
    return verify.x_series_signature_ok(target.app_secret, body, signature)


def webhook_subscribe(store: Any, name: str, url: str, clock: Clock, dry_run: bool) -> Any:
    """``POST /webhooks`` {active, type, url} a followed type, the type in the URL (a form need
    not name it [D-WH]); 409: subscribed already [SPEC, SPEC-WH]."""
    from synccli import registry
    from synccli.webhooks import manage

    kinds = [k for k, _ in registry.get("lightspeed-x").webhooks_support.kinds]
    result = manage.Subscribed(name, "lightspeed-x", f"{url}/***", dry_run=dry_run)
    if dry_run:  # no token made, no call
        result.planned = kinds
        return result
    at = f"{url}/{manage.url_token(store, name)}?"
    made = [(k, {"active": True, "type": k, "url": at + urlencode({"type": k})}) for k in kinds]
    why = "the store refused to add a webhook (403): its token lacks the `webhooks` scope; add it"
    why += " to the connection's scope setting"
    return manage.post_each(store, result, clock, f"{API}/webhooks", made, why)
