"""A job that stalled past its lease writes nothing once another run took the job over.

Exactly once means under every interleaving: a process can stall for minutes (SIGSTOP, a long
Retry-After, a paused VM) and wake after its lease ran out and another run of the same job took
it over and stored newer records. From then on the stalled run must write nothing: not the
records it read before the stall (older prices, stock and e-mail addresses over newer ones), not
a link stamp, not its cursor. It ends as a run that lost its claim does (post-invoices'
``ClaimLost``: exit 1, run row ``failed``), saying the lease was taken over.

The stall is at the boundary between this process and the world: the provider's first answer
to the run comes, and the process stops before it goes on with it (the fake's call, wrapped).
Meanwhile the simulated clock passes the lease's expiry, the provider's records change again,
and a second run of the job takes the lease over and stores them. Nothing of ours is patched.

- ``pull-products`` on every provider: test_a_stalled_pull_writes_nothing_after_another_took_over
- ... while that other run still holds the lease as it wakes:
  test_a_stalled_pull_writes_nothing_while_the_other_run_holds_the_lease
- ``sweep-oldest`` (a listing, id batches): test_a_stalled_sweep_writes_nothing_after_a_takeover
- ``sync-product``: test_a_stalled_sync_product_writes_nothing_after_a_takeover
- ``link-customers``: test_a_stalled_link_writes_nothing_after_a_takeover
- a run that stalls without anyone taking its lease goes on as before (the fence renews it):
  test_a_stall_no_one_took_over_is_no_loss
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fakes import FakeProvider
from sqlalchemy import select

from synccli import registry
from synccli.clock import SimClock
from synccli.errors import ClaimLost, ExitCode
from synccli.sandbox import data
from synccli.store.db import Store
from synccli.store.models import Cursor, Event, Lease, Link, Product, Run
from synccli.store.models import RemoteCustomer as SeenCustomer
from synccli.sync import customers, products
from synccli.sync.context import JobContext, lease_ttl

CLOCK = SimClock()
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clock() -> None:
    CLOCK.set(START)


def stalled_after_first_answer(
    fake: FakeProvider, meanwhile: Callable[[], None], method: str | None = None
) -> Any:
    """A connector factory: the run's first call to the provider (to the contract ``method``,
    when given) is answered, then the process stalls before it goes on with the answer;
    ``meanwhile()`` is the world during the stall."""

    def factory(ctx: JobContext) -> Any:
        connector = fake.factory(ctx)
        http, done = connector.http, []
        call = http.call

        def stalling(name: str, write: bool, perform: Callable[[], Any]) -> Any:
            answer = call(name, write, perform)
            if not done and method in (None, name):
                done.append(name)
                meanwhile()
            return answer

        http.call = stalling  # type: ignore[method-assign]
        return connector

    return factory


def run_job(
    store: Store, job: str, conn: Any, factory: Any, work: Callable[[JobContext], Any]
) -> Any:
    from synccli.sync.context import job_run

    with job_run(store, job, conn, clock=CLOCK, connector_factory=factory) as ctx:
        ctx.counts = work(ctx)
        return ctx.counts


def stall_past_the_lease() -> None:
    CLOCK.advance(lease_ttl().total_seconds() * 1.5)


def change(fake: FakeProvider, p: data.Product, price: str, stock: int) -> None:
    """The product's price and stock changed at the provider now (both stamps move)."""
    p.price, p.stock = Decimal(price), Decimal(stock)
    p.updated_at = p.stock_updated_at = CLOCK.now()


def state(store: Store) -> dict[str, Any]:
    """Everything a product job writes, as the store holds it."""
    with store.read_session() as s:
        return {
            "products": sorted(
                (p.sku, str(p.price), str(p.stock), p.active, p.updated_at)
                for p in s.scalars(select(Product))
            ),
            "links": sorted(
                (lk.remote_id, lk.state, lk.last_synced_at, lk.remote_updated_at, lk.fingerprint)
                for lk in s.scalars(select(Link))
            ),
            "cursors": sorted(
                (c.stream, c.value, c.page, c.updated_at) for c in s.scalars(select(Cursor))
            ),
            "events": sorted((e.local_id, e.field, e.new, e.at) for e in s.scalars(select(Event))),
            "seen": sorted(
                (c.remote_id, c.email, c.seen_at) for c in s.scalars(select(SeenCustomer))
            ),
        }


def local(store: Store, sku: str) -> Product:
    with store.read_session() as s:
        found = s.scalar(select(Product).where(Product.sku == sku))
        assert found is not None
        return found


