"""#23: the webhook receiver verifies each delivery on its raw body, stores it once and answers
only after the commit (the WSGI application, called as a WSGI server calls it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from synccli.clock import SimClock
from synccli.config import load_settings
from synccli.store.connections import add_connection
from synccli.store.db import Store, sqlite_path
from synccli.store.models import WebhookEventRow
from synccli.store.webhooks import webhook_stats
from synccli.webhooks.app import Receiver
from synccli.webhooks.verify import xero_signature_ok

DATA = Path(__file__).parent / "data" / "webhooks"
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
# The intent-to-receive body, key and signature quoted in XeroAPI/XeroWebhooksReceiver issue #1
# (tests/data/webhooks/README.md).
XERO_ITR_KEY = (
    "LR+QgKlbRciIPYpi65tTKLaZ3FzLLofCNEQWrRXqWXJeDFrfexzfVI9SmnVuCWDJ4jnjHB9ECtOyxZSofRxwWw=="
)
XERO_ITR_SIGNATURE = "BjzNbYUfrzg4g8wxm+dKHaZVrKxr2m75E296fUbD1E4="
FIXTURE_TENANT = "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"  # tenantId in xero_contact_update.json
OTHER_TENANT = "aef86862-2015-4b6b-88bc-d89032cecc50"
X_TOKEN = "x-token-0123456789abcdef0123456789abcdef"
U_TOKEN = "u-token-0123456789abcdef0123456789abcdef"
U_SIGNING = "unleashed-signing-key-98765"


def _sign_xero(body: bytes, key: str = XERO_ITR_KEY) -> str:
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def _sign_unleashed(body: bytes, at: datetime, key: str = U_SIGNING) -> tuple[str, str]:
    stamp = str(int(at.timestamp()))
    digest = hmac.new(key.encode(), stamp.encode() + b"." + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode(), stamp


def call(
    app: Callable[..., Iterable[bytes]],
    path: str,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    method: str = "POST",
    query: str = "",
) -> int:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen: list[int] = []
    out = b"".join(app(environ, lambda status, _headers: seen.append(int(status.split()[0]))))
    assert seen[0] != 200 or out == b"", "a delivery's 200 has an empty body"
    return seen[0]


def rows(store: Store) -> list[WebhookEventRow]:
    with store.read_session() as s:
        return list(s.scalars(select(WebhookEventRow).order_by(WebhookEventRow.id)))


def count(store: Store) -> int:
    with store.read_session() as s:
        return s.scalar(select(func.count()).select_from(WebhookEventRow)) or 0


def stats_when(store: Store, cid: int, done: Callable[[Any], bool]) -> Any:
    """The connection's counts once ``done`` holds of them (or after 5 s): refusals are written
    off the request path, a moment after their answers."""
    deadline = time.monotonic() + 5
    while True:
        with store.read_session() as s:
            stats = webhook_stats(s, cid, NOW)
        if done(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


@pytest.fixture
def app(store: Store) -> Receiver:
    return Receiver(store, clock=SimClock(NOW), directory_ttl=0.0)


def _xero(store: Store, name: str, tenant: str, key: str = XERO_ITR_KEY) -> int:
    settings = {"client_id": "app", "tenant_id": tenant}
    return add_connection(
        store, name, "xero", settings, {"client_secret": "s" * 8, "webhook_key": key}
    ).id


def _x_series(store: Store, name: str = "xs") -> int:
    creds = {"client_secret": "pt" * 8, "webhook_key": X_TOKEN}
    return add_connection(store, name, "lightspeed-x", {"grant": "personal_token"}, creds).id


def _unleashed(store: Store, signing: str | None = U_SIGNING) -> int:
    creds = {"api_key": "k" * 10, "webhook_key": U_TOKEN, "webhook_signing_key": signing}
    return add_connection(store, "ul", "unleashed", {"api_id": "id"}, creds).id


def _x_form(record: dict, kind: str | None = "product.update") -> bytes:
    fields = {"payload": json.dumps(record), "domain_prefix": "shop"}
    if kind:
        fields["type"] = kind
    return urlencode(fields).encode()


FORM = "application/x-www-form-urlencoded"


# --- Xero -------------------------------------------------------------------------------------
def test_xero_published_signature_is_what_we_compute() -> None:
    """The key is used as the text the portal shows, not base64-decoded: Xero's own sample."""
    body = (DATA / "xero_intent_to_receive.json").read_bytes()
    assert len(body) == 95
    assert xero_signature_ok(XERO_ITR_KEY, body, XERO_ITR_SIGNATURE)
    assert not xero_signature_ok(XERO_ITR_KEY, body + b" ", XERO_ITR_SIGNATURE)
    assert not xero_signature_ok(None, body, XERO_ITR_SIGNATURE)


