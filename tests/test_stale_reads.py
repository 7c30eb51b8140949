"""A product job that stalled after its read never writes that read over a newer one another job
stored meanwhile.

Each product job holds its own lease per connection (tests/test_job_lease_fence.py), so two
different jobs interleave: a ``sweep-oldest`` or ``sync-product`` reads product P, stalls for
minutes (SIGSTOP, a long Retry-After, a paused VM), and meanwhile ``pull-products`` reads P's newer
price and stock and stores them; the pull's cursor then moves past P's change, so were the stalled
run to wake and write its older copy, no later pull would put the newer one back. A record is
applied only when the store holds no later read of it (``links.read_at``: the reading run's clock
just before its call).

The stall is the one of tests/test_job_lease_fence.py: the run's first answer from the provider
comes (a copy of the records as they are then), and the process stops before it goes on with it,
while the simulated clock moves, the provider's records change and another job runs. Nothing of
ours is patched.

- a sweep (a listing, id batches) that read before a pull stored a newer copy:
  test_a_stalled_sweep_leaves_a_newer_pull_in_place
- ``sync-product`` on every provider: test_a_stalled_sync_product_leaves_a_newer_pull_in_place
- a pull that read before a sweep stored a newer copy (a change that moved no stamp):
  test_a_stalled_pull_leaves_a_newer_sweep_in_place
- the guards: a stalled sweep whose read is the newest the store has still writes it
  (test_a_stalled_sweep_still_writes_a_read_newer_than_the_store), and a ghost it found is
  flagged as before (test_a_stalled_sweep_still_flags_a_ghost)
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fakes import FakeProvider
from sqlalchemy import select
from test_job_lease_fence import (
    CLOCK,
    START,
    SWEPT,
    change,
    last_run,
    local,
    pull,
    run_job,
    stalled_after_first_answer,
)

from synccli import registry
from synccli.sandbox import data
from synccli.store.db import Store
from synccli.store.models import Event, Link
from synccli.sync import products
from synccli.sync.context import JobContext

STALL = 5  # minutes the stalled run stands still after its read


@pytest.fixture(autouse=True)
def _clock() -> None:
    CLOCK.set(START)


def events_of(store: Store, product_id: int) -> list[tuple[str, str | None]]:
    with store.read_session() as s:
        return [
            (e.field, e.new)
            for e in s.scalars(select(Event).where(Event.local_id == product_id).order_by(Event.id))
        ]


def held(store: Store, sku: str) -> tuple[Decimal | None, Decimal | None]:
    p = local(store, sku)
    return p.price, p.stock


def sweeper(n: int) -> Any:
    def sweep(ctx: JobContext) -> products.SweepReport:
        return products.sweep_oldest(ctx, n)

    return sweep


def stalled_sweep(
    store: Store, fake: FakeProvider, conn: Any, provider: str, meanwhile: Any
) -> products.SweepReport:
    """A sweep of the provider's share (``SWEPT``) that stands still after its first answer
    while ``meanwhile`` runs."""
    report: products.SweepReport = run_job(
        store,
        "sweep-oldest",
        conn,
        stalled_after_first_answer(fake, meanwhile),
        sweeper(SWEPT[provider]),
    )
    return report


def setup(store: Store, provider: str, n: int) -> tuple[FakeProvider, Any, data.Product]:
    # one page: the fake's listing is a copy of the catalogue as its first page is asked for,
    # where a real provider answers each page as it is then; one page is both
    fake = FakeProvider(provider, products=n, clock=CLOCK, page_size=n)
    conn = fake.add_connection(store)
    run_job(store, "pull-products", conn, fake.factory, pull)
    p = sorted(fake.world.products.values(), key=lambda x: x.code)[3]
    CLOCK.advance(minutes=30)
    return fake, conn, p


@pytest.mark.parametrize("provider", list(SWEPT))
def test_a_stalled_sweep_leaves_a_newer_pull_in_place(any_store: Store, provider: str) -> None:
    store = any_store
    fake, conn, p = setup(store, provider, SWEPT[provider])
    change(fake, p, "20.00", 20)  # what the sweep reads
    pulled: list[Any] = []

    def meanwhile() -> None:
        CLOCK.advance(minutes=STALL)
        change(fake, p, "30.00", 30)  # newer, and stored by a pull while the sweep stands still
        run_job(store, "pull-products", conn, fake.factory, pull)
        pulled.append((held(store, p.code), events_of(store, local(store, p.code).id)))

    report = stalled_sweep(store, fake, conn, provider, meanwhile)
    assert pulled, "the stall came"
    assert pulled[0][0] == (30, 30)
    assert held(store, p.code) == (30, 30)
    # no event of the older copy, and the sweep reports no change: it changed nothing
    assert events_of(store, local(store, p.code).id) == pulled[0][1]
    assert [c for c in report.changes if c.sku == p.code] == []
    assert report.changed == 0
    assert last_run(store, "sweep-oldest").outcome == "ok"


@pytest.mark.parametrize("provider", registry.suite_names())
def test_a_stalled_sync_product_leaves_a_newer_pull_in_place(
    any_store: Store, provider: str
) -> None:
    store = any_store
    fake, conn, p = setup(store, provider, 12)
    change(fake, p, "20.00", 20)
    pulled: list[Any] = []

    def meanwhile() -> None:
        CLOCK.advance(minutes=STALL)
        change(fake, p, "30.00", 30)
        run_job(store, "pull-products", conn, fake.factory, pull)
        pulled.append(held(store, p.code))

    def sync(ctx: JobContext) -> products.ProductSyncReport:
        return products.sync_product(ctx, p.code)

    report = run_job(store, "sync-product", conn, stalled_after_first_answer(fake, meanwhile), sync)
    assert pulled == [(30, 30)]
    assert held(store, p.code) == (30, 30)
    assert report.changes == []
    assert report.after is not None and (report.after["price"], report.after["stock"]) == (30, 30)
    assert last_run(store, "sync-product").outcome == "ok"


@pytest.mark.parametrize("provider", list(SWEPT))
def test_a_stalled_pull_leaves_a_newer_sweep_in_place(any_store: Store, provider: str) -> None:
    """The other way round: the pull read P, stalled, and a sweep stored a newer copy (a price
    changed at the provider without moving P's stamp, which only a sweep sees)."""
    store = any_store
    n = SWEPT[provider]
    fake, conn, p = setup(store, provider, n)
    p.price, p.updated_at = Decimal("20.00"), CLOCK.now()  # what the pull reads
    swept: list[Any] = []

    def meanwhile() -> None:
        CLOCK.advance(minutes=STALL)
        p.price = Decimal("30.00")  # no stamp moves
        run_job(store, "sweep-oldest", conn, fake.factory, sweeper(n))
        swept.append(held(store, p.code)[0])

    report = run_job(
        store, "pull-products", conn, stalled_after_first_answer(fake, meanwhile), pull
    )
    assert swept == [30]
    assert held(store, p.code)[0] == 30
    assert [c for c in report.changes if c.sku == p.code] == []
    assert report.changed == 0
    assert last_run(store, "pull-products").outcome == "ok"


@pytest.mark.parametrize("provider", list(SWEPT))
def test_a_stalled_sweep_still_writes_a_read_newer_than_the_store(
    any_store: Store, provider: str
) -> None:
    """No other job stored P meanwhile: the sweep's copy is the newest read there is, and is
    applied (and counted) however long it stood still."""
    store = any_store
    fake, conn, p = setup(store, provider, SWEPT[provider])
    change(fake, p, "20.00", 20)

    def meanwhile() -> None:
        CLOCK.advance(minutes=STALL)
        change(fake, p, "30.00", 30)  # at the provider only: nobody stores it

    report = stalled_sweep(store, fake, conn, provider, meanwhile)
    assert held(store, p.code)[0] == 20
    assert ("price", Decimal("20.00")) in {
        (c.field, c.new) for c in report.changes if c.sku == p.code
    }
    assert report.changed >= 1


def test_a_stalled_sweep_still_flags_a_ghost(any_store: Store) -> None:
    """Lightspeed's sweep by id: a product gone at the provider is a ghost, whatever another
    job stored of the others while the sweep stood still."""
    store = any_store
    fake, conn, p = setup(store, "lightspeed", 12)
    gone = sorted(fake.world.products.values(), key=lambda x: x.code)[5]
    del fake.world.products[gone.id]
    fake.world.deleted_products.add(gone.id)
    change(fake, p, "20.00", 20)

    def meanwhile() -> None:
        CLOCK.advance(minutes=STALL)
        change(fake, p, "30.00", 30)
        run_job(store, "pull-products", conn, fake.factory, pull)

    report = run_job(
        store, "sweep-oldest", conn, stalled_after_first_answer(fake, meanwhile), sweeper(12)
    )
    assert held(store, p.code) == (30, 30)
    assert {"sku": gone.code, "remote_id": gone.id, "state": "ghost"} in report.ghosts
    assert local(store, gone.code).active is False
    with store.read_session() as s:
        link = s.scalar(select(Link).where(Link.remote_id == gone.id))
        assert link is not None and link.state == "ghost"
