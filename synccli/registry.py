"""The providers synccli speaks to, each declared once, as data.

A provider is one :class:`Provider` entry: its name, what people call it, its connector and
simulator modules, the settings and credentials a connection to it holds (with their meaning,
default and check), how it authorises (an API key, or OAuth with :class:`OAuthHooks`), and the
call pattern ``plan`` costs. Every other list of providers (the store's, the CLI's choices, the
demo's, the tests') is read from here, so registering a provider is adding one entry to
:data:`PROVIDERS` (docs/adding-a-provider.md).

This module imports no connector: a connector module (requests, the HTTP layer) is imported only
when its class is asked for, so the store and the CLI's option parsing stay cheap to import.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from synccli.errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

    from synccli.connectors.auth import Tokens
    from synccli.connectors.base import Capabilities, Connector, Limits

Check = Callable[[str], str | None]  # a problem with the value, or None


# --- value checks ---------------------------------------------------------------------------
# A mistyped value (``give_up_after=7 days``) would otherwise be stored and found only when a job
# reads it, hours later, under cron: `connections add` and `connections set` run these first.


def text(value: str) -> str | None:
    if not value.strip():
        return "is empty (an empty value removes a setting: use `connections set NAME KEY=`)"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains a control character"
    return None


def url(value: str) -> str | None:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL such as https://api.example.com"
    if parts.query or parts.fragment:
        return "must not carry a query or fragment"
    return None


def duration(value: str) -> str | None:
    from synccli.errors import UsageError
    from synccli.sync.invoices import parse_duration  # the jobs' own parser: one rule

    try:
        parse_duration(value)
    except UsageError:
        return "is not a duration such as 2h, 30m or 7d"
    return None


def durations(value: str) -> str | None:
    parts = value.split(",")
    if not parts or any(duration(p) for p in parts):
        return "is not a list of durations such as 2h,4h,8h,12h,24h"
    return None


def whole(low: int, high: int | None = None) -> Check:
    def check(value: str) -> str | None:
        digits = value.strip()
        if not digits.isdigit() or int(digits) < low or (high is not None and int(digits) > high):
            upper = f" to {high}" if high is not None else " or more"
            return f"is not a whole number from {low}{upper}"
        return None

    return check


def positive(value: str) -> str | None:
    try:
        ok = float(value) > 0
    except ValueError:
        ok = False
    return None if ok else "is not a number above zero"


def choice(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"is not one of {', '.join(choices)}"

    return check


def boolean(value: str) -> str | None:
    return None if value.lower() in ("true", "false") else "is not true or false"


def digits(value: str) -> str | None:
    return None if value.strip().isdigit() else "is not a Lightspeed id (digits, such as 1)"


def xero_account_code(value: str) -> str | None:
    """A Xero account code: up to 10 characters (spec, ``Account.Code``: "max length = 10"),
    letters, digits, ``-`` and ``_``: it is looked up through ``where``, which cannot carry a
    double quote."""
    text = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,10}", text):
        return "is not a Xero account code (1-10 letters or digits, such as 090)"
    return None


def uuid_id(value: str) -> str | None:
    pattern = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    return None if re.fullmatch(pattern, value.strip()) else "is not an id such as 0adaafb3-6583-…"


def store_prefix(value: str) -> str | None:
    ok = re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value.strip())
    return None if ok else "is not a store's domain prefix (lower-case letters, digits, '-')"


def guid(value: str) -> str | None:
    pattern = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    return None if re.fullmatch(pattern, value.strip()) else "is not a Xero tenant id (a GUID)"


# --- the schema ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One key a connection may hold: a setting (stored as it is) or a credential (a secret,
    stored encrypted, never taken from a command line)."""

    key: str
    meaning: str
    default: str | None = None  # as the connector applies it; None: none, or found by itself
    secret: bool = False
    check: Check = text
    required: bool = False  # the connection cannot work without it
    option: bool = False  # `connections add` offers it as --KEY (with dashes)
    env: str | None = None  # a secret: the variable `connections add` reads it from
    label: str = ""  # what people call it ("API key"); default: the key in words

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def name(self) -> str:
        return self.label or self.key.replace("_", " ")


