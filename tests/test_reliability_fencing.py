"""Fencing: a worker that lost its claim on an invoice job never writes to the provider, and never
touches the job, once another run has taken it over.

The real CLI runs in subprocesses against each provider's simulator (Xero, Unleashed, Lightspeed),
served in this process, on one SQLite store. The claim lasts ``SYNC_CLAIM_SECONDS`` (10 s here) and
the job lease ``SYNC_LEASE_SECONDS`` (1 s), so a stopped run's claim and lease lapse quickly.

Where a worker is paused is chosen at the process boundary, not inside the code: the simulator
answers the run's first invoice write with a 429 (nothing created, as a provider's limiter does)
whose ``Retry-After`` the worker then waits out before it sends the invoice. That wait comes after
the job was marked ``posting`` and before the write that creates the invoice:

- ``test_stopped_worker_never_posts_after_a_takeover``: the worker is stopped (SIGSTOP) during that
  wait (2.5 s, within what a write may wait); its claim and lease run out; a second run takes the
  job over, looks the invoice up, posts it; the first is resumed (SIGCONT). Exactly one invoice at
  the provider, the job posted by the second run, no "refused" email, nothing written by the first.
- ``test_retry_after_longer_than_the_claim_releases_the_job``: the ``Retry-After`` (20 s) outlasts
  the claim. The worker must not sleep it out holding the job: it releases the job as transient at
  once, and the next run posts it. Exactly one invoice, posted by the second run, no email.
- ``test_stopped_worker_never_creates_the_customer_after_a_takeover``: the same stall on the
  sale-time write before the invoice (creating the order's new customer): one customer.
- ``test_stopped_worker_never_posts_a_batch_after_a_takeover``: the same with Xero's batched post
  of three invoices, fenced by every claim in the batch.
- ``test_worker_stopped_before_any_send_never_posts_after_a_takeover``: Lightspeed's worker is
  stopped with nothing of the invoice sent at all (the simulator holds the tax-category read the
  sale needs, made after ``posting``).
- ``test_lost_answer_survives_cancel_and_retry``: an invoice whose answer was lost keeps the fact
  that it may have been sent through ``invoices cancel`` and ``invoices retry``: the next post
  looks it up first and records it as found, never posting it again.

The stand-in for time passing (``_claims_run_out``) is the one test_reliability_crash uses for a
killed process: the stopped process's claims and lease are made to lapse in the store, as they
would on their own after ``SYNC_CLAIM_SECONDS``; a stopped process cannot renew them.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from hostile.support import cli_env, jsonl, kill9, orders_for, run_cli, serve, spawn, wait_for
from sqlalchemy import func, select, update

from synccli import registry
from synccli.sandbox import harness
from synccli.sandbox.core import Request, Response
from synccli.sandbox.lightspeed import LightspeedSandbox, ls_error
from synccli.sandbox.lightspeed_x import LightspeedXSandbox
from synccli.sandbox.unleashed import UnleashedSandbox
from synccli.sandbox.xero import XeroSandbox, _problem
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import InvoiceAttempt, InvoiceJob, Lease, Notification, Order, Run
from synccli.sync.orders import add_orders

pytestmark = [pytest.mark.reliability]

PROVIDERS = registry.suite_names()
SCALE = 1000.0
CLAIM_SECONDS = 10  # so one write may wait at most 5 s
SHORT_WAIT = 2.5  # a Retry-After the worker waits out (under half the claim)
LONG_WAIT = 20  # a Retry-After that outlasts the claim

# Each provider's invoice write and customer create (method, path test).
_WRITES = {
    ("xero", "invoice"): ("PUT", lambda p: p.rstrip("/").endswith("/Invoices")),
    ("xero", "customer"): ("PUT", lambda p: p.rstrip("/").endswith("/Contacts")),
    ("unleashed", "invoice"): (
        "POST",
        lambda p: p.lower().startswith("/salesorders/") and p.count("/") == 2,
    ),
    ("unleashed", "customer"): (
        "POST",
        lambda p: p.lower().startswith("/customers/") and p.count("/") == 2,
    ),
    ("lightspeed", "invoice"): ("POST", lambda p: p.endswith("/Sale.json")),
    ("lightspeed", "customer"): ("POST", lambda p: p.endswith("/Customer.json")),
    ("lightspeed-x", "invoice"): ("POST", lambda p: p.endswith("/sales")),
    ("lightspeed-x", "customer"): ("POST", lambda p: p.endswith("/customers")),
}
_BASES = {
    "xero": XeroSandbox,
    "unleashed": UnleashedSandbox,
    "lightspeed": LightspeedSandbox,
    "lightspeed-x": LightspeedXSandbox,
}


def _too_many(provider: str, wait: float) -> Response:
    """A short-window 429 in the provider's own form, as each simulator's limiter answers it."""
    after = f"{wait:g}"
    if provider == "xero":  # synccli/sandbox/xero.py, the minute limit (X-Rate-Limit-Problem)
        return _problem(
            429,
            "Too Many Requests",
            "Rate limit exceeded (minute)",
            {"X-Rate-Limit-Problem": "minute", "Retry-After": after},
        )
    if provider == "unleashed":  # synccli/sandbox/unleashed.py, the per-minute window
        resp = Response(429, {"Description": "Too many requests: at most 60 per minute"})
        resp.headers["Retry-After"] = after
        return resp
    if provider == "lightspeed-x":  # synccli/sandbox/lightspeed_x.py: Retry-After, an HTTP date
        now = datetime.now(UTC).replace(microsecond=0)
        resp = Response(429, {"error": "Too Many Requests", "message": "Rate limiting enforced"})
        resp.headers["Date"] = format_datetime(now, usegmt=True)
        resp.headers["Retry-After"] = format_datetime(
            now + timedelta(seconds=math.ceil(wait)), usegmt=True
        )
        return resp
    resp = ls_error(  # synccli/sandbox/lightspeed.py, the leaky bucket
        429, "Rate Limit Exceeded: Please decrease your request volume.", "RateLimitedException"
    )
    resp.headers.update({"X-LS-API-RateLimit-Type": "api-leaky-bucket", "Retry-After": after})
    return resp


def _simulator(provider: str, kind: str = "invoice") -> Any:
    """The provider's simulator, whose next write of ``kind`` (invoice, customer) can be answered
    with a 429; ``writes`` keeps the status each such write was answered with."""
    method, is_write = _WRITES[(provider, kind)]

    class Throttling(_BASES[provider]):  # type: ignore[misc, valid-type]
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.throttle_next: float | None = None
            self.throttled = threading.Event()
            self.writes: list[int] = []
            self.trap_lock = threading.Lock()

        def handle(self, req: Request) -> Response | None:
            if req.method != method or not is_write(req.path):
                return super().handle(req)
            with self.trap_lock:
                wait, self.throttle_next = self.throttle_next, None
            if wait is not None:
                self.writes.append(429)
                self.throttled.set()
                return _too_many(provider, wait)
            resp = super().handle(req)
            self.writes.append(resp.status if resp is not None else 0)
            return resp

    return Throttling(products=8, customers=4, time_scale=SCALE)


def _owner(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


def _claims_run_out(store: Store, pid: int) -> None:
    """Stand in for ``SYNC_CLAIM_SECONDS`` passing while process ``pid`` is stopped: its job claims
    and its job lease lapse (a stopped process cannot renew them)."""
    owner, past = _owner(pid), datetime.now(UTC) - timedelta(seconds=1)
    with store.session() as s:
        s.execute(
            update(InvoiceJob)
            .where(InvoiceJob.claimed_by.like(owner + ":%"))
            .values(claimed_until=past)
        )
        s.execute(
            update(Lease)
            .where((Lease.owner == owner) | Lease.owner.like(owner + ":%"))
            .values(expires_at=past)
        )


def _run_id(store: Store, pid: int) -> int:
    with store.session() as s:
        found = s.scalar(
            select(Run.id).where((Run.owner == _owner(pid)) | Run.owner.like(_owner(pid) + ":%"))
        )
    assert found is not None, f"process {pid} recorded no run"
    return found


def _job(store: Store, number: str) -> tuple[str, str | None, list[tuple[int | None, str]]]:
    """(state, claimed_by, [(run id, outcome) of each attempt]) of the order's invoice job."""
    with store.session() as s:
        job = s.scalar(
            select(InvoiceJob)
            .join(Order, InvoiceJob.order_id == Order.id)
            .where(Order.number == number)
        )
        assert job is not None
        attempts = [
            (a.run_id, a.outcome)
            for a in s.scalars(
                select(InvoiceAttempt)
                .where(InvoiceAttempt.job_id == job.id)
                .order_by(InvoiceAttempt.id)
            )
        ]
        return job.state, job.claimed_by, attempts


