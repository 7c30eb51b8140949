"""Issue: invoices out. ``post-invoices`` against every provider.

The job's logic at volume and under faults runs against the fake provider (tests/fakes.py), lent
each provider's capabilities (Xero's batches of 50, idempotency keys where honoured, numbers a
provider refuses twice); the rest, and a post found again after a crash for every provider, run
against the sandboxes over real HTTP.

Acceptance lines (each test name says which):
- 200 orders, 30% with a new product, 20% with a new customer -> 200 posted, every missing product
  and customer created once, totals match:           test_200_orders_post_with_created_dependencies
- lost responses on 10% of invoice writes and 500s on 10% of all calls -> repeated runs post every
  order exactly once:                                 test_faults_repeated_runs_post_exactly_once
- a rejected tax code: one email naming the order and the provider's message (real SMTP), retries
  on schedule (SimClock), gives up after the configured age with one final email: two in all:
                                                      test_rejected_invoice_emails_retries_and_gives_up
- two post-invoices processes against PostgreSQL post each invoice once:
                                                      test_two_cli_processes_on_postgres_post_once
(`invoices add` with line 3 lacking its SKU is in tests/test_orders.py.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fakes import FakeProvider
from sqlalchemy import func, select, text

from synccli import registry
from synccli.clock import SimClock
from synccli.connectors.base import InvoiceDraft, InvoiceLine
from synccli.errors import BudgetExhausted, ExitCode, TransientError
from synccli.sandbox import harness
from synccli.store.connections import get_connection, set_values
from synccli.store.db import Store
from synccli.store.models import (
    ApiCall,
    Connection,
    Customer,
    InvoiceAttempt,
    InvoiceJob,
    Link,
    Notification,
    Order,
    OrderLine,
    ReviewItem,
    Run,
)
from synccli.sync import invoices
from synccli.sync.context import job_run
from synccli.sync.orders import add_orders, line_amounts

PROVIDERS = registry.suite_names()
SCALE = 1000.0  # sandbox limit windows and client pacing run this much faster than real time
TAX = {p.name: p.sandbox.tax_code for p in registry.providers()}  # 15% in each sandbox
ROOT = Path(__file__).resolve().parents[1]


# --- sandbox and orders -------------------------------------------------------------------------
@contextmanager
def sandbox(provider: str, **kw: Any) -> Iterator[harness.Running]:
    kw.setdefault("time_scale", SCALE)
    kw.setdefault("products", 40)
    kw.setdefault("customers", 20)
    running = harness.start(provider, **kw)
    try:
        yield running
    finally:
        running.stop()


def connect(
    store: Store, running: harness.Running, name: str = "shop", **settings: Any
) -> Connection:
    harness.add_connection(
        store, name, running, notify_email="owner@shop.example", time_scale=SCALE, **settings
    )
    return get_connection(store, name)


def fake_account(provider: str, store: Store, **settings: Any) -> tuple[FakeProvider, Connection]:
    """A fake account lent ``provider``'s capabilities, with the simulators' 40 products and 20
    customers, and its connection (as ``connect`` makes one)."""
    fake = FakeProvider(provider, products=40, customers=20)
    fake.add_connection(store, "shop", notify_email="owner@shop.example", **settings)
    return fake, get_connection(store, "shop")


def world(running: harness.Running | FakeProvider) -> Any:
    """The provider's account: a simulator's tenant, or the fake provider's."""
    app = running if isinstance(running, FakeProvider) else running.app
    return app.catalogue.tenant(app.tenant)


def remote_invoices(running: harness.Running | FakeProvider) -> list[Any]:
    return list(world(running).invoices.values())


def order_json(
    number: str,
    customer: dict[str, str],
    lines: list[tuple[str, str, int, str]],
    tax_code: str,
    day: str = "2026-01-05",
) -> dict[str, Any]:
    out_lines, total = [], Decimal("0.00")
    for sku, description, qty, price in lines:
        amount, tax = line_amounts(Decimal(qty), Decimal(price), Decimal("0.15"))
        total += amount + tax
        out_lines.append(
            {
                "sku": sku,
                "description": description,
                "quantity": qty,
                "unit_price": price,
                "tax_code": tax_code,
                "tax_rate": "0.15",
            }
        )
    return {
        "number": number,
        "date": day,
        "currency": "NZD",
        "customer": customer,
        "lines": out_lines,
        "total": str(total),
    }


@dataclass
class Batch:
    orders: list[dict[str, Any]]
    new_skus: set[str]
    new_emails: set[str]

    def jsonl(self) -> str:
        return "\n".join(json.dumps(o) for o in self.orders) + "\n"


