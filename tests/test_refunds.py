"""Refunds (issue 22, lines 4, 5 and 7): ``invoices add`` takes a refund naming the original
order, all of it or some lines and amounts, never more than was sold; it is posted once the
order is, as the provider allows (Xero: a credit note allocated to the invoice; X-Series: a
return sale), exactly once after a lost answer; a provider that cannot take refunds refuses
them at ``invoices add`` in one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from synccli import registry
from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.store.models import InvoiceJob, Order, OrderLine
from synccli.sync.orders import OrderInputError, parse_orders, unsupported

SCALE = 1000.0
TAX = {p.name: p.sandbox.tax_code for p in registry.providers()}
# refunds that take an amount on a line (R-Series refunds whole quantities only: its own tests
# are tests/test_refunds_lightspeed.py)
REFUNDS = [
    p
    for p in registry.suite_names()
    if registry.get(p).capabilities.documents.refunds in ("credit_note", "return_sale")
]


def order(provider: str, sku: str, number: str = "WEB-7", **extra: Any) -> dict[str, Any]:
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
                "tax_code": TAX[provider],
                "tax_rate": "0.15",
            },
            {
                "kind": "shipping",
                "description": "Courier",
                "quantity": 1,
                "unit_price": "8.00",
                "tax_code": TAX[provider],
                "tax_rate": "0.15",
            },
        ],
        "total": "32.20",  # 20 + 3 + 8 + 1.20
        **extra,
    }


def refund(number: str = "WEB-7-R1", of: str = "WEB-7", **extra: Any) -> dict[str, Any]:
    return {
        "number": number,
        "date": "2026-05-03",
        "refund_of": of,
        "lines": [{"line": 1, "quantity": 1}, {"line": 2, "amount": "4.00"}],
        **extra,
    }


def lines(*items: dict[str, Any]) -> str:
    return "\n".join(json.dumps(i) for i in items)


# --- input ------------------------------------------------------------------------------------
def test_a_refund_is_read_with_its_lines_and_total() -> None:
    parsed = parse_orders(lines(order("xero", "MUG"), refund(total="16.10")))
    assert [o.number for o in parsed] == ["WEB-7", "WEB-7-R1"]
    assert parsed[1].refund_of == "WEB-7"


def test_a_refund_names_its_fields_when_they_are_wrong() -> None:
    bad = refund()
    bad["lines"] = [{"line": 0, "quantity": -1}, {"line": 2}, {"line": 1, "qty": 1}]
    with pytest.raises(OrderInputError) as err:
        parse_orders(lines(order("xero", "MUG"), bad))
    assert err.value.problems == [
        "line 2: lines[0].line must be at least 1",
        "line 2: lines[0].quantity must not be negative",
        "line 2: lines[1] needs quantity or amount",
        "line 2: lines[2].qty is not a field of a refund line (did you mean quantity?)",
        "line 2: lines[2] needs quantity or amount",
    ]


def add(store: Store, provider: str, text: str, name: str = "shop") -> Any:
    from synccli.store.connections import get_connection
    from synccli.sync.orders import add_orders

    return add_orders(store, get_connection(store, name), text)


@contextmanager
def sandbox(provider: str) -> Iterator[harness.Running]:
    running = harness.start(provider, products=5, customers=3, time_scale=SCALE)
    try:
        yield running
    finally:
        running.stop()


def settings_for(provider: str, running: harness.Running) -> dict[str, str]:
    if provider == "lightspeed-x":
        return {"charge_item": next(iter(running.app.world().products.values())).id}
    if provider == "lightspeed":
        return {"charge_item": str(next(p for p, _ in running.app.items()).seq)}
    if provider == "unleashed":
        return {"charge_item": next(iter(running.app.world().products.values())).code}
    return {}


def test_a_refund_may_not_take_back_more_than_was_sold(store: Store) -> None:
    with sandbox("xero") as running:
        harness.add_connection(store, "shop", running, time_scale=SCALE)
        add(store, "xero", json.dumps(order("xero", "MUG")))
        add(store, "xero", json.dumps(refund()))
        too_many = refund("WEB-7-R2", lines=[{"line": 1, "quantity": 2}])
        with pytest.raises(OrderInputError) as err:
            add(store, "xero", json.dumps(too_many))
        assert err.value.problems == [
            "line 1: lines[0].quantity 2 of line 1 of WEB-7 is more than is left to refund "
            "(1: 2 sold, 1 refunded before)"
        ]
        too_much = refund("WEB-7-R2", lines=[{"line": 2, "amount": "4.01"}])
        with pytest.raises(OrderInputError) as err:
            add(store, "xero", json.dumps(too_much))
        assert err.value.problems == [
            "line 1: lines[0].amount 4.01 of line 2 of WEB-7 is more than is left to refund "
            "(4.00: 8.00 sold, 4.00 refunded before)"
        ]
        unknown = refund("WEB-7-R2", of="WEB-9")
        with pytest.raises(OrderInputError) as err:
            add(store, "xero", json.dumps(unknown))
        assert err.value.problems == [
            "line 1: refund_of 'WEB-9' is no order of connection 'shop' (add the order first, "
            "or in the same input before the refund)"
        ]
        whole = {"number": "WEB-7-R3", "date": "2026-05-04", "refund_of": "WEB-7"}
        with pytest.raises(OrderInputError) as err:
            add(store, "xero", json.dumps(whole))
        assert err.value.problems == [
            "line 1: refund_of 'WEB-7' has been refunded in part already: name the lines "
            "to refund (lines)"
        ]


def test_a_whole_refund_copies_every_line_and_the_order_s_tax_mode(store: Store) -> None:
    with sandbox("xero") as running:
        harness.add_connection(store, "shop", running, time_scale=SCALE)
        inclusive = order("xero", "MUG", prices_include_tax=True, total="28.00")
        whole = {"number": "WEB-7-R1", "date": "2026-05-04", "refund_of": "WEB-7"}
        add(store, "xero", lines(inclusive, whole))
        with store.session() as s:
            r = s.scalar(select(Order).where(Order.number == "WEB-7-R1"))
            assert r is not None
            assert (r.refund_of, r.total, r.prices_include_tax) == ("WEB-7", Decimal("28"), True)
            got = [(ln.refund_line, ln.sku, ln.quantity, ln.unit_price) for ln in r.lines]
            assert got == [(1, "MUG", 2, Decimal(10)), (2, "", 1, Decimal(8))]


@pytest.mark.parametrize("provider", registry.names())
def test_add_refuses_a_refund_the_provider_cannot_take(provider: str) -> None:
    parsed = parse_orders(lines(order(provider, "MUG"), refund()))
    documents = registry.get(provider).capabilities.documents
    refused = unsupported(provider, parsed, {"charge_item": "1"})
    if documents.refunds == "none":
        assert refused == [
            f"line 2: {provider} cannot take refunds (refund_of) (README: the provider table)"
        ]
    elif documents.refunds == "sale_refund":  # the refund's line 2 is an amount
        assert refused == [
            f"line 2: {provider} cannot take refunds of an amount on a line (lines[].amount: "
            "refund a quantity) (README: the provider table)"
        ]
    else:
        assert refused == []


# --- posted -----------------------------------------------------------------------------------
def credit_notes(running: harness.Running) -> list[dict[str, Any]]:
    return list(running.app.extra[running.app.tenant].credit_notes.values())


def posted_refund(provider: str, running: harness.Running) -> tuple[Decimal, dict[str, Any]]:
    """The refund's total at the provider and what it holds of the refund."""
    if provider == "xero":
        [note] = credit_notes(running)
        return Decimal(str(note["Total"])), note
    world = running.app.world()
    sales = [i for i in world.invoices.values() if i.body.get("return_for")]
    [sale] = sales
    return -Decimal(sale.total), sale.body