def test_xero_intent_to_receive_good_is_200_empty_bad_is_401_counted(
    app: Receiver, store: Store
) -> None:
    cid = _xero(store, "books", FIXTURE_TENANT)
    body = (DATA / "xero_intent_to_receive.json").read_bytes()
    good = {"x-xero-signature": XERO_ITR_SIGNATURE}
    assert call(app, "/webhooks/books", body, headers=good) == 200
    bad = {"x-xero-signature": XERO_ITR_SIGNATURE.replace("B", "C", 1)}
    assert call(app, "/webhooks/books", body, headers=bad) == 401
    assert call(app, "/webhooks/books", body) == 401  # none at all
    stats = stats_when(store, cid, lambda got: got.rejected_today >= 2)
    assert (stats.deliveries_today, stats.rejected_today) == (1, 2)
    assert count(store) == 0


def test_xero_event_goes_to_its_tenants_connection_and_a_retry_is_stored_once(
    app: Receiver, store: Store
) -> None:
    """One Xero app, two organisations: Xero posts every tenant's events to the one URL."""
    mine = _xero(store, "books", FIXTURE_TENANT)
    _xero(store, "other-books", OTHER_TENANT)
    body = (DATA / "xero_contact_update.json").read_bytes()
    signed = {"x-xero-signature": _sign_xero(body)}
    assert call(app, "/webhooks/other-books", body, headers=signed) == 200
    assert call(app, "/webhooks/other-books", body, headers=signed) == 200  # Xero's retry
    [row] = rows(store)
    assert (row.connection_id, row.stream, row.entity_id, row.state, row.record) == (
        mine,
        "customers",
        "717f2bfc-c6d4-41fd-b238-3f2f0c0cf777",
        "hint",
        None,
    )
    assert row.occurred_at == datetime(2024, 6, 21, 1, 15, 39, 902000, tzinfo=UTC)


def test_xero_events_of_unknown_tenants_or_another_apps_key_are_left_out_with_200(
    app: Receiver, store: Store
) -> None:
    """200 all the same: Xero turns off a webhook that keeps failing."""
    _xero(store, "books", OTHER_TENANT)
    _xero(store, "foreign", FIXTURE_TENANT, key="another-apps-webhook-key")
    body = (DATA / "xero_contact_update.json").read_bytes()
    assert call(app, "/webhooks/books", body, headers={"x-xero-signature": _sign_xero(body)}) == 200
    assert count(store) == 0


# --- X-Series ---------------------------------------------------------------------------------
def test_x_series_delivery_is_stored_with_its_record_once_per_version(
    app: Receiver, store: Store
) -> None:
    cid = _x_series(store)
    record = {"id": "p-1", "sku": "MUG", "name": "Mug", "version": 41}
    body = _x_form(record)
    assert call(app, f"/webhooks/xs/{X_TOKEN}", body, FORM) == 200
    assert call(app, f"/webhooks/xs/{X_TOKEN}", body, FORM) == 200  # retried: no new row
    newer = _x_form({**record, "name": "Big mug", "version": 42})
    assert call(app, f"/webhooks/xs/{X_TOKEN}", newer, FORM) == 200
    got = [(r.connection_id, r.stream, r.entity_id, r.version, r.state) for r in rows(store)]
    assert got == [
        (cid, "products", "p-1", "41", "pending"),
        (cid, "products", "p-1", "42", "pending"),
    ]
    assert rows(store)[1].record == {**record, "name": "Big mug", "version": 42}