class AuthKind(StrEnum):
    API_KEY = "api_key"  # a key the merchant copies from the provider: nothing to authorise
    OAUTH = "oauth"  # a browser consent (`connections authorize`), then tokens we refresh


class OAuthHooks(Protocol):
    """What the generic authorisation job (sync/authorize.py) asks of an OAuth provider."""

    def authorize_url(self, settings: dict[str, Any], redirect_uri: str, state: str) -> str: ...

    def exchange_code(
        self,
        settings: dict[str, Any],
        creds: dict[str, Any],
        code: str,
        redirect_uri: str,
        callback: Mapping[str, str] | None = None,
    ) -> Tokens:
        """Trade the code for tokens; ``callback`` is the whole redirect's query (Lightspeed
        X-Series names the store there)."""
        ...

    def nothing_to_authorise(self, settings: dict[str, Any]) -> str | None:
        """Why this connection needs no browser consent (it gets its own tokens), or None."""
        ...

    def learned(self, settings: dict[str, Any], tokens: Tokens) -> dict[str, str]:
        """Settings the token answer told us that the connection does not set yet (Xero's
        tenant, Lightspeed's account), to store with it."""
        ...


@dataclass(frozen=True)
class ModuleOAuth:
    """:class:`OAuthHooks` served by a connector module's ``authorize_url`` and
    ``exchange_code`` functions, with the provider's differences as data."""

    module: str
    learns: tuple[str, ...] = ()  # keys of the tokens' ``extra`` kept as settings when unset
    # (setting, value, why): a connection with this setting gets its tokens with its secret
    own_grant: tuple[str, str, str] | None = None
    callback: bool = False  # its exchange_code reads the redirect's query (``callback=``)

    def _functions(self) -> ModuleType:
        return importlib.import_module(self.module)

    def authorize_url(self, settings: dict[str, Any], redirect_uri: str, state: str) -> str:
        return str(self._functions().authorize_url(settings, redirect_uri, state))

    def exchange_code(
        self,
        settings: dict[str, Any],
        creds: dict[str, Any],
        code: str,
        redirect_uri: str,
        callback: Mapping[str, str] | None = None,
    ) -> Tokens:
        extra = {"callback": dict(callback or {})} if self.callback else {}
        tokens: Tokens = self._functions().exchange_code(
            settings, creds, code, redirect_uri, **extra
        )
        return tokens

    def nothing_to_authorise(self, settings: dict[str, Any]) -> str | None:
        if self.own_grant and settings.get(self.own_grant[0]) == self.own_grant[1]:
            return self.own_grant[2]
        return None

    def learned(self, settings: dict[str, Any], tokens: Tokens) -> dict[str, str]:
        extra = tokens.extra or {}
        return {
            k: str(extra[k])
            for k in self.learns
            if isinstance(extra.get(k), (str, int)) and not settings.get(k)
        }


@dataclass(frozen=True)
class CallPattern:
    """How the connector spends calls where its capabilities do not say (``plan`` costs it)."""

    customer_page: int  # customers a page of a changed-customers read
    stock_changes_read: bool = False  # an incremental pull also pages through changed stock
    daily_list_calls: int = 0  # post-invoices: lists read again once a day (tax categories)
    # How far behind the moment they were made the provider's record stamps read: a cursor
    # taken from them starts that much further back, so every pull reads that much again
    # (Unleashed's JSON dates, 13 h behind real UTC in the recordings: provider notes §6).
    stamp_lag: timedelta = timedelta(0)
    # What an order's documents cost beyond its invoice (issue 22), where the provider takes
    # them (``Capabilities.documents``): payments applied after the invoice go this many to a
    # call; a refund takes this many calls, posted alone.
    payment_batch: int = 0
    refund_calls: int = 0


