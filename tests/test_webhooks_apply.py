"""#23: pushed changes applied from their payload with no call, ids fetched as hints in the
provider's largest batches, and the poll kept only as the safety net while deliveries are healthy.

Deliveries enter the store as the receiver stores them (``record_events``: the process
boundary); the provider is the fake (tests/fakes.py), whose calls are counted exactly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fakes import FakeProvider
from sqlalchemy import select

from synccli.clock import SimClock
from synccli.connectors import payloads
from synccli.connectors.wire import version_stamp
from synccli.sandbox import data
from synccli.store.db import Store
from synccli.store.models import Event, Link, Product, WebhookEventRow
from synccli.store.models import RemoteCustomer as SeenCustomer
from synccli.store.runs import acquire_lease, release_lease
from synccli.store.webhooks import record_events
from synccli.sync import customers, products, push
from synccli.sync.context import job_run
from synccli.sync.status import status_report
from synccli.webhooks.events import WebhookEvent

CLOCK = SimClock()
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OUTLET = "b8ca3a65-0183-11e4-fbb5-2816d2677218"
FIXTURE = Path(__file__).parent / "data" / "webhooks" / "x_series_product_1_0.json"


@pytest.fixture(autouse=True)
def _clock() -> None:
    CLOCK.set(START)


def pull(store: Store, conn, fake: FakeProvider) -> products.PullReport:
    with fake.run(store, "pull-products", conn, clock=CLOCK) as ctx:
        report = products.pull_products(ctx)
        ctx.counts = report
    return report


def link(store: Store, conn, fake: FakeProvider) -> customers.LinkReport:
    with fake.run(store, "link-customers", conn, clock=CLOCK) as ctx:
        report = customers.link_customers(ctx)
        ctx.counts = report
    return report


def deliver(store: Store, conn, stream: str, entity: str, record, version: str | None, key=None):
    event = WebhookEvent(
        conn.provider,
        conn.id,
        stream,
        entity,
        version,
        CLOCK.now(),
        record,
        key or f"{stream}:{entity}:{version}",
    )
    with store.session() as s:
        return record_events(s, [event], received_at=CLOCK.now())


def v1_product(p: data.Product, version: int | None = None, **extra) -> dict:
    """A fake product as X-Series' product.update carries it: the 1.0 shape of the fixture."""
    record = json.loads(FIXTURE.read_text())
    record.update(
        id=p.id,
        sku=p.code,
        name=p.name,
        description=p.description,
        price=float(p.price),
        active=not p.archived,
        updated_at=CLOCK.now().strftime("%Y-%m-%d %H:%M:%S"),
        inventory=[],
    )
    if version is not None:
        record["version"] = version
    record.update(extra)
    return record


def x_series(store: Store, n: int = 20) -> tuple[FakeProvider, object]:
    fake = FakeProvider("lightspeed-x", products=n, customers=5, clock=CLOCK)
    conn = fake.add_connection(store, outlet_id=OUTLET)
    return fake, conn


def local(store: Store, code: str) -> Product:
    with store.session() as s:
        found = s.scalar(select(Product).where(Product.sku == code))
        assert found is not None
        s.expunge(found)
        return found


def states(store: Store) -> list[str]:
    with store.session() as s:
        return list(s.scalars(select(WebhookEventRow.state).order_by(WebhookEventRow.id)))


# --- the 1.0 shape ---------------------------------------------------------------------------


def test_an_x_series_1_0_product_reads_as_the_pull_reads_its_2026_shape() -> None:
    record = json.loads(FIXTURE.read_text())
    pushed = payloads.read("lightspeed-x", "products", record, OUTLET)
    assert pushed is not None and pushed.product is not None
    product = pushed.product
    # 1.0's ``price`` is the tax-exclusive price (675.65 + 101.35 tax at 15%): 2026-07's
    # price_excluding_tax, which is what a pull stores
    assert product.price == Decimal("675.65")
    assert (product.remote_id, product.code, product.name) == (
        "add3ff78-587e-11e3-a29a-bc305bf5da20",
        "1000000",
        "New fancy product",
    )
    assert product.active is True  # deleted_at "" is not deleted
    assert not pushed.ranked  # no version in the 1.0 example: ranked by time only
    assert pushed.changed_at == datetime(2013, 12, 5, 9, 0, 55, tzinfo=UTC)
    deleted = payloads.read(
        "lightspeed-x", "products", {**record, "deleted_at": "2014-01-01 00:00:00"}, OUTLET
    )
    assert deleted is not None and deleted.product is not None and not deleted.product.active
    posted = payloads.read("lightspeed-x", "products", {**record, "active": "0"}, OUTLET)
    assert posted is not None and posted.product is not None and not posted.product.active
    versioned = payloads.read("lightspeed-x", "products", {**record, "version": 77}, OUTLET)
    assert versioned is not None and versioned.ranked
    assert versioned.product is not None and versioned.product.updated_at == version_stamp(77)
    # an unreadable record is not nothing: the caller fetches it by id
    assert payloads.read("lightspeed-x", "products", {**record, "price": "n/a"}, OUTLET) is None


