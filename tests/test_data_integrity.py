"""Issue 17: no change is skipped for good, and a ghost is a ghost only when the provider says so.

Every test runs a job against a simulator on loopback and changes the provider's data the way a
real account does: a stamp from a clock that runs ahead, a record edited, deleted or re-coded while
a listing is being paged (through the simulators' hook at their HTTP boundary).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from xero_helpers import make_connector
from xero_helpers import running as serving

from synccli import registry
from synccli.clock import SimClock
from synccli.sandbox import harness
from synccli.sandbox.data import Customer as SimCustomer
from synccli.sandbox.data import Product as SimProduct
from synccli.sandbox.data import World
from synccli.sandbox.xero import XeroSandbox
from synccli.store.db import Store
from synccli.store.models import Cursor, Customer, Event, Link, Product
from synccli.sync import customers, invoices, products
from synccli.sync.context import job_run
from synccli.sync.orders import add_orders, line_amounts

PROVIDERS = list(registry.suite_names())
# drain the leaky bucket (Lightspeed) and the 5-minute window (X-Series) fast
SCALE = {**dict.fromkeys(PROVIDERS, 1.0), "lightspeed": 200.0, "lightspeed-x": 1000.0}
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
    # the provider stamps an edit nine hours ahead (its clock runs ahead, or a time-zone slip),
    # as its answers show it (Unleashed's JSON shows every stamp 13 h behind by default)
    product.price = Decimal("11.11")
    shift = getattr(running.app, "timestamp_offset_hours", 0)
    product.updated_at = CLOCK.now() + timedelta(hours=9 + shift)
    first = pull(store, conn)
    assert local_price(store, "SKU-00005") == Decimal("11.11")

    CLOCK.advance(hours=1)
    product.price = Decimal("22.22")  # a real change, stamped by a right clock
    product.updated_at = CLOCK.now()
    if job == "pull":
        pull(store, conn)
    elif job == "sweep-oldest":
        if sweep(store, conn, 20).swept_by_pull is not None:
            pull(store, conn)  # Xero: the pulls do the sweep's work (its sweep makes no call)
    else:
        sync_one(store, conn, "SKU-00005")
    assert local_price(store, "SKU-00005") == Decimal("22.22")
    # the future stamp was clamped and flagged in the run that read it; where stamps are the
    # provider's change counter (X-Series versions) no record can lie in the future
    version_stamps = registry.get(running.provider).capabilities.version_stamps
    assert first.future_stamps == (0 if version_stamps else 1)
    with store.session() as s:
        link = s.scalar(select(Link).where(Link.remote_code == "SKU-00005"))
        assert link.remote_updated_at is not None
        assert link.remote_updated_at <= CLOCK.now() + timedelta(minutes=5)


# --- lines 2 and 3: Xero Contacts paging ---------------------------------------------------------
def add_local_customers(store: Store, conn, remotes: list[SimCustomer]) -> None:
    """A local customer for each remote one, with the same email (link-customers' match)."""
    with store.session() as s:
        s.add_all(
            Customer(
                connection_id=conn.id,
                name=c.name,
                email=c.email,
                first_name=c.first_name,
                last_name=c.last_name,
                created_at=CLOCK.now(),
            )
            for c in remotes
        )


def link_run(store: Store, conn) -> customers.LinkReport:
    with job_run(store, customers.JOB, conn, clock=CLOCK) as jc:
        report = customers.link_customers(jc)
        jc.counts = report
    return report


def linked_customers(store: Store) -> set[str]:
    with store.session() as s:
        return set(s.scalars(select(Link.remote_id).where(Link.kind == "customer")))


def contacts_in_listing_order(app) -> list[SimCustomer]:
    """The order of ``GET /Contacts?order=UpdatedDateUTC ASC`` (ties by ContactID)."""
    return sorted(world(app).customers.values(), key=lambda c: (c.updated_at, c.id))


def test_xero_contact_pages_shorter_than_asked_do_not_end_the_listing(store: Store) -> None:
    with start("xero", 0, customers=250) as running:
        conn = harness.add_connection(store, "shop", running)
        remotes = list(world(running.app).customers.values())
        add_local_customers(store, conn, remotes)
        report = link_run(store, conn)
        # pages of 100 rows when 1000 were asked for; pagination says 3 pages
        assert linked_customers(store) == {c.id for c in remotes}
        assert report.pages == 3 and report.linked == 250


def test_xero_contact_edited_on_an_earlier_page_while_a_later_one_is_read_is_not_lost(
    store: Store,
) -> None:
    with start("xero", 0, customers=350) as running:
        app = running.app
        conn = harness.add_connection(store, "shop", running)
        remotes = contacts_in_listing_order(app)
        add_local_customers(store, conn, remotes)
        edited = remotes[4]  # on page 1
        # moving to the end of the listing, it shifts every later contact back one place: the
        # first of page 3 slides onto page 2, already read (Xero-Net#241 warns of exactly this)
        slid = remotes[200]
        served: list[int] = []

        def edit_while_paging(req, endpoint: str) -> None:
            if endpoint == "Contacts" and req.method == "GET" and req.query.get("page") == "3":
                if not served:
                    edited.name += " (edited)"
                    edited.updated_at = CLOCK.now()
                served.append(3)

        app.on_request.append(edit_while_paging)
        first = link_run(store, conn)
        with store.session() as s:
            cursor = s.get(Cursor, (conn.id, customers.STREAM))
            assert cursor is not None and cursor.value is not None
        # linked in this run, or the cursor stays at or before it so that the next run reads it
        assert slid.id in linked_customers(store) or cursor.value <= slid.updated_at
        CLOCK.advance(minutes=10)
        link_run(store, conn)
        assert linked_customers(store) == {c.id for c in remotes}
        assert first.errors == []


# --- line 2: Unleashed and Lightspeed pages ------------------------------------------------------
def once_when_served(app, endpoint: str, page: int, change) -> list[int]:
    """Run ``change()`` once, as page ``page`` of a listing of ``endpoint`` is served: by its path
    (Unleashed: ``/Products/2``) or, for cursor paging (Lightspeed), the ``page``-th request."""
    served: list[int] = []

    def hook(req, served_endpoint: str) -> None:
        if served_endpoint != endpoint or req.method != "GET":
            return
        served.append(1)
        number = req.path.rstrip("/").rsplit("/", 1)[-1]
        this = int(number) if number.isdigit() else len(served)
        if this == page and len(served) <= page and not getattr(hook, "done", False):
            hook.done = True  # type: ignore[attr-defined]
            change()

    app.on_request.append(hook)
    return served


def test_unleashed_product_recoded_while_a_later_page_is_read_loses_no_change(
    store: Store,
) -> None:
    with start("unleashed", 2500) as running:
        app = running.app
        conn = harness.add_connection(store, "shop", running)
        pull(store, conn)
        changed = app.catalogue.change_prices(app.tenant, 2500)  # every product, three pages
        CLOCK.advance(days=1)  # the next pull runs a day later
        recoded = by_code(app, "SKU-00010")  # on page 1 (the listing is in code order)

        def recode() -> None:
            # moving to the end of the listing, it shifts every later product back one place:
            # the first of page 2 slides onto page 1, already read
            recoded.code = "ZZZ-00010"
            recoded.updated_at = CLOCK.now()

        once_when_served(app, "Products", 2, recode)
        slid = by_code(app, "SKU-01001")
        report = pull(store, conn)
        assert report.errors == []
        # applied in this run, or the cursor stays at or before it so that the next run reads it
        with store.session() as s:
            cursor = s.get(Cursor, (conn.id, "products"))
            applied = s.scalar(select(Product.price).where(Product.sku == "SKU-01001"))
        assert applied == slid.price or cursor.value <= slid.updated_at
        CLOCK.advance(hours=1)
        pull(store, conn)  # "in this run or the next"
        with store.session() as s:
            prices = dict(
                s.execute(
                    select(Link.remote_id, Product.price).join(Product, Product.id == Link.local_id)
                ).all()
            )
        stale = [p.code for p in changed if prices[p.id] != p.price]
        assert stale == []


def test_lightspeed_item_edited_while_a_later_page_is_read_loses_no_change(store: Store) -> None:
    with start("lightspeed", 250) as running:
        app = running.app
        conn = harness.add_connection(store, "shop", running, time_scale=SCALE["lightspeed"])
        pull(store, conn)
        changed = app.catalogue.change_prices(app.tenant, 250)  # three pages of 100
        CLOCK.advance(days=1)
        edited = by_code(app, "SKU-00010")

        def edit() -> None:
            edited.price += Decimal("1.00")
            edited.updated_at = CLOCK.now()

        once_when_served(app, "Item", 2, edit)
        report = pull(store, conn)
        assert report.errors == []
        CLOCK.advance(hours=1)
        pull(store, conn)
        with store.session() as s:
            prices = dict(
                s.execute(
                    select(Link.remote_code, Product.price).join(
                        Product, Product.id == Link.local_id
                    )
                ).all()
            )
        assert [p.code for p in changed if prices[p.code] != p.price] == []


# --- line 5: a ghost is a ghost only when the provider says so --------------------------------
def active_skus(store: Store) -> set[str]:
    with store.session() as s:
        return set(s.scalars(select(Product.sku).where(Product.active.is_(True))))


@pytest.mark.parametrize("change", ["deleted", "recoded"])
def test_unleashed_product_deleted_or_recoded_while_the_catalogue_pages_flags_only_that_product(
    store: Store, change: str
) -> None:
    with start("unleashed", 2500) as running:
        app = running.app
        conn = harness.add_connection(store, "shop", running)
        pull(store, conn)
        CLOCK.advance(days=1)
        live = active_skus(store)
        target = by_code(app, "SKU-00010")  # on page 1 of the code-ordered listing

        def delete_or_recode() -> None:
            # either shifts every later product back one place as page 2 is served
            if change == "deleted":
                del world(app).products[target.id]
            else:
                target.code, target.updated_at = "ZZZ-00010", CLOCK.now()

        once_when_served(app, "Products", 2, delete_or_recode)
        report = sweep(store, conn, 2500)  # listing the catalogue costs fewer calls than ids
        if change == "deleted":
            assert [g["sku"] for g in report.ghosts] == ["SKU-00010"]
            assert active_skus(store) == live - {"SKU-00010"}
        else:
            assert report.ghosts == []
            assert active_skus(store) == live
            assert [(c.sku, c.field, c.new) for c in report.changes] == [
                ("SKU-00010", "remote_code", "ZZZ-00010")
            ]


# --- line 6: a re-SKU at the provider -----------------------------------------------------------
TAX = {p.name: p.sandbox.tax_code for p in registry.providers()}  # 15% in each simulator


@pytest.mark.parametrize("shop", [(p, 5) for p in PROVIDERS], indirect=True, ids=PROVIDERS)
def test_remote_code_change_moves_the_link_and_invoices_post_against_the_linked_item(shop) -> None:
    store, running, conn = shop
    app = running.app
    pull(store, conn)
    CLOCK.advance(hours=2)
    product = by_code(app, "SKU-00002")
    product.code = "SKU-00002-B"  # re-coded at the provider
    product.updated_at = CLOCK.now()
    report = pull(store, conn)
    assert [(c.sku, c.field, c.old, c.new) for c in report.changes] == [
        ("SKU-00002", "remote_code", "SKU-00002", "SKU-00002-B")
    ]
    with store.session() as s:
        link = s.scalar(
            select(Link).where(Link.kind == "product", Link.remote_code.like("SKU-00002%"))
        )
        assert link is not None and link.remote_code == "SKU-00002-B"
        events = s.execute(
            select(Event.field, Event.old, Event.new).where(Event.local_id == link.local_id)
        ).all()
        assert ("remote_code", "SKU-00002", "SKU-00002-B") in [tuple(e) for e in events]
        # the shop's own SKU stays as the shop set it
        assert s.get(Product, link.local_id).sku == "SKU-00002"

    customer = next(iter(world(app).customers.values()))
    amount, tax = line_amounts(Decimal(2), Decimal("12.50"), Decimal("0.15"))
    order = {
        "number": "WEB-0001",
        "date": "2026-03-02",
        "currency": "NZD",
        "customer": {"email": customer.email, "name": customer.name},
        "lines": [
            {
                "sku": "SKU-00002",
                "description": "Re-coded product",
                "quantity": 2,
                "unit_price": "12.50",
                "tax_code": TAX[running.provider],
                "tax_rate": "0.15",
            }
        ],
        "total": str(amount + tax),
    }
    add_orders(store, conn, json.dumps(order) + "\n", now=CLOCK.now())
    with job_run(store, invoices.JOB, conn, clock=CLOCK) as jc:
        posted = invoices.post_invoices(jc)
        jc.counts = posted
    assert (posted.posted, posted.rejected) == (1, 0)
    assert app.counters.creates["product"] == 0  # posted against the linked item, none created
    (invoice,) = world(app).invoices.values()
    body = json.dumps(invoice.body, default=str)
    linked_item = {
        "xero": '"ItemCode": "SKU-00002-B"',
        "unleashed": f'"product_id": "{product.id}"',
        "lightspeed": f'"itemID": "{product.seq}"',
        "lightspeed-x": f'"product": {{"id": "{product.id}"}}',
    }[running.provider]
    assert linked_item in body


def test_xero_lookup_listing_not_in_time_order_is_read_again_whole_when_it_shifts() -> None:
    """A look-up listing (``where``, Xero's default order by Name) that shifts while paged is
    read again from its start: only a listing in time order may be taken up from a stamp."""
    app = XeroSandbox(products=0, customers=0, clock=CLOCK)
    month_ago = CLOCK.now() - timedelta(days=30)
    shared = [
        app.catalogue.gen.add_customer(
            app.world(), email="family@shop.example", at=month_ago + timedelta(seconds=i)
        )
        for i in range(150)
    ]
    by_name = sorted(shared, key=lambda c: c.name)
    renamed = by_name[3]  # on page 1; renamed to the end of the order, as page 2 is served

    def rename() -> None:
        renamed.name = "Zz " + renamed.name
        renamed.updated_at = CLOCK.now()

    once_when_served(app, "Contacts", 2, rename)
    with serving(app) as server:
        conn, _, _ = make_connector(app, server.url, clock=CLOCK)
        found = conn.find_customers(email="family@shop.example")
    assert {c.remote_id for c in found} == {c.id for c in shared}


def test_pull_and_sweep_say_when_a_stamp_was_past_the_providers_clock(store: Store, cli) -> None:
    with start("xero", 5) as running:
        harness.add_connection(store, "shop", running)
        product = by_code(running.app, "SKU-00003")
        product.updated_at = CLOCK.now() + timedelta(hours=13)  # a time-zone slip
        pulled = cli("pull-products", "--connection", "shop")
        assert pulled.exit_code == 0, pulled.stderr
        assert "shop: 1 product(s) stamped past the provider's clock (clamped)" in pulled.stderr
        swept = cli("sweep-oldest", "5", "--connection", "shop")
        assert swept.exit_code == 0, swept.stderr
        # Xero's pulls do its sweep's work: the sweep reads nothing, so has no stamp to clamp
        assert "nothing to sweep" in swept.stdout and "stamped past" not in swept.stderr


def test_unleashed_product_missing_from_one_listing_but_found_by_id_is_no_ghost(
    store: Store,
) -> None:
    """The catalogue listing lacks a product the provider still has (and has just re-coded):
    the look-up by id finds it, so it is applied, not flagged or deactivated."""
    with start("unleashed", 2500) as running:
        app = running.app
        conn = harness.add_connection(store, "shop", running)
        pull(store, conn)
        CLOCK.advance(days=1)
        live = active_skus(store)
        hidden = by_code(app, "SKU-00500")
        products_now = world(app).products

        def hide_then_show(req, endpoint: str) -> None:
            if endpoint != "Products" or req.method != "GET":
                return
            if "productId" in req.query:  # the look-up by id: there it is, with a new code
                if hidden.id not in products_now:
                    hidden.code, hidden.updated_at = "SKU-00500-B", CLOCK.now()
                    products_now[hidden.id] = hidden
            elif not getattr(hide_then_show, "done", False):
                hide_then_show.done = True  # type: ignore[attr-defined]
                del products_now[hidden.id]  # left out of every page of the listing

        app.on_request.append(hide_then_show)
        report = sweep(store, conn, 2500)
        assert report.ghosts == []
        assert active_skus(store) == live
        assert ("SKU-00500", "remote_code", "SKU-00500-B") in [
            (c.sku, c.field, c.new) for c in report.changes
        ]