@dataclass(frozen=True)
class Sandbox:
    """The provider's simulator (``synccli sandbox serve``, the demo, the tests)."""

    module: str  # its ``create(**kw)`` builds the app
    tax_code: str  # a 15% tax code every simulated account has
    demo_time_scale: float = 1.0  # the demo's clock speed (a leaky bucket drains faster)
    urls: tuple[str, ...] = ()  # settings that point at the simulator besides base_url
    # The job tests run for every provider (tests/) and the benchmarks (bench/) include this
    # one. A new provider turns it on once its simulator models what they use and the tests'
    # per-provider facts (its endpoints) are written (docs/adding-a-provider.md).
    shared_suites: bool = True


class Subscription(StrEnum):
    """How a webhook subscription is made (`webhooks subscribe`)."""

    API = "api"  # through the provider's API, by the connector (the ledger counts the calls)
    PORTAL = "portal"  # by a person in the provider's screens: the steps are printed
    FILE = "file"  # steps printed; the delivery URL (it holds the token) goes to an owner-only file


@dataclass(frozen=True)
class WebhookSupport:
    """What a provider's webhooks are (#23), as data. The functions that read its deliveries
    and subscribe live in its connector module (docs/adding-a-provider.md, "Webhooks"):

    - ``webhook_events(body, query, received)``: ``(events, skipped)``, each event with the
      tenant it belongs to (None: the connection whose URL received it), raising
      ``webhooks.parse.Malformed`` for a body that is not the provider's;
    - ``webhook_signed(target, header, body, now)``: whether the delivery's own signature (if
      the provider signs) holds for the connection ``target``;
    - ``webhook_subscribe(store, name, url, token, clock)``: a ``webhooks.manage.Subscribed``.
    """

    content_type: str  # a delivery of any other type is answered 415
    kinds: tuple[tuple[str, str], ...]  # (the provider's event kind, our stream) followed
    subscription: Subscription
    url_token: bool = True  # its URL carries our token (else only its own signature vouches)
    # "module:function" reading a record a delivery carries into a ``payloads.Pushed`` (None:
    # its deliveries carry ids only); by default its connector module's ``webhook_record``
    records: str | None = None
    outlet_stock: bool = False  # pushed stock is per outlet: the connection's outlet is read

    @property
    def streams(self) -> tuple[str, ...]:
        """Our streams its deliveries cover (the others stay polled)."""
        return tuple(dict.fromkeys(stream for _, stream in self.kinds))

    def stream(self, kind: str) -> str | None:
        """Our stream of the provider's event ``kind``; None: not followed."""
        return next((stream for k, stream in self.kinds if k == kind), None)


@dataclass(frozen=True)
class Provider:
    name: str
    display_name: str
    connector_module: str
    auth: AuthKind
    settings: tuple[Setting, ...]
    credentials: tuple[Setting, ...]
    calls: CallPattern
    sandbox: Sandbox
    oauth: OAuthHooks | None = None
    # An API-key provider: where in its screens the account owner finds the id and key.
    key_source: str = ""
    webhooks: WebhookSupport | None = None  # None: it sends no webhooks synccli follows
    # A refused refund's "What to fix" in the email ({number}, {refund_of}, {provider}), where
    # its refunds are not credit notes against the invoice (notify.py's default text)
    refund_fix: str = ""
    # Its OAuth apps take HTTPS redirect URLs only (Lightspeed R-Series): none can be a loopback
    # listener, so `connections authorize` is given the registered one with --redirect-uri
    https_redirect: bool = False

    def module(self) -> ModuleType:
        return importlib.import_module(self.connector_module)

    @property
    def connector(self) -> type[Connector]:
        return _connector_class(self.connector_module)

    @property
    def capabilities(self) -> Capabilities:
        return self.connector.capabilities

    @property
    def limits(self) -> Limits:
        return self.capabilities.limits

    @property
    def secret(self) -> Setting:
        """The credential the merchant gives us (client secret or API key)."""
        return self.credentials[0]

    @property
    def key_only(self) -> bool:
        """An API key is all there is: nothing to authorise, and a refused key is entered
        again (status, doctor and the merchant's email say so)."""
        return self.auth is AuthKind.API_KEY

    @property
    def account_key(self) -> Setting:
        """The setting naming the account (Unleashed's API id; the OAuth app's client id)."""
        # X-Series requires none (a personal token needs no app): its client id, listed first
        return next((s for s in self.settings if s.required), self.settings[0])

    def authorises(self, settings: dict[str, Any]) -> bool:
        """Whether a connection with ``settings`` needs `connections authorize` (a browser
        consent): not one with an API key, nor an OAuth one that gets its own tokens."""
        return self.oauth is not None and self.oauth.nothing_to_authorise(settings) is None

    @property
    def webhooks_support(self) -> WebhookSupport:
        """Its webhook support, for a connection already known to receive deliveries."""
        if self.webhooks is None:
            raise ConfigError(f"{self.display_name} sends no webhooks synccli follows")
        return self.webhooks

    def schema(self) -> tuple[Setting, ...]:
        """Every setting a connection to this provider may hold, common ones first."""
        return (*COMMON, *self.settings)

    def setting(self, key: str) -> Setting | None:
        return next((s for s in (*self.schema(), *self.credentials) if s.key == key), None)


