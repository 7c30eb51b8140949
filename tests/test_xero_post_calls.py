"""#21: Xero's post-invoices spends the calls any correct client needs and no more.

The safe floor of one run: one ``PUT /Invoices`` per 50 invoices, one ``PUT /Contacts`` carrying
every customer the provider lacks, one ``PUT /Items`` carrying every item it lacks, and one
combined ``GET /Contacts`` for the customers that are not linked (one may have been created at
Xero since link-customers last ran). No item look-up: the last pull read every item, so a code
with no link is new; Xero refuses to create a code it has (its codes are unique), and only then
is the item looked up and linked, never created twice. Counted by the Xero simulator, over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from synccli.clock import SimClock
from synccli.sandbox import harness
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import Connection, Link
from synccli.sync import customers, invoices, products
from synccli.sync.context import job_run
from synccli.sync.jobs import Job
from synccli.sync.orders import add_orders, line_amounts

SCALE = 1000.0
CLOCK = SimClock()


@pytest.fixture
def xero(store: Store) -> Iterator[tuple[harness.Running, Connection]]:
    CLOCK.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    running = harness.start("xero", products=40, customers=20, time_scale=SCALE, clock=CLOCK)
    try:
        harness.add_connection(
            store, "shop", running, notify_email="owner@shop.example", time_scale=SCALE
        )
        yield running, get_connection(store, "shop")
    finally:
        running.stop()


def world(running: harness.Running) -> Any:  # the simulator's tenant
    return running.app.catalogue.tenant(running.app.tenant)


def onboard(store: Store, conn: Connection, running: harness.Running) -> None:
    """The connection's first pull (every item) and link-customers (every contact), as cron
    runs them before any order; the shop knows the provider's customers."""
    from synccli.store.models import Customer

    with store.session() as s:
        for c in world(running).customers.values():
            s.add(
                Customer(
                    connection_id=conn.id,
                    name=c.name,
                    email=c.email,
                    account_number=c.account_number,
                    created_at=CLOCK.now(),
                )
            )
    with job_run(store, Job.PULL_PRODUCTS, conn, clock=CLOCK) as jc:
        jc.counts = products.pull_products(jc)
    with job_run(store, customers.JOB, conn, clock=CLOCK) as jc:
        jc.counts = customers.link_customers(jc)


def calls(running: harness.Running) -> dict[str, int]:
    c = running.app.counters
    with c.lock:
        return {
            f"{m} {e}": n for (m, e), n in c.calls.items() if e in ("Items", "Contacts", "Invoices")
        }


def post(store: Store, conn: Connection) -> invoices.PostReport:
    with job_run(store, invoices.JOB, conn, clock=CLOCK) as jc:
        report = invoices.post_invoices(jc)
        jc.counts = report
    return report


def order_json(
    number: str, customer: dict[str, str], lines: list[tuple[str, str, int, str]]
) -> Any:
    out, total = [], Decimal("0.00")
    for sku, description, qty, price in lines:
        amount, tax = line_amounts(Decimal(qty), Decimal(price), Decimal("0.15"))
        total += amount + tax
        out.append(
            {
                "sku": sku,
                "description": description,
                "quantity": qty,
                "unit_price": price,
                "tax_code": "OUTPUT2",
                "tax_rate": "0.15",
            }
        )
    return {
        "number": number,
        "date": "2026-03-02",
        "currency": "NZD",
        "customer": customer,
        "lines": out,
        "total": str(total),
    }


def twenty_orders(
    running: harness.Running,
    new_customers: list[dict[str, str]],
    new_items: list[str],
) -> str:
    """20 orders of the provider's own items and customers; the first ``len(new_items)`` add a
    line of a new item, the last ``len(new_customers)`` are for those customers."""
    w = world(running)
    items = sorted(w.products.values(), key=lambda p: p.code)
    known = sorted(w.customers.values(), key=lambda c: c.code)
    orders = []
    for i in range(20):
        lines = [(items[i].code, items[i].name, 1, str(items[i].price))]
        if i < len(new_items):
            lines.append((new_items[i], f"New item {new_items[i]}", 2, "19.99"))
        k = 19 - i
        if k < len(new_customers):
            customer = new_customers[k]
        else:
            c = known[i % len(known)]
            customer = {"email": c.email, "account_number": c.account_number, "name": c.name}
        orders.append(order_json(f"WEB-{i + 1:04d}", customer, lines))
    return "\n".join(json.dumps(o) for o in orders) + "\n"


def buyers(n: int) -> list[dict[str, str]]:
    return [
        {
            "email": f"new.buyer{k}@buyer.example",
            "account_number": f"NEWC-{k:03d}",
            "name": f"New Buyer {k}",
        }
        for k in range(n)
    ]


def test_twenty_orders_five_new_customers_three_new_items_cost_four_calls(
    store: Store, xero: tuple[harness.Running, Connection]
) -> None:
    running, conn = xero
    onboard(store, conn, running)
    add_orders(
        store, conn, twenty_orders(running, buyers(5), ["NEW-1", "NEW-2", "NEW-3"]), now=CLOCK.now()
    )
    before = calls(running)
    report = post(store, conn)
    spent = {k: n - before.get(k, 0) for k, n in calls(running).items() if n - before.get(k, 0)}
    assert report.posted == 20, report
    assert spent == {
        "PUT Invoices": 1,  # 20 invoices in one plural envelope
        "GET Contacts": 1,  # the five unlinked customers in one look-up
        "PUT Contacts": 1,  # the five created in one call
        "PUT Items": 1,  # the three new items created in one call, none looked up first
    }
    w = world(running)
    assert sorted(p.code for p in w.products.values() if p.code.startswith("NEW-")) == [
        "NEW-1",
        "NEW-2",
        "NEW-3",
    ]
    assert len([c for c in w.customers.values() if c.email.startswith("new.buyer")]) == 5
    assert report.products_created == 3


def test_an_item_created_at_xero_after_the_pull_is_linked_not_created_twice(
    store: Store, xero: tuple[harness.Running, Connection]
) -> None:
    """The code was absent from the last pull: the create goes first, Xero refuses it (codes are
    unique), and only then is the item looked up and linked; a contact created at Xero since
    link-customers ran is found by the combined look-up and linked, not created again."""
    running, conn = xero
    onboard(store, conn, running)
    w = world(running)
    cat = running.app.catalogue
    made = cat.gen.add_product(w, code="LATE-1", price=Decimal("19.99"))
    late = cat.gen.add_customer(w, email="late.buyer@buyer.example", account_number="LATE-C")
    shop_side = {"email": late.email, "account_number": "LATE-C", "name": late.name}
    add_orders(
        store, conn, twenty_orders(running, [shop_side], ["LATE-1", "NEW-9"]), now=CLOCK.now()
    )
    before = calls(running)
    report = post(store, conn)
    spent = {k: n - before.get(k, 0) for k, n in calls(running).items() if n - before.get(k, 0)}
    assert report.posted == 20, report
    assert spent == {"PUT Invoices": 1, "GET Contacts": 1, "PUT Items": 1, "GET Items": 1}
    assert [p.id for p in w.products.values() if p.code == "LATE-1"] == [made.id]
    assert len([c for c in w.customers.values() if c.email == late.email]) == 1
    with store.session() as s:
        linked = s.scalar(select(Link.remote_id).where(Link.remote_code == "LATE-1"))
    assert linked == made.id.lower()
    assert report.products_created == 1 and report.products_linked == 1
