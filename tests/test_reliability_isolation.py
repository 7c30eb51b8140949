"""One bad record never stops the others (issue 16, lines 13 and 14; issue 18, line 6).

- Text that reaches an email header is refused where it enters: order numbers (and every
  single-line order field) at ``invoices add``, ``notify_email`` at ``connections add/set``.
- A merchant email that cannot be built or sent is kept on its notification row with its error,
  reported (under ``-q`` too, exit 6), and the run goes on with the next invoice.
- ``--all``: an unexpected error in one connection is reported for that connection; the others
  run; the exit code is the worst one.
- A dead token found by any job emails the merchant once.

Everything runs through the real CLI against the project's simulators.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from synccli import registry
from synccli.sandbox import harness
from synccli.store.connections import get_connection, set_values
from synccli.store.db import Store
from synccli.store.models import Connection, InvoiceJob, Notification, Order, OrderLine
from synccli.sync.orders import line_amounts

pytestmark = pytest.mark.reliability

SCALE = 1000.0
TAX = {p.name: p.sandbox.tax_code for p in registry.providers()}  # 15% in each sandbox
# What the email package refuses in a header (it splits header values with str.splitlines()),
# and the C0/C1 control characters.
HEADER_BREAKERS = ["\u2028", "\u2029", "\u0085", "\u001c", "\u001d", "\u001e", "\u000b", "\u0080"]


@contextmanager
def sandbox(provider: str, **kw: Any) -> Iterator[harness.Running]:
    kw.setdefault("time_scale", SCALE)
    kw.setdefault("products", 10)
    kw.setdefault("customers", 5)
    running = harness.start(provider, **kw)
    try:
        yield running
    finally:
        running.stop()


def connect(
    store: Store, running: harness.Running, name: str, notify: str | None = "owner@shop.example"
) -> Connection:
    harness.add_connection(store, name, running, notify_email=notify, time_scale=SCALE)
    return get_connection(store, name)


def world(running: harness.Running) -> Any:
    return running.app.catalogue.tenant(running.app.tenant)


def order(running: harness.Running, number: str, tax_code: str | None = None) -> dict[str, Any]:
    w = world(running)
    product = sorted(w.products.values(), key=lambda p: p.code)[0]
    customer = sorted(w.customers.values(), key=lambda c: c.code)[0]
    amount, tax = line_amounts(Decimal(1), Decimal("10.00"), Decimal("0.15"))
    return {
        "number": number,
        "date": "2026-01-05",
        "currency": "NZD",
        "customer": {"email": customer.email, "name": customer.name},
        "lines": [
            {
                "sku": product.code,
                "description": product.name,
                "quantity": 1,
                "unit_price": "10.00",
                "tax_code": tax_code or TAX[running.provider],
                "tax_rate": "0.15",
            }
        ],
        "total": str(amount + tax),
    }


def jsonl(*orders: dict[str, Any]) -> str:
    return "\n".join(json.dumps(o) for o in orders) + "\n"


def remote_numbers(running: harness.Running) -> list[str]:
    numbers = []
    for inv in world(running).invoices.values():
        numbers.append(getattr(inv, "number", None) or getattr(inv, "reference", None))
    return sorted(str(n) for n in numbers)


def job_state(store: Store, number: str) -> str:
    with store.session() as s:
        state = s.scalar(select(InvoiceJob.state).join(Order).where(Order.number == number))
    return str(state)


@contextmanager
def dead_port() -> Iterator[int]:
    """A loopback port where nothing listens, held bound (never listening) until the block ends:
    a connection is refused, and no other test running alongside can start a server on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


