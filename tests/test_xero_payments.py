"""An order's payments applied to its Xero invoice, exactly once (issue 22, line 3).

The CLI runs in-process against the Xero simulator: ``invoices add`` takes payments for a Xero
connection that names its ``payment_account_code`` (and refuses them, naming the setting, for
one that does not); ``post-invoices`` posts the invoices and then applies every payment of the
batch in one ``PUT /Payments``; a lost answer is looked up (``GET /Payments``) before anything
is sent again; a refused payment is emailed, retried alone, never the invoice; ``invoices
show``, ``trace invoice`` and ``status`` show each payment's state.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.store.models import InvoiceAttempt, InvoiceJob, Notification, Order, OrderPayment

SCALE = 1000.0


def _order(number: str, sku: str, payments: list[tuple[str, str]], total: str = "23.00") -> dict:
    return {
        "number": number,
        "date": "2026-05-01",
        "currency": "NZD",
        "customer": {"email": "jane@example.com", "name": "Jane Smith"},
        "lines": [
            {
                "sku": sku,
                "description": "Mug",
                "quantity": 2,
                "unit_price": "10.00",
                "tax_code": "OUTPUT2",
                "tax_rate": "0.15",
            }
        ],
        "total": total,
        "payments": [
            {"amount": amount, "date": "2026-05-01", "method": method, "reference": f"ch_{i}"}
            for i, (amount, method) in enumerate(payments)
        ],
    }


@pytest.fixture
def xero() -> Any:
    running = harness.start("xero", products=5, customers=3, time_scale=SCALE)
    yield running
    running.stop()


def _add(cli: Any, tmp_path: Path, orders: list[dict]) -> Any:
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join(json.dumps(o) for o in orders), encoding="utf-8")
    return cli("invoices", "add", str(path), "-c", "shop")


def _setup(store: Store, cli: Any, tmp_path: Path, running: Any, **settings: Any) -> Any:
    settings.setdefault("payment_account_code", "090")
    # paid in the run that posts the invoices: their batching is tests/test_xero_payments_wait.py
    settings.setdefault("payments_wait_hours", "0")
    harness.add_connection(
        store, "shop", running, notify_email="shop@example.com", time_scale=SCALE, **settings
    )
    world = running.app.world()
    sku = sorted(p.code for p in world.products.values())[0]
    orders = [
        _order("WEB-1", sku, [("20.00", "card"), ("3.00", "gift_card")]),
        _order("WEB-2", sku, [("5.00", "cash")]),  # part paid: the invoice stays awaiting payment
        _order("WEB-3", sku, []),
    ]
    result = _add(cli, tmp_path, orders)
    assert result.exit_code == 0, result.stderr
    return world


def _remote_payments(world: Any) -> dict[str, list[tuple[Decimal, str]]]:
    out: dict[str, list[tuple[Decimal, str]]] = {}
    for inv in world.invoices.values():
        out[inv.number] = sorted(
            (Decimal(str(p["Amount"])), p["Reference"]) for p in inv.body.get("Payments", [])
        )
    return out


def _rows(store: Store) -> list[tuple[str, int, str | None, str | None]]:
    with store.session() as s:
        rows = s.execute(
            select(
                Order.number, OrderPayment.payment_no, OrderPayment.state, OrderPayment.remote_id
            )
            .join(Order, OrderPayment.order_id == Order.id)
            .order_by(Order.number, OrderPayment.payment_no)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def _states(store: Store) -> dict[str, str]:
    with store.session() as s:
        rows = s.execute(select(Order.number, InvoiceJob.state).join(InvoiceJob))
        return {number: state for number, state in rows.tuples()}


def test_invoices_add_names_the_missing_payment_account(
    store: Store, cli: Any, tmp_path: Path, xero: Any
) -> None:
    harness.add_connection(store, "shop", xero, time_scale=SCALE)
    sku = next(iter(xero.app.world().products.values())).code
    result = _add(cli, tmp_path, [_order("WEB-1", sku, [("23.00", "card")])])
    assert result.exit_code == 2
    assert "payment_account_code: set it first (synccli connections set shop " in result.stderr
    over = _order("WEB-1", sku, [("20.00", "card"), ("3.01", "cash")])
    result = _add(cli, tmp_path, [over])
    assert result.exit_code == 2
    assert "payments add up to 23.01, more than the order's total 23.00" in result.stderr
    # a code Xero cannot hold is refused where it is set
    result = cli("connections", "set", "shop", "payment_account_code=NOT A CODE")
    assert result.exit_code == 2 and "is not a Xero account code" in result.stderr


def test_each_payment_is_applied_once_in_one_call_for_the_batch(
    store: Store, cli: Any, tmp_path: Path, xero: Any
) -> None:
    world = _setup(store, cli, tmp_path, xero)
    result = cli("post-invoices", "-c", "shop")
    assert result.exit_code == 0, result.stderr
    counters = xero.app.counters
    # a batch of paid invoices: one PUT /Invoices and one PUT /Payments, no look-up
    assert counters.total("PUT", "Invoices") == 1
    assert counters.total("PUT", "Payments") == 1
    assert counters.total("GET", "Payments") == 0
    assert _remote_payments(world) == {
        "WEB-1": [
            (Decimal("3.00"), "WEB-1 payment 2 ch_1"),
            (Decimal("20.00"), "WEB-1 payment 1 ch_0"),
        ],
        "WEB-2": [(Decimal("5.00"), "WEB-2 payment 1 ch_0")],
        "WEB-3": [],
    }
    status = {inv.number: inv.body["Status"] for inv in world.invoices.values()}
    assert status == {"WEB-1": "PAID", "WEB-2": "AUTHORISED", "WEB-3": "AUTHORISED"}
    assert _states(store) == {"WEB-1": "posted", "WEB-2": "posted", "WEB-3": "posted"}
    ids = {
        p["Reference"]: p["PaymentID"] for i in world.invoices.values() for p in i.body["Payments"]
    }
    assert _rows(store) == [
        ("WEB-1", 1, "posted", ids["WEB-1 payment 1 ch_0"]),
        ("WEB-1", 2, "posted", ids["WEB-1 payment 2 ch_1"]),
        ("WEB-2", 1, "posted", ids["WEB-2 payment 1 ch_0"]),
    ]
    # nothing more to do: a second run sends nothing
    assert cli("post-invoices", "-c", "shop").exit_code == 0
    assert counters.total("PUT", "Payments") == 1 and counters.total("PUT", "Invoices") == 1

    # invoices show, trace invoice and status show the payments, --json too
    shown = cli("invoices", "show", "WEB-1", "-c", "shop", "--json")
    assert shown.exit_code == 0, shown.stderr
    payments = json.loads(shown.stdout)["payments"]
    assert [(p["amount"], p["method"], p["state"], p["remote_id"]) for p in payments] == [
        ("20.00", "card", "posted", ids["WEB-1 payment 1 ch_0"]),
        ("3.00", "gift_card", "posted", ids["WEB-1 payment 2 ch_1"]),
    ]
    text = cli("invoices", "show", "WEB-1", "-c", "shop").stdout
    assert "gift_card" in text and ids["WEB-1 payment 2 ch_1"] in text
    traced = cli("trace", "invoice", "WEB-2", "-c", "shop", "--json")
    assert traced.exit_code == 0, traced.stderr
    assert [p["state"] for p in json.loads(traced.stdout)["payments"]] == ["posted"]
    status_json = json.loads(cli("status", "-c", "shop", "--json").stdout)
    [conn] = status_json
    assert conn["payments"]["posted"] == 3


def test_a_lost_answer_is_looked_up_and_never_applied_twice(
    store: Store, cli: Any, tmp_path: Path, xero: Any
) -> None:
    world = _setup(store, cli, tmp_path, xero)
    app = xero.app
    # every answer to the payments' PUT is lost: the payments are applied, we never hear so
    app.faults.add("lost", method="PUT", path=r"/Payments$", times=20)
    result = cli("post-invoices", "-c", "shop")
    assert result.exit_code == 0, result.stderr
    assert _states(store)["WEB-1"] == "paying"
    assert [state for _, _, state, _ in _rows(store)] == ["posting"] * 3
    applied = _remote_payments(world)
    assert len(applied["WEB-1"]) == 2 and len(applied["WEB-2"]) == 1
    # the replay window of the Idempotency-Key has passed: only the look-up stands between a
    # second run and a second payment
    app.faults.clear()
    app._idem.clear()
    puts = app.counters.total("PUT", "Payments")
    result = cli("post-invoices", "-c", "shop")
    assert result.exit_code == 0, result.stderr
    assert app.counters.total("PUT", "Payments") == puts  # nothing sent again
    assert app.counters.total("GET", "Payments") == 1  # one look-up for both invoices
    assert _remote_payments(world) == applied
    assert _states(store) == {"WEB-1": "posted", "WEB-2": "posted", "WEB-3": "posted"}
    ids = {
        p["Reference"]: p["PaymentID"] for i in world.invoices.values() for p in i.body["Payments"]
    }
    assert [rid for _, _, _, rid in _rows(store)] == [
        ids["WEB-1 payment 1 ch_0"],
        ids["WEB-1 payment 2 ch_1"],
        ids["WEB-2 payment 1 ch_0"],
    ]


def test_a_payment_lost_before_xero_got_it_is_sent_after_the_look_up(
    store: Store, cli: Any, tmp_path: Path, xero: Any
) -> None:
    """Not seen is not gone, and not sent is not applied: a 500 on every try leaves the payments
    unclear; the look-up finds none, so they are sent (once)."""
    world = _setup(store, cli, tmp_path, xero)
    xero.app.faults.add("500", method="PUT", path=r"/Payments$", times=20)
    assert cli("post-invoices", "-c", "shop").exit_code == 0
    assert _remote_payments(world)["WEB-1"] == []
    xero.app.faults.clear()
    assert cli("post-invoices", "-c", "shop").exit_code == 0
    assert xero.app.counters.total("GET", "Payments") == 1
    assert [len(v) for v in _remote_payments(world).values()] == [2, 1, 0]
    assert [state for _, _, state, _ in _rows(store)] == ["posted"] * 3


def test_a_refused_payment_is_emailed_and_retried_without_the_invoice(
    store: Store, cli: Any, tmp_path: Path, xero: Any
) -> None:
    # 200 Sales is a revenue account: Xero takes no payment into it
    world = _setup(store, cli, tmp_path, xero, payment_account_code="200")
    assert cli("post-invoices", "-c", "shop").exit_code == 0
    assert _states(store)["WEB-1"] == "failed" and _states(store)["WEB-3"] == "posted"
    assert [state for _, _, state, _ in _rows(store)] == ["refused"] * 3
    with store.session() as s:
        mail = {n.subject: n.body for n in s.scalars(select(Notification))}
    subject = "[synccli] Xero refused the payments of invoice WEB-1"
    assert subject in mail, list(mail)
    body = mail[subject]
    assert "Account type is invalid for making a payment to/from" in body
    assert "payment_account_code" in body and "Enable payments to this account" in body
    shown = json.loads(cli("invoices", "show", "WEB-1", "-c", "shop", "--json").stdout)
    assert [p["state"] for p in shown["payments"]] == ["refused", "refused"]
    assert "Account type is invalid" in shown["payments"][0]["error"]
    [status] = json.loads(cli("status", "-c", "shop", "--json").stdout)
    assert status["payments"] == {"posted": 0, "pending": 0, "refused": 3}
    assert [
        (p["number"], p["payment"], p["amount"], p["method"]) for p in status["refused_payments"]
    ] == [
        ("WEB-1", 1, "20.00", "card"),
        ("WEB-1", 2, "3.00", "gift_card"),
        ("WEB-2", 1, "5.00", "cash"),
    ]
    text = cli("status", "-c", "shop").stdout
    assert "payment refused: WEB-1 payment 2 (3.00 gift_card): Account type is invalid" in text

    # a cancel now would stop the payments alone, and says so
    cancelled = cli("invoices", "cancel", "WEB-2", "-c", "shop")
    assert cancelled.exit_code == 0, cancelled.stderr
    assert "its payments not applied yet will not be" in cancelled.stderr + cancelled.stdout

    # the merchant names a bank account and retries: only the payments go
    assert cli("connections", "set", "shop", "payment_account_code=090").exit_code == 0
    for number in ("WEB-1", "WEB-2"):
        assert cli("invoices", "retry", number, "-c", "shop").exit_code == 0
    # the dry run plans the payments alone (the invoices are at Xero), with no call
    calls = xero.app.counters.total()
    planned = cli("post-invoices", "-c", "shop", "--dry-run", "--json")
    assert planned.exit_code == 0, planned.stderr
    [run] = json.loads(planned.stdout)
    assert [(i["number"], i["outcome"]) for i in run["report"]["invoices"]] == [
        ("WEB-1", "would_pay"),
        ("WEB-2", "would_pay"),
    ]
    assert xero.app.counters.total() == calls
    assert cli("post-invoices", "-c", "shop").exit_code == 0
    assert xero.app.counters.total("PUT", "Invoices") == 1
    assert [len(v) for v in _remote_payments(world).values()] == [2, 1, 0]
    assert _states(store) == {"WEB-1": "posted", "WEB-2": "posted", "WEB-3": "posted"}
    with store.session() as s:
        outcomes = list(s.scalars(select(InvoiceAttempt.outcome).order_by(InvoiceAttempt.id)))
    assert outcomes.count("payment_refused") == 2 and outcomes.count("paid") == 2


def test_doctor_checks_the_payment_account(
    store: Store, cli: Any, tmp_path: Path, xero: Any
) -> None:
    harness.add_connection(store, "shop", xero, time_scale=SCALE, payment_account_code="200")
    result = cli("doctor", "-c", "shop")
    assert "FAIL shop: payment account: Xero's account 200 (Sales) is neither a bank account " in (
        result.stdout
    ), result.stdout
    assert result.exit_code == 2
    assert cli("connections", "set", "shop", "payment_account_code=970").exit_code == 0
    result = cli("doctor", "-c", "shop")
    assert "ok   shop: payment account: 970 takes payments" in result.stdout, result.stdout
