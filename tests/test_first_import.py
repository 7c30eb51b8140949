"""A first import: a connection with no product and no product link yet has nothing to look up,
so its pull writes each batch without reading the store back (the reads a first pull of 50,000
products made were a fifth of its PostgreSQL time), and a product the shop linked or created
meanwhile (post-invoices at sale time) is still found: the store's unique keys refuse the
batch and it is applied again with its reads."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from fakes import FakeConnector, FakeProvider
from sqlalchemy import event, func, select

from synccli import registry
from synccli.clock import SimClock
from synccli.connectors.base import Page, RemoteStock
from synccli.store import bulk
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import Cursor, Event, Link, Product
from synccli.sync import products
from synccli.sync.stream import apply_batch

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


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


# --- stock listed apart from the products (Unleashed, Lightspeed X-Series) ---------------------
STOCK_APART = LIKE[1]


def _statements(store: Store) -> Iterator[list[str]]:
    """Every statement sent while the block runs, lower-cased on one line."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()).lower())

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", before)


def _stock_world(store: Store, conn_id: int) -> dict[str, Any]:
    """What a pull stored for a connection, without ids: products (with stock and stamps),
    links, stock events and cursors."""
    with store.session() as s:
        sku = {p.id: p.sku for p in s.scalars(select(Product))}
        found: dict[str, Any] = {
            "products": sorted(
                (p.sku, p.name, p.price, p.stock, p.active, p.updated_at)
                for p in s.scalars(select(Product).where(Product.connection_id == conn_id))
            ),
            "links": sorted(
                (sku[k.local_id], k.remote_id, k.state, k.last_synced_at, k.remote_updated_at)
                for k in s.scalars(select(Link).where(Link.connection_id == conn_id))
            ),
            "events": sorted(
                (sku[e.local_id], e.field, e.old, e.new, e.at)
                for e in s.scalars(select(Event).where(Event.connection_id == conn_id))
            ),
            "cursors": sorted(
                (c.stream, c.value)
                for c in s.scalars(select(Cursor).where(Cursor.connection_id == conn_id))
            ),
        }
    return found


def _pull_both(
    store: Store, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, hold: int | None = None
) -> tuple[dict[str, Any], dict[str, Any], list[str], list[products.PullReport]]:
    """One connection pulled with its stock read after its products (as a re-import reads it),
    another as a first import does by default (``hold``: rows it keeps at most); answers both
    worlds, the second pull's statements and both reports."""
    reports = []
    worlds = []
    statements: list[str] = []
    default = getattr(products, "HOLD_STOCK", None)
    for name, held in (("after", 0), ("first", default if hold is None else hold)):
        conn = fake.add_connection(store, name)
        monkeypatch.setattr(products, "HOLD_STOCK", held, raising=False)
        gen = _statements(store)
        sent = next(gen)
        with fake.run(store, "pull-products", get_connection(store, name)) as ctx:
            reports.append(products.pull_products(ctx))
        gen.close()
        statements = sent
        worlds.append(_stock_world(store, conn.id))
    return worlds[0], worlds[1], statements, reports


def test_a_first_import_writes_each_product_with_its_stock(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where stock is listed apart, a first import into PostgreSQL reads the stock listing first
    and writes each new product with its figure: no stock row is read back, no product updated
    (that was a third of a first Unleashed pull). What is stored is what the pull stored
    reading the stock after the products: every figure, stamp, link and cursor."""
    fake = FakeProvider(STOCK_APART, products=2_500, clock=SimClock(START))
    after, first, sent, reports = _pull_both(pg_store, fake, monkeypatch)
    assert first == after
    assert all(stock is not None for _s, _n, _p, stock, _a, _u in first["products"])
    assert not [t for t in sent if t.startswith("update products")]
    assert not [t for t in sent if "products.stock" in t and " join " in t]
    assert [(r.stock_seen, r.stock_unknown, r.changed, r.new) for r in reports] == [
        (2_500, 0, 0, 2_500)
    ] * 2


def test_a_first_import_holds_at_most_hold_stock_rows(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing longer than a first import holds: the rows past the limit are read and applied
    after the products, as a re-import's are; the products are stored the same."""
    fake = FakeProvider(STOCK_APART, products=1_500, clock=SimClock(START), page_size=200)
    after, first, sent, reports = _pull_both(pg_store, fake, monkeypatch, hold=600)
    assert first == after
    assert [t for t in sent if t.startswith("update products")]  # the rest's figures
    assert reports[0].stock_seen == reports[1].stock_seen == 1_500


def test_a_stock_row_listed_twice_is_applied_in_order(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing paged while a product's stock moved shows it twice (it moved to a later
    page): its first figure is its initial state and the second a change, with its event, as
    when the stock is read after the products."""
    fake = FakeProvider(STOCK_APART, products=1_500, clock=SimClock(START))
    real = FakeConnector.changed_stock
    moved = next(iter(fake.world.products.values()))

    def twice(self: FakeConnector, since: datetime | None) -> Iterator[Page[RemoteStock]]:
        pages = list(real(self, since))
        row = next(r for page in pages for r in page.records if r.remote_id == moved.id)
        again = replace(row, quantity=row.quantity + 7)
        yield from pages[:-1]
        yield replace(pages[-1], records=[*pages[-1].records, again])

    monkeypatch.setattr(FakeConnector, "changed_stock", twice)
    after, first, _sent, reports = _pull_both(pg_store, fake, monkeypatch)
    assert first == after
    assert [e[1] for e in first["events"]] == ["stock"]
    assert [r.changed for r in reports] == [1, 1]


@pytest.mark.parametrize("like", LIKE)
def test_a_first_import_into_postgresql_keeps_its_plans_generic(pg_store: Store, like: str) -> None:
    """A first import's batches read nothing back, so their transactions do not ask PostgreSQL
    to plan each statement for its own values (``plan_cache_mode``): under that setting the
    foreign-key check of every row a COPY writes was planned anew, half of the server's work
    in a first pull of 50,000 products."""
    fake = FakeProvider(like, products=1_200, clock=SimClock(START))
    gen = _statements(pg_store)
    sent = next(gen)
    _first_pull(pg_store, fake, "shop")
    gen.close()
    assert not [t for t in sent if "plan_cache_mode" in t]
