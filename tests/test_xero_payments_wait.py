"""Xero's payments wait to go together, and a refund spends no read our records answer (#22).

A posted invoice's payments wait (``payments_wait_hours``, 24 by default) until the oldest has
waited that long, a full call's worth (50) is waiting, or a refund of one of those orders is
due: then every waiting payment goes in one ``PUT /Payments``, before any credit note. A refund
of an invoice we posted and paid (or left unpaid) knows what the invoice has due from our own
records: two calls, no ``GET /Invoices/{id}``. An invoice paid in Xero meanwhile refuses the
allocation (nothing changes); it is then read, and the credit goes where it now says, once.
Counted by the Xero simulator, over HTTP, on a simulated clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from sqlalchemy import select

from synccli.clock import SimClock
from synccli.sandbox import harness
from synccli.sandbox.xero import API
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import Connection, InvoiceJob, Order
from synccli.sync import invoices
from synccli.sync.context import job_run
from synccli.sync.orders import add_orders

SCALE = 1000.0
CLOCK = SimClock()
DOCUMENTS = ("Invoices", "Payments", "CreditNotes", "Allocations")  # endpoints counted
START = datetime(2026, 5, 1, 9, 5, tzinfo=UTC)


@pytest.fixture
def running() -> Iterator[harness.Running]:
    CLOCK.set(START)
    app = harness.start("xero", products=5, customers=3, time_scale=SCALE, clock=CLOCK)
    try:
        yield app
    finally:
        app.stop()


def connect(store: Store, running: harness.Running, **settings: Any) -> Connection:
    settings.setdefault("payment_account_code", "090")
    harness.add_connection(store, "shop", running, time_scale=SCALE, **settings)
    return get_connection(store, "shop")


def sku(running: harness.Running) -> str:
    return sorted(p.code for p in running.app.world().products.values())[0]


def order(number: str, code: str, paid: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "number": number,
        "date": "2026-05-01",
        "currency": "NZD",
        "customer": {"email": "jane@example.com", "name": "Jane Smith"},
        "lines": [
            {
                "sku": code,
                "description": "Mug",
                "quantity": 2,
                "unit_price": "10.00",
                "tax_code": "OUTPUT2",
                "tax_rate": "0.15",
            },
            {
                "kind": "shipping",
                "description": "Courier",
                "quantity": 1,
                "unit_price": "8.00",
                "tax_code": "OUTPUT2",
                "tax_rate": "0.15",
            },
        ],
        "total": "32.20",
    }
    if paid:
        out["payments"] = [{"amount": "32.20", "date": "2026-05-01", "method": "card"}]
    return out


def refund(of: str) -> dict[str, Any]:
    return {
        "number": f"{of}-R1",
        "date": "2026-05-02",
        "refund_of": of,
        "lines": [{"line": 1, "quantity": 1}, {"line": 2, "amount": "4.00"}],
    }  # 10 + 1.50 and 4 + 0.60: 16.10


def add(store: Store, conn: Connection, *items: dict[str, Any]) -> None:
    add_orders(store, conn, "\n".join(json.dumps(i) for i in items), now=CLOCK.now())


def post(store: Store, conn: Connection, running: harness.Running) -> dict[str, int]:
    """One post-invoices run; the calls it made on the documents, by method and endpoint
    (the first run's customer and item look-ups aside)."""
    before = calls(running)
    with job_run(store, invoices.JOB, conn, clock=CLOCK) as jc:
        jc.counts = invoices.post_invoices(jc)
    after = calls(running)
    return {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0)}


def calls(running: harness.Running) -> dict[str, int]:
    counters = running.app.counters
    with counters.lock:
        return {f"{m} {e}": n for (m, e), n in counters.calls.items() if e in DOCUMENTS}


def states(store: Store) -> dict[str, str]:
    with store.session() as s:
        rows = s.execute(select(Order.number, InvoiceJob.state).join(InvoiceJob))
        return {number: state for number, state in rows.tuples()}


def remote(running: harness.Running, number: str) -> dict[str, Any]:
    [inv] = [i for i in running.app.world().invoices.values() if i.number == number]
    return dict(inv.body)


def credit_note(running: harness.Running) -> dict[str, Any]:
    [note] = running.app.extra[running.app.tenant].credit_notes.values()
    return dict(note)


def paid_back(running: harness.Running) -> list[tuple[float, str]]:
    payments = running.app.extra[running.app.tenant].payments.values()
    return [(p["Amount"], p["Account"]["Code"]) for p in payments if "CreditNote" in p]