# --- applied from the payload --------------------------------------------------------------------


def test_a_pushed_change_is_applied_with_no_call_and_a_duplicate_only_once(store: Store) -> None:
    fake, conn = x_series(store)
    pull(store, conn, fake)
    calls = fake.total()
    p = fake.catalogue.change_prices(fake.tenant, 1)[0]
    record = v1_product(p, data.product_revision(p))
    assert deliver(store, conn, "products", p.id, record, str(record["version"])) == 1
    # the provider's retry (same event), and the same change delivered again under another key
    assert deliver(store, conn, "products", p.id, record, str(record["version"])) == 0
    deliver(store, conn, "products", p.id, record, str(record["version"]), key="again")
    report = push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert fake.total() == calls  # no call
    assert local(store, p.code).price == p.price
    with store.session() as s:
        prices = s.scalars(select(Event).where(Event.field == "price")).all()
    assert len(prices) == 1  # applied once
    assert report.applied + report.superseded == 2 and states(store) == ["applied", "done"]
    # applying again finds nothing to do
    again = push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert (again.applied, again.superseded) == (0, 0)


def test_an_older_delivery_after_a_newer_one_is_ignored(store: Store) -> None:
    fake, conn = x_series(store)
    pull(store, conn, fake)
    p = fake.catalogue.change_prices(fake.tenant, 1)[0]
    old = v1_product(p, data.product_revision(p))
    old_price = p.price
    CLOCK.advance(minutes=1)
    fake.catalogue.change_prices(
        fake.tenant, 1, exclude={q.id for q in fake.world.products.values() if q.id != p.id}
    )
    new = v1_product(p, data.product_revision(p))
    assert new["price"] != float(old_price)
    deliver(store, conn, "products", p.id, new, str(new["version"]))
    push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    # the older change arrives late (a retry), in a later batch
    deliver(store, conn, "products", p.id, old, str(old["version"]))
    report = push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert local(store, p.code).price == p.price != old_price
    assert report.superseded == 1 and report.applied == 0
    # in one batch the newer of the two wins whatever their order of arrival
    CLOCK.advance(minutes=1)
    fake.catalogue.change_prices(
        fake.tenant, 1, exclude={q.id for q in fake.world.products.values() if q.id != p.id}
    )
    newest = v1_product(p, data.product_revision(p))
    deliver(store, conn, "products", p.id, newest, str(newest["version"]))
    deliver(store, conn, "products", p.id, old, str(old["version"]), key="late-again")
    push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert local(store, p.code).price == p.price


def test_a_pushed_change_older_than_the_last_poll_is_fetched_not_applied(store: Store) -> None:
    """A 1.0 payload without ``version`` ranks by its change time only: one from before the
    last poll may be older than what the poll stored, so it becomes a hint."""
    fake, conn = x_series(store)
    p = fake.catalogue.change_prices(fake.tenant, 1)[0]
    stale = v1_product(p)  # no version
    CLOCK.advance(minutes=10)
    pull(store, conn, fake)  # reads the product as it is now
    fake.catalogue.change_prices(
        fake.tenant, 1, exclude={q.id for q in fake.world.products.values() if q.id != p.id}
    )
    CLOCK.advance(minutes=1)
    deliver(store, conn, "products", p.id, {**stale, "price": 0.01}, None)
    report = push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert report.hinted == 1 and report.applied == 0
    assert local(store, p.code).price != Decimal("0.01")


def test_a_deleted_product_pushed_is_deactivated_not_deleted(store: Store) -> None:
    fake, conn = x_series(store)
    pull(store, conn, fake)
    p = next(iter(fake.world.products.values()))
    CLOCK.advance(minutes=5)
    record = v1_product(p, data.product_revision(p) + 1, deleted_at="2026-03-02 09:05:00")
    deliver(store, conn, "products", p.id, record, str(record["version"]))
    push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    product = local(store, p.code)  # still there: the merchant's data is never deleted
    assert product.active is False
    with store.session() as s:
        linked = s.scalar(select(Link).where(Link.remote_id == p.id))
        assert linked is not None and linked.state == "archived"