def make_orders(
    running: harness.Running | FakeProvider,
    provider: str,
    n: int = 200,
    prefix: str = "WEB",
    new_products: float = 0.3,
    new_customers: float = 0.2,
) -> Batch:
    """n orders: a share with a product the provider lacks (each new SKU in ~3 orders) and a
    share with a new customer (each in ~2 orders); the rest use the sandbox's own records."""
    w = world(running)
    products = sorted(w.products.values(), key=lambda p: p.code)
    customers = sorted(w.customers.values(), key=lambda c: c.code)
    n_new_p, n_new_c = round(n * new_products), round(n * new_customers)
    orders, new_skus, new_emails = [], set(), set()
    for i in range(n):
        known = products[(i * 7) % len(products)]
        lines = [(known.code, known.name, 1 + i % 3, f"{10 + i % 17}.{(i * 37) % 100:02d}")]
        if i % 4 == 0:
            other = products[(i * 11 + 3) % len(products)]
            if other.code != known.code:
                lines.append((other.code, other.name, 2, "4.35"))
        if i < n_new_p:
            sku = f"NEW-{prefix}-{i % max(1, n_new_p // 3):03d}"
            new_skus.add(sku)
            lines.append((sku, f"New product {sku}", 1, "19.99"))
        j = n - 1 - i  # new customers on other orders than new products, mostly
        if j < n_new_c:
            k = j % max(1, n_new_c // 2)
            email = f"new.customer{k}.{prefix.lower()}@buyer.example"
            new_emails.add(email)
            customer = {"email": email, "name": f"New Customer {prefix} {k}"}
        else:
            c = customers[i % len(customers)]
            customer = {"email": c.email, "account_number": c.account_number, "name": c.name}
        orders.append(order_json(f"{prefix}-{i + 1:04d}", customer, lines, TAX[provider]))
    return Batch(orders, new_skus, new_emails)


def run_post(
    store: Store,
    conn: Connection,
    clock: Any = None,
    lease: bool = True,
    limit: int | None = None,
    fake: FakeProvider | None = None,
) -> invoices.PostReport:
    """A post-invoices run, against ``fake`` when given (else the connection's provider)."""
    factory = fake.factory if fake is not None else None
    with job_run(
        store, invoices.JOB, conn, clock=clock, lease=lease, connector_factory=factory
    ) as ctx:
        report = invoices.post_invoices(ctx, limit)
        ctx.counts = report
    return report


def job_states(store: Store, conn: Connection) -> dict[str, int]:
    with store.session() as s:
        rows = s.execute(
            select(InvoiceJob.state, func.count())
            .where(InvoiceJob.connection_id == conn.id)
            .group_by(InvoiceJob.state)
        )
        return dict(rows.all())


def assert_posted_once(
    store: Store, conn: Connection, running: harness.Running | FakeProvider, batch: Batch
) -> None:
    remote = remote_invoices(running)
    numbers = [inv.number for inv in remote]
    assert len(numbers) == len(set(numbers)), "an invoice number was posted twice"
    assert sorted(numbers) == sorted(o["number"] for o in batch.orders)
    totals = {inv.number: Decimal(inv.total) for inv in remote}
    for o in batch.orders:
        assert totals[o["number"]] == Decimal(o["total"]), o["number"]
    assert job_states(store, conn) == {"posted": len(batch.orders)}
    with store.session() as s:
        for job in s.scalars(select(InvoiceJob).where(InvoiceJob.connection_id == conn.id)):
            assert job.remote_total == totals[job.order.number]


# --- acceptance -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("provider", PROVIDERS)
def test_200_orders_post_with_created_dependencies(store: Store, provider: str) -> None:
    fake, conn = fake_account(provider, store)
    running = fake
    batch = make_orders(running, provider, 200)
    customers_before = len(world(running).customers)
    added = add_orders(store, conn, batch.jsonl())
    assert added.added == 200

    report = run_post(store, conn, fake=fake)

    assert report.posted == 200 and report.rejected == 0 and report.transient == 0
    assert_posted_once(store, conn, running, batch)
    assert fake.calls["create_product"] == len(batch.new_skus) == 20
    assert fake.calls["create_customer"] == len(batch.new_emails) == 20
    assert len(world(running).customers) == customers_before + 20
    codes = [p.code for p in world(running).products.values()]
    assert all(codes.count(sku) == 1 for sku in batch.new_skus)
    assert report.products_created == 20
    with store.session() as s:
        reviews = set(
            s.scalars(select(ReviewItem.subject).where(ReviewItem.kind == "created_product"))
        )
        created_links = s.scalar(
            select(func.count())
            .select_from(Link)
            .where(Link.kind == "product", Link.origin == "created")
        )
    assert reviews == batch.new_skus
    assert created_links == 20
    # a second run has nothing to do and makes no call
    calls = fake.total()
    again = run_post(store, conn, fake=fake)
    assert again.due == 0 and fake.total() == calls


@pytest.mark.slow
@pytest.mark.parametrize("provider", PROVIDERS)
def test_faults_repeated_runs_post_exactly_once(store: Store, provider: str) -> None:
    # small batches where the provider takes several invoices a call, so the faults land on
    # many writes
    fake, conn = fake_account(provider, store, invoice_batch=3)
    running = fake
    batch = make_orders(running, provider, 100, prefix="FLT")
    add_orders(store, conn, batch.jsonl())
    lost = fake.fail("lost", ("post_invoice", "post_invoices"), chance=0.1)
    failed = fake.fail("transient", chance=0.1)  # a 500 on any call

    runs = found = 0
    while runs < 30:
        runs += 1
        try:
            report = run_post(store, conn, fake=fake)
            found += report.found
        except TransientError:  # five transient failures in a row stop a run
            pass
        if set(job_states(store, conn)) == {"posted"}:
            break

    assert lost.fired > 0 and failed.fired > 0
    assert_posted_once(store, conn, running, batch)
    products, customers = world(fake).products.values(), world(fake).customers.values()
    assert sorted(p.code for p in products if p.code in batch.new_skus) == sorted(
        batch.new_skus
    )  # each created once
    created = [c.email for c in customers if c.email in batch.new_emails]
    assert sorted(created) == sorted(batch.new_emails)
    with store.session() as s:
        transient = s.scalar(
            select(func.count())
            .select_from(InvoiceAttempt)
            .where(InvoiceAttempt.outcome == "transient")
        )
        attempts_counted = s.scalar(select(func.sum(InvoiceJob.attempts)))
    assert attempts_counted == 0  # transient failures are not held against the merchant
    if provider == "lightspeed":  # no idempotency key: the look-up did the work
        assert transient > 0 and found > 0


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, _Inbox]]:
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