def _emails(store: Store) -> list[str]:
    with store.session() as s:
        return list(s.scalars(select(Notification.dedupe_key)))


def _at_provider(running: harness.Running, number: str) -> int:
    world = running.app.catalogue.tenant(running.app.tenant)
    return Counter(inv.number for inv in world.invoices.values())[number]


def _setup(
    store: Store, provider: str, running: harness.Running, n: int = 1, new_customer: bool = False
) -> list[str]:
    """The shop's connection and ``n`` orders of the simulator's own products (and customers,
    unless ``new_customer``: one the provider does not know yet, created at sale time)."""
    harness.add_connection(
        store, "shop", running, notify_email="shop@example.com", time_scale=SCALE
    )
    orders = orders_for(running, provider, n, "FN")
    if new_customer:
        for order in orders:
            order["customer"] = {"email": NEW_EMAIL, "name": "Fenna Fence"}
    add_orders(store, get_connection(store, "shop"), jsonl(orders))
    return [str(o["number"]) for o in orders]


NEW_EMAIL = "fenna.fence@example.com"


def _customers_at_provider(running: harness.Running) -> int:
    world = running.app.catalogue.tenant(running.app.tenant)
    return sum(1 for c in world.customers.values() if (c.email or "").lower() == NEW_EMAIL)


