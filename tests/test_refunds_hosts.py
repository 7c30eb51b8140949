"""Refunds exactly once across hosts (#22, line 4: "under the same faults as invoices"): three
``post-invoices --all`` processes (three owner ids, as three cron hosts) start at the same moment
over one store whose queue holds the refunds of posted orders, for each provider that takes
refunds (its registry capability). In a first round every answer to the refund call is lost (the
provider still makes the refund); in a second round the hosts race again. Each refund must then
exist once at the provider, allocated or paid back once, and every refund job end posted.

PostgreSQL where it is configured (the production store of several hosts), SQLite otherwise
(one machine's processes on the embedded store), as tests/test_reliability_hosts.py.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import POSTGRES_URL
from hostile.support import cli_env, jsonl, orders_for, spawn, world
from sqlalchemy import select, text

from synccli import registry
from synccli.config import load_settings
from synccli.sandbox import harness
from synccli.store.db import Store, make_engine
from synccli.store.models import InvoiceJob, Order

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SCALE = 1000.0
PROCESSES = 3
ORDERS = 4
# The refund call of each way of taking refunds (connectors/base.py ``DocumentSupport.refunds``):
# the fault machinery loses its every answer in the first round.
REFUND_CALL = {
    "credit_note": ("PUT", "CreditNotes$"),  # Xero PUT /CreditNotes
    "return_sale": ("POST", "/sales$"),  # X-Series POST /sales (a return sale)
    "sale_refund": ("POST", "refund.json$"),  # R-Series POST Sale/{id}/refund.json
}
# the simulators' endpoint names of those calls (their call counters)
REFUND_ENDPOINT = {
    "credit_note": "CreditNotes",
    "return_sale": "POST sales",
    "sale_refund": "POST Sale/refund",
}
REFUNDING = [
    (p.name, p.capabilities.documents.refunds)
    for p in registry.providers()
    if p.capabilities.documents.refunds != "none"
]


@contextmanager
def _own_schema(base: str) -> Iterator[str]:
    """A URL confined to a schema of its own (created now, dropped after; a name apart from
    tests/test_reliability_hosts.py's, whose rounds may run in this same process)."""
    schema = f"synccli_refund_hosts_{os.getpid()}"
    admin = make_engine(base.split("?")[0])
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, _isolated_env: Path
) -> Iterator[tuple[Store, dict[str, str]]]:
    """A store and the environment of the hosts' processes on it."""
    if request.param == "sqlite":
        store: Store = request.getfixturevalue("store")
        yield store, cli_env(_isolated_env)
        return
    if not POSTGRES_URL:
        pytest.skip("SYNC_TEST_POSTGRES_URL is not set")
    with _own_schema(POSTGRES_URL) as url:
        data = tmp_path / "pg-data"
        pg = Store(load_settings(url, str(data)))
        pg.upgrade()
        try:
            yield pg, cli_env(data, url)
        finally:
            pg.dispose()


def _round(env: dict[str, str]) -> list[tuple[int, str]]:
    procs = [spawn(["post-invoices", "--all"], env) for _ in range(PROCESSES)]
    exits = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        exits.append((proc.returncode, err))
    return exits


def _jobs(store: Store, numbers: list[str]) -> dict[str, InvoiceJob]:
    with store.session() as s:
        rows = s.execute(
            select(Order.number, InvoiceJob)
            .join(Order, InvoiceJob.order_id == Order.id)
            .where(Order.number.in_(numbers))
        )
        return {number: job for number, job in rows}


def _lines(sale: dict[str, Any]) -> list[dict[str, Any]]:
    rows = sale["SaleLines"]["SaleLine"]
    return rows if isinstance(rows, list) else [rows]