def job(store: Store, number: str) -> InvoiceJob:
    with store.session() as s:
        found = s.scalar(
            select(InvoiceJob)
            .join(Order, InvoiceJob.order_id == Order.id)
            .where(Order.number == number)
        )
        assert found is not None
        return found


@pytest.mark.parametrize("provider", REFUNDS)
def test_a_refund_is_posted_against_the_order_once_it_is_posted(
    store: Store, cli: Any, tmp_path: Path, provider: str
) -> None:
    with sandbox(provider) as running:
        harness.add_connection(
            store, "shop", running, time_scale=SCALE, **settings_for(provider, running)
        )
        known = next(iter(running.app.world().products.values()))
        path = tmp_path / "orders.jsonl"
        path.write_text(lines(order(provider, known.code), refund()), encoding="utf-8")
        assert cli("invoices", "add", str(path), "-c", "shop").exit_code == 0
        # the order is held back: its refund waits for it
        assert cli("invoices", "cancel", "WEB-7", "-c", "shop").exit_code == 0
        planned = cli("post-invoices", "-c", "shop", "--dry-run")
        assert "WEB-7-R1" in planned.stdout and "wait" in planned.stdout, planned.stdout
        result = cli("post-invoices", "-c", "shop")
        assert result.exit_code == 0, result.stderr
        assert job(store, "WEB-7-R1").state == "waiting"
        shown = cli("invoices", "show", "WEB-7-R1", "-c", "shop")
        assert "waiting for order WEB-7 to be posted (it is cancelled)" in shown.stdout
        assert "(refunds: waiting 1)" in cli("status", "-c", "shop").stdout
        traced = cli("trace", "invoice", "WEB-7-R1", "-c", "shop").stdout
        assert "refund_of: WEB-7" in traced and "state: waiting" in traced
        assert cli("invoices", "retry", "WEB-7", "-c", "shop").exit_code == 0
        result = cli("post-invoices", "-c", "shop")  # the order posts; its refund still waits
        assert result.exit_code == 0, result.stderr
        assert job(store, "WEB-7").state == "posted"
        result = cli("post-invoices", "-c", "shop")  # the run after: the refund posts
        assert result.exit_code == 0, result.stderr
        refunded = job(store, "WEB-7-R1")
        assert refunded.state == "posted", refunded.last_error
        total, held = posted_refund(provider, running)
        assert total == Decimal("16.10")  # 10 + 1.50 and 4 + 0.60
        original = job(store, "WEB-7").remote_id
        if provider == "xero":
            assert held["Allocations"][0]["Invoice"]["InvoiceID"] == original
            assert held["RemainingCredit"] == 0
            assert held["LineAmountTypes"] == "Exclusive"
            invoice = running.app.world().invoices[original]
            assert Decimal(str(invoice.body["AmountDue"])) == Decimal("16.10")
        else:
            assert held["return"] == {"is_return": True, "original_sale_id": original}
            assert [ln["quantity"] for ln in held["line_items"]] == [-1, -1]
        listed = cli("invoices", "list", "-c", "shop")
        assert "refund of WEB-7" in listed.stdout


