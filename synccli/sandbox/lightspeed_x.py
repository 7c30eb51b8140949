"""A local simulator of the Lightspeed Retail **X-Series** API (version 2026-07), the one formerly
called Vend, faithful to the wire format of its official OpenAPI spec.

Sources, as keyed in the provider notes (``providers/lightspeed-x.md``): SPEC (the official
OpenAPI 3.0.1 file, kept in ``tests/specs/lightspeed_x_series.json``), D-AUTH, D-RT, D-SCOPE,
D-PAG, D-RL, D-REQ, D-STATE, D-S101, D-09. Every behaviour below names its source; what the
sources leave open (**unconfirmed** in the notes) is a constructor switch whose default is the
harder case for a client.

Modelled:

- OAuth 2 [D-AUTH]: ``GET /connect`` auto-approves and answers 302 to ``redirect_uri`` with
  ``code``, ``state`` and the store's ``domain_prefix``; without ``scope`` it redirects with
  ``error=access_denied`` (required since 2026-06-01 [D-SCOPE]). ``POST /api/1.0/token`` takes a
  form body only (parameters in the query string are refused since 2017 [D-AUTH]) with the
  ``authorization_code`` and ``refresh_token`` grants; the answer carries ``access_token``,
  ``token_type``, ``expires``, ``expires_in``, ``refresh_token``, ``domain_prefix`` and ``scope``
  [D-RT]. Refresh tokens **rotate**: the old one is revoked as soon as a new one is issued [D-RT].
  Personal tokens (:meth:`personal_token`) never expire and carry every scope [D-AUTH].
- Bearer auth on ``/api/2026-07/...`` [SPEC ``bearerAuth``]; a token in the query string is
  refused [D-AUTH]; a call whose scope the token lacks answers 403 [SPEC descriptions, "Requires:
  ... scope"].
- Version cursors [D-PAG]: one counter per store shared by every resource, growing with gaps on
  every change; lists take ``after``, ``before``, ``page_size`` and (products, customers, outlets,
  registers, payment types) ``deleted``; rows come in ascending version, with
  ``version: {min, max}`` (both null on an empty page) [SPEC ``Version``]. A page holds at most
  ``max_page_size`` rows (1000; the spec names no cap [D-PAG], so a larger ask is clamped).
- Products [SPEC ListProducts/GetProductByID/CreateProduct]: ``?sku=`` loads by one SKU and
  ignores every other parameter; soft deletes carry ``deleted_at`` and show only with
  ``deleted=true`` [SPEC; D-PAG]; ``POST /products`` answers ``{"data": ["<id>"]}`` and refuses a
  body with both prices [SPEC ProductCreateBody].
- Inventory [SPEC ListInventoryRecords]: ``POST /inventory`` (a read) answers a **bare array**,
  sorted **descending unless** ``sort_direction: "asc"``, ``size`` at most 5000, rows of deleted
  products only with ``include_deleted``. One record per product and outlet; the neutral stock is
  the first outlet's level. ``POST /inventory_levels`` [SPEC]: a snapshot by ``product_ids``.
- Customers [SPEC ListCustomers/CreateCustomer]: feed with ``deleted``; ``POST`` answers 201;
  ``customer_code`` generated when omitted (unconfirmed; the spec's example shows ``Tony-N4ZJ``).
- ``GET /search`` [SPEC Search]: ``type`` required, ``offset`` + ``page_size`` (clamped to 1000);
  customers by ``email`` / ``customer_code`` / names, products by ``sku`` (only lower-case values
  match [SPEC]) or repeated ``_id``, sales by ``invoice_number`` / ``customer_id``. Matching is
  a case-insensitive **substring** test by default (unconfirmed: a client compares exactly).
- Sales [SPEC CreateSale, SaleRequest; D-S101; D-STATE]: client-chosen ``id``; ``source.author_id``
  and ``state`` required; every line's product, quantity, ``pricing.price`` and ``tax.id`` +
  ``tax.amount`` (per unit) required; unknown user, register, customer, product, tax or payment
  type is a 400; a line's unit tax must be its unit price x its tax's rate (our check, within a
  cent; undocumented, Sales 101's examples are exact [D-S101]); a closed sale's payments must
  cover its total (our check); a closed or on-account sale lowers stock [D-STATE]. A return
  names the closed sale it returns (``return_for``, echoed with ``return.original_sale_id``, as
  the initReturnSale example and ``SaleReturn`` show [SPEC]); negative quantities only in a
  return, and a return's quantities only negative (our checks); it raises stock back.
  ``GET /sales/{id}`` answers 404 for an id never posted (unconfirmed: the spec lists only 200).
- Reference lists: ``/taxes`` (``No Tax`` and ``GST`` as in the spec's example), ``/outlets``,
  ``/registers``, ``/payment_types``, ``/retailer``, ``/user``, ``/users``.
- Limits [D-RL]: ``300 x registers + 50`` calls per 300 s per app and store (a fixed window on the
  limit clock, scaled by ``time_scale``); every answer carries ``X-RateLimit-Limit`` and
  ``X-RateLimit-Remaining``; over it, 429 with ``{"error": "Too Many Requests", "message": "Rate
  limiting enforced"}`` and ``Retry-After`` as an **HTTP date**.
- Faults, counters and the data generator: :mod:`synccli.sandbox.core`, :mod:`~.data`.

Switches for what the notes mark unconfirmed (defaults in brackets): ``stock_bumps_product_version``
[False: stock has its own feed, §5], ``archive_bumps_version`` [False: an archived product shows up
only in a full scan, so the sweep must find it, §10], ``list_hides_inactive`` [False, §10],
``deleted_product_get`` ["404" or "row", §10], ``repost_sale_id`` ["update" as 0.9's
create-or-update [D-09], or "conflict"], ``unique_customer_code`` [True], ``unique_sku`` [False,
§4], ``search_match`` ["contains" or "exact"], ``unknown_sale_status`` [404].

Webhooks (``/webhooks`` and the signed deliveries): :mod:`synccli.sandbox.webhook_formats`.
Not modelled: variants and families, composites, price books, the token endpoint's own
rate limit, postal-code validation, returns and PUT.
"""

from __future__ import annotations

import secrets as pysecrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from synccli.clock import Clock
from synccli.sandbox.core import Request, Response, SandboxApp, Window, json_body
from synccli.sandbox.data import (
    Customer,
    Invoice,
    Product,
    World,
    catalogue_version,
    product_revision,
)
from synccli.sandbox.webhook_formats import install_lightspeed_x

