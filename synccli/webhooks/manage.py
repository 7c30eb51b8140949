"""``webhooks subscribe`` and ``webhooks status``: results for the CLI to render.

Subscribing, per provider (sources in docs/providers.md, "Webhooks"):

- X-Series: ``POST /webhooks`` {active, type, url}, one per followed type; 409 means that type
  and URL are subscribed already [SPEC, SPEC-WH]. The call goes through the connector's HTTP
  layer, so the store's ledger and budget count it. The URL carries the connection's token (made
  here, stored encrypted) and the type (a delivery's form need not name it [D-WH]).
- Xero: webhooks are set up in the developer portal only: the steps are printed, and the key
  the portal shows is stored with ``connections set NAME --webhook-key-stdin``.
- Unleashed: its Webhooks API creates subscriptions [D-WH], but the request's exact shape is
  not in any text found (unconfirmed): the steps are printed, and the URL to give (it holds the
  token) is written to an owner-only file, never shown.
"""

from __future__ import annotations

import os
import secrets as random
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from synccli import registry
from synccli.clock import Clock
from synccli.config import ensure_private_dir
from synccli.errors import ProviderError, UsageError
from synccli.store import connections as store_connections
from synccli.store import webhooks as stored
from synccli.store.db import Store
from synccli.webhooks.app import PROVIDERS

