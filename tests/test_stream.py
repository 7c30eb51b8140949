"""The incremental-stream runner's lease: a long run renews the lease of the job that is running,
whatever that job is called (no job name is written into the pull or the link job)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from synccli.clock import SimClock
from synccli.connectors.base import Capabilities, Limits, Page, RemoteCustomer, RemoteProduct
from synccli.store.connections import add_connection
from synccli.store.db import Store
from synccli.store.models import Lease
from synccli.sync import context, customers, products
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


@pytest.fixture
def renewals(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, datetime]]:
    """Every lease renewal as (job, the lease row's expiry right after it)."""
    seen: list[tuple[str, datetime]] = []
    real = context.renew_lease

    def spy(st: Store, job: str, connection_id: int, *args: Any) -> None:
        real(st, job, connection_id, *args)
        with st.session() as s:
            lease = s.get(Lease, (job, connection_id))
            seen.append((job, lease.expires_at if lease is not None else None))

    monkeypatch.setattr(context, "renew_lease", spy)
    return seen


def _connection(store: Store) -> Any:
    return add_connection(store, "shop", "unleashed", {}, {"api_id": "id", "api_key": "key"})


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@pytest.mark.parametrize("job", ["pull-products", "catch-up"])
def test_a_pull_run_under_any_name_renews_its_own_lease(
    store: Store, clock: SimClock, renewals: list[tuple[str, datetime]], job: str
) -> None:
    conn = _connection(store)
    factory = lambda jc: SlowProvider(clock)  # noqa: E731
    with job_run(store, job, conn, clock=clock, connector_factory=factory) as jc:
        report = products.pull_products(jc)
    assert report.new == 6
    assert renewals, "a run of 24 minutes never renewed its lease"
    assert {name for name, _ in renewals} == {job}
    # the row itself moved: renewed to a lease's lifetime past the run's clock, not left to lapse
    last = max(_aware(expiry) for _, expiry in renewals if expiry is not None)
    assert last >= START + PAGE_TIME * 5 + lease_ttl()


@pytest.mark.parametrize("job", ["link-customers", "relink"])
def test_a_link_run_under_any_name_renews_its_own_lease(
    store: Store, clock: SimClock, renewals: list[tuple[str, datetime]], job: str
) -> None:
    conn = _connection(store)
    factory = lambda jc: SlowProvider(clock)  # noqa: E731
    with job_run(store, job, conn, clock=clock, connector_factory=factory) as jc:
        report = customers.link_customers(jc)
    assert report.seen == 6
    assert {name for name, _ in renewals} == {job}
    last = max(_aware(expiry) for _, expiry in renewals if expiry is not None)
    assert last >= START + PAGE_TIME * 5 + lease_ttl()