def test_x_series_without_or_with_a_wrong_token_is_401_and_counted(
    app: Receiver, store: Store
) -> None:
    cid = _x_series(store)
    body = _x_form({"id": "p-1", "version": 1})
    assert call(app, "/webhooks/xs", body, FORM) == 401
    assert call(app, f"/webhooks/xs/{X_TOKEN[:-1]}x", body, FORM) == 401
    # another connection's token opens nothing here
    assert call(app, f"/webhooks/xs/{U_TOKEN}", body, FORM) == 401
    assert stats_when(store, cid, lambda got: got.rejected_today >= 3).rejected_today == 3
    assert count(store) == 0


def test_x_series_type_may_come_from_the_url_and_stock_is_keyed_by_product_and_outlet(
    app: Receiver, store: Store
) -> None:
    """The form's ``type`` is not promised [D-WH]: `webhooks subscribe` puts it in the URL."""
    _x_series(store)
    level = {"id": "i-9", "product_id": "p-1", "outlet_id": "o-1", "count": 4, "version": 7}
    body = _x_form(level, kind=None)
    path = f"/webhooks/xs/{X_TOKEN}"
    assert call(app, path, body, FORM, query="type=inventory.update") == 200
    other_outlet = _x_form({**level, "outlet_id": "o-2"}, kind=None)
    assert call(app, path, other_outlet, FORM, query="type=inventory.update") == 200
    assert [(r.stream, r.entity_id) for r in rows(store)] == [("stock", "p-1"), ("stock", "p-1")]
    assert call(app, path, body, FORM) == 400  # no type anywhere
    closure = _x_form({"id": "rc-1"}, kind="register_closure.create")
    assert call(app, path, closure, FORM) == 200  # not followed: left out, still 200
    assert count(store) == 2


# --- Unleashed --------------------------------------------------------------------------------
def _unleashed_body(guid: str = "6a1b...-guid", notification: str = "n-1") -> bytes:
    return json.dumps(
        {
            "subscriptionId": "s-1",
            "eventNotificationId": notification,
            "eventType": "product.updated",
            "createdOn": "2026-03-02T09:59:58Z",
            "data": {"productGuid": guid},
        }
    ).encode()


def test_unleashed_needs_the_token_and_a_fresh_signature(app: Receiver, store: Store) -> None:
    cid = _unleashed(store)
    body = _unleashed_body()
    path = f"/webhooks/ul/{U_TOKEN}"
    sig, stamp = _sign_unleashed(body, NOW)
    headers = {"x-unleashed-signature": sig, "x-unleashed-timestamp": stamp}
    assert call(app, path, body, headers=headers) == 200
    assert call(app, path, body, headers=headers) == 200  # retried: same notification id
    [row] = rows(store)
    assert (row.connection_id, row.stream, row.entity_id, row.state) == (
        cid,
        "products",
        "6a1b...-guid",
        "hint",
    )
    stale_sig, stale = _sign_unleashed(body, NOW - timedelta(minutes=6))
    replayed = {"x-unleashed-signature": stale_sig, "x-unleashed-timestamp": stale}
    assert call(app, path, _unleashed_body(notification="n-2"), headers=replayed) == 401
    assert call(app, path, body) == 401  # token right, signature missing
    assert call(app, "/webhooks/ul", body, headers=headers) == 401  # signature right, no token
    assert count(store) == 1


# --- hostile bodies ---------------------------------------------------------------------------
def test_hostile_bodies_are_4xx_with_one_log_line_each_and_nothing_stored(
    app: Receiver, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    cid = _x_series(store)
    path = f"/webhooks/xs/{X_TOKEN}"
    cases = [
        (b"x" * (app.max_body + 1), FORM, 413),
        (b"payload=%7Bnot json", FORM, 400),
        (b"\xff\xfe\x00garbage", FORM, 400),
        (_x_form({"id": "p-1", "version": 1}), "application/json", 415),
        (_x_form({"id": "p-1", "version": 1}), "", 415),
        (urlencode({"payload": "[1, 2]", "type": "product.update"}).encode(), FORM, 400),
        (
            urlencode(
                {"payload": json.dumps({"id": "p" * 500}), "type": "product.update"}
            ).encode(),
            FORM,
            400,
        ),
    ]
    for body, ctype, status in cases:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="synccli"):
            assert call(app, path, body, ctype) == status, (body[:40], ctype)
        lines = [r for r in caplog.records if r.name.startswith("synccli")]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert X_TOKEN not in lines[0].getMessage()
    assert count(store) == 0
    with store.read_session() as s:
        stats = webhook_stats(s, cid, NOW)
    assert (stats.deliveries_today, stats.rejected_today) == (0, 0)


