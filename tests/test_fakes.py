"""The fake provider job tests run against (tests/fakes.py) keeps the contract's promises: what a
listing returns since a stamp, exact look-ups, calls counted in the run's ledger, and each fault
doing what it says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fakes import NUMBER_TAKEN, FakeProvider
from sqlalchemy import func, select

from synccli.clock import SimClock
from synccli.connectors.base import InvoiceDraft, InvoiceLine, NewCustomer, NewProduct
from synccli.errors import AuthError, BudgetExhausted, RateLimited, Rejected, TransientError
from synccli.store.db import Store
from synccli.store.ledger import stored_block
from synccli.store.models import ApiCall, Run
from synccli.sync import products

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def draft(fake: FakeProvider, number: str) -> InvoiceDraft:
    customer = next(iter(fake.world.customers.values()))
    product = next(iter(fake.world.products.values()))
    line = InvoiceLine(product.id, product.code, "one", Decimal(2), Decimal("5.00"))
    return InvoiceDraft(number, START, "NZD", customer.id, [line])


def test_listings_page_by_stamp_and_return_what_changed_since() -> None:
    clock = SimClock(START)
    fake = FakeProvider("lightspeed", products=250, customers=3, clock=clock)  # pages of 100
    c = fake.connector()
    pages = list(c.changed_products(None))
    assert [len(p.records) for p in pages] == [100, 100, 50]  # Lightspeed's pages of 100
    assert fake.calls["changed_products"] == 3
    stamps = [r.updated_at for p in pages for r in p.records]
    assert stamps == sorted(stamps) and pages[-1].cursor == max(stamps)
    clock.advance(hours=1)
    priced = fake.catalogue.change_prices(fake.tenant, 4)
    moved = fake.catalogue.change_stock(fake.tenant, 3, exclude={p.id for p in priced})
    since = clock.now() - timedelta(minutes=1)
    got = [r.code for p in c.changed_products(since) for r in p.records]
    assert sorted(got) == sorted(p.code for p in priced)
    stock = [r.code for p in c.changed_stock(since) for r in p.records]
    assert sorted(stock) == sorted(p.code for p in moved)


def test_a_provider_without_a_stock_stream_moves_the_product_and_makes_no_stock_call() -> None:
    clock = SimClock(START)
    fake = FakeProvider("xero", products=30, clock=clock)
    c = fake.connector()
    assert len(list(c.changed_products(None))) == 1  # Xero's one Items call
    clock.advance(hours=1)
    moved = fake.catalogue.change_stock(fake.tenant, 2)
    since = clock.now() - timedelta(minutes=1)
    listed = [r for p in c.changed_products(since) for r in p.records]  # every item, one call
    assert len(listed) == 30 and fake.calls["changed_products"] == 2
    got = {r.code: r.stock for r in listed if r.updated_at and r.updated_at > since}
    assert got == {p.code: p.stock for p in moved}
    assert list(c.changed_stock(since)) == [] and "changed_stock" not in fake.calls
    assert len(c.get_products([r.remote_id for r in listed[:3]])) == 3
    assert fake.calls["get_products"] == 1  # the whole list again, one call


def test_look_ups_are_exact_and_batched_as_the_provider_allows() -> None:
    fake = FakeProvider("unleashed", products=250)
    c = fake.connector()
    world = list(fake.world.products.values())
    ids = [p.id for p in world[:250]]
    assert len(c.get_products(ids + ["gone"])) == 250
    # Unleashed's look-ups take 100 ids, and the stock of those found is a call of its own
    assert fake.calls["get_products"] == 3 and fake.calls["get_stock"] == 3
    fake.catalogue.gen.add_product(fake.world, code="ABC-1")
    assert c.find_product("ABC") is None
    assert c.create_product(NewProduct("ABC", "ours", Decimal("5.00"))).code == "ABC"
    found = c.find_product("ABC")
    assert found is not None and found.price == Decimal("5.00")
    made = c.create_customer(NewCustomer("Ann Lee", email="Ann@Example.com", account_number="A1"))
    assert [x.remote_id for x in c.find_customers(email="ann@example.com")] == [made.remote_id]
    assert [x.remote_id for x in c.find_customers(account="A1")] == [made.remote_id]
    assert c.find_customers(account="A") == []


def test_each_fault_does_what_it_says() -> None:
    fake = FakeProvider("xero", products=2, customers=2)
    c = fake.connector()
    fake.fail("transient", "post_invoice")
    with pytest.raises(TransientError):
        c.post_invoice(draft(fake, "T-1"), "k1")
    assert c.find_invoice("T-1") is None  # nothing was made
    fake.fail("lost", "post_invoice")
    with pytest.raises(TransientError):
        c.post_invoice(draft(fake, "L-1"), "k2")
    assert c.find_invoice("L-1") is not None  # made, its answer lost
    fake.fail("rejected", "post_invoice", messages=("Tax code unknown",))
    with pytest.raises(Rejected) as refused:
        c.post_invoice(draft(fake, "R-1"), "k3")
    assert refused.value.errors == ["Tax code unknown"]
    with pytest.raises(Rejected) as taken:
        c.post_invoice(draft(fake, "L-1"), "k4")
    assert c.number_taken(taken.value.errors)
    fake.fail("rate_limited")
    with pytest.raises(RateLimited):
        c.find_invoice("L-1")
    fake.fail("auth", "find_customers")
    with pytest.raises(AuthError):
        c.find_customers(email="x@example.com")
    only = fake.fail("transient", "find_invoice", when=lambda number: number == "X-2", times=2)
    assert c.find_invoice("X-1") is None and only.fired == 0
    assert c.post_invoice(draft(fake, "R-1"), "k5").number == "R-1"  # each fault fired once
    assert fake.calls["post_invoice"] == 5 and fake.writes() == 5
    # a provider that takes a number twice (Lightspeed) makes a second invoice under it: what a
    # job's look-up after an unclear post is there to prevent
    lenient = FakeProvider("lightspeed", products=2, customers=2)
    other = lenient.connector()
    first = other.post_invoice(draft(lenient, "D-1"), "k1")
    assert other.post_invoice(draft(lenient, "D-1"), "k1").remote_id != first.remote_id
    assert not other.number_taken([f"fake post_invoice: {NUMBER_TAKEN}"])


def test_calls_are_counted_in_the_runs_ledger_and_a_spent_budget_is_stored(store: Store) -> None:
    clock = SimClock(START)
    fake = FakeProvider("unleashed", products=1500, clock=clock)
    conn = fake.add_connection(store)
    with fake.run(store, "pull-products", conn) as ctx:
        report = products.pull_products(ctx)
        ctx.counts = report
    assert report.new == 1500 and report.calls == fake.total() == 4  # 2 + 2 pages of 1,000
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(ApiCall)) == 4
        assert s.scalar(select(Run.calls)) == 4
    fake.fail("budget", "changed_products")
    with pytest.raises(BudgetExhausted), fake.run(store, "pull-products", conn) as ctx:
        products.pull_products(ctx)
    block = stored_block(store, conn.id, clock.now())
    assert block is not None and "budget" in block[1]
    before = fake.total()
    with pytest.raises(BudgetExhausted), fake.run(store, "pull-products", conn) as ctx:
        products.pull_products(ctx)
    assert fake.total() == before  # the stored block refuses the next call before it is made