API = "/api/2026-07"
DEFAULT_PREFIX = "sandboxstore"
DEFAULT_CLIENT_ID = "synccli-x-sandbox-client"
DEFAULT_CLIENT_SECRET = "lsx-sandbox-client-secret-5d1e7b"
CENT = Decimal("0.01")
NS = uuid.UUID("6f1c6a52-6b8e-4d0e-9c59-6d1f7b0a2c11")  # the sandbox's own id namespace
WINDOW_SECONDS = 300.0  # [D-RL]
# Limits high enough never to answer 429 (a benchmark's twin sandbox, throughput runs).
NO_LIMITS: dict[str, int | None] = {"window": 10**12}
PAGE_CAP = 1000
INVENTORY_CAP = 5000  # [SPEC InventoryRequest.size maximum]
SEARCH_CAP = 1000  # [SPEC Search page_size]
# The scope each endpoint needs ("Requires: `x:y` scope" in its SPEC description).
SCOPES = {
    "products": "products:read",
    "POST products": "products:write",
    "inventory": "inventory:read",
    "inventory_levels": "inventory:read",
    "customers": "customers:read",
    "POST customers": "customers:write",
    "sales": "sales:read",
    "POST sales": "sales:write",
    "taxes": "taxes:read",
    "outlets": "outlets:read",
    "registers": "registers:read",
    "payment_types": "payment_types:read",
    "retailer": "retailer:read",
    "user": "users:read",
    "users": "users:read",
    "webhooks": "webhooks",  # [SPEC; D-SCOPE] every /webhooks call
}
ALL_SCOPES = frozenset(SCOPES.values())
SEARCH_FIELDS = {
    "customers": ("email", "customer_code", "first_name", "last_name", "company_name"),
    "products": ("sku",),
    "sales": ("invoice_number", "customer_id"),
}


def uid(*parts: str) -> str:
    return str(uuid.uuid5(NS, "/".join(parts)))


def stamp(dt: datetime) -> str:
    """A response time: UTC with an explicit offset, as the spec's examples show."""
    return dt.astimezone(UTC).replace(microsecond=0).isoformat()


def error(status: int, message: str) -> Response:
    """The only error body the spec shapes is ``{"error": "<text>"}`` [SPEC webhooks]."""
    return Response(status, {"error": message})


def num(value: Decimal) -> float:
    return float(value)


class _Fail(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.body)
        self.response = response


def _bad(message: str) -> _Fail:
    return _Fail(error(400, message))


