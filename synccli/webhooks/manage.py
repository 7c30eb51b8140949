"""``webhooks subscribe`` and ``webhooks status``: results for the CLI to render.

Each provider subscribes in its connector module (``webhook_subscribe``, with the helpers here);
what each does (sources in docs/providers.md, "Webhooks"):

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
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from synccli import registry
from synccli.clock import Clock
from synccli.config import ensure_private_dir
from synccli.errors import ProviderError, UsageError
from synccli.store import connections as store_connections
from synccli.store import webhooks as stored
from synccli.store.db import Store
from synccli.webhooks.app import PROVIDERS

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


def url_token(store: Store, name: str) -> str:
    """The connection's URL token, made (256 random bits) and stored on first use."""
    conn = store_connections.get_connection(store, name)
    token = store_connections.credentials(store, conn).get("webhook_key")
    if not token:
        token = random.token_urlsafe(32)
        store_connections.set_values(store, name, {"webhook_key": token})
    return str(token)


def url_file(store: Store, name: str) -> Path:
    """Where the delivery URL of connection ``name`` is written for a person to paste."""
    return Path(store.settings.data_dir) / f"webhook-url-{name}.txt"


def write_url_file(store: Store, name: str, url: str) -> Path:
    """Write ``url`` (it holds the token) to an owner-only file, never to the output."""
    path = url_file(store, name)
    ensure_private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(url + "\n")
    return path


def post_each(
    store: Store,
    result: Subscribed,
    clock: Clock,
    path: str,
    bodies: Iterable[tuple[str, dict[str, Any]]],
    refused: str,
) -> Subscribed:
    """POST each (kind, body) to the provider's ``path`` through the connector's HTTP layer (the
    store's ledger and budget count the calls); 409 means subscribed already. A 403 is a
    :class:`UsageError` saying ``refused`` (why, and what to change before authorising again)."""
    from synccli.sync.context import build_connector  # the connector stack, only here

    name = result.connection
    conn = store_connections.get_connection(store, name)
    http = build_connector(store, conn, clock=clock, pace=False).http
    for kind, body in bodies:
        try:
            resp = http.request("POST", path, json_body=body, ok=(409,))
        except ProviderError as exc:
            if exc.status == 403:
                raise UsageError(
                    f"{name}: {refused} and run `synccli connections authorize {name}` again"
                ) from None
            raise
        (result.already if resp.status_code == 409 else result.created).append(kind)
    return result


def subscribe(
    store: Store, name: str, base_url: str, clock: Clock, dry_run: bool = False
) -> Subscribed:
    """The provider's connector subscribes (``webhook_subscribe``): through its API, or the
    steps a person takes (registry ``Subscription``). A dry run makes no token, writes no file
    and calls nothing."""
    conn = store_connections.get_connection(store, name)
    provider = registry.get(conn.provider)
    if provider.webhooks is None:
        display = provider.display_name
        raise UsageError(f"{display} sends no webhooks synccli follows: its polls stay as they are")
    url = endpoint(base_url, name)
    result: Subscribed = provider.module().webhook_subscribe(store, name, url, clock, dry_run)
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
