"""Orders in: the documented schema, batch validation, hostile input, and the insert.

Acceptance: ``invoices add`` on a file whose line 3 lacks its SKU exits 2, names line 3 and the
field, and writes no row -> test_line_3_without_sku_exits_2_and_writes_nothing (every provider).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from synccli import registry
from synccli.errors import ExitCode
from synccli.store.connections import add_connection, get_connection
from synccli.store.db import Store
from synccli.store.models import Connection, Customer, InvoiceJob, Order, OrderLine
from synccli.sync.orders import (
    MAX_LINE,
    OrderInputError,
    add_orders,
    enqueue_missing,
    idempotency_key,
    order_total,
    parse_orders,
)

PROVIDERS = registry.names()
TABLES = ("orders", "order_lines", "invoice_jobs", "customers")


def order(number: str = "WEB-1", **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "number": number,
        "date": "2026-05-01",
        "currency": "NZD",
        "customer": {"email": "Jane@Example.com", "account_number": "ACC-7", "name": "Jane Smith"},
        "lines": [
            {
                "sku": "MUG-BLUE",
                "description": "Blue mug",
                "quantity": 2,
                "unit_price": "12.50",
                "tax_code": "OUTPUT2",
                "tax_rate": "0.15",
                "account_code": "200",
            },
            {"sku": "TEA-1", "description": "Tea", "quantity": "3", "unit_price": 0.335},
        ],
        "total": "29.76",  # 25.00 + 3.75 tax + round2(1.005) = 1.01
    }
    base.update(over)
    return base


def jsonl(*orders: dict[str, Any]) -> str:
    return "\n".join(json.dumps(o) for o in orders) + "\n"


def counts(store: Store) -> dict[str, int]:
    with store.session() as s:
        return {t: s.scalar(text(f"SELECT count(*) FROM {t}")) for t in TABLES}


@pytest.fixture
def conn(store: Store) -> Connection:
    add_connection(store, "shop", "xero", {"client_id": "c"}, {"client_secret": "s3cr3t-value"})
    return get_connection(store, "shop")


def write(tmp_path: Path, content: str | bytes, name: str = "orders.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# --- acceptance -------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_line_3_without_sku_exits_2_and_writes_nothing(
    store: Store, cli, tmp_path: Path, provider: str
) -> None:
    add_connection(store, "shop", provider, {"client_id": "c", "api_id": "a"}, {})
    third = order("WEB-3")
    del third["lines"][0]["sku"]
    path = write(tmp_path, jsonl(order("WEB-1"), order("WEB-2"), third, order("WEB-4")))
    before = counts(store)

    result = cli("invoices", "add", str(path), "--connection", "shop")

    assert result.exit_code == ExitCode.USAGE == 2
    assert result.stderr.strip() == "error: line 3: lines[0].sku is required"
    assert "Traceback" not in result.stdout + result.stderr
    assert counts(store) == before == dict.fromkeys(TABLES, 0)


# --- the happy path ---------------------------------------------------------------------------
def test_add_jsonl_writes_orders_lines_customers_and_jobs(store: Store, conn: Connection) -> None:
    now = datetime(2026, 5, 2, tzinfo=UTC)
    report = add_orders(store, conn, jsonl(order("WEB-1"), order("WEB-2")), now=now)
    assert (report.added, report.queued, report.customers_created) == (2, 2, 1)
    assert report.numbers == ["WEB-1", "WEB-2"]
    with store.session() as s:
        o = s.scalar(select(Order).where(Order.number == "WEB-1"))
        assert o.total == Decimal("29.76") and o.currency == "NZD"
        assert o.date == datetime(2026, 5, 1, tzinfo=UTC)
        assert o.customer_email == "jane@example.com" and o.customer_account == "ACC-7"
        assert [
            (ln.line_no, ln.sku, ln.quantity, ln.unit_price, ln.tax_rate) for ln in o.lines
        ] == [
            (1, "MUG-BLUE", 2, Decimal("12.50"), Decimal("0.15")),
            (2, "TEA-1", 3, Decimal("0.335"), Decimal("0")),
        ]
        assert o.lines[0].account_code == "200" and o.lines[1].tax_code is None
        customers = list(s.scalars(select(Customer)))
        assert len(customers) == 1 and o.customer_id == customers[0].id
        jobs = list(s.scalars(select(InvoiceJob).order_by(InvoiceJob.id)))
        assert [j.state for j in jobs] == ["pending", "pending"]
        assert [j.idempotency_key for j in jobs] == ["synccli:shop:WEB-1", "synccli:shop:WEB-2"]
        assert all(j.next_attempt_at == now and j.attempts == 0 for j in jobs)


def test_one_pretty_printed_order_and_an_array(store: Store, conn: Connection) -> None:
    assert add_orders(store, conn, json.dumps(order("P-1"), indent=2)).added == 1
    array = json.dumps([order("A-1"), order("A-2")], indent=1)
    assert add_orders(store, conn, array.encode()).added == 2
    assert add_orders(store, conn, "\ufeff" + json.dumps(order("BOM-1"))).added == 1


def test_cli_reads_stdin_and_renders_json(store: Store, conn: Connection, cli) -> None:
    result = cli("invoices", "add", "-", "--json", input=jsonl(order("S-1")))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["numbers"] == ["S-1"]
    plain = cli("invoices", "add", "-", input=jsonl(order("S-2")))
    assert plain.stdout.startswith("shop: added 1 order(s); 1 invoice(s) queued")


def test_money_rule_rounds_half_up_per_line() -> None:
    class L:
        def __init__(self, q: str, p: str, r: str) -> None:
            self.quantity, self.unit_price, self.tax_rate = Decimal(q), Decimal(p), Decimal(r)

    # 3 x 0.335 = 1.005 -> 1.01; tax 1.01 x 0.15 = 0.1515 -> 0.15
    assert order_total([L("3", "0.335", "0.15")]) == Decimal("1.16")
    # per-line rounding, not on the sum: 2 lines of 0.005 tax each -> 0.01 + 0.01
    assert order_total([L("1", "0.10", "0.05"), L("1", "0.10", "0.05")]) == Decimal("0.22")


def test_idempotency_key_is_stable_short_and_per_connection() -> None:
    assert idempotency_key("shop", "WEB-1") == idempotency_key("shop", "WEB-1")
    assert idempotency_key("shop", "WEB-1") != idempotency_key("shop2", "WEB-1")
    long_key = idempotency_key("s" * 100, "N" * 100)
    assert len(long_key) <= 128 and long_key == idempotency_key("s" * 100, "N" * 100)
    odd = idempotency_key("shop", "Bestellung Nr. 7 / ü")
    assert odd.isascii() and len(odd) <= 128 and odd != idempotency_key("shop", "Bestellung 7")


def test_orders_inserted_into_the_tables_are_enqueued_once(store: Store, conn: Connection) -> None:
    now = datetime(2026, 5, 3, tzinfo=UTC)
    with store.session() as s:
        for n in ("T-1", "T-2"):
            o = Order(
                connection_id=conn.id,
                number=n,
                date=now,
                currency="NZD",
                customer_email="a@b.example",
                customer_name="A",
                total=Decimal("10.00"),
                created_at=now,
            )
            o.lines = [
                OrderLine(
                    line_no=1, sku="X", description="x", quantity=Decimal(1), unit_price=Decimal(10)
                )
            ]
            s.add(o)
    assert enqueue_missing(store, conn, now) == 2
    assert enqueue_missing(store, conn, now) == 0
    with store.session() as s:
        keys = sorted(s.scalars(select(InvoiceJob.idempotency_key)))
    assert keys == ["synccli:shop:T-1", "synccli:shop:T-2"]


# --- bad input: one line, exit 2, nothing written -----------------------------------------------
def _bad(**over: Any) -> str:
    return json.dumps(order(**over))


def _line(i: int, **fields: Any) -> dict[str, Any]:
    o = order()
    o["lines"][i].update(fields)
    return o


BAD_INPUTS = {
    "invalid json": ('{"number": "X", "date": ', "line 1: invalid JSON"),
    "second line invalid": (json.dumps(order("A")) + "\n{nope}\n", "line 2: invalid JSON"),
    "not an object": ("[1, 2]", "line 1: expected a JSON object (an order), got a number"),
    "quantity as text": (
        json.dumps(_line(0, quantity="two")),
        "line 1: lines[0].quantity must be a number, got 'two'",
    ),
    "quantity as bool": (
        json.dumps(_line(0, quantity=True)),
        "line 1: lines[0].quantity must be a number, not a boolean",
    ),
    "negative quantity": (
        json.dumps(_line(1, quantity=-1)),
        "line 1: lines[1].quantity must not be negative",
    ),
    "sku as number": (
        json.dumps(_line(0, sku=12)),
        "line 1: lines[0].sku must be a string, not a number",
    ),
    "lines not a list": (_bad(lines={"sku": "x"}), "line 1: lines must be an array, not an object"),
    "no lines": (_bad(lines=[]), "line 1: lines must have at least one line"),
    "unknown currency": (
        _bad(currency="XYZ"),
        "line 1: currency 'XYZ' is not an ISO 4217 currency code",
    ),
    "bad date": (_bad(date="01/05/2026"), "line 1: date is not a date"),
    "total mismatch": (_bad(total="29.75"), "line 1: total 29.75 does not match the lines (29.76"),
    "too many places": (
        json.dumps(_line(0, unit_price="1.23456")),
        "line 1: lines[0].unit_price has more than 4 decimal places",
    ),
    "unknown field": (
        json.dumps(_line(0, qty=2)),
        "line 1: lines[0].qty is not a field of an order line (did you mean",
    ),
    "NaN": ('{"number": "N", "total": NaN}', "line 1: invalid JSON"),
    "no customer key": (
        _bad(customer={"name": "Only A Name"}),
        "line 1: customer.email or customer.account_number is required",
    ),
    "bad email": (
        _bad(customer={"email": "not-an-email", "name": "X"}),
        "line 1: customer.email is not an email address",
    ),
    "tax rate above 1": (
        json.dumps(_line(0, tax_rate=15)),
        "line 1: lines[0].tax_rate must be at most 1",
    ),
    "duplicate in batch": (
        jsonl(order("D-1"), order("D-2"), order("D-1")),
        "line 3: order number 'D-1' appears twice in the input (first on line 1)",
    ),
    "empty": ("\n\n", "no orders in the input"),
    "deeply nested": ("[" * 100_000 + "]" * 100_000, "line 1: invalid JSON: nested too deeply"),
    "lone surrogate": (
        json.dumps(order(customer={"email": "a@b.example", "name": "\ud800"})),
        "line 1: customer.name contains an invalid character",
    ),
    "pretty-printed, invalid": ('{\n  "number": "X",\n  oops\n}\n', "line 3: invalid JSON"),
    "non-utf8": (b'{"number": "caf\xe9"}\n', "line 1: not UTF-8 (byte 0xe9 at column 16)"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_nothing_written(
    store: Store, conn: Connection, cli, tmp_path: Path, case: str
) -> None:
    content, expected = BAD_INPUTS[case]
    path = write(tmp_path, content)
    result = cli("invoices", "add", str(path))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert counts(store) == dict.fromkeys(TABLES, 0)


def test_a_line_over_10_mb_is_refused_without_reading_on(
    store: Store, conn: Connection, cli, tmp_path: Path
) -> None:
    big = b'{"number": "BIG", "pad": "' + b"x" * MAX_LINE + b'"}\n'
    path = write(tmp_path, jsonl(order("OK-1")).encode() + big + jsonl(order("OK-2")).encode())
    result = cli("invoices", "add", str(path))
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: line 2: longer than 10 MB (the limit for one order)"
    assert counts(store) == dict.fromkeys(TABLES, 0)


def test_duplicate_against_the_store_is_refused(
    store: Store, conn: Connection, cli, tmp_path: Path
) -> None:
    add_orders(store, conn, jsonl(order("DUP-1")))
    before = counts(store)
    path = write(tmp_path, jsonl(order("NEW-1"), order("DUP-1")))
    result = cli("invoices", "add", str(path))
    assert result.exit_code == 2
    assert "line 2: order number 'DUP-1' already exists for connection 'shop'" in result.stderr
    assert counts(store) == before


def test_every_problem_is_listed_in_the_detail(
    store: Store, conn: Connection, cli, tmp_path: Path
) -> None:
    path = write(tmp_path, jsonl(_line(0, quantity=-2), order("OK"), order("X", currency="ZZZ")))
    short = cli("invoices", "add", str(path))
    assert short.stderr.strip() == (
        "error: line 1: lines[0].quantity must not be negative (and 1 more problem; -v lists them)"
    )
    verbose = cli("-v", "invoices", "add", str(path))
    assert "line 3: currency 'ZZZ' is not an ISO 4217 currency code" in verbose.stderr
    with pytest.raises(OrderInputError) as info:
        parse_orders(path.read_bytes())
    assert len(info.value.problems) == 2


def test_missing_file_and_unknown_connection(store: Store, conn: Connection, cli) -> None:
    missing = cli("invoices", "add", "nope.jsonl")
    assert missing.exit_code == 2 and "cannot read nope.jsonl" in missing.stderr
    unknown = cli("invoices", "add", "-", "--connection", "other", input=jsonl(order()))
    assert unknown.exit_code == 2 and "'other'" in unknown.stderr


def test_commands_have_help_with_an_example(cli) -> None:
    for args in (
        ("invoices",),
        ("invoices", "add"),
        ("invoices", "list"),
        ("invoices", "show"),
        ("invoices", "retry"),
        ("invoices", "cancel"),
        ("post-invoices",),
    ):
        result = cli(*args, "--help")
        assert result.exit_code == 0
        assert "Example:" in result.stdout, args


def test_counts_helper_sees_all_rows(store: Store, conn: Connection) -> None:
    add_orders(store, conn, jsonl(order("C-1")))
    assert counts(store) == {"orders": 1, "order_lines": 2, "invoice_jobs": 1, "customers": 1}
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 1


@pytest.mark.postgres
def test_the_documented_sql_insert_works_on_postgres(pg_store: Store) -> None:
    """The example in docs/orders.md, run as written."""
    add_connection(pg_store, "shop1", "xero", {"client_id": "c"}, {})
    doc = (Path(__file__).resolve().parents[1] / "docs" / "orders.md").read_text()
    sql = doc.split("```sql\n", 1)[1].split("```", 1)[0]
    with pg_store.engine.connect() as raw:
        raw.exec_driver_sql(sql)
    conn = get_connection(pg_store, "shop1")
    assert enqueue_missing(pg_store, conn, datetime.now(UTC)) == 1
    with pg_store.session() as s:
        o = s.scalar(select(Order).where(Order.number == "WEB-2001"))
        assert o.total == order_total(o.lines) == Decimal("28.75")
        assert o.date == datetime(2026, 5, 1, tzinfo=UTC)