def test_pushed_stock_is_applied_for_the_shops_outlet_only(store: Store) -> None:
    fake, conn = x_series(store)
    pull(store, conn, fake)
    p = next(iter(fake.world.products.values()))
    CLOCK.advance(minutes=5)
    # inventory.update: the outlet's inventory row with the product embedded, and no time of its
    # own (its delivery's stands in)
    ours = {"product_id": p.id, "outlet_id": OUTLET, "count": "42.00000", "product": v1_product(p)}
    theirs = {**ours, "outlet_id": "00000000-0000-4000-8000-000000000000", "count": "7"}
    deliver(store, conn, "stock", p.id, theirs, None, key="other-outlet")
    deliver(store, conn, "stock", p.id, ours, None)
    calls = fake.total()
    push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert fake.total() == calls
    assert local(store, p.code).stock == Decimal(42)


# --- hints ---------------------------------------------------------------------------------------


def test_contact_hints_are_fetched_in_one_batched_call_and_closed(store: Store) -> None:
    fake = FakeProvider("xero", products=0, customers=60, clock=CLOCK)
    conn = fake.add_connection(store)
    link(store, conn, fake)
    changed = list(fake.world.customers.values())[:30]
    CLOCK.advance(minutes=5)
    for c in changed:
        c.email = f"new-{c.id[:8]}@example.com"
        c.updated_at = CLOCK.now()
        deliver(store, conn, "customers", c.id, None, CLOCK.now().isoformat())
    before = fake.calls["get_customers"], fake.total()
    report = link(store, conn, fake)
    # healthy deliveries: no listing, one IDs= call for all 30 hints
    assert fake.calls["get_customers"] - before[0] == 1
    assert fake.total() - before[1] == 1
    assert report.push["fetched"] == 30 and set(states(store)) == {"done"}
    with store.session() as s:
        emails = {r.remote_id: r.email for r in s.scalars(select(SeenCustomer))}
    assert all(emails[c.id] == c.email for c in changed)
    # one the provider no longer has: closed, nothing deleted
    CLOCK.advance(minutes=5)
    deliver(store, conn, "customers", "0" * 8 + "-0000-4000-8000-000000000000", None, "x")
    assert link(store, conn, fake).push["gone"] == 1
    # 60 hints would be two IDs= lists (48 + 12): the listing, one call, reads them instead
    CLOCK.advance(minutes=5)
    for c in list(fake.world.customers.values())[:60]:
        deliver(store, conn, "customers", c.id, None, CLOCK.now().isoformat(), key=f"b{c.id}")
    before = dict(fake.calls)
    listed = link(store, conn, fake)
    made = {k: v - before.get(k, 0) for k, v in fake.calls.items() if v - before.get(k, 0)}
    assert made == {"changed_customers": 1} and listed.push["covered"] == 60


def test_product_hints_are_fetched_in_one_batch_or_polled_when_that_costs_less(
    store: Store,
) -> None:
    """Both X-Series streams healthy: 100 hinted products are one look-up batch (a search and
    the levels: 2 calls, what polling both streams would cost), fetched with no listing; 120 are
    two batches (4 calls), so the pull polls the two streams instead, which reads them too."""
    fake, conn = x_series(store, 150)
    pull(store, conn, fake)
    for n, minutes in ((100, 5), (120, 10)):
        CLOCK.set(START + timedelta(minutes=minutes))
        changed = fake.catalogue.change_prices(fake.tenant, n)
        for p in changed:  # ids only (say, records the receiver could not read)
            deliver(store, conn, "products", p.id, None, CLOCK.now().isoformat())
        other = next(q for q in fake.world.products.values() if q not in changed)
        stock = {"product_id": other.id, "outlet_id": OUTLET, "count": f"{other.stock}"}
        deliver(store, conn, "stock", other.id, stock, None, key=f"stock-{minutes}")
        before = dict(fake.calls)
        report = pull(store, conn, fake)
        made = {k: v - before.get(k, 0) for k, v in fake.calls.items() if v - before.get(k, 0)}
        if n == 100:
            assert made == {"get_products": 1, "get_stock": 1}
            assert report.push["fetched"] == 100
        else:
            assert "get_products" not in made and made["changed_products"] >= 1
            assert report.push["covered"] == 120
        assert all(local(store, p.code).price == p.price for p in changed)
        assert set(states(store)) <= {"applied", "done"}


