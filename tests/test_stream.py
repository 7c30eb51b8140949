"""The incremental-stream runner's lease: a long run renews the lease of the job that is running,
whatever that job is called (no job name is written into the pull or the link job)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from synccli.clock import SimClock
from synccli.connectors.base import Capabilities, Limits, Page, RemoteCustomer, RemoteProduct
from synccli.store.connections import add_connection
from synccli.store.db import Store
from synccli.store.models import Lease
from synccli.sync import customers, products, stream
from synccli.sync.context import job_run, lease_ttl

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PAGE_TIME = timedelta(minutes=4)  # a slow provider: a page takes minutes to come


class SlowProvider:
    """Pages of one record each, every page moving the shared clock on: a run that outlasts a
    tenth of its lease several times over. No HTTP."""

    capabilities = Capabilities(
        lookup_batch=100,
        stock_in_product=True,
        idempotency_keys=False,
        cursor_overlap=timedelta(minutes=5),
        limits=Limits(),
    )

    def __init__(self, clock: SimClock, pages: int = 6) -> None:
        self.clock, self.pages = clock, pages
        self.http = SimpleNamespace(calls=0, server_date=None)

    def _stamps(self) -> Iterator[tuple[int, datetime]]:
        for n in range(1, self.pages + 1):
            self.http.calls += 1
            yield n, self.clock.advance(PAGE_TIME.total_seconds()) - timedelta(minutes=1)

    def changed_products(self, since: datetime | None) -> Iterator[Page[RemoteProduct]]:
        for n, stamp in self._stamps():
            record = RemoteProduct(f"r{n}", f"SKU-{n}", f"Product {n}", updated_at=stamp)
            yield Page([record], cursor=stamp, number=n)

    def changed_stock(self, since: datetime | None) -> Iterator[Page[Any]]:
        return iter(())

    def changed_customers(self, since: datetime | None) -> Iterator[Page[RemoteCustomer]]:
        for n, stamp in self._stamps():
            record = RemoteCustomer(f"c{n}", f"Customer {n}", f"c{n}@example.com", updated_at=stamp)
            yield Page([record], cursor=stamp, number=n)


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START)


class Renewals(list[tuple[str, datetime]]):
    """The connection's leases as each batch of a run leaves them, committed: (job, expiry)."""

    def __init__(self, store: Store, connection_id: int) -> None:
        super().__init__()
        self.store, self.connection_id = store, connection_id

    def __call__(self, _report: Any) -> None:
        with self.store.read_session() as s:
            rows = s.scalars(select(Lease).where(Lease.connection_id == self.connection_id))
            self.extend((lease.job, lease.expires_at) for lease in rows)


def _connection(store: Store) -> Any:
    return add_connection(store, "shop", "unleashed", {}, {"api_id": "id", "api_key": "key"})


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@pytest.mark.parametrize("job", ["pull-products", "catch-up"])
def test_a_pull_run_under_any_name_renews_its_own_lease(
    store: Store, clock: SimClock, job: str
) -> None:
    conn = _connection(store)
    factory = lambda jc: SlowProvider(clock)  # noqa: E731
    renewals = Renewals(store, conn.id)
    with job_run(store, job, conn, clock=clock, connector_factory=factory) as jc:
        report = products.pull_products(jc, on_page=renewals)
    assert report.new == 6
    assert renewals, "a run of 24 minutes never renewed its lease"
    assert {name for name, _ in renewals} == {job}
    # the row itself moved: renewed to a lease's lifetime past the run's clock, not left to lapse
    last = max(_aware(expiry) for _, expiry in renewals if expiry is not None)
    assert last >= START + PAGE_TIME * 5 + lease_ttl()


@pytest.mark.parametrize("job", ["link-customers", "relink"])
def test_a_link_run_under_any_name_renews_its_own_lease(
    store: Store, clock: SimClock, job: str
) -> None:
    conn = _connection(store)
    factory = lambda jc: SlowProvider(clock)  # noqa: E731
    renewals = Renewals(store, conn.id)
    with job_run(store, job, conn, clock=clock, connector_factory=factory) as jc:
        report = customers.link_customers(jc, on_page=renewals)
    assert report.seen == 6
    assert {name for name, _ in renewals} == {job}
    last = max(_aware(expiry) for _, expiry in renewals if expiry is not None)
    assert last >= START + PAGE_TIME * 5 + lease_ttl()