def use_smtp(store: Store, controller: Controller) -> None:
    store.settings.smtp_host = "127.0.0.1"
    store.settings.smtp_port = controller.port
    store.settings.smtp_security = "none"
    store.settings.smtp_from = "synccli@shop.example"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rejected_invoice_emails_retries_and_gives_up(
    store: Store, provider: str, smtp: tuple[Controller, _Inbox]
) -> None:
    controller, inbox = smtp
    use_smtp(store, controller)
    clock = SimClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    with sandbox(provider, clock=clock) as running:
        conn = connect(store, running, retry_schedule="2h,4h,8h,12h,24h", give_up_after="3d")
        w = world(running)
        product = sorted(w.products.values(), key=lambda p: p.code)[0]
        customer = sorted(w.customers.values(), key=lambda c: c.code)[0]
        bad = order_json(
            "BAD-1",
            {"email": customer.email, "name": customer.name},
            [(product.code, product.name, 1, "10.00")],
            "BOGUS",
        )
        good = order_json(
            "OK-1",
            {"email": customer.email, "name": customer.name},
            [(product.code, product.name, 2, "10.00")],
            TAX[provider],
        )
        add_orders(store, conn, json.dumps(bad) + "\n" + json.dumps(good), now=clock.now())
        start = clock.now()

        first = run_post(store, conn, clock)
        assert first.posted == 1 and first.rejected == 1
        assert len(inbox.messages) == 1
        mail = inbox.messages[0]
        body = mail.content.decode()
        assert mail.rcpt_tos == ["owner@shop.example"]
        assert "BAD-1" in body and "BOGUS" in body
        assert "synccli invoices retry BAD-1" in body
        with store.session() as s:
            job = s.scalar(select(InvoiceJob).join(Order).where(Order.number == "BAD-1"))
            provider_message = job.last_error
        assert provider_message and provider_message.split(";")[0].strip()[:40] in body

        # between retries nothing is due, and nothing is called
        clock.advance(hours=1)
        calls = running.app.counters.total()
        assert run_post(store, conn, clock).due == 0
        assert running.app.counters.total() == calls

        seen_at = [start]
        while True:
            with store.session() as s:
                job = s.scalar(select(InvoiceJob).join(Order).where(Order.number == "BAD-1"))
            if job.state == "gave_up":
                break
            assert job.state == "failed"
            clock.set(job.next_attempt_at)
            seen_at.append(clock.now())
            run_post(store, conn, clock)
            assert len(seen_at) < 20

        gaps = [(b - a) / timedelta(hours=1) for a, b in zip(seen_at, seen_at[1:], strict=False)]
        assert gaps == [2, 4, 8, 12, 24, 22]  # the last one is cut at the 3-day limit
        assert seen_at[-1] - start == timedelta(days=3)
        assert job.attempts == len(seen_at)
        assert len(inbox.messages) == 2
        final = inbox.messages[1].content.decode()
        assert "gave up posting invoice BAD-1" in final or "stopped trying" in final
        assert "BAD-1" in final
        # a given-up job is not retried by the schedule
        clock.advance(days=2)
        assert run_post(store, conn, clock).due == 0
        with store.session() as s:
            outcomes = list(
                s.scalars(
                    select(InvoiceAttempt.outcome)
                    .join(InvoiceJob)
                    .join(Order)
                    .where(Order.number == "BAD-1")
                )
            )
            emails = s.scalar(select(func.count()).select_from(Notification))
        assert outcomes == ["rejected"] * len(seen_at)
        assert emails == 2
        numbers = [i.number for i in remote_invoices(running)]
        assert numbers == ["OK-1"]


