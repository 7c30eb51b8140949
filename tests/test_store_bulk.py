"""The pull's bulk writes store exactly what SQLAlchemy's own insert and update would, on SQLite
(plain tuples to the driver) and on PostgreSQL (SQLAlchemy as usual)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import DateTime, insert, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from synccli.store.bulk import insert_rows, one_of, update_rows
from synccli.store.connections import add_connection, get_connection
from synccli.store.db import Store
from synccli.store.models import Link, Product, UTCDateTime

NOW = datetime(2026, 11, 29, 7, 0, 0, 123456, tzinfo=UTC)
ELSEWHERE = datetime(2026, 11, 29, 20, 30, tzinfo=timezone(timedelta(hours=13)))  # 07:30 UTC


def _rows(conn_id: int, prefix: str) -> list[dict]:
    return [
        {
            "connection_id": conn_id,
            "sku": f"{prefix}-{n}",
            "name": f"Widget {n}",
            "description": None if n % 2 else "blue",
            "price": Decimal("12.3456") + n,
            "stock": None if n == 0 else Decimal(n),
            "active": n % 3 != 0,
            "updated_at": NOW if n % 2 else ELSEWHERE,
        }
        for n in range(5)
    ]


def _raw(store: Store, prefix: str) -> list[tuple]:
    """The values as the database holds them (SQLite: the text of a timestamp, not a parse)."""
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT sku, name, description, price, stock, active, updated_at FROM products "
            "ORDER BY sku"
        )
        return [tuple(row[1:]) for row in rows if row[0].startswith(f"{prefix}-")]


def _stored(store: Store, prefix: str) -> list[tuple]:
    with store.session() as s:
        return [
            (p.sku, p.name, p.description, p.price, p.stock, p.active, p.updated_at)
            for p in s.scalars(
                select(Product).where(Product.sku.like(f"{prefix}-%")).order_by(Product.sku)
            )
        ]


def test_bulk_insert_and_update_store_what_sqlalchemy_would(any_store: Store) -> None:
    store = any_store
    add_connection(store, "shop", "xero", {}, {}, None)
    conn_id = get_connection(store, "shop").id
    with store.session() as s:
        s.connection().execute(insert(Product.__table__), _rows(conn_id, "sa"))
        found = insert_rows(
            s.connection(), Product.__table__, _rows(conn_id, "bulk"), ("id", "sku")
        )
    assert sorted(sku for _id, sku in found) == [f"bulk-{n}" for n in range(5)]
    expected = _stored(store, "sa")
    assert [row[1:] for row in _stored(store, "bulk")] == [row[1:] for row in expected]
    assert expected[0][6] == ELSEWHERE  # aware, converted to UTC and back
    assert _raw(store, "bulk") == _raw(store, "sa")  # byte for byte, not only once parsed

    ids = dict((sku, pid) for pid, sku in found)
    with store.session() as s:
        update_rows(
            s.connection(),
            Product.__table__,
            "id",
            [{"id": ids["bulk-1"], "stock": Decimal("7.5"), "updated_at": ELSEWHERE}],
        )
    after = {row[0]: row for row in _stored(store, "bulk")}
    assert after["bulk-1"][4] == Decimal("7.5") and after["bulk-1"][6] == ELSEWHERE
    assert after["bulk-2"][4] == Decimal(2)  # only the named row changed


def test_bulk_insert_fills_column_defaults_and_reports_duplicates(any_store: Store) -> None:
    store = any_store
    add_connection(store, "shop", "xero", {}, {}, None)
    conn_id = get_connection(store, "shop").id
    row = {
        "connection_id": conn_id,
        "kind": "product",
        "local_id": 1,
        "remote_id": "r-1",
        "remote_code": "A",
        "created_at": NOW,
    }
    with store.session() as s:
        insert_rows(s.connection(), Link.__table__, [row])
    with store.session() as s:
        link = s.scalars(select(Link)).one()
        assert (link.state, link.origin) == ("linked", "matched")  # the models' defaults
    with pytest.raises(IntegrityError), store.session() as s:
        insert_rows(s.connection(), Link.__table__, [row])  # the pull retries on this


@pytest.mark.parametrize(
    "value",
    [
        NOW,
        ELSEWHERE,
        datetime(2026, 1, 2, 3, 4, 5),  # naive: taken as UTC, no microseconds
        datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),  # a year under 1000 keeps 4 digits
        datetime(2026, 3, 29, 1, 0, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
    ],
)
def test_timestamps_are_stored_as_sqlalchemys_sqlite_datetime_text(value: datetime) -> None:
    dialect = sqlite.dialect()
    ours = UTCDateTime().bind_processor(dialect)
    theirs = DateTime().dialect_impl(dialect).bind_processor(dialect)
    as_utc = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    assert ours(value) == theirs(as_utc)
    assert ours(None) is None


def test_one_of_finds_exactly_the_listed_rows(any_store: Store) -> None:
    store = any_store
    add_connection(store, "shop", "xero", {}, {}, None)
    conn_id = get_connection(store, "shop").id
    odd = ['O\'Neil "8" ü', "back\\slash", "[1]", "1"]  # JSON escaping; "1" stays a string
    rows = _rows(conn_id, "p")
    for row, sku in zip(rows, odd, strict=False):
        row["sku"] = sku
    with store.session() as s:
        found = dict(
            (sku, pid)
            for pid, sku in insert_rows(s.connection(), Product.__table__, rows, ("id", "sku"))
        )
    with store.session() as s:
        dialect = s.get_bind().dialect

        def skus(where) -> list[str]:
            return sorted(s.scalars(select(Product.sku).where(where)))

        assert skus(one_of(Product.sku, [*odd, "absent"], dialect)) == sorted(odd)
        assert skus(one_of(Product.sku, ["1"], dialect)) == ["1"]
        assert skus(one_of(Product.id, [found["[1]"], found["1"], 10**9], dialect)) == ["1", "[1]"]
        assert skus(one_of(Product.sku, [], dialect)) == []
        assert (
            s.execute(
                update(Product).where(one_of(Product.id, [found["1"]], dialect)).values(name="x")
            ).rowcount
            == 1
        )
