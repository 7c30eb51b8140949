"""What an operator, the shop's own database writes, or an odd but valid provider answer can do
between an invoice job's claim and its commit (issue 16, line 16).

Each scenario runs post-invoices against a simulator while the change happens at the moment it
hurts most: a hook in the simulator (``SandboxApp.on_request``, run as the provider serves a
request) makes the change as the request of interest arrives.

- the shop deletes an order row while its invoice is prepared, or while it is being sent: the
  run goes on with the next order; a sale the provider accepted for the deleted order is named
  (with its id) in the report. Held on main once claim fencing landed; kept as guards.
- ``connections remove --force`` while post-invoices posts: on main the removal went through and
  the run died on the next write (FOREIGN KEY constraint failed), the accepted sale unrecorded.
  Now refused (exit 4) while a run holds a lease on the connection.
- the store restored from a backup taken before an invoice was posted: Xero refuses the number
  ("Invoice # must be unique."); on main that was a refusal (merchant emailed, retried for a week).
  Now looked up and recorded as posted. (Unleashed finds its own order by the Guid derived from
  the key and held on main. Lightspeed has no unique reference: see the report.)
- the shop renumbers an order after a post of it got no clear answer: on main the look-up by the
  new number missed and Lightspeed got a second sale. Now the number the job was queued under
  (read back from its key) is looked up too; when the key holds only a digest, the order is held
  for someone to check the provider.
- a product created at sale time whose answer is lost: found by its code next run, created once.
  Held on main; kept as a guard.
- the shop deletes a posted order's row and inserts it again (an "update" done as delete +
  insert), through the tables or ``invoices add``: on main Lightspeed got a second sale. Now the
  posted invoice is remembered as an ``invoice`` link and the order is looked up first.
- the host's clock ran fast and was set back: on main ``--all`` took the last run (ended "in the
  future") as this round's and skipped the connection for hours. A run that ended more than a
  minute ahead of the clock no longer counts.
- a customer Lightspeed cannot look up (no email: a name or an account number only) created at
  sale time, its answer lost: on main the next run created a second customer. Now a create of
  such a customer is recorded first (a review item); while it stands the invoice is held for the
  merchant to link the customer created, or to resolve the item (it was not created). Xero
  (unique names) and Unleashed (derived codes) find theirs again: guards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, select

from synccli import registry
from synccli.clock import SimClock
from synccli.errors import LeaseBusy
from synccli.sandbox import harness
from synccli.store.connections import get_connection, remove_connection
from synccli.store.db import Store
from synccli.store.models import (
    Connection,
    Customer,
    InvoiceAttempt,
    InvoiceJob,
    Order,
    OrderLine,
    Run,
)
from synccli.sync import customers, invoices
from synccli.sync.context import job_run
from synccli.sync.customers import link_manual
from synccli.sync.orders import add_orders, line_amounts

pytestmark = pytest.mark.reliability

SCALE = 1000.0
TAX = {p.name: p.sandbox.tax_code for p in registry.providers()}  # 15% in each sandbox
INVOICE_WRITE = {  # (method, path regex) of each provider's invoice write
    "xero": ("PUT", r"/Invoices$"),
    "unleashed": ("POST", r"/SalesOrders/[0-9a-fA-F-]+$"),
    "lightspeed": ("POST", r"/Sale\.json$"),
    "lightspeed-x": ("POST", r"/sales$"),
}
CUSTOMER_WRITE = {
    "xero": ("PUT", r"/Contacts$"),
    "unleashed": ("POST", r"/Customers/[0-9a-fA-F-]+$"),
    "lightspeed": ("POST", r"/Customer\.json$"),
    "lightspeed-x": ("POST", r"/customers$"),
}


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


def connect(store: Store, running: harness.Running, name: str = "shop") -> Connection:
    harness.add_connection(
        store, name, running, notify_email="owner@shop.example", time_scale=SCALE
    )
    return get_connection(store, name)


def world(running: harness.Running) -> Any:
    return running.app.catalogue.tenant(running.app.tenant)


def order(
    running: harness.Running, number: str, customer: dict[str, str] | None = None
) -> dict[str, Any]:
    w = world(running)
    product = sorted(w.products.values(), key=lambda p: p.code)[0]
    known = sorted(w.customers.values(), key=lambda c: c.code)[0]
    amount, tax = line_amounts(Decimal(1), Decimal("10.00"), Decimal("0.15"))
    return {
        "number": number,
        "date": "2026-01-05",
        "currency": "NZD",
        "customer": customer or {"email": known.email, "name": known.name},
        "lines": [
            {
                "sku": product.code,
                "description": product.name,
                "quantity": 1,
                "unit_price": "10.00",
                "tax_code": TAX[running.provider],
                "tax_rate": "0.15",
            }
        ],
        "total": str(amount + tax),
    }


def add(store: Store, conn: Connection, *orders: dict[str, Any]) -> None:
    add_orders(store, conn, "\n".join(json.dumps(o) for o in orders), now=NOW)


NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def run_post(store: Store, conn: Connection, clock: SimClock) -> invoices.PostReport:
    with job_run(store, invoices.JOB, conn, clock=clock) as ctx:
        report = invoices.post_invoices(ctx)
        ctx.counts = report
    return report


def remote_invoices(running: harness.Running) -> list[Any]:
    return list(world(running).invoices.values())


def states(store: Store) -> dict[str, str]:
    with store.session() as s:
        rows = s.execute(select(Order.number, InvoiceJob.state).join(InvoiceJob))
        return {number: state for number, state in rows}


def on_write(running: harness.Running, method: str, path: str, action: Any) -> list[int]:
    """Run ``action()`` once, as the first request ``method path`` reaches the provider."""
    import re

    done: list[int] = []

    def hook(req: Any, endpoint: str) -> None:
        if not done and req.method == method and re.search(path, req.path):
            done.append(1)
            action()

    running.app.on_request.append(hook)
    return done


def delete_order(store: Store, number: str) -> None:
    """The shop deletes an order row (the documented tables are the shop's)."""
    with store.session() as s:
        order_id = s.scalar(select(Order.id).where(Order.number == number))
        s.execute(delete(OrderLine).where(OrderLine.order_id == order_id))
        s.execute(delete(Order).where(Order.id == order_id))


# --- the shop deletes an order while its invoice is in flight ---------------------------------
@pytest.mark.parametrize("provider", [p for p in registry.suite_names() if p != "xero"])
def test_order_deleted_by_the_shop_while_its_invoice_is_prepared_is_skipped_and_the_run_goes_on(
    store: Store, provider: str
) -> None:
    clock = SimClock(NOW)
    with sandbox(provider, clock=clock) as running:
        conn = connect(store, running)
        add(store, conn, order(running, "GONE-1"), order(running, "KEEP-1"))
        method, path = INVOICE_WRITE[provider]
        # the first call of the run (the product/customer look-up) is where the shop deletes it
        fired = on_write(running, "GET", r".", lambda: delete_order(store, "GONE-1"))
        report = run_post(store, conn, clock)
        assert fired
        assert states(store) == {"KEEP-1": "posted"}
        assert [i.number for i in remote_invoices(running)] == ["KEEP-1"]
        assert report.posted == 1


@pytest.mark.parametrize("provider", [p for p in registry.suite_names() if p != "xero"])
def test_order_deleted_by_the_shop_while_its_invoice_is_sent_is_reported_and_the_run_goes_on(
    store: Store, provider: str
) -> None:
    clock = SimClock(NOW)
    with sandbox(provider, clock=clock) as running:
        conn = connect(store, running)
        add(store, conn, order(running, "GONE-1"), order(running, "KEEP-1"))
        method, path = INVOICE_WRITE[provider]
        fired = on_write(running, method, path, lambda: delete_order(store, "GONE-1"))
        report = run_post(store, conn, clock)
        assert fired
        assert states(store) == {"KEEP-1": "posted"}
        numbers = sorted(i.number for i in remote_invoices(running))
        assert numbers == ["GONE-1", "KEEP-1"]  # the provider had it already
        # the provider's id of the sale whose order is gone is in the report, for the operator
        remote = next(i for i in remote_invoices(running) if i.number == "GONE-1")
        gone = [i for i in report.invoices if i.number == "GONE-1"]
        ids = {str(getattr(remote, k)) for k in ("id", "seq") if getattr(remote, k, None)}
        assert gone and any(i in (gone[0].error or "") for i in ids), gone


# --- the operator removes the connection during a run ------------------------------------------
def test_connection_removed_while_a_run_posts_is_refused_until_the_run_ends(store: Store) -> None:
    clock = SimClock(datetime.now(UTC))  # `connections remove` reads the wall clock
    with sandbox("lightspeed", clock=clock) as running:
        conn = connect(store, running)
        add(store, conn, order(running, "A-1"), order(running, "A-2"))
        refused: list[BaseException] = []

        def remove() -> None:
            try:
                remove_connection(store, "shop", force=True)
            except LeaseBusy as err:
                refused.append(err)

        method, path = INVOICE_WRITE["lightspeed"]
        on_write(running, method, path, remove)
        report = run_post(store, conn, clock)
        assert refused, "connections remove --force went through while the run was posting"
        assert "post-invoices" in str(refused[0])
        assert report.posted == 2
        assert states(store) == {"A-1": "posted", "A-2": "posted"}
        assert remove_connection(store, "shop") == 0  # after the run, it goes


# --- the store is restored from last night's backup ----------------------------------------------
def _restore_backup_of(store: Store, number: str) -> None:
    """The job as a backup taken before it was posted holds it: pending, no remote id."""
    with store.session() as s:
        job = s.scalar(select(InvoiceJob).join(Order).where(Order.number == number))
        assert job is not None and job.state == "posted"
        job.state, job.remote_id, job.remote_total, job.posted_at = "pending", None, None, None
        job.next_attempt_at, job.maybe_sent = NOW, False
        s.execute(delete(InvoiceAttempt).where(InvoiceAttempt.job_id == job.id))


@pytest.mark.parametrize("provider", [p for p in registry.suite_names() if p != "lightspeed"])
def test_store_restored_from_a_backup_finds_the_invoice_the_provider_says_exists(
    store: Store, provider: str
) -> None:
    """The provider refuses the number as taken ("Invoice # must be unique." / "Order number
    'X' already exists"): the invoice is ours, posted before the backup was restored. It is
    looked up and recorded as posted; the merchant is not told a refusal."""
    clock = SimClock(NOW)
    with sandbox(provider, clock=clock) as running:
        conn = connect(store, running)
        add(store, conn, order(running, "WEB-1"), order(running, "WEB-2"))  # one Xero batch
        assert run_post(store, conn, clock).posted == 2
        with store.session() as s:
            first_ids = set(s.scalars(select(InvoiceJob.remote_id)))
        _restore_backup_of(store, "WEB-1")
        _restore_backup_of(store, "WEB-2")
        clock.advance(days=1)  # long past any idempotency replay window
        report = run_post(store, conn, clock)
        assert states(store) == {"WEB-1": "posted", "WEB-2": "posted"}, report.invoices
        assert report.rejected == 0 and report.emails == 0
        assert len(remote_invoices(running)) == 2
        with store.session() as s:
            assert set(s.scalars(select(InvoiceJob.remote_id))) == first_ids


# --- helpers for the shop's own rows ----------------------------------------------------------
def insert_order(store: Store, conn: Connection, o: dict[str, Any]) -> None:
    """The shop inserts an order straight into the documented tables."""
    with store.session() as s:
        row = Order(
            connection_id=conn.id,
            number=o["number"],
            date=NOW,
            currency="NZD",
            customer_email=o["customer"].get("email"),
            customer_account=o["customer"].get("account_number"),
            customer_name=o["customer"].get("name"),
            total=Decimal(o["total"]),
            created_at=NOW,
        )
        row.lines = [
            OrderLine(
                line_no=i + 1,
                sku=ln["sku"],
                description=ln["description"],
                quantity=Decimal(ln["quantity"]),
                unit_price=Decimal(ln["unit_price"]),
                tax_code=ln["tax_code"],
                tax_rate=Decimal(ln["tax_rate"]),
            )
            for i, ln in enumerate(o["lines"])
        ]
        s.add(row)


# --- the shop renumbers an order after a post of it got no clear answer ---------------------------
def _renumber(store: Store, number: str, new: str) -> None:
    with store.session() as s:
        o = s.scalar(select(Order).where(Order.number == number))
        assert o is not None
        o.number = new


@pytest.mark.parametrize("provider", registry.suite_names())
def test_order_renumbered_after_a_lost_answer_is_found_under_its_first_number(
    store: Store, provider: str
) -> None:
    """The sale was made, its answer lost; the shop then renumbers the order (WEB-1 ->
    WEB-1-R). The look-up by the new number misses; on main Lightspeed got a second sale."""
    clock = SimClock(NOW)
    with sandbox(provider, clock=clock) as running:
        conn = connect(store, running)
        add(store, conn, order(running, "WEB-1"))
        method, path = INVOICE_WRITE[provider]
        running.app.faults.add("lost", 1.0, method=method, path=path, times=1)
        run_post(store, conn, clock)
        running.app.faults.clear()
        assert len(remote_invoices(running)) == 1
        _renumber(store, "WEB-1", "WEB-1-R")
        clock.advance(days=1)  # past any idempotency replay window
        report = run_post(store, conn, clock)
        assert len(remote_invoices(running)) == 1, report.invoices
        assert states(store) == {"WEB-1-R": "posted"}, report.invoices


def test_order_renumbered_after_a_lost_answer_whose_first_number_is_unknown_is_held(
    store: Store,
) -> None:
    """A number the job's key holds only as a digest (it has a space): the first number cannot
    be looked up, so the order is held for someone to check the provider, never sent twice."""
    clock = SimClock(NOW)
    with sandbox("lightspeed", clock=clock) as running:
        conn = connect(store, running)
        add(store, conn, order(running, "WEB 1"))
        method, path = INVOICE_WRITE["lightspeed"]
        running.app.faults.add("lost", 1.0, method=method, path=path, times=1)
        run_post(store, conn, clock)
        running.app.faults.clear()
        _renumber(store, "WEB 1", "WEB-1")
        report = run_post(store, conn, clock)
        assert len(remote_invoices(running)) == 1, report.invoices
        assert states(store) == {"WEB-1": "failed"}
        (held,) = report.invoices
        assert "renumbered" in (held.error or "")


PRODUCT_WRITE = {
    "xero": ("PUT", r"/Items$"),
    "unleashed": ("POST", r"/Products/[0-9a-fA-F-]+$"),
    "lightspeed": ("POST", r"/Item\.json$"),
    "lightspeed-x": ("POST", r"/products$"),
}


@pytest.mark.parametrize("provider", registry.suite_names())
def test_product_created_at_sale_time_whose_answer_is_lost_is_created_once(
    store: Store, provider: str
) -> None:
    """The product a sale needs is created, its answer lost: the next run finds it by its code
    and links it, no second product. Held on main."""
    clock = SimClock(NOW)
    with sandbox(provider, clock=clock) as running:
        conn = connect(store, running)
        o = order(running, "WEB-1")
        o["lines"][0]["sku"] = "NEW-SKU-1"
        add(store, conn, o)
        method, path = PRODUCT_WRITE[provider]
        running.app.faults.add("lost", 1.0, method=method, path=path, times=1)
        run_post(store, conn, clock)
        running.app.faults.clear()
        clock.advance(hours=1)
        run_post(store, conn, clock)
        w = world(running)
        codes = [p.code for p in w.products.values() if p.code == "NEW-SKU-1"]
        assert len(codes) == 1 and states(store) == {"WEB-1": "posted"}


# --- a customer the provider cannot look up, created with a lost answer ---------------------------
@pytest.mark.parametrize(
    ("provider", "customer"),
    [
        ("lightspeed", {"name": "Walk In Buyer"}),
        ("lightspeed", {"account_number": "ACC-WALK-1", "name": "Walk In Buyer"}),
        ("xero", {"name": "Walk In Buyer"}),
        ("unleashed", {"name": "Walk In Buyer"}),
    ],
    ids=[
        "lightspeed-name-only",
        "lightspeed-account-only",
        "xero-name-only",
        "unleashed-name-only",
    ],
)
def test_customer_the_provider_cannot_look_up_is_not_created_twice_after_a_lost_answer(
    store: Store, provider: str, customer: dict[str, str]
) -> None:
    """An order whose customer has no email (a row the shop inserted, or an account number
    only): Lightspeed cannot look such a customer up (no account-number field). Its create is
    answered but the answer is lost. On main the next run created a second customer. Now the
    invoice is held for the merchant to link the one created (or to say it was not); Xero (unique
    names) and Unleashed (codes derived from the customer) find theirs again."""
    clock = SimClock(NOW)
    with sandbox(provider, clock=clock) as running:
        conn = connect(store, running)
        insert_order(store, conn, order(running, "WEB-1", customer))
        method, path = CUSTOMER_WRITE[provider]
        running.app.faults.add("lost", 1.0, method=method, path=path, times=1)
        run_post(store, conn, clock)
        running.app.faults.clear()
        clock.advance(hours=1)
        with store.session() as s:  # due now (a transient failure waits for the next run)
            for job in s.scalars(select(InvoiceJob)):
                job.next_attempt_at = clock.now()
        second = run_post(store, conn, clock)
        w = world(running)
        created = [c for c in w.customers.values() if "Walk In" in (c.name or "")]
        assert len(created) == 1, [c.name for c in created]
        if provider != "lightspeed":
            assert states(store) == {"WEB-1": "posted"}
            return
        assert states(store) == {"WEB-1": "failed"}
        (held,) = second.invoices
        assert "customers link" in (held.error or "")
        # the merchant links the customer that was created: the invoice goes out on its retry
        with store.session() as s:
            local_id = s.scalar(select(Customer.id).where(Customer.name == "Walk In Buyer"))
        link_manual(store, conn, str(local_id), str(created[0].seq), clock.now(), force=True)
        with store.session() as s:
            for job in s.scalars(select(InvoiceJob)):
                job.next_attempt_at = clock.now()
        run_post(store, conn, clock)
        assert states(store) == {"WEB-1": "posted"}
        assert len([c for c in w.customers.values() if "Walk In" in (c.name or "")]) == 1


def test_customer_create_that_failed_unclearly_is_created_once_the_merchant_says_it_is_not_there(
    store: Store,
) -> None:
    """Lightspeed answers the create with a 500 (nothing was made, but a 500 does not say so):
    the invoice is held; the merchant finds no such customer and resolves the review item; the
    next run creates it, once."""
    clock = SimClock(NOW)
    with sandbox("lightspeed", clock=clock) as running:
        conn = connect(store, running)
        insert_order(store, conn, order(running, "WEB-1", {"name": "Walk In Buyer"}))
        method, path = CUSTOMER_WRITE["lightspeed"]
        running.app.faults.add("500", 1.0, method=method, path=path, times=1)
        run_post(store, conn, clock)
        running.app.faults.clear()
        held = run_post(store, conn, clock)
        assert states(store) == {"WEB-1": "failed"}, held.invoices
        review = customers.review(store, conn)
        (item,) = [e for e in review.ambiguous if e.kind == customers.UNANSWERED]
        assert customers.resolve_items(store, conn, [item.id], clock.now()) == 1
        with store.session() as s:
            for job in s.scalars(select(InvoiceJob)):
                job.next_attempt_at = clock.now()
        run_post(store, conn, clock)
        assert states(store) == {"WEB-1": "posted"}
        created = [c for c in world(running).customers.values() if c.name == "Walk In Buyer"]
        assert len(created) == 1


# --- the shop's integration updates an order by deleting and inserting it again -------------------
@pytest.mark.parametrize(
    ("provider", "how"),
    [
        ("lightspeed", "tables"),
        ("lightspeed", "invoices add"),
        ("xero", "tables"),
        ("unleashed", "tables"),
    ],
)
def test_order_deleted_and_inserted_again_after_it_was_posted_is_not_posted_twice(
    store: Store, provider: str, how: str
) -> None:
    """The shop's integration "updates" an order by deleting its row and inserting it again; the
    invoice job (and every attempt) went with the row. On main Lightspeed got a second sale. Now
    a posted invoice is remembered apart from the order (an ``invoice`` link), and an order
    queued again under its number is looked up before it is posted."""
    clock = SimClock(NOW)
    with sandbox(provider, clock=clock) as running:
        conn = connect(store, running)
        o = order(running, "WEB-1")
        insert_order(store, conn, o)
        assert run_post(store, conn, clock).posted == 1
        delete_order(store, "WEB-1")  # the invoice job goes with it (ON DELETE CASCADE)
        if how == "tables":
            insert_order(store, conn, o)
        else:
            add(store, conn, o)
        clock.advance(days=1)
        report = run_post(store, conn, clock)
        assert len(remote_invoices(running)) == 1, report.invoices
        assert states(store) == {"WEB-1": "posted"}


# --- the host's clock is set back -------------------------------------------------------------
def test_all_is_not_skipped_for_hours_after_the_clock_was_set_back(store: Store, cli) -> None:
    """The host's clock ran three hours fast and NTP set it back. The last post-invoices run
    ended, by its row, three hours "from now". On main every ``--all`` run took that as this
    round's run and skipped the connection until the clock caught up: no invoice for hours."""
    with sandbox("lightspeed") as running:
        conn = connect(store, running)
        add(store, conn, order(running, "WEB-1"))
        ahead = datetime.now(UTC) + timedelta(hours=3)
        with store.session() as s:
            s.add(
                Run(
                    job=invoices.JOB,
                    connection_id=conn.id,
                    started_at=ahead - timedelta(seconds=5),
                    ended_at=ahead,
                    outcome="ok",
                    counts={},
                    calls=0,
                )
            )
        result = cli("post-invoices", "--all")
        assert result.exit_code == 0, result.stderr
        assert states(store) == {"WEB-1": "posted"}, result.stdout
