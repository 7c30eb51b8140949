"""Issue 5: pull-products, sweep-oldest, sync-product and ghosts.

The jobs' logic runs against the fake provider (tests/fakes.py), lent each provider's capabilities
(Xero's one Items call, Unleashed's pages of 1,000 and separate stock, Lightspeed's pages of 100);
a thin end-to-end layer runs each job over HTTP against every provider's simulator."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fakes import FakeProvider
from sqlalchemy import func, select

from synccli import registry
from synccli.clock import SimClock
from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.store.models import Connection, Event, Link, Product
from synccli.sync import products
from synccli.sync.context import job_run

PROVIDERS = list(registry.suite_names())
# Fewest calls for a pull that finds nothing: Xero reads Items in one call; the others read
# products and stock separately.
EMPTY_PULL_CALLS = {"xero": 1, "unleashed": 2, "lightspeed": 2, "lightspeed-x": 2}
SWEEP_100_MAX_CALLS = {"xero": 0, "unleashed": 2, "lightspeed": 2, "lightspeed-x": 2}
# drain the leaky bucket (Lightspeed) and the 5-minute window (X-Series) fast
SCALE = {**dict.fromkeys(PROVIDERS, 1.0), "lightspeed": 200.0, "lightspeed-x": 1000.0}


def start(provider: str, n: int, **kw) -> harness.Running:
    kw.setdefault("customers", 5)
    running = harness.start(provider, products=n, time_scale=SCALE[provider], **kw)
    if provider == "unleashed":
        running.app.move_all_stock()  # every product gets a StockOnHand row
    return running


@pytest.fixture
def world(request, store: Store) -> Iterator[tuple[Store, harness.Running, object]]:
    provider, n = request.param
    with start(provider, n, clock=CLOCK) as running:
        conn = harness.add_connection(store, "shop", running, time_scale=SCALE[provider])
        yield store, running, conn


@pytest.fixture
def fake_world(request, store: Store) -> tuple[Store, FakeProvider, Connection]:
    """A fake account lent provider ``like``'s capabilities, with ``n`` products."""
    like, n = request.param
    fake = FakeProvider(like, products=n, customers=5, clock=CLOCK)
    return store, fake, fake.add_connection(store)


@pytest.fixture(autouse=True)
def _clock() -> None:
    CLOCK.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


CLOCK = SimClock()


def pull(store: Store, conn, fake: FakeProvider | None = None, **kw) -> products.PullReport:
    """A pull run, against ``fake`` when given (else the connection's provider)."""
    if fake is not None:
        kw["connector_factory"] = fake.factory
    with job_run(store, "pull-products", conn, clock=CLOCK, **kw) as jc:
        report = products.pull_products(jc)
        jc.counts = report
    return report


def sweep(store: Store, conn, n: int, fake: FakeProvider | None = None) -> products.SweepReport:
    factory = fake.factory if fake is not None else None
    with job_run(store, "sweep-oldest", conn, clock=CLOCK, connector_factory=factory) as jc:
        return products.sweep_oldest(jc, n)


def api_calls(app) -> int:
    """Calls to the provider's API: a token refresh (the CLI's clock is not the test's) is
    not one, as the benchmarks count them."""
    return sum(n for (_m, e), n in app.counters.calls.items() if not e.startswith("oauth."))


def events(store: Store) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(Event)) or 0


