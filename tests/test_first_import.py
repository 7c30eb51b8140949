"""A first import: a connection with no product and no product link yet has nothing to look up,
so its pull writes each batch without reading the store back (the reads a first pull of 50,000
products made were a fifth of its PostgreSQL time), and a product the shop linked or created
meanwhile (post-invoices at sale time) is still found: the store's unique keys refuse the
batch and it is applied again with its reads."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fakes import FakeProvider
from sqlalchemy import event, func, select

from synccli import registry
from synccli.clock import SimClock
from synccli.store import bulk
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import Link, Product
from synccli.sync import products
from synccli.sync.stream import apply_batch

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest) -> Store:
    if request.param == "sqlite":
        return request.getfixturevalue("store")
    return request.getfixturevalue("pg_store")


def _reads(store: Store) -> Iterator[list[str]]:
    """The SELECTs that read the products or links tables for the products' stream while the
    block runs (a stock stream of its own, Unleashed's, still reads its rows' links)."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = " ".join(statement.split()).lower()
        stock = "products.stock" in text and " join " in text
        if text.startswith("select") and (" products" in text or " links" in text) and not stock:
            seen.append(text)

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", before)


def _first_pull(store: Store, fake: FakeProvider, name: str) -> tuple[products.PullReport, int]:
    conn = fake.add_connection(store, name)
    gen = _reads(store)
    reads = next(gen)
    with fake.run(store, "pull-products", get_connection(store, name)) as ctx:
        report = products.pull_products(ctx)
    count = len(reads)
    gen.close()
    assert not report.errors, report.errors
    with store.session() as s:
        stored = s.scalar(select(func.count()).where(Product.connection_id == conn.id))
    assert stored == report.new == len(fake.world.products)
    return report, count


# one provider whose stock comes with its products, one with a stock stream of its own
LIKE = [
    next(p.name for p in registry.providers() if p.calls.stock_changes_read is own)
    for own in (False, True)
]


@pytest.mark.parametrize("like", LIKE)
def test_a_first_pull_reads_no_products_or_links_back_whatever_its_size(
    any_store: Store, like: str
) -> None:
    counts = []
    for n, size in enumerate((1_200, 3_500)):
        fake = FakeProvider(like, products=size, clock=SimClock(START))
        _report, reads = _first_pull(any_store, fake, f"shop{n}")
        counts.append(reads)
    # the check that the connection has nothing yet: the same for 1,200 products as for 3,500
    assert counts == [1, 1], counts


def test_a_product_the_shop_created_meanwhile_is_linked_not_duplicated(
    any_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="synccli.job")
    store = any_store
    size = 2 * apply_batch(store) + 500  # three batches
    fake = FakeProvider("unleashed", products=size, clock=SimClock(START))
    conn = fake.add_connection(store, "shop")
    taken: list[str] = []

    def sold_meanwhile(_report: products.PullReport) -> None:
        if taken:
            return
        # after the first batch: post-invoices creates a product of a code still to come, as
        # it does at sale time on a connection whose catalogue was never pulled
        with store.session() as s:
            stored = set(s.scalars(select(Product.sku)))
            sku = next(p.code for p in fake.world.products.values() if p.code not in stored)
            s.add(Product(connection_id=conn.id, sku=sku, name="sold at the till", active=True))
        taken.append(sku)

    with fake.run(store, "pull-products", get_connection(store, "shop")) as ctx:
        report = products.pull_products(ctx, on_page=sold_meanwhile)
    assert not report.errors, report.errors
    assert report.new == size - 1 and taken
    # the batch written without its reads met the shop's product, and was applied again
    assert any(products.LINKED_MEANWHILE in r.getMessage() for r in caplog.records)
    with store.session() as s:
        rows = s.execute(select(Product.sku, Product.name).where(Product.connection_id == conn.id))
        by_sku = {sku: name for sku, name in rows}
        linked = s.scalar(
            select(func.count())
            .select_from(Link)
            .join(Product, Product.id == Link.local_id)
            .where(Product.sku == taken[0], Link.connection_id == conn.id)
        )
    assert len(by_sku) == size
    assert linked == 1
    # the remote record was applied to the shop's product (its name is the provider's now)
    remote = next(p for p in fake.world.products.values() if p.code == taken[0])
    assert by_sku[taken[0]] == remote.name


def test_a_connection_with_products_of_its_own_is_matched_by_code(any_store: Store) -> None:
    store = any_store
    fake = FakeProvider("xero", products=1_500, clock=SimClock(START))
    conn = fake.add_connection(store, "shop")
    own = list(fake.world.products.values())[1_234]
    with store.session() as s:
        s.add(Product(connection_id=conn.id, sku=own.code, name="the shop's own", active=True))
    with fake.run(store, "pull-products", get_connection(store, "shop")) as ctx:
        report = products.pull_products(ctx)
    assert not report.errors and report.new == 1_499
    with store.session() as s:
        assert s.scalar(select(func.count()).where(Product.connection_id == conn.id)) == 1_500


def test_postgresql_writes_a_first_pull_in_batches_of_5000(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is a COPY of its products and one of its links, whatever its size, and one
    commit: 6,000 products are 2 batches on PostgreSQL (SQLite's one writer keeps 1,000)."""
    tables: list[str] = []
    real = bulk._copy

    def counted(conn: Any, table: str, *args: Any) -> None:
        tables.append(table)
        real(conn, table, *args)

    monkeypatch.setattr(bulk, "_copy", counted)
    fake = FakeProvider("xero", products=6_000, clock=SimClock(START))
    _first_pull(pg_store, fake, "shop")
    assert tables == ["products", "links"] * 2
