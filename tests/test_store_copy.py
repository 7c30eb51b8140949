"""PostgreSQL's bulk writes go through COPY, and store exactly what the statements before them
stored: every column, NULLs, decimals, unicode, and the characters COPY's text format would have
to escape (tabs, newlines, backslashes, ``\\N``). A first pull and its re-import write the same
rows either way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fakes import FakeProvider
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from synccli.clock import SimClock
from synccli.store import bulk
from synccli.store.bulk import insert_rows, update_rows
from synccli.store.connections import add_connection, get_connection
from synccli.store.db import Store
from synccli.store.models import Cursor, Event, Link, Product
from synccli.sync import products

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 29, 7, 0, 0, 123456, tzinfo=UTC)
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NAMES = [
    "tab\there",
    "new\nline and \r return",
    "back\\slash \\N \\t \\\\",
    "\\N",
    "",
    "quote ' \" , ; |",
    "ünïcödé 日本語 🧦 e\u0301",
    "x" * 255,
]
PRICES = [
    Decimal("0"),
    Decimal("-12.3456"),
    Decimal("12345678901234.5678"),
    Decimal("0.0001"),
    Decimal("1E+3"),
    Decimal("7.00"),
    Decimal("3.14159"),  # more places than the column keeps: rounded by the database alike
    Decimal("99.5"),
]


@pytest.fixture
def copy_counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tables each COPY wrote (in order)."""
    tables: list[str] = []
    real = bulk._copy

    def counted(conn: Any, table: str, *args: Any) -> None:
        tables.append(table)
        real(conn, table, *args)

    monkeypatch.setattr(bulk, "_copy", counted)
    return tables


def _product_rows(conn_id: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "connection_id": conn_id,
            "sku": f"{prefix}-{n}",
            "name": name,
            "description": None if n % 3 == 0 else name + "\n" + name,
            "price": PRICES[n],
            "stock": None if n % 2 else PRICES[-1 - n],
            "active": n % 2 == 0,
            "updated_at": NOW + timedelta(hours=n),
        }
        for n, name in enumerate(NAMES)
    ]


def _raw(store: Store, sql: str) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return [tuple(row) for row in conn.exec_driver_sql(sql)]


def _products(store: Store, prefix: str) -> list[tuple[Any, ...]]:
    # the text PostgreSQL holds, not a parse: byte for byte
    return [
        row[1:]
        for row in _raw(
            store,
            "SELECT sku, substr(sku, strpos(sku, '-')), name, description, price::text, "
            "stock::text, active, updated_at::text, connection_id FROM products ORDER BY sku",
        )
        if row[0].startswith(f"{prefix}-")
    ]


