"""Issue 17: no change is skipped for good, and a ghost is a ghost only when the provider says so.

Every test runs a job against a simulator on loopback and changes the provider's data the way a
real account does: a stamp from a clock that runs ahead, a record edited, deleted or re-coded while
a listing is being paged (through the simulators' hook at their HTTP boundary).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from synccli.clock import SimClock
from synccli.sandbox import harness
from synccli.sandbox.data import Product as SimProduct
from synccli.sandbox.data import World
from synccli.store.db import Store
from synccli.store.models import Link, Product
from synccli.sync import products
from synccli.sync.context import job_run

PROVIDERS = ["xero", "unleashed", "lightspeed"]
SCALE = {"xero": 1.0, "unleashed": 1.0, "lightspeed": 200.0}  # drain the leaky bucket fast
CLOCK = SimClock()


@pytest.fixture(autouse=True)
def _clock() -> None:
    CLOCK.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


def start(provider: str, n: int, **kw) -> harness.Running:
    kw.setdefault("customers", 3)
    running = harness.start(provider, products=n, clock=CLOCK, time_scale=SCALE[provider], **kw)
    if provider == "unleashed":
        running.app.move_all_stock()  # every product gets a StockOnHand row
    return running


@pytest.fixture
def shop(request, store: Store) -> Iterator[tuple[Store, harness.Running, object]]:
    provider, n = request.param
    with start(provider, n) as running:
        conn = harness.add_connection(store, "shop", running, time_scale=SCALE[provider])
        yield store, running, conn


def pull(store: Store, conn) -> products.PullReport:
    with job_run(store, "pull-products", conn, clock=CLOCK) as jc:
        report = products.pull_products(jc)
        jc.counts = report
    return report


def sweep(store: Store, conn, n: int) -> products.SweepReport:
    with job_run(store, "sweep-oldest", conn, clock=CLOCK) as jc:
        report = products.sweep_oldest(jc, n)
        jc.counts = report
    return report


def sync_one(store: Store, conn, sku: str) -> products.ProductSyncReport:
    with job_run(store, "sync-product", conn, clock=CLOCK) as jc:
        return products.sync_product(jc, sku)


def world(app) -> World:
    return app.catalogue.tenant(app.tenant)


def by_code(app, code: str) -> SimProduct:
    return next(p for p in world(app).products.values() if p.code == code)


def local_price(store: Store, sku: str) -> Decimal | None:
    with store.session() as s:
        return s.scalar(select(Product.price).where(Product.sku == sku))


# --- line 4: a stamp in the future does not block later changes ------------------------------
JOBS = ["pull", "sweep-oldest", "sync-product"]


@pytest.mark.parametrize("job", JOBS)
@pytest.mark.parametrize("shop", [(p, 20) for p in PROVIDERS], indirect=True, ids=PROVIDERS)
def test_future_stamped_version_then_real_change_is_applied(shop, job: str) -> None:
    store, running, conn = shop
    pull(store, conn)
    CLOCK.advance(days=1)
    product = by_code(running.app, "SKU-00005")
    # the provider stamps an edit nine hours ahead (its clock runs ahead, or a time-zone slip)
    product.price = Decimal("11.11")
    product.updated_at = CLOCK.now() + timedelta(hours=9)
    first = pull(store, conn)
    assert local_price(store, "SKU-00005") == Decimal("11.11")

    CLOCK.advance(hours=1)
    product.price = Decimal("22.22")  # a real change, stamped by a right clock
    product.updated_at = CLOCK.now()
    if job == "pull":
        pull(store, conn)
    elif job == "sweep-oldest":
        sweep(store, conn, 20)
    else:
        sync_one(store, conn, "SKU-00005")
    assert local_price(store, "SKU-00005") == Decimal("22.22")
    # the future stamp was clamped and flagged in the run that read it
    assert first.future_stamps == 1
    with store.session() as s:
        link = s.scalar(select(Link).where(Link.remote_code == "SKU-00005"))
        assert link.remote_updated_at is not None
        assert link.remote_updated_at <= CLOCK.now() + timedelta(minutes=5)