class Listing:
    """A products listing of pages given up front; remembers where each read started."""

    capabilities = SlowProvider.capabilities

    def __init__(self, *pages: Page[RemoteProduct]) -> None:
        self.pages = list(pages)
        self.starts: list[datetime | None] = []
        self.http = SimpleNamespace(calls=0, server_date=None)

    def changed_products(self, since: datetime | None) -> Iterator[Page[RemoteProduct]]:
        self.starts.append(since)
        yield from self.pages

    def changed_stock(self, since: datetime | None) -> Iterator[Page[Any]]:
        return iter(())


def _product(n: int, stamp: datetime) -> RemoteProduct:
    return RemoteProduct(f"r{n}", f"SKU-{n}", f"Product {n}", updated_at=stamp)


def _run(store: Store, conn: Any, clock: SimClock, listing: Listing, dry_run: bool = False) -> Any:
    with job_run(
        store,
        "pull-products",
        conn,
        clock=clock,
        dry_run=dry_run,
        connector_factory=lambda _: listing,
    ) as jc:
        return products.pull_products(jc)


def test_the_cursor_never_passes_the_runs_start_and_the_next_read_starts_an_overlap_back(
    store: Store, clock: SimClock
) -> None:
    conn = _connection(store)
    past, future = START - timedelta(hours=1), START + timedelta(hours=3)
    listing = Listing(
        Page([_product(1, past)], cursor=past, number=1),
        Page([_product(2, future)], cursor=future, number=2),
    )
    report = _run(store, conn, clock, listing)
    assert report.new == 2
    # a record stamped after the run began (a clock ahead): the cursor stops at the run's start
    assert report.cursor["products"] == START.isoformat()
    clock.advance(3600)
    _run(store, conn, clock, listing)
    assert listing.starts == [None, START - SlowProvider.capabilities.cursor_overlap]


def test_a_dry_run_reads_everything_and_moves_no_cursor(store: Store, clock: SimClock) -> None:
    conn = _connection(store)
    stamp = START - timedelta(hours=1)
    listing = Listing(Page([_product(1, stamp)], cursor=stamp, number=1))
    report = _run(store, conn, clock, listing, dry_run=True)
    assert report.new == 1 and report.cursor == {}
    again = _run(store, conn, clock, listing)
    assert listing.starts == [None, None] and again.new == 1


def test_only_the_last_whole_read_of_a_relisted_listing_counts_as_seen(
    store: Store, clock: SimClock
) -> None:
    conn = _connection(store)
    stamp = START - timedelta(hours=1)
    listing = Listing(
        Page([_product(1, stamp)], number=1),
        Page([_product(2, stamp)], number=1, relisted=True),
        Page([_product(3, stamp)], number=2),
    )
    with job_run(
        store, "pull-products", conn, clock=clock, connector_factory=lambda _: listing
    ) as jc:
        run: stream.CursorStream[Any] = stream.CursorStream(jc, "products")
        run.read(jc.connector.changed_products, lambda s, batch: None, track_seen=True)
        assert run.seen == {"r2", "r3"}
        assert run.advance() == stamp


def test_the_cursor_advances_only_after_a_whole_read(store: Store, clock: SimClock) -> None:
    conn = _connection(store)
    with (
        job_run(
            store, "pull-products", conn, clock=clock, connector_factory=lambda _: Listing()
        ) as jc,
        pytest.raises(RuntimeError),
    ):
        stream.CursorStream(jc, "products").advance()


def test_a_pull_and_a_link_run_through_the_runner_on_postgresql(
    pg_store: Store, clock: SimClock
) -> None:
    conn = _connection(pg_store)
    provider = SlowProvider(clock)
    with job_run(
        pg_store, "pull-products", conn, clock=clock, connector_factory=lambda _: provider
    ) as jc:
        pulled = products.pull_products(jc)
    with job_run(
        pg_store, "link-customers", conn, clock=clock, connector_factory=lambda _: provider
    ) as jc:
        linked = customers.link_customers(jc)
    assert pulled.new == 6 and linked.seen == 6
    # each cursor stops at its run's start (the provider's stamps ran past it)
    assert pulled.cursor["products"] == START.isoformat()
    assert linked.cursor == (START + PAGE_TIME * 6).isoformat()
