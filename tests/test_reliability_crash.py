"""Crash: ``kill -9`` the real CLI at random points, then let runs finish.

The sandbox runs in this process; ``python -m synccli`` runs in subprocesses on the same store.

``post-invoices`` (test_post_invoices_survives_50_kills): 50 kills over a 100-order queue against
the Lightspeed sandbox (no idempotency key there: exactly-once rests entirely on our outbox and its
look-up-first rule). Kill points, in turn:

- ``delay``: a random moment around the process's first invoice write: start-up, claiming, the
  customer look-up, between ``posting`` being committed and the request being sent, between two
  invoices ("before the call");
- ``during``: the invoice write is held by the sandbox's ``slow`` fault before it is processed and
  the process is killed while it waits ("during it"; the provider still commits it afterwards,
  as a real one would for a request it received);
- ``after``: a hook in the simulator holds the answer after the sale is committed, and the process
  is killed then ("after the provider committed but before our commit").

Each kill is classified by what the sandbox saw at that moment. A killed run leaves its claim on
the job for 10 minutes (``SYNC_CLAIM_SECONDS``) and any creation lock it held (a customer being
looked up) for 5 (``context.CREATE_LOCK_TTL``); the test stands in for those minutes by expiring
the dead process's claims and locks (only after the sandbox has finished every request it
received: a provider would have, within 10 minutes). The lease lasts 0.5 s
(``SYNC_LEASE_SECONDS``).
Every sale the provider committed while its run was dying must be found by the look-up.

``pull-products`` (test_pull_products_survives_kills_mid_page): 20 kills, during the first import
of 1200 products (12 pages) and during rounds of price and stock changes (each product changes at
most once, so every change must produce exactly one event). After every kill: every product
whose remote timestamp lies at or before the stored cursor minus the re-read overlap (2 s) holds
the remote values (the cursor is never ahead of applied data). After a final clean run: every
change applied exactly once (counted in ``events``), nothing else changed.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hostile.support import cli_env, jsonl, kill9, orders_for, run_cli, serve, spawn, wait_for
from sqlalchemy import func, select, update

from synccli.sandbox import harness
from synccli.sandbox.lightspeed import LightspeedSandbox
from synccli.sandbox.lightspeed_x import LightspeedXSandbox
from synccli.store.connections import get_connection
from synccli.store.db import Store
from synccli.store.models import (
    Cursor,
    Event,
    InvoiceAttempt,
    InvoiceJob,
    Lease,
    Link,
    Order,
    Product,
)
from synccli.sync.orders import add_orders

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SCALE = 1000.0
KILLS = 50
PULL_KILLS = 20
ORDERS = 100
SEED = 20261129


# --- a Lightspeed simulator with traps on invoice writes --------------------------------------
@dataclass
class _Write:
    phase: str = "received"  # received -> committed -> answered


@dataclass
class _Trap:
    mode: str | None = None  # "during" | "after" | None
    nth: int = 1  # which invoice write of the armed run to trap
    seen: int = 0
    received: threading.Event = field(default_factory=threading.Event)
    committed: threading.Event = field(default_factory=threading.Event)
    first_write_at: float | None = None


class _Traps:
    """Invoice writes (``POST Sale.json``, X-Series ``POST /sales``) take ``latency`` seconds like
    a real provider's; when armed, the n-th write of a run is held before it is processed (the
    ``slow`` fault) or after it is committed and before it is answered (``hold``)."""

    write_suffix, write_regex = "/Sale.json", r"/Sale\.json$"
    latency = 0.03
    hold = 0.6

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)  # type: ignore[call-arg]
        self.trap = _Trap()
        self.trap_lock = threading.Lock()
        self.writes: list[_Write] = []

    def arm(self, mode: str | None, nth: int) -> _Trap:
        with self.trap_lock:
            self.trap = _Trap(mode, nth)
            return self.trap

    def in_flight(self) -> list[str]:
        with self.trap_lock:
            return [w.phase for w in self.writes if w.phase != "answered"]

    def handle(self, req: Any) -> Any:
        if not (req.method == "POST" and req.path.endswith(self.write_suffix)):
            return super().handle(req)  # type: ignore[misc]
        write = _Write()
        with self.trap_lock:
            self.writes.append(write)
            trap = self.trap
            trap.seen += 1
            if trap.first_write_at is None:
                trap.first_write_at = time.monotonic()
            mode = trap.mode if trap.seen == trap.nth else None
        try:
            if mode == "during":
                self.faults.add("slow", method="POST", path=self.write_regex, times=1)  # type: ignore[attr-defined]
                trap.received.set()
            else:
                time.sleep(self.latency)
            resp = super().handle(req)  # type: ignore[misc]  # the sale is committed here
            write.phase = "committed"
            if mode == "after" and resp is not None and resp.status == 200:
                trap.committed.set()
                time.sleep(self.hold)
            return resp
        finally:
            write.phase = "answered"


class TrapLightspeed(_Traps, LightspeedSandbox):
    pass


class TrapLightspeedX(_Traps, LightspeedXSandbox):
    write_suffix, write_regex = "/sales", r"/api/2026-07/sales$"


TRAPS = {"lightspeed": TrapLightspeed, "lightspeed-x": TrapLightspeedX}


def _let_ten_minutes_pass(store: Store, pid: int) -> None:
    """Stand in for the minutes after a crash: the dead process ``pid``'s job claims (10 min,
    ``SYNC_CLAIM_SECONDS``), its job lease and its creation locks (5 min,
    ``context.CREATE_LOCK_TTL``) expire."""
    owner = f"{socket.gethostname()}:{pid}"
    past = datetime.now(UTC) - timedelta(seconds=1)
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


def _remote_numbers(running: harness.Running) -> Counter[str]:
    w = running.app.catalogue.tenant(running.app.tenant)
    return Counter(inv.number for inv in w.invoices.values())


def _states(store: Store) -> Counter[str]:
    with store.session() as s:
        return Counter(
            dict(s.execute(select(InvoiceJob.state, func.count()).group_by(InvoiceJob.state)).all())
        )


def _posting_at_provider(store: Store, remote: Counter[str]) -> set[str]:
    """Orders whose job is in ``posting`` and whose sale the provider has."""
    with store.session() as s:
        numbers = list(
            s.scalars(
                select(Order.number)
                .join(InvoiceJob, InvoiceJob.order_id == Order.id)
                .where(InvoiceJob.state == "posting")
            )
        )
    return {n for n in numbers if remote[n]}


def _jobs_of(store: Store, pid: int) -> list[tuple[str, str]]:
    """(order number, state) of the jobs process ``pid`` holds a claim on."""
    owner = f"{socket.gethostname()}:{pid}:"
    with store.session() as s:
        rows = s.execute(
            select(Order.number, InvoiceJob.state)
            .join(InvoiceJob, InvoiceJob.order_id == Order.id)
            .where(InvoiceJob.claimed_by.like(owner + "%"))
        )
        return [(number, state) for number, state in rows]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("provider", list(TRAPS))
def test_post_invoices_survives_50_kills(
    store: Store, cli: Any, _isolated_env: Path, provider: str
) -> None:
    rng = random.Random(SEED)
    app = TRAPS[provider](products=40, customers=20, time_scale=SCALE)
    app.faults.slow_seconds = 0.6
    env = cli_env(_isolated_env, SYNC_LEASE_SECONDS="0.5")
    with serve(provider, app) as running:
        harness.add_connection(store, "shop", running, time_scale=SCALE)
        conn = get_connection(store, "shop")
        assert cli("pull-products", "-c", "shop").exit_code == 0  # products linked up front
        orders = orders_for(running, provider, ORDERS, "CR")
        add_orders(store, conn, jsonl(orders))

        kills: Counter[str] = Counter()  # by what the kill interrupted
        committed_behind: set[str] = set()  # sales committed while their run was dying
        by_mode: Counter[str] = Counter()
        finished_early = busy = 0
        first_write = 1.6  # seconds from spawn to a run's first invoice write (learned)
        modes = ["delay", "during", "after"]
        while sum(kills.values()) < KILLS:
            assert finished_early + busy < 30, "runs keep escaping the kills"
            if _states(store).get("posted", 0) == len(orders):
                # a loaded machine lets a run post more before its kill, so the orders ran out
                # before every crash point was tried (23 of 50): another batch, new numbers
                assert len(orders) < 5 * ORDERS, "runs keep posting everything before a kill"
                more = orders_for(running, provider, ORDERS, f"CR{len(orders) // ORDERS}")
                add_orders(store, conn, jsonl(more))
                orders += more
                continue
            mode = modes[sum(kills.values()) % 3]
            trap = app.arm(None if mode == "delay" else mode, rng.randint(1, 2))
            started = time.monotonic()
            proc = spawn(["post-invoices", "-c", "shop"], env)
            if mode == "delay":
                # well before the learned first write: under the parallel suite a run's pace
                # varies, and later moments landed in the call itself (7 of 17 stayed before it)
                moment = started + first_write * rng.uniform(0.3, 0.85)
                wait_for(lambda p=proc, m=moment: p.poll() is not None or time.monotonic() >= m, 60)
            elif mode == "during":
                wait_for(lambda p=proc, t=trap: p.poll() is not None or t.received.is_set(), 60)
                time.sleep(rng.uniform(0.0, 0.8 * app.faults.slow_seconds))
            else:
                wait_for(lambda p=proc, t=trap: p.poll() is not None or t.committed.is_set(), 60)
            phases = app.in_flight()
            if proc.poll() is not None:  # done (or lease busy) before the kill: not a crash
                out, err = proc.communicate()
                if proc.returncode == 4:
                    busy += 1
                    time.sleep(0.3)
                else:
                    assert proc.returncode == 0, err[-3000:]
                    finished_early += 1
                continue
            kill9(proc)
            by_mode[mode] += 1
            if trap.first_write_at is not None:
                first_write = 0.6 * first_write + 0.4 * (trap.first_write_at - started)
            # the provider finishes whatever it received from the dead process
            assert wait_for(lambda: not app.in_flight(), 15)
            remote = _remote_numbers(running)
            mine = _jobs_of(store, proc.pid)  # (number, state) of the job(s) the run had claimed
            behind = {n for n, state in mine if state == "posting" and remote[n]}
            committed_behind |= _posting_at_provider(store, remote)
            if "received" in phases:
                kills["during the call"] += 1
            elif "committed" in phases or behind:
                kills["after the provider committed, before our commit"] += 1
            else:
                kills["before the call"] += 1
            assert max(remote.values(), default=1) == 1, "an invoice was posted twice"
            _let_ten_minutes_pass(store, proc.pid)

        # let runs finish
        final_runs = 0
        while _states(store).get("posted", 0) < len(orders):
            final_runs += 1
            assert final_runs <= 6, _states(store)
            done = run_cli(["post-invoices", "-c", "shop"], env)
            assert done.returncode in (0, 4), done.stderr
            if done.returncode == 4:
                time.sleep(1.0)

        remote = _remote_numbers(running)
        numbers = {o["number"] for o in orders}
        duplicates = sum(n - 1 for n in remote.values())
        losses = numbers - set(remote)
        extras = set(remote) - numbers
        with store.session() as s:
            jobs = list(
                s.execute(
                    select(Order.number, InvoiceJob.state, InvoiceJob.remote_id).join(
                        InvoiceJob, InvoiceJob.order_id == Order.id
                    )
                )
            )
            found = set(
                s.scalars(
                    select(Order.number)
                    .join(InvoiceJob, InvoiceJob.order_id == Order.id)
                    .join(InvoiceAttempt, InvoiceAttempt.job_id == InvoiceJob.id)
                    .where(InvoiceAttempt.outcome == "found")
                )
            )
        w = running.app.catalogue.tenant(running.app.tenant)
        remote_ids = {inv.number: str(inv.seq or inv.id) for inv in w.invoices.values()}
        summary = (
            f"crash points tried {sum(kills.values())} ({dict(kills)}; by trap {dict(by_mode)}), "
            f"orders {len(orders)}, duplicates {duplicates}, losses {len(losses)}, "
            f"found by look-up {len(found)} (committed behind a dead run "
            f"{len(committed_behind)}), runs that escaped a kill {finished_early}, busy {busy}, "
            f"final runs "
            f"{final_runs}"
        )
        print(summary)
        assert duplicates == 0 and not losses and not extras, summary
        assert sum(kills.values()) == KILLS, summary
        assert all(state == "posted" for _, state, _ in jobs) and len(jobs) == len(orders)
        assert all(rid == remote_ids[num] for num, _, rid in jobs), "a job holds another's id"
        # each kind of crash point was hit, and every sale committed behind a dead process's back
        # was found by the look-up, not posted again
        assert kills["during the call"] >= 8, summary
        assert kills["after the provider committed, before our commit"] >= 8, summary
        assert kills["before the call"] >= 8, summary
        assert committed_behind <= found, summary


# --- pull-products -----------------------------------------------------------------------------
class SlowReads(LightspeedSandbox):
    """Item and ItemShop pages take ``latency`` seconds; the test sees when each run first reads."""

    latency = 0.12

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.reads_in_flight = 0
        self.first_read_at: float | None = None
        self.read_lock = threading.Lock()

    def handle(self, req: Any) -> Any:
        if not (req.method == "GET" and req.path.endswith(("/Item.json", "/ItemShop.json"))):
            return super().handle(req)
        with self.read_lock:
            self.reads_in_flight += 1
            if self.first_read_at is None:
                self.first_read_at = time.monotonic()
        try:
            time.sleep(self.latency)
            return super().handle(req)
        finally:
            with self.read_lock:
                self.reads_in_flight -= 1


OVERLAP = timedelta(seconds=2)  # LightspeedConnector.capabilities.cursor_overlap


def _second(ts: datetime) -> datetime:
    return ts.replace(microsecond=0)


def _check_cursor_not_ahead(store: Store, conn_id: int, running: harness.Running) -> int:
    """Every product whose remote timestamp is at or before cursor - overlap (so the next run
    will not read it again) holds the remote values. Returns how many products that covered."""
    with store.session() as s:
        cursors = {
            c.stream: c.value
            for c in s.scalars(select(Cursor).where(Cursor.connection_id == conn_id))
        }
        local = {
            p.sku: p for p in s.scalars(select(Product).where(Product.connection_id == conn_id))
        }
    covered = 0
    for p in running.app.catalogue.tenant(running.app.tenant).products.values():
        if cursors.get("products") and _second(p.updated_at) <= cursors["products"] - OVERLAP:
            mine = local.get(p.code)
            assert mine is not None, f"{p.code} lies behind the products cursor but was not applied"
            assert Decimal(mine.price) == p.price, f"{p.code}: cursor ahead of the applied price"
            covered += 1
        if cursors.get("stock") and _second(p.stock_updated_at) <= cursors["stock"] - OVERLAP:
            mine = local.get(p.code)
            assert mine is not None and Decimal(mine.stock) == p.stock, (
                f"{p.code}: cursor ahead of the applied stock"
            )
    return covered


@pytest.mark.timeout(600)
def test_pull_products_survives_kills_mid_page(store: Store, _isolated_env: Path) -> None:
    rng = random.Random(SEED + 1)
    app = SlowReads(products=1200, customers=5, time_scale=SCALE)
    env = cli_env(_isolated_env, SYNC_LEASE_SECONDS="1")
    kills: Counter[str] = Counter()
    with serve("lightspeed", app) as running:
        harness.add_connection(store, "shop", running, time_scale=SCALE)
        conn = get_connection(store, "shop")
        tenant = running.app.tenant
        start_up = 1.0  # seconds from spawn to the first page request (learned)

        def crash_a_run(spread: float) -> bool:
            """Start a pull and kill it at a random moment; False when it finished first."""
            nonlocal start_up
            app.first_read_at = None
            started = time.monotonic()
            proc = spawn(["pull-products", "-c", "shop"], env)
            if rng.random() < 0.2:  # now and then before any page, at a moment of its start-up
                moment = started + start_up * rng.uniform(0.2, 1.0)
            else:
                # after its first page request, however long the start-up took: a loaded
                # machine's start-up outgrew the learned figure and every kill came before the
                # first page, so no kill landed mid-page at all
                wait_for(lambda: proc.poll() is not None or app.first_read_at is not None, 60)
                moment = time.monotonic() + rng.uniform(0, spread)
            wait_for(lambda: proc.poll() is not None or time.monotonic() >= moment, 60)
            killed = proc.poll() is None
            reading = app.reads_in_flight > 0
            if killed:
                kill9(proc)
            else:
                _, err = proc.communicate()
                assert proc.returncode in (0, 4), err
            if app.first_read_at is not None:
                start_up = 0.6 * start_up + 0.4 * (app.first_read_at - started)
            if not killed:
                kills["escaped (finished or busy)"] += 1
            elif app.first_read_at is None:
                kills["before the first page"] += 1
            else:
                kills["while a page was read" if reading else "while a page was applied"] += 1
            wait_for(lambda: app.reads_in_flight == 0, 10)
            _check_cursor_not_ahead(store, conn.id, running)
            if killed:
                _let_ten_minutes_pass(store, proc.pid)  # its lease
            return killed

        # 1) the first import of 1200 products (12 pages of 100), killed until one run completes
        for _ in range(8):
            if not crash_a_run(spread=1.5):
                break
        done = run_cli(["pull-products", "-c", "shop"], env)
        assert done.returncode == 0, done.stderr
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(Product)) == 1200
            assert s.scalar(select(func.count()).select_from(Link)) == 1200
            assert s.scalar(select(func.count()).select_from(Event)) == 0
        assert _check_cursor_not_ahead(store, conn.id, running) > 1100

        # 2) rounds of price and stock changes (each product at most once), the pull killed in each,
        #    until 20 kills in all
        priced: set[str] = set()
        stocked: set[str] = set()

        def crashed() -> int:
            return sum(v for k, v in kills.items() if not k.startswith("escaped"))

        rounds = 0
        while crashed() < PULL_KILLS and rounds < PULL_KILLS + 8:
            rounds += 1
            touched = priced | stocked
            priced |= {p.id for p in app.catalogue.change_prices(tenant, 25, exclude=touched)}
            touched = priced | stocked
            stocked |= {p.id for p in app.catalogue.change_stock(tenant, 12, exclude=touched)}
            crash_a_run(spread=0.45)

        done = run_cli(["pull-products", "-c", "shop"], env)
        assert done.returncode == 0, done.stderr

        products = app.catalogue.tenant(tenant).products
        with store.session() as s:
            local = {p.sku: p for p in s.scalars(select(Product))}
            by_id = {p.id: p.sku for p in local.values()}
            events = Counter(
                (by_id[e.local_id], e.field)
                for e in s.scalars(select(Event).where(Event.kind == "product"))
            )
        expected = Counter({(products[i].code, "price"): 1 for i in priced})
        expected.update({(products[i].code, "stock"): 1 for i in stocked})
        summary = (
            f"pull kills {crashed()} in {rounds} rounds of changes "
            f"({dict(kills)}), price changes {len(priced)}, stock changes {len(stocked)}, "
            f"events {sum(events.values())}"
        )
        print(summary)
        assert events == expected, summary  # every change exactly once, nothing else
        for p in products.values():
            assert (
                Decimal(local[p.code].price) == p.price and Decimal(local[p.code].stock) == p.stock
            )
        assert crashed() >= PULL_KILLS, summary
        assert kills["while a page was read"] + kills["while a page was applied"] >= 5, summary