def _cli_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env["SYNC_DATA_DIR"] = str(data_dir)
    env["SYNC_DATABASE_URL"] = os.environ["SYNC_DATABASE_URL"]
    return env


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("provider", PROVIDERS)
def test_two_cli_processes_on_postgres_post_once(
    pg_store: Store, provider: str, _isolated_env: Path
) -> None:
    with sandbox(provider) as running:
        conn = connect(pg_store, running)
        batch = make_orders(running, provider, 60, prefix="PG")
        add_orders(pg_store, conn, batch.jsonl())
        cmd = [sys.executable, "-m", "synccli", "post-invoices", "--connection", "shop", "--json"]
        env = _cli_env(_isolated_env)
        procs = [
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        results = [p.communicate(timeout=240) for p in procs]
        codes = [p.returncode for p in procs]
        print("exit codes", codes)
        # Both drain the queue, or one finds the job's lease taken (exit 4): never a double post.
        assert set(codes) <= {0, int(ExitCode.BUSY)} and 0 in codes, results
        assert_posted_once(pg_store, conn, running, batch)
        assert running.app.counters.creates["product"] == len(batch.new_skus)
        assert running.app.counters.creates["customer"] == len(batch.new_emails)
        assert running.app.counters.creates["customer"] == len(batch.new_emails)


# --- concurrency inside the library (no lease): the claim alone prevents double posts -------------
def _drain_concurrently(
    store: Store, conn: Connection, workers: int = 2, fake: FakeProvider | None = None
) -> list[Any]:
    results: list[Any] = []
    barrier = threading.Barrier(workers)

    def work() -> None:
        barrier.wait()
        try:
            results.append(run_post(store, conn, lease=False, fake=fake))
        except Exception as exc:  # pragma: no cover - shown by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return results


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p != "unleashed"])
def test_two_workers_share_the_queue_on_sqlite(store: Store, provider: str) -> None:
    fake, conn = fake_account(provider, store)
    running = fake
    batch = make_orders(running, provider, 40, prefix="TW")
    add_orders(store, conn, batch.jsonl())
    results = _drain_concurrently(store, conn, fake=fake)
    assert all(isinstance(r, invoices.PostReport) for r in results), results
    assert sum(r.posted for r in results) == 40
    assert_posted_once(store, conn, running, batch)
    assert fake.calls["create_product"] == len(batch.new_skus)
    assert fake.calls["create_customer"] == len(batch.new_emails)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_share_the_queue_on_postgres(pg_store: Store) -> None:
    with sandbox("lightspeed") as running:
        conn = connect(pg_store, running)
        batch = make_orders(running, "lightspeed", 40, prefix="TP")
        add_orders(pg_store, conn, batch.jsonl())
        # One run first, so the connection's budget row exists: two first-ever calls of a
        # connection racing to insert it is a ledger bug reported separately.
        run_post(pg_store, conn, limit=1)
        results = _drain_concurrently(pg_store, conn)
        assert all(isinstance(r, invoices.PostReport) for r in results), results
        assert sum(r.posted for r in results) == 39
        assert all(r.posted > 0 for r in results), "both workers took jobs"
        assert_posted_once(pg_store, conn, running, batch)
        assert running.app.counters.creates["product"] == len(batch.new_skus)
        assert running.app.counters.creates["customer"] == len(batch.new_emails)


