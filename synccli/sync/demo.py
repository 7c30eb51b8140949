"""``synccli demo``: the whole schedule against a simulator of each provider, in a throwaway store.

Needs no configuration and no network: the sandboxes run in this process on loopback. Every step
says what it did and what it cost in calls; the demo ends with the status table.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from synccli import registry
from synccli.config import load_settings
from synccli.errors import SyncError
from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.store.models import Connection, Customer
from synccli.sync import customers, invoices, orders, products
from synccli.sync.context import job_run
from synccli.sync.jobs import Job

TAX_RATE = "0.15"  # each simulator's tax code (the registry's ``sandbox.tax_code``) is 15%
BAD_TAX = "NOSUCHTAX"
SANDBOX: dict[str, Any] = {"products": 300, "customers": 120, "seed": 7}


def _order(
    number: str,
    provider: str,
    sku: str,
    price: Decimal,
    customer: dict[str, str],
    tax_code: str | None = None,
) -> dict[str, Any]:
    code, rate = tax_code or registry.get(provider).sandbox.tax_code, TAX_RATE
    qty = Decimal(2)
    line_total = (qty * price).quantize(Decimal("0.01"))
    tax = (line_total * Decimal(rate)).quantize(Decimal("0.01"))
    return {
        "number": number,
        "date": "2026-03-02",
        "currency": "NZD",
        "customer": customer,
        "lines": [
            {
                "sku": sku,
                "description": f"{sku} x2",
                "quantity": 2,
                "unit_price": str(price),
                "tax_code": code,
                "tax_rate": rate,
                "account_code": "200",
            }
        ],
        "total": str(line_total + tax),
    }


def run_demo(keep: Path | None, say: Callable[[str], None]) -> None:
    """Run the demo; raises nothing for the provider's rejection (that is part of the show)."""
    started = time.perf_counter()
    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="synccli-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    saved = {
        k: os.environ.get(k)
        for k in (
            "SYNC_DATA_DIR",
            "SYNC_DATABASE_URL",
            "SYNC_OUTBOX_DIR",
            "SYNC_SMTP_HOST",
            "SYNC_SECRET_KEY",
        )
    }
    os.environ.update(SYNC_DATA_DIR=str(base), SYNC_OUTBOX_DIR=str(base / "outbox"))
    for key in ("SYNC_DATABASE_URL", "SYNC_SMTP_HOST", "SYNC_SECRET_KEY"):
        os.environ.pop(key, None)
    running: list[harness.Running] = []
    try:
        settings = load_settings()
        store = Store(settings)
        store.upgrade()
        say(f"synccli demo: throwaway store in {base}")
        conns: dict[str, Connection] = {}
        for entry in registry.providers():
            scale = entry.sandbox.demo_time_scale
            r = harness.start(entry.name, time_scale=scale, **SANDBOX)
            running.append(r)
            conns[entry.name] = harness.add_connection(
                store,
                f"demo-{entry.name}",
                r,
                notify_email="merchant@shop.example",
                time_scale=scale,
            )
            say(
                f"  started the {entry.name} sandbox at {r.url} with {SANDBOX['products']} "
                f"products and {SANDBOX['customers']} customers; connection demo-{entry.name}"
            )
        for provider, conn in conns.items():
            _seed_local_customers(store, conn, running_for(running, provider))
        say("")
        say("Round 1: the first run of every job")
        for provider, conn in conns.items():
            _orders_round(store, conn, provider, running_for(running, provider), 1)
            _round(store, conn, say)
        say("")
        say(
            "Meanwhile at the providers: prices, stock and customers change; "
            "products vanish without their timestamps moving"
        )
        for r in running:
            app = r.app
            cat = app.catalogue
            changed = cat.change_prices(app.tenant, 12)
            moved = cat.change_stock(app.tenant, 20, exclude={p.id for p in changed})
            gone = cat.delete(app.tenant, 2)
            archived = cat.archive(app.tenant, 2)
            cat.add_customers(app.tenant, 5)
            say(
                f"  {r.provider}: {len(changed)} prices, {len(moved)} stock levels, "
                f"{len(gone)} deleted, {len(archived)} archived, 5 new customers"
            )
        say("")
        say("Round 2: only what changed is pulled; the sweep flags the ghosts")
        for provider, conn in conns.items():
            _orders_round(store, conn, provider, running_for(running, provider), 2)
            _round(store, conn, say, sweep=SANDBOX["products"])
        outbox = base / "outbox"
        mails = sorted(outbox.glob("*.eml")) if outbox.exists() else []
        say("")
        say(f"Merchant email: {len(mails)} message(s) in {outbox}")
        for mail in mails:  # one refused invoice per provider: list them all
            subject = next(
                (
                    ln
                    for ln in mail.read_text(errors="replace").splitlines()
                    if ln.startswith("Subject:")
                ),
                "",
            )
            say(f"  {mail.name}: {subject}")
        say("")
        from synccli.cli.commands_status import render_status

        render_status(store)
        say(f"demo finished in {time.perf_counter() - started:.1f}s")
        store.dispose()
    finally:
        for r in running:
            r.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)