def test_copy_inserts_and_updates_what_the_statements_did(
    pg_store: Store, copy_counted: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pg_store
    add_connection(store, "shop", "xero", {}, {}, None)
    conn_id = get_connection(store, "shop").id
    found: dict[str, list[tuple[Any, ...]]] = {}
    for prefix, copy in (("old", False), ("new", True)):
        monkeypatch.setattr(bulk, "use_copy", copy)
        with store.session() as s:
            found[prefix] = insert_rows(
                s.connection(), Product.__table__, _product_rows(conn_id, prefix), ("id", "sku")
            )
    assert copy_counted == ["products"]
    assert _products(store, "new") == _products(store, "old")
    with store.session() as s:
        stored = {p.sku: p.id for p in s.scalars(select(Product))}
    for prefix in ("old", "new"):  # the ids handed back are the rows' own
        assert sorted(found[prefix]) == sorted(
            (pid, sku) for sku, pid in stored.items() if sku.startswith(prefix)
        )

    # updates (a later row for one key wins, as executemany's last statement did)
    for prefix, copy in (("old", False), ("new", True)):
        monkeypatch.setattr(bulk, "use_copy", copy)
        ids = [pid for pid, _sku in sorted(found[prefix], key=lambda r: r[1])]
        with store.session() as s:
            update_rows(
                s.connection(),
                Product.__table__,
                "id",
                [
                    {"id": ids[1], "name": "b\\a\tc\nk", "stock": None, "updated_at": NOW},
                    {"id": ids[2], "name": "🧦", "stock": Decimal("-0.5"), "updated_at": NOW},
                    {"id": ids[1], "name": "later\\N", "stock": Decimal("2"), "updated_at": NOW},
                ],
            )
    assert copy_counted[1:] == [copy_counted[1]] and copy_counted[1].startswith("synccli_update")
    assert _products(store, "new") == _products(store, "old")
    assert [r[1] for r in _products(store, "new")][1:3] == ["later\\N", "🧦"]


def test_copy_fills_defaults_keeps_nulls_and_raises_integrity_errors(
    pg_store: Store, copy_counted: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pg_store
    add_connection(store, "shop", "xero", {}, {}, None)
    conn_id = get_connection(store, "shop").id
    for prefix, copy in (("old", False), ("new", True)):
        monkeypatch.setattr(bulk, "use_copy", copy)
        rows = [
            {
                "connection_id": conn_id,
                "kind": "product",
                "local_id": n + (100 if copy else 0),  # one link a local product
                "remote_id": f"{prefix}-{n}-{name[:40]}",
                "remote_code": None if n % 2 else name,
                "last_synced_at": None,
                "remote_updated_at": NOW if n % 3 else None,
                "created_at": NOW,
            }
            for n, name in enumerate(NAMES)
        ]
        with store.session() as s:
            insert_rows(s.connection(), Link.__table__, rows)
        with store.session() as s:
            event = {"run_id": None, "connection_id": conn_id, "kind": "product", "local_id": 1}
            event |= {"field": "name", "old": None, "new": NAMES[2], "at": NOW}
            insert_rows(s.connection(), Event.__table__, [event])
    assert copy_counted == ["links", "events"]
    links = _raw(
        store,
        "SELECT substr(remote_id, 5), mod(local_id, 100), remote_code, state, origin, "
        "last_synced_at, remote_updated_at::text, created_at::text FROM links "
        "ORDER BY remote_id, local_id",
    )
    new, old = links[: len(NAMES)], links[len(NAMES) :]  # "new-..." sorts first
    assert new == old and old[0][3:5] == ("linked", "matched")
    events = _raw(store, "SELECT kind, local_id, field, old, new, at::text FROM events")
    assert events[0] == events[1]
    duplicate = {**rows[0], "local_id": 99}  # uq_links_remote: the pull retries on this
    with pytest.raises(IntegrityError), store.session() as s:
        insert_rows(s.connection(), Link.__table__, [duplicate])


def _world(store: Store, conn_id: int) -> list[tuple[Any, ...]]:
    """A connection's products, links and events, without ids (two connections compared)."""
    with store.session() as s:
        sku = {p.id: p.sku for p in s.scalars(select(Product))}
        rows: list[tuple[Any, ...]] = [
            ("product", p.sku, p.name, p.description, p.price, p.stock, p.active, p.updated_at)
            for p in s.scalars(select(Product).where(Product.connection_id == conn_id))
        ]
        rows += [
            ("link", sku[k.local_id], k.remote_id, k.remote_code, k.state, k.origin)
            + (k.last_synced_at, k.remote_updated_at, k.created_at)
            for k in s.scalars(select(Link).where(Link.connection_id == conn_id))
        ]
        rows += [
            ("event", sku[e.local_id], e.field, e.old, e.new, e.at, e.kind)
            for e in s.scalars(select(Event).where(Event.connection_id == conn_id))
        ]
    return sorted(rows, key=repr)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    provider = FakeProvider("unleashed", products=1_500, clock=SimClock(START))
    for product, name in zip(provider.world.products.values(), NAMES, strict=False):
        product.name = name  # what a merchant types into a name field
        product.description = name + "\\"
    yield provider


def _pull(store: Store, fake: FakeProvider, name: str, copy: bool, mp: pytest.MonkeyPatch) -> None:
    mp.setattr(bulk, "use_copy", copy)
    with fake.run(store, "pull-products", get_connection(store, name)) as ctx:
        report = products.pull_products(ctx)
        assert not report.errors


def test_a_first_pull_and_its_reimport_store_the_same_rows_through_copy(
    pg_store: Store, fake: FakeProvider, copy_counted: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pg_store
    ids = {name: fake.add_connection(store, name).id for name in ("old", "new")}
    for name, copy in (("old", False), ("new", True)):
        _pull(store, fake, name, copy, monkeypatch)
    assert {"products", "links"} <= set(copy_counted)
    assert _world(store, ids["new"]) == _world(store, ids["old"])
    assert len([r for r in _world(store, ids["new"]) if r[0] == "product"]) == 1_500

    # re-import: every record read again (cursors gone), with changed prices and stock; and
    # products of the shop's own with no link yet, matched by code
    fake.clock.advance(hours=1)
    fake.catalogue.change_prices(fake.tenant, 40)
    fake.catalogue.change_stock(fake.tenant, 60)
    with store.session() as s:
        s.execute(delete(Cursor))
        for conn_id in ids.values():
            some = list(s.scalars(select(Link.id).where(Link.connection_id == conn_id).limit(25)))
            s.execute(delete(Link).where(Link.id.in_(some)))
    copy_counted.clear()
    for name, copy in (("old", False), ("new", True)):
        _pull(store, fake, name, copy, monkeypatch)
    assert any(t.startswith("synccli_update") for t in copy_counted)  # the stock stream
    assert _world(store, ids["new"]) == _world(store, ids["old"])
    events = [r for r in _world(store, ids["new"]) if r[0] == "event"]
    assert {"price", "stock"} <= {r[2] for r in events}


def test_a_nul_in_a_provider_s_text_does_not_stop_a_pull_on_either_store(
    store: Store, pg_store: Store
) -> None:
    """PostgreSQL's text cannot hold a NUL (U+0000): a product name with one refused the whole
    pull, on every run (a JSON answer may carry ``\\u0000``). Dropped from the record as read,
    on both stores alike, so the next pull finds nothing changed."""
    stored = {}
    assert store.is_sqlite and not pg_store.is_sqlite  # the SQLite store is made first
    for st in (store, pg_store):
        fake = FakeProvider("xero", products=30, clock=SimClock(START))
        first, second = list(fake.world.products.values())[:2]
        first.name, first.description = "nul\x00in the name", "and\x00 here\x00"
        second.name = "\x00"
        fake.add_connection(st, "shop")
        for _ in range(2):
            fake.clock.advance(minutes=30)
            with fake.run(st, "pull-products", get_connection(st, "shop")) as ctx:
                report = products.pull_products(ctx)
            assert not report.errors
        assert report.changed == 0 and not report.changes  # the second pull: nothing new
        with st.session() as s:
            by_sku = {p.sku: (p.name, p.description) for p in s.scalars(select(Product))}
        stored[st.engine.dialect.name] = by_sku
        assert by_sku[first.code] == ("nulin the name", "and here")
        assert by_sku[second.code][0] == ""
    assert stored["sqlite"] == stored["postgresql"]