def test_wrong_method_unknown_path_or_connection(app: Receiver, store: Store) -> None:
    _x_series(store)
    body = _x_form({"id": "p-1", "version": 1})
    assert call(app, f"/webhooks/xs/{X_TOKEN}", body, FORM, method="GET") == 405
    # a name no connection has: answered as a bad token (tests/test_webhooks_names.py)
    assert call(app, f"/webhooks/nobody/{X_TOKEN}", body, FORM) == 401
    assert call(app, "/elsewhere", body, FORM) == 404
    assert count(store) == 0


# --- the store failing ------------------------------------------------------------------------
@pytest.fixture
def impatient(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The same store, waiting at most 0.2 s for a lock another process holds."""
    monkeypatch.setenv("SYNC_LOCK_TIMEOUT", "0.2")
    other = Store(load_settings())
    yield other
    other.dispose()


def test_a_store_that_fails_answers_503_and_the_retry_is_stored_once(
    store: Store, impatient: Store
) -> None:
    """A receiver answering 200 on a database failure loses the change for good (the provider
    does not send it again): 5xx instead, and the provider's retry lands once."""
    _x_series(store)
    app = Receiver(impatient, clock=SimClock(NOW), directory_ttl=0.0)
    body = _x_form({"id": "p-1", "version": 5})
    path = f"/webhooks/xs/{X_TOKEN}"
    assert call(app, path, _x_form({"id": "p-0", "version": 1}), FORM) == 200  # directory read
    path_db = sqlite_path(store.settings.database_url)
    assert path_db is not None
    holder = sqlite3.connect(path_db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        assert call(app, path, body, FORM) == 503
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [r.entity_id for r in rows(store)] == ["p-0"]
    assert call(app, path, body, FORM) == 200
    assert call(app, path, body, FORM) == 200
    assert [r.entity_id for r in rows(store)] == ["p-0", "p-1"]


def test_x_series_signature_where_sent_must_verify_with_the_apps_secret(
    app: Receiver, store: Store
) -> None:
    """Deliveries to an OAuth app carry ``X-Signature`` (its digest's encoding undocumented:
    hex or base64); the URL token is needed all the same."""
    secret = "app-client-secret-42"
    creds = {"client_secret": secret, "webhook_key": X_TOKEN}
    add_connection(store, "xs", "lightspeed-x", {"client_id": "app"}, creds)
    path = f"/webhooks/xs/{X_TOKEN}"
    body = _x_form({"id": "p-1", "version": 1})
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    as_hex = {"X-Signature": f"signature={digest.hex()},algorithm=HMAC-SHA256"}
    as_b64 = {
        "X-Signature": f"signature={base64.b64encode(digest).decode()}, algorithm=HMAC-SHA256"
    }
    forged = {"X-Signature": "signature=" + "0" * 64 + ",algorithm=HMAC-SHA256"}
    assert call(app, path, body, FORM, headers=as_hex) == 200
    assert call(app, path, _x_form({"id": "p-1", "version": 2}), FORM, headers=as_hex) == 401
    assert call(app, path, body, FORM, headers=as_b64) == 200
    assert call(app, path, _x_form({"id": "p-2", "version": 1}), FORM, headers=forged) == 401
    assert call(app, f"/webhooks/xs/{U_TOKEN}", body, FORM, headers=as_hex) == 401
    assert [r.entity_id for r in rows(store)] == ["p-1"]


def test_the_wsgi_entry_point_opens_the_store_the_environment_names(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``synccli.webhooks.app:application`` for gunicorn and the like: built on its first
    request from SYNC_DATA_DIR / SYNC_DATABASE_URL, as every command finds the store."""
    from synccli.webhooks import app as module

    _x_series(store)
    monkeypatch.setattr(module, "_built", None)
    body = _x_form({"id": "p-1", "version": 1})
    assert call(module.application, f"/webhooks/xs/{X_TOKEN}", body, FORM) == 200
    assert call(module.application, "/webhooks/xs/wrong-token", body, FORM) == 401
    assert module._built is not None and module._built.store is not store  # its own
    module._built.store.dispose()
    assert [r.entity_id for r in rows(store)] == ["p-1"]