# --- exactly once around crashes ------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_crash_after_post_is_found_not_posted_again(store: Store, provider: str) -> None:
    """A run that died after its post reached the provider leaves the job in ``posting`` (it was
    committed before the call). The next run looks the invoice up and records it."""
    with sandbox(provider) as running:
        conn = connect(store, running)
        batch = make_orders(running, provider, 3, prefix="CR", new_products=0, new_customers=0)
        add_orders(store, conn, batch.jsonl())
        # What the crashed run did: link the customer and products, mark posting, post.
        with job_run(store, invoices.JOB, conn) as ctx:
            with store.session() as s:
                order = s.scalar(select(Order).where(Order.number == "CR-0001"))
                job = s.scalar(select(InvoiceJob).where(InvoiceJob.order_id == order.id))
                lines = list(order.lines)
                job.state = "posting"
                key = job.idempotency_key
            customer_id = invoices.ensure_customer(ctx, order)
            draft = InvoiceDraft(
                number=order.number,
                date=order.date,
                currency=order.currency,
                customer_remote_id=customer_id,
                total=order.total,
                reference=order.number,
                lines=[
                    InvoiceLine(
                        product_remote_id=invoices.ensure_product(ctx, ln).remote_id,
                        code=ln.sku,
                        description=ln.description,
                        quantity=ln.quantity,
                        unit_price=ln.unit_price,
                        tax_code=ln.tax_code,
                        tax_rate=ln.tax_rate,
                    )
                    for ln in lines
                ],
            )
            ctx.connector.post_invoice(draft, key)
        assert len(remote_invoices(running)) == 1

        report = run_post(store, conn)

        assert report.found == 1 and report.posted == 2
        assert_posted_once(store, conn, running, batch)
        detail = invoices.show_invoice(store, "CR-0001")
        assert [a.outcome for a in detail.history] == ["found"]
        assert "look up" in (detail.history[0].summary or "")


def test_posting_job_not_at_provider_is_posted_once(store: Store) -> None:
    with sandbox("lightspeed") as running:
        conn = connect(store, running)
        batch = make_orders(running, "lightspeed", 1, prefix="NP", new_products=0, new_customers=0)
        add_orders(store, conn, batch.jsonl())
        with store.session() as s:
            s.execute(text("UPDATE invoice_jobs SET state = 'posting'"))
        report = run_post(store, conn)
        assert report.posted == 1 and report.found == 0
        assert running.app.counters.total("GET", "Sale") >= 1  # it looked first
        assert_posted_once(store, conn, running, batch)
        history = invoices.show_invoice(store, "NP-0001").history
        assert [a.outcome for a in history] == ["posted"]
        assert history[0].summary.startswith("looked up invoice NP-0001: not found; post invoice")


# --- other outcomes -------------------------------------------------------------------------------
def test_budget_exhausted_postpones_without_an_attempt(store: Store, cli) -> None:
    with sandbox("xero", limits={"per_day": 6}) as running:
        conn = connect(store, running)
        batch = make_orders(running, "xero", 5, prefix="BU", new_products=0, new_customers=0)
        add_orders(store, conn, batch.jsonl())
        result = cli("post-invoices", "--connection", "shop")
        assert result.exit_code == ExitCode.BUDGET == 3
        assert "budget" in result.stderr
        assert "Traceback" not in result.stderr
        with store.session() as s:
            jobs = list(s.scalars(select(InvoiceJob)))
            postponed = [j for j in jobs if j.state != "posted"]
            budget_attempts = s.scalar(
                select(func.count())
                .select_from(InvoiceAttempt)
                .where(InvoiceAttempt.outcome == "budget")
            )
            run = s.scalar(select(Run).order_by(Run.id.desc()))
        assert postponed, "the day's budget ran out before every invoice was posted"
        assert all(j.attempts == 0 for j in jobs)
        assert budget_attempts == 1
        tomorrow = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        assert any(j.next_attempt_at >= tomorrow for j in postponed)
        assert run.outcome == "budget"
        # the next run before the reset makes no call at all
        calls = running.app.counters.total()
        again = cli("post-invoices", "--connection", "shop")
        assert again.exit_code in (0, 3)
        assert running.app.counters.total() == calls


def test_reauth_needed_flags_connection_and_emails_once(store: Store, cli) -> None:
    with sandbox("unleashed") as running:
        conn = connect(store, running)
        batch = make_orders(running, "unleashed", 3, prefix="RA", new_products=0, new_customers=0)
        add_orders(store, conn, batch.jsonl())
        set_values(store, "shop", {"api_key": "not-the-key-0123456789"})
        first = cli("post-invoices", "--connection", "shop")
        second = cli("post-invoices", "--connection", "shop")
        assert first.exit_code == second.exit_code == ExitCode.REAUTH == 5
        assert "not-the-key" not in first.stderr + first.stdout
        conn = get_connection(store, "shop")
        assert conn.needs_reauth
        with store.session() as s:
            notes = list(s.scalars(select(Notification)))
            attempts = s.scalar(select(func.sum(InvoiceJob.attempts)))
        # An Unleashed key cannot be re-authorised: the email asks for the key to be entered again.
        assert len(notes) == 1 and "refuses the API key" in notes[0].subject
        assert attempts == 0
        assert job_states(store, conn) == {"pending": 3}
        eml = list((store.settings.outbox_dir or Path()).glob("*.eml"))
        assert len(eml) == 1
        assert "not-the-key" not in eml[0].read_text()


