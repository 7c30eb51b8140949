"""#23: `webhooks subscribe`, `webhooks status`, and webhook keys kept like every credential."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from lightspeed_x_helpers import API, SpecRequest, validate_request
from sqlalchemy import func, select
from test_webhooks_receiver import FORM, XERO_ITR_KEY, _sign_xero, _x_form, call

from synccli.clock import SimClock, SystemClock
from synccli.sandbox import harness
from synccli.store.connections import add_connection, credentials, get_connection
from synccli.store.db import Store
from synccli.store.models import ApiCall, Connection
from synccli.webhooks.app import Receiver

TENANT = "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"


def test_a_webhook_key_is_read_from_stdin_sealed_and_never_shown(cli, store: Store) -> None:
    add_connection(store, "books", "xero", {"client_id": "app", "tenant_id": TENANT}, {})
    out = cli("connections", "set", "books", "--webhook-key-stdin", input=XERO_ITR_KEY + "\n")
    assert out.exit_code == 0, out.stderr
    with store.read_session() as s:
        sealed = s.scalar(select(Connection.credentials).where(Connection.name == "books"))
    assert sealed and XERO_ITR_KEY not in sealed
    assert credentials(store, get_connection(store, "books"))["webhook_key"] == XERO_ITR_KEY
    shown = cli("connections", "show", "books", "--json")
    assert XERO_ITR_KEY not in shown.stdout
    assert json.loads(shown.stdout)["credentials"]["webhook_key"] == "(set)"
    # on a command line it is refused, as every secret is
    refused = cli("connections", "set", "books", f"webhook_key={XERO_ITR_KEY}")
    assert refused.exit_code == 2 and "never goes on a command line" in refused.stderr
    # and the receiver checks deliveries with it
    app = Receiver(store, clock=SimClock(datetime.now(UTC)), directory_ttl=0.0)
    body = b'{"events":[],"firstEventSequence":1,"lastEventSequence":1,"entropy":"ABC"}'
    assert call(app, "/webhooks/books", body, headers={"x-xero-signature": _sign_xero(body)}) == 200


def test_status_shows_deliveries_rejections_and_pending_per_connection(cli, store: Store) -> None:
    creds = {"client_secret": "pt" * 8, "webhook_key": "tok-" + "a" * 30}
    add_connection(store, "xs", "lightspeed-x", {"grant": "personal_token"}, creds)
    add_connection(store, "quiet", "unleashed", {"api_id": "id"}, {"api_key": "k" * 10})
    now = SystemClock().now()
    app = Receiver(store, clock=SimClock(now), directory_ttl=0.0)
    token = creds["webhook_key"]
    assert call(app, f"/webhooks/xs/{token}", _x_form({"id": "p-1", "version": 3}), FORM) == 200
    assert call(app, f"/webhooks/xs/{token}", _x_form({"id": "p-1", "version": 3}), FORM) == 200
    assert (
        call(app, f"/webhooks/xs/{token}", _x_form({"id": "c-1"}, "customer.update"), FORM) == 200
    )
    assert call(app, "/webhooks/xs/forged", _x_form({"id": "p-9", "version": 9}), FORM) == 401
    out = cli("webhooks", "status", "--json")
    assert out.exit_code == 0, out.stderr
    got = {row["connection"]: row for row in json.loads(out.stdout)}
    assert got["xs"]["deliveries_today"] == 3
    assert got["xs"]["rejected_today"] == 1
    assert (got["xs"]["pending_records"], got["xs"]["pending_hints"]) == (2, 0)
    assert got["xs"]["last_delivery_at"] is not None
    assert got["quiet"]["key_stored"] is False and got["quiet"]["last_delivery_at"] is None
    assert token not in out.stdout
    human = cli("webhooks", "status", "-c", "quiet")
    assert "no webhook key: every delivery refused" in human.stdout
    # and what to do about it, on a line of its own under the table
    assert "synccli webhooks subscribe -c quiet --url URL" in human.stdout
    assert cli("webhooks", "status", "-c", "nobody").exit_code == 2


def test_x_series_subscribe_registers_each_type_once_through_the_ledger(cli, store: Store) -> None:
    """Against the simulator's `POST /webhooks` (409 for a duplicate type and URL [SPEC]); each
    request it received is checked against the official spec."""
    with harness.start("lightspeed-x", products=1, customers=1, deliveries="manual") as running:
        app = running.app
        harness.add_connection(store, "xs", running)
        first = cli("webhooks", "subscribe", "-c", "xs", "--url", "http://127.0.0.1:9/")
        again = cli("webhooks", "subscribe", "-c", "xs", "--url", "http://127.0.0.1:9")
        posted = [entry for entry in app.log if entry[:2] == ("POST", f"{API}/webhooks")]
        hooks = list(app.webhooks.subscriptions.values())
    assert first.exit_code == 0, first.stderr
    assert again.exit_code == 0, again.stderr
    assert len(posted) == 8
    for method, path, query, body in posted:
        headers = {"Content-Type": "application/json", "Authorization": "Bearer checked-by-it"}
        validate_request(SpecRequest(method, f"{path}?{query}", body, headers))
    token = credentials(store, get_connection(store, "xs"))["webhook_key"]
    assert len(token) >= 40
    kinds = ["product.update", "inventory.update", "customer.update", "sale.update"]
    assert sorted(kind for h in hooks for kind in h.events) == sorted(kinds)
    for hook in hooks:
        url = urlsplit(hook.url)
        assert (url.scheme, url.netloc, url.path) == (
            "http",
            "127.0.0.1:9",
            f"/webhooks/xs/{token}",
        )
        assert parse_qs(url.query) == {"type": list(hook.events)}
        assert hook.active is True
    for kind in kinds:
        assert f"subscribed: {kind}" in first.stdout
        assert f"already subscribed: {kind}" in again.stdout
    for out in (first, again):
        assert token not in out.stdout + out.stderr
    with store.read_session() as s:  # counted by the ledger like every call
        assert s.scalar(select(func.count()).select_from(ApiCall)) == 8


def test_xero_subscribe_prints_the_portal_steps(cli, store: Store) -> None:
    add_connection(store, "books", "xero", {"client_id": "app", "tenant_id": TENANT}, {})
    out = cli("webhooks", "subscribe", "-c", "books", "--url", "https://hooks.shop.example")
    assert out.exit_code == 0, out.stderr
    assert "https://hooks.shop.example/webhooks/books" in out.stdout
    assert "developer.xero.com" in out.stdout
    assert "synccli connections set books --webhook-key-stdin" in out.stdout
    assert "Intent To Receive" in out.stdout
    plain = cli("webhooks", "subscribe", "-c", "books", "--url", "http://hooks.shop.example")
    assert plain.exit_code == 2 and "https" in plain.stderr


def test_unleashed_subscribe_keeps_the_url_with_its_token_out_of_the_output(
    cli, store: Store, _isolated_env: Path
) -> None:
    add_connection(store, "ul", "unleashed", {"api_id": "id"}, {"api_key": "k" * 10})
    out = cli("webhooks", "subscribe", "-c", "ul", "--url", "https://hooks.shop.example")
    assert out.exit_code == 0, out.stderr
    token = credentials(store, get_connection(store, "ul"))["webhook_key"]
    assert token not in out.stdout + out.stderr
    path = _isolated_env / "webhook-url-ul.txt"
    assert path.read_text().strip() == f"https://hooks.shop.example/webhooks/ul/{token}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "product.updated" in out.stdout and "--webhook-signing-key-stdin" in out.stdout
    # a second run keeps the token the provider already has
    cli("webhooks", "subscribe", "-c", "ul", "--url", "https://hooks.shop.example")
    assert credentials(store, get_connection(store, "ul"))["webhook_key"] == token


def test_a_provider_without_webhooks_is_told_so(cli, store: Store) -> None:
    add_connection(store, "r", "lightspeed", {"client_id": "app", "account_id": "1"}, {})
    out = cli("webhooks", "subscribe", "-c", "r", "--url", "https://hooks.shop.example")
    assert out.exit_code == 2 and "sends no webhooks" in out.stderr