def running_for(running: list[harness.Running], provider: str) -> harness.Running:
    return next(r for r in running if r.provider == provider)


def _seed_local_customers(store: Store, conn: Connection, r: harness.Running) -> None:
    """The shop's own customers: some are the provider's (by email, other case), some are new."""
    world = r.app.catalogue.tenant(r.app.tenant)
    remote = sorted(world.customers.values(), key=lambda c: c.code)[:15]
    with store.session() as s:
        for i, c in enumerate(remote):
            email = f"  {c.email.upper()} " if i % 3 == 0 and c.email else c.email
            s.add(
                Customer(
                    connection_id=conn.id, name=c.name, email=email, created_at=datetime.now(UTC)
                )
            )


def _orders_round(
    store: Store, conn: Connection, provider: str, r: harness.Running, n: int
) -> None:
    world = r.app.catalogue.tenant(r.app.tenant)
    items = sorted((p for p in world.products.values() if not p.archived), key=lambda p: p.code)
    people = sorted(world.customers.values(), key=lambda c: c.code)
    batch = []
    for i in range(3):
        p, c = items[i + 10 * n], people[i + 5 * n]
        batch.append(
            _order(f"WEB-{n}{i:03d}", provider, p.code, p.price, {"email": c.email, "name": c.name})
        )
    # a product the provider lacks, and a customer it has never seen: both created at sale time
    batch.append(
        _order(
            f"WEB-{n}100",
            provider,
            f"NEW-{n}-MUG",
            Decimal("19.90"),
            {"email": f"new.customer{n}@shop.example", "name": f"New Customer {n}"},
        )
    )
    if n == 1:  # one order the provider rejects: the merchant hears about it by email
        p = items[3]
        batch.append(
            _order(
                "WEB-1999",
                provider,
                p.code,
                p.price,
                {"email": people[0].email, "name": people[0].name},
                tax_code=BAD_TAX,
            )
        )
    text = "\n".join(json.dumps(o) for o in batch)
    orders.add_orders(store, conn, text)


def _round(store: Store, conn: Connection, say: Callable[[str], None], sweep: int = 100) -> None:
    name = conn.name
    try:
        with job_run(store, Job.PULL_PRODUCTS, conn) as jc:
            r = products.pull_products(jc)
            jc.counts = r
        say(
            f"  {name}: pull-products: {r.seen} seen, {r.changed} changed, {r.new} new, "
            f"{r.deactivated} deactivated ({r.calls} calls)"
        )
        with job_run(store, Job.SWEEP_OLDEST, conn) as jc:
            w = products.sweep_oldest(jc, sweep)
            jc.counts = w
        ghosts = ", ".join(f"{g['sku']} ({g['state']})" for g in w.ghosts) or "none"
        say(
            f"  {name}: sweep-oldest {sweep}: {w.swept} checked, ghosts: {ghosts} ({w.calls} calls)"
        )
        with job_run(store, Job.LINK_CUSTOMERS, conn) as jc:
            c = customers.link_customers(jc)
            jc.counts = c
        say(
            f"  {name}: link-customers: {c.seen} seen, {c.linked} linked, "
            f"{c.ambiguous} for review ({jc.calls} calls)"
        )
        with job_run(store, Job.POST_INVOICES, conn) as jc:
            p = invoices.post_invoices(jc)
            jc.counts = p
        say(
            f"  {name}: post-invoices: {p.posted} posted, {p.rejected} rejected "
            f"({p.emails} merchant email(s)), {p.products_created} product(s) created at sale "
            f"({jc.calls} calls)"
        )
    except SyncError as err:
        say(f"  {name}: {err.message}")