@pytest.mark.parametrize("lost", ["CreditNotes$", "Allocations$"])
def test_a_lost_xero_answer_is_looked_up_and_nothing_is_posted_twice(
    store: Store, cli: Any, tmp_path: Path, lost: str
) -> None:
    with sandbox("xero") as running:
        harness.add_connection(store, "shop", running, time_scale=SCALE)
        known = next(iter(running.app.world().products.values()))
        path = tmp_path / "orders.jsonl"
        path.write_text(lines(order("xero", known.code), refund()), encoding="utf-8")
        assert cli("invoices", "add", str(path), "-c", "shop").exit_code == 0
        assert cli("post-invoices", "-c", "shop").exit_code == 0  # the order
        running.app.faults.add("lost", method="PUT", path=lost, times=1)
        cli("post-invoices", "-c", "shop")
        cli("post-invoices", "-c", "shop")
        refunded = job(store, "WEB-7-R1")
        assert refunded.state == "posted", refunded.last_error
        [note] = credit_notes(running)
        assert len(note["Allocations"]) == 1 and note["RemainingCredit"] == 0


def test_an_inclusive_order_s_credit_note_is_inclusive(
    store: Store, cli: Any, tmp_path: Path
) -> None:
    with sandbox("xero") as running:
        harness.add_connection(store, "shop", running, time_scale=SCALE)
        known = next(iter(running.app.world().products.values()))
        path = tmp_path / "orders.jsonl"
        inclusive = order("xero", known.code, prices_include_tax=True, total="28.00")
        path.write_text(lines(inclusive, refund()), encoding="utf-8")
        assert cli("invoices", "add", str(path), "-c", "shop").exit_code == 0
        assert cli("post-invoices", "-c", "shop").exit_code == 0
        assert cli("post-invoices", "-c", "shop").exit_code == 0
        [note] = credit_notes(running)
        assert note["LineAmountTypes"] == "Inclusive"
        assert Decimal(str(note["Total"])) == Decimal("14.00")  # 10 and 4, tax included
        assert job(store, "WEB-7-R1").state == "posted"


