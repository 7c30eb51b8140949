"""Refunds exactly once under the faults invoices face (issue 22, line 4): a post-invoices
process killed (kill -9) while its credit note or its allocation was on the wire, and a run
whose every answer was lost. Xero ends up with one credit note, allocated once. (Claims and
their fencing across hosts are the invoice jobs' own: a refund is one.)
"""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hostile.support import cli_env, kill9, spawn
from sqlalchemy import select, update

from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.store.models import InvoiceAttempt, InvoiceJob, Lease, Order

pytestmark = [pytest.mark.reliability, pytest.mark.slow]  # processes killed, answers awaited

SCALE = 1000.0


def orders(sku: str) -> str:
    order = {
        "number": "WEB-7",
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
            },
        ],
        "total": "23.00",
    }
    refund = {"number": "WEB-7-R1", "date": "2026-05-03", "refund_of": "WEB-7"}
    return json.dumps(order) + "\n" + json.dumps(refund)


def refund_job(store: Store) -> InvoiceJob:
    with store.session() as s:
        job = s.scalar(
            select(InvoiceJob)
            .join(Order, InvoiceJob.order_id == Order.id)
            .where(Order.number == "WEB-7-R1")
        )
        assert job is not None
        return job


def expire(store: Store, pid: int) -> None:
    """The minutes after a crash: the dead process's claims and lease run out."""
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


@pytest.mark.parametrize("step", ["CreditNotes$", "Allocations$"])
def test_a_run_killed_mid_refund_leaves_one_credit_note_allocated_once(
    store: Store, cli: Any, _isolated_env: Path, tmp_path: Path, step: str
) -> None:
    with harness.start("xero", products=3, customers=1, time_scale=SCALE) as running:
        harness.add_connection(store, "shop", running, time_scale=SCALE)
        sku = next(iter(running.app.world().products.values())).code
        path = tmp_path / "orders.jsonl"
        path.write_text(orders(sku), encoding="utf-8")
        assert cli("invoices", "add", str(path), "-c", "shop").exit_code == 0
        assert cli("post-invoices", "-c", "shop").exit_code == 0  # the order; its refund waits
        assert refund_job(store).state == "waiting"
        running.app.faults.slow_seconds = 1.5
        running.app.faults.add("slow", method="PUT", path=step, times=1)
        proc = spawn(["post-invoices", "-c", "shop"], cli_env(_isolated_env))
        endpoint = "CreditNotes" if step == "CreditNotes$" else "Allocations"
        deadline = time.monotonic() + 60
        while running.app.counters.total("PUT", endpoint) == 0:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        kill9(proc)  # the request is on the wire: the simulator still carries it out
        time.sleep(2.0)
        assert refund_job(store).state == "posting"
        expire(store, proc.pid)
        result = cli("post-invoices", "-c", "shop")
        assert result.exit_code == 0, result.stderr
        job = refund_job(store)
        assert job.state == "posted", job.last_error
        [note] = running.app.extra[running.app.tenant].credit_notes.values()
        assert len(note["Allocations"]) == 1 and note["RemainingCredit"] == 0
        assert job.remote_id == note["CreditNoteID"]


def test_a_refund_whose_answer_never_came_is_found_not_posted_again(
    store: Store, cli: Any, tmp_path: Path
) -> None:
    """Every answer to the credit note's PUT (and its retries under the same key) is lost: the
    next run looks it up by number, finds it and allocates it, and posts nothing twice."""
    with harness.start("xero", products=3, customers=1, time_scale=SCALE) as running:
        harness.add_connection(store, "shop", running, time_scale=SCALE)
        sku = next(iter(running.app.world().products.values())).code
        path = tmp_path / "orders.jsonl"
        path.write_text(orders(sku), encoding="utf-8")
        assert cli("invoices", "add", str(path), "-c", "shop").exit_code == 0
        assert cli("post-invoices", "-c", "shop").exit_code == 0  # the order; its refund waits
        # every retry of the write (the same Idempotency-Key) loses its answer too
        running.app.faults.add("lost", method="PUT", path="CreditNotes$", times=20)
        first = cli("post-invoices", "-c", "shop")  # host A: the answer never came
        assert first.exit_code in (0, 1), first.stderr
        assert refund_job(store).maybe_sent
        running.app.faults.clear()
        second = cli("post-invoices", "-c", "shop")
        assert second.exit_code == 0, second.stderr
        job = refund_job(store)
        assert job.state == "posted", job.last_error
        [note] = running.app.extra[running.app.tenant].credit_notes.values()
        assert len(note["Allocations"]) == 1
        with store.session() as s:
            outcomes = s.scalars(
                select(InvoiceAttempt.outcome)
                .where(InvoiceAttempt.job_id == job.id)
                .order_by(InvoiceAttempt.id)
            ).all()
        assert outcomes == ["waiting", "transient", "found"]


def _sale_lines(sale: dict[str, Any]) -> list[dict[str, Any]]:
    lines = sale["SaleLines"]["SaleLine"]
    return lines if isinstance(lines, list) else [lines]


def test_a_run_killed_mid_lightspeed_refund_leaves_one_refund(
    store: Store, cli: Any, _isolated_env: Path, tmp_path: Path
) -> None:
    """R-Series: killed while ``POST Sale/{id}/refund.json`` was on the wire (Lightspeed made
    the refund); the next run finds it by its lines giving back the sale's and posts nothing
    again."""
    with harness.start("lightspeed", products=3, customers=1, time_scale=SCALE) as running:
        first = next(p for p, _ in running.app.items())
        charge = running.app.items()[1][0].seq
        harness.add_connection(store, "shop", running, time_scale=SCALE, charge_item=charge)
        path = tmp_path / "orders.jsonl"
        path.write_text(orders(first.code).replace("OUTPUT2", "GST"), encoding="utf-8")
        assert cli("invoices", "add", str(path), "-c", "shop").exit_code == 0
        running.app.faults.slow_seconds = 1.5
        running.app.faults.add("slow", method="POST", path="refund.json$", times=1)
        proc = spawn(["post-invoices", "-c", "shop"], cli_env(_isolated_env))
        deadline = time.monotonic() + 60
        while running.app.counters.total("POST", "POST Sale/refund") == 0:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        kill9(proc)  # the request is on the wire: the simulator still carries it out
        time.sleep(2.0)
        assert refund_job(store).state == "posting"
        expire(store, proc.pid)
        result = cli("post-invoices", "-c", "shop")
        assert result.exit_code == 0, result.stderr
        job = refund_job(store)
        assert job.state == "posted", job.last_error
        world = running.app.catalogue.tenant(running.app.tenant)
        # refund sales: lines giving back lines of a sale (refund.json keeps no referenceNumber)
        made = [
            i.body
            for i in world.invoices.values()
            if any(ln.get("parentSaleLineID", "0") != "0" for ln in _sale_lines(i.body))
        ]
        assert [b["saleID"] for b in made] == [job.remote_id]
        assert running.app.counters.total("POST", "POST Sale/refund") == 1