def _assert_once_at_provider(
    running: harness.Running, kind: str, orders: dict[str, InvoiceJob], refunds: list[str]
) -> None:
    app = running.app
    if kind == "credit_note":
        notes = list(app.extra[app.tenant].credit_notes.values())
        by_number = Counter(n["CreditNoteNumber"] for n in notes)
        assert by_number == Counter(refunds), f"credit notes by number: {by_number}"
        allocations = {n["CreditNoteNumber"]: len(n["Allocations"]) for n in notes}
        assert set(allocations.values()) == {1}, f"allocations per credit note: {allocations}"
    elif kind == "return_sale":
        returns = [i.body for i in world(running).invoices.values() if i.body.get("return_for")]
        per_sale = Counter(b["return_for"] for b in returns)
        assert per_sale == Counter(j.remote_id for j in orders.values()), per_sale
        # a return posted again under its own id replaces itself: the write counts tell it
        ids = {b["id"] for b in returns}
        writes = {k: n for k, n in app.counters.writes.items() if k[1] in ids}
        assert len(writes) == len(ids) and set(writes.values()) == {1}, writes
    else:
        sales = {i.body["saleID"]: i.body for i in world(running).invoices.values()}
        for number, job in orders.items():
            parents = {
                ln["saleLineID"]
                for ln in _lines(sales[job.remote_id])
                if ln["parentSaleLineID"] == "0"
            }
            made = [
                s
                for s in sales.values()
                if any(ln["parentSaleLineID"] in parents for ln in _lines(s))
            ]
            assert len(made) == 1, f"{number}: {len(made)} refund sales"


@pytest.mark.parametrize(("provider", "kind"), REFUNDING, ids=[p for p, _ in REFUNDING])
def test_hosts_racing_over_lost_refund_answers_post_each_refund_once(
    backend: tuple[Store, dict[str, str]], tmp_path: Path, provider: str, kind: str
) -> None:
    store, env = backend
    env = {**env, "SYNC_MIN_INTERVAL": "0"}  # every host runs the job, none skips the round
    sim: dict[str, Any] = {"products": 6, "customers": 3}
    with harness.start(provider, time_scale=SCALE, **sim) as running:
        settings: dict[str, Any] = {}
        batch = orders_for(running, provider, ORDERS, "H")
        if kind == "sale_refund":  # R-Series: a charge item no order sells
            sold = {line["sku"] for o in batch for line in o["lines"]}
            charge = next(p for p, _ in running.app.items() if p.code not in sold)
            settings["charge_item"] = str(charge.seq)
        harness.add_connection(store, "shop", running, time_scale=SCALE, **settings)
        first = tmp_path / "orders.jsonl"
        first.write_text(jsonl(batch), encoding="utf-8")
        for args in (
            ["invoices", "add", str(first), "-c", "shop"],
            ["post-invoices", "-c", "shop"],
        ):
            proc = spawn(args, env)
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        numbers = [o["number"] for o in batch]
        orders = _jobs(store, numbers)
        assert {j.state for j in orders.values()} == {"posted"}
        refunds = [f"{n}-R1" for n in numbers]
        second = tmp_path / "refunds.jsonl"
        second.write_text(
            jsonl(
                [
                    {"number": r, "date": "2026-01-07", "refund_of": n}
                    for r, n in zip(refunds, numbers, strict=True)
                ]
            ),
            encoding="utf-8",
        )
        proc = spawn(["invoices", "add", str(second), "-c", "shop"], env)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err

        method, path = REFUND_CALL[kind]
        before = running.app.counters.total(method, REFUND_ENDPOINT[kind])
        running.app.faults.add("lost", method=method, path=path, times=10_000)
        for code, err in _round(env):  # round 1: the refunds are made, no answer comes back
            assert code in (0, 1), err[-2000:]
        # every refund went out (the provider made it) and its host heard nothing back
        assert running.app.counters.total(method, REFUND_ENDPOINT[kind]) - before >= ORDERS
        assert all(j.maybe_sent and j.state != "posted" for j in _jobs(store, refunds).values())
        running.app.faults.clear()
        for code, err in _round(env):  # round 2: the hosts race to settle them
            assert code == 0, err[-2000:]

        jobs = _jobs(store, refunds)
        assert {r: j.state for r, j in jobs.items()} == {r: "posted" for r in refunds}, {
            r: j.last_error for r, j in jobs.items()
        }
        _assert_once_at_provider(running, kind, orders, refunds)