def test_a_paid_invoice_keeps_the_credit_on_the_contact(
    store: Store, cli: Any, tmp_path: Path
) -> None:
    """The invoice was paid off at Xero meanwhile: nothing is allocated (Xero would refuse it),
    the credit stays on the contact, and `invoices show` says so."""
    with sandbox("xero") as running:
        harness.add_connection(store, "shop", running, time_scale=SCALE)
        known = next(iter(running.app.world().products.values()))
        path = tmp_path / "orders.jsonl"
        path.write_text(lines(order("xero", known.code), refund()), encoding="utf-8")
        assert cli("invoices", "add", str(path), "-c", "shop").exit_code == 0
        assert cli("post-invoices", "-c", "shop").exit_code == 0
        invoice = running.app.world().invoices[job(store, "WEB-7").remote_id]
        invoice.body["AmountDue"], invoice.body["AmountPaid"] = 0, invoice.body["Total"]
        invoice.body["Status"] = "PAID"
        assert cli("post-invoices", "-c", "shop").exit_code == 0
        assert job(store, "WEB-7-R1").state == "posted"
        [note] = credit_notes(running)
        assert note["Allocations"] == [] and note["RemainingCredit"] == 16.1
        shown = cli("invoices", "show", "WEB-7-R1", "-c", "shop")
        assert "not allocated: invoice WEB-7 is paid" in shown.stdout
        with store.session() as s:
            refunded = s.scalars(select(OrderLine.refund_line).order_by(OrderLine.id)).all()
        assert refunded == [None, None, 1, 2]


def test_a_refused_allocation_keeps_the_credit_note_and_says_what_to_fix(
    store: Store, cli: Any, tmp_path: Path
) -> None:
    """The invoice now belongs to another contact at Xero: the allocation is refused in Xero's
    words, the credit note (already there) is never posted again, and the merchant's email is
    about the refund and what to fix."""
    from synccli.store.models import Notification

    with sandbox("xero") as running:
        harness.add_connection(store, "shop", running, time_scale=SCALE, notify_email="m@x.nz")
        known = next(iter(running.app.world().products.values()))
        path = tmp_path / "orders.jsonl"
        path.write_text(lines(order("xero", known.code), refund()), encoding="utf-8")
        assert cli("invoices", "add", str(path), "-c", "shop").exit_code == 0
        assert cli("post-invoices", "-c", "shop").exit_code == 0
        invoice = running.app.world().invoices[job(store, "WEB-7").remote_id]
        invoice.customer_id = "00000000-0000-0000-0000-00000000beef"
        cli("post-invoices", "-c", "shop")
        refunded = job(store, "WEB-7-R1")
        assert refunded.state == "failed"
        assert "incorrect invoice type" in (refunded.last_error or "")
        assert refunded.maybe_sent  # looked up first next time, never posted again
        assert cli("invoices", "retry", "WEB-7-R1", "-c", "shop").exit_code == 0
        cli("post-invoices", "-c", "shop")
        assert len(credit_notes(running)) == 1
        with store.session() as s:
            [note] = s.scalars(select(Notification)).all()
        assert note.subject == "[synccli] Xero refused refund WEB-7-R1 of order WEB-7"
        assert "What to fix: check refund WEB-7-R1 against order WEB-7 in Xero" in note.body
        assert "allocation to invoice WEB-7 was refused" in note.body


