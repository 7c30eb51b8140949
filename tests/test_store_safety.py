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


def _shop_at_0003(store: Store) -> int:
    """_shop_with_data's rows written as revision 0003's tables hold them (plain SQL: the models
    describe the newest schema)."""
    add_connection(store, "shop", "xero", {"client_id": "c"}, {"client_secret": "s3cr3t-value"})
    conn_id = get_connection(store, "shop").id
    at = "2026-12-01 09:00:00.000000"
    statements = [
        "INSERT INTO products (id, connection_id, sku, name, price, active) "
        "VALUES (1, :c, 'shop-MUG', 'Mug', 4.5, true)",
        "INSERT INTO customers (id, connection_id, name, email) "
        "VALUES (1, :c, 'Ann', 'ann@shop.example')",
        "INSERT INTO orders (id, connection_id, number, date, currency, customer_id, total, "
        "created_at) VALUES (1, :c, 'shop-1001', :at, 'NZD', 1, 9, :at)",
        "INSERT INTO order_lines (id, order_id, line_no, sku, description, quantity, unit_price, "
        "tax_rate) VALUES (1, 1, 1, 'shop-MUG', 'Mug', 1, 4.5, 0), "
        "(2, 1, 2, 'shop-MUG', 'Mug', 1, 4.5, 0)",
        "INSERT INTO links (id, connection_id, kind, local_id, remote_id, state, origin, "
        "created_at) VALUES (1, :c, 'product', 1, 'r-1', 'linked', 'matched', :at)",
        "INSERT INTO cursors (connection_id, stream, value, updated_at) "
        "VALUES (:c, 'products', :at, :at)",
        "INSERT INTO invoice_jobs (id, connection_id, order_id, state, idempotency_key, "
        "attempts, next_attempt_at, created_at) "
        "VALUES (1, :c, 1, 'pending', 'shop-key-1', 0, :at, :at)",
    ]
    with store.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), {"c": conn_id, "at": at})
    return conn_id


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
    conn_id = _shop_at_0003(any_store)
    tables = (*SHOP_TABLES, "links", "cursors", "invoice_jobs")
    before = {t: _rows(any_store, t) for t in tables}

    assert cli("db", "upgrade").exit_code == 0
    after = {t: _rows(any_store, t) for t in tables}
    # every row still there with the values it had (later revisions may add columns)
    assert {t: [{k: row[k] for k in before[t][0]} for row in after[t]] for t in tables} == before
    assert cli("connections", "remove", "shop", "--force").exit_code == 0
    assert _count(any_store, "products", conn_id) == 0
    assert len(_rows(any_store, "order_lines")) == 2


# line 15: keys and files ---------------------------------------------------------------------
def _one_line(result: Any) -> str:
    assert result.stderr.strip() and result.stderr.strip().count("\n") == 0, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    return result.stderr.strip()


def _credentials_column(store: Store) -> list[Any]:
    return [row["credentials"] for row in _rows(store, "connections")]


def test_a_key_that_does_not_open_the_stored_credentials_is_refused_before_sealing(
    any_store, cli, monkeypatch
):
    from cryptography.fernet import Fernet

    monkeypatch.setenv("SYNC_SECRET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("SYNC_CLIENT_SECRET", "a-client-secret")
    assert cli("connections", "add", "shop", "--provider", "xero", input="").exit_code == 0
    sealed = _credentials_column(any_store)

    other = Fernet.generate_key().decode()
    added = cli(
        "connections",
        "add",
        "later",
        "--provider",
        "unleashed",
        "--api-id",
        "id-1",
        "--secret-stdin",
        input="an-api-key-sealed-with-the-wrong-key\n",
        env={"SYNC_SECRET_KEY": other},
    )

    assert added.exit_code == 2
    assert "SYNC_SECRET_KEY" in _one_line(added)
    assert _credentials_column(any_store) == sealed  # nothing sealed with the other key
    assert cli("connections", "show", "later").exit_code == 2  # and nothing added


def test_a_key_file_that_does_not_open_the_stored_credentials_is_refused(
    any_store, cli, _isolated_env, monkeypatch
):
    monkeypatch.setenv("SYNC_CLIENT_SECRET", "a-client-secret")
    assert cli("connections", "add", "shop", "--provider", "xero").exit_code == 0
    sealed = _credentials_column(any_store)
    from cryptography.fernet import Fernet

    key_file = _isolated_env / "secret.key"
    key_file.write_bytes(Fernet.generate_key() + b"\n")  # a valid key, but not the store's

    added = cli("connections", "add", "later", "--provider", "xero")

    assert added.exit_code == 2
    assert str(key_file) in _one_line(added)
    assert _credentials_column(any_store) == sealed


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b"dGhpcyBpcyBub3QgYSBrZXk", b"not a key at all\n", b"\xff\xfe\x00binary"],
    ids=["empty", "newline", "truncated", "text", "binary"],
)
def test_a_bad_key_file_is_one_line_naming_it(store, cli, _isolated_env, content, monkeypatch):
    from cryptography.fernet import Fernet

    monkeypatch.setenv("SYNC_CLIENT_SECRET", "a-client-secret")

    key_file = _isolated_env / "secret.key"
    if content == b"dGhpcyBpcyBub3QgYSBrZXk":
        content = Fernet.generate_key()[:30]  # a real key cut short
    key_file.write_bytes(content)

    for args in (("connections", "add", "shop", "--provider", "xero"), ("connections", "list")):
        result = cli(*args)
        if args[1] == "list":
            break  # listing needs no key
        assert result.exit_code == 2, result
        assert str(key_file) in _one_line(result)
    assert key_file.read_bytes() == content  # never replaced
    assert _rows(store, "connections") == []