@pytest.mark.parametrize("fake_world", [(p, 5000) for p in PROVIDERS], indirect=True, ids=PROVIDERS)
def test_pull_applies_exactly_the_changes_then_nothing_at_minimum_cost(fake_world) -> None:
    store, fake, conn = fake_world
    first = pull(store, conn, fake)
    assert first.new == 5000
    # a first import changes nothing: products arrive with their first stock figure, even where
    # it comes in a stream of its own (Unleashed), with no event for it
    assert first.changed == 0 and events(store) == 0
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Product)) == 5000
        with_stock = s.scalar(
            select(func.count()).select_from(Product).where(Product.stock.is_not(None))
        )
    assert with_stock == (first.stock_seen - first.stock_unknown if first.stock_seen else 5000)
    # the initial import lies two days back, outside any re-read overlap (Unleashed's: 14 h past
    # a cursor its JSON stamps already show 13 h behind)
    CLOCK.advance(days=2)
    priced = fake.catalogue.change_prices(fake.tenant, 37)
    moved = fake.catalogue.change_stock(fake.tenant, 12, exclude={p.id for p in priced})
    before = events(store)

    second = pull(store, conn, fake)
    assert second.changed == 49
    assert events(store) - before == 49
    with store.session() as s:
        for p in priced:
            local = s.scalar(select(Product).where(Product.sku == p.code))
            assert local.price == p.price
        for p in moved:
            local = s.scalar(select(Product).where(Product.sku == p.code))
            assert local.stock == p.stock

    calls_before = fake.total()
    third = pull(store, conn, fake)
    assert third.changed == 0
    assert events(store) - before == 49
    assert fake.total() - calls_before == EMPTY_PULL_CALLS[fake.provider]
    assert third.calls == EMPTY_PULL_CALLS[fake.provider]


class Crash(Exception):
    pass


@pytest.mark.parametrize("provider", PROVIDERS)
def test_crash_after_first_committed_page_loses_nothing(provider: str, store: Store) -> None:
    """Three batches of changes; the process dies after the first batch is committed. (Xero
    sends its Items in one response, Lightspeed pages of 100; the job commits 1,000 at a time.)"""
    n = products.APPLY_BATCH * 3
    fake = FakeProvider(provider, products=n, customers=5, clock=CLOCK)
    conn = fake.add_connection(store)
    pull(store, conn, fake)
    CLOCK.advance(days=1)
    changed = fake.catalogue.change_prices(fake.tenant, n - 5)  # spans three pages
    baseline = events(store)

    def die_after_first(report: products.PullReport) -> None:
        raise Crash()  # after the first batch was committed

    with pytest.raises(Crash), fake.run(store, "pull-products", conn) as jc:
        products.pull_products(jc, on_page=die_after_first)
    after_crash = events(store) - baseline
    assert 0 < after_crash < len(changed)

    pull(store, conn, fake)
    assert events(store) - baseline == len(changed)  # none lost, none twice
    with store.session() as s:
        for p in changed:
            assert s.scalar(select(Product.price).where(Product.sku == p.code)) == p.price


@pytest.mark.parametrize("fake_world", [(p, 5000) for p in PROVIDERS], indirect=True, ids=PROVIDERS)
def test_sweep_flags_every_ghost_within_one_rotation(fake_world) -> None:
    store, fake, conn = fake_world
    pull(store, conn, fake)
    deleted = fake.catalogue.delete(fake.tenant, 5)
    archived = fake.catalogue.archive(fake.tenant, 5)
    n = 1000
    flagged: dict[str, str] = {}
    whole = fake.capabilities.full_catalogue_call
    if whole:
        # Xero: the next pull reads the whole catalogue, flags the deleted and applies the
        # archived; sweeps then have nothing left to call for
        CLOCK.advance(minutes=30)
        flagged.update({g["sku"]: g["state"] for g in pull(store, conn, fake).ghosts})
        assert {p.code for p in deleted} <= set(flagged)
    for _ in range(math.ceil(5000 / n)):
        CLOCK.advance(hours=4)  # cron runs sweeps hours apart
        calls = fake.total()
        report = sweep(store, conn, n, fake)
        flagged.update({g["sku"]: g["state"] for g in report.ghosts})
        if whole:
            assert fake.total() == calls and report.swept_by_pull is not None
    if not whole:
        assert {p.code for p in deleted + archived} <= set(flagged)
    with store.session() as s:
        states = dict(s.execute(select(Link.remote_code, Link.state)).all())
        never = s.scalar(
            select(func.count()).select_from(Link).where(Link.last_synced_at.is_(None))
        )
    assert all(states[p.code] in ("ghost", "archived") for p in deleted + archived)
    assert never == 0
    calls = fake.total()
    report = sweep(store, conn, 100, fake)
    assert report.swept == (0 if whole else 100)
    assert fake.total() - calls <= SWEEP_100_MAX_CALLS[fake.provider]


