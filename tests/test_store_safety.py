"""No command deletes a merchant's data by surprise; keys, secrets, terminal output and store
outages behave as a user expects (issue 17, lines 12-17)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from synccli.config import load_settings
from synccli.store.connections import add_connection, get_connection
from synccli.store.db import Store
from synccli.store.models import (
    Cursor,
    Customer,
    InvoiceJob,
    Link,
    Order,
    OrderLine,
    Product,
)

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SHOP_TABLES = ("products", "customers", "orders", "order_lines")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """An upgraded store on SQLite and on PostgreSQL; the CLI in this process opens the same."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        monkeypatch.setenv("SYNC_DATABASE_URL", url)
    st = Store(load_settings())
    st.upgrade()
    yield st
    st.dispose()


def _shop_with_data(store: Store, name: str = "shop", *, job_state: str = "posted") -> int:
    """A connection whose shop has a product, a customer, an order with two lines, a link, a
    cursor and an invoice job in ``job_state``."""
    add_connection(store, name, "xero", {"client_id": "c"}, {"client_secret": "s3cr3t-value"})
    conn_id = get_connection(store, name).id
    _fill(store, conn_id, name, job_state)
    return conn_id


def _fill(store: Store, conn_id: int, name: str, job_state: str = "posted") -> None:
    with store.session() as s:
        product = Product(
            connection_id=conn_id, sku=f"{name}-MUG", name="Mug", price=Decimal("4.50")
        )
        customer = Customer(connection_id=conn_id, name="Ann", email=f"ann@{name}.example")
        s.add_all([product, customer])
        s.flush()
        order = Order(
            connection_id=conn_id,
            number=f"{name}-1001",
            date=NOW,
            currency="NZD",
            customer_id=customer.id,
            total=Decimal("9.00"),
            created_at=NOW,
            lines=[
                OrderLine(
                    line_no=n,
                    sku=f"{name}-MUG",
                    description="Mug",
                    quantity=Decimal(1),
                    unit_price=Decimal("4.50"),
                )
                for n in (1, 2)
            ],
        )
        s.add(order)
        s.flush()
        s.add_all(
            [
                Link(
                    connection_id=conn_id,
                    kind="product",
                    local_id=product.id,
                    remote_id="r-1",
                    created_at=NOW,
                ),
                Cursor(connection_id=conn_id, stream="products", value=NOW, updated_at=NOW),
                InvoiceJob(
                    connection_id=conn_id,
                    order_id=order.id,
                    state=job_state,
                    idempotency_key=f"{name}-key-1",
                    next_attempt_at=NOW,
                    created_at=NOW,
                ),
            ]
        )


def _rows(store: Store, table: str) -> list[dict[str, Any]]:
    with store.session() as s:
        result = s.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))
        return [dict(row._mapping) for row in result]


def _count(store: Store, table: str, conn_id: int) -> int:
    with store.session() as s:
        query = text(f"SELECT count(*) FROM {table} WHERE connection_id = :c")
        return int(s.scalar(query, {"c": conn_id}) or 0)


def _without_connection(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "connection_id"} for row in rows]


# line 13: `connections remove` keeps the shop's own rows ---------------------------------------
def test_connections_remove_keeps_the_shops_products_customers_orders_and_lines(any_store, cli):
    gone = _shop_with_data(any_store, "shop")
    kept = _shop_with_data(any_store, "other")
    before = {t: _rows(any_store, t) for t in SHOP_TABLES}
    assert all(len(before[t]) >= 2 for t in SHOP_TABLES)

    removed = cli("connections", "remove", "shop")

    assert removed.exit_code == 0, removed.stderr
    after = {t: _rows(any_store, t) for t in SHOP_TABLES}
    for table in SHOP_TABLES:
        # every row is still there, every field as it was but the connection it belonged to
        assert _without_connection(after[table]) == _without_connection(before[table]), table
    for table in ("products", "customers", "orders"):
        owners = {row["id"]: row["connection_id"] for row in after[table]}
        was = {row["id"]: row["connection_id"] for row in before[table]}
        assert {i: o for i, o in owners.items() if was[i] == kept} == {
            i: kept for i, o in was.items() if o == kept
        }, f"{table}: the other connection's rows are untouched"
        assert all(owners[i] is None for i, o in was.items() if o == gone), table
    # the link store's rows of the removed connection are gone; the other's stay
    for table in ("links", "cursors", "invoice_jobs"):
        assert _count(any_store, table, gone) == 0, table
        assert _count(any_store, table, kept) == 1, table
    assert cli("connections", "show", "shop").exit_code == 2