@cache
def _connector_class(module_name: str) -> type[Connector]:
    from synccli.connectors.base import Connector

    module = importlib.import_module(module_name)
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Connector) and value is not Connector:
            return value
    raise ConfigError(f"connector module {module_name} declares no connector")


# Settings every connection may hold, whatever its provider (the jobs read them).
COMMON: tuple[Setting, ...] = (
    Setting("base_url", "API base URL", "the provider's", check=url, option=True),
    Setting(
        "retry_schedule",
        "waits between attempts to post an invoice the provider refused for now",
        "2h,4h,8h,12h,24h",
        check=durations,
    ),
    Setting(
        "give_up_after",
        "how long an invoice is retried before it needs a person",
        "7d",
        check=duration,
    ),
    Setting(
        "due_days", "days from the order date to the invoice's due date", None, check=whole(0, 3650)
    ),
    Setting(
        "sweep_days",
        "days within which sweep-oldest auto re-checks the whole catalogue",
        "7",
        check=positive,
    ),
    Setting(
        "safety_poll",
        "while webhook deliveries are healthy, how often a stream is still polled",
        "2h",
        check=duration,
    ),
    Setting(
        "webhook_window",
        "deliveries count as healthy while the last came within this (else every run polls)",
        "1h",
        check=duration,
    ),
    Setting(
        "hint_wait",
        "webhooks serve and webhooks apply fetch id-only deliveries once the oldest has "
        "waited this long (unset: they wait for the next pull)",
        None,
        check=duration,
    ),
    # Marks a connection `sandbox serve --connect` made: only such a one may be re-pointed.
    Setting(
        "sandbox", "made by `sandbox serve --connect` (never set by hand)", "false", check=boolean
    ),
)

_CLIENT_ID = Setting("client_id", "the OAuth app's client id", required=True, option=True)
_CLIENT_SECRET = Setting(
    "client_secret", "the OAuth app's client secret", secret=True, env="SYNC_CLIENT_SECRET"
)