def last_run(store: Store, job: str) -> Run:
    with store.read_session() as s:
        run = s.scalar(select(Run).where(Run.job == job).order_by(Run.id.desc()).limit(1))
        assert run is not None
        return run


def ended(run: Callable[[], Any]) -> BaseException | None:
    """How ``run`` ended: what it raised, or None."""
    try:
        run()
    except Exception as err:  # noqa: BLE001 - the test says which it must be
        return err
    return None


def assert_lost(err: BaseException | None, store: Store, run_id: int) -> None:
    """Ended as post-invoices ends a claim it lost: exit 1, the run row failed, saying why."""
    assert isinstance(err, ClaimLost), err
    assert err.exit_code == ExitCode.FAILURE
    assert "lease" in err.message and "taken over" in err.message
    with store.read_session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        assert run.outcome == "failed"
        assert run.error is not None and "taken over" in run.error


def pull(ctx: JobContext) -> products.PullReport:
    return products.pull_products(ctx)


def first_run_id(store: Store, job: str) -> int:
    with store.read_session() as s:
        found = s.scalar(select(Run.id).where(Run.job == job).order_by(Run.id.desc()).limit(1))
        assert found is not None
        return found


@pytest.mark.parametrize("provider", registry.suite_names())
def test_a_stalled_pull_writes_nothing_after_another_took_over(
    any_store: Store, provider: str
) -> None:
    store = any_store
    fake = FakeProvider(provider, products=12, clock=CLOCK, page_size=5)
    conn = fake.add_connection(store)
    run_job(store, "pull-products", conn, fake.factory, pull)
    p = sorted(fake.world.products.values(), key=lambda x: x.code)[3]
    CLOCK.advance(minutes=30)
    change(fake, p, "20.00", 20)  # what the stalled pull reads
    after_other: dict[str, Any] = {}
    runs: list[int] = []

    def meanwhile() -> None:
        runs.append(first_run_id(store, "pull-products"))
        stall_past_the_lease()
        change(fake, p, "30.00", 30)  # newer, and stored by the run that took over
        run_job(store, "pull-products", conn, fake.factory, pull)
        after_other.update(state(store))

    lost = ended(
        lambda: run_job(
            store, "pull-products", conn, stalled_after_first_answer(fake, meanwhile), pull
        )
    )
    assert after_other, "the stall came"
    assert (local(store, p.code).price, local(store, p.code).stock) == (30, 30)
    assert state(store) == after_other  # no price, stock, stamp, event or cursor of its own
    assert_lost(lost, store, runs[0])


def test_a_stalled_pull_writes_nothing_while_the_other_run_holds_the_lease(
    any_store: Store,
) -> None:
    """The run that took over is still running (holding the lease) when the stalled one
    wakes."""
    store = any_store
    fake = FakeProvider("unleashed", products=12, clock=CLOCK, page_size=5)
    conn = fake.add_connection(store)
    run_job(store, "pull-products", conn, fake.factory, pull)
    p = sorted(fake.world.products.values(), key=lambda x: x.code)[3]
    CLOCK.advance(minutes=30)
    change(fake, p, "20.00", 20)
    pulled, woke = threading.Event(), threading.Event()
    after_other: dict[str, Any] = {}

    def other() -> None:
        def work(ctx: JobContext) -> products.PullReport:
            report = products.pull_products(ctx)
            after_other.update(state(store))
            pulled.set()
            woke.wait(30)  # still holding the lease as the stalled run wakes
            return report

        run_job(store, "pull-products", conn, fake.factory, work)

    running = threading.Thread(target=other)

    def meanwhile() -> None:
        stall_past_the_lease()
        change(fake, p, "30.00", 30)
        running.start()
        assert pulled.wait(30)

    factory = stalled_after_first_answer(fake, meanwhile)
    try:
        lost = ended(lambda: run_job(store, "pull-products", conn, factory, pull))
        assert state(store) == after_other
        assert isinstance(lost, ClaimLost), lost
    finally:
        woke.set()
        if running.is_alive():
            running.join(30)
    assert (local(store, p.code).price, local(store, p.code).stock) == (30, 30)
    assert last_run(store, "pull-products").outcome == "ok"  # the other one's


def test_a_stall_no_one_took_over_is_no_loss(any_store: Store) -> None:
    """Stalled past its lease's expiry with no one waiting for it: the run's lease is still its
    own, and it goes on (renewed) and stores what it read."""
    store = any_store
    fake = FakeProvider("lightspeed", products=12, clock=CLOCK, page_size=5)
    conn = fake.add_connection(store)
    run_job(store, "pull-products", conn, fake.factory, pull)
    p = sorted(fake.world.products.values(), key=lambda x: x.code)[3]
    CLOCK.advance(minutes=30)
    change(fake, p, "20.00", 20)
    report = run_job(
        store, "pull-products", conn, stalled_after_first_answer(fake, stall_past_the_lease), pull
    )
    assert report.changed == 1
    assert (local(store, p.code).price, local(store, p.code).stock) == (20, 20)
    assert last_run(store, "pull-products").outcome == "ok"
    with store.read_session() as s:
        assert s.scalar(select(Lease).where(Lease.job == "pull-products")) is None  # released