def test_connections_remove_with_unposted_invoices_needs_force_and_still_keeps_shop_rows(
    any_store, cli
):
    conn_id = _shop_with_data(any_store, "shop", job_state="pending")
    before = {t: _rows(any_store, t) for t in SHOP_TABLES}

    refused = cli("connections", "remove", "shop")
    assert refused.exit_code == 2
    assert refused.stderr.strip().count("\n") == 0 and "--force" in refused.stderr
    assert {t: _rows(any_store, t) for t in SHOP_TABLES} == before
    assert _count(any_store, "invoice_jobs", conn_id) == 1

    forced = cli("connections", "remove", "shop", "--force")
    assert forced.exit_code == 0, forced.stderr
    after = {t: _rows(any_store, t) for t in SHOP_TABLES}
    assert {t: _without_connection(after[t]) for t in SHOP_TABLES} == {
        t: _without_connection(before[t]) for t in SHOP_TABLES
    }
    for table in ("links", "cursors", "invoice_jobs"):
        assert _count(any_store, table, conn_id) == 0, table


# line 12: `sandbox serve --connect` ------------------------------------------------------------
def _serve(cli, name: str, provider: str = "xero") -> Any:
    return cli(
        "sandbox",
        "serve",
        "--provider",
        provider,
        "--products",
        "2",
        "--customers",
        "1",
        "--seconds",
        "0.1",
        "--connect",
        name,
    )


def test_sandbox_serve_refuses_to_take_over_a_real_connection(any_store, cli):
    conn_id = _shop_with_data(any_store, "shop", job_state="pending")
    connection = _rows(any_store, "connections")
    before = {t: _rows(any_store, t) for t in (*SHOP_TABLES, "links", "cursors", "invoice_jobs")}

    served = _serve(cli, "shop")

    assert served.exit_code == 2
    assert served.stderr.strip().count("\n") == 0 and "shop" in served.stderr
    assert "sandbox" in served.stderr
    assert _rows(any_store, "connections") == connection
    after = {t: _rows(any_store, t) for t in before}
    assert after == before
    assert get_connection(any_store, "shop").id == conn_id


def test_sandbox_serve_again_repoints_its_own_connection_and_deletes_nothing(any_store, cli):
    first = _serve(cli, "demo")
    assert first.exit_code == 0, first.stderr
    conn = get_connection(any_store, "demo")
    _fill(any_store, conn.id, "demo", "pending")  # what runs against the sandbox left behind
    products = _rows(any_store, "products")
    links = _rows(any_store, "links")
    assert products and links

    again = _serve(cli, "demo")

    assert again.exit_code == 0, again.stderr
    now = get_connection(any_store, "demo")
    assert now.id == conn.id
    assert now.settings["base_url"] != conn.settings["base_url"]  # a new port: re-pointed
    assert _rows(any_store, "products") == products
    assert _rows(any_store, "links") == links
    # and a different provider under the same name is refused, not replaced
    other = _serve(cli, "demo", provider="unleashed")
    assert other.exit_code == 2 and other.stderr.strip().count("\n") == 0
    assert get_connection(any_store, "demo").provider == "xero"


def test_the_upgrade_that_frees_shop_rows_keeps_every_row_of_an_existing_store(
    any_store, cli, monkeypatch
):
    """A store made before the change (revision 0003) keeps every order line and invoice job
    through the upgrade: rebuilding a table on SQLite must not cascade into its children."""
    from alembic import command
    from synccli.store.db import alembic_config

    monkeypatch.setenv("SYNC_SECRET_KEY", "")
    with any_store.engine.begin() as conn:
        cfg = alembic_config(any_store.settings.database_url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    conn_id = _shop_with_data(any_store, "shop", job_state="pending")
    tables = (*SHOP_TABLES, "links", "cursors", "invoice_jobs")
    before = {t: _rows(any_store, t) for t in tables}

    assert cli("db", "upgrade").exit_code == 0
    assert {t: _rows(any_store, t) for t in tables} == before
    assert cli("connections", "remove", "shop", "--force").exit_code == 0
    assert _count(any_store, "products", conn_id) == 0
    assert len(_rows(any_store, "order_lines")) == 2
