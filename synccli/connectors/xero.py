"""Xero Accounting connector: Items (products with stock), Contacts (customers), sales invoices.

Wire facts: the Xero provider notes. How the calls are spent:

- Products: ``GET /Items`` is unpaged and returns every item with ``QuantityOnHand`` in ONE call.
  Because a stock movement may not move ``UpdatedDateUTC`` (unconfirmed), ``changed_products``
  reads the whole catalogue every time (still one call) and leaves the comparison to the job;
  ``changed_stock`` yields nothing; ``get_products`` is that same one call, filtered here.
  The answer is read with msgspec, each item kept as its JSON text and fingerprinted
  (``read_raw_items``): ``whole_catalogue`` reads into records only the items whose fingerprint
  the job does not already hold (and when the job's tally of its links matches the listing
  whole, looks for none of them one by one).
- ``find_product``: ``where=Code=="…"``, then an exact (ordinal) compare here.
- Customers: ``GET /Contacts`` paged at pageSize=1000, ``order=UpdatedDateUTC ASC`` and
  ``If-Modified-Since`` (ISO UTC, whole seconds; the job subtracts ``cursor_overlap``). Pages
  follow ``pagination.pageCount`` (a page may hold fewer rows than asked for); a listing that
  shifted while paged is read again from the last stamp before the shift, and ``Page.cursor`` is
  set only on the last page of a read that held still (see ``_contacts``).
  ``find_customers``: ``where=EmailAddress.ToLower()=="…"`` with the address lower-cased (Xero's
  ``==`` compares case included: a contact saved as ``Jane@X.com`` is found by ``jane@x.com``;
  compared case-insensitively here too) OR ``AccountNumber=="…" OR ContactNumber=="…"`` (exact),
  in one call; ``find_customers_many`` ORs every customer of a post-invoices run into one such
  look-up (split only to keep the URL short). A contact is known by either code:
  ``ContactNumber`` is writable through the API only, so a contact we create at sale time gets the
  shop's code there too, and an edit in Xero's screens cannot break the link.
- Currency codes are sent upper-case (Xero reads ``CurrencyCode`` as a case-sensitive enum).
- ``create_customer(s)``: ``PUT /Contacts?summarizeErrors=false``, a run's new customers in one
  envelope. Xero wants active names unique; if the name is taken we retry once with a
  disambiguating suffix ("Jane Doe (#ACC-1)"). We never POST to an existing contact and never
  send contact details on an invoice.
- ``create_product(s)``: ``PUT /Items?summarizeErrors=false``, a run's new items in one envelope.
  Codes are unique at Xero: a code it has is refused ("… already exists", ``code_taken``).
- ``post_invoice``: ``PUT /Invoices?summarizeErrors=false&unitdp=4`` with ``Idempotency-Key``,
  Contact ``{"ContactID": …}`` only. Element ERROR -> ``Rejected`` with Xero's messages. Writes
  carrying an idempotency key are retried by the HTTP layer (the replay window is minutes).
- ``find_invoice``: ``GET /Invoices?InvoiceNumbers=…`` (a comma-separated list), or
  ``where=InvoiceNumber=="…"`` for a number holding a comma.
- ``where`` string literals carry the value verbatim (backslashes are ordinary characters there);
  a value holding a double quote cannot be looked up and is refused by ``invoices add``.

Settings (non-secret) and their defaults:
- ``base_url``: ``https://api.xero.com`` (the Accounting API lives under ``/api.xro/2.0``).
- ``identity_url``: token endpoint host, ``https://identity.xero.com``; when ``base_url`` is not
  Xero's own host (a sandbox serves everything on one host) it defaults to ``base_url``.
- ``login_url``: authorisation host, ``https://login.xero.com``; same defaulting rule.
- ``tenant_id``: the organisation (``xero-tenant-id``); ``tokens.extra["tenant_id"]`` wins.
- ``client_id``: the app's client id (required).
- ``grant``: ``"authorization_code"`` (default) or ``"client_credentials"`` (custom connection:
  no refresh token, tenant header optional).
- ``scopes``: space-separated, default :data:`DEFAULT_SCOPES`.
- ``account_code``: revenue account for invoice lines without one, default ``"200"``.
- ``payment_account_code``: the account an order's payments are applied into (PUT /Payments;
  a BANK account or one enabled for payments, e.g. a clearing account); required for orders
  with payments, checked by ``doctor``.
- ``tax_type``: tax type for lines and new items without one. Unset, a line without a tax code
  goes as ``TaxType: NONE``: Xero applies the account's default tax type to a line that leaves
  it out (the spec's Account example: 200 Sales, OUTPUT2), which would tax an untaxed line.

Credentials (secret): ``client_secret``. OAuth tokens live in the token store.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import msgspec
import requests

from synccli import secrets
from synccli.clock import Clock, SystemClock, utc
from synccli.connectors.auth import (
    ClientCredentialsAuth,
    OAuth2Auth,
    Tokens,
    TokenStore,
    token_request,
)
from synccli.connectors.base import (
    NOTHING_KNOWN,
    AppliedPayment,
    Capabilities,
    Connector,
    DocumentSupport,
    InvoiceDraft,
    KnownRecords,
    Limits,
    NewCustomer,
    NewProduct,
    Page,
    PaymentToApply,
    PostedInvoice,
    RefundTarget,
    RefusedAfterCreate,
    RemoteCustomer,
    RemoteProduct,
    RemoteStock,
)
from synccli.connectors.http import HttpClient, Ledger, Profile, parse_json
from synccli.connectors.paging import Sheet, read_pages, xero_pages
from synccli.connectors.wire import (
    decimal,
    decimal_or_none,
    error_message,
    instant,
    instant_or_none,
)
from synccli.errors import BadResponse, ConfigError, Rejected, TransientError
from synccli.remote_ids import is_nil, refusal
from synccli.webhooks.events import WebhookEvent

log = logging.getLogger("synccli.xero")

API = "/api.xro/2.0"
XERO_API = "https://api.xero.com"
XERO_IDENTITY = "https://identity.xero.com"
XERO_LOGIN = "https://login.xero.com"
DEFAULT_SCOPES = (
    "openid profile email offline_access accounting.settings accounting.contacts "
    "accounting.transactions"
)
PAGE_SIZE = 1000  # Contacts/Invoices maximum pageSize
# Rows a page holds when Xero reads no pageSize (the OAS ``page`` parameter: "Up to 100 contacts
# will be returned in a single API call"; tap-xero pages while a page holds 100). An answer
# without the pagination block comes from that form, so a page this full may have a successor.
XERO_PAGE_ROWS = 100
PRODUCT_PAGE = 1000  # records per Page when splitting the one Items response
LIMITS = Limits(per_minute=60, per_day=5000, concurrency=5)
# Invoices per PUT: the notes suggest batches of about 50 elements (3.5 MB per request).
INVOICE_BATCH = 50
CONTACT_PASSES = 3  # passes over a Contacts listing that keeps changing before giving up
NAME_TAKEN = "already assigned to another contact"
ID_FIELDS = {
    "Items": "ItemID",
    "Contacts": "ContactID",
    "Invoices": "InvoiceID",
    "CreditNotes": "CreditNoteID",
    "Payments": "PaymentID",
}
NO_TAX = "NONE"  # Xero's TaxType for no tax (the spec's TaxType values; its Account examples)


# profile ---------------------------------------------------------------------------------------
def _read_remaining(resp: requests.Response) -> dict[str, float]:
    out: dict[str, float] = {}
    for header, key in (("X-MinLimit-Remaining", "minute"), ("X-DayLimit-Remaining", "day")):
        value = resp.headers.get(header)
        if value is not None and value.strip():
            out[key] = float(value)
    return out


def _limit_scope(resp: requests.Response) -> str:
    problem = (resp.headers.get("X-Rate-Limit-Problem") or "").strip().lower()
    # Observed values are "minute" and "day"; older docs wrote "Daily"/"Minute". Anything else
    # (concurrent, app-minute, unknown) is a short wait.
    return "day" if problem.startswith(("day", "daily")) else "short"


def _element_messages(body: dict[str, Any]) -> str | None:
    messages = _validation_messages(body.get("Elements") or [])
    return "; ".join(messages)[:500] if messages else None


def _error_message(resp: requests.Response) -> str:
    keys = ("Detail", "Message", "error_description", "error", "Title")
    return error_message(resp, keys, own=_element_messages)


def _is_limit(resp: requests.Response) -> bool:
    if resp.status_code == 429:
        return True
    # OAuth1-era form, still worth recognising (§6).
    return resp.status_code == 503 and "rate limit exceeded" in resp.text[:500].lower()


PROFILE = Profile(
    read_remaining=_read_remaining,
    limit_scope=_limit_scope,
    error_message=_error_message,
    is_limit=_is_limit,
)


# parsing ---------------------------------------------------------------------------------------
def _validation_messages(elements: list[Any]) -> list[str]:
    """Every ``ValidationErrors[].Message`` of the elements, each kept whole, in order; those of
    the parts inside an element (its Contact, LineItems, ...) follow the element's own."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            errors = node.get("ValidationErrors")
            for err in errors if isinstance(errors, list) else []:
                message = err.get("Message") if isinstance(err, dict) else err
                if message and str(message) not in out:
                    out.append(str(message))
            for key, value in node.items():
                if key != "ValidationErrors" and isinstance(value, dict | list):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for el in elements:
        walk(el)
    return out