def test_orders_inserted_into_tables_are_enqueued_and_posted(store: Store) -> None:
    """The documented tables (docs/orders.md) accept rows straight from the shop."""
    with sandbox("unleashed") as running:
        conn = connect(store, running)
        w = world(running)
        product = sorted(w.products.values(), key=lambda p: p.code)[0]
        customer = sorted(w.customers.values(), key=lambda c: c.code)[0]
        now = datetime.now(UTC)
        with store.session() as s:
            order = Order(
                connection_id=conn.id,
                number="SQL-1",
                date=now,
                currency="NZD",
                customer_email=customer.email,
                customer_name=customer.name,
                total=Decimal("23.00"),
                created_at=now,
            )
            order.lines = [
                OrderLine(
                    line_no=1,
                    sku=product.code,
                    description="two",
                    quantity=Decimal(2),
                    unit_price=Decimal("10.00"),
                    tax_code="G.S.T.",
                    tax_rate=Decimal("0.15"),
                )
            ]
            local = Customer(connection_id=conn.id, name=customer.name, email=customer.email)
            s.add_all([order, local])
            s.flush()
            order.customer_id = local.id
        report = run_post(store, conn)
        assert report.enqueued == 1 and report.posted == 1
        assert [i.number for i in remote_invoices(running)] == ["SQL-1"]
        with store.session() as s:
            key = s.scalar(select(InvoiceJob.idempotency_key))
        assert key == "synccli:shop:SQL-1"


def test_order_row_with_wrong_total_is_rejected_locally(store: Store) -> None:
    with sandbox("xero") as running:
        conn = connect(store, running)
        now = datetime.now(UTC)
        with store.session() as s:
            order = Order(
                connection_id=conn.id,
                number="SQL-BAD",
                date=now,
                currency="NZD",
                customer_email="x@y.example",
                customer_name="X",
                total=Decimal("99"),
                created_at=now,
            )
            order.lines = [
                OrderLine(
                    line_no=1,
                    sku="SKU-00001",
                    description="one",
                    quantity=Decimal(1),
                    unit_price=Decimal("10.00"),
                )
            ]
            s.add(order)
        calls = running.app.counters.total()
        report = run_post(store, conn)
        assert report.rejected == 1 and running.app.counters.total() == calls
        detail = invoices.show_invoice(store, "SQL-BAD")
        assert detail.invoice.state == "failed"
        assert "does not match" in (detail.invoice.last_error or "")
        assert detail.history[0].outcome == "invalid"


def test_dry_run_writes_nothing_and_calls_nothing(store: Store, cli) -> None:
    with sandbox("xero") as running:
        conn = connect(store, running)
        batch = make_orders(running, "xero", 4, prefix="DRY")
        add_orders(store, conn, batch.jsonl())

        def snapshot() -> dict[str, int]:
            with store.session() as s:
                return {
                    t: s.scalar(text(f"SELECT count(*) FROM {t}"))
                    for t in (
                        "invoice_jobs",
                        "invoice_attempts",
                        "runs",
                        "links",
                        "products",
                        "customers",
                        "api_calls",
                        "notifications",
                        "review_items",
                        "leases",
                    )
                }

        before = snapshot()
        calls = running.app.counters.total()
        result = cli("post-invoices", "--connection", "shop", "--dry-run")
        assert result.exit_code == 0, result.stderr
        assert "would post 4 invoice(s)" in result.stdout
        assert "NEW-DRY" in result.stdout
        assert snapshot() == before
        assert running.app.counters.total() == calls
        as_json = cli("post-invoices", "--connection", "shop", "--dry-run", "--json")
        report = json.loads(as_json.stdout)[0]["report"]
        assert report["dry_run"] is True and report["due"] == 4