# --- cadence -------------------------------------------------------------------------------------


def test_a_pull_while_deliveries_are_healthy_costs_no_call_until_the_safety_poll(
    store: Store,
) -> None:
    fake, conn = x_series(store)
    pull(store, conn, fake)
    for minute in range(5, 126, 15):
        CLOCK.set(START + timedelta(minutes=minute))
        p = fake.catalogue.change_prices(fake.tenant, 1)[0]
        p.stock, p.stock_updated_at = Decimal(3), CLOCK.now()
        record = v1_product(p, data.product_revision(p))
        deliver(store, conn, "products", p.id, record, str(record["version"]))
        stock = {"product_id": p.id, "outlet_id": OUTLET, "count": "3.00000"}
        deliver(store, conn, "stock", p.id, stock, None)
        calls = dict(fake.calls)
        report = pull(store, conn, fake)
        assert local(store, p.code).price == p.price  # applied from the payload
        assert local(store, p.code).stock == 3
        if minute < 120:
            assert fake.calls == calls, minute  # 0 calls: nothing polled
            assert report.push["modes"]["products"].startswith("push: last delivery 0 min ago")
        else:  # two hours since the last poll: the safety poll runs
            assert fake.total() - sum(calls.values()) == 2, minute
    shown = status_report(store, CLOCK.now(), [conn.name])[0].push
    assert (
        shown["products"]["mode"] == "push"
        and "next safety poll in 2h00" in shown["products"]["summary"]
    )


def test_when_deliveries_stop_polling_returns_to_every_run(cli, store: Store) -> None:
    fake, conn = x_series(store)
    pull(store, conn, fake)
    p = fake.catalogue.change_prices(fake.tenant, 1)[0]
    record = v1_product(p, data.product_revision(p))
    deliver(store, conn, "products", p.id, record, str(record["version"]))
    CLOCK.advance(minutes=15)
    calls = fake.total()
    pull(store, conn, fake)
    assert fake.total() - calls == 1  # products healthy; stock (no deliveries) still polled
    CLOCK.advance(minutes=61)  # silence past the window
    for _ in range(2):
        calls = fake.total()
        report = pull(store, conn, fake)
        assert fake.total() - calls == 2  # both streams, every run
        CLOCK.advance(minutes=15)
    assert report.push["modes"]["products"].startswith("push silent since 1h")
    shown = status_report(store, CLOCK.now(), [conn.name])[0].push
    assert shown["products"]["mode"] == "poll"
    # the command says so too (on the wall clock: these deliveries are months old by now)
    out = cli("status", "-c", conn.name)
    assert out.exit_code == 0, out.stderr
    assert "  products: push silent since " in out.stdout and "polling every run" in out.stdout
    as_json = json.loads(cli("status", "-c", conn.name, "--json").stdout)
    assert as_json[0]["push"]["products"]["mode"] == "poll"
    assert as_json[0]["push"]["products"]["last_delivery_at"].startswith("2026-03-02T09:")


def test_apply_waits_for_a_running_pull_which_applies_the_deliveries(store: Store) -> None:
    fake, conn = x_series(store)
    pull(store, conn, fake)
    p = fake.catalogue.change_prices(fake.tenant, 1)[0]
    record = v1_product(p, data.product_revision(p))
    deliver(store, conn, "products", p.id, record, str(record["version"]))
    acquire_lease(store, "pull-products", conn.id, CLOCK.now(), timedelta(minutes=5), "other")
    report = push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert report.busy and report.applied == 0 and states(store) == ["pending"]
    release_lease(store, "pull-products", conn.id, "other")
    pull(store, conn, fake)
    assert states(store) == ["applied"] and local(store, p.code).price == p.price


def test_unleashed_id_only_deliveries_wait_for_one_batched_fetch(store: Store) -> None:
    """Unleashed's deliveries name the record's Guid only: no call until the oldest has waited
    the connection's hint_wait (`webhooks apply` from cron), then one product look-up call for
    all of them (the stock of those found in one more)."""
    fake = FakeProvider("unleashed", products=80, customers=0, clock=CLOCK)
    conn = fake.add_connection(store, hint_wait="1m")
    pull(store, conn, fake)
    CLOCK.advance(minutes=5)
    changed = fake.catalogue.change_prices(fake.tenant, 40)
    for p in changed:
        deliver(store, conn, "products", p.id, None, CLOCK.now().isoformat())
    calls = fake.total()
    waiting = push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert fake.total() == calls and waiting.fetched == 0  # not before hint_wait
    assert waiting.hints_in == 60
    CLOCK.advance(minutes=1)
    before = dict(fake.calls)
    report = push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert fake.calls["get_products"] - before.get("get_products", 0) == 1
    assert fake.total() - calls == 2  # the products, then their stock
    assert report.fetched == 40 and set(states(store)) == {"done"}
    assert all(local(store, p.code).price == p.price for p in changed)


