"""#23: the receiver takes what each simulator sends (synccli/sandbox/webhook_formats.py: the
providers' formats and signatures as documented), and refuses what does not verify."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import requests
from sqlalchemy import select

from synccli.clock import SimClock
from synccli.sandbox import harness
from synccli.sandbox.webhooks import wsgi_transport
from synccli.store.connections import credentials, get_connection, set_values
from synccli.store.db import Store
from synccli.store.models import WebhookEventRow
from synccli.store.webhooks import webhook_stats
from synccli.webhooks.app import Receiver

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _rows(store: Store) -> list[WebhookEventRow]:
    with store.read_session() as s:
        return list(s.scalars(select(WebhookEventRow).order_by(WebhookEventRow.id)))


def _receiver(store: Store, clock: SimClock) -> Receiver:
    return Receiver(store, clock=clock, directory_ttl=0.0)


def test_x_series_deliveries_from_the_subscription_subscribe_made(cli, store: Store) -> None:
    clock = SimClock(T0)
    with harness.start("lightspeed-x", seed=3, products=5, customers=3, clock=clock,
                       deliveries="manual") as running:  # fmt: skip
        app = running.app
        harness.add_connection(store, "shop", running)
        out = cli("webhooks", "subscribe", "-c", "shop", "--url", "http://127.0.0.1:9")
        assert out.exit_code == 0, out.stderr
        app.webhooks.transport = wsgi_transport(_receiver(store, clock))
        product = app.catalogue.change_prices(app.tenant, 1)[0]
        clock.advance(60)
        app.webhooks.pump()
        assert app.webhooks.stats["delivered"] >= 1
        # the app's secret changed on our side: its X-Signature no longer verifies
        set_values(store, "shop", {"client_secret": "not-the-apps-secret"})
        app.catalogue.change_prices(app.tenant, 1)
        clock.advance(60)
        app.webhooks.pump()
    [row] = [r for r in _rows(store) if r.stream == "products"]
    assert row.entity_id == product.id and row.state == "pending"
    assert row.record is not None and row.record["sku"] == product.code
    conn = get_connection(store, "shop")
    with store.read_session() as s:
        assert webhook_stats(s, conn.id, clock.now()).rejected_today >= 1


def test_xero_intent_to_receive_passes_and_contact_events_land(store: Store) -> None:
    clock = SimClock(T0)
    with harness.start("xero", seed=3, products=5, customers=3, clock=clock,
                       deliveries="manual") as running:  # fmt: skip
        app = running.app
        harness.add_connection(store, "books", running)
        made = requests.post(
            f"{running.url}/sandbox/webhooks", json={"url": "http://127.0.0.1:9/webhooks/books"},
            timeout=5,
        )  # fmt: skip
        set_values(store, "books", {"webhook_key": made.json()["key"]})
        app.webhooks.transport = wsgi_transport(_receiver(store, clock))
        app.webhooks.pump()
        hook = requests.get(f"{running.url}/sandbox/webhooks/{made.json()['id']}", timeout=5)
        assert hook.json()["status"] == "OK"  # a good answer to the good ones, 401 to the bad
        added = app.catalogue.add_customers(app.tenant, 1)[0]
        clock.advance(60)
        app.webhooks.pump()
    [row] = _rows(store)
    assert (row.stream, row.entity_id, row.state) == ("customers", added.id, "hint")


def test_unleashed_signed_deliveries_land_and_a_wrong_key_is_refused(cli, store: Store) -> None:
    clock = SimClock(T0)
    with harness.start("unleashed", seed=3, products=5, customers=3, clock=clock,
                       deliveries="manual") as running:  # fmt: skip
        app: Any = running.app
        harness.add_connection(store, "stock", running)
        assert (
            cli("webhooks", "subscribe", "-c", "stock", "--url", "http://127.0.0.1:9").exit_code
            == 0
        )
        token = credentials(store, get_connection(store, "stock"))["webhook_key"]
        url = f"http://127.0.0.1:9/webhooks/stock/{token}"
        kinds = ["product.created", "product.updated", "customer.updated"]
        sub = app.webhooks.subscribe(url, kinds, "the-signing-key-1234", app.tenant)
        set_values(store, "stock", {"webhook_signing_key": sub.secret})
        app.webhooks.transport = wsgi_transport(_receiver(store, clock))
        product = app.catalogue.change_prices(app.tenant, 1)[0]
        clock.advance(60)
        app.webhooks.pump()
        set_values(store, "stock", {"webhook_signing_key": "another-key-5678"})
        app.catalogue.change_prices(app.tenant, 1)
        clock.advance(60)
        app.webhooks.pump()
    [row] = _rows(store)
    assert (row.stream, row.entity_id, row.state) == ("products", product.id, "hint")
    with store.read_session() as s:
        assert webhook_stats(s, get_connection(store, "stock").id, clock.now()).rejected_today == 1
