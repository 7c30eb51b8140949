"""Unleashed Software connector (``api.unleashedsoftware.com``), JSON over HMAC-signed requests.

Settings (non-secret), with defaults:
- ``base_url``        "https://api.unleashedsoftware.com"
- ``api_id``          (required) the account's API ID, sent as ``api-auth-id``
- ``client_type``     "synccli/sync" — the ``client-type`` header (free text, lowercase advised)
- ``warehouse_code``  None — when set, sales orders go to this warehouse and stock is read for it
                      (``warehouseCode=``); when None the account's default warehouse / all
                      warehouses' totals are used
- ``complete_orders`` False — after posting a sales order, ``POST /SalesOrders/{guid}/Complete``
                      (completing makes Unleashed raise the invoice and ship the stock). An
                      invoice counts as posted only once its order reads Completed: a failed
                      or empty answer to Complete is checked by reading the order back, and an
                      order found by the look-up after an unclear run is completed first
                      (:meth:`UnleashedConnector.finish_found`)
- ``order_status``    "Parked" — OrderStatus sent with a new sales order
- ``stock_field``     "AvailableQty" — which StockOnHand figure is the shop's stock
                      ("AvailableQty" = on hand - allocated, may be negative; or "QtyOnHand")
- ``lookup_batch``    100 — product guids per ``productId=`` lookup (keeps the URL near 4 kB)

Credentials (secret): ``api_key`` — the HMAC key. It is registered with :mod:`synccli.secrets`.

Wire rules followed (docs/providers/unleashed.md): the query string is built once, signed byte for
byte and sent unchanged (values are percent-encoded only where they must be; ``@ : ,`` go raw as
FL's recordings did); ``Accept`` and ``Content-Type`` are JSON; pages are ``/{Endpoint}/{n}`` at
pageSize 1000 looping ``while n < NumberOfPages`` (an empty result has NumberOfPages 0); code and
email filters are prefix matches, so every lookup compares exactly on our side (``contactEmail``
reaches a customer through any of its contacts, so a customer whose primary ``Email`` is not the
address is confirmed by reading its contacts, ``GET /Customers/{guid}/Contacts``); a look-up value
that needed encoding and got a 403 is signed once more over the decoded query (which form the
server checks is unconfirmed), and the accepted form is kept for the connection (its token
store's ``extra["signature_form"]``), so later runs sign that form first; a missing
StockOnHand row means 0; ``/Date(ms)/`` and ISO dates are both parsed; money is Decimal.

Cursors: no list is documented as sorted by time in a known direction (``orderBy=LastModifiedOn``
exists, its direction does not), so pages are read in the default code order, which does not
reshuffle when records change mid-run (offset paging over a time-sorted list skips a record each
time an earlier one is modified). ``Page.cursor`` is therefore None on every page but the last,
which carries the newest ``LastModifiedOn`` of the whole stream. ``cursor_overlap`` is 14 h for
the JSON timestamp offset seen in 2014 (13 h, NZ daylight time).

Quota: only a monthly allowance per account is documented (default 15000). The status Unleashed
answers once it is spent is unconfirmed, so any 429, or any answer whose Description speaks of
the monthly limit, is read as the month's budget being exhausted (``BudgetExhausted``, reset at
00:00 UTC on the 1st). No remaining-calls header is documented; the ledger keeps count.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote, unquote_plus, urlsplit

import requests

from synccli import secrets
from synccli.clock import Clock, utc
from synccli.connectors.auth import Tokens, TokenStore
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
    RemoteCustomer,
    RemoteProduct,
    RemoteStock,
)
from synccli.connectors.http import (
    NOT_PARSED,
    HttpClient,
    Ledger,
    Profile,
    parse_json,
    parsed_body,
)
from synccli.connectors.paging import Sheet, every_record, number_of_pages, read_pages
from synccli.connectors.wire import (
    MESSAGE_KEYS,
    body_message,
    decimal,
    decimal_or_none,
    error_message,
    instant,
    line_amounts,
    round_money,
)
from synccli.errors import AuthError, BadResponse, ConfigError, Rejected, TransientError
from synccli.webhooks.events import WebhookEvent

DEFAULT_BASE_URL = "https://api.unleashedsoftware.com"
PAGE_SIZE = 1000
LOOKUP_BATCH = 100
LISTING_PASSES = 3  # reads of a listing that keeps changing while paged, before giving up
# Namespace of the Guids we derive (sales orders from idempotency keys).
GUID_NAMESPACE = uuid.UUID("5b0e6f52-4f0c-5d3e-9a57-2f1d8c3b7a10")
SIGNATURE_FORM = "signature_form"  # token store extra: "raw" or "decoded"
_SAFE = "@:,-._~"  # sent raw (FL's recordings show @ and : raw); everything else is encoded
_QUOTA = re.compile(r"month|quota|api call limit", re.IGNORECASE)
_TAKEN = re.compile(r"already|exist|duplicate|unique|in use", re.IGNORECASE)
COMPLETED, DELETED = "Completed", "Deleted"  # SalesOrder statuses (D-SO)

T = TypeVar("T")


log = logging.getLogger("synccli.unleashed")


def _row_key(item: dict[str, Any]) -> str:
    """What tells one row of a listing from another: its Guid, and for a StockOnHand row its
    warehouse too (an SOH row's Guid is its product's, and a listing across warehouses may hold
    one row per warehouse: unleashed notes, StockOnHand)."""
    warehouse = item.get("WarehouseId") or item.get("WarehouseCode") or ""
    return f"{str(item.get('Guid') or '').lower()}|{warehouse}"


# --------------------------------------------------------------------------------------------
# wire helpers
def sign(api_key: str, query: str) -> str:
    """base64(HMAC-SHA256(key, query string without '?')); "" when the URL has no query."""
    digest = hmac.new(api_key.encode("utf-8"), query.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def build_query(*pairs: tuple[str, Any]) -> str:
    """The query string, built once: the exact bytes that are signed and sent."""
    return "&".join(
        f"{key}={quote(_text(value), safe=_SAFE)}" for key, value in pairs if value is not None
    )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return utc(value).strftime("%Y-%m-%dT%H:%M:%S")
    return str(value)


def _description(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        return str(body.get("Description") or body.get("description") or "")
    return ""


def _is_limit(resp: requests.Response) -> bool:
    if resp.status_code == 429:
        return True
    return resp.status_code >= 400 and bool(_QUOTA.search(_description(resp)))


def _limit_scope(resp: requests.Response) -> str:
    return "month" if _QUOTA.search(_description(resp)) else "short"


def _error_message(resp: requests.Response) -> str:
    return error_message(resp, ("Description", "description", *MESSAGE_KEYS))


def _body_error(body: Any) -> str | None:
    # FL treats any response carrying a top-level Description as an error.
    if (
        isinstance(body, dict)
        and body.get("Description")
        and not ("Items" in body or "Guid" in body)
    ):
        return str(body["Description"])[:300]
    return None


def _loads(content: bytes) -> Any:
    """A body as the connector reads it: strict UTF-8, numbers with a fraction as Decimal."""
    return json.loads(content.decode("utf-8"), parse_float=Decimal)


PROFILE = Profile(
    read_remaining=lambda resp: {},  # Unleashed documents no remaining-calls header
    limit_scope=_limit_scope,
    error_message=_error_message,
    is_limit=_is_limit,
    body_error=_body_error,
    loads=_loads,  # the body-error check parses each page once, for _parse too
)


class UnleashedAuth:
    """Signs every request: ``api-auth-id`` and ``api-auth-signature`` over the query string."""

    def __init__(self, api_id: str, api_key: str) -> None:
        self.api_id = api_id
        self._key = api_key
        # Which form of the query the server checks is unconfirmed (provider notes §1: one client
        # signs the bytes it sends, another the url-decoded form). The two differ only when a
        # value needed encoding (a look-up by a SKU, email or number holding "+", "&", "%", a
        # quote, a backslash or non-ASCII): see ``UnleashedConnector._get``.
        self.decoded = False

    def headers(self, method: str, url: str, query: str) -> dict[str, str]:
        message = unquote_plus(query) if self.decoded else query
        return {"api-auth-id": self.api_id, "api-auth-signature": sign(self._key, message)}

    def on_unauthorized(self, used_headers: Mapping[str, str]) -> bool:
        return False  # nothing to refresh: the key is fixed


# --------------------------------------------------------------------------------------------
class UnleashedConnector(Connector):
    provider = "unleashed"
    capabilities = Capabilities(
        lookup_batch=LOOKUP_BATCH,
        stock_in_product=False,
        idempotency_keys=True,  # the sales order Guid is derived from the key; re-POST updates
        cursor_overlap=timedelta(hours=14),
        limits=Limits(per_month=15000),
        catalogue_page=PAGE_SIZE,
        stamps_on_provider_clock=False,  # JSON dates seen 13 h off (provider notes §6)
        # every sales order line names a product (Guid or ProductCode): a line without a
        # product code goes against the connection's service product (docs/providers.md)
        documents=DocumentSupport(tax_inclusive="converted", codeless_lines="charge_item"),
    )

    def __init__(
        self,
        http: HttpClient,
        settings: dict[str, Any],
        *,
        token_store: TokenStore | None = None,
    ) -> None:
        super().__init__(http, settings)
        # Where the form of the query this account's signatures are checked over is kept
        # between runs (``extra["signature_form"]``): learnt once from a 403, never again.
        self.token_store = token_store
        if token_store is not None and isinstance(http.auth, UnleashedAuth):
            form = token_store.load().extra.get(SIGNATURE_FORM)
            if form in ("raw", "decoded"):
                http.auth.decoded = form == "decoded"
        self.api_id = str(settings.get("api_id") or "")
        self.batch = max(1, int(settings.get("lookup_batch") or LOOKUP_BATCH))
        self.stock_field = settings.get("stock_field") or "AvailableQty"
        self.warehouse = settings.get("warehouse_code") or None
        self.new_guid: Callable[[], str] = lambda: str(uuid.uuid4())

    # transport --------------------------------------------------------------------------------
    def _get(self, path: str, query: str = "", *, missing_ok: bool = False) -> tuple[int, Any]:
        """GET and parse; with ``missing_ok`` a 404 answers (404, None). (Not via ``ok=``: the
        HTTP layer reads a Description body on an ``ok`` status as an error envelope.)"""
        try:
            resp = self._signed_get(path, query)
        except Rejected as err:
            if missing_ok and err.status == 404:
                return 404, None
            raise
        return resp.status_code, self._parse(resp)

    def _signed_get(self, path: str, query: str) -> requests.Response:
        """A 403 on a query whose encoded and decoded forms differ may only mean that the server
        checks the other form: sign that one once more, and keep the form that was accepted. A
        real 403 (a wrong key) fails both ways and is raised as it was."""
        auth = self.http.auth
        try:
            return self.http.request("GET", path, query=query)
        except AuthError as err:
            if (
                err.status != 403
                or not isinstance(auth, UnleashedAuth)
                or unquote_plus(query) == query
            ):
                raise
            auth.decoded = not auth.decoded
            try:
                resp = self.http.request("GET", path, query=query)
            except AuthError:
                auth.decoded = not auth.decoded
                raise err from None
            self._remember_form("decoded" if auth.decoded else "raw")
            return resp

    def _remember_form(self, form: str) -> None:
        """Keep the query form this account's signatures are checked over, for later runs (a
        dry run writes nothing)."""
        log.info("Unleashed checks this account's signatures over the %s query", form)
        ledger = self.http.ledger
        if self.token_store is None or getattr(ledger, "read_only", False):
            return

        def keep(tokens: Tokens) -> Tokens:
            return replace(tokens, extra={**tokens.extra, SIGNATURE_FORM: form})

        self.token_store.update_locked(keep)

    def _post(self, path: str, body: Any = None, *, retry: bool = False) -> Any:
        resp = self.http.request(
            "POST", path, json_body=body if body is not None else {}, retry=retry
        )
        return self._parse(resp)

    @staticmethod
    def _parse(resp: requests.Response) -> Any:
        body = parsed_body(resp)  # what the HTTP layer's body-error check already parsed
        if body is not NOT_PARSED:
            return body
        try:
            return _loads(resp.content)
        except (ValueError, UnicodeDecodeError):
            snippet = resp.text[:80].replace("\n", " ")
            raise BadResponse(
                f"{resp.request.method} {urlsplit(resp.url).path}: unreadable response "
                f"(HTTP {resp.status_code}, {resp.headers.get('Content-Type', 'no type')}): "
                f"{snippet!r}",
                status=resp.status_code,
            ) from None

    def _pages(
        self,
        endpoint: str,
        pairs: list[tuple[str, Any]],
        parse: Callable[[dict], T],
        *,
        first_path: str | None = None,
        stamp: Callable[[T], datetime | None] | None = None,
        number: int = 0,
    ) -> Iterator[Sheet[T, int]]:
        """Each page of a list (``/{Endpoint}/{n}`` while n < NumberOfPages), numbered on from
        ``number``, with the answer it came from."""
        query = build_query(*pairs)

        def fetch(page: int) -> Any:
            path = first_path if (page == 1 and first_path) else f"/{endpoint}/{page}"
            _, body = self._get(path, query)
            if not isinstance(body, dict) or "Items" not in body:
                raise BadResponse(f"GET {path}: no Items in the response")
            if body.get("Items") is not None and not isinstance(body.get("Items"), list):
                raise BadResponse(f"GET {path}: Items is not a list")
            return body

        def line(item: Any, exc: Exception) -> str:
            guid = item.get("Guid", "?") if isinstance(item, dict) else "?"
            return f"{guid}: {exc.__class__.__name__} {exc}"

        def when(row: Any, record: T | None) -> datetime | None:
            return stamp(record) if stamp is not None and record is not None else None

        return read_pages(
            number_of_pages(),
            fetch,
            lambda body: body.get("Items") or [],
            parse,
            what=f"/{endpoint}",
            error_line=line,
            stamp=when if stamp is not None else None,
            number=number,
        )

    def _stream(
        self,
        endpoint: str,
        pairs: list[tuple[str, Any]],
        parse: Callable[[dict], T],
        stamp: Callable[[T], datetime | None],
    ) -> Iterator[Page[T]]:
        """A listing read to its end, its newest stamp on the last page (``Page.cursor``).

        Pages are offsets into a list in code order: a record deleted, or re-coded past the
        page being read, while the list is paged shifts every later record back one place,
        and the first of the next page slides onto a page already read, never to be seen
        (issue 17). The pages say how many records the list holds (``NumberOfItems``): when
        that count shrank, or fewer distinct records were read than the last page counts, the
        listing is read again (up to LISTING_PASSES times). A pass that reads exactly what the
        pass before it read, under the same counts, is taken as it is: nothing moved between
        them, so a count that disagrees with the rows is the provider's, not a shift. The last
        page carries the cursor only when its pass saw the list hold still, so a cursor never
        passes a record not read.
        """
        newest: datetime | None = None
        number = 0
        before: tuple[set[str], list[int]] | None = None
        for attempt in range(1, LISTING_PASSES + 1):
            counts: list[int] = []
            read: set[str] = set()
            steady = True
            for sheet in self._pages(endpoint, pairs, parse, stamp=stamp, number=number):
                page = sheet.page
                number = page.number
                counts.append(page.total or 0)
                # the keys of every row, read even when a row cannot be parsed
                read.update(_row_key(i) for i in sheet.rows if isinstance(i, dict))
                if page.cursor is not None and (newest is None or page.cursor > newest):
                    newest = page.cursor
                relisted = attempt > 1 and sheet.asked == 1
                if not sheet.last:
                    yield replace(page, cursor=None, relisted=relisted)
                    continue
                shrank = any(b < a for a, b in zip(counts, counts[1:], strict=False))
                steady = (
                    len(counts) == 1
                    or not (shrank or len(read) < counts[-1])
                    or before == (read, counts)
                )
                yield replace(page, cursor=newest if steady else None, relisted=relisted)
            if steady:
                return
            before = (read, counts)
            log.info(
                "GET /%s: the listing changed while it was paged (pass %d); reading it again",
                endpoint,
                attempt,
            )
        raise TransientError(
            f"GET /{endpoint}: the listing changed while it was paged, {LISTING_PASSES} times "
            "running; read again next run"
        )

    def _collect(
        self, endpoint: str, pairs: list[tuple[str, Any]], parse: Callable[[dict], T]
    ) -> list[T]:
        walk = self._pages(endpoint, pairs, parse, first_path=f"/{endpoint}")
        return every_record((sheet.page for sheet in walk), f"GET /{endpoint}")

    # parsing ----------------------------------------------------------------------------------
    @staticmethod
    def _product(item: dict[str, Any]) -> RemoteProduct:
        code = item["ProductCode"]
        if not isinstance(code, str) or not code.strip():
            raise ValueError(f"ProductCode {str(code)[:40]!r} is not a code")
        return RemoteProduct(
            remote_id=str(item["Guid"]).lower(),
            code=code,
            name=str(item.get("ProductDescription") or item["ProductCode"]),
            description=item.get("Notes") or None,
            price=decimal(item.get("DefaultSellPrice"), "DefaultSellPrice"),
            active=not item.get("Obsolete", False),
            updated_at=instant(item.get("LastModifiedOn"), "LastModifiedOn"),
        )

    def _stock(self, item: dict[str, Any]) -> RemoteStock:
        qty = decimal(item.get(self.stock_field), self.stock_field)
        return RemoteStock(
            remote_id=str(item.get("ProductGuid") or item["Guid"]).lower(),
            quantity=qty if qty is not None else Decimal(0),
            code=item.get("ProductCode"),
            updated_at=instant(item.get("LastModifiedOn"), "LastModifiedOn"),
        )

    @staticmethod
    def _customer(item: dict[str, Any]) -> RemoteCustomer:
        return RemoteCustomer(
            remote_id=str(item["Guid"]).lower(),
            name=str(item.get("CustomerName") or "").strip() or str(item["CustomerCode"]),
            email=item.get("Email") or None,
            account_number=item.get("CustomerCode") or None,
            active=not item.get("Obsolete", False),
            updated_at=instant(item.get("LastModifiedOn"), "LastModifiedOn"),
        )

    @classmethod
    def _customer_addresses(cls, item: dict[str, Any]) -> tuple[RemoteCustomer, set[str]]:
        """The customer, and the addresses its own record holds (``Email`` and the ``EmailCC``
        list, case-folded): a look-up needs no call for a contact these already name."""
        out: set[str] = set()
        for key in ("Email", "EmailCC"):
            value = item.get(key)
            if isinstance(value, str):
                out.update(p.strip().casefold() for p in re.split(r"[;,]", value) if p.strip())
        return cls._customer(item), out

    @staticmethod
    def _invoice(item: dict[str, Any]) -> PostedInvoice:
        return PostedInvoice(
            remote_id=str(item["Guid"]).lower(),
            number=str(item.get("OrderNumber") or ""),
            # compared when known: an unreadable total never hides an order we posted
            total=decimal_or_none(item.get("Total")),
            status=item.get("OrderStatus"),
        )

    # products and stock -----------------------------------------------------------------------
    def changed_products(self, since: datetime | None) -> Iterator[Page[RemoteProduct]]:
        pairs = [("pageSize", PAGE_SIZE), ("modifiedSince", since), ("includeObsolete", True)]
        return self._stream("Products", pairs, self._product, lambda p: p.updated_at)

    def changed_stock(self, since: datetime | None) -> Iterator[Page[RemoteStock]]:
        pairs = [
            ("pageSize", PAGE_SIZE),
            ("modifiedSince", since),
            ("warehouseCode", self.warehouse),
        ]
        return self._stream("StockOnHand", pairs, self._stock, lambda s: s.updated_at)

    def get_products(self, remote_ids: list[str]) -> list[RemoteProduct]:
        wanted = list(dict.fromkeys(g.lower() for g in remote_ids if g))
        found: list[RemoteProduct] = []
        for start in range(0, len(wanted), self.batch):
            chunk = wanted[start : start + self.batch]
            size = PAGE_SIZE if len(chunk) > 200 else None
            products = self._collect(
                "Products",
                [("productId", ",".join(chunk)), ("includeObsolete", True), ("pageSize", size)],
                self._product,
            )
            if not products:
                continue  # all gone: no stock call needed
            self._attach_stock(products)
            found.extend(products)
        return found

    def _attach_stock(self, products: list[RemoteProduct]) -> None:
        ids = [p.remote_id for p in products]
        size = PAGE_SIZE if len(ids) > 200 else None
        rows = self._collect(
            "StockOnHand",
            [("productId", ",".join(ids)), ("warehouseCode", self.warehouse), ("pageSize", size)],
            self._stock,
        )
        stock = {row.remote_id: row.quantity for row in rows}
        for p in products:
            p.stock = stock.get(p.remote_id, Decimal(0))  # no SOH row: never moved, so 0

    def find_product(self, code: str) -> RemoteProduct | None:
        if not code:
            return None
        match = None
        pairs = [("productCode", code), ("includeObsolete", True)]
        for sheet in self._pages("Products", pairs, self._product, first_path="/Products"):
            # exact, never a prefix
            records = every_record([sheet.page], "GET /Products")
            match = next((p for p in records if p.code == code), None)
            if match is not None or sheet.page.number > 5:
                break
        if match is None:
            return None
        self._attach_stock([match])
        return match

    def create_product(self, product: NewProduct) -> RemoteProduct:
        guid = self.new_guid()
        body: dict[str, Any] = {
            "Guid": guid,
            "ProductCode": product.code,
            "ProductDescription": product.name,
            "Notes": product.description,
            "DefaultSellPrice": float(round_money(product.price)),
        }
        item = self._create("Products", guid, body)
        created = self._product(item)
        created.stock = Decimal(0)
        return created

    # customers --------------------------------------------------------------------------------
    def changed_customers(self, since: datetime | None) -> Iterator[Page[RemoteCustomer]]:
        pairs = [("pageSize", PAGE_SIZE), ("modifiedSince", since), ("includeObsolete", True)]
        return self._stream("Customers", pairs, self._customer, lambda c: c.updated_at)

    def find_customers(
        self, *, email: str | None = None, account: str | None = None
    ) -> list[RemoteCustomer]:
        out: dict[str, RemoteCustomer] = {}
        if email and email.strip():
            wanted = email.strip().casefold()
            pairs = [("contactEmail", email.strip()), ("includeObsolete", True)]
            for c, addresses in self._collect("Customers", pairs, self._customer_addresses):
                # ``contactEmail`` matches a prefix of the primary Email or of any contact's
                # (issue 17): a customer reached through another contact is ours only if one
                # of its contacts holds exactly this address, which one more call tells.
                if wanted in addresses or wanted in self._contact_emails(c.remote_id):
                    out.setdefault(c.remote_id, c)
        if account and account.strip():
            for c in self._lookup_customers("customerCode", account.strip()):
                if c.account_number == account.strip():
                    out.setdefault(c.remote_id, c)
        return list(out.values())

    def _contact_emails(self, guid: str) -> set[str]:
        """The email addresses of a customer's contacts (``GET /Customers/{guid}/Contacts``),
        case-folded. Read leniently: a list envelope (``Items``) or a bare list, each contact's
        ``EmailAddress`` (or ``Email``)."""
        status, body = self._get(f"/Customers/{guid}/Contacts", missing_ok=True)
        if status == 404 or body is None:
            return set()
        rows = body.get("Items") if isinstance(body, dict) else body
        out: set[str] = set()
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict):
                continue
            for key in ("EmailAddress", "Email"):
                value = row.get(key)
                if isinstance(value, str) and value.strip():
                    out.add(value.strip().casefold())
        return out

    def _lookup_customers(self, key: str, value: str) -> list[RemoteCustomer]:
        return self._collect("Customers", [(key, value), ("includeObsolete", True)], self._customer)

    def create_customer(self, customer: NewCustomer) -> RemoteCustomer:
        base = (customer.account_number or customer.email or _code_from(customer.name)).strip()[:50]
        body: dict[str, Any] = {
            "CustomerCode": base,
            "CustomerName": customer.name.strip()[:100],
            "Email": customer.email,
            "ContactFirstName": customer.first_name,
            "ContactLastName": customer.last_name,
        }
        guid = self.new_guid()
        try:
            item = self._create("Customers", guid, {"Guid": guid, **body})
        except Rejected as err:
            if not _TAKEN.search(err.message):
                raise
            # CustomerCode is unique and a prefix filter shows every code built on ours.
            taken = {c.account_number for c in self._lookup_customers("customerCode", base)}
            n = 2
            while f"{base}-{n}" in taken:
                n += 1
            body["CustomerCode"] = f"{base[: 50 - len(str(n)) - 1]}-{n}"
            guid = self.new_guid()
            item = self._create("Customers", guid, {"Guid": guid, **body})
        return self._customer(item)

    def _create(self, endpoint: str, guid: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a new record to a Guid nobody has. A lost answer is resolved by reading that
        Guid back, so we never POST (= full overwrite) onto a record that already exists."""
        attempts = 0
        while True:
            attempts += 1
            try:
                return _ours(endpoint, guid, self._post(f"/{endpoint}/{guid}", body))
            except TransientError:
                if attempts > self.http.retries:
                    raise
                status, existing = self._get(f"/{endpoint}/{guid}", missing_ok=True)
                if status == 200 and isinstance(existing, dict):
                    return _ours(endpoint, guid, existing)

    # invoices (sales orders) ------------------------------------------------------------------
    def find_invoice(self, number: str) -> PostedInvoice | None:
        orders = self._collect("SalesOrders", [("orderNumber", number)], self._invoice)
        exact = [o for o in orders if o.number == number]
        # orderNumber overrides every other filter (D-SO), the default "not Deleted" one too:
        # a live order wins over a deleted one; a deleted one alone is returned as it is, and
        # finish_found refuses it.
        live = [o for o in exact if o.status != DELETED]
        chosen = live or exact
        return chosen[0] if chosen else None

    def finish_found(self, found: PostedInvoice) -> PostedInvoice:
        """An order the look-up found: refused when the merchant deleted it; completed first
        when ``complete_orders`` is on and it is not Completed yet (an earlier run died or failed
        between the create and the Complete)."""
        self._refuse_deleted(found.number, found.status)
        if _flag(self.settings.get("complete_orders")) and found.status != COMPLETED:
            return self._invoice(self._complete(found.remote_id, found.number))
        return found

    def _charge_item(self) -> str:
        code = str(self.settings.get("charge_item") or "").strip()
        if not code:  # invoices add and post-invoices refuse such an order before this
            raise Rejected("a line without a product code needs the setting charge_item")
        return code

    def order_guid(self, idempotency_key: str) -> str:
        """The sales order Guid for an idempotency key (stable, and distinct per account)."""
        return str(uuid.uuid5(GUID_NAMESPACE, f"{self.api_id}:salesorder:{idempotency_key}"))

    def order_body(self, invoice: InvoiceDraft, guid: str) -> dict[str, Any]:
        lines, subtotal, tax_total = [], Decimal(0), Decimal(0)
        # a sales order line is priced exclusive of tax (docs/providers.md): inclusive prices
        # go converted, a cent left over as a rounding line
        for i, line in enumerate(invoice.exclusive_lines(), start=1):
            line_total, line_tax = line_amounts(line.quantity, line.unit_price, line.tax_rate)
            subtotal += line_total
            tax_total += line_tax
            tax_code = line.tax_code or ("G.S.T." if line.tax_rate else "NONE")
            if line.codeless:  # the service product the connection names (no stock moves)
                product = {"ProductCode": self._charge_item()}
            elif line.product_remote_id:
                product = {"Guid": line.product_remote_id}
            else:
                product = {"ProductCode": line.code}
            lines.append(
                {
                    "LineNumber": i,
                    "Guid": str(uuid.uuid5(uuid.UUID(guid), f"line:{i}")),
                    "Product": product,
                    "OrderQuantity": float(line.quantity),
                    "UnitPrice": float(line.unit_price),
                    "DiscountRate": 0,
                    "LineTotal": float(line_total),
                    "LineTax": float(line_tax),
                    "LineTaxCode": tax_code,
                    "Tax": {"TaxCode": tax_code},
                    "Comments": line.description or None,
                }
            )
        total = subtotal + tax_total
        if invoice.total is not None and round_money(invoice.total) != total:
            raise Rejected(
                f"invoice {invoice.number}: the shop's total {invoice.total} does not match "
                f"the lines ({total})",
                errors=[f"total {invoice.total} != sum of lines {total}"],
            )
        codes = [ln["LineTaxCode"] for ln in lines]
        order_tax = max(set(codes), key=codes.count) if codes else "NONE"
        body: dict[str, Any] = {
            "Guid": guid,
            "OrderNumber": invoice.number,
            "OrderDate": _text(invoice.date),
            "RequiredDate": _text(invoice.due_date) if invoice.due_date else None,
            "OrderStatus": self.settings.get("order_status") or "Parked",
            "Customer": {"Guid": invoice.customer_remote_id},
            "Currency": {"CurrencyCode": invoice.currency},
            "Tax": {"TaxCode": order_tax},
            "Taxable": any(line.tax_rate for line in invoice.lines),
            "CustomerRef": invoice.reference,
            "SubTotal": float(subtotal),
            "TaxTotal": float(tax_total),
            "Total": float(total),
            "SalesOrderLines": lines,
        }
        if self.warehouse:
            body["Warehouse"] = {"WarehouseCode": self.warehouse}
        return body

    def post_invoice(self, invoice: InvoiceDraft, idempotency_key: str) -> PostedInvoice:
        guid = self.order_guid(idempotency_key)
        body = self.order_body(invoice, guid)
        calls = self.http.calls
        try:
            # The Guid is ours and stable: a repeated POST updates the same order, so the HTTP
            # layer may retry it after a lost answer.
            item = self._post(f"/SalesOrders/{guid}", body, retry=True)
        except Rejected as err:
            if self.http.calls - calls <= 1 and not invoice.resend:
                # One POST, clearly refused, and no earlier attempt that might have created the
                # order: nothing exists to find, so no call is spent looking.
                raise Rejected(
                    err.message, errors=[_error_text(err)], status=err.status, body=err.body
                ) from None
            # This call or an earlier one may have created the order (an unclear answer), which
            # then refuses a second create (or, completed since, any update): read it back.
            status, existing = self._get(f"/SalesOrders/{guid}", missing_ok=True)
            if (
                status == 200
                and isinstance(existing, dict)
                and str(existing.get("OrderNumber")) == invoice.number
            ):
                item = existing  # posted before (e.g. completed since): exactly once holds
            else:
                raise Rejected(
                    err.message, errors=[_error_text(err)], status=err.status, body=err.body
                ) from None
        self._refuse_deleted(invoice.number, item.get("OrderStatus"))
        if _flag(self.settings.get("complete_orders")) and item.get("OrderStatus") != COMPLETED:
            item = self._complete(guid, invoice.number)
        return self._invoice(item)

    def _complete(self, guid: str, number: str) -> dict[str, Any]:
        """``POST /SalesOrders/{guid}/Complete`` and the order as it then is, Completed. The call
        may fail or answer with an empty body (issue #16): an answer that does not show the
        order Completed is checked by reading the order back. Still not Completed -> transient
        (the job stays unsure, and the next run's look-up completes it)."""
        try:
            answer = self._post(f"/SalesOrders/{guid}/Complete", retry=True)
        except BadResponse:
            answer = None  # an empty or unreadable answer: what happened is read back below
        if isinstance(answer, dict) and answer.get("OrderStatus") == COMPLETED:
            return answer
        status, order = self._get(f"/SalesOrders/{guid}", missing_ok=True)
        state = order.get("OrderStatus") if isinstance(order, dict) else None
        if status == 200 and isinstance(order, dict) and state == COMPLETED:
            return order
        self._refuse_deleted(number, state)
        raise TransientError(
            f"sales order {number}: Complete did not leave it Completed "
            f"(it reads {state or 'missing'}); the next run completes it"
        )

    @staticmethod
    def _refuse_deleted(number: str, status: Any) -> None:
        if status == DELETED:
            message = (
                f"sales order {number} exists in Unleashed but was deleted there, so it is not "
                "posted: restore it in Unleashed, or cancel the invoice "
                f"(synccli invoices cancel {number})"
            )
            raise Rejected(message, errors=[message])

    # operations -------------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        resp = self.http.request("GET", "/Warehouses")
        return {"date": resp.headers.get("Date"), "status": resp.status_code}

    def ids(self) -> dict[str, list[dict[str, str]]]:
        """The warehouses ``warehouse_code`` may name (one call: ``GET /Warehouses``)."""
        body = parse_json(self.http.request("GET", "/Warehouses"))
        items = body.get("Items") if isinstance(body, dict) else None
        rows = []
        for w in items if isinstance(items, list) else []:
            if isinstance(w, dict) and not w.get("Obsolete"):
                default = " (default)" if w.get("IsDefault") else ""
                rows.append(
                    {
                        "id": str(w.get("WarehouseCode")),
                        "name": f"{w.get('WarehouseName')}{default}",
                    }
                )
        return {"warehouse_code": rows}


