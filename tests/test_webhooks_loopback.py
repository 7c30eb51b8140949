"""#23: a simulator's webhooks over real loopback HTTP into the receiver, as in production: the
subscription made the way `webhooks subscribe` makes it, the delivery signed and sent by the
simulator's own sender thread, stored by the receiver, then applied with no API call."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from sqlalchemy import select

from synccli.clock import SimClock
from synccli.sandbox import harness
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import Link, Product, WebhookEventRow
from synccli.sync import products as product_jobs
from synccli.sync import push
from synccli.sync.context import job_run
from synccli.sync.jobs import Job
from synccli.webhooks import manage
from synccli.webhooks.app import Receiver


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def clock() -> SimClock:
    return SimClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


@pytest.fixture()
def receiver_url(store: Store, clock: SimClock) -> Iterator[str]:
    httpd = make_server("127.0.0.1", 0, Receiver(store, clock=clock), handler_class=_Quiet)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _wait_for(store: Store, entity: str, seconds: float = 15.0) -> WebhookEventRow:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with store.session() as s:
            row = s.scalar(select(WebhookEventRow).where(WebhookEventRow.entity_id == entity))
            if row is not None:
                s.expunge(row)
                return row
        time.sleep(0.05)
    raise AssertionError(f"no delivery for {entity} stored within {seconds} s")


def test_an_x_series_price_change_reaches_the_receiver_over_http_and_is_applied(
    store: Store, receiver_url: str, clock: SimClock
) -> None:
    with harness.start("lightspeed-x", seed=5, products=6, customers=2, clock=clock) as running:
        app = running.app
        outbox = app.webhooks
        outbox.policy = dataclasses.replace(outbox.policy, delay=(0.0, 0.0))  # sent at once
        conn = harness.add_connection(store, "shop", running)
        with job_run(store, Job.PULL_PRODUCTS, conn, clock=clock) as jc:
            jc.counts = product_jobs.pull_products(jc)
        done = manage.subscribe(store, "shop", receiver_url, clock)
        assert "product.update" in done.created
        clock.advance(600)  # the change comes well after the pull read the product
        product = app.catalogue.change_prices(app.tenant, 1)[0]
        row = _wait_for(store, product.id)
        assert row.stream == "products" and row.record is not None  # the record itself came
        deadline = time.monotonic() + 10  # the sender notes the answer after the commit
        while not outbox.stats["delivered"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [(a.status, a.ok) for a in outbox.attempts] == [(200, True)]
        calls_before = app.counters.total()
        push.apply_connection(store, get_connection(store, "shop"), clock=clock)
        assert app.counters.total() == calls_before  # applied without an API call
    with store.session() as s:
        price = s.scalar(
            select(Product.price)
            .join(Link, Link.local_id == Product.id)
            .where(Link.kind == "product", Link.remote_id == product.id)
        )
    assert price == product.price
