"""Xero payments exactly once under a crash and under a takeover (issue 22, line 3).

The real CLI runs in subprocesses against the Xero simulator served in this process, on one
SQLite store, with the helpers of test_reliability_crash (a killed run's claims made to lapse)
and test_reliability_fencing (a run stopped in a Retry-After wait, taken over, resumed).

- ``test_kill_9_around_the_payments_call_never_pays_twice``: ``kill -9`` while the simulator
  holds the ``PUT /Payments`` (``during``: before it is processed, which it is afterwards) or
  after it committed the payments and before it answers (``after``): the run's payments are left
  ``posting``; the next run looks them up (one ``GET /Payments``), finds every one and sends
  nothing again.
- ``test_stopped_worker_never_pays_after_a_takeover``: the run is stopped (SIGSTOP) in the
  Retry-After of a 429 on its ``PUT /Payments``; its claims lapse; a second run looks the
  payments up (not there), applies them; the first, resumed, sends nothing.
- ``test_hosts_racing_on_postgresql_apply_each_payment_once``: three hosts at once on one
  PostgreSQL store (its own schema) while every answer to ``PUT /Payments`` is lost, then three
  again: each payment once at Xero, every job posted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hostile.support import cli_env, jsonl, kill9, orders_for, run_cli, serve, spawn, wait_for
from sqlalchemy import select
from test_reliability_crash import _let_ten_minutes_pass
from test_reliability_fencing import SHORT_WAIT, _env, _job, _stop_take_over_resume, _too_many

from synccli.sandbox import harness
from synccli.sandbox.core import Request, Response
from synccli.sandbox.xero import XeroSandbox
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import Order, OrderPayment
from synccli.sync.orders import add_orders

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SCALE = 1000.0


def _is_payments(req: Request) -> bool:
    return req.method == "PUT" and req.path.rstrip("/").endswith("/Payments")


class TrapXero(XeroSandbox):
    """Holds a ``PUT /Payments`` before it is processed (``during``) or after it committed and
    before it answers (``after``); or answers it once with a 429 (``throttle_next``)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.mode: str | None = None
        self.reached = threading.Event()
        self.in_flight = 0
        self.throttle_next: float | None = None
        self.throttled = threading.Event()
        self.writes: list[int] = []
        self.trap_lock = threading.Lock()

    def handle(self, req: Request) -> Response | None:
        if not _is_payments(req):
            return super().handle(req)
        with self.trap_lock:
            wait, self.throttle_next = self.throttle_next, None
            mode, self.mode = self.mode, None
            self.in_flight += 1
        try:
            if wait is not None:
                self.writes.append(429)
                self.throttled.set()
                return _too_many("xero", wait)
            if mode == "during":
                self.reached.set()
                time.sleep(0.6)  # the run is killed meanwhile; the call is still processed
            resp = super().handle(req)
            self.writes.append(resp.status if resp is not None else 0)
            if mode == "after":
                self.reached.set()
                time.sleep(0.6)  # committed; the answer waits until the run is dead
            return resp
        finally:
            with self.trap_lock:
                self.in_flight -= 1


def _paid_orders(running: harness.Running, n: int, prefix: str) -> list[dict[str, Any]]:
    orders = orders_for(running, "xero", n, prefix)
    for i, order in enumerate(orders):
        total = Decimal(order["total"])
        split = [total] if i % 2 else [Decimal("1.00"), total - Decimal("1.00")]
        order["payments"] = [
            {"amount": str(a), "date": "2026-01-05", "method": "card"} for a in split
        ]
    return orders


def _setup(store: Store, running: harness.Running, n: int, prefix: str) -> list[dict[str, Any]]:
    harness.add_connection(
        store,
        "shop",
        running,
        notify_email="shop@example.com",
        time_scale=SCALE,
        payment_account_code="090",
        payments_wait_hours="0",  # paid in the run that posts the invoices (not batched)
    )
    orders = _paid_orders(running, n, prefix)
    add_orders(store, get_connection(store, "shop"), jsonl(orders))
    return orders


def _at_xero(app: XeroSandbox) -> Counter[str]:
    """Payments at the provider, by reference (each must be there exactly once)."""
    world = app.world()
    return Counter(p["Reference"] for inv in world.invoices.values() for p in inv.body["Payments"])


def _rows(store: Store) -> list[tuple[str, str | None, str | None]]:
    with store.session() as s:
        rows = s.execute(
            select(Order.number, OrderPayment.state, OrderPayment.remote_id)
            .join(Order, OrderPayment.order_id == Order.id)
            .order_by(Order.number, OrderPayment.payment_no)
        )
        return [(n, st, rid) for n, st, rid in rows.tuples()]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["during", "after"])