def _ours(endpoint: str, guid: str, item: Any) -> Any:
    """The record created at the Guid we chose, or a refusal: an answer naming another record
    (or the nil GUID) is never linked (issue 16)."""
    got = str(item.get("Guid") or "").lower() if isinstance(item, dict) else ""
    if got != guid.lower():
        raise Rejected(
            f"POST /{endpoint}/{guid}: the answer names record {got or '(none)'!s:.60}, not the "
            "one created: taken as a refusal, nothing was linked"
        )
    return item


def _error_text(err: Rejected) -> str:
    """The provider's Description alone (HttpClient prefixes it with the method and path)."""
    return body_message(err.body, "Description") or err.message


def _flag(value: Any) -> bool:
    """A boolean setting that may arrive as text from the command line ("false" is False)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _code_from(name: str) -> str:
    code = re.sub(r"[^A-Za-z0-9]+", "", name.upper())
    return code[:20] or "CUSTOMER"


def connect(
    settings: dict[str, Any],
    credentials: dict[str, Any],
    *,
    token_store: TokenStore | None = None,
    ledger: Ledger | None = None,
    clock: Clock | None = None,
    time_scale: float = 1.0,
    pace: bool = True,
    timeout: tuple[float, float] = (5.0, 30.0),
) -> UnleashedConnector:
    """An Unleashed connector for one account. There is no OAuth: ``token_store`` keeps only
    which form of the query the account's signatures are checked over."""
    api_id = settings.get("api_id")
    api_key = credentials.get("api_key")
    if not api_id:
        raise ConfigError("unleashed: settings need api_id (Integration > Unleashed API Access)")
    if not api_key:
        raise ConfigError(
            "unleashed: credentials need api_key (Integration > Unleashed API Access)"
        )
    secrets.register(api_key)
    http = HttpClient(
        settings.get("base_url") or DEFAULT_BASE_URL,
        auth=UnleashedAuth(str(api_id), str(api_key)),
        limits=UnleashedConnector.capabilities.limits,
        profile=PROFILE,
        ledger=ledger,
        clock=clock,
        time_scale=time_scale,
        timeout=timeout,
        pace=pace,
        default_headers={
            "Content-Type": "application/json",
            "client-type": settings.get("client_type") or "synccli/sync",
        },
    )
    return UnleashedConnector(http, settings, token_store=token_store)