XERO = Provider(
    name="xero",
    display_name="Xero",
    connector_module="synccli.connectors.xero",
    auth=AuthKind.OAUTH,
    settings=(
        _CLIENT_ID,
        Setting(
            "tenant_id",
            "the organisation (xero-tenant-id)",
            "found when authorised",
            check=guid,
            option=True,
        ),
        Setting(
            "grant",
            "authorization_code, or client_credentials for a custom connection",
            "authorization_code",
            check=choice("authorization_code", "client_credentials"),
            option=True,
        ),
        Setting("account_code", "revenue account for invoice lines without one", "200"),
        Setting("tax_type", "tax type for lines and new items without one", "NONE"),
        Setting(
            "charge_account_code",
            "revenue account for order lines without a product code (shipping, surcharges...)",
            "account_code",
        ),
        Setting(
            "payment_account_code",
            "account an order's payments are applied into: a bank account, or a clearing account "
            "with payments enabled (checked by doctor); needed for orders with payments",
            None,
            check=xero_account_code,
        ),
        Setting(
            "payments_wait_hours",
            "hours an invoice's payments may wait to go with others in one call: they are sent "
            "once the oldest has waited this long, 50 are waiting, or a refund of the order is "
            "due (0: the run that posts the invoice pays it)",
            "24",
            check=whole(0, 168),
        ),
        Setting("invoice_batch", "invoices one call posts", "50", check=whole(1, 50)),
        Setting("scopes", "OAuth scopes asked for, space-separated", "the app's usual set"),
        Setting("identity_url", "token endpoint host", "https://identity.xero.com", check=url),
        Setting("login_url", "authorisation host", "https://login.xero.com", check=url),
    ),
    credentials=(_CLIENT_SECRET,),
    # payments: PUT /Payments, 50 a call (connectors/xero_payments.PAYMENT_BATCH); a refund:
    # PUT /CreditNotes, then PUT its allocation or, the invoice being paid, PUT /Payments
    # paying the credit back
    calls=CallPattern(customer_page=1000, payment_batch=50, refund_calls=2),
    sandbox=Sandbox("synccli.sandbox.xero", tax_code="OUTPUT2", urls=("identity_url", "login_url")),
    oauth=ModuleOAuth(
        "synccli.connectors.xero",
        learns=("tenant_id",),
        own_grant=(
            "grant",
            "client_credentials",
            "this Xero custom connection gets its tokens with its client secret: "
            "nothing to authorise",
        ),
    ),
    # eventCategory -> stream: no Items events, so products stay polled; CREDITNOTE and
    # SUBSCRIPTION are not followed [Xero-OpenAPI xero-webhooks.yaml]
    webhooks=WebhookSupport(
        "application/json",  # [Xero-OpenAPI xero-webhooks.yaml requestBody]
        kinds=(("CONTACT", "customers"), ("INVOICE", "invoices")),
        subscription=Subscription.PORTAL,
        url_token=False,  # signed with the app's webhook key (x-xero-signature)
    ),
)

UNLEASHED = Provider(
    name="unleashed",
    display_name="Unleashed",
    connector_module="synccli.connectors.unleashed",
    auth=AuthKind.API_KEY,
    settings=(
        Setting("api_id", "the account's API id", required=True, option=True, label="API ID"),
        Setting("warehouse_code", "warehouse for sales orders and stock", "the account's default"),
        Setting(
            "complete_orders",
            "complete each sales order once posted (Unleashed then raises the invoice)",
            "false",
            check=boolean,
        ),
        Setting(
            "order_status",
            "status of a new sales order",
            "Parked",
            check=choice("Parked", "Placed"),
        ),
        Setting(
            "stock_field",
            "which stock figure is the shop's",
            "AvailableQty",
            check=choice("AvailableQty", "QtyOnHand"),
        ),
        Setting("lookup_batch", "product ids a look-up call carries", "100", check=whole(1, 100)),
        Setting("client_type", "the client-type header", "synccli/sync"),
        Setting(
            "charge_item",
            "ProductCode of the service product (NeverDiminishing, e.g. FREIGHT) that order "
            "lines without a product code are posted against (unset: such orders are refused)",
        ),
    ),
    credentials=(
        Setting(
            "api_key", "the account's API key", secret=True, env="SYNC_API_KEY", label="API key"
        ),
    ),
    calls=CallPattern(customer_page=1000, stock_changes_read=True, stamp_lag=timedelta(hours=13)),
    sandbox=Sandbox("synccli.sandbox.unleashed", tax_code="G.S.T."),
    key_source="Integration > Unleashed API Access",
    webhooks=WebhookSupport(
        "application/json",  # [D-WH "Webhook Event Structure"]
        # the object of "<object>.<created|updated|deleted>" -> stream [D-WH "Available Events"]
        kinds=(("product", "products"), ("customer", "customers")),
        subscription=Subscription.FILE,
        records="synccli.connectors.unleashed:webhook_record",
    ),
)