def test_kill_9_around_the_payments_call_never_pays_twice(
    mode: str, store: Store, _isolated_env: Path
) -> None:
    app = TrapXero(products=8, customers=4, time_scale=SCALE)
    env = cli_env(_isolated_env, SYNC_LEASE_SECONDS="0.5")
    with serve("xero", app) as running:
        orders = _setup(store, running, 3, "PK")
        app.mode = mode
        proc = spawn(["post-invoices", "-c", "shop"], env)
        assert wait_for(lambda: app.reached.is_set() or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        kill9(proc)
        assert wait_for(lambda: app.in_flight == 0, 15)  # Xero finishes what it received
        refs = _at_xero(app)
        assert len(refs) == 5 and max(refs.values()) == 1, refs  # 2 + 1 + 2 payments, applied
        assert {st for _, st, _ in _rows(store)} == {"posting"}
        _let_ten_minutes_pass(store, proc.pid)
        puts = app.counters.total("PUT", "Payments")
        done = run_cli(["post-invoices", "-c", "shop"], env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert app.counters.total("GET", "Payments") == 1  # one look-up for the three
        assert app.counters.total("PUT", "Payments") == puts  # nothing sent again
        assert _at_xero(app) == refs
        ids = {p["Reference"]: p["PaymentID"] for i in app.world().invoices.values()
               for p in i.body["Payments"]}  # fmt: skip
        rows = _rows(store)
        assert [st for _, st, _ in rows] == ["posted"] * 5
        assert sorted(rid for _, _, rid in rows) == sorted(ids.values())
        for order in orders:
            assert _job(store, order["number"])[0] == "posted"


@pytest.mark.timeout(180)
def test_stopped_worker_never_pays_after_a_takeover(store: Store, _isolated_env: Path) -> None:
    app = TrapXero(products=8, customers=4, time_scale=SCALE)
    with serve("xero", app) as running:
        orders = _setup(store, running, 2, "PF")
        numbers = [o["number"] for o in orders]
        # stopped in the Retry-After of its payments' call: invoices posted, payments `posting`
        t = _stop_take_over_resume(store, _env(_isolated_env), app, numbers)
        jobs = {n: _job(store, n) for n in numbers}
        summary = (
            f"payments at Xero {dict(_at_xero(app))}, jobs {jobs} (first run {t.run1}, second "
            f"{t.run2}), payment writes {app.writes}, first run exit {t.first.returncode}: "
            f"{t.first_err[-800:]}"
        )
        refs = _at_xero(app)
        assert len(refs) == 3 and max(refs.values()) == 1, summary
        # the stopped run's 429, then the second run's one call; nothing after the resume
        assert [s // 100 for s in app.writes] == [4, 2], summary
        assert app.counters.total("GET", "Payments") == 1, summary  # the takeover looked first
        for state, claimed_by, attempts in jobs.values():
            assert state == "posted" and claimed_by is None, summary
            assert attempts == [(t.run1, "posted"), (t.run2, "paid")], summary
        assert [st for _, st, _ in _rows(store)] == ["posted"] * 3, summary
        assert t.first.returncode == 0, summary
    assert SHORT_WAIT < 5  # within what one write may wait under the fencing tests' claim


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_hosts_racing_on_postgresql_apply_each_payment_once(tmp_path: Path) -> None:
    """Three hosts run ``post-invoices`` at the same moment on one PostgreSQL store while every
    answer to ``PUT /Payments`` is lost (Xero applies them; no run hears so), then three again
    with the answers back: every payment is at Xero exactly once, found by the look-up, and
    every job ends ``posted``."""
    from conftest import POSTGRES_SKIP, POSTGRES_URL
    from test_reliability_hosts import _own_schema

    from synccli.config import load_settings

    if not POSTGRES_URL:
        pytest.skip(POSTGRES_SKIP)
    app = TrapXero(products=8, customers=4, time_scale=SCALE)
    with _own_schema(POSTGRES_URL) as url, serve("xero", app) as running:
        store = Store(load_settings(url, str(tmp_path / "data")))
        store.upgrade()
        try:
            orders = _setup(store, running, 4, "PH")  # a batch under the transient breaker
            env = cli_env(tmp_path / "data", url, SYNC_LEASE_SECONDS="1")
            exits = []
            for lost in (True, False):
                if lost:
                    app.faults.add("lost", method="PUT", path=r"/Payments$")
                procs = [spawn(["post-invoices", "-c", "shop"], env) for _ in range(3)]
                for proc in procs:
                    _, err = proc.communicate(timeout=120)
                    exits.append(proc.returncode)
                    assert proc.returncode in (0, 4), err[-2000:]  # 4: another host holds it
                app.faults.clear()
                app._idem.clear()  # the replay window has passed: only the look-up protects
            refs = _at_xero(app)
            assert len(refs) == 6 and max(refs.values()) == 1, refs  # 2 split, 2 whole
            assert app.counters.total("GET", "Payments") >= 1
            assert {_job(store, o["number"])[0] for o in orders} == {"posted"}
            assert {st for _, st, _ in _rows(store)} == {"posted"}
            assert exits.count(0) >= 2, exits
        finally:
            store.dispose()