# ------------------------------------------------------------------------------------------------
# webhooks (#23): what the registry entry's ``webhooks`` names

_WEBHOOK_IDS = {
    "products": ("productGuid", "ProductGuid"),
    "customers": ("customerGuid", "CustomerGuid"),
}


def _webhook_data(data: dict[str, Any]) -> dict[str, Any]:
    from synccli.webhooks import parse

    inner = data.get("data", data.get("Data"))
    if isinstance(inner, str):  # some deliveries carry it as a JSON string
        inner = parse.json_body(inner.encode("utf-8"))
    if not isinstance(inner, dict):
        raise parse.Malformed("no data object")
    return inner


def webhook_events(
    body: bytes, query: Mapping[str, str], received: datetime
) -> tuple[list[tuple[str | None, WebhookEvent]], int]:
    """The change a delivery names: its kind (``product.updated``...), the record's Guid (only
    the id: the next pull fetches the record) and the delivery's own id where it has one."""
    from synccli import registry
    from synccli.webhooks import parse

    data = parse.json_body(body)
    if not isinstance(data, dict):
        raise parse.Malformed("not an object")
    kind = parse.text(data.get("eventType", data.get("EventType")), "eventType").lower()
    stream = registry.get("unleashed").webhooks_support.stream(kind.split(".", 1)[0])
    if stream is None:
        return [], 1
    inner = _webhook_data(data)
    ids = (*_WEBHOOK_IDS[stream], "guid", "Guid")
    guid = next((inner[k] for k in ids if inner.get(k)), None)
    entity = parse.text(guid, "the record's Guid")
    stamp = data.get("createdOn", data.get("CreatedOn"))
    at = parse.instant(stamp, "createdOn") if stamp else received
    notification = data.get("eventNotificationId", data.get("EventNotificationId"))
    if notification:
        key = f"unleashed:{parse.text(notification, 'eventNotificationId')}"
    else:
        key = f"unleashed:{kind}:{entity}:{at.isoformat()}"
    event = parse.event("unleashed", stream, entity, at.isoformat(), at, None, key)
    return [(None, event)], 0