# --- line 13: what reaches an email header is checked where it enters ----------------------------
@pytest.mark.parametrize("char", HEADER_BREAKERS, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("where", ["inside", "at the end"])
def test_invoices_add_refuses_an_order_number_an_email_header_cannot_carry(
    store: Store, cli, char: str, where: str
) -> None:
    with sandbox("xero") as running:
        connect(store, running, "shop")
        number = f"WEB{char}1042" if where == "inside" else f"WEB-1042{char}"
        result = cli("invoices", "add", "-", "-c", "shop", input=jsonl(order(running, number)))
        assert result.exit_code == 2, result.stdout + result.stderr
        assert "number" in result.stderr
        with store.session() as s:
            assert s.scalar(select(Order.id)) is None  # nothing written


@pytest.mark.parametrize("field", ["customer.name", "lines[0].sku", "lines[0].tax_code"])
def test_invoices_add_refuses_line_separators_in_every_single_line_field(
    store: Store, cli, field: str
) -> None:
    with sandbox("xero") as running:
        connect(store, running, "shop")
        o = order(running, "WEB-7")
        if field == "customer.name":
            o["customer"]["name"] = "Jane\u2028Smith"
        else:
            o["lines"][0][field.split(".")[1]] += "\u2029X"
        result = cli("invoices", "add", "-", "-c", "shop", input=jsonl(o))
        assert result.exit_code == 2, result.stdout + result.stderr
        assert field in result.stderr


@pytest.mark.parametrize(
    "address",
    [
        "owner@shop.example\nBcc: everyone@elsewhere.example",
        "owner@shop.example\u2028",
        "not an address",
        "owner@",
        "Owner <owner@shop.example>, other@shop.example",
    ],
)
def test_notify_email_is_validated_at_connections_add_and_set(
    store: Store, cli, address: str
) -> None:
    secret = {"SYNC_CLIENT_SECRET": "s3cret-value"}  # never on the command line
    added = cli(
        "connections", "add", "shop", "--provider", "xero", "--client-id", "abc",
        "--notify-email", address, env=secret,
    )  # fmt: skip
    assert added.exit_code == 2, added.stdout + added.stderr
    assert "notify_email" in added.stderr
    ok = cli(
        "connections", "add", "shop", "--provider", "xero", "--client-id", "abc",
        "--notify-email", "owner@shop.example", env=secret,
    )  # fmt: skip
    assert ok.exit_code == 0, ok.stderr
    changed = cli("connections", "set", "shop", f"notify_email={address}")
    assert changed.exit_code == 2, changed.stdout + changed.stderr
    assert "notify_email" in changed.stderr
    assert get_connection(store, "shop").notify_email == "owner@shop.example"
    assert cli("connections", "set", "shop", "notify_email=").exit_code == 0  # removes it
    assert get_connection(store, "shop").notify_email is None


def test_email_that_cannot_be_built_is_kept_on_its_row_and_the_batch_goes_on(
    store: Store, cli
) -> None:
    """A recipient stored before addresses were checked (a header line break in it): the email
    about the refused invoice cannot be built. The invoice accepted in the same Xero batch is
    still recorded as posted, the error stays on the notification row, the run reports it."""
    with sandbox("xero") as running:
        connect(store, running, "shop")
        with store.session() as s:  # a row written by an older version, or by hand
            s.execute(
                update(Connection)
                .where(Connection.name == "shop")
                .values(notify_email="owner@shop.example\r\nBcc: all@elsewhere.example")
            )
        added = cli(
            "invoices", "add", "-", "-c", "shop",
            input=jsonl(order(running, "BAD-1", "BOGUS"), order(running, "OK-1")),
        )  # fmt: skip
        assert added.exit_code == 0, added.stderr
        result = cli("-q", "post-invoices", "-c", "shop")
        assert "internal error" not in result.stderr
        assert job_state(store, "OK-1") == "posted"
        assert job_state(store, "BAD-1") == "failed"
        assert remote_numbers(running) == ["OK-1"]
        with store.session() as s:
            note = s.scalar(select(Notification))
        assert note is not None and note.sent_at is None
        assert note.error and "BAD-1" in note.subject
        assert "BAD-1" in result.stderr and "not emailed" in result.stderr
        assert result.exit_code == 6, result.stderr


def test_order_number_in_the_tables_that_no_header_can_carry_is_held_and_the_run_goes_on(
    store: Store, cli, tmp_path: Path
) -> None:
    """The shop inserts an order straight into the tables with U+2028 in its number (``invoices
    add`` would refuse it). It is held as invalid, the merchant's email still goes out (the
    number shown escaped in the subject), and the next order is posted."""
    with sandbox("xero") as running:
        conn = connect(store, running, "shop")
        assert cli("invoices", "add", "-", "-c", "shop", input=jsonl(order(running, "OK-2")))
        o = order(running, "WEB\u20281")
        with store.session() as s:
            row = Order(
                connection_id=conn.id,
                number=o["number"],
                date=datetime(2026, 1, 5, tzinfo=UTC),
                currency="NZD",
                customer_email=o["customer"]["email"],
                customer_name=o["customer"]["name"],
                total=Decimal(o["total"]),
                created_at=datetime(2026, 1, 5, tzinfo=UTC),
            )
            ln = o["lines"][0]
            row.lines = [
                OrderLine(
                    line_no=1,
                    sku=ln["sku"],
                    description=ln["description"],
                    quantity=Decimal(1),
                    unit_price=Decimal("10.00"),
                    tax_code=ln["tax_code"],
                    tax_rate=Decimal("0.15"),
                )
            ]
            s.add(row)
        result = cli("post-invoices", "-c", "shop")
        assert "internal error" not in result.stderr, result.stderr
        assert job_state(store, "OK-2") == "posted"
        assert job_state(store, "WEB\u20281") == "failed"
        assert remote_numbers(running) == ["OK-2"]
        outbox = list((tmp_path / "data" / "outbox").glob("*.eml"))
        assert len(outbox) == 1
        assert b"WEB\\u20281" in outbox[0].read_bytes()


# --- line 14: one connection's surprise does not stop the others ---------------------------------
def _break_claims_of(store: Store, connection: str) -> None:
    """The shop's own trigger on a documented table refuses every change to one connection's
    invoice jobs: an error none of our classes describes, raised by the database."""
    conn_id = get_connection(store, connection).id
    with store.session() as s:
        s.execute(
            text(
                "CREATE TRIGGER refuse_jobs BEFORE UPDATE ON invoice_jobs "
                f"WHEN NEW.connection_id = {conn_id} "
                "BEGIN SELECT RAISE(ABORT, 'refused by the shop''s trigger'); END"
            )
        )


def test_all_reports_an_unexpected_error_for_its_connection_and_runs_the_rest(
    store: Store, cli
) -> None:
    with sandbox("xero") as one, sandbox("lightspeed") as two:
        connect(store, one, "a-shop")
        connect(store, two, "b-shop")
        assert cli("invoices", "add", "-", "-c", "a-shop", input=jsonl(order(one, "A-1")))
        assert cli("invoices", "add", "-", "-c", "b-shop", input=jsonl(order(two, "B-1")))
        _break_claims_of(store, "a-shop")
        result = cli("post-invoices", "--all", "--json")
        assert job_state(store, "B-1") == "posted", result.stderr
        assert remote_numbers(two) == ["B-1"]
        assert result.exit_code == 1
        assert "a-shop" in result.stderr and "refused by the shop's trigger" in result.stderr
        data = json.loads(result.stdout)
        by_name = {d["connection"]: d for d in data}
        assert by_name["a-shop"]["error"] and "trigger" in by_name["a-shop"]["error"]
        assert by_name["b-shop"]["report"]["posted"] == 1
        # the run of a-shop is closed as failed, its lease released: the next run is not busy
        again = cli("post-invoices", "-c", "a-shop")
        assert again.exit_code == 1 and "busy" not in again.stderr.lower()


def test_all_exit_code_is_the_worst_of_the_connections(store: Store, cli) -> None:
    """a-shop fails unexpectedly (1), b-shop's token is dead (5), c-shop posts: exit 5."""
    with sandbox("xero") as one, sandbox("xero") as two, sandbox("lightspeed") as three:
        connect(store, one, "a-shop")
        connect(store, two, "b-shop")
        connect(store, three, "c-shop")
        for name, running, number in (("a-shop", one, "A-1"), ("c-shop", three, "C-1")):
            assert cli("invoices", "add", "-", "-c", name, input=jsonl(order(running, number)))
        assert cli("invoices", "add", "-", "-c", "b-shop", input=jsonl(order(two, "B-1")))
        _break_claims_of(store, "a-shop")
        set_values(
            store,
            "b-shop",
            {"refresh_token": "dead-refresh-token", "expires_at": "2020-01-01T00:00:00+00:00"},
        )
        result = cli("-q", "post-invoices", "--all")
        assert result.exit_code == 5, result.stderr
        assert job_state(store, "C-1") == "posted"
        assert "a-shop" in result.stderr and "b-shop" in result.stderr


# --- issue 18 line 6: the merchant not told is a failure -----------------------------------------
def test_refused_invoice_without_notify_email_is_a_failure_under_quiet(store: Store, cli) -> None:
    with sandbox("xero") as running:
        connect(store, running, "shop", notify=None)
        cli("invoices", "add", "-", "-c", "shop", input=jsonl(order(running, "BAD-1", "BOGUS")))
        quiet = cli("-q", "post-invoices", "-c", "shop")
        assert quiet.exit_code == 6, quiet.stdout + quiet.stderr
        assert quiet.stdout == ""
        assert "BAD-1" in quiet.stderr and "notify_email" in quiet.stderr
        with store.session() as s:
            note = s.scalar(select(Notification))
        assert note is not None and note.sent_at is None and "notify_email" in (note.error or "")


def test_refused_invoice_with_smtp_down_counts_as_email_failed(store: Store, cli) -> None:
    with dead_port() as port, sandbox("unleashed") as running:
        env = {"SYNC_SMTP_HOST": "127.0.0.1", "SYNC_SMTP_PORT": str(port)}
        env["SYNC_SMTP_SECURITY"] = "none"
        connect(store, running, "shop")
        cli("invoices", "add", "-", "-c", "shop", input=jsonl(order(running, "BAD-1", "BOGUS")))
        result = cli("post-invoices", "-c", "shop", env=env)
        assert result.exit_code == 6, result.stdout + result.stderr
        assert "emails failed 1" in result.stdout
        assert "emails 1" not in result.stdout
        assert "BAD-1" in result.stderr


def test_dead_token_found_by_a_pull_emails_the_merchant_once(
    store: Store, cli, tmp_path: Path
) -> None:
    with sandbox("xero") as running:
        connect(store, running, "shop")
        set_values(
            store,
            "shop",
            {"refresh_token": "dead-refresh-token", "expires_at": "2020-01-01T00:00:00+00:00"},
        )
        first = cli("pull-products", "-c", "shop")
        assert first.exit_code == 5, first.stderr
        second = cli("link-customers", "-c", "shop")
        assert second.exit_code == 5, second.stderr
        outbox = list((tmp_path / "data" / "outbox").glob("*.eml"))
        assert len(outbox) == 1
        assert b"authorised again" in outbox[0].read_bytes()


def test_an_email_that_failed_in_this_run_is_not_tried_again_at_its_end(store: Store, cli) -> None:
    """SMTP is down: the refusal email fails once, is kept for a later run, and the end of this
    run does not try it again at once (on main it did: a second connection attempt, up to the
    SMTP timeout again, and a second warning)."""
    with dead_port() as port, sandbox("xero") as running:
        env = {"SYNC_SMTP_HOST": "127.0.0.1", "SYNC_SMTP_PORT": str(port)}
        env["SYNC_SMTP_SECURITY"] = "none"
        connect(store, running, "shop")
        cli("invoices", "add", "-", "-c", "shop", input=jsonl(order(running, "BAD-1", "BOGUS")))
        result = cli("post-invoices", "-c", "shop", env=env)
        assert result.exit_code == 6, result.stderr
        assert result.stderr.count("email not sent") == 1, result.stderr