# --- end to end: each job over HTTP against every provider's simulator --------------------------
@pytest.mark.parametrize("world", [(p, 300) for p in PROVIDERS], indirect=True, ids=PROVIDERS)
def test_pull_and_sweep_end_to_end_on_the_simulator(world) -> None:
    """The pull and the sweep read the provider's own wire format: what the fake stands in for
    above, checked against each simulator over loopback HTTP."""
    store, running, conn = world
    assert pull(store, conn).new == 300
    CLOCK.advance(days=2)
    app = running.app
    priced = app.catalogue.change_prices(app.tenant, 7)
    moved = app.catalogue.change_stock(app.tenant, 5, exclude={p.id for p in priced})
    assert pull(store, conn).changed == 12
    with store.session() as s:
        for p in priced:
            assert s.scalar(select(Product.price).where(Product.sku == p.code)) == p.price
        for p in moved:
            assert s.scalar(select(Product.stock).where(Product.sku == p.code)) == p.stock
    calls = app.counters.total()
    assert pull(store, conn).changed == 0
    assert app.counters.total() - calls == EMPTY_PULL_CALLS[running.provider]
    deleted = app.catalogue.delete(app.tenant, 2)
    archived = app.catalogue.archive(app.tenant, 2)
    CLOCK.advance(hours=4)
    if registry.get(running.provider).capabilities.full_catalogue_call:
        # Xero: the pull reads the whole catalogue and flags what is gone (the sweep then has
        # nothing left to call for): the deleted are listed, the archived applied as read
        report = pull(store, conn)
        with store.session() as s:
            states = dict(s.execute(select(Link.remote_code, Link.state)).all())
        assert {p.code for p in deleted} <= {g["sku"] for g in report.ghosts}
        calls = app.counters.total()
        assert sweep(store, conn, 300).swept_by_pull is not None
        assert app.counters.total() == calls
    else:
        report = sweep(store, conn, 300)
        states = {g["sku"]: g["state"] for g in report.ghosts}
    # (Lightspeed answers for a deleted item as for an archived one)
    assert all(states.get(p.code) in ("ghost", "archived") for p in deleted + archived)