def test_a_paid_order_s_refund_is_paid_back_through_the_payment_account(
    store: Store, cli: Any, tmp_path: Path
) -> None:
    """The customer paid at checkout (the invoice is PAID at Xero): the credit note cannot be
    allocated, so its amount is paid back out of the connection's payment_account_code (a
    payment on the credit note, spec ``Payment.CreditNote``), once; a lost answer is looked up
    (the credit note has no credit left) and never paid twice."""
    with sandbox("xero") as running:
        harness.add_connection(store, "shop", running, time_scale=SCALE, payment_account_code="090")
        known = next(iter(running.app.world().products.values()))
        paid = order("xero", known.code)
        paid["payments"] = [{"amount": "32.20", "date": "2026-05-01", "method": "card"}]
        path = tmp_path / "orders.jsonl"
        path.write_text(lines(paid, refund()), encoding="utf-8")
        assert cli("invoices", "add", str(path), "-c", "shop").exit_code == 0
        assert cli("post-invoices", "-c", "shop").exit_code == 0
        invoice = running.app.world().invoices[job(store, "WEB-7").remote_id]
        assert invoice.body["Status"] == "PAID"
        running.app.faults.add("lost", method="PUT", path="Payments$", times=20)
        cli("post-invoices", "-c", "shop")
        running.app.faults.clear()
        assert cli("post-invoices", "-c", "shop").exit_code == 0
        assert job(store, "WEB-7-R1").state == "posted"
        [note] = credit_notes(running)
        assert note["RemainingCredit"] == 0 and note["Allocations"] == []
        tenant = running.app.extra[running.app.tenant]
        refunds = [p for p in tenant.payments.values() if "CreditNote" in p]
        assert [(p["Amount"], p["Account"]["Code"]) for p in refunds] == [(16.1, "090")]
        shown = cli("invoices", "show", "WEB-7-R1", "-c", "shop")
        assert "paid back: 16.10 out of account 090" in shown.stdout


@pytest.mark.parametrize("step", ["CreditNotes$", "Allocations$"])
def test_a_xero_500_on_a_refund_posts_it_once(
    store: Store, cli: Any, tmp_path: Path, step: str
) -> None:
    """Xero answers 500 (its idempotency store down, say): the write is retried under the same
    key, or looked up next run; one credit note, allocated once."""
    with sandbox("xero") as running:
        harness.add_connection(store, "shop", running, time_scale=SCALE)
        known = next(iter(running.app.world().products.values()))
        path = tmp_path / "orders.jsonl"
        path.write_text(lines(order("xero", known.code), refund()), encoding="utf-8")
        assert cli("invoices", "add", str(path), "-c", "shop").exit_code == 0
        assert cli("post-invoices", "-c", "shop").exit_code == 0  # the order
        running.app.faults.add("500", method="PUT", path=step, times=2)
        cli("post-invoices", "-c", "shop")
        cli("post-invoices", "-c", "shop")
        assert job(store, "WEB-7-R1").state == "posted"
        [note] = credit_notes(running)
        assert len(note["Allocations"]) == 1 and note["RemainingCredit"] == 0