def _limited_file_size(limit: int) -> Any:
    """preexec_fn: files this process writes may not grow past ``limit`` bytes (a full disk for
    the key file; SIGXFSZ ignored so the write fails with an error instead of killing it)."""

    def apply() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
@pytest.mark.postgres
def test_a_key_file_cut_short_while_written_never_takes_its_place(pg_url, tmp_path):
    """The key file is written under a temporary name and renamed into place: a write that fails
    half-way (here the file-size limit, as a full disk would) leaves no key file at all, so the
    next run makes a whole one instead of finding a broken one. (PostgreSQL: the store then
    writes no local file of its own.)"""
    import subprocess

    from hostile.support import SYNCCLI, cli_env

    data = tmp_path / "keydata"
    env = {**cli_env(data, pg_url), "SYNC_CLIENT_SECRET": "a-client-secret"}
    assert subprocess.run([*SYNCCLI, "db", "upgrade"], env=env, capture_output=True).returncode == 0
    key_file = data / "secret.key"

    failed = subprocess.run(
        [*SYNCCLI, "connections", "add", "shop", "--provider", "xero"],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=_limited_file_size(20),
    )

    assert failed.returncode == 2, failed.stderr
    assert str(key_file) in failed.stderr and failed.stderr.strip().count("\n") == 0
    assert not key_file.exists()
    assert list(data.iterdir()) == []  # no temporary file left behind either
    again = subprocess.run(
        [*SYNCCLI, "connections", "add", "shop", "--provider", "xero"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert len(key_file.read_bytes().strip()) == 44


def test_the_log_file_is_created_owner_only(store, cli, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        log = tmp_path / "cron.log"
        assert cli("--log-file", str(log), "-v", "connections", "list").exit_code == 0
    finally:
        os.umask(old)
    assert log.exists()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


# line 17: store outages ------------------------------------------------------------------------
def _sqlite_path(store: Store) -> str:
    from sqlalchemy.engine import make_url

    database = make_url(store.settings.database_url).database
    assert database
    return database


def test_a_lock_held_too_long_is_one_line_exit_1_and_reads_go_on(store, cli):
    """Another process holds SQLite's write lock: a read still works; a write gives up after
    SYNC_LOCK_TIMEOUT with one line saying so (exit 1), not "cannot open the store" (exit 2)."""
    import sqlite3

    add_connection(store, "shop", "xero", {"client_id": "c"}, {"client_secret": "s3cr3t-value"})
    holder = sqlite3.connect(_sqlite_path(store), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        env = {"SYNC_LOCK_TIMEOUT": "1"}
        listed = cli("connections", "list", env=env)
        changed = cli("connections", "set", "shop", "notify_email=a@b.example", env=env)
        # a quiet cron run, through the driver alone (store.quick), says it the same way
        idle = cli("post-invoices", "--all", env=env)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert listed.exit_code == 0, listed.stderr
    assert "shop" in listed.stdout
    assert changed.exit_code == 1
    line = _one_line(changed)
    assert "lock" in line and "cannot open the store" not in line
    assert get_connection(store, "shop").notify_email is None
    assert idle.exit_code == 1
    assert _one_line(idle) == (
        "error: store unavailable: another process held its lock for 1 s (lock timeout; try again, "
        "or raise SYNC_LOCK_TIMEOUT)"
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_a_row_lock_held_too_long_on_postgres_is_one_line_exit_1(pg_store, tmp_path):
    """PostgreSQL waits for a lock forever by default: a cron run behind a stuck process must
    give up after SYNC_LOCK_TIMEOUT instead (one line, exit 1)."""
    import subprocess

    from hostile.support import SYNCCLI, cli_env

    add_connection(pg_store, "shop", "xero", {"client_id": "c"}, {"client_secret": "s3cr3t-value"})
    env = cli_env(pg_store.settings.data_dir, pg_store.settings.database_url, SYNC_LOCK_TIMEOUT="1")
    with pg_store.engine.connect() as holder:
        holder.execute(text("SELECT id FROM connections WHERE name = 'shop' FOR UPDATE"))
        done = subprocess.run(
            [*SYNCCLI, "connections", "set", "shop", "notify_email=a@b.example"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        holder.rollback()
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "lock" in done.stderr
    assert "internal error" not in done.stderr


@pytest.mark.postgres
def test_a_database_server_that_is_gone_is_one_line_exit_1(cli, monkeypatch):
    import socket

    with socket.socket() as probe:  # a port where nothing listens any more
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SYNC_DATABASE_URL", f"postgresql+psycopg://shop@127.0.0.1:{port}/shop")

    commands = (("connections", "list"), ("pull-products", "--all"), ("status",))
    for args in (*commands, ("post-invoices", "--all")):
        result = cli(*args)
        assert result.exit_code == 1, (args, result)
        line = _one_line(result)
        assert "store unavailable" in line and "cannot be reached" in line, line


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_it_exit_1(store, tmp_path):
    """The store's disk fills while orders are written (the file-size limit stands in for it):
    one line naming the disk, exit 1, and nothing half-written."""
    import json
    import subprocess

    from hostile.support import SYNCCLI, cli_env

    add_connection(store, "shop", "xero", {"client_id": "c"}, {"client_secret": "s3cr3t-value"})
    orders = tmp_path / "orders.jsonl"
    orders.write_text(
        "".join(
            json.dumps(
                {
                    "number": f"W-{i}",
                    "date": "2026-05-01",
                    "currency": "NZD",
                    "customer": {"email": f"c{i}@shop.example", "name": "C"},
                    "lines": [
                        {
                            "sku": "MUG",
                            "description": "Mug " * 50,
                            "quantity": 1,
                            "unit_price": "10.00",
                        }
                    ],
                    "total": "10.00",
                }
            )
            + "\n"
            # about 500 bytes of store each: 700 orders overrun the 200 KB left well before
            # the end, and take a third of the time 3,000 did (over 120 s on a loaded machine)
            for i in range(700)
        )
    )
    size = sum(p.stat().st_size for p in store.settings.data_dir.glob("synccli.db*"))
    store.dispose()
    env = cli_env(store.settings.data_dir)

    done = subprocess.run(
        [*SYNCCLI, "invoices", "add", str(orders), "-c", "shop"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limited_file_size(size + 200_000),
    )

    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "internal error" not in done.stderr
    assert "store unavailable" in done.stderr and "disk" in done.stderr
    assert _rows(store, "orders") == []


class _HeldTokenXero:
    """A Xero sandbox whose token endpoint holds each refresh until the test lets it answer."""

    def __init__(self, **kw: Any) -> None:
        import threading

        self.token_arrived = threading.Event()
        self.answer_token = threading.Event()
        super().__init__(**kw)  # type: ignore[call-arg]

    def handle(self, req: Any) -> Any:
        if req.method == "POST" and req.path.endswith("/connect/token"):
            self.token_arrived.set()
            self.answer_token.wait(90)  # never forever, whatever the test does
        return super().handle(req)  # type: ignore[misc]


@pytest.mark.slow
def test_a_token_refresh_does_not_hold_the_store_while_it_waits_for_the_provider(
    any_store, tmp_path
):
    """While one process's refresh call is held by the provider, other processes write to the
    store: to another connection's row and to the refreshing connection's own."""
    import subprocess
    from datetime import timedelta

    from hostile.support import SYNCCLI, cli_env, serve

    from synccli.sandbox import harness
    from synccli.sandbox.xero import XeroSandbox
    from synccli.store.connections import credentials, set_values

    app = type("HeldXero", (_HeldTokenXero, XeroSandbox), {})(products=3, customers=1)
    running = serve("xero", app)
    try:
        harness.add_connection(any_store, "shop", running)
        expired = (app.clock.now() - timedelta(hours=1)).isoformat()
        set_values(any_store, "shop", {"expires_at": expired})
        add_connection(any_store, "other", "xero", {"client_id": "c"}, {"client_secret": "s3cr3t"})
        env = cli_env(
            any_store.settings.data_dir, any_store.settings.database_url, SYNC_LOCK_TIMEOUT="20"
        )
        refresher = subprocess.Popen(
            [*SYNCCLI, "sync-product", "SKU-00001", "-c", "shop"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert app.token_arrived.wait(60), "the refresh never reached the provider"
            # both at once: the refresher's own HTTP timeout (15 s) keeps running meanwhile
            writers = [
                subprocess.Popen(
                    [*SYNCCLI, "connections", "set", name, "notify_email=ops@shop.example"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for name in ("other", "shop")
            ]
            writes = [(w.wait(timeout=60), w.communicate()[1]) for w in writers]
            held_throughout = not app.answer_token.is_set() and refresher.poll() is None
        finally:
            app.answer_token.set()
            out, err = refresher.communicate(timeout=60)
        assert writes == [(0, ""), (0, "")]
        assert held_throughout
        assert refresher.returncode == 0, err
        # the refreshed tokens were kept, and the edit made meanwhile too
        shop = get_connection(any_store, "shop")
        assert shop.notify_email == "ops@shop.example"
        assert credentials(any_store, shop)["expires_at"] > expired
    finally:
        running.stop()