def _env(data: Path) -> dict[str, str]:
    return cli_env(data, SYNC_LEASE_SECONDS="1", SYNC_CLAIM_SECONDS=str(CLAIM_SECONDS))


def _finish(proc: Any, timeout: float) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        kill9(proc)
        raise
    return out, err


@dataclass
class Takeover:
    first: Any  # the run that was stopped, finished
    first_err: str
    run1: int
    run2: int


def _stop_outside_a_store_write(store: Store, pid: int) -> None:
    """SIGSTOP the worker in its Retry-After wait, not in the instant after the 429 while it
    records the call: a process stopped holding SQLite's write lock would hold it for good, and
    this test's own reads would time out. Stop, check the lock is free, else resume and retry."""
    db = store.engine.url.database if store.is_sqlite else None
    for _ in range(50):
        os.kill(pid, signal.SIGSTOP)
        if db is None:
            return
        probe = sqlite3.connect(db, timeout=0.2)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError("the worker held the store's write lock at every attempt to stop it")


def _stop_take_over_resume(
    store: Store, env: dict[str, str], app: Any, numbers: list[str]
) -> Takeover:
    """Start a run; stop it (SIGSTOP) while it waits out the simulator's 429 on its write, after
    the jobs were claimed; let its claims and lease run out; a second run posts; resume the first
    (SIGCONT) and let it end."""
    app.throttle_next = SHORT_WAIT
    first = spawn(["post-invoices", "-c", "shop"], env)
    try:
        assert wait_for(lambda: app.throttled.is_set() or first.poll() is not None, 60)
        assert first.poll() is None, first.communicate()[1][-2000:]
        _stop_outside_a_store_write(store, first.pid)
        for number in numbers:
            claimed_by = _job(store, number)[1]
            assert (claimed_by or "").startswith(_owner(first.pid) + ":"), claimed_by
        _claims_run_out(store, first.pid)
        second = run_cli(["post-invoices", "-c", "shop"], env)
        assert second.returncode == 0, second.stderr[-2000:]
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
    _, first_err = _finish(first, 60)
    run1 = _run_id(store, first.pid)
    with store.session() as s:
        run2 = s.scalar(select(func.max(Run.id)).where(Run.id != run1))
    assert run2 is not None
    return Takeover(first, first_err, run1, run2)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_stopped_worker_never_posts_after_a_takeover(
    provider: str, store: Store, _isolated_env: Path
) -> None:
    app = _simulator(provider)
    with serve(provider, app) as running:
        [number] = _setup(store, provider, running)
        # Stopped while waiting out the Retry-After: after `posting`, before the invoice's send.
        t = _stop_take_over_resume(store, _env(_isolated_env), app, [number])
        state, claimed_by, attempts = _job(store, number)
        summary = (
            f"{provider}: at provider {_at_provider(running, number)}, job {state}, attempts "
            f"{attempts} (first run {t.run1}, second {t.run2}), invoice writes {app.writes}, "
            f"emails {_emails(store)}, first run exit {t.first.returncode}: {t.first_err[-500:]}"
        )
        assert _at_provider(running, number) == 1, summary
        assert state == "posted" and claimed_by is None, summary
        # Nothing written by the stopped run: the only attempt is the second run's post.
        assert attempts == [(t.run2, "posted")], summary
        assert _emails(store) == [], summary  # no false "refused" email
        # The first run sent nothing after it was resumed: its 429, then the second run's post.
        assert [s // 100 for s in app.writes] == [4, 2], summary
        assert t.first.returncode == 0, summary


@pytest.mark.timeout(180)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_stopped_worker_never_creates_the_customer_after_a_takeover(
    provider: str, store: Store, _isolated_env: Path
) -> None:
    """The same stall on the sale-time write before the invoice: creating its new customer."""
    app = _simulator(provider, "customer")
    with serve(provider, app) as running:
        [number] = _setup(store, provider, running, new_customer=True)
        t = _stop_take_over_resume(store, _env(_isolated_env), app, [number])
        state, _, attempts = _job(store, number)
        summary = (
            f"{provider}: customers at provider {_customers_at_provider(running)}, invoices "
            f"{_at_provider(running, number)}, job {state}, attempts {attempts} (first run "
            f"{t.run1}, second {t.run2}), customer writes {app.writes}, emails "
            f"{_emails(store)}, first run exit {t.first.returncode}: {t.first_err[-500:]}"
        )
        assert _customers_at_provider(running) == 1, summary
        assert _at_provider(running, number) == 1, summary
        assert state == "posted" and attempts == [(t.run2, "posted")], summary
        assert _emails(store) == [], summary
        assert [s // 100 for s in app.writes] == [4, 2], summary
        assert t.first.returncode == 0, summary


@pytest.mark.timeout(180)
def test_stopped_worker_never_posts_a_batch_after_a_takeover(
    store: Store, _isolated_env: Path
) -> None:
    """Xero takes several invoices in one call: the batch is fenced by every claim in it."""
    app = _simulator("xero")
    with serve("xero", app) as running:
        numbers = _setup(store, "xero", running, n=3)
        t = _stop_take_over_resume(store, _env(_isolated_env), app, numbers)
        jobs = {n: _job(store, n) for n in numbers}
        summary = (
            f"at provider {[_at_provider(running, n) for n in numbers]}, jobs {jobs} (first run "
            f"{t.run1}, second {t.run2}), invoice writes {app.writes}, emails {_emails(store)}, "
            f"first run exit {t.first.returncode}: {t.first_err[-500:]}"
        )
        assert all(_at_provider(running, n) == 1 for n in numbers), summary
        for state, _, attempts in jobs.values():
            assert state == "posted" and attempts == [(t.run2, "posted")], summary
        assert _emails(store) == [], summary
        assert [s // 100 for s in app.writes] == [4, 2], summary  # one batch call each
        assert t.first.returncode == 0, summary


class HeldTaxRead(LightspeedSandbox):
    """Holds its first tax-category read (which Lightspeed's connector makes inside the invoice
    post, after the job is marked ``posting`` and before the sale is sent) until released."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.held, self.release = threading.Event(), threading.Event()
        self.sales: list[int] = []

    def handle(self, req: Request) -> Response | None:
        tax_read = req.method == "GET" and req.path.endswith("/TaxCategory.json")
        if tax_read and not self.held.is_set():
            self.held.set()
            self.release.wait(60)
        resp = super().handle(req)
        if req.method == "POST" and req.path.endswith("/Sale.json"):
            self.sales.append(resp.status if resp is not None else 0)
        return resp


@pytest.mark.timeout(180)
def test_worker_stopped_before_any_send_never_posts_after_a_takeover(
    store: Store, _isolated_env: Path
) -> None:
    """The stall with no request of the invoice sent at all: Lightspeed's worker is stopped while
    it reads the tax categories the sale needs, after ``posting`` was committed."""
    env = _env(_isolated_env)
    app = HeldTaxRead(products=8, customers=4, time_scale=SCALE)
    with serve("lightspeed", app) as running:
        [number] = _setup(store, "lightspeed", running)
        first = spawn(["post-invoices", "-c", "shop"], env)
        try:
            assert wait_for(lambda: app.held.is_set() or first.poll() is not None, 60)
            assert first.poll() is None, first.communicate()[1][-2000:]
            os.kill(first.pid, signal.SIGSTOP)
            app.release.set()  # answered; the stopped worker reads it once resumed
            state, claimed_by, _ = _job(store, number)
            assert state == "posting" and (claimed_by or "").startswith(_owner(first.pid) + ":")
            assert app.sales == []
            _claims_run_out(store, first.pid)
            second = run_cli(["post-invoices", "-c", "shop"], env)
            assert second.returncode == 0, second.stderr[-2000:]
        finally:
            app.release.set()
            if first.poll() is None:
                os.kill(first.pid, signal.SIGCONT)
        _, first_err = _finish(first, 60)
        run1 = _run_id(store, first.pid)
        with store.session() as s:
            run2 = s.scalar(select(func.max(Run.id)).where(Run.id != run1))
        state, _, attempts = _job(store, number)
        summary = (
            f"at provider {_at_provider(running, number)}, job {state}, attempts {attempts} "
            f"(first run {run1}, second {run2}), sales sent {app.sales}, emails "
            f"{_emails(store)}, first run exit {first.returncode}: {first_err[-500:]}"
        )
        assert _at_provider(running, number) == 1, summary
        assert state == "posted" and attempts == [(run2, "posted")], summary
        assert _emails(store) == [], summary
        assert app.sales == [200], summary  # the second run's; none from the first
        assert first.returncode == 0, summary


@pytest.mark.timeout(180)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_retry_after_longer_than_the_claim_releases_the_job(
    provider: str, store: Store, _isolated_env: Path
) -> None:
    env = _env(_isolated_env)
    app = _simulator(provider)
    with serve(provider, app) as running:
        [number] = _setup(store, provider, running)
        app.throttle_next = LONG_WAIT
        first = spawn(["post-invoices", "-c", "shop"], env)
        try:
            assert wait_for(lambda: app.throttled.is_set() or first.poll() is not None, 60)
            throttled_at = time.monotonic()
            # A run may wait at most half its claim inside one write: it lets the job go by then.
            released = wait_for(lambda: first.poll() is not None, CLAIM_SECONDS)
            first_took = time.monotonic() - throttled_at
            _claims_run_out(store, first.pid)  # a no-op for a run that let the job go
            second = run_cli(["post-invoices", "-c", "shop"], env)
            assert second.returncode == 0, second.stderr[-2000:]
        finally:
            if first.poll() is None:
                os.kill(first.pid, signal.SIGCONT)
        _, first_err = _finish(first, LONG_WAIT + 60)
        run1 = _run_id(store, first.pid)
        with store.session() as s:
            run2 = s.scalar(select(func.max(Run.id)).where(Run.id != run1))
        state, claimed_by, attempts = _job(store, number)
        summary = (
            f"{provider}: at provider {_at_provider(running, number)}, job {state}, attempts "
            f"{attempts} (first run {run1}, second {run2}), invoice writes {app.writes}, "
            f"emails {_emails(store)}, first run let the job go after {first_took:.1f}s "
            f"(exit {first.returncode}): {first_err[-500:]}"
        )
        assert _at_provider(running, number) == 1, summary
        assert state == "posted" and claimed_by is None, summary
        # The first run released the job as transient; the second posted it.
        assert attempts == [(run1, "transient"), (run2, "posted")], summary
        assert _emails(store) == [], summary
        assert [s // 100 for s in app.writes] == [4, 2], summary
        assert released and first_took < CLAIM_SECONDS / 2 + 2, summary


_LOST = {
    "xero": ("PUT", r"/Invoices$"),
    "unleashed": ("POST", r"^/SalesOrders/[^/]+$"),
    "lightspeed": ("POST", r"/Sale\.json$"),
    "lightspeed-x": ("POST", r"/sales$"),
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_lost_answer_survives_cancel_and_retry(
    provider: str, store: Store, _isolated_env: Path
) -> None:
    env = _env(_isolated_env)
    with harness.start(provider, products=8, customers=4, time_scale=SCALE) as running:
        [number] = _setup(store, provider, running)
        method, path = _LOST[provider]
        running.app.faults.add("lost", method=method, path=path)  # every answer, retries too
        lost = run_cli(["post-invoices", "-c", "shop"], env)
        assert lost.returncode in (0, 1), lost.stderr[-2000:]
        assert _at_provider(running, number) == 1  # created; the answer never came back
        assert _job(store, number)[0] == "posting"
        running.app.faults.clear()

        cancel = run_cli(["invoices", "cancel", number, "-c", "shop"], env)
        assert cancel.returncode == 0, cancel.stderr
        assert "may exist there" in cancel.stderr  # the operator is told
        retry = run_cli(["invoices", "retry", number, "-c", "shop"], env)
        assert retry.returncode == 0, retry.stderr
        show = run_cli(["invoices", "show", number, "-c", "shop"], env)
        assert "the next post looks it up first" in show.stdout, show.stdout
        post = run_cli(["post-invoices", "-c", "shop"], env)
        state, _, attempts = _job(store, number)
        summary = (
            f"{provider}: at provider {_at_provider(running, number)}, job {state}, attempts "
            f"{attempts}, emails {_emails(store)}; post exit {post.returncode}: "
            f"{post.stderr[-500:]}"
        )
        assert post.returncode == 0, summary
        assert _at_provider(running, number) == 1, summary
        # looked up first and found: not sent a second time
        assert state == "posted" and attempts[-1][1] == "found", summary
        assert _emails(store) == [], summary


@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_a_bad_claim_setting_is_refused_before_anything_runs(
    value: str, store: Store, _isolated_env: Path
) -> None:
    with harness.start("lightspeed", products=4, customers=2, time_scale=SCALE) as running:
        _setup(store, "lightspeed", running)
        env = cli_env(_isolated_env, SYNC_CLAIM_SECONDS=value)
        done = run_cli(["post-invoices", "-c", "shop"], env)
        assert done.returncode == 2, (done.returncode, done.stderr)
        assert "SYNC_CLAIM_SECONDS" in done.stderr
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(Run)) == 0
        assert _at_provider(running, "FN-0001") == 0