def _set(value: Any) -> bool:
    """A Xero boolean flag that is on (``true``; also the string form, to be safe)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def refused(el: Any) -> list[str] | None:
    """Xero's messages when it refused this element of a write answer, None when it accepted it.

    Any ONE of these is a refusal (provider notes §2 ``summarizeErrors``; OAS examples): a
    non-empty ``ValidationErrors`` (createItems answers just that: no status at all),
    ``HasValidationErrors: true`` (Contacts), ``HasErrors: true`` or
    ``StatusAttributeString: "ERROR"`` (Invoices). Only the element's own flags decide; the
    messages of its parts are added to say why."""
    if not isinstance(el, dict):
        return [f"unreadable element {str(el)[:60]!r}"]
    own = el.get("ValidationErrors")
    flags = [
        name
        for name, on in (
            ("ValidationErrors", bool(own)),
            ("HasValidationErrors", _set(el.get("HasValidationErrors"))),
            ("HasErrors", _set(el.get("HasErrors"))),
            (
                "StatusAttributeString",
                str(el.get("StatusAttributeString") or "").strip().upper() == "ERROR",
            ),
        )
        if on
    ]
    if not flags:
        return None
    return _validation_messages([el]) or [f"refused without a message ({', '.join(flags)})"]


# Xero's ``where`` is a Dynamic LINQ expression: a string literal runs from one double quote to
# the next, a backslash in it is an ordinary character, and no escape for a double quote works
# (raw or as \", both answer "QueryParseException: Syntax error": XeroAPI/Xero-Java#347,
# waynerobinson/xeroizer#160). So a value is sent as it is, and one holding a double quote cannot
# be looked up at all (``invoices add`` refuses it; see ``XeroConnector.unmatchable``).
NO_QUOTE = "contains a double quote, which Xero's where filter cannot compare (no escape works)"


def _searchable(value: str) -> str:
    """``value`` itself, or ``Rejected`` when Xero cannot look it up (an order that reached the
    store without ``invoices add``'s check)."""
    if '"' in value:
        raise Rejected(f"cannot look up {value!r} at Xero: it {NO_QUOTE}", errors=[NO_QUOTE])
    return value


def _where_string(value: str) -> str:
    """A string literal for a ``where`` expression: the value verbatim between double quotes."""
    return f'"{_searchable(value)}"'


# The longest ``where`` one Contacts look-up sends, URL-encoded. Xero documents no limit; IIS,
# which answers its API, refuses a query string over 2,048 bytes by default (maxQueryString), so
# a look-up of many customers is split to stay well under it with the paging parameters.
WHERE_CHARS = 1500


def _contact_terms(email: str | None, account: str | None) -> list[str]:
    """The ``where`` terms that find a contact by this email and/or account number (``Rejected``
    when a value cannot be looked up at Xero)."""
    terms = []
    if email and email.strip():
        terms.append(f"EmailAddress.ToLower()=={_where_string(email.strip().lower())}")
    if account:
        code = _where_string(account)
        terms.append(f"AccountNumber=={code} OR ContactNumber=={code}")
    return terms


def _where_chunks(terms: list[list[str]]) -> list[str]:
    """The terms ORed together, in as few ``where`` values as WHERE_CHARS allows (one pair's
    terms never split)."""
    chunks: list[str] = []
    current = ""
    for pair in (" OR ".join(t) for t in terms if t):
        joined = f"{current} OR {pair}" if current else pair
        if current and len(quote(joined, safe="")) > WHERE_CHARS:
            chunks.append(current)
            joined = pair
        current = joined
    if current:
        chunks.append(current)
    return chunks


def _contact_matches(contact: dict[str, Any], email: str | None, account: str | None) -> bool:
    """Whether a contact is one the look-up of this email / account number asked for: the email
    compared case-insensitively, the account number exactly against either code."""
    want = (email or "").strip().casefold()
    if want and (contact.get("EmailAddress") or "").strip().casefold() == want:
        return True
    return bool(account) and account in (contact.get("AccountNumber"), contact.get("ContactNumber"))


def _since_header(since: datetime) -> str:
    """ISO-8601 UTC, whole seconds (Xero reads the header to the second)."""
    return utc(since).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_for(body: Any) -> str:
    """A deterministic Idempotency-Key for a create: the same body within the replay window is
    one create, however many times the HTTP layer retries it."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return f"synccli-{digest[:48]}"


def product_from(item: dict[str, Any]) -> RemoteProduct:
    """An Item as a RemoteProduct; ValueError names what makes it unreadable."""
    if not isinstance(item, dict):
        raise ValueError(f"not an object: {str(item)[:40]!r}")
    item_id, code = item.get("ItemID"), item.get("Code")
    if not isinstance(item_id, str) or not item_id:
        raise ValueError("no ItemID")
    if is_nil(item_id):
        raise ValueError("ItemID is the nil GUID")
    if not isinstance(code, str) or not code.strip():
        raise ValueError("no Code")
    sales = item.get("SalesDetails") or {}
    if not isinstance(sales, dict):
        raise ValueError("SalesDetails is not an object")
    updated = instant(item.get("UpdatedDateUTC"), "UpdatedDateUTC")
    return RemoteProduct(
        remote_id=item_id,
        code=code,
        name=str(item.get("Name") or ""),
        description=item.get("Description"),
        price=decimal(sales.get("UnitPrice"), "SalesDetails.UnitPrice"),
        active=item.get("IsSold", True) is not False,
        updated_at=updated,
        stock=decimal(item.get("QuantityOnHand"), "QuantityOnHand"),
    )


class _Unreadable:
    """An item :func:`_read_item` could not read, as its error line."""

    __slots__ = ("line",)

    def __init__(self, line: str) -> None:
        self.line = line


def _read_item(obj: dict[str, Any]) -> Any:
    """json ``object_hook`` for the Items list: an item becomes its RemoteProduct (or an
    _Unreadable) as soon as it is parsed, so a 50,000-item catalogue's parsed objects are never
    all held at once (they were most of the fetch's peak memory). Other objects pass as they
    are; an element without ItemID stays a dict, for read_items to report."""
    if "ItemID" not in obj:
        return obj
    try:
        return product_from(obj)
    except (ValueError, TypeError, AttributeError) as exc:
        return _Unreadable(f"item {obj.get('ItemID') or '(no ItemID)'}: {exc}")


def read_items(raw: list[Any]) -> tuple[list[RemoteProduct], list[str]]:
    """Every readable item, and one error line per unreadable one (the rest still apply).

    Elements already read while parsing (:func:`_read_item`) are taken as they are."""
    products, errors = [], []
    for item in raw:
        if isinstance(item, RemoteProduct):
            products.append(item)
            continue
        if isinstance(item, _Unreadable):
            errors.append(item.line)
            continue
        try:
            products.append(product_from(item))
        except (ValueError, TypeError, AttributeError) as exc:
            ident = item.get("ItemID") if isinstance(item, dict) else None
            errors.append(f"item {ident or '(no ItemID)'}: {exc}")
    return products, errors


class _ItemsAnswer(msgspec.Struct):
    """The Items answer as read fast: each item kept as its raw JSON text (the rest skipped)."""

    Items: list[msgspec.Raw]


# An item's fingerprint is a 64-bit digest of its JSON text as Xero wrote it (signed, as a
# BIGINT keeps it): SHA-1's first 8 bytes (the fastest digest in hashlib here, hardware-assisted)
# mixed with ITEM_READING. It covers every field of the item, those we store and the rest, so an
# item Xero answers byte for byte the same is the same item; one that differs anywhere is read in
# full. Change ITEM_READING when product_from reads an item differently: every item stored under
# the old reading is then read again, once.
ITEM_READING = 0x58524F4954454D31  # "XROITEM1"


def read_raw_items(
    raws: list[msgspec.Raw], known: KnownRecords
) -> tuple[list[RemoteProduct], list[str], list[int]]:
    """Items given as their raw JSON text: those whose fingerprint ``known`` holds are left
    unparsed (their fingerprints listed), the others read as :func:`read_items` reads them.

    A 200,000-item catalogue is about 100 MB of JSON: parsed whole into objects it took more
    CPU and memory than everything else a pull with nothing changed does; hashing each item's
    text is a small share of that, and nothing is built for an item that has not changed."""
    sha1, number = hashlib.sha1, int.from_bytes  # once an item (see ITEM_READING): local names
    fingerprints = [
        number(sha1(raw).digest()[:8], "big", signed=True) ^ ITEM_READING for raw in raws
    ]
    if known.holds_exactly(fingerprints):  # nothing changed: no item is looked for alone
        return [], [], fingerprints
    held = known.held()
    unchanged = [fp for fp in fingerprints if fp in held]
    if len(unchanged) == len(raws):
        return [], [], unchanged
    products: list[RemoteProduct] = []
    errors: list[str] = []
    for raw, fp in zip(raws, fingerprints, strict=True):
        if fp in held:
            continue
        found, bad = read_items([msgspec.json.decode(raw)])
        for product in found:
            product.fingerprint = fp
        products.extend(found)
        errors.extend(bad)
    return products, errors, unchanged


def _items_of(resp: requests.Response, read: bool) -> list[Any]:
    """The Items list of an answer parsed by the json module (with ``read``: each item read
    into a RemoteProduct as it is parsed)."""
    body = parse_json(resp, object_hook=_read_item if read else None)
    items = body.get("Items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadResponse("GET /Items: no Items list in the response")
    return items


def _contact_number(customer: NewCustomer) -> str | None:
    """The ContactNumber a contact created at sale time gets: the shop's account number, else
    its email, when either fits Xero's 50 characters."""
    for value in (customer.account_number, customer.email):
        text = (value or "").strip()
        if text and len(text) <= 50:
            return text
    return None


def customer_from(contact: dict[str, Any]) -> RemoteCustomer:
    return RemoteCustomer(
        remote_id=str(contact.get("ContactID")),
        name=str(contact.get("Name") or ""),
        email=contact.get("EmailAddress") or None,
        # either code names the contact: AccountNumber (editable in Xero's screens) first
        account_number=contact.get("AccountNumber") or contact.get("ContactNumber") or None,
        other_codes=tuple(
            str(code)
            for code in (contact.get("ContactNumber"),)
            if code and code != contact.get("AccountNumber")
        ),
        active=(contact.get("ContactStatus") or "ACTIVE") == "ACTIVE",
        updated_at=instant(contact.get("UpdatedDateUTC"), "UpdatedDateUTC"),
    )


def invoice_from(inv: dict[str, Any]) -> PostedInvoice:
    return PostedInvoice(
        remote_id=str(inv.get("InvoiceID")),
        number=str(inv.get("InvoiceNumber") or ""),
        # compared when known: an unreadable total never hides an invoice we posted
        total=decimal_or_none(inv.get("Total")),
        status=inv.get("Status"),
    )


def _linkable_customer(contact: Any) -> RemoteCustomer:
    """A contact of a listing as a customer; one that names no contact is a page error."""
    if not isinstance(contact, dict):
        raise TypeError("not an object")
    if is_nil(contact.get("ContactID")):
        raise ValueError("no usable ContactID")
    return customer_from(contact)


def _matched(contact: dict[str, Any]) -> RemoteCustomer:
    """A contact a look-up matched. One that cannot be read fails the look-up: it must not pass
    for no match, or the customer would be created a second time."""
    try:
        return customer_from(contact)
    except ValueError as exc:
        raise BadResponse(f"GET /Contacts: contact {contact.get('ContactID')}: {exc}") from None


# Characters of ids one ``IDs=`` query carries (about 48 GUIDs): under the 2,000-character URLs
# that proxies and servers commonly accept (our bound; Xero documents none for IDs lists).
IDS_QUERY_CHARS = 1800


def _id_lists(ids: list[str], limit: int) -> list[list[str]]:
    """``ids`` in consecutive lists whose comma-joined form stays within ``limit`` characters."""
    lists: list[list[str]] = []
    size = 0
    for rid in ids:
        if lists and size + 1 + len(rid) <= limit:
            lists[-1].append(rid)
            size += 1 + len(rid)
        else:
            lists.append([rid])
            size = len(rid)
    return lists


def _contact_rows(body: Any) -> list[Any]:
    contacts = body.get("Contacts") if isinstance(body, dict) else None
    if not isinstance(contacts, list):
        raise BadResponse("GET /Contacts: no Contacts list in the response")
    return contacts


@dataclass
class _Shift:
    """What one pass over a Contacts listing read, to tell whether the listing shifted under
    it (see ``XeroConnector._contacts``)."""

    first_seen: dict[str, int] = field(default_factory=dict)  # contact id -> page first read on
    last_stamp: dict[int, datetime] = field(default_factory=dict)  # page -> its newest stamp
    moved_from: int | None = None  # the earliest page a contact read twice was first read on
    counts: list[int] = field(default_factory=list)  # each page's itemCount, when it has one

    def read(self, page: int, contacts: list[Any], body: Any) -> None:
        pagination = body.get("pagination") if isinstance(body, dict) else None
        count = pagination.get("itemCount") if isinstance(pagination, dict) else None
        if isinstance(count, int):
            self.counts.append(count)
        for i, c in enumerate(contacts):
            if not isinstance(c, dict):
                continue
            cid = str(c.get("ContactID"))
            if is_nil(cid):
                cid = f"(no id) {page}.{i}"  # read, though it names no contact
            if cid in self.first_seen:
                seen_on = self.first_seen[cid]
                self.moved_from = (
                    seen_on if self.moved_from is None else min(self.moved_from, seen_on)
                )
            else:
                self.first_seen[cid] = page
            stamp = instant_or_none(c.get("UpdatedDateUTC"))
            if stamp is not None and (page not in self.last_stamp or stamp > self.last_stamp[page]):
                self.last_stamp[page] = stamp

    @property
    def deficit(self) -> int:
        """How many fewer distinct contacts were read than the last itemCount says."""
        return self.counts[-1] - len(self.first_seen) if self.counts else 0

    def steady(self, deficit_before: int) -> bool:
        """Whether the listing held still: nothing read twice, the count never shrank, and no
        shortfall against it, unless the pass before fell short by as many: with nothing read
        twice, that count is Xero's own (it counts rows it does not list), not a shift."""
        shrank = any(b < a for a, b in zip(self.counts, self.counts[1:], strict=False))
        short = self.deficit > 0 and self.deficit != deficit_before
        return self.moved_from is None and not shrank and not short

    def safe_stamp(self) -> datetime | None:
        """Where the next pass may start: the last stamp read before the shift, one second
        back (second precision, records modified *after* it: the second keeps the ties)."""
        safe = self.last_stamp.get(self.moved_from or 1)
        return safe.replace(microsecond=0) - timedelta(seconds=1) if safe else None


def _error_body(resp: requests.Response) -> dict[str, Any]:
    """A 400's JSON body (OAS ``Error``: ErrorNumber, Type, Message, Elements), or {}."""
    try:
        body = parse_json(resp)
    except BadResponse:
        return {}
    return body if isinstance(body, dict) else {}


def _call_messages(error: dict[str, Any], resp: requests.Response) -> list[str]:
    """The message of a 400 that names no element."""
    for key in ("Message", "Detail", "Title"):
        if error.get(key):
            return [str(error[key])]
    return [_error_message(resp)]


def _rejected_call(plural: str, resp: requests.Response) -> Rejected:
    """A write answered 400: every ``Elements[].ValidationErrors[].Message`` as its own message
    (never joined and cut), else the call's own message."""
    error = _error_body(resp)
    raw = error.get("Elements")
    elements = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
    messages: list[str] = []
    for el in elements:
        for m in refused(el) or _validation_messages([el]):
            if m not in messages:
                messages.append(m)
    messages = messages or _call_messages(error, resp)
    return Rejected(
        f"PUT /{plural}: " + "; ".join(messages),
        errors=messages,
        status=400,
        body=secrets.redact(resp.text[:2000]),
    )


def _untrusted(plural: str, sent: dict[str, Any], el: dict[str, Any]) -> list[str]:
    """An accepted-looking element that names no record (the nil GUID), or another record than
    the one asked for (createItems example: asked ``abc``, answered ``abc65591``): a refusal.
    Xero echoes Code and InvoiceNumber, so a missing one is a difference too."""
    key = {"Items": "Code", "Invoices": "InvoiceNumber", "CreditNotes": "CreditNoteNumber"}.get(
        plural
    )
    asked = sent.get(key) if key else None
    what = f"{plural[:-1].lower()} {asked or sent.get('Name') or ''}".strip()
    remote_id = el.get(ID_FIELDS[plural])
    if is_nil(remote_id):
        return [refusal(what, remote_id)]
    if key and asked is not None and el.get(key) != asked:
        return [
            f"Xero answered {what} with {key} {str(el.get(key))[:60]!r} instead of {asked!r} "
            f"(record {remote_id}): taken as a refusal, nothing was linked"
        ]
    return []


# the connector ---------------------------------------------------------------------------------
class XeroConnector(Connector):
    provider = "xero"
    capabilities = Capabilities(
        lookup_batch=None,
        stock_in_product=True,
        idempotency_keys=True,
        cursor_overlap=timedelta(seconds=5),
        limits=LIMITS,
        full_catalogue_call=True,
        invoice_batch=INVOICE_BATCH,
        documents=DocumentSupport(
            tax_inclusive="native",
            codeless_lines="native",
            payments="applied",
            refunds="credit_note",
        ),
        dependency_batch=True,
    )

    def code_taken(self, messages: list[str]) -> bool:
        # "Price List Item with Code 'abc' already exists" (provider notes §3: codes are unique)
        return any("already exists" in m and "Code" in m for m in messages)

    def number_taken(self, messages: list[str]) -> bool:
        # Xero's validation message for a second ACCREC with an existing InvoiceNumber
        # (sandbox/xero.py models it; seen in Xero's ValidationErrors as "Invoice # must be
        # unique.").
        return any("invoice # must be unique" in m.lower() for m in messages)

    # products ----------------------------------------------------------------------------------
    def _items(self, params: dict[str, str] | None = None, *, read: bool = False) -> list[Any]:
        """The Items list; with ``read``, its items already read into RemoteProducts."""
        resp = self.http.request("GET", f"{API}/Items", params=params or None)
        return _items_of(resp, read)

    def _catalogue(self, known: KnownRecords) -> tuple[list[RemoteProduct], list[str], list[int]]:
        """The whole Items list in one call: the items whose fingerprint ``known`` does not hold
        read into RemoteProducts (with their fingerprints), one error line per unreadable item,
        and the fingerprints of the items left unread because ``known`` has them."""
        resp = self.http.request("GET", f"{API}/Items")
        try:
            raws = msgspec.json.decode(resp.content, type=_ItemsAnswer).Items
        except (msgspec.DecodeError, msgspec.ValidationError):
            # not the shape read fast: the ordinary parse says what is wrong, or reads it
            products, errors = read_items(_items_of(resp, read=True))
            return products, errors, []
        return read_raw_items(raws, known)

    def changed_products(self, since: datetime | None) -> Iterator[Page[RemoteProduct]]:
        """Every item, from one call. ``since`` is deliberately not sent: stock movements may
        not move UpdatedDateUTC, and the full read costs the same single call."""
        return self.whole_catalogue(NOTHING_KNOWN)

    def whole_catalogue(self, known: KnownRecords) -> Iterator[Page[RemoteProduct]]:
        """Every item, from one call; an item whose fingerprint ``known`` holds is only listed
        in the first page's ``unchanged`` (see ``read_raw_items``)."""
        products, errors, unchanged = self._catalogue(known)
        products.sort(key=lambda p: (p.updated_at or datetime.min.replace(tzinfo=UTC), p.remote_id))
        total = len(products) + len(unchanged)  # the one Items answer is the whole list
        if not products and (errors or unchanged):
            yield Page([], number=1, errors=errors, total=total, unchanged=unchanged)
        for n, start in enumerate(range(0, len(products), PRODUCT_PAGE), start=1):
            chunk = products[start : start + PRODUCT_PAGE]
            yield Page(
                chunk,
                cursor=chunk[-1].updated_at,
                number=n,
                errors=errors if n == 1 else [],
                total=total,
                unchanged=unchanged if n == 1 else [],
            )

    def changed_stock(self, since: datetime | None) -> Iterator[Page[RemoteStock]]:
        """Nothing: stock comes inside the items (``capabilities.stock_in_product``)."""
        return iter(())

    def get_products(self, remote_ids: list[str]) -> list[RemoteProduct]:
        if not remote_ids:
            return []
        wanted = {i.lower() for i in remote_ids}
        products, errors, _ = self._catalogue(NOTHING_KNOWN)
        if errors:
            # an unreadable item must not pass for a vanished one (a ghost): fail the call
            raise BadResponse(f"GET /Items: {len(errors)} unreadable item(s): {errors[0]}")
        return [p for p in products if p.remote_id.lower() in wanted]

    def find_product(self, code: str) -> RemoteProduct | None:
        items = self._items({"where": f"Code=={_where_string(code)}"})
        exact = [i for i in items if i.get("Code") == code and not is_nil(i.get("ItemID"))]
        return product_from(exact[0]) if exact else None

    def create_product(self, product: NewProduct) -> RemoteProduct:
        made = self.create_products([product])[0]
        if isinstance(made, Rejected):
            raise made
        return made

    def create_products(self, products: list[NewProduct]) -> list[RemoteProduct | Rejected]:
        """``PUT /Items`` with every product as one element (summarizeErrors=false: one outcome
        each; a code Xero has already is refused, see :meth:`code_taken`)."""
        results = self._create_many("Items", [self._item_element(p) for p in products])
        out: list[RemoteProduct | Rejected] = []
        for r in results:
            if isinstance(r, Rejected):
                out.append(r)
                continue
            try:
                out.append(product_from(r))
            except ValueError as exc:  # created, perhaps: the next create is refused and looks up
                raise BadResponse(f"PUT /Items: unreadable item in the answer: {exc}") from None
        return out

    def _item_element(self, product: NewProduct) -> dict[str, Any]:
        sales: dict[str, Any] = {
            "UnitPrice": float(product.price),
            "AccountCode": product.account_code or self._account_code(),
        }
        tax = product.tax_code or self.settings.get("tax_type")
        if tax:
            sales["TaxType"] = tax
        item: dict[str, Any] = {"Code": product.code, "Name": product.name[:50]}
        if product.description:
            item["Description"] = product.description
        item["SalesDetails"] = sales
        return item

    # customers ---------------------------------------------------------------------------------
    def _contact_pages(
        self, params: dict[str, str], headers: dict[str, str] | None, number: int
    ) -> Iterator[Sheet[RemoteCustomer, int]]:
        """One read of a Contacts listing, page by page (numbered on from ``number``)."""

        def fetch(page: int) -> Any:
            query = {**params, "page": str(page), "pageSize": str(PAGE_SIZE)}
            return self.http.json("GET", f"{API}/Contacts", params=query, headers=headers)

        def line(row: Any, exc: Exception) -> str:
            name = row.get("Name") if isinstance(row, dict) else row
            return f"contact {str(name)[:60]!r}: {exc}"

        def stamp(row: Any, record: RemoteCustomer | None) -> datetime | None:
            return record.updated_at if record is not None else None

        return read_pages(
            xero_pages(XERO_PAGE_ROWS),
            fetch,
            _contact_rows,
            _linkable_customer,
            what="/Contacts",
            error_line=line,
            stamp=stamp,
            number=number,
        )

    def _contacts(
        self, params: dict[str, str], since: datetime | None = None
    ) -> Iterator[tuple[Sheet[RemoteCustomer, int], bool]]:
        """Every page of a Contacts listing, and whether it completes a read that held still.

        Pages follow ``pagination.pageCount`` when the answer has it: a page may hold fewer
        rows than asked for while more follow. Only without it does a short page end the list,
        and short means fewer than the 100 rows Xero puts on a page when it reads no pageSize
        (the form that has no pagination block), not fewer than the 1000 asked for.

        Offset pages over ``order=UpdatedDateUTC ASC`` shift while they are read: a contact
        edited after its page was read moves to the end, and the first contact of the next page
        slides back onto a page already read, never to be seen (Xero-Net#241). A pass that
        read a contact twice, read fewer distinct contacts than ``itemCount``, or saw the count
        shrink is followed by another pass from the last stamp read before the shift (the
        listing is in time order, so nothing older can have been skipped). The same shortfall
        against ``itemCount`` two passes running, with nothing read twice, is Xero's count and
        not a shift: that pass is taken as it is. The flag is True only on the last page of a
        pass that saw the listing hold still: until then no cursor may pass anything in it.
        Each page's ``total`` is the latest ``itemCount`` its pass has seen."""
        boundary = since
        number = 0
        deficit_before = 0  # what the pass before fell short of its itemCount by
        # only a listing in time order can be taken up from a stamp; any other is read again
        timed = params.get("order", "").replace(" ", "").lower() == "updateddateutcasc"
        for attempt in range(1, CONTACT_PASSES + 1):
            headers = {"If-Modified-Since": _since_header(boundary)} if boundary else None
            watch = _Shift()
            steady = True
            for sheet in self._contact_pages(params, headers, number):
                number = sheet.page.number
                watch.read(sheet.asked, sheet.rows, sheet.body)
                sheet.page.total = watch.counts[-1] if watch.counts else None
                steady = sheet.last and (sheet.asked == 1 or watch.steady(deficit_before))
                yield sheet, steady
            if steady:
                return
            deficit_before = watch.deficit
            safe = watch.safe_stamp() if timed else None
            if safe is not None:
                boundary = max(boundary, safe) if boundary else safe
            log.info(
                "GET /Contacts: the listing changed while it was paged (pass %d); reading again "
                "from %s",
                attempt,
                boundary.isoformat() if boundary else "the start",
            )
        raise TransientError(
            f"GET /Contacts: the contacts changed while they were paged, {CONTACT_PASSES} times "
            "running; read again next run"
        )

    def changed_customers(self, since: datetime | None) -> Iterator[Page[RemoteCustomer]]:
        params = {"order": "UpdatedDateUTC ASC", "includeArchived": "true"}
        newest: datetime | None = None
        for sheet, complete in self._contacts(params, since):
            page = sheet.page
            if page.cursor is not None and (newest is None or page.cursor > newest):
                newest = page.cursor
            # the cursor moves only once a pass has read the whole listing holding still
            page.cursor = newest if complete else None
            yield page

    customer_ids_a_call: ClassVar[int | None] = IDS_QUERY_CHARS // 37  # a GUID and its comma

    def get_customers(self, remote_ids: list[str]) -> list[RemoteCustomer]:
        """``GET /Contacts?IDs=a,b,...`` (archived ones too), the ids in comma lists that keep
        the query under :data:`IDS_QUERY_CHARS`: one call per list for the hints of a whole
        run's Contacts webhooks."""
        ids = list(dict.fromkeys(str(i).strip().lower() for i in remote_ids if str(i).strip()))
        found: dict[str, RemoteCustomer] = {}
        for chunk in _id_lists(ids, IDS_QUERY_CHARS):
            params = {"IDs": ",".join(chunk), "includeArchived": "true"}
            for sheet, _ in self._contacts(params):
                for customer in sheet.page.records:
                    if customer.remote_id.lower() in chunk:
                        found[customer.remote_id.lower()] = customer
        return list(found.values())

    def find_customers(
        self, *, email: str | None = None, account: str | None = None
    ) -> list[RemoteCustomer]:
        found = self.find_customers_many([(email, account)])[0]
        if isinstance(found, Rejected):
            raise found
        return found

    def find_customers_many(
        self, queries: list[tuple[str | None, str | None]]
    ) -> list[list[RemoteCustomer] | Rejected]:
        """Every (email, account) pair in one ``where`` of ORs (chunked to keep the URL short):
        ``EmailAddress.ToLower()=="…"`` with the address lower-cased (Xero's ``==`` compares
        case included: a contact saved as ``Jane@X.com`` is found by ``jane@x.com``) and
        ``AccountNumber=="…" OR ContactNumber=="…"`` (exact). Each pair's matches are then
        picked from the answer here, by the same exact comparisons."""
        out: list[list[RemoteCustomer] | Rejected] = []
        terms: list[list[str]] = []
        for email, account in queries:
            try:
                terms.append(_contact_terms(email, account))
            except Rejected as err:
                terms.append([])
                out.append(err)
                continue
            out.append([])
        rows: dict[str, dict[str, Any]] = {}
        for where in _where_chunks([t for t, o in zip(terms, out, strict=True) if o == []]):
            for sheet, _ in self._contacts({"where": where}):
                for c in sheet.rows:
                    if isinstance(c, dict) and not is_nil(c.get("ContactID")):
                        rows.setdefault(str(c.get("ContactID")), c)  # names no contact: skipped
        for i, (email, account) in enumerate(queries):
            if isinstance(out[i], Rejected):
                continue
            out[i] = [_matched(c) for c in rows.values() if _contact_matches(c, email, account)]
        return out

    def create_customer(self, customer: NewCustomer) -> RemoteCustomer:
        made = self.create_customers([customer])[0]
        if isinstance(made, Rejected):
            raise made
        return made

    def create_customers(self, customers: list[NewCustomer]) -> list[RemoteCustomer | Rejected]:
        """``PUT /Contacts`` with every customer as one element (summarizeErrors=false: one
        outcome each). A contact whose name another active contact holds, and that Xero refused
        for nothing else, is sent again (all such in one more call) with a disambiguating
        suffix ("Jane Doe (#ACC-1)"): we never touch the other contact."""
        contacts = [self._contact_element(c) for c in customers]
        results = self._create_many("Contacts", contacts)
        # decided on Xero's messages one by one: a distinct name helps only when the name clash
        # is all Xero objected to (another refusal would stand for the new name too)
        again = [
            i
            for i, r in enumerate(results)
            if isinstance(r, Rejected) and r.errors and all(NAME_TAKEN in m for m in r.errors)
        ]
        if again:
            renamed = [
                {**contacts[i], "Name": self._disambiguated(contacts[i]["Name"], customers[i])}
                for i in again
            ]
            for i, result in zip(again, self._create_many("Contacts", renamed), strict=True):
                results[i] = result
        return [r if isinstance(r, Rejected) else customer_from(r) for r in results]

    def _contact_element(self, customer: NewCustomer) -> dict[str, Any]:
        contact: dict[str, Any] = {"Name": self._contact_name(customer)}
        for key, value in (
            ("FirstName", customer.first_name),
            ("LastName", customer.last_name),
            ("EmailAddress", customer.email),
            ("AccountNumber", customer.account_number),
            # API-only (shown as "Contact Code"): the link's code survives edits in Xero
            ("ContactNumber", _contact_number(customer)),
        ):
            if value:
                contact[key] = value
        return contact

    @staticmethod
    def _contact_name(customer: NewCustomer) -> str:
        name = (customer.name or "").strip()
        if not name:
            name = " ".join(p for p in (customer.first_name, customer.last_name) if p).strip()
        return (name or customer.email or customer.account_number or "Customer")[:255]

    @staticmethod
    def _disambiguated(name: str, customer: NewCustomer) -> str:
        tag = customer.account_number or customer.email
        if not tag:
            tag = hashlib.sha1(name.encode()).hexdigest()[:6]
        suffix = f" (#{tag})"
        return name[: 255 - len(suffix)] + suffix

    # invoices ----------------------------------------------------------------------------------
    @classmethod
    def unmatchable(cls, value: str) -> str | None:
        return NO_QUOTE if '"' in value else None

    def find_invoice(self, number: str) -> PostedInvoice | None:
        # InvoiceNumbers is a comma-separated list (spec): a number holding a comma goes through
        # ``where`` instead, which compares the whole value.
        if "," in number:
            params = {"where": f"InvoiceNumber=={_where_string(number)}"}
        else:
            params = {"InvoiceNumbers": _searchable(number)}
        body = self.http.json("GET", f"{API}/Invoices", params=params)
        invoices = body.get("Invoices") if isinstance(body, dict) else None
        if not isinstance(invoices, list):
            raise BadResponse("GET /Invoices: no Invoices list in the response")
        exact = [i for i in invoices if i.get("InvoiceNumber") == number]
        live = [i for i in exact if i.get("Status") not in ("DELETED", "VOIDED")]
        chosen = (live or exact)[:1]
        return invoice_from(chosen[0]) if chosen else None

    def post_invoice(self, invoice: InvoiceDraft, idempotency_key: str) -> PostedInvoice:
        if not idempotency_key or len(idempotency_key) > 128:
            raise ValueError("Xero's Idempotency-Key must be 1 to 128 characters")
        body = {"Invoices": [self.invoice_body(invoice)]}
        el = self._put(
            "Invoices", body, idempotency_key, params={"summarizeErrors": "false", "unitdp": "4"}
        )
        return invoice_from(el)

    def post_invoices(
        self, invoices: list[tuple[InvoiceDraft, str]]
    ) -> list[PostedInvoice | Rejected | TransientError]:
        """Up to ``INVOICE_BATCH`` invoices in one PUT (the plural envelope, summarizeErrors=false:
        one status per element). The call's Idempotency-Key is derived from its invoices' keys, so
        a retry of the same batch is replayed, never posted twice; and every invoice carries its
        unique InvoiceNumber, which Xero refuses to create twice."""
        if len(invoices) == 1:
            draft, key = invoices[0]
            try:
                return [self.post_invoice(draft, key)]
            except Rejected as err:
                return [err]
        if len(invoices) > INVOICE_BATCH:
            raise ValueError(f"at most {INVOICE_BATCH} invoices per call")
        digest = hashlib.sha256("\n".join(k for _, k in invoices).encode()).hexdigest()
        resp = self.http.request(
            "PUT",
            f"{API}/Invoices",
            params={"summarizeErrors": "false", "unitdp": "4"},
            json_body={"Invoices": [self.invoice_body(d) for d, _ in invoices]},
            headers={"Idempotency-Key": f"synccli-batch-{digest[:48]}"},
            retry=True,  # the same batch under the same key is replayed by the provider
            ok=(400,),  # the batch's ValidationException: one outcome per invoice, below
        )
        if resp.status_code == 400:
            return self._refused_batch(invoices, resp)
        answer = parse_json(resp)
        elements = answer.get("Invoices") if isinstance(answer, dict) else None
        if not isinstance(elements, list) or len(elements) != len(invoices):
            raise BadResponse(f"PUT /Invoices: expected {len(invoices)} elements in the response")
        # each invoice's own element: by its InvoiceNumber (Xero echoes it, refused or not), else
        # by position
        by_number = {e.get("InvoiceNumber"): e for e in elements if isinstance(e, dict)}
        results: list[PostedInvoice | Rejected | TransientError] = []
        for (draft, _), at in zip(invoices, elements, strict=True):
            el = by_number.get(draft.number, at)
            messages = refused(el) or _untrusted("Invoices", {"InvoiceNumber": draft.number}, el)
            if messages:
                results.append(
                    Rejected(
                        "PUT /Invoices: " + "; ".join(messages),
                        errors=messages,
                        status=200,
                        body=secrets.redact(json.dumps(el)[:2000]),
                    )
                )
            else:
                results.append(invoice_from(el))
        return results

    def _refused_batch(
        self, invoices: list[tuple[InvoiceDraft, str]], resp: requests.Response
    ) -> list[PostedInvoice | Rejected | TransientError]:
        """A batch answered 400 ValidationException. Xero lists the refused elements only and
        may have created their valid siblings without naming them (provider notes §2;
        StackOverflow q52706101, answered by Xero staff): each refused element's invoice (by its
        echoed InvoiceNumber) is Rejected with its own messages, every other one is looked up
        by number. Found -> posted; not found -> no clear answer (TransientError: the job
        stays ``posting`` and is looked up before it is sent again). A 400 that names no
        element processed nothing: every invoice is Rejected with its message."""
        error = _error_body(resp)
        raw = error.get("Elements")
        elements = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
        body = secrets.redact(resp.text[:2000])
        if not elements:
            messages = _call_messages(error, resp)
            return [
                Rejected(
                    "PUT /Invoices: " + "; ".join(messages), errors=messages, status=400, body=body
                )
                for _ in invoices
            ]
        numbers = {d.number for d, _ in invoices}
        refusals: dict[str, list[str]] = {}
        for el in elements:
            number = el.get("InvoiceNumber")
            if number in numbers:
                mine = refusals.setdefault(number, [])
                for m in refused(el) or _validation_messages([el]) or ["refused without a message"]:
                    if m not in mine:
                        mine.append(m)
        rest = [d.number for d, _ in invoices if d.number not in refusals]
        lookup = ""
        try:
            found = self._find_invoices(rest)
        except TransientError as err:  # the refusals above still hold
            found, lookup = {}, f" (the look-up failed: {err.message})"
        results: list[PostedInvoice | Rejected | TransientError] = []
        for draft, _ in invoices:
            if draft.number in refusals:
                messages = refusals[draft.number]
                results.append(
                    Rejected(
                        "PUT /Invoices: " + "; ".join(messages),
                        errors=messages,
                        status=400,
                        body=body,
                    )
                )
            elif draft.number in found:
                results.append(found[draft.number])
            else:
                results.append(
                    TransientError(
                        f"PUT /Invoices: the batch was answered 400 and invoice {draft.number} is "
                        f"neither among its refused elements nor found at Xero{lookup}",
                        status=400,
                    )
                )
        return results

    def _find_invoices(self, numbers: list[str]) -> dict[str, PostedInvoice]:
        """The invoices with these numbers, in one call (``InvoiceNumbers`` is a comma-separated
        list, so a number holding a comma, or a quote, goes through :meth:`find_invoice` alone;
        one that cannot be looked up at all is simply not found: no clear answer)."""
        out: dict[str, PostedInvoice] = {}
        plain = [n for n in numbers if "," not in n and '"' not in n]
        for number in (n for n in numbers if n not in plain):
            try:
                one = self.find_invoice(number)
            except Rejected:
                continue
            if one is not None:
                out[number] = one
        for start in range(0, len(plain), INVOICE_BATCH):
            chunk = plain[start : start + INVOICE_BATCH]
            body = self.http.json(
                "GET", f"{API}/Invoices", params={"InvoiceNumbers": ",".join(chunk)}
            )
            invoices = body.get("Invoices") if isinstance(body, dict) else None
            if not isinstance(invoices, list):
                raise BadResponse("GET /Invoices: no Invoices list in the response")
            for number in chunk:
                exact = [
                    i for i in invoices if isinstance(i, dict) and i.get("InvoiceNumber") == number
                ]
                live = [i for i in exact if i.get("Status") not in ("DELETED", "VOIDED")]
                chosen = (live or exact)[:1]
                if chosen:
                    out[number] = invoice_from(chosen[0])
        return out

    def invoice_body(self, invoice: InvoiceDraft) -> dict[str, Any]:
        """The one Invoice element we send: Contact by ContactID only, every line field explicit."""
        lines = []
        for line in invoice.lines:
            out: dict[str, Any] = {} if line.codeless else {"ItemCode": line.code}
            out.update(
                Description=line.description,
                Quantity=float(line.quantity),
                UnitAmount=float(line.unit_price),
                # a line without a product code names no Item (ItemCode is optional, spec
                # LineItem): it is posted to its revenue account alone, so no stock moves
                AccountCode=line.account_code
                or (self._charge_account_code() if line.codeless else self._account_code()),
            )
            # never left to the account's default tax type (see ``tax_type`` above)
            out["TaxType"] = line.tax_code or self.settings.get("tax_type") or NO_TAX
            lines.append(out)
        el: dict[str, Any] = {
            "Type": "ACCREC",
            "Contact": {"ContactID": invoice.customer_remote_id},
            "Date": invoice.date.date().isoformat(),  # the date as the shop gave it
        }
        if invoice.due_date is not None:
            el["DueDate"] = invoice.due_date.date().isoformat()
        el["InvoiceNumber"] = invoice.number
        if invoice.reference:
            el["Reference"] = invoice.reference
        el.update(
            CurrencyCode=invoice.currency.strip().upper(),
            Status="AUTHORISED",
            # Inclusive: Xero takes each line's amount as tax-inclusive and computes its tax as
            # round2(amount x rate / (1 + rate)) (the spec's Inclusive example), the money rule
            # of wire.line_amounts, so its Total is the order's
            LineAmountTypes="Inclusive" if invoice.prices_include_tax else "Exclusive",
            LineItems=lines,
        )
        return el

    # refunds: a credit note allocated to the invoice ------------------------------------------
    def post_refund(self, refund: InvoiceDraft, idempotency_key: str) -> PostedInvoice:
        """``PUT /CreditNotes`` (an ACCRECCREDIT under the refund's number, with the
        Idempotency-Key), then its allocation to the order's invoice: two calls, since Xero
        takes no allocation inline with a new credit note (xeroizer#196, Xero support)."""
        assert refund.refund_of is not None
        note = self.create_credit_note(refund, idempotency_key)
        return self._allocate_rest(note, refund.refund_of)

    def create_credit_note(self, refund: InvoiceDraft, idempotency_key: str) -> dict[str, Any]:
        if not idempotency_key or len(idempotency_key) > 128:
            raise ValueError("Xero's Idempotency-Key must be 1 to 128 characters")
        el = self.invoice_body(refund)
        el.pop("DueDate", None)
        el["Type"] = "ACCRECCREDIT"
        el["CreditNoteNumber"] = el.pop("InvoiceNumber")
        if refund.refund_of is not None:
            el["Reference"] = refund.refund_of.number  # the order it refunds, on Xero's screens
        body = {"CreditNotes": [el]}
        params = {"summarizeErrors": "false", "unitdp": "4"}
        return self._put("CreditNotes", body, idempotency_key, params=params)

    def find_refund(self, number: str, target: RefundTarget) -> PostedInvoice | None:
        """The credit note numbered ``number`` (``where``: CreditNotes take no list of numbers),
        allocated to the invoice when an earlier run's allocation did not happen."""
        params = {"where": f"CreditNoteNumber=={_where_string(number)}"}
        body = self.http.json("GET", f"{API}/CreditNotes", params=params)
        notes = body.get("CreditNotes") if isinstance(body, dict) else None
        if not isinstance(notes, list):
            raise BadResponse("GET /CreditNotes: no CreditNotes list in the response")
        exact = [
            n
            for n in notes
            if isinstance(n, dict)
            and n.get("CreditNoteNumber") == number
            and n.get("Type") == "ACCRECCREDIT"
        ]
        live = [n for n in exact if n.get("Status") not in ("DELETED", "VOIDED")]
        if not live:
            return None
        return self._allocate_rest(live[0], target)

    def _allocate_rest(self, note: dict[str, Any], target: RefundTarget) -> PostedInvoice:
        """Allocate the credit note to the invoice, once: not when an allocation to it exists
        (an earlier run's answer was lost), and never over the invoice's amount due (Xero
        refuses "Credit Note cannot be allocated as amount is greater than amount
        outstanding", xeroizer#320): read first, one call. An invoice paid off meanwhile keeps
        the credit on the contact, said in the answer's note."""
        posted = PostedInvoice(
            str(note.get("CreditNoteID")),
            str(note.get("CreditNoteNumber") or ""),
            decimal_or_none(note.get("Total")),
            note.get("Status"),
        )
        done = [
            a
            for a in note.get("Allocations") or []
            if isinstance(a, dict)
            and str((a.get("Invoice") or {}).get("InvoiceID")) == target.remote_id
        ]
        remaining = decimal_or_none(note.get("RemainingCredit"))
        left = posted.total if remaining is None else remaining
        if not done and note.get("Payments") and (left or 0) <= 0:  # paid back already
            code = self.settings.get("payment_account_code")
            posted.note = f"paid back: {posted.total or 0:.2f} out of account {code}"
        if done or not left or left <= 0:
            return posted
        try:
            return self._allocate(posted, left, target)
        except Rejected as err:  # the credit note is there: looked up, never posted again
            head = (
                f"credit note {posted.number} is at Xero, but its allocation to invoice "
                f"{target.number} was refused"
            )
            raise RefusedAfterCreate(
                f"{head}: {err.message}", errors=[head, *err.errors], status=err.status
            ) from None

    def _allocate(
        self, posted: PostedInvoice, left: Decimal, target: RefundTarget
    ) -> PostedInvoice:
        """The credit goes to what the invoice has due, or back to the customer once it is paid.
        Where our records know what it has due (we posted it and applied every payment of it:
        ``target.due``) nothing is read. Xero refuses an allocation over what is due, so an
        invoice paid or changed in Xero meanwhile shows as a refusal, which changed nothing:
        then it is read, and the credit goes where the invoice now says (never twice: the
        refused allocation made none). A paid invoice whose payment the merchant deleted in
        Xero is not seen: its credit is paid back, as the order's payments say."""
        if target.due is not None:
            if target.due <= 0:
                return self._pay_back(posted, left, target)
            try:
                self.allocate(
                    posted.remote_id, target.remote_id, min(left, target.due), target.on.date()
                )
                return posted
            except Rejected as err:
                log.info(
                    "credit note %s: allocation refused (%s): reading invoice %s",
                    posted.number,
                    err.message,
                    target.number,
                )
        body = self.http.json("GET", f"{API}/Invoices/{target.remote_id}")
        invoices = body.get("Invoices") if isinstance(body, dict) else None
        if not isinstance(invoices, list) or len(invoices) != 1:
            raise BadResponse(f"GET /Invoices/{target.remote_id}: expected one invoice")
        due = decimal_or_none(invoices[0].get("AmountDue"))
        if due is None:
            raise BadResponse(f"GET /Invoices/{target.remote_id}: no AmountDue")
        if due <= 0:
            return self._pay_back(posted, left, target)
        self.allocate(posted.remote_id, target.remote_id, min(left, due), target.on.date())
        return posted

    def _pay_back(
        self, posted: PostedInvoice, left: Decimal, target: RefundTarget
    ) -> PostedInvoice:
        """The invoice is paid (the customer paid at checkout): the credit goes back out of the
        account the order's payments went into, as a payment on the credit note (spec
        ``Payment.CreditNote``; PUT /Payments under a key derived from its body: a retry is
        replayed). Without that account the credit stays on the contact, and the note says so.
        Once paid back the credit note has no credit left: a look-up never pays it twice."""
        code = self.settings.get("payment_account_code")
        if not code:
            posted.note = (
                f"not allocated: invoice {target.number} is paid, so the credit stays on the "
                "contact (pay it back in Xero as a refund of the credit note)"
            )
            return posted
        element: dict[str, Any] = {"CreditNote": {"CreditNoteID": posted.remote_id}}
        element["Account"] = {"Code": code}
        element.update(Date=target.on.date().isoformat(), Amount=float(left))
        element["Reference"] = f"refund {posted.number}"[:255]
        self._put(
            "Payments",
            {"Payments": [element]},
            _key_for(element),
            params={"summarizeErrors": "false"},
        )
        posted.note = (
            f"paid back: {left:.2f} out of account {code} (invoice {target.number} was paid)"
        )
        return posted

    def allocate(self, note_id: str, invoice_id: str, amount: Decimal, day: date) -> None:
        """``PUT /CreditNotes/{id}/Allocations`` (the JSON field is ``Amount``, xero-node#239),
        under a key derived from what it allocates: a retry is replayed, never doubled."""
        allocation = {"Invoice": {"InvoiceID": invoice_id}, "Amount": float(amount)}
        allocation["Date"] = day.isoformat()
        body = {"Allocations": [allocation]}
        path = f"{API}/CreditNotes/{note_id}/Allocations"
        resp = self.http.request(
            "PUT",
            path,
            params={"summarizeErrors": "false"},
            json_body=body,
            headers={"Idempotency-Key": _key_for({"note": note_id, **body})},
            retry=True,
            ok=(400,),
        )
        if resp.status_code == 400:
            raise _rejected_call(f"CreditNotes/{note_id}/Allocations", resp)
        answer = parse_json(resp)
        elements = answer.get("Allocations") if isinstance(answer, dict) else None
        if not isinstance(elements, list) or len(elements) != 1:
            raise BadResponse(f"PUT {path}: expected one allocation in the response")
        messages = refused(elements[0])
        if messages:
            raise Rejected(f"PUT {path}: " + "; ".join(messages), errors=messages, status=200)

    # payments (connectors/xero_payments.py) ----------------------------------------------------
    def apply_payments(
        self, payments: list[PaymentToApply]
    ) -> list[AppliedPayment | Rejected | TransientError]:
        from synccli.connectors import xero_payments

        return xero_payments.apply_payments(self, payments)

    def find_payments(self, invoice_remote_ids: list[str]) -> list[AppliedPayment]:
        from synccli.connectors import xero_payments

        return xero_payments.find_payments(self, invoice_remote_ids)

    def payment_account_problem(self, code: str) -> str | None:
        from synccli.connectors import xero_payments

        return xero_payments.payment_account_problem(self, code)

    # operations --------------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        resp = self.http.request("GET", f"{API}/Organisation")
        body = parse_json(resp)
        orgs = body.get("Organisations") if isinstance(body, dict) else None
        org = orgs[0] if isinstance(orgs, list) and orgs else {}
        return {
            "date": resp.headers.get("Date"),
            "status": resp.status_code,
            "organisation": org.get("Name"),
            "tenant_id": org.get("OrganisationID"),
        }

    def ids(self) -> dict[str, list[dict[str, str]]]:
        """The organisations this grant reaches, for ``tenant_id`` (one call: ``GET
        /connections``, the notes' §1)."""
        resp = self.http.request("GET", "/connections")
        body = parse_json(resp)
        rows = [
            {"id": str(c.get("tenantId")), "name": str(c.get("tenantName"))}
            for c in (body if isinstance(body, list) else [])
            if isinstance(c, dict) and c.get("tenantType", "ORGANISATION") == "ORGANISATION"
        ]
        return {"tenant_id": rows}

    # helpers -----------------------------------------------------------------------------------
    def _account_code(self) -> str:
        return str(self.settings.get("account_code") or "200")

    def _charge_account_code(self) -> str:
        return str(self.settings.get("charge_account_code") or self._account_code())

    def _create_many(
        self, plural: str, elements: list[dict[str, Any]]
    ) -> list[dict[str, Any] | Rejected]:
        """PUT the elements in one plural envelope with summarizeErrors=false: each element's
        own outcome (its record, or ``Rejected`` with its messages); a 400 for the call refuses
        every element. The Idempotency-Key is the body's digest, so a retry is replayed."""
        body = {plural: elements}
        resp = self.http.request(
            "PUT",
            f"{API}/{plural}",
            params={"summarizeErrors": "false"},
            json_body=body,
            headers={"Idempotency-Key": _key_for(body)},
            retry=True,  # safe: the provider replays the stored answer for the same key
            ok=(400,),  # a ValidationException is read here, message by message
        )
        if resp.status_code == 400:
            return [_rejected_call(plural, resp)] * len(elements)
        answer = parse_json(resp)
        got = answer.get(plural) if isinstance(answer, dict) else None
        if not isinstance(got, list) or len(got) != len(elements):
            raise BadResponse(f"PUT /{plural}: expected {len(elements)} element(s) in the response")
        out: list[dict[str, Any] | Rejected] = []
        for sent, el in zip(elements, got, strict=True):
            messages = refused(el) or _untrusted(plural, sent, el if isinstance(el, dict) else {})
            if messages:
                out.append(
                    Rejected(
                        f"PUT /{plural}: " + "; ".join(messages),
                        errors=messages,
                        status=200,
                        body=secrets.redact(json.dumps(el)[:2000]),
                    )
                )
            else:
                out.append(el)
        return out

    def _put(
        self, plural: str, body: dict[str, Any], key: str, *, params: dict[str, str]
    ) -> dict[str, Any]:
        """PUT one element with summarizeErrors=false; its ERROR status becomes ``Rejected``."""
        resp = self.http.request(
            "PUT",
            f"{API}/{plural}",
            params=params,
            json_body=body,
            headers={"Idempotency-Key": key},
            retry=True,  # safe: the provider replays the stored answer for the same key
            ok=(400,),  # a ValidationException is read here, message by message
        )
        if resp.status_code == 400:
            raise _rejected_call(plural, resp)
        answer = parse_json(resp)
        elements = answer.get(plural) if isinstance(answer, dict) else None
        if not isinstance(elements, list) or len(elements) != 1:
            raise BadResponse(f"PUT /{plural}: expected one element in the response")
        el = elements[0]
        messages = refused(el) or _untrusted(plural, body[plural][0], el)
        if messages:
            raise Rejected(
                f"PUT /{plural}: " + "; ".join(messages),
                errors=messages,
                status=200,
                body=secrets.redact(json.dumps(el)[:2000]),
            )
        return el


# wiring ----------------------------------------------------------------------------------------
def _urls(settings: dict[str, Any]) -> tuple[str, str, str]:
    base = (settings.get("base_url") or XERO_API).rstrip("/")
    own = base == XERO_API
    identity = (settings.get("identity_url") or (XERO_IDENTITY if own else base)).rstrip("/")
    login = (settings.get("login_url") or (XERO_LOGIN if own else base)).rstrip("/")
    return base, identity, login


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
) -> XeroConnector:
    """Build a connector for one Xero organisation (see the module docstring for settings)."""
    client_id = settings.get("client_id")
    client_secret = credentials.get("client_secret")
    if not client_id:
        raise ConfigError("Xero settings need client_id")
    if not client_secret:
        raise ConfigError("Xero credentials need client_secret")
    secrets.register(client_secret)
    base, identity, _ = _urls(settings)
    clock = clock or SystemClock()
    grant = settings.get("grant") or "authorization_code"
    if grant not in ("authorization_code", "client_credentials"):
        raise ConfigError(f"unknown Xero grant {grant!r}")

    def tenant_header(tokens: Tokens) -> dict[str, str]:
        tenant = tokens.extra.get("tenant_id") or settings.get("tenant_id")
        return {"xero-tenant-id": str(tenant)} if tenant else {}

    auth_cls = ClientCredentialsAuth if grant == "client_credentials" else OAuth2Auth
    auth = auth_cls(
        token_url=f"{identity}/connect/token",
        client_id=client_id,
        client_secret=client_secret,
        store=token_store,
        clock=clock,
        basic_auth=True,
        extra_headers=tenant_header,
    )
    if grant == "authorization_code" and not (
        token_store.load().extra.get("tenant_id") or settings.get("tenant_id")
    ):
        raise ConfigError("Xero settings need tenant_id (or authorise the connection again)")
    http = HttpClient(
        base,
        auth=auth,
        limits=LIMITS,
        profile=PROFILE,
        ledger=ledger,
        clock=clock,
        time_scale=time_scale,
        timeout=timeout,
        pace=pace,
    )
    return XeroConnector(http, settings)


def authorize_url(settings: dict[str, Any], redirect_uri: str, state: str) -> str:
    """Where to send the merchant to grant access (authorization-code flow)."""
    _, _, login = _urls(settings)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.get("client_id") or "",
            "redirect_uri": redirect_uri,
            "scope": settings.get("scopes") or DEFAULT_SCOPES,
            "state": state,
        }
    )
    return f"{login}/identity/connect/authorize?{query}"