# --- end to end: the simulator's deliveries, through the receiver, applied ------------------------


def test_x_series_simulator_deliveries_are_applied_with_no_api_call(cli, store: Store) -> None:
    """What the X-Series simulator sends (synccli/sandbox/webhook_formats.py: 1.0-shaped
    product.update and inventory.update, form-encoded, signed) goes through the receiver into
    the store and is applied by `webhooks apply` without a call; the next pull, deliveries being
    healthy, costs none either."""
    from synccli.sandbox import harness
    from synccli.sandbox.webhooks import wsgi_transport
    from synccli.store.connections import get_connection
    from synccli.webhooks.app import Receiver

    def api_calls(app) -> int:
        return sum(n for (_m, e), n in app.counters.calls.items() if not e.startswith("oauth."))

    clock = SimClock(START)
    with harness.start("lightspeed-x", seed=3, products=20, customers=3, clock=clock,
                       time_scale=1000.0, deliveries="manual") as running:  # fmt: skip
        app = running.app
        harness.add_connection(store, "shop", running, time_scale=1000.0)
        conn = get_connection(store, "shop")
        with job_run(store, "pull-products", conn, clock=clock) as ctx:
            products.pull_products(ctx)
        out = cli("webhooks", "subscribe", "-c", "shop", "--url", "http://127.0.0.1:9")
        assert out.exit_code == 0, out.stderr
        app.webhooks.transport = wsgi_transport(Receiver(store, clock=clock, directory_ttl=0.0))
        clock.advance(minutes=5)
        priced = app.catalogue.change_prices(app.tenant, 2)
        moved = app.catalogue.change_stock(app.tenant, 2, exclude={p.id for p in priced})
        clock.advance(60)
        app.webhooks.pump()
        before = api_calls(app)
        report = push.apply_connection(store, conn, clock)
        assert api_calls(app) == before  # applied from the payloads
        assert report.applied == 4, report
        for p in priced:
            assert local(store, p.code).price == p.price
        for p in moved:
            assert local(store, p.code).stock == p.stock
        clock.advance(minutes=10)
        with job_run(store, "pull-products", conn, clock=clock) as ctx:
            pulled = products.pull_products(ctx)
        assert api_calls(app) == before  # both streams healthy: no poll for two hours
        assert pulled.push["modes"]["stock"].startswith("push: last delivery 10 min ago")


def test_the_receiver_has_delivered_records_applied_within_a_second(store: Store) -> None:
    """`webhooks serve`'s receiver names the connection after the commit; the applier's own
    thread applies its records a moment later (the answer never waits for it)."""
    import time

    from synccli.sandbox import harness
    from synccli.sandbox.webhooks import wsgi_transport
    from synccli.store.connections import get_connection
    from synccli.webhooks import manage
    from synccli.webhooks.app import Receiver
    from synccli.webhooks.applier import Applier

    clock = SimClock(START)
    with harness.start("lightspeed-x", seed=4, products=10, customers=3, clock=clock,
                       time_scale=1000.0, deliveries="manual") as running:  # fmt: skip
        app = running.app
        harness.add_connection(store, "shop", running, time_scale=1000.0)
        conn = get_connection(store, "shop")
        with job_run(store, "pull-products", conn, clock=clock) as ctx:
            products.pull_products(ctx)
        manage.subscribe(store, "shop", "http://127.0.0.1:9", clock)
        applier = Applier(store, clock, linger=0.05).start()
        try:
            receiver = Receiver(store, clock=clock, directory_ttl=0.0, on_stored=applier.stored)
            app.webhooks.transport = wsgi_transport(receiver)
            clock.advance(minutes=5)
            [p] = app.catalogue.change_prices(app.tenant, 1)
            clock.advance(60)
            app.webhooks.pump()
            deadline = time.monotonic() + 5
            while local(store, p.code).price != p.price and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            applier.stop()
    assert local(store, p.code).price == p.price
    assert applier.applied == 1