# --- payments wait for a batch ------------------------------------------------------------------
@pytest.mark.parametrize("wait", [None, "0"])
def test_payments_wait_a_day_then_go_in_one_call(
    store: Store, running: harness.Running, wait: str | None
) -> None:
    """Four runs two hours apart each post three paid orders. By default their payments wait:
    no ``PUT /Payments`` until the oldest has waited 24 hours, then one call applies all twelve.
    ``payments_wait_hours=0``: one call a run, as each run posts."""
    conn = connect(store, running, **({"payments_wait_hours": wait} if wait else {}))
    code = sku(running)
    spent = []
    for run in range(4):
        add(store, conn, *[order(f"WEB-{run}{i}", code) for i in range(3)])
        spent.append(post(store, conn, running).get("PUT Payments", 0))
        CLOCK.advance(hours=2)
    if wait == "0":
        assert spent == [1, 1, 1, 1]
        assert set(states(store).values()) == {"posted"}
        return
    assert spent == [0, 0, 0, 0]
    assert set(states(store).values()) == {"paying"}
    assert remote(running, "WEB-00")["AmountDue"] == 32.2  # awaiting payment meanwhile
    CLOCK.set(START + timedelta(hours=23, minutes=59))
    assert post(store, conn, running).get("PUT Payments", 0) == 0  # the oldest has not waited a day
    CLOCK.set(START + timedelta(hours=24))
    assert post(store, conn, running) == {"PUT Payments": 1}  # all twelve, in one call
    assert set(states(store).values()) == {"posted"}
    for number in states(store):
        body = remote(running, number)
        assert body["Status"] == "PAID" and len(body["Payments"]) == 1, number
    assert post(store, conn, running) == {}  # nothing is left to pay


def test_a_full_call_of_payments_goes_at_once(store: Store, running: harness.Running) -> None:
    """Forty-nine waiting payments wait; the fiftieth fills a call, and every one goes."""
    conn = connect(store, running)
    code = sku(running)
    add(store, conn, *[order(f"WEB-{i:02d}", code) for i in range(49)])
    assert post(store, conn, running) == {"PUT Invoices": 1}
    CLOCK.advance(hours=2)
    add(store, conn, order("WEB-49", code))
    assert post(store, conn, running) == {"PUT Invoices": 1, "PUT Payments": 1}
    assert set(states(store).values()) == {"posted"}
    assert all(remote(running, n)["Status"] == "PAID" for n in states(store))


# --- a refund of an order whose payments wait ---------------------------------------------------
@pytest.mark.parametrize("together", [False, True])
def test_a_refund_applies_its_order_s_waiting_payments_first(
    store: Store, running: harness.Running, together: bool
) -> None:
    """A refund is due while its order's payment waits: every waiting payment (the other
    order's too) goes in one call first, then the credit note, paid back since the invoice is
    paid: never allocated against an invoice whose payments are still to come. ``together``:
    the order and its refund reach the same run, which posts the order and pays it (the refund
    waits for its order's run to end, as every refund does)."""
    conn = connect(store, running)
    code = sku(running)
    if together:
        add(store, conn, order("WEB-8", code), order("WEB-7", code), refund("WEB-7"))
        assert post(store, conn, running) == {"PUT Invoices": 1, "PUT Payments": 1}
        assert states(store) == {"WEB-7": "posted", "WEB-8": "posted", "WEB-7-R1": "waiting"}
        CLOCK.advance(hours=2)
        assert post(store, conn, running) == {"PUT CreditNotes": 1, "PUT Payments": 1}
    else:
        add(store, conn, order("WEB-8", code), order("WEB-7", code))
        assert post(store, conn, running) == {"PUT Invoices": 1}
        assert states(store) == {"WEB-7": "paying", "WEB-8": "paying"}
        CLOCK.advance(hours=2)
        add(store, conn, refund("WEB-7"))
        # both orders' payments in one call, then the credit note and its pay-back: no read
        assert post(store, conn, running) == {"PUT Payments": 2, "PUT CreditNotes": 1}
    assert states(store) == {"WEB-7": "posted", "WEB-8": "posted", "WEB-7-R1": "posted"}
    for number in ("WEB-7", "WEB-8"):
        body = remote(running, number)
        assert (body["Status"], body["AmountDue"], body["AmountPaid"]) == ("PAID", 0, 32.2)
    note = credit_note(running)
    assert note["RemainingCredit"] == 0 and note["Allocations"] == []
    assert paid_back(running) == [(16.1, "090")]


# --- a refund's calls ---------------------------------------------------------------------------
@pytest.mark.parametrize("paid", [True, False])
def test_a_refund_of_an_invoice_we_posted_costs_two_calls(
    store: Store, running: harness.Running, paid: bool
) -> None:
    """We posted the invoice and applied every payment of it (or it has none): our records say
    what it has due, so the credit note is paid back (paid) or allocated (unpaid) without
    reading the invoice first."""
    conn = connect(store, running, payments_wait_hours="0")
    add(store, conn, order("WEB-7", sku(running), paid=paid))
    post(store, conn, running)
    add(store, conn, refund("WEB-7"))
    spent = post(store, conn, running)
    second = "PUT Payments" if paid else "PUT Allocations"
    assert spent == {"PUT CreditNotes": 1, second: 1}
    assert states(store)["WEB-7-R1"] == "posted"
    note, body = credit_note(running), remote(running, "WEB-7")
    assert note["RemainingCredit"] == 0
    if paid:
        assert note["Allocations"] == [] and paid_back(running) == [(16.1, "090")]
        assert body["AmountDue"] == 0
    else:
        assert [a["Amount"] for a in note["Allocations"]] == [16.1] and paid_back(running) == []
        assert body["AmountDue"] == 16.1  # 32.20 less the credit