def exchange_code(
    settings: dict[str, Any],
    credentials: dict[str, Any],
    code: str,
    redirect_uri: str,
    *,
    clock: Clock | None = None,
    timeout: float = 15.0,
) -> Tokens:
    """Redeem an authorisation code at once (it is short-lived), then learn the tenants this
    grant reaches from ``GET /connections``. ``extra["tenant_id"]`` is ``settings["tenant_id"]``
    when the grant reaches it, else the first connection; ``extra["tenants"]`` lists them all."""
    base, identity, _ = _urls(settings)
    client_secret = credentials.get("client_secret") or ""
    secrets.register(client_secret)
    now = (clock or SystemClock()).now()
    body = token_request(
        f"{identity}/connect/token",
        {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
        client_id=settings.get("client_id") or "",
        client_secret=client_secret,
        basic_auth=True,
        timeout=timeout,
    )
    access = body["access_token"]
    try:
        resp = requests.get(
            f"{base}/connections",
            headers={"Authorization": f"Bearer {access}", "Accept": "application/json"},
            timeout=timeout,
        )
    except (requests.Timeout, requests.ConnectionError) as exc:
        raise TransientError(f"GET /connections failed ({exc.__class__.__name__})") from None
    if resp.status_code != 200:
        raise TransientError(f"GET /connections answered HTTP {resp.status_code}")
    connections = parse_json(resp)
    tenants = [
        {"tenant_id": c.get("tenantId"), "name": c.get("tenantName"), "connection_id": c.get("id")}
        for c in connections
        if isinstance(c, dict)
    ]
    wanted = settings.get("tenant_id")
    ids = [t["tenant_id"] for t in tenants]
    tenant = wanted if wanted in ids else (ids[0] if ids else wanted)
    return Tokens(
        access_token=access,
        refresh_token=body.get("refresh_token"),
        expires_at=now + timedelta(seconds=int(body.get("expires_in", 1800))),
        extra={"tenant_id": tenant, "tenants": tenants},
    )


# ------------------------------------------------------------------------------------------------
# webhooks (#23): what the registry entry's ``webhooks`` names


def webhook_events(
    body: bytes, query: Mapping[str, str], received: datetime
) -> tuple[list[tuple[str | None, WebhookEvent]], int]:
    """(tenantId, event) of each followed event; an intent-to-receive request carries none.
    A category not followed is left out (not counted: a batch mixes them)."""
    from synccli import registry
    from synccli.webhooks import parse

    support = registry.get("xero").webhooks_support
    data = parse.json_body(body)
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise parse.Malformed("no events list")
    found: list[tuple[str | None, WebhookEvent]] = []
    for raw in data["events"]:
        if not isinstance(raw, dict):
            raise parse.Malformed("an event is not an object")
        stream = support.stream(str(raw.get("eventCategory", "")))
        if stream is None:
            continue
        tenant = parse.text(raw.get("tenantId"), "tenantId")
        entity = parse.text(raw.get("resourceId"), "resourceId")
        kind = parse.text(raw.get("eventType"), "eventType")
        at = parse.instant(raw.get("eventDateUtc"), "eventDateUtc")
        version = at.isoformat()
        # no event id: the same resource, change and instant is the same event
        key = f"xero:{raw['eventCategory']}:{entity}:{kind}:{version}"
        found.append((tenant, parse.event("xero", stream, entity, version, at, None, key)))
    return found, 0


def webhook_signed(target: Any, header: Callable[[str], str | None], body: bytes, now: Any) -> bool:
    """Signed with the app's webhook key (``x-xero-signature``) [Xero-OpenAPI]."""
    from synccli.webhooks import verify

    return verify.xero_signature_ok(target.webhook_key, body, header("x-xero-signature"))


def webhook_subscribe(store: Any, name: str, url: str, clock: Clock, dry_run: bool) -> Any:
    """Xero's webhooks are set up in the developer portal only: the steps, and the key the
    portal shows is stored with ``connections set NAME --webhook-key-stdin``. It writes
    nothing: a dry run is the same."""
    from synccli.store import connections as store_connections
    from synccli.webhooks.manage import Subscribed

    conn = store_connections.get_connection(store, name)
    has_key = bool(store_connections.credentials(store, conn).get("webhook_key"))
    result = Subscribed(name, "xero", url)
    result.steps = [
        "Xero webhooks are set up in the developer portal, not through the API:",
        "1. https://developer.xero.com/app/manage -> your app -> Webhooks.",
        "2. Tick Contacts and Invoices (Xero sends no webhooks for Items: products stay polled).",
        f"3. Delivery URL: {url}",
        "4. Save, then copy the Webhooks key the page shows and store it:",
        f"   synccli connections set {name} --webhook-key-stdin   (paste it; it is not echoed)"
        + ("  [a key is stored already]" if has_key else ""),
        "5. With `synccli webhooks serve` running behind your HTTPS proxy, press 'Send "
        '"Intent To Receive"\': Xero sends a signed and a badly signed request, the receiver '
        "answers 200 and 401, and the webhook turns OK.",
        "One app's webhook serves every organisation it is connected to: each event goes to the "
        "connection of its tenant (the same key stored on each).",
    ]
    return result