def test_concurrent_appliers_apply_each_delivery_once(store: Store) -> None:
    """Four processes' worth of `webhooks apply` (and the serve thread) at once: each delivery
    is applied once, one event per changed field; the others find the lease held or nothing
    left."""
    import threading

    fake, conn = x_series(store)
    pull(store, conn, fake)
    CLOCK.advance(minutes=5)
    changed = fake.catalogue.change_prices(fake.tenant, 10)
    for p in changed:
        record = v1_product(p, data.product_revision(p))
        deliver(store, conn, "products", p.id, record, str(record["version"]))
    start = threading.Barrier(4)
    reports: list[push.PushReport] = []

    def one() -> None:
        start.wait()
        reports.append(push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.applied for r in reports) == 10
    with store.session() as s:
        prices = s.scalars(select(Event).where(Event.field == "price")).all()
    assert len(prices) == 10 and set(states(store)) == {"applied"}
    assert all(local(store, p.code).price == p.price for p in changed)


def test_serve_fetches_id_only_deliveries_once_the_oldest_waited_hint_wait(store: Store) -> None:
    """Unleashed pushes ids only: with ``hint_wait`` set, the receiver's applier fetches them in
    one batch once the oldest has waited that long (not before), and closes them."""
    import time

    from synccli.sandbox import harness
    from synccli.store.connections import get_connection, set_values
    from synccli.webhooks.applier import Applier

    clock = CLOCK  # the one deliver() stamps deliveries with
    with harness.start("unleashed", seed=5, products=30, customers=0, clock=clock) as running:
        app = running.app
        harness.add_connection(store, "stock", running)
        set_values(store, "stock", {"hint_wait": "1m"})
        conn = get_connection(store, "stock")
        with job_run(store, "pull-products", conn, clock=clock) as ctx:
            products.pull_products(ctx)
        clock.advance(minutes=5)
        changed = app.catalogue.change_prices(app.tenant, 3)
        for p in changed:
            deliver(store, conn, "products", p.id, None, clock.now().isoformat())
        applier = Applier(store, clock, linger=0.01).start()
        try:
            applier.stored({conn.id})
            time.sleep(0.3)
            assert applier.fetched == 0 and set(states(store)) == {"hint"}  # not yet due
            clock.advance(minutes=1)
            applier.stored({conn.id})  # the next delivery's nudge
            deadline = time.monotonic() + 5
            while applier.fetched < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            applier.stop()
    assert applier.fetched == 3 and set(states(store)) == {"done"}
    assert all(local(store, p.code).price == p.price for p in changed)


def test_deliveries_no_job_applies_are_closed_not_left_open(store: Store) -> None:
    """Xero's Invoices events and X-Series' sale.update are stored, but nothing reads remote
    invoices back: they are closed, so `webhooks status` does not count them waiting for ever."""
    from synccli.store.webhooks import webhook_stats

    fake, conn = x_series(store)
    deliver(store, conn, "sales", "s1", {"id": "s1", "state": "CLOSED"}, None)
    deliver(store, conn, "invoices", "i1", None, None)
    calls = fake.total()
    report = push.apply_connection(store, conn, CLOCK, connector_factory=fake.factory)
    assert report.unfollowed == 2 and fake.total() == calls
    with store.session() as s:
        stats = webhook_stats(s, conn.id, CLOCK.now())
    assert (stats.pending_records, stats.pending_hints) == (0, 0)


def test_webhooks_apply_all_goes_on_past_a_connection_it_cannot_apply(cli, store: Store) -> None:
    """`webhooks apply --all`: a connection never authorised is named with its exit code (5), and
    the others' deliveries are applied all the same (no API call either way)."""
    from synccli.store.connections import add_connection

    token = {"domain_prefix": "good", "grant": "personal_token", "outlet_id": OUTLET}
    good = add_connection(store, "good", "lightspeed-x", token, {"client_secret": "pt-1234"})
    oauth = {"domain_prefix": "bad", "client_id": "app"}
    bad = add_connection(store, "bad", "lightspeed-x", oauth, {"client_secret": "s-1234"})
    record = json.loads(FIXTURE.read_text())
    for conn in (good, bad):
        deliver(store, conn, "products", record["id"], record, None)
    out = cli("webhooks", "apply", "--all")
    assert out.exit_code == 5, out.stderr
    assert "good: applied 1" in out.stdout and "never been authorised" in out.stderr
    assert local(store, "1000000").price == Decimal("675.65")