LIGHTSPEED = Provider(
    name="lightspeed",
    display_name="Lightspeed Retail",
    connector_module="synccli.connectors.lightspeed",
    auth=AuthKind.OAUTH,
    settings=(
        _CLIENT_ID,
        Setting(
            "account_id",
            "the Lightspeed account",
            "found when authorised",
            check=digits,
            option=True,
        ),
        Setting("shop_id", "the shop a sale is rung up in", "1", check=digits),
        Setting("register_id", "the register a sale is rung up on", "1", check=digits),
        Setting("employee_id", "the employee a sale is rung up by", "1", check=digits),
        Setting("payment_type_id", "how a sale is paid", "1", check=digits),
        Setting(
            "payment_types",
            "paymentTypeID per payment method of an order's payments (card=3,cash=1)",
            "payment_type_id for every method",
        ),
        Setting(
            "sku_field",
            "the item field holding the shop's SKU",
            "customSku",
            check=choice("customSku", "systemSku", "manufacturerSku", "upc", "ean"),
        ),
        Setting(
            "charge_item",
            "itemID of the non-inventory item that order lines without a product code are "
            "rung up against (unset: such orders are refused)",
            check=digits,
        ),
        Setting("scope", "OAuth scope asked for", "employee:all"),
        Setting("auth_url", "authorisation server", "https://cloud.lightspeedapp.com", check=url),
    ),
    credentials=(_CLIENT_SECRET,),
    https_redirect=True,
    # a refund: POST Sale/{id}/refund.json alone (the sale's SaleLines kept from its post's answer)
    calls=CallPattern(
        customer_page=100, stock_changes_read=True, daily_list_calls=1, refund_calls=1
    ),
    sandbox=Sandbox(
        "synccli.sandbox.lightspeed", tax_code="GST", demo_time_scale=100.0, urls=("auth_url",)
    ),
    oauth=ModuleOAuth("synccli.connectors.lightspeed", learns=("account_id",)),
    # POST Sale/{id}/refund.json against the order's sale
    refund_fix="""What to fix: check refund {number} against order {refund_of} in {provider}:
its sale must still be there, completed (not voided nor reopened), with the refunded
quantities of its lines not given back already (a refund made at the register counts) - and
the message above. Fix it in {provider}, or cancel the refund here.""",
)

_X_ID = "found from the store's lists"
LIGHTSPEED_X = Provider(
    name="lightspeed-x",
    display_name="Lightspeed Retail X-Series",
    connector_module="synccli.connectors.lightspeed_x",
    auth=AuthKind.OAUTH,
    settings=(
        Setting("client_id", "the OAuth app's client id (not for a personal token)", option=True),
        Setting(
            "domain_prefix",
            "the store: its address is DOMAIN_PREFIX.retail.lightspeed.app",
            "found when authorised",
            check=store_prefix,
            option=True,
        ),
        Setting(
            "grant",
            "authorization_code, or personal_token (the secret given is a personal token)",
            "authorization_code",
            check=choice("authorization_code", "personal_token"),
            option=True,
        ),
        Setting("outlet_id", "the outlet whose stock is the shop's", _X_ID, check=uuid_id),
        Setting("register_id", "the register a sale is rung up on", _X_ID, check=uuid_id),
        Setting("user_id", "the user a sale is rung up by", "the token's own", check=uuid_id),
        Setting("payment_type_id", "how a sale is paid", _X_ID, check=uuid_id),
        Setting(
            "payment_types",
            "payment type id per payment method of an order's payments (card=ID,cash=ID)",
            "payment_type_id for every method",
        ),
        Setting(
            "charge_item",
            "id of the product (a service, not stock-tracked) that order lines without a "
            "product code are rung up against (unset: such orders are refused)",
            check=uuid_id,
        ),
        Setting(
            "no_tax_id", "the tax for lines without tax", "the one named No Tax", check=uuid_id
        ),
        Setting(
            "registers",
            "registers the store has (its limit: 300 x registers + 50 calls in 5 minutes)",
            "1",
            check=whole(1, 1000),
        ),
        Setting(
            "scope", "OAuth scopes asked for, space-separated", "what synccli reads and writes"
        ),
        Setting(
            "auth_url", "authorisation server", "https://secure.retail.lightspeed.app", check=url
        ),
    ),
    credentials=(
        Setting(
            "client_secret",
            "the OAuth app's client secret, or the personal token (grant personal_token)",
            secret=True,
            env="SYNC_CLIENT_SECRET",
        ),
    ),
    # a day's lists: taxes only, once authorize has stored the ids a sale needs; a refund is
    # one POST /sales (a return sale)
    calls=CallPattern(
        customer_page=1000, stock_changes_read=True, daily_list_calls=1, refund_calls=1
    ),
    sandbox=Sandbox("synccli.sandbox.lightspeed_x", tax_code="GST", urls=("auth_url",)),
    oauth=ModuleOAuth(
        "synccli.connectors.lightspeed_x",
        learns=(
            "domain_prefix",
            "outlet_id",
            "register_id",
            "user_id",
            "payment_type_id",
            "no_tax_id",
        ),
        own_grant=(
            "grant",
            "personal_token",
            "this connection uses a personal token made in the store: nothing to authorise",
        ),
        callback=True,
    ),
    webhooks=WebhookSupport(
        "application/x-www-form-urlencoded",  # [D-WH "Payload"]
        kinds=(  # webhook type -> stream [SPEC WebhookType]
            ("product.update", "products"),
            ("inventory.update", "stock"),
            ("customer.update", "customers"),
            ("sale.update", "sales"),
        ),
        subscription=Subscription.API,
        # its API 1.0 record shape (payloads.py: the connector module is at its size limit)
        records="synccli.connectors.payloads:read_v1",
        outlet_stock=True,
    ),
)

