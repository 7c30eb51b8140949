"""Issue 19, line 7: ``post-invoices --dry-run`` plans with the real run's own code, so on a mixed
batch the dry run lists exactly what the real run then does:

- which invoices are posted, looked up first (an earlier post got no clear answer), refused as
  invalid, or given up; which are left alone (cancelled, posted):
- which products and customers are looked up (and created when the provider lacks them):
                                                test_dry_run_plan_is_what_the_real_run_does
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, select
from test_invoices import connect, order_json, run_post, sandbox, world

from synccli.connectors.xero import XeroConnector
from synccli.store.db import Store
from synccli.store.models import InvoiceJob, Order
from synccli.sync import invoices
from synccli.sync.context import job_run
from synccli.sync.orders import add_orders

RECORDED = (
    "find_invoice",
    "find_product",
    "create_product",
    "find_customers",
    "find_customers_many",
    "create_customer",
    "create_customers",
    "create_products",
    "post_invoice",
    "post_invoices",
)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """Every dependency, look-up and post call the Xero connector makes, with what it asked."""
    calls: list[tuple[str, Any]] = []
    depth = [0]  # a recorded method that calls another (create_product -> create_products) is one

    def wrap(name: str) -> Any:
        original = getattr(XeroConnector, name)

        def recorded(self: Any, *args: Any, **kw: Any) -> Any:
            if depth[0]:
                return original(self, *args, **kw)
            depth[0] += 1
            try:
                note(name, args, kw)
                return original(self, *args, **kw)
            finally:
                depth[0] -= 1

        return recorded

    def note(name: str, args: Any, kw: dict[str, Any]) -> None:
        if name == "post_invoices":
            calls.extend(("post", draft.number) for draft, _key in args[0])
        elif name == "post_invoice":
            calls.append(("post", args[0].number))
        elif name == "find_customers":
            calls.append((name, kw.get("email") or kw.get("account")))
        elif name == "find_customers_many":  # one combined look-up: each pair it asks
            calls.extend(("find_customers", email or account) for email, account in args[0])
        elif name == "create_customers":
            calls.extend(("create_customer", c.email) for c in args[0])
        elif name == "create_products":
            calls.extend(("create_product", p.code) for p in args[0])
        elif name == "create_product":
            calls.append((name, args[0].code))
        elif name == "create_customer":
            calls.append((name, args[0].email))
        else:
            calls.append((name, args[0]))

    for name in RECORDED:
        monkeypatch.setattr(XeroConnector, name, wrap(name))
    yield calls


def _set(store: Store, number: str, **values: Any) -> None:
    with store.session() as s:
        order = s.scalar(select(Order).where(Order.number == number))
        assert order is not None
        job = s.scalar(select(InvoiceJob).where(InvoiceJob.order_id == order.id))
        assert job is not None
        total = values.pop("order_total", None)
        if total is not None:
            order.total = total
        for key, value in values.items():
            setattr(job, key, value)


def test_dry_run_plan_is_what_the_real_run_does(
    store: Store, recorder: list[tuple[str, Any]]
) -> None:
    with sandbox("xero") as running:
        conn = connect(store, running)
        w = world(running)
        product = sorted(w.products.values(), key=lambda p: p.code)[0]
        customer = sorted(w.customers.values(), key=lambda c: c.code)[0]
        known = {"email": customer.email, "name": customer.name}
        line = (product.code, product.name, 1, "10.00")
        # a first order links the customer and the product: later orders need no look-up of them
        add_orders(store, conn, json.dumps(order_json("WARM-1", known, [line], "OUTPUT2")))
        assert run_post(store, conn).posted == 1

        new_customer = {"email": "brand.new@buyer.example", "name": "Brand New"}
        orders = [
            order_json(
                "MIX-NEWP", known, [line, ("NEW-MIX-P", "New thing", 1, "19.99")], "OUTPUT2"
            ),
            order_json("MIX-NEWC", new_customer, [line], "OUTPUT2"),
            order_json("MIX-READY", known, [line], "OUTPUT2"),
            order_json("MIX-LOOK", known, [line], "OUTPUT2"),
            order_json("MIX-GIVEUP", known, [line], "OUTPUT2"),
            order_json("MIX-HELD", known, [line, ("NEW-HELD-P", "Held", 1, "1.00")], "OUTPUT2"),
            order_json("MIX-CANCEL", known, [line], "OUTPUT2"),
            order_json("MIX-UNQUEUED", known, [line], "OUTPUT2"),
        ]
        add_orders(store, conn, "\n".join(json.dumps(o) for o in orders))
        now = datetime.now(UTC)
        # an earlier post got no clear answer: looked up before it is posted again
        _set(store, "MIX-LOOK", state="posting", maybe_sent=True)
        # invalid in the store (its total no longer matches its lines), refused for a week: the
        # next refusal is the last
        _set(
            store,
            "MIX-GIVEUP",
            order_total=Decimal("99.00"),
            state="failed",
            attempts=3,
            first_failed_at=now - timedelta(days=8),
            next_attempt_at=now - timedelta(hours=1),
        )
        _set(store, "MIX-HELD", order_total=Decimal("99.00"))  # invalid: held, not sent
        invoices.cancel_invoice(store, "MIX-CANCEL", "shop", now)
        with store.session() as s:  # a row the shop inserted itself: queued by the run
            order_id = s.scalar(select(Order.id).where(Order.number == "MIX-UNQUEUED"))
            s.execute(delete(InvoiceJob).where(InvoiceJob.order_id == order_id))
        recorder.clear()
        calls_before = running.app.counters.total()

        with job_run(store, invoices.JOB, conn, dry_run=True) as ctx:
            plan = invoices.post_invoices(ctx)
        assert recorder == [] and running.app.counters.total() == calls_before  # no call

        real = run_post(store, conn)

    planned = {i.number: i.outcome for i in plan.invoices}
    assert planned == {
        "MIX-NEWP": "would_post",
        "MIX-NEWC": "would_post",
        "MIX-READY": "would_post",
        "MIX-LOOK": "would_look_up",
        "MIX-GIVEUP": "would_give_up",
        "MIX-HELD": "would_reject",
        "MIX-UNQUEUED": "would_post",
    }
    assert (plan.due, plan.enqueued) == (7, 1)
    # what the real run did, invoice by invoice
    done = {i.number: i.outcome for i in real.invoices}
    assert done == {
        "MIX-NEWP": "posted",
        "MIX-NEWC": "posted",
        "MIX-READY": "posted",
        "MIX-LOOK": "posted",  # looked up, not found, posted
        "MIX-GIVEUP": "gave_up",
        "MIX-HELD": "invalid",
        "MIX-UNQUEUED": "posted",
    }
    as_done = {"posted": "would_post", "gave_up": "would_give_up", "invalid": "would_reject"}
    looked_up = {n for kind, n in recorder if kind == "find_invoice"}
    assert {n: "would_look_up" if n in looked_up else as_done[o] for n, o in done.items()} == (
        planned
    )
    assert (real.due, real.enqueued) == (plan.due, plan.enqueued)
    # the calls: every look-up, dependency and post the plan listed, and no other
    assert looked_up == {n for n, o in planned.items() if o == "would_look_up"}
    posted = {n for kind, n in recorder if kind == "post"}
    assert posted == {n for n, o in planned.items() if o in ("would_post", "would_look_up")}
    products = {n for kind, n in recorder if kind == "find_product"}
    assert sorted(products) == plan.unlinked_products == ["NEW-MIX-P"]
    assert [n for kind, n in recorder if kind == "create_product"] == ["NEW-MIX-P"]
    customers = {n for kind, n in recorder if kind == "find_customers"}
    assert sorted(customers) == plan.unlinked_customers == ["brand.new@buyer.example"]
    assert [n for kind, n in recorder if kind == "create_customer"] == ["brand.new@buyer.example"]
    assert (real.products_created, real.gave_up, real.rejected) == (1, 1, 1)