def test_list_show_retry_cancel(store: Store, cli) -> None:
    with sandbox("xero") as running:
        conn = connect(store, running)
        w = world(running)
        product = sorted(w.products.values(), key=lambda p: p.code)[0]
        customer = sorted(w.customers.values(), key=lambda c: c.code)[0]
        who = {"email": customer.email, "name": customer.name}
        orders = [
            order_json("L-1", who, [(product.code, "ok", 1, "5.00")], "OUTPUT2"),
            order_json("L-2", who, [(product.code, "bad tax", 1, "5.00")], "BOGUS"),
            order_json("L-3", who, [(product.code, "to cancel", 1, "5.00")], "OUTPUT2"),
        ]
        add_orders(store, conn, "\n".join(json.dumps(o) for o in orders))
        assert cli("invoices", "cancel", "L-3").exit_code == 0
        post = cli("post-invoices", "-c", "shop")
        assert post.exit_code == 0, post.stderr
        assert "rejected invoice L-2" in post.stderr

        listed = json.loads(cli("invoices", "list", "--json").stdout)
        assert {r["number"]: r["state"] for r in listed} == {
            "L-1": "posted",
            "L-2": "failed",
            "L-3": "cancelled",
        }
        failed = cli("invoices", "list", "--state", "failed")
        assert "L-2" in failed.stdout and "L-1" not in failed.stdout
        assert cli("invoices", "list", "--state", "nope").exit_code == 2

        shown = json.loads(cli("invoices", "show", "L-2", "--json").stdout)
        assert shown["history"][0]["outcome"] == "rejected"
        assert "BOGUS" in shown["history"][0]["error"]
        assert "post invoice L-2" in shown["history"][0]["summary"]
        text_view = cli("invoices", "show", "L-2")
        assert "attempts" in text_view.stdout and "BOGUS" in text_view.stdout

        assert cli("invoices", "retry", "L-1").exit_code == 2  # already posted
        assert cli("invoices", "cancel", "L-1").exit_code == 2
        assert cli("invoices", "show", "NOPE").exit_code == 2
        retried = cli("invoices", "retry", "L-2")
        assert retried.exit_code == 0 and "due now" in retried.stdout
        row = invoices.show_invoice(store, "L-2").invoice
        assert row.state == "pending" and row.attempts == 0
        assert row.next_attempt_at <= datetime.now(UTC)
        # un-cancel by retry, then post
        assert cli("invoices", "retry", "L-3").exit_code == 0
        cli("post-invoices", "-c", "shop")
        assert sorted(i.number for i in remote_invoices(running)) == ["L-1", "L-3"]


def test_posting_settings_are_checked_before_any_call(store: Store, cli) -> None:
    with sandbox("xero") as running:
        connect(store, running, retry_schedule="2h,soon")
        connect(store, running, name="shop2", due_days="soon")
        for name, setting in (("shop", "retry_schedule"), ("shop2", "due_days")):
            result = cli("post-invoices", "-c", name)
            assert result.exit_code == ExitCode.USAGE
            assert f"setting {setting}" in result.stderr
        assert running.app.counters.total() == 0
        policy = invoices.RetryPolicy.from_settings({"due_days": "14", "give_up_after": "36h"})
        assert policy.due_days == 14 and policy.give_up_after == timedelta(hours=36)
        assert policy.delay(1) == timedelta(hours=2) and policy.delay(9) == timedelta(hours=24)


def test_budget_error_keeps_state_of_a_posting_job(store: Store) -> None:
    """A job that may have been sent stays in ``posting`` when its look-up hits the budget."""
    with sandbox("lightspeed", limits={"day": 1}) as running:
        conn = connect(store, running)
        batch = make_orders(running, "lightspeed", 1, prefix="BP", new_products=0, new_customers=0)
        add_orders(store, conn, batch.jsonl())
        with store.session() as s:
            s.execute(text("UPDATE invoice_jobs SET state = 'posting'"))
        with pytest.raises(BudgetExhausted):
            run_post(store, conn)
        with store.session() as s:
            job = s.scalar(select(InvoiceJob))
            calls = s.scalar(select(func.count()).select_from(ApiCall))
        assert job.state == "posting" and job.attempts == 0 and calls >= 1


def test_xero_posts_up_to_fifty_invoices_a_call_each_once(store: Store) -> None:
    """Xero takes a plural envelope: 120 orders go out in 3 calls, one status per invoice, and a
    rejected invoice in a batch does not hold up the others."""
    fake, conn = fake_account("xero", store)
    running = fake
    batch = make_orders(running, "xero", 120, prefix="BAT", new_products=0, new_customers=0)
    text = batch.jsonl().replace('"tax_code": "OUTPUT2"', '"tax_code": "NOSUCH"', 1)
    add_orders(store, conn, text)
    fake.fail(
        "rejected",
        "post_invoice",  # that invoice's own status in the plural envelope
        messages=("TaxType code 'NOSUCH' does not exist or cannot be used",),
        when=lambda draft: any(ln.tax_code == "NOSUCH" for ln in draft.lines),
    )
    report = run_post(store, conn, fake=fake)
    assert fake.calls["post_invoices"] == 3 and fake.calls["post_invoice"] == 0
    assert report.posted == 119 and report.rejected == 1
    numbers = [inv.number for inv in remote_invoices(running)]
    assert len(numbers) == len(set(numbers)) == 119
    assert job_states(store, conn) == {"posted": 119, "failed": 1}