# The registered providers, in the order lists show them.
PROVIDERS: tuple[Provider, ...] = (XERO, UNLEASHED, LIGHTSPEED, LIGHTSPEED_X)

# Keys that are secret wherever they appear: credentials, and the tokens an authorisation stores.
TOKENS = ("access_token", "refresh_token", "expires_at")
# Webhook secrets (#23), kept with the credentials: ``webhook_key`` is Xero's webhook signing key,
# or for X-Series and Unleashed the token `webhooks subscribe` puts in the delivery URL;
# ``webhook_signing_key`` is the key Unleashed signs its deliveries with.
WEBHOOK_SECRETS = ("webhook_key", "webhook_signing_key")


def providers() -> tuple[Provider, ...]:
    return PROVIDERS


def names() -> tuple[str, ...]:
    return tuple(p.name for p in PROVIDERS)


def suite_names() -> tuple[str, ...]:
    """The providers the shared job tests and the benchmarks run for (``Sandbox.shared_suites``)."""
    return tuple(p.name for p in PROVIDERS if p.sandbox.shared_suites)


def webhook_names() -> tuple[str, ...]:
    """The providers whose webhooks synccli receives (``Provider.webhooks``)."""
    return tuple(p.name for p in PROVIDERS if p.webhooks is not None)


def pushed_product_names() -> tuple[str, ...]:
    """The providers whose webhooks push product changes (the month with webhooks runs them)."""
    return tuple(p.name for p in PROVIDERS if p.webhooks and "products" in p.webhooks.streams)


def choices() -> str:
    """The names for a message or a help text: "a, b or c"."""
    all_names = names()
    return (
        ", ".join(all_names[:-1]) + f" or {all_names[-1]}" if len(all_names) > 1 else all_names[0]
    )


def credential_keys() -> tuple[str, ...]:
    """Every credential key of every provider (each once)."""
    return tuple(dict.fromkeys(c.key for p in PROVIDERS for c in p.credentials))


def secret_keys() -> tuple[str, ...]:
    """Keys never taken from a command line: every credential, the tokens, the webhook keys."""
    return (*credential_keys(), *TOKENS, *WEBHOOK_SECRETS)


class UnknownProvider(ConfigError):
    """A provider name no entry has (a typo, or a hand-edited store row)."""


def find(name: str) -> Provider | None:
    """The entry called ``name``, or None (a row naming a provider no longer registered)."""
    return next((p for p in PROVIDERS if p.name == name), None)


def get(name: str) -> Provider:
    found = find(name)
    if found is None:
        raise UnknownProvider(f"unknown provider {name!r}: choose one of {', '.join(names())}")
    return found