def _int_param(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(str(raw))
    except ValueError:
        raise _bad(f"{name} must be an integer") from None
    if value < 0:
        raise _bad(f"{name} must not be negative")
    return value


def _bool_param(params: dict[str, str], name: str) -> bool:
    raw = params.get(name)
    if raw in (None, ""):
        return False
    if str(raw).lower() not in ("true", "false", "1", "0"):
        raise _bad(f"{name} must be a boolean")
    return str(raw).lower() in ("true", "1")


def _money(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad(f"{what} must be a number")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise _bad(f"{what} must be a number") from None
    if not result.is_finite():
        raise _bad(f"{what} must be a number")
    return result


def _uuid(value: Any, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, AttributeError):
        raise _bad(f"{what} must be a UUID") from None


@dataclass
class _Token:
    client_id: str
    scopes: frozenset[str]
    expires_at: datetime | None  # None: a personal token
    revoked: bool = False


@dataclass
class _Refresh:
    client_id: str
    scopes: frozenset[str]
    state: str = "active"  # active | revoked


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scopes: frozenset[str]
    expires_at: datetime
    used: bool = False


@dataclass
class _Row:
    """One versioned record: its version and, once deleted, when."""

    version: int
    fingerprint: Any = None
    revision: int | None = None
    deleted_at: datetime | None = None
    ref: Any = None  # the neutral record (kept after the world drops it)
    extra: dict[str, Any] = field(default_factory=dict)


class LightspeedXSandbox(SandboxApp):
    """Lightspeed Retail X-Series 2026-07, see the module docstring."""

    provider = "lightspeed-x"

    def __init__(
        self,
        *,
        seed: int = 42,
        products: int = 50,
        customers: int = 30,
        clock: Clock | None = None,
        time_scale: float = 1.0,
        faults: str | None = None,
        domain_prefix: str = DEFAULT_PREFIX,
        registers: int = 1,
        outlets: int = 2,
        token_ttl: int = 604800,  # the D-RT example's expires_in (7 days)
        limits: dict[str, Any] | None = None,
        stock_bumps_product_version: bool = False,
        archive_bumps_version: bool = False,
        list_hides_inactive: bool = False,
        deleted_product_get: str = "404",
        repost_sale_id: str = "update",
        unique_customer_code: bool = True,
        unique_sku: bool = False,
        search_match: str = "contains",
        unknown_sale_status: int = 404,
        max_page_size: int = PAGE_CAP,
        **switches: Any,
    ) -> None:
        super().__init__(seed=seed, clock=clock, time_scale=time_scale, faults=faults)
        if switches:
            raise TypeError(f"unknown LightspeedXSandbox switches: {', '.join(sorted(switches))}")
        if deleted_product_get not in ("404", "row") or repost_sale_id not in (
            "update",
            "conflict",
        ):
            raise ValueError(
                "deleted_product_get is '404' or 'row'; repost_sale_id 'update' or 'conflict'"
            )
        self.tenant = domain_prefix
        self.domain_prefix = domain_prefix
        self.token_ttl = token_ttl
        self.stock_bumps_product_version = stock_bumps_product_version
        self.archive_bumps_version = archive_bumps_version
        self.list_hides_inactive = list_hides_inactive
        self.deleted_product_get = deleted_product_get
        self.repost_sale_id = repost_sale_id
        self.unique_customer_code = unique_customer_code
        self.unique_sku = unique_sku
        self.search_match = search_match
        self.unknown_sale_status = unknown_sale_status
        self.max_page_size = max_page_size
        self.registers = max(1, registers)
        # [D-RL] 300 per register + 50 per 5 minutes; ``window`` overrides it for tests
        self.limits: dict[str, Any] = {"window": 300 * self.registers + 50}
        self.limits.update(limits or {})
        self.clients: dict[str, str] = {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET}
        self.redirects: dict[str, list[str] | None] = {}
        self.codes: dict[str, _Code] = {}
        self.tokens: dict[str, _Token] = {}
        self.refresh_tokens: dict[str, _Refresh] = {}
        self.windows: dict[str, Window] = {}
        self.token_calls = 0
        self.log: list[tuple[str, str, str, bytes]] = []  # (method, path, query, body) of API calls
        self.answers: list[tuple[Request, str, Response]] = []  # for spec checks in tests
        self.keep_answers = False
        self._version = 3_000_000
        self._products: dict[str, _Row] = {}
        self._stock: dict[str, _Row] = {}  # product id -> first outlet's inventory record
        self._customers: dict[str, _Row] = {}
        self._sales: dict[str, _Row] = {}
        self._synced_at: int | None = None
        self.started = self.clock.now()
        self._reference(max(1, outlets))
        world = self.catalogue.tenant(self.tenant)
        self.catalogue.gen.populate(world, products, customers)
        self._sync()
        self._routes()

    # reference data -----------------------------------------------------------------------
    def _reference(self, outlets: int) -> None:
        """The store's fixed lists, shaped as the spec's examples of each list."""
        at = stamp(self.started - timedelta(days=400))
        self.no_tax_id, self.gst_id = uid("tax", "No Tax"), uid("tax", "GST")
        self.taxes: list[dict[str, Any]] = [
            {"name": "No Tax", "id": self.no_tax_id, "rate": Decimal(0), "is_default": False},
            {"name": "GST", "id": self.gst_id, "rate": Decimal("0.15"), "is_default": True},
        ]
        self.outlets: list[dict[str, Any]] = [
            {"id": uid("outlet", str(i)), "name": "Main Outlet" if i == 0 else f"Outlet {i + 1}"}
            for i in range(outlets)
        ]
        self.register_rows: list[dict[str, Any]] = [
            {
                "id": uid("register", str(i)),
                "name": "Main Register" if i == 0 else f"Register {i + 1}",
                "outlet_id": self.outlets[0]["id"],
                "invoice_prefix": "MR-" if i == 0 else f"R{i + 1}-",
                "invoice_sequence": 1000,
            }
            for i in range(self.registers)
        ]
        self.users: list[dict[str, Any]] = [
            {
                "id": uid("user", "admin"),
                "username": "admin",
                "display_name": "API User",
                "account_type": "admin",
                "is_primary_user": True,
            },
            {
                "id": uid("user", "cashier"),
                "username": "cashier",
                "display_name": "Jane Cashier",
                "account_type": "cashier",
                "is_primary_user": False,
            },
        ]
        self.payment_types: list[dict[str, Any]] = [
            {"id": uid("payment", "cash"), "name": "Cash", "type_id": 1},
            {"id": uid("payment", "card"), "name": "Credit Card", "type_id": 3},
        ]
        self.reference_at = at
        self.reference_version = self._bump()

    @property
    def outlet_id(self) -> str:
        return str(self.outlets[0]["id"])

    @property
    def register_id(self) -> str:
        return str(self.register_rows[0]["id"])

    @property
    def user_id(self) -> str:
        return str(self.users[0]["id"])

    # test helpers -------------------------------------------------------------------------
    def add_client(
        self, client_id: str, client_secret: str, redirect_uris: list[str] | None = None
    ) -> dict[str, Any]:
        """Register an app; with ``redirect_uris`` the authorize step accepts only those."""
        self.clients[client_id] = client_secret
        self.redirects[client_id] = redirect_uris
        return {"client_id": client_id, "client_secret": client_secret}

    def world(self) -> World:
        return self.catalogue.tenant(self.tenant)

    def personal_token(self) -> str:
        """A token the retailer made in the store's setup [D-AUTH]: every scope, no expiry."""
        with self.lock:
            token = "lsxp_" + pysecrets.token_urlsafe(32)
            self.tokens[token] = _Token(DEFAULT_CLIENT_ID, ALL_SCOPES, None)
            return token

    def issue_tokens(
        self, scopes: frozenset[str] = ALL_SCOPES, ttl: int | None = None
    ) -> dict[str, Any]:
        """Skip the browser: a token answer as the token endpoint gives it."""
        with self.lock:
            return self._issue(DEFAULT_CLIENT_ID, scopes, ttl)

    def credentials(self, tenant: str | None = None) -> dict[str, Any]:
        """What a connection needs: client id/secret, the store's prefix and a token pair."""
        tokens = self.issue_tokens()
        return {
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": self.clients[DEFAULT_CLIENT_ID],
            "domain_prefix": self.domain_prefix,
            "outlet_id": self.outlet_id,
            "register_id": self.register_id,
            "user_id": self.user_id,
            "payment_type_id": self.payment_types[0]["id"],
            "no_tax_id": self.no_tax_id,
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "expires_in": tokens["expires_in"],
        }

    def version_of(self, product_id: str) -> int | None:
        with self.lock:
            self._sync()
            row = self._products.get(product_id)
            return row.version if row else None

    def delete_product(self, product_id: str) -> None:
        """A product deleted in the store: soft-deleted, its version moves [D-PAG; SPEC]."""
        with self.lock:
            world = self.world()
            if product_id in world.products:
                del world.products[product_id]
                world.deleted_products.add(product_id)
            self._sync()

    # versions -----------------------------------------------------------------------------
    def _bump(self) -> int:
        """The store's next version: one counter for every resource, with gaps [D-PAG]."""
        self._version += self.catalogue.gen.rng.randint(2, 9)
        return self._version

    def _product_fingerprint(self, p: Product) -> tuple[Any, ...]:
        return (
            p.code,
            p.name,
            p.description,
            p.price,
            p.archived if self.archive_bumps_version else None,
            p.stock if self.stock_bumps_product_version else None,
        )

    def _sync(self) -> None:
        """Give every record changed in the neutral model since the last look a new version.

        The neutral model moves timestamps, not versions: a change is noticed here, before any
        answer, so it is numbered before it can be listed; its number is above every one served
        before, as a write's would be."""
        now = self.clock.now()
        world = self.world()
        if self._synced_at != catalogue_version():
            self._synced_at = catalogue_version()
            order = sorted(world.products.values(), key=lambda p: (p.updated_at, p.seq))
            for p in order:
                row = self._products.get(p.id)
                revision = product_revision(p)
                if row is not None and row.revision == revision and row.deleted_at is None:
                    continue
                fp = self._product_fingerprint(p)
                if row is None or row.fingerprint != fp or row.deleted_at is not None:
                    self._products[p.id] = _Row(self._bump(), fp, revision, None, p)
                else:
                    row.revision, row.ref = revision, p
                stock = self._stock.get(p.id)
                if stock is None or stock.fingerprint != p.stock:
                    self._stock[p.id] = _Row(self._bump(), p.stock, ref=p)
            for pid, row in self._products.items():
                if row.deleted_at is None and pid not in world.products:
                    row.version, row.deleted_at = self._bump(), now
                    self._stock[pid].version, self._stock[pid].deleted_at = self._bump(), now
        for c in world.customers.values():
            fp = (c.first_name, c.last_name, c.name, c.email, c.account_number, c.archived)
            crow = self._customers.get(c.id)
            if crow is None or crow.fingerprint != fp:
                deleted = now if c.archived else None
                self._customers[c.id] = _Row(self._bump(), fp, None, deleted, c)

    # routing ------------------------------------------------------------------------------
    def _routes(self) -> None:
        # named as the other simulators name theirs: token calls are not API calls
        self.route("GET", "/connect", "oauth.connect", self.h_connect)
        self.route("POST", "/api/1.0/token", "oauth.token", self.h_token)
        for name in (
            "products",
            "customers",
            "sales",
            "taxes",
            "outlets",
            "registers",
            "payment_types",
            "users",
        ):
            self.route("GET", f"{API}/{name}", name, self._guard(self.h_list, name))
        self.route(
            "GET",
            f"{API}/products/(?P<rid>[^/]+)",
            "products/{id}",
            self._guard(self.h_get, "products"),
        )
        self.route(
            "GET",
            f"{API}/customers/(?P<rid>[^/]+)",
            "customers/{id}",
            self._guard(self.h_get, "customers"),
        )
        self.route(
            "GET", f"{API}/sales/(?P<rid>[^/]+)", "sales/{id}", self._guard(self.h_get, "sales")
        )
        self.route("POST", f"{API}/products", "POST products", self._guard(self.h_post_product))
        self.route("POST", f"{API}/customers", "POST customers", self._guard(self.h_post_customer))
        self.route("POST", f"{API}/sales", "POST sales", self._guard(self.h_post_sale))
        self.route("POST", f"{API}/inventory", "inventory", self._guard(self.h_inventory))
        self.route("GET", f"{API}/search", "search", self._guard(self.h_search))
        levels = self._guard(self.h_inventory_levels)
        self.route("POST", f"{API}/inventory_levels", "inventory_levels", levels)
        self.route("GET", f"{API}/retailer", "retailer", self._guard(self.h_retailer))
        self.route("GET", f"{API}/user", "user", self._guard(self.h_user))
        self.webhooks = install_lightspeed_x(self, API)

    @staticmethod
    def _guard(handler: Any, *bound: str) -> Any:
        def run(req: Request, **groups: str) -> Response:
            try:
                return handler(req, *bound, **groups)
            except _Fail as fail:
                return fail.response

        return run

    def before(self, req: Request, endpoint: str) -> Response | None:
        if endpoint.startswith("oauth."):
            return None
        with self.lock:
            self.log.append((req.method, req.path, req.query_string, req.body))
            if "access_token=" in req.query_string:
                return error(400, "API tokens in the URL are not accepted")  # [D-AUTH] 2017
            auth = req.header("authorization") or ""
            raw = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            token = self.tokens.get(raw)
            now = self.clock.now()
            if token is None or token.revoked or (token.expires_at and now >= token.expires_at):
                return error(401, "Unauthorized")
            scope = SCOPES.get(endpoint.split("/")[0], SCOPES.get(endpoint))
            if scope and scope not in token.scopes:
                return error(403, f"missing scope {scope}")
            key = raw if token.expires_at is None else token.client_id
            window = self.windows.setdefault(
                key, Window(int(self.limits["window"]), WINDOW_SECONDS)
            )
            t = self.limit_time()
            if not window.take(t):
                wait = window.retry_after(t) / self.time_scale
                retry_at = now + timedelta(seconds=max(1, int(wait) + 1))
                resp = Response(
                    429, {"error": "Too Many Requests", "message": "Rate limiting enforced"}
                )
                resp.headers["Retry-After"] = format_datetime(retry_at, usegmt=True)
                resp.headers.update(self._limit_headers(window, t))
                return resp
            req.environ["lsx.window"] = (window, t)
            self._sync()
        return None

    def _limit_headers(self, window: Window, t: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(window.limit),
            "X-RateLimit-Remaining": str(window.remaining(t)),
        }

    def after(self, req: Request, endpoint: str, resp: Response) -> None:
        held = req.environ.get("lsx.window")
        if held is not None:
            resp.headers.update(self._limit_headers(*held))
        if self.keep_answers:
            self.answers.append((req, endpoint, resp))

    # OAuth --------------------------------------------------------------------------------
    def _issue(
        self, client_id: str, scopes: frozenset[str], ttl: int | None = None
    ) -> dict[str, Any]:
        now = self.clock.now()
        ttl = self.token_ttl if ttl is None else ttl
        access = "lsxa_" + pysecrets.token_urlsafe(32)
        refresh = "lsxr_" + pysecrets.token_urlsafe(32)
        self.tokens[access] = _Token(client_id, scopes, now + timedelta(seconds=ttl))
        self.refresh_tokens[refresh] = _Refresh(client_id, scopes)
        return {  # [D-RT] the token answer's fields
            "access_token": access,
            "token_type": "Bearer",
            "expires": int(now.timestamp()) + ttl,
            "expires_in": ttl,
            "refresh_token": refresh,
            "domain_prefix": self.domain_prefix,
            "scope": " ".join(sorted(scopes)),
        }

    def h_connect(self, req: Request) -> Response:
        q = req.query
        if q.get("client_id") not in self.clients or q.get("response_type") != "code":
            return error(400, "invalid_request")
        redirect = q.get("redirect_uri") or ""
        allowed = self.redirects.get(q["client_id"])
        if not redirect or (allowed is not None and redirect not in allowed):
            return error(400, "invalid_request: redirect_uri")
        params: dict[str, str] = {}
        words = frozenset((q.get("scope") or "").split())
        if not words or not words <= ALL_SCOPES | {"webhooks"}:
            params["error"] = "access_denied"  # [D-SCOPE] no scope since 2026-06-01
        else:
            code = "lsxc_" + pysecrets.token_hex(20)
            with self.lock:
                self.codes[code] = _Code(
                    q["client_id"], redirect, words, self.clock.now() + timedelta(minutes=10)
                )
            params.update(code=code, domain_prefix=self.domain_prefix)
        if "state" in q:
            params["state"] = q["state"]
        sep = "&" if "?" in redirect else "?"
        return Response(302, "", {"Location": f"{redirect}{sep}{urlencode(params)}"}, "text/html")

    def h_token(self, req: Request) -> Response:
        self.token_calls += 1
        if req.query_string:
            return error(400, "invalid_request: parameters belong in the body")  # [D-AUTH] 2017
        if "x-www-form-urlencoded" not in (req.header("content-type") or ""):
            return error(400, "invalid_request: form-encoded body expected")  # [D-REQ]
        form = req.form()
        if self.clients.get(form.get("client_id", "")) != form.get("client_secret"):
            return error(401, "invalid_client")
        with self.lock:
            if form.get("grant_type") == "authorization_code":
                code = self.codes.get(form.get("code", ""))
                if (
                    code is None
                    or code.used
                    or self.clock.now() >= code.expires_at
                    or code.client_id != form["client_id"]
                    or code.redirect_uri != form.get("redirect_uri")
                ):
                    return error(400, "invalid_grant")
                code.used = True
                return Response(200, self._issue(code.client_id, code.scopes))
            if form.get("grant_type") == "refresh_token":
                old = self.refresh_tokens.get(form.get("refresh_token", ""))
                if old is None or old.state != "active" or old.client_id != form["client_id"]:
                    return error(400, "invalid_grant")
                old.state = "revoked"  # [D-RT] rotation: the old one dies as the new one is born
                return Response(200, self._issue(old.client_id, old.scopes))
        return error(400, "unsupported_grant_type")

    # rendering ----------------------------------------------------------------------------
    def _product(self, row: _Row) -> dict[str, Any]:
        p: Product = row.ref
        price = p.price.quantize(CENT, ROUND_HALF_UP)
        return {  # every field Product requires [SPEC Product]
            "id": p.id,
            "handle": p.code.lower().replace(" ", "-") or p.id,
            "name": p.name,
            "description": p.description,
            "sku": p.code,
            "active": not p.archived,
            "is_composite": False,
            "has_inventory": p.tracked,
            "has_variants": False,
            "variant_parent_id": None,
            "family_id": uid("family", p.id),
            "variant_name": None,
            "variant_options": [],
            "categories": [],
            "tag_ids": [],
            "images": [],
            "skuImages": [],
            "attributes": [],
            "product_codes": [],
            "product_suppliers": [],
            "packaging": {"breaks_into": [], "made_from": []},
            "customizations": [],
            "outlet_taxes": [],
            "price_excluding_tax": num(price),
            "price_including_tax": num((price * Decimal("1.15")).quantize(CENT, ROUND_HALF_UP)),
            "supply_price": 0.0,
            "brand_id": None,
            "supplier_id": None,
            "product_type_id": None,
            "source": "USER",
            "source_id": None,
            "source_variant_id": None,
            "created_at": stamp(p.created_at),
            "updated_at": stamp(p.updated_at),
            "deleted_at": stamp(row.deleted_at) if row.deleted_at else None,
            "version": row.version,
        }

    def _inventory(self, pid: str, row: _Row, outlet: int) -> dict[str, Any]:
        p: Product = row.ref
        level = p.stock if outlet == 0 else Decimal(0)
        return {  # [SPEC Inventory]
            "id": uid("inventory", pid, str(outlet)),
            "product_id": pid,
            "outlet_id": self.outlets[outlet]["id"],
            "current_inventory_level": num(level),
            "average_cost": None,
            "quantity_to_procure": 0.0,
            "reorder_point": None,
            "reorder_amount": None,
            "reorder_target": None,
            "reorder_method": None,
            "deleted_at": stamp(row.deleted_at) if row.deleted_at else None,
            "version": row.version if outlet == 0 else row.version - 1,
        }

    def _customer(self, row: _Row) -> dict[str, Any]:
        c: Customer = row.ref
        nulls = (
            "company_name",
            "phone",
            "mobile",
            "fax",
            "note",
            "website",
            "twitter",
            "date_of_birth",
            "gender",
            "tax_id",
            "on_account_limit",
        )
        body: dict[str, Any] = {k: None for k in nulls}
        body.update(
            {  # [SPEC Customer]
                "id": c.id,
                "first_name": c.first_name,
                "last_name": c.last_name,
                "name": c.name,
                "email": c.email,
                "customer_code": c.account_number or c.code,
                "customer_group_id": uid("group", "all"),
                "balance": 0.0,
                "loyalty_balance": 0.0,
                "year_to_date": 0.0,
                "do_not_email": False,
                "enable_loyalty": False,
                "enable_promotional_sms": False,
                "created_at": stamp(c.created_at),
                "updated_at": stamp(c.updated_at),
                "deleted_at": stamp(row.deleted_at) if row.deleted_at else None,
                "version": row.version,
            }
        )
        return body

    # lists --------------------------------------------------------------------------------
    def _feed(self, name: str, params: dict[str, str]) -> list[tuple[int, Any]]:
        """(version, row) of every record of a list, deleted ones marked, in version order."""
        show_deleted = _bool_param(params, "deleted")
        rows: list[tuple[int, Any]] = []
        if name == "products":
            for row in self._products.values():
                if row.deleted_at and not show_deleted:
                    continue
                if self.list_hides_inactive and row.ref.archived:
                    continue
                rows.append((row.version, row))
        elif name == "customers":
            rows = [
                (r.version, r) for r in self._customers.values() if show_deleted or not r.deleted_at
            ]
        elif name == "sales":
            rows = [(r.version, r) for r in self._sales.values()]
        else:
            rows = [(self.reference_version, item) for item in self._reference_rows(name)]
        rows.sort(key=lambda pair: pair[0])
        return rows

    def _reference_rows(self, name: str) -> list[dict[str, Any]]:
        """The fixed lists, with the fields each schema requires [SPEC Tax, Outlet, Register,
        PaymentType]."""
        common = {"deleted_at": None, "version": self.reference_version}
        if name == "taxes":
            return [
                dict(common, id=t["id"], name=t["name"], display_name=t["name"],
                     is_default=t["is_default"], rates=[dict(id=uid("rate", t["name"]),
                     name=t["name"], display_name=t["name"], rate=num(t["rate"]))])
                for t in self.taxes
            ]  # fmt: skip
        if name == "outlets":
            shown = dict(currency="NZD", currency_symbol="$", display_prices="inclusive")
            return [
                dict(common, **shown, id=o["id"], name=o["name"], default_tax_id=self.gst_id,
                     time_zone="Pacific/Auckland", attributes=[])
                for o in self.outlets
            ]  # fmt: skip
        if name == "registers":
            return [
                dict(common, id=r["id"], name=r["name"], outlet_id=r["outlet_id"],
                     invoice_prefix=r["invoice_prefix"], invoice_suffix="", is_open=True,
                     invoice_sequence=float(r["invoice_sequence"]))
                for r in self.register_rows
            ]  # fmt: skip
        if name == "payment_types":
            return [
                dict(common, id=p["id"], name=p["name"], type_id=p["type_id"], disabled=False,
                     internal=False)
                for p in self.payment_types
            ]  # fmt: skip
        return [self._user(u) for u in self.users] if name == "users" else []

    def _user(self, u: dict[str, Any]) -> dict[str, Any]:
        return {
            **u,
            "created_at": self.reference_at,
            "updated_at": self.reference_at,
            "deleted_at": None,
            "email": f"{u['username']}@sandbox.example",
            "enabled": True,
            "version": self.reference_version,
        }

    def _render(self, name: str, row: Any) -> dict[str, Any]:
        if name == "products":
            return self._product(row)
        if name == "customers":
            return self._customer(row)
        if name == "sales":
            return dict(row.ref.body)
        return dict(row)

    def h_list(self, req: Request, name: str) -> Response:
        params = req.query
        if name == "products" and params.get("sku") is not None:
            # [SPEC] "every other param is ignored when sku is present"
            sku = params["sku"]
            found = [
                r for r in self._products.values() if r.deleted_at is None and r.ref.code == sku
            ]
            rows = sorted(found, key=lambda r: r.version)
            return self._page([self._product(r) for r in rows])
        after = _int_param(params, "after") or 0
        before = _int_param(params, "before")
        size = _int_param(params, "page_size")
        size = min(size or self.max_page_size, self.max_page_size)
        picked: list[dict[str, Any]] = []
        for version, row in self._feed(name, params):
            if version <= after or (before is not None and version >= before):
                continue
            picked.append(self._render(name, row))
            if len(picked) >= size:
                break
        if name == "taxes":
            return Response(200, {"data": picked})  # TaxCollection has no version [SPEC]
        return self._page(picked)

    @staticmethod
    def _page(rows: list[dict[str, Any]]) -> Response:
        versions = [r["version"] for r in rows if isinstance(r.get("version"), int)]
        span = (
            {"min": min(versions), "max": max(versions)} if versions else {"min": None, "max": None}
        )
        return Response(200, {"data": rows, "version": span})  # [SPEC *Collection; D-PAG]

    def h_get(self, req: Request, name: str, rid: str) -> Response:
        if name == "products":
            row = self._products.get(rid)
            if row is None or (row.deleted_at and self.deleted_product_get == "404"):
                return error(404, "Product not found")
            return Response(200, {"data": self._product(row)})
        if name == "customers":
            crow = self._customers.get(rid)
            if crow is None:
                return error(404, "Customer not found")
            return Response(200, {"data": self._customer(crow)})
        srow = self._sales.get(rid)
        if srow is None:
            return error(self.unknown_sale_status, "Sale not found")
        return Response(200, {"data": dict(srow.ref.body)})

    def h_retailer(self, req: Request) -> Response:
        return Response(
            200,
            {
                "data": {  # [SPEC Retailer]
                    "id": uid("retailer", self.domain_prefix),
                    "name": "Sandbox Retail X",
                    "domain_prefix": self.domain_prefix,
                    "tax_exclusive": True,
                    "no_tax_group_id": self.no_tax_id,
                    "discount_product_id": uid("product", "discount"),
                    "timezone": "Pacific/Auckland",
                    "currency": {"code": "NZD", "symbol": "$"},
                    "country": "NZ",
                    "created_at": self.reference_at,
                }
            },
        )

    def h_user(self, req: Request) -> Response:
        user = self._user(self.users[0])
        return Response(200, {"data": user})  # an object, as the schema says [SPEC UserResponse]

    # inventory ----------------------------------------------------------------------------
    def h_inventory(self, req: Request) -> Response:
        body = json_body(req)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise _bad("the body must be an object")
        known = {
            "after",
            "before",
            "size",
            "sort_direction",
            "product_id",
            "variants",
            "include_deleted",
        }
        unknown = set(body) - known
        if unknown:
            raise _bad(f"unknown field {sorted(unknown)[0]}")
        for name in ("after", "before", "size"):
            if name in body and (isinstance(body[name], bool) or not isinstance(body[name], int)):
                raise _bad(f"{name} must be an integer")
        size = int(body.get("size") or 1000)  # [SPEC] default 1000, at most 5000
        if not 1 <= size <= INVENTORY_CAP:
            raise _bad(f"size must be between 1 and {INVENTORY_CAP}")
        direction = body.get("sort_direction", "desc")  # [SPEC] desc unless told
        if direction not in ("asc", "desc"):
            raise _bad("sort_direction must be asc or desc")
        after, before = int(body.get("after") or 0), body.get("before")
        deleted = body.get("include_deleted") is True
        only = body.get("product_id")
        records: list[dict[str, Any]] = []
        for pid, row in self._stock.items():
            if (row.deleted_at and not deleted) or (only and pid != only):
                continue
            for outlet in range(len(self.outlets)):
                rec = self._inventory(pid, row, outlet)
                if rec["version"] > after and (before is None or rec["version"] < before):
                    records.append(rec)
        records.sort(key=lambda r: r["version"], reverse=direction == "desc")
        return Response(200, records[:size])  # a bare array [SPEC]

    def h_inventory_levels(self, req: Request) -> Response:
        """A snapshot of levels [SPEC ListInventoryLevels]: a bare array of rows by location,
        offset + size (at most 10,000), ``product_ids`` at most 1000, inactive products only
        with ``include_inactive``, deleted ones never."""
        body = json_body(req) or {}
        if not isinstance(body, dict):
            raise _bad("the body must be an object")
        ids = body.get("product_ids")
        if ids is not None and (not isinstance(ids, list) or len(ids) > 1000):
            raise _bad("product_ids must be a list of at most 1000 ids")
        size, offset = body.get("size", 100), body.get("offset", 0)
        if not isinstance(size, int) or not 1 <= size <= 10000 or not isinstance(offset, int):
            raise _bad("size must be 1 to 10000, offset an integer")
        wanted = set(ids or [])
        rows = []
        for pid, row in sorted(self._stock.items(), key=lambda pair: pair[1].version):
            p: Product = row.ref
            hidden = p.archived and body.get("include_inactive") is not True
            if row.deleted_at or hidden or (wanted and pid not in wanted):
                continue
            for outlet in range(len(self.outlets)):
                rec = self._inventory(pid, row, outlet)
                rows.append(
                    {
                        "product_id": pid,
                        "location_id": rec["outlet_id"],
                        "name": p.name,
                        "current_inventory_level": rec["current_inventory_level"],
                    }
                )
        return Response(200, rows[offset : offset + size])

    # search -------------------------------------------------------------------------------
    def _matches(self, have: Any, want: str) -> bool:
        if have is None:
            return False
        text = str(have)
        if self.search_match == "exact":
            return text.casefold() == want.casefold()
        return want.casefold() in text.casefold()

    def h_search(self, req: Request) -> Response:
        params = req.query
        kind = params.get("type")
        if kind not in SEARCH_FIELDS:
            raise _bad("type is required: products, customers or sales")
        offset = _int_param(params, "offset") or 0
        size = min(_int_param(params, "page_size") or 100, SEARCH_CAP)  # clamped [SPEC]
        wanted = {k: v for k, v in params.items() if k in SEARCH_FIELDS[kind]}
        deleted = _bool_param(params, "deleted")
        rows: list[dict[str, Any]] = []
        if kind == "customers":
            for crow in sorted(self._customers.values(), key=lambda r: r.version):
                if crow.deleted_at and not deleted:
                    continue
                rendered = self._customer(crow)
                if all(self._matches(rendered.get(k), v) for k, v in wanted.items()):
                    rows.append(rendered)
        elif kind == "products":
            # ``_id`` may come several times, as ``sku`` may [SPEC Search] (unconfirmed for it)
            ids = {v for k, v in parse_qsl(req.query_string) if k == "_id"}
            for prow in sorted(self._products.values(), key=lambda r: r.version):
                if (prow.deleted_at and not deleted) or (ids and prow.ref.id not in ids):
                    continue
                sku = wanted.get("sku")
                # [SPEC] SKU values must be lower-case: the index holds them folded
                if sku is not None and (
                    sku != sku.lower() or not self._matches(prow.ref.code.lower(), sku)
                ):
                    continue
                rows.append(self._product(prow))
        else:
            for srow in sorted(self._sales.values(), key=lambda r: r.version):
                body = srow.ref.body
                if all(self._matches(body.get(k), v) for k, v in wanted.items()):
                    rows.append(dict(body))
        return Response(200, {"data": rows[offset : offset + size]})

    # writes -------------------------------------------------------------------------------
    def h_post_product(self, req: Request) -> Response:
        body = json_body(req)
        if not isinstance(body, dict):
            raise _bad("the body must be an object")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _bad("name is required")  # [SPEC ProductCreateBody.required]
        if "price_excluding_tax" in body and "price_including_tax" in body:
            raise _bad("send one of price_excluding_tax and price_including_tax")  # [SPEC]
        sku = body.get("sku")
        if sku is not None and not isinstance(sku, str):
            raise _bad("sku must be a string")
        world = self.world()
        if (
            sku
            and self.unique_sku
            and any(r.ref.code == sku for r in self._products.values() if r.deleted_at is None)
        ):
            return error(409, f"sku {sku} is already in use")
        price = Decimal(0)
        if "price_excluding_tax" in body:
            price = _money(body["price_excluding_tax"], "price_excluding_tax")
        elif "price_including_tax" in body:
            price = _money(body["price_including_tax"], "price_including_tax") / Decimal("1.15")
        for key in ("is_active",):
            if key in body and not isinstance(body[key], bool):
                raise _bad(f"{key} must be a boolean")
        made = self.catalogue.gen.add_product(
            world, code=sku or "", name=name, price=price.quantize(CENT, ROUND_HALF_UP)
        )
        made.description = str(body.get("description") or name)
        made.stock = Decimal(0)
        if body.get("is_active") is False:
            made.archived = True
        self.record_write("product", made.id, body, True)
        self._sync()
        return Response(200, {"data": [made.id]})  # [SPEC CreateProduct: an array of ids]

    def h_post_customer(self, req: Request) -> Response:
        body = json_body(req)
        if not isinstance(body, dict):
            raise _bad("the body must be an object")
        for key in ("first_name", "last_name"):  # required, nullable [SPEC CustomerBase]
            if key not in body:
                raise _bad(f"{key} is required")
            if body[key] is not None and not isinstance(body[key], str):
                raise _bad(f"{key} must be a string")
        email, code = body.get("email"), body.get("customer_code")
        if email is not None and (not isinstance(email, str) or "@" not in email):
            raise _bad("email is not an email address")
        if code is not None and (not isinstance(code, str) or not code.strip()):
            raise _bad("customer_code must be a non-empty string")
        world = self.world()
        if (
            code
            and self.unique_customer_code
            and any(c.account_number == code for c in world.customers.values())
        ):
            return error(409, f"customer_code {code} is already in use")
        first, last = body.get("first_name") or "", body.get("last_name") or ""
        made = self.catalogue.gen.add_customer(
            world, first=first or "-", last=last or "-", email=email or "x@x", account_number=code
        )
        made.first_name, made.last_name = first, last
        made.name = f"{first} {last}".strip() or str(body.get("company_name") or "")
        made.email = email
        if not code:  # generated as the spec's example shows it (``Tony-N4ZJ``)
            made.account_number = f"{(first or last or 'C')[:12]}-{pysecrets.token_hex(2).upper()}"
        self.record_write("customer", made.id, body, True)
        self._sync()
        return Response(201, {"data": self._customer(self._customers[made.id])})

    def h_post_sale(self, req: Request) -> Response:
        body = json_body(req)
        if not isinstance(body, dict):
            raise _bad("the body must be an object")
        sale_id = _uuid(body["id"], "id") if "id" in body else str(uuid.uuid4())
        existing = self._sales.get(sale_id)
        if existing is not None and self.repost_sale_id == "conflict":
            return error(409, f"sale {sale_id} already exists")
        sale, lines, total = self._check_sale(body)
        now = self.clock.now()
        if existing is None:
            register = next(r for r in self.register_rows if r["id"] == sale["register_id"])
            register["invoice_sequence"] += 1
            number = (
                body.get("invoice_number")
                or f"{register['invoice_prefix']}{register['invoice_sequence']}"
            )
            created = now
        else:
            number, created = existing.ref.body["invoice_number"], existing.ref.created_at
        rendered = self._sale_body(sale_id, sale, body, lines, number, created, now)
        lowers = body["state"] == "closed" or "onaccount" in (body.get("attributes") or [])
        if lowers and existing is None:  # [D-STATE] a closed or on-account sale lowers stock
            world = self.world()
            for line in lines:
                p = world.products.get(line["product_id"])
                if p is not None:
                    p.stock -= line["quantity"]
                    p.stock_updated_at = now
        version = self._bump()
        rendered["_metadata"] = {"version": version}
        # the neutral number is the shop's: the order's id in its system (``source.id``)
        ours = str(body["source"].get("id") or number)
        invoice = Invoice(
            sale_id, ours, body.get("customer_id") or "", total, rendered, created, now
        )
        self.world().invoices[sale_id] = invoice
        self._sales[sale_id] = _Row(version, ref=invoice)
        self.record_write("sale", sale_id, body, existing is None)
        self._sync()
        return Response(200, {"data": rendered})  # [SPEC SaleCreateResponse]

    def _check_sale(
        self, body: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]], Decimal]:
        """The references and sums of a sale body [SPEC SaleRequest; D-S101], or a 400."""
        source = body.get("source")
        if not isinstance(source, dict) or not source.get("author_id"):
            raise _bad("source.author_id is required")
        if body.get("state") not in ("parked", "pending", "voided", "closed"):
            raise _bad("state must be parked, pending, voided or closed")
        attributes = body.get("attributes") or []
        if {"onaccount", "layby"} <= set(attributes) or {"pickup", "delivery"} <= set(attributes):
            raise _bad("attributes exclude each other")  # [D-STATE]
        if source["author_id"] not in {u["id"] for u in self.users}:
            raise _bad(f"unknown user {source['author_id']}")
        register = source.get("register_id") or self.register_id
        if register not in {r["id"] for r in self.register_rows}:
            raise _bad(f"unknown register {register}")
        customer = body.get("customer_id")
        if customer is not None:
            row = self._customers.get(str(customer))
            if row is None or row.deleted_at:
                raise _bad(f"unknown customer {customer}")
        lines = [
            self._check_line(n, item) for n, item in enumerate(body.get("line_items") or [], 1)
        ]
        if not lines:
            raise _bad("line_items must hold at least one line")
        original = self._sales.get(str(body.get("return_for"))) if "return_for" in body else None
        if "return_for" in body and (original is None or original.ref.body["state"] != "closed"):
            raise _bad(f"return_for {body['return_for']} is no closed sale of this store")
        if any((ln["quantity"] < 0) != (original is not None) for ln in lines):
            raise _bad("a return's quantities are negative, and only a return's")
        price_total = sum((ln["total"] for ln in lines), Decimal(0))
        tax_total = sum((ln["tax_total"] for ln in lines), Decimal(0))
        total = price_total + tax_total
        paid = Decimal(0)
        known_types = {p["id"] for p in self.payment_types}
        for n, pay in enumerate(body.get("payments") or [], 1):
            if not isinstance(pay, dict) or not isinstance(pay.get("type"), dict):
                raise _bad(f"payment {n}: amount and type are required")
            if pay["type"].get("config_id") not in known_types:
                raise _bad(f"payment {n}: unknown payment type {pay['type'].get('config_id')}")
            paid += _money(pay.get("amount"), f"payment {n} amount")
        if body["state"] == "closed" and "onaccount" not in attributes and paid != total:
            raise _bad(f"a closed sale must be paid in full: paid {paid}, total {total}")
        sale = {
            "register_id": register,
            "author_id": source["author_id"],
            "price": price_total,
            "tax": tax_total,
        }
        return sale, lines, total

    def _check_line(self, n: int, item: Any) -> dict[str, Any]:
        """One line [SPEC SaleLineItem]: product, quantity, unit price, tax id and unit tax."""
        if not isinstance(item, dict):
            raise _bad(f"line {n} is not an object")
        for key in ("product", "quantity", "pricing", "tax"):  # [SPEC SaleLineItem.required]
            if not isinstance(item.get(key), dict) and key != "quantity":
                raise _bad(f"line {n}: {key} is required")
        pid = str(item["product"].get("id"))
        prow = self._products.get(pid)
        if prow is None or prow.deleted_at:
            raise _bad(f"line {n}: unknown product {pid}")
        quantity = _money(item.get("quantity"), f"line {n} quantity")
        price = _money(item["pricing"].get("price"), f"line {n} pricing.price")
        taxes = {t["id"]: t["rate"] for t in self.taxes}
        tax = item["tax"]
        if tax.get("id") not in taxes:
            raise _bad(f"line {n}: unknown tax {tax.get('id')}")
        amount = _money(tax.get("amount"), f"line {n} tax.amount")
        # our check, not documented either way: Sales 101's unit taxes are price x rate
        # exactly (12 -> 1.8, 22 -> 3.3 [D-S101]); we allow a cent
        if abs(amount - price * taxes[tax["id"]]) > CENT:
            raise _bad(f"line {n}: tax.amount {amount} does not match the tax's rate")
        return {
            "product_id": pid,
            "quantity": quantity,
            "price": price,
            "tax": amount,
            "tax_id": tax["id"],
            "total": (quantity * price).quantize(CENT, ROUND_HALF_UP),
            "tax_total": (quantity * amount).quantize(CENT, ROUND_HALF_UP),
        }

    def _sale_body(
        self,
        sale_id: str,
        sale: dict[str, Any],
        body: dict[str, Any],
        lines: list[dict[str, Any]],
        number: str,
        created: datetime,
        now: datetime,
    ) -> dict[str, Any]:
        source = body["source"]
        return {  # [SPEC Sale]
            "id": sale_id,
            "invoice_number": number,
            "receipt_number": number,
            "state": body["state"],
            "attributes": list(body.get("attributes") or []),
            # a sale without a customer leaves the field out: it is not nullable [SPEC Sale]
            **({"customer_id": body["customer_id"]} if body.get("customer_id") else {}),
            "date": body.get("date") or stamp(now),
            "note": body.get("note") or "",
            "source": {
                "id": str(source.get("id") or ""),
                "type": str(source.get("type") or ""),
                "outlet_id": self.outlet_id,
                "register_id": sale["register_id"],
                "author": {"id": sale["author_id"]},
            },
            "external_applications": [],
            "line_items": [
                {
                    "id": uid("line", sale_id, str(i)),
                    "product": {"id": ln["product_id"]},
                    "quantity": num(ln["quantity"]),
                    "pricing": {"price": num(ln["price"]), "total": num(ln["total"])},
                    "tax": {
                        "id": ln["tax_id"],
                        "amount": num(ln["tax"]),
                        "total": num(ln["tax_total"]),
                    },
                }
                for i, ln in enumerate(lines)
            ],
            "payments": [
                {
                    "id": uid("payment", sale_id, str(i)),
                    "amount": num(_money(p["amount"], "amount")),
                    "type": {"config_id": p["type"]["config_id"]},
                }
                for i, p in enumerate(body.get("payments") or [])
            ],
            "totals": {
                "price": num(sale["price"]),
                "tax": num(sale["tax"]),
                "price_incl_tax": num(sale["price"] + sale["tax"]),
            },
            "created_at": stamp(created),
            "updated_at": stamp(now),
            **(
                {"return_for": ret, "return": {"is_return": True, "original_sale_id": ret}}
                if (ret := body.get("return_for"))
                else {}
            ),
        }


def create(**kw: Any) -> LightspeedXSandbox:
    return LightspeedXSandbox(**kw)