X_SERIES_TYPES = ("product.update", "inventory.update", "customer.update", "sale.update")
X_SERIES_API = "api/2026-07"  # the connector's API version [SPEC info.version]
UNLEASHED_EVENTS = tuple(
    f"{thing}.{change}"
    for thing in ("product", "customer")
    for change in ("created", "updated", "deleted")
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Subscribed:
    connection: str
    provider: str
    endpoint: str  # where deliveries go, the token shown as ***
    created: list[str] = field(default_factory=list)  # types subscribed now
    already: list[str] = field(default_factory=list)  # types the provider had (409)
    steps: list[str] = field(default_factory=list)  # what a person does where no API does it
    url_file: str | None = None  # the URL to paste, kept out of the output (it holds the token)
    planned: list[str] = field(default_factory=list)  # a dry run: types it would subscribe
    dry_run: bool = False


def endpoint(base_url: str, name: str) -> str:
    """The receiver's URL for connection ``name`` under the public ``base_url``. HTTPS, as the
    providers require (a loopback address is let through for the simulators)."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UsageError(f"--url {base_url!r}: give the receiver's public address, https://...")
    if parts.scheme != "https" and parts.hostname not in LOOPBACK:
        raise UsageError(
            f"--url {base_url!r}: the providers deliver only to https:// addresses (put the "
            "receiver behind a TLS-terminating proxy: see README, Webhooks)"
        )
    if parts.query or parts.fragment:
        raise UsageError(f"--url {base_url!r}: no query or fragment, just the base address")
    return f"{base_url.strip().rstrip('/')}/webhooks/{name}"


def _token(store: Store, name: str) -> str:
    """The connection's URL token, made (256 random bits) and stored on first use."""
    conn = store_connections.get_connection(store, name)
    token = store_connections.credentials(store, conn).get("webhook_key")
    if not token:
        token = random.token_urlsafe(32)
        store_connections.set_values(store, name, {"webhook_key": token})
    return str(token)


def subscribe(
    store: Store, name: str, base_url: str, clock: Clock, dry_run: bool = False
) -> Subscribed:
    conn = store_connections.get_connection(store, name)
    if conn.provider not in PROVIDERS:
        display = registry.get(conn.provider).display_name
        raise UsageError(f"{display} sends no webhooks synccli follows: its polls stay as they are")
    url = endpoint(base_url, name)
    if conn.provider == "xero":
        return _xero_steps(store, name, url)  # writes nothing: a dry run is the same
    if dry_run:  # no token made, no file written, no call
        plan = Subscribed(name, conn.provider, f"{url}/***", dry_run=True)
        if conn.provider == "lightspeed-x":
            plan.planned = list(X_SERIES_TYPES)
        else:
            plan.planned = list(UNLEASHED_EVENTS)
            plan.steps = [
                "Without --dry-run: the URL to give Unleashed (it holds a token made then) is "
                f"written to {Path(store.settings.data_dir) / f'webhook-url-{name}.txt'}, and "
                "the steps to subscribe are printed."
            ]
        return plan
    token = _token(store, name)
    if conn.provider == "unleashed":
        return _unleashed_steps(store, name, url, token)
    return _x_series(store, name, url, token, clock)


def _xero_steps(store: Store, name: str, url: str) -> Subscribed:
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


def _unleashed_steps(store: Store, name: str, url: str, token: str) -> Subscribed:
    events_url = f"{url}/{token}"
    path = Path(store.settings.data_dir) / f"webhook-url-{name}.txt"
    ensure_private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(events_url + "\n")
    result = Subscribed(name, "unleashed", f"{url}/***", url_file=str(path))
    result.steps = [
        "Unleashed subscriptions are made through its Webhooks API "
        "(https://apidocs.unleashedsoftware.com/Webhooks, 'Setting Up Webhooks'; at most 5 "
        "per account, free of the monthly quota):",
        f"1. Subscribe to {', '.join(UNLEASHED_EVENTS)}",
        f"   with the notification URL written to {path} (owner-only: it holds this "
        "connection's token; delete the file once used).",
        "2. Store the signing key Unleashed returns, so every delivery's signature is checked too:",
        f"   synccli connections set {name} --webhook-signing-key-stdin",
    ]
    return result


def _x_series(store: Store, name: str, url: str, token: str, clock: Clock) -> Subscribed:
    from synccli.sync.context import build_connector  # the connector stack, only here

    conn = store_connections.get_connection(store, name)
    connector = build_connector(store, conn, clock=clock, pace=False)
    http = connector.http
    result = Subscribed(name, "lightspeed-x", f"{url}/***")
    for kind in X_SERIES_TYPES:
        body = {"active": True, "type": kind, "url": f"{url}/{token}?{urlencode({'type': kind})}"}
        try:
            resp = http.request("POST", f"{X_SERIES_API}/webhooks", json_body=body, ok=(409,))
        except ProviderError as exc:
            if exc.status == 403:
                raise UsageError(
                    f"{name}: the store refused to add a webhook (403): its token lacks the "
                    "`webhooks` scope; add it to the connection's scope setting and run "
                    f"`synccli connections authorize {name}` again"
                ) from None
            raise
        (result.already if resp.status_code == 409 else result.created).append(kind)
    return result


@dataclass
class WebhookStatus:
    connection: str
    provider: str
    key_stored: bool  # a webhook key or token: without one every delivery is refused
    last_delivery_at: datetime | None
    deliveries_today: int
    rejected_today: int
    pending_records: int
    pending_hints: int


def status(store: Store, now: datetime, names: list[str] | None = None) -> list[WebhookStatus]:
    """Per connection of a provider that sends webhooks (or each one named)."""
    found = []
    for conn in store_connections.list_connections(store):
        if names and conn.name not in names:
            continue
        if not names and conn.provider not in PROVIDERS:
            continue
        keyed = bool(store_connections.credentials(store, conn).get("webhook_key"))
        with store.read_session() as s:
            stats = stored.webhook_stats(s, conn.id, now)
        found.append(
            WebhookStatus(
                conn.name,
                conn.provider,
                keyed,
                stats.last_delivery_at,
                stats.deliveries_today,
                stats.rejected_today,
                stats.pending_records,
                stats.pending_hints,
            )
        )
    missing = set(names or ()) - {s.connection for s in found}
    if missing:
        raise UsageError(
            f"no connection named {sorted(missing)[0]!r} (see `synccli connections list`)"
        )
    return found