# --- lists kept between runs --------------------------------------------------------------------
def test_lightspeed_tax_categories_are_read_once_a_day_not_once_a_run(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Posting every two hours used to spend a TaxCategory read on every run (360 calls a month).
    The list is kept in the store for a day; a code it lacks, or a sale refused while using it,
    reads it again."""
    from synccli.sandbox import lightspeed as ls_sandbox

    clock = SimClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))

    def reads(running: harness.Running) -> int:
        return running.app.counters.total("GET", "TaxCategory")

    with sandbox("lightspeed") as running:
        conn = connect(store, running)

        def post(prefix: str, tax: str = "GST") -> invoices.PostReport:
            batch = make_orders(running, "lightspeed", 2, prefix=prefix, new_products=0)
            for order in batch.orders:
                for line in order["lines"]:
                    line["tax_code"] = tax
            add_orders(store, conn, batch.jsonl(), now=clock.now())
            report = run_post(store, conn, clock=clock)
            assert report.posted == 2, report
            return report

        def categories_sent(prefix: str) -> set[str]:
            lines = []
            for sale in remote_invoices(running):
                if sale.number.startswith(prefix + "-"):
                    found = sale.body["SaleLines"]["SaleLine"]
                    lines += found if isinstance(found, list) else [found]
            return {line["taxCategoryID"] for line in lines}

        post("A")
        assert reads(running) == 1
        clock.advance(hours=2)
        post("B")
        assert reads(running) == 1  # the kept list served the second run

        # A category added in Lightspeed since: the kept list lacks it, so it is read again.
        categories = [*ls_sandbox.TAX_CATEGORIES, ("4", "GST Export", Decimal("0.15"))]
        monkeypatch.setattr(ls_sandbox, "TAX_CATEGORIES", categories)
        clock.advance(hours=2)
        post("C", tax="GST Export")
        assert reads(running) == 2
        assert categories_sent("C") == {"4"}

        # GST moved to a new id: the sale with the kept id is refused, the list read again and
        # the sale sent once more; nothing is posted twice.
        moved = [("5", "GST", Decimal("0.15")), *categories[1:]]
        monkeypatch.setattr(ls_sandbox, "TAX_CATEGORIES", moved)
        clock.advance(hours=2)
        post("D")
        assert reads(running) == 3
        assert categories_sent("D") == {"5"}
        numbers = [i.number for i in remote_invoices(running)]
        assert len(numbers) == len(set(numbers)) == 8

        # A day later the list is read again even though nothing put it in doubt.
        clock.advance(hours=25)
        post("E")
        assert reads(running) == 4


def test_lightspeed_a_tax_code_missing_from_a_list_just_read_is_refused_without_a_sale_post(
    store: Store,
) -> None:
    """An order naming a tax code Lightspeed lacks: the kept list is read again once (a category
    may have been added since) and, the code missing from the list just read, the order is
    refused here with its field named. It used to be sent anyway for Lightspeed to refuse, a
    ``POST Sale.json`` per bad order and per retry (31 a month for the reference merchant)."""
    clock = SimClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    with sandbox("lightspeed") as running:
        conn = connect(store, running)
        counters = running.app.counters

        def sale_posts() -> int:
            return counters.total("POST", "POST Sale")

        good = make_orders(running, "lightspeed", 1, prefix="OK", new_products=0)
        add_orders(store, conn, good.jsonl(), now=clock.now())
        run_post(store, conn, clock=clock)  # reads the list and keeps it
        assert counters.total("GET", "TaxCategory") == 1 and sale_posts() == 1
        clock.advance(hours=1)
        bad = make_orders(running, "lightspeed", 2, prefix="BAD", new_products=0)
        for order in bad.orders:
            for line in order["lines"]:
                line["tax_code"] = "VAT99"
        add_orders(store, conn, bad.jsonl(), now=clock.now())
        report = run_post(store, conn, clock=clock)
        assert report.rejected == 2 and report.posted == 0
        # one read for both orders (the second finds the list read this run), no sale sent
        assert counters.total("GET", "TaxCategory") == 2
        assert sale_posts() == 1
        assert len(remote_invoices(running)) == 1
        shown = invoices.show_invoice(store, "BAD-0001").invoice
        assert shown.state == "failed"
        assert "tax_code" in shown.last_error and "'VAT99'" in shown.last_error
        assert "GST" in shown.last_error  # the categories Lightspeed has, to pick from