def merchant_pays(running: harness.Running, number: str, amount: str) -> None:
    """The merchant records a payment of the invoice in Xero (its API, as Xero's screens do)."""
    body = remote(running, number)
    creds = running.app.credentials()
    payment = {
        "Invoice": {"InvoiceID": body["InvoiceID"]},
        "Account": {"Code": "091"},
        "Date": "2026-05-01",
        "Amount": float(amount),
        "Reference": "paid at the counter",
    }
    resp = requests.put(
        f"{running.url}{API}/Payments",
        json={"Payments": [payment]},
        headers={
            "Authorization": f"Bearer {creds['access_token']}",
            "xero-tenant-id": creds["tenant_id"],
            "Accept": "application/json",
        },
        timeout=30,
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("amount", ["32.20", "20.00"])
def test_an_invoice_paid_in_xero_meanwhile_takes_the_credit_once(
    store: Store, running: harness.Running, amount: str
) -> None:
    """Our records say the invoice is unpaid, but the merchant paid it in Xero (in full, or
    20.00 of 32.20): the allocation is refused and changes nothing; the invoice is read, and
    the credit is paid back (paid in full) or allocated for what is due (12.20), once."""
    conn = connect(store, running, payments_wait_hours="0")
    add(store, conn, order("WEB-7", sku(running), paid=False))
    post(store, conn, running)
    merchant_pays(running, "WEB-7", amount)
    add(store, conn, refund("WEB-7"))
    spent = post(store, conn, running)
    assert states(store)["WEB-7-R1"] == "posted"
    note, body = credit_note(running), remote(running, "WEB-7")
    assert body["AmountDue"] == 0
    if amount == "32.20":
        assert note["Allocations"] == [] and note["RemainingCredit"] == 0
        assert paid_back(running) == [(16.1, "090")]
        assert spent == {
            "PUT CreditNotes": 1,
            "PUT Allocations": 1,  # refused: the invoice is paid
            "GET Invoices": 1,
            "PUT Payments": 1,
        }
    else:
        assert [a["Amount"] for a in note["Allocations"]] == [12.2]
        assert note["RemainingCredit"] == pytest.approx(3.9)  # stays on the contact
        assert paid_back(running) == []
        assert spent == {"PUT CreditNotes": 1, "PUT Allocations": 2, "GET Invoices": 1}
    credited = Decimal(str(body.get("AmountCredited", 0)))
    assert credited == (Decimal(0) if amount == "32.20" else Decimal("12.20"))


def planned(store: Store, conn: Connection) -> dict[str, str]:
    """``post-invoices --dry-run``: number -> what the run would do."""
    with job_run(store, invoices.JOB, conn, clock=CLOCK, dry_run=True) as jc:
        report = invoices.post_invoices(jc)
    return {o.number: o.outcome for o in report.invoices}


def test_the_dry_run_lists_the_payments_when_their_call_would_go(
    store: Store, running: harness.Running
) -> None:
    conn = connect(store, running)
    add(store, conn, order("WEB-7", sku(running)))
    post(store, conn, running)
    CLOCK.advance(hours=2)
    assert planned(store, conn) == {}  # waiting: the run would make no call
    CLOCK.set(START + timedelta(hours=24))
    assert planned(store, conn) == {"WEB-7": "would_pay"}


def test_a_payment_whose_answer_was_lost_is_looked_up_not_left_for_a_day(
    store: Store, running: harness.Running
) -> None:
    """Every answer to the batch's ``PUT /Payments`` is lost (Xero applied it): the payments are
    looked up without waiting another day (the run's second payments pass), found, and never
    sent again."""
    conn = connect(store, running)
    add(store, conn, order("WEB-7", sku(running)), order("WEB-8", sku(running)))
    post(store, conn, running)
    CLOCK.set(START + timedelta(hours=24))
    running.app.faults.add("lost", method="PUT", path="Payments$", times=20)
    spent = post(store, conn, running)
    running.app.faults.clear()
    assert spent["GET Payments"] == 1 and spent["PUT Payments"] >= 1  # its retries: one key
    assert set(states(store).values()) == {"posted"}
    for number in ("WEB-7", "WEB-8"):
        assert len(remote(running, number)["Payments"]) == 1
    CLOCK.advance(hours=2)
    assert post(store, conn, running) == {}