def webhook_signed(target: Any, header: Callable[[str], str | None], body: bytes, now: Any) -> bool:
    """Where the connection holds the signing key, ``X-Unleashed-Signature`` over the timestamp
    and body must hold too [D-WH]; without one its URL token alone stands."""
    from synccli.webhooks import verify

    if not target.signing_key:
        return True
    return verify.unleashed_signature_ok(
        target.signing_key,
        body,
        header("x-unleashed-signature"),
        header("x-unleashed-timestamp"),
        now,
    )


def webhook_subscribe(store: Any, name: str, url: str, clock: Clock, dry_run: bool) -> Any:
    """Unleashed's Webhooks API creates subscriptions [D-WH], but the request's exact shape is
    in no text found (unconfirmed): the steps, and the URL to give (it holds the token) written
    to an owner-only file, never shown. A dry run makes no token and writes no file."""
    from synccli import registry
    from synccli.webhooks import manage

    objects = [kind for kind, _ in registry.get("unleashed").webhooks_support.kinds]
    events = [f"{o}.{change}" for o in objects for change in ("created", "updated", "deleted")]
    if dry_run:
        plan = manage.Subscribed(name, "unleashed", f"{url}/***", planned=events, dry_run=True)
        plan.steps = [
            "Without --dry-run: the URL to give Unleashed (it holds a token made then) is "
            f"written to {manage.url_file(store, name)}, and the steps to subscribe are printed."
        ]
        return plan
    path = manage.write_url_file(store, name, f"{url}/{manage.url_token(store, name)}")
    result = manage.Subscribed(name, "unleashed", f"{url}/***", url_file=str(path))
    result.steps = [
        "Unleashed subscriptions are made through its Webhooks API "
        "(https://apidocs.unleashedsoftware.com/Webhooks, 'Setting Up Webhooks'; at most 5 "
        "per account, free of the monthly quota):",
        f"1. Subscribe to {', '.join(events)}",
        f"   with the notification URL written to {path} (owner-only: it holds this "
        "connection's token; delete the file once used).",
        "2. Store the signing key Unleashed returns, so every delivery's signature is checked too:",
        f"   synccli connections set {name} --webhook-signing-key-stdin",
    ]
    return result


def webhook_record(stream: str, record: dict[str, Any], outlet: str | None) -> Any:
    """A delivery's record as the API returns it (``Guid``, ``ProductCode``...), read by the
    pull's own parser; one with only the Guid is None (fetched by id)."""
    from synccli.connectors.payloads import Pushed

    if stream == "products" and "ProductCode" in record:
        product = UnleashedConnector._product(record)
        return Pushed(product=product, ranked=product.updated_at is not None)
    if stream == "customers" and ("CustomerCode" in record or "CustomerName" in record):
        customer = UnleashedConnector._customer(record)
        return Pushed(customer=customer, ranked=customer.updated_at is not None)
    return None