@pytest.mark.parametrize("world", [(p, 200) for p in PROVIDERS], indirect=True, ids=PROVIDERS)
def test_sync_product_two_calls_and_dry_run_writes_nothing(world, cli, _isolated_env: Path) -> None:
    store, running, conn = world
    pull(store, conn)
    app = running.app
    target = app.catalogue.change_prices(app.tenant, 1)[0]
    db = _isolated_env / "synccli.db"
    raw = store.engine.raw_connection()  # outside any transaction: fold the WAL into the file
    try:
        raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    store.dispose()
    before = db.read_bytes()
    calls = api_calls(app)
    dry = cli("sync-product", target.code, "--connection", "shop", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert db.read_bytes() == before
    assert api_calls(app) - calls <= 2
    # as the provider writes it: X-Series prices are JSON numbers (103.3, not 103.30)
    assert any(str(v) in dry.stdout for v in (target.price, target.price.normalize()))

    calls = api_calls(app)
    real = cli("sync-product", target.code, "--connection", "shop")
    assert real.exit_code == 0, real.stderr
    assert api_calls(app) - calls <= 2
    with store.session() as s:
        assert s.scalar(select(Product.price).where(Product.sku == target.code)) == target.price


@pytest.mark.parametrize("provider", PROVIDERS)
def test_prefix_code_never_links_the_wrong_product(provider: str, store: Store) -> None:
    with start(provider, 0, clock=CLOCK) as running:
        app = running.app
        world_ = app.catalogue.tenant(app.tenant)
        longer = app.catalogue.gen.add_product(world_, code="ABC-1", price=Decimal("9.00"))
        exact = app.catalogue.gen.add_product(world_, code="ABC", price=Decimal("5.00"))
        conn = harness.add_connection(store, "shop", running, time_scale=SCALE[provider])
        with store.session() as s:
            s.add(Product(connection_id=conn.id, sku="ABC", name="ours", active=True))
        with job_run(store, "sync-product", conn, clock=CLOCK) as jc:
            report = products.sync_product(jc, "ABC")
        assert report.found
        with store.session() as s:
            link = s.scalar(select(Link).where(Link.remote_code == "ABC"))
            local = s.scalar(select(Product).where(Product.sku == "ABC"))
            assert link.local_id == local.id
            assert link.remote_id in (exact.id, str(exact.seq))
            assert link.remote_id not in (longer.id, str(longer.seq))
            assert local.price == Decimal("5.00")


@pytest.mark.parametrize("fake_world", [("unleashed", 5000)], indirect=True, ids=["unleashed"])
def test_sweep_lists_the_whole_catalogue_when_that_costs_fewer_calls(fake_world) -> None:
    """Unleashed: today's share (715 of 5,000) by id is 8 + 8 batches of 100; the whole catalogue
    is 5 + 5 pages of 1,000. `sweep-oldest auto` takes the cheaper road and checks everything."""
    store, fake, conn = fake_world
    pull(store, conn, fake)
    deleted = fake.catalogue.delete(fake.tenant, 4)
    archived = fake.catalogue.archive(fake.tenant, 3)
    silent = fake.catalogue.tenant(fake.tenant).products
    quiet = next(p for p in silent.values() if not p.archived)
    quiet.price = quiet.price + Decimal("1.00")  # changed with no timestamp moving
    CLOCK.advance(hours=4)
    with fake.run(store, "sweep-oldest", conn) as jc:
        n = products.sweep_budget(jc)
        calls = fake.total()
        report = products.sweep_oldest(jc, n)
        jc.counts = report
    assert n == 5000
    # ten pages, and one look-up by id that confirms the four missing products are gone
    assert fake.total() - calls == 10 + 1
    assert report.swept == 5000
    states = {g["sku"]: g["state"] for g in report.ghosts}
    assert {p.code: "ghost" for p in deleted}.items() <= states.items()
    assert {p.code: "archived" for p in archived}.items() <= states.items()
    with store.session() as s:
        assert s.scalar(select(Product.price).where(Product.sku == quiet.code)) == quiet.price
        never = s.scalar(
            select(func.count()).select_from(Link).where(Link.last_synced_at < CLOCK.now())
        )
    assert never == 0  # every link stamped by this one sweep

    # The listing checked every product: the next is due in sweep_days (7), products and stock
    # positions together, and the nights between cost nothing.
    daily = []
    for _ in range(7):
        CLOCK.advance(hours=24)
        calls = fake.total()
        with fake.run(store, "sweep-oldest", conn) as jc:
            jc.counts = products.sweep_oldest(jc, products.sweep_budget(jc))
        daily.append(fake.total() - calls)
    assert daily == [0, 0, 0, 0, 0, 0, 10]

    # A listing under half the linked catalogue (an outage, a wrong filter) flags nothing.
    gone = fake.catalogue.delete(fake.tenant, 3000)
    CLOCK.advance(hours=4)
    report = sweep(store, conn, 5000, fake)
    assert not [g for g in report.ghosts if g["state"] == "ghost"]
    with store.session() as s:
        ghosts = s.scalar(select(func.count()).select_from(Link).where(Link.state == "ghost"))
    assert ghosts == len(deleted)
    assert len(gone) == 3000


@pytest.mark.parametrize("sweep_days", [7, 3])
def test_catalogue_listed_once_per_sweep_days_and_ghosts_still_found(
    store: Store, sweep_days: int
) -> None:
    """#21: Unleashed listed its whole catalogue every night (6 pages), about 9x what covering
    every product within sweep_days needs. `sweep-oldest auto` every night for three weeks lists
    it on one night in sweep_days, and a product deleted with no timestamp moving is flagged by
    the next listing (not seen is not gone: a look-up by id confirms it)."""
    fake = FakeProvider("unleashed", products=5000, customers=5, clock=CLOCK)
    conn = fake.add_connection(store, sweep_days=sweep_days)
    pull(store, conn, fake)
    listed, flagged_on = [], None
    gone = None
    for night in range(21):
        CLOCK.set(datetime(2026, 3, 3, 2, 10, tzinfo=UTC) + timedelta(days=night))
        if night == 1:
            gone = fake.catalogue.delete(fake.tenant, 1)[0]
        before = fake.calls["changed_products"]
        with fake.run(store, "sweep-oldest", conn) as jc:
            report = products.sweep_oldest(jc, products.sweep_budget(jc))
            jc.counts = report
        if fake.calls["changed_products"] > before:
            listed.append(night)
        ghosts = {g["sku"] for g in report.ghosts}
        if gone is not None and flagged_on is None and gone.code in ghosts:
            flagged_on = night
    assert listed == list(range(0, 21, sweep_days))
    assert flagged_on == sweep_days  # the first listing after the deletion
    with store.session() as s:
        state = s.scalar(select(Link.state).where(Link.remote_code == gone.code))
    assert state == "ghost"


@pytest.mark.parametrize("fake_world", [("unleashed", 5000)], indirect=True, ids=["unleashed"])
def test_small_sweep_still_goes_by_id(fake_world) -> None:
    store, fake, conn = fake_world
    pull(store, conn, fake)
    calls = fake.total()
    report = sweep(store, conn, 100, fake)
    assert report.swept == 100
    assert fake.total() - calls == 2


def test_lightspeed_sweep_checks_only_what_the_pulls_left_unchecked_and_still_covers_a_week(
    store: Store,
) -> None:
    """R-Series sweeps by id, 100 a call. `sweep-oldest auto` swept a seventh of the catalogue
    every night rounded up (286 of 2,000: 3 calls, the last a part-batch) though the day's pulls
    read some of it (2% of items change a day, 5% move stock: each read stamps its link). It
    now sweeps whole batches of the oldest (200), and more only for products no pull or sweep
    read for sweep_days - 1 days: fewer calls, every product still read within sweep_days, and
    a product deleted with no timestamp moving still flagged within it."""
    fake = FakeProvider("lightspeed", products=2000, customers=5, clock=CLOCK)
    conn = fake.add_connection(store, sweep_days=7)
    pull(store, conn, fake)
    nightly, gone, deleted_at, flagged_at = [], None, None, None
    for night in range(21):
        day = datetime(2026, 3, 3, tzinfo=UTC) + timedelta(days=night)
        for hour in (10, 16):  # the day's changes, each pulled half an hour later
            CLOCK.set(day + timedelta(hours=hour))
            fake.catalogue.change_prices(fake.tenant, 20)
            fake.catalogue.change_stock(fake.tenant, 50)
            CLOCK.advance(minutes=30)
            pull(store, conn, fake)
        if night == 2:
            gone, deleted_at = fake.catalogue.delete(fake.tenant, 1)[0], CLOCK.now()
        CLOCK.set(day + timedelta(days=1, hours=2, minutes=10))
        before = fake.calls["get_products"]
        with fake.run(store, "sweep-oldest", conn) as jc:
            report = products.sweep_oldest(jc, products.sweep_budget(jc))
            jc.counts = report
        nightly.append(fake.calls["get_products"] - before)
        if (
            gone is not None
            and flagged_at is None
            and gone.code in {g["sku"] for g in report.ghosts}
        ):
            flagged_at = CLOCK.now()
        with store.session() as s:
            oldest = s.scalar(select(func.min(Link.last_synced_at)).where(Link.kind == "product"))
        # no product goes unread for longer than sweep_days
        assert CLOCK.now() - oldest.replace(tzinfo=UTC) <= timedelta(days=7), night
    assert flagged_at is not None and flagged_at - deleted_at <= timedelta(days=7)
    # A seventh of the catalogue rounded up was 3 batches a night (63 in 21 nights). Now 2, and
    # more where products would otherwise go unread past the week: the first night the
    # onboarding pull's stamps come due, and a few nights as the pulls' stamps spread.
    assert nightly[:5] == [2] * 5 and max(nightly) <= 6, nightly
    assert sum(nightly) == 50, nightly