# products each provider's sweep case has: Unleashed's 150 are swept by one listing of them all
# (fewer calls than by id), Lightspeed's 12 by id
SWEPT = {"unleashed": 150, "lightspeed": 12}


@pytest.mark.parametrize("provider", list(SWEPT))
def test_a_stalled_sweep_writes_nothing_after_a_takeover(any_store: Store, provider: str) -> None:
    store = any_store
    n = SWEPT[provider]
    fake = FakeProvider(provider, products=n, clock=CLOCK, page_size=50)
    conn = fake.add_connection(store)
    run_job(store, "pull-products", conn, fake.factory, pull)

    def sweep(ctx: JobContext) -> products.SweepReport:
        return products.sweep_oldest(ctx, n)

    p = sorted(fake.world.products.values(), key=lambda x: x.code)[3]
    CLOCK.advance(minutes=30)
    # changed without moving its stamps (a sweep's case: a pull would not see it)
    p.price = Decimal("20.00")
    after_other: dict[str, Any] = {}
    runs: list[int] = []

    def meanwhile() -> None:
        runs.append(first_run_id(store, "sweep-oldest"))
        stall_past_the_lease()
        p.price = Decimal("30.00")
        run_job(store, "sweep-oldest", conn, fake.factory, sweep)
        after_other.update(state(store))

    lost = ended(
        lambda: run_job(
            store, "sweep-oldest", conn, stalled_after_first_answer(fake, meanwhile), sweep
        )
    )
    assert local(store, p.code).price == 30
    assert state(store) == after_other
    assert_lost(lost, store, runs[0])


def test_a_stalled_sync_product_writes_nothing_after_a_takeover(any_store: Store) -> None:
    store = any_store
    fake = FakeProvider("unleashed", products=12, clock=CLOCK, page_size=5)
    conn = fake.add_connection(store)
    run_job(store, "pull-products", conn, fake.factory, pull)
    p = sorted(fake.world.products.values(), key=lambda x: x.code)[3]

    def sync(ctx: JobContext) -> products.ProductSyncReport:
        return products.sync_product(ctx, p.code)

    CLOCK.advance(minutes=30)
    change(fake, p, "20.00", 20)
    after_other: dict[str, Any] = {}
    runs: list[int] = []

    def meanwhile() -> None:
        runs.append(first_run_id(store, "sync-product"))
        stall_past_the_lease()
        change(fake, p, "30.00", 30)
        run_job(store, "sync-product", conn, fake.factory, sync)
        after_other.update(state(store))

    lost = ended(
        lambda: run_job(
            store, "sync-product", conn, stalled_after_first_answer(fake, meanwhile), sync
        )
    )
    assert local(store, p.code).price == 30
    assert state(store) == after_other
    assert_lost(lost, store, runs[0])


def test_a_stalled_link_writes_nothing_after_a_takeover(any_store: Store) -> None:
    store = any_store
    fake = FakeProvider("xero", customers=5, clock=CLOCK)
    conn = fake.add_connection(store)

    def link(ctx: JobContext) -> customers.LinkReport:
        return customers.link_customers(ctx)

    run_job(store, customers.JOB, conn, fake.factory, link)
    c = sorted(fake.world.customers.values(), key=lambda x: x.seq)[2]
    CLOCK.advance(minutes=30)
    c.email, c.updated_at = "second@example.com", CLOCK.now()
    after_other: dict[str, Any] = {}
    runs: list[int] = []

    def meanwhile() -> None:
        runs.append(first_run_id(store, customers.JOB))
        stall_past_the_lease()
        c.email, c.updated_at = "third@example.com", CLOCK.now()
        run_job(store, customers.JOB, conn, fake.factory, link)
        after_other.update(state(store))

    lost = ended(
        lambda: run_job(
            store, customers.JOB, conn, stalled_after_first_answer(fake, meanwhile), link
        )
    )
    with store.read_session() as s:
        seen = s.scalar(select(SeenCustomer).where(SeenCustomer.remote_id == c.id))
        assert seen is not None and seen.email == "third@example.com"
    assert state(store) == after_other
    assert_lost(lost, store, runs[0])
