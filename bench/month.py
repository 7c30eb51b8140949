"""A simulated month of the recommended cron schedule against each sandbox.

    .venv/bin/python bench/month.py                       # all three providers, 30 days
    .venv/bin/python bench/month.py --provider xero --days 7 --seed 3

The jobs of ``crontab.example`` run at the minutes its lines give, on a simulated clock the sandbox
shares (``SimClock``), for the reference merchant of ``synccli plan``: 5,000 products (2% change
price or description a day, 5% move stock: ``--change-rate`` and ``--stock-change-rate``, which
plan takes too), 3,000 customers (20 new a day, added at the provider
and in the shop), 50 orders a day (10% with a product or customer the provider lacks, 2% rejected
once for a bad tax code that the merchant fixes two hours after the rejection, then
``invoices retry``), and 20 products deleted plus 20 archived over the month with no timestamp
moving. Every mutation happens at its own second between the job runs.

Measured, per provider: API calls for the month (total and per job, from the store's ``runs.calls``
and cross-checked with the sandbox's counters); the freshness lag of every product change (from the
change in the sandbox to the first job run after which the local product shows it); days until
each ghost was flagged; invoices posted, duplicated and lost; 429s served. The same month and data
also run through the seed's naive strategy (``Naive`` below, against a twin sandbox with the same
seed and the same mutations) at the same freshness (the same pull cadence) and, by default, the
same sweep coverage (every product within 7 days; ``--naive-sweep 10`` gives the seed's own 10 a
day), and ``synccli plan``'s figure for the same schedule is printed beside the measured one.

The order mix (``--mix merchant``, the default) is a shop's as issue 22 describes it, as far as
each provider takes it (its ``Capabilities.documents``): one order in 3 with tax-inclusive
prices, one in 2 with a shipping line (no product code; against the connection's ``charge_item``
where the provider needs one), payments (one card payment of the total) on 9 in 10, and a refund
of one unit of the first line a day later for one order in 33 (3%). ``--mix plain`` is the mix
of the figures before it: exclusive product lines, no payments, no refunds. The naive strategy
gets each order's product lines, exclusive, unpaid (it can do no more).

Onboarding (the first full pull and the first link-customers of a new connection) happens the day
before the month and is reported apart: plan's figures are steady-state.

``--webhooks`` runs, for each provider (default Unleashed and Lightspeed X-Series), the same month
twice side by side: polled as above, and with the provider's webhooks (``--webhook-drop``, 5% by
default, of the deliveries never sent) into the receiver, applied each minute (``webhooks apply``)
and by the jobs, the polls kept as the safety net. It reports calls per job, freshness, changes
lost, ghosts and invoices for both, and for X-Series the month's calls against the R-Series month
(polled, in the same run). See bench/_webhooks.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import logging
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from synccli import registry  # noqa: E402
from synccli.clock import SimClock  # noqa: E402
from synccli.connectors.auth import MemoryTokenStore, Tokens  # noqa: E402
from synccli.connectors.base import InvoiceDraft, InvoiceLine, NewCustomer, NewProduct  # noqa: E402
from synccli.connectors.http import MemoryLedger  # noqa: E402
from synccli.errors import Rejected, SyncError  # noqa: E402
from synccli.sandbox import harness  # noqa: E402
from synccli.store.connections import get_connection  # noqa: E402
from synccli.store.models import (  # noqa: E402
    Customer,
    InvoiceJob,
    Link,
    Order,
    OrderLine,
    OrderPayment,
    Product,
    Run,
)
from synccli.sync import customers as customer_jobs  # noqa: E402
from synccli.sync import invoices as invoice_jobs  # noqa: E402
from synccli.sync import plan as plan_mod  # noqa: E402
from synccli.sync import products as product_jobs  # noqa: E402
from synccli.sync.context import connector_module, job_run  # noqa: E402
from synccli.sync.jobs import SCHEDULED, Job  # noqa: E402
from synccli.sync.orders import add_orders, line_amounts  # noqa: E402

MONTH_START = datetime(2026, 3, 1, tzinfo=UTC)  # 31 days: a 30-day run stays in one month
FIX_DELAY = timedelta(hours=2)  # the merchant reads the rejection email and fixes the tax code
BAD_TAX = "BADTAX"
JOB_ORDER = SCHEDULED  # the order a round runs its jobs
# event priorities at the same second: data changes, then orders, then fixes, then jobs
P_MUTATION, P_ORDER, P_FIX, P_JOB = 0, 1, 2, 3


# --- helpers --------------------------------------------------------------------------------------
def remote_id(provider: str, p: Any) -> str:
    """The id the connector reports for a neutral sandbox product."""
    return str(p.seq) if provider == "lightspeed" else str(p.id).lower()


def whole(t: datetime) -> datetime:
    return t.replace(microsecond=0)


class Freshness:
    """When each product change in the sandbox became visible locally.

    Price and description changes move the product's remote timestamp: one is visible once the
    local link's ``remote_updated_at`` reaches the change's time (the applier writes fields and
    timestamp in one transaction), or once the local price and description equal the sandbox's.
    The second test is needed where a provider's stamps are not on the clock the change was made
    by (Unleashed's JSON dates run 13 h behind, so a stamp never "reaches" the change's time and
    every change would count as pending for good). Stock moves do not move the stamp everywhere,
    so a stock change is visible once the local stock equals the sandbox's stock at check time.
    """

    def __init__(self) -> None:
        self.fields: dict[str, list[datetime]] = defaultdict(list)
        self.products: dict[str, Any] = {}  # the sandbox product behind each changed remote id
        self.stock: dict[str, tuple[Any, list[datetime]]] = {}
        self.lags: dict[str, list[float]] = {"fields": [], "stock": []}  # minutes
        self.dropped = 0  # changes of products that were deleted/archived before visible

    def changed_fields(self, rid: str, product: Any, at: datetime) -> None:
        self.fields[rid].append(at)
        self.products[rid] = product

    def changed_stock(self, rid: str, product: Any, at: datetime) -> None:
        entry = self.stock.get(rid)
        if entry is None:
            self.stock[rid] = (product, [at])
        else:
            entry[1].append(at)

    def drop(self, rid: str) -> None:
        self.dropped += len(self.fields.pop(rid, []))
        self.products.pop(rid, None)
        entry = self.stock.pop(rid, None)
        if entry:
            self.dropped += len(entry[1])

    def check(self, store: Any, conn_id: int, now: datetime, live: dict[str, Any]) -> None:
        """``live``: the sandbox's products by neutral id (a deleted one is not there)."""
        ids = list(set(self.fields) | set(self.stock))
        if not ids:
            return
        seen: dict[str, tuple[datetime | None, Decimal | None]] = {}
        values: dict[str, tuple[Decimal | None, str | None]] = {}
        with store.session() as s:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = s.execute(
                    select(
                        Link.remote_id,
                        Link.remote_updated_at,
                        Product.stock,
                        Product.price,
                        Product.description,
                    )
                    .join(Product, Product.id == Link.local_id)
                    .where(
                        Link.connection_id == conn_id,
                        Link.kind == "product",
                        Link.remote_id.in_(chunk),
                    )
                )
                for rid, stamp, stock, price, description in rows:
                    seen[rid] = (stamp, stock)
                    values[rid] = (price, description)
        for rid in list(self.fields):
            stamp = seen.get(rid, (None, None))[0]
            times = self.fields[rid]
            product = self.products.get(rid)
            price, description = values.get(rid, (None, None))
            if (
                product is not None
                and price is not None
                and Decimal(price) == Decimal(product.price)
                and description == product.description
            ):
                done = list(times)  # every change so far shows by value
            elif stamp is None:
                continue
            else:
                done = [t for t in times if t <= stamp]
            if done:
                self.lags["fields"] += [(now - t).total_seconds() / 60 for t in done]
                rest = [t for t in times if t not in done]
                if rest:
                    self.fields[rid] = rest
                else:
                    del self.fields[rid]
        for rid in list(self.stock):
            product, times = self.stock[rid]
            local = seen.get(rid, (None, None))[1]
            if product.id not in live:
                continue
            if local is not None and Decimal(local) == Decimal(product.stock):
                self.lags["stock"] += [(now - t).total_seconds() / 60 for t in times]
                del self.stock[rid]

    def waiting_since(self, before: datetime) -> int:
        """Changes made before ``before`` that are still not visible locally."""
        fields = sum(1 for times in self.fields.values() for t in times if t < before)
        return fields + sum(1 for _, times in self.stock.values() for t in times if t < before)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind, lags in (*self.lags.items(), ("all", self.lags["fields"] + self.lags["stock"])):
            out[kind] = {
                "changes": len(lags),
                "median_min": round(statistics.median(lags), 1) if lags else None,
                "p95_min": round(_quantile(lags, 0.95), 1) if lags else None,
                "worst_min": round(max(lags), 1) if lags else None,
            }
        out["pending_at_end"] = sum(len(v) for v in self.fields.values()) + sum(
            len(t) for _, t in self.stock.values()
        )
        out["dropped"] = self.dropped
        return out


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Ghosts:
    """Products deleted or archived at the provider without any timestamp moving, and when the
    local side flagged each (link state ghost/archived, or the local product inactive)."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def add(self, rid: str, kind: str, at: datetime) -> None:
        self.items[rid] = {"kind": kind, "at": at, "flagged": None}

    def check(self, store: Any, conn_id: int, now: datetime) -> None:
        open_ids = [rid for rid, g in self.items.items() if g["flagged"] is None]
        if not open_ids:
            return
        with store.session() as s:
            rows = s.execute(
                select(Link.remote_id, Link.state, Product.active)
                .join(Product, Product.id == Link.local_id)
                .where(
                    Link.connection_id == conn_id,
                    Link.kind == "product",
                    Link.remote_id.in_(open_ids),
                )
            )
            for rid, state, active in rows:
                if state in ("ghost", "archived") or active is False:
                    self.items[rid]["flagged"] = now

    def summary(self, start: datetime) -> dict[str, Any]:
        lags = [
            (g["flagged"] - g["at"]).total_seconds() / 86400
            for g in self.items.values()
            if g["flagged"] is not None
        ]
        flagged = [g["flagged"] for g in self.items.values() if g["flagged"] is not None]
        unflagged = sum(1 for g in self.items.values() if g["flagged"] is None)
        return {
            "ghosts": len(self.items),
            "deleted": sum(1 for g in self.items.values() if g["kind"] == "delete"),
            "archived": sum(1 for g in self.items.values() if g["kind"] == "archive"),
            "flagged": len(lags),
            "unflagged": unflagged,
            "worst_days": round(max(lags), 2) if lags else None,
            "median_days": round(statistics.median(lags), 2) if lags else None,
            "all_flagged_on_day": (
                round((max(flagged) - start).total_seconds() / 86400, 2)
                if flagged and not unflagged
                else None
            ),
        }


# --- the safe floor of post-invoices -----------------------------------------------------------
class Floor:
    """The calls ANY correct client needs to post the month's orders at this provider, counted
    run by run from what each post-invoices run sent (the same orders, retries and timing as
    ours):

    - posts: one call per ``invoice_batch`` invoices sent in the run (Xero: 50 a PUT);
    - a customer the shop has never sent (the month's new buyers): one look-up (it may have
      been created at the provider since link-customers last ran, and a second contact must
      not be made) and one create. Where the provider takes several records a call
      (``dependency_batch``: Xero's PUT /Contacts and a where of ORs), one look-up and one
      create per run however many;
    - an item the provider lacks: one create (per run, batched, where it takes arrays); a
      look-up before it only where no pull reads the whole catalogue (elsewhere the last full
      read says it is new, and the provider refuses a code it has);
    - lists a provider needs read (Lightspeed's tax categories): once a day with posts.

    Customers the shop's orders name that link-customers linked need no call, as do items the
    pulls linked."""

    def __init__(self, provider: str) -> None:
        entry = registry.get(provider)
        self.caps, self.daily = entry.capabilities, entry.calls.daily_list_calls
        self.calls = 0
        self.parts: Counter[str] = Counter()
        self.seen: set[str] = set()  # new customers and items already created
        self.days: set[Any] = set()

    def run(self, report: Any, needs: dict[str, tuple[str | None, str | None]], now: Any) -> None:
        sent = [
            i.number
            for i in getattr(report, "invoices", [])
            if i.outcome in ("posted", "rejected", "mismatch")
        ]
        if not sent:
            return
        parts = {"posts": math.ceil(len(sent) / max(1, self.caps.invoice_batch))}
        customers = {needs[n][0] for n in sent if n in needs and needs[n][0]} - self.seen
        items = {needs[n][1] for n in sent if n in needs and needs[n][1]} - self.seen
        self.seen |= customers | items
        if self.caps.dependency_batch:
            parts["customer look-ups"] = 1 if customers else 0
            parts["customer creates"] = 1 if customers else 0
            parts["item creates"] = 1 if items else 0
        else:
            parts["customer look-ups"] = len(customers)
            parts["customer creates"] = len(customers)
            parts["item creates"] = len(items)
            if not self.caps.full_catalogue_call:
                parts["item look-ups"] = len(items)
        if self.daily and now.date() not in self.days:
            self.days.add(now.date())
            parts["daily lists"] = self.daily
        for name, n in parts.items():
            self.parts[name] += n
            self.calls += n


# --- the naive (seed) strategy ----------------------------------------------------------------
class Naive:
    """The seed's strategy, as a small client-side loop that makes its real calls against a twin
    sandbox (same seed, same mutations, no limits) and counts them:

    - pull: the changed products and stock since its last run, same cadence and the same paged
      reads as ours (the connector's ``changed_products``/``changed_stock``);
    - sweep: the products swept longest ago, one GET per product plus one stock GET per product
      (Xero has no stock endpoint: its item GET carries stock, so one call there). The seed swept
      10 a day; compared at the same sweep coverage as ours (``--naive-sweep equal``, the default)
      it sweeps a seventh of the catalogue a day, so that every product is checked within 7 days;
    - link-customers: the changed customers since its last run (same reads as ours);
    - invoices: for every order, one lookup per line by product code, one customer lookup by
      email, a create for what is missing, and one post; a rejected order is looked up and posted
      again, from scratch, once the merchant fixed it.
    """

    SWEEP = 10

    def __init__(self, provider: str, running: harness.Running, clock: SimClock, scale: float):
        self.provider, self.running, self.clock = provider, running, clock
        settings, creds = harness.connection_values(running)
        expires = creds.get("expires_at")
        self.tokens = MemoryTokenStore(
            Tokens(
                access_token=creds.get("access_token"),
                refresh_token=creds.get("refresh_token"),
                expires_at=datetime.fromisoformat(expires) if expires else None,
            )
        )
        self.settings = settings
        self.creds = {
            k: v
            for k, v in creds.items()
            if k not in ("access_token", "refresh_token", "expires_at")
        }
        self.scale = scale
        self.module = connector_module(provider)
        self.calls: Counter[str] = Counter()
        self.swept: dict[str, datetime | None] = {}  # remote id -> last swept
        self.cursors: dict[str, datetime | None] = {"products": None, "stock": None, "cust": None}
        self.queue: list[dict[str, Any]] = []  # orders to post
        self.waiting: dict[str, dict[str, Any]] = {}  # rejected, until the merchant fixes them
        self.ghosts_found: dict[str, datetime] = {}
        self.posted: Counter[str] = Counter()
        self.rejected = 0
        self.errors: Counter[str] = Counter()

    def connector(self) -> Any:
        return self.module.connect(
            self.settings,
            self.creds,
            token_store=self.tokens,
            ledger=MemoryLedger(),
            clock=self.clock,
            time_scale=self.scale,
        )

    def _count(self, job: str, conn: Any) -> None:
        self.calls[job] += conn.http.calls

    # jobs ------------------------------------------------------------------------------------
    def pull(self) -> None:
        conn = self.connector()
        now = self.clock.now()
        if self.provider == "xero" and self.cursors["products"] is not None:
            # a naive client asks for what changed (If-Modified-Since): one call, as ours
            since = self.cursors["products"].strftime("%Y-%m-%dT%H:%M:%SZ")
            body = conn.http.json("GET", "/api.xro/2.0/Items", headers={"If-Modified-Since": since})
            for item in body.get("Items") or []:
                self.swept.setdefault(str(item["ItemID"]).lower(), None)
            self.cursors["products"] = now
            self._count(Job.PULL_PRODUCTS, conn)
            return
        for page in conn.changed_products(self.cursors["products"]):
            for r in page.records:
                self.swept.setdefault(r.remote_id, None)
        for _ in conn.changed_stock(self.cursors["stock"]):
            pass
        self.cursors["products"] = self.cursors["stock"] = now
        self._count(Job.PULL_PRODUCTS, conn)

    def link_customers(self) -> None:
        conn = self.connector()
        now = self.clock.now()
        for _ in conn.changed_customers(self.cursors["cust"]):
            pass
        self.cursors["cust"] = now
        self._count(Job.LINK_CUSTOMERS, conn)

    def sweep(self, n: int | None = None) -> None:
        """The ``n`` products swept longest ago (the seed's 10 by default)."""
        conn = self.connector()
        now = self.clock.now()
        oldest = sorted(self.swept, key=lambda r: (self.swept[r] is not None, self.swept[r], r))
        for rid in oldest[: self.SWEEP if n is None else n]:
            state = self._get_product(conn, rid)
            if state in ("gone", "archived"):
                self.ghosts_found.setdefault(rid, now)
            self.swept[rid] = now
        self._count(Job.SWEEP_OLDEST, conn)

    def post_invoices(self) -> None:
        conn = self.connector()
        due, self.queue = self.queue, []
        for order in due:
            try:
                self._post(conn, order)
                self.posted[order["number"]] += 1
            except Rejected:
                self.rejected += 1
                self.waiting[order["number"]] = order
            except SyncError as err:
                self.errors[type(err).__name__] += 1
                self.queue.append(order)  # next run
        self._count(Job.POST_INVOICES, conn)

    def fix(self, number: str, tax: str) -> None:
        order = self.waiting.pop(number, None)
        if order is not None:
            for line in order["lines"]:
                line["tax_code"] = tax
            self.queue.append(order)

    # calls -----------------------------------------------------------------------------------
    def _post(self, conn: Any, order: dict[str, Any]) -> None:
        lines = []
        for line in order["lines"]:
            rid = self._find_product(conn, line["sku"])
            if rid is None:
                created = conn.create_product(
                    NewProduct(
                        code=line["sku"],
                        name=line["description"][:50],
                        price=Decimal(line["unit_price"]),
                        description=line["description"],
                        tax_code=line.get("tax_code"),
                    )
                )
                rid = created.remote_id
            lines.append(
                InvoiceLine(
                    product_remote_id=rid,
                    code=line["sku"],
                    description=line["description"],
                    quantity=Decimal(str(line["quantity"])),
                    unit_price=Decimal(line["unit_price"]),
                    tax_code=line.get("tax_code"),
                    tax_rate=Decimal(line.get("tax_rate") or "0"),
                )
            )
        cust = order["customer"]
        found = conn.find_customers(email=cust["email"])
        if found:
            customer_id = found[0].remote_id
        else:
            first, _, last = cust["name"].partition(" ")
            customer_id = conn.create_customer(
                NewCustomer(
                    name=cust["name"],
                    email=cust["email"],
                    account_number=cust.get("account_number"),
                    first_name=first or None,
                    last_name=last or None,
                )
            ).remote_id
        draft = InvoiceDraft(
            number=order["number"],
            date=datetime.fromisoformat(order["date"]).replace(tzinfo=UTC),
            currency=order["currency"],
            customer_remote_id=customer_id,
            lines=lines,
            reference=order["number"],
            total=Decimal(order["total"]),
        )
        conn.post_invoice(draft, f"naive:{order['number']}")

    def _find_product(self, conn: Any, code: str) -> str | None:
        if self.provider == "xero":
            resp = conn.http.request("GET", f"/api.xro/2.0/Items/{code}", ok=(404,))
            if resp.status_code == 404:
                return None
            items = resp.json().get("Items") or []
            return str(items[0]["ItemID"]) if items else None
        if self.provider == "unleashed":
            from synccli.connectors.unleashed import build_query

            resp = conn.http.request("GET", "/Products", query=build_query(("productCode", code)))
            items = resp.json().get("Items") or []
            match = [i for i in items if i.get("ProductCode") == code]
            return str(match[0]["Guid"]).lower() if match else None
        found = conn.find_product(code)  # one GET Item.json?customSku=
        return found.remote_id if found else None

    def _get_product(self, conn: Any, rid: str) -> str:
        """One GET of the product (and one of its stock): "ok", "archived" or "gone"."""
        http = conn.http
        if self.provider == "xero":
            resp = http.request("GET", f"/api.xro/2.0/Items/{rid}", ok=(404,))
            if resp.status_code == 404:
                return "gone"
            item = (resp.json().get("Items") or [{}])[0]
            return "archived" if item.get("IsSold") is False else "ok"
        if self.provider == "unleashed":
            resp = http.request("GET", f"/Products/{rid}", ok=(404,))
            if resp.status_code == 404:
                return "gone"
            http.request("GET", f"/StockOnHand/{rid}", ok=(404,))
            return "archived" if resp.json().get("Obsolete") else "ok"
        account = self.settings["account_id"]
        resp = http.request("GET", f"API/V3/Account/{account}/Item/{rid}.json", ok=(404,))
        if resp.status_code == 404:
            return "gone"
        http.request(
            "GET", f"API/V3/Account/{account}/ItemShop.json", params={"itemID": rid, "shopID": "0"}
        )
        item = resp.json().get("Item") or {}
        item = item[0] if isinstance(item, list) else item
        return "archived" if str(item.get("archived")).lower() == "true" else "ok"


# --- the simulation -------------------------------------------------------------------------------
class Month:
    def __init__(
        self, provider: str, args: argparse.Namespace, store: Any, mode: str = "polled"
    ) -> None:
        self.provider, self.args, self.store = provider, args, store
        self.mode = mode  # "polled", or "webhooks" (pushes, polls as the safety net)
        self.pushes: Any = None
        self.days = args.days
        self.rng = random.Random(args.seed)  # event times and order contents: same for all
        self.start = MONTH_START
        self.end = self.start + timedelta(days=self.days)
        self.warmup = args.warmup
        self.clock = SimClock(self.start - timedelta(days=2))
        self.recording = False
        self.scale = common.TIME_SCALE[provider]
        self.entries, self.cron = common.cron_runs(Path(args.crontab).read_text(encoding="utf-8"))
        self.events: list[tuple[datetime, int, int, str, Any]] = []
        self.seq = 0
        self.fresh = Freshness()
        self.ghosts = Ghosts()
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.calls: Counter[str] = Counter()  # ours, from each run's context
        self.wall: Counter[str] = Counter()  # real seconds per job (where the bench time goes)
        self.runs: Counter[str] = Counter()
        self.sweep_sizes: list[int] = []
        self.orders: list[str] = []
        self.bad_tax: set[str] = set()
        self.fix_scheduled: set[str] = set()
        self.order_no = 0
        self.unknown_no = 0
        self.documents: Counter[str] = Counter()  # the merchant mix's documents, as added
        self.refunds: list[str] = []
        self.onboarding: dict[str, int] = {}
        self.bugs: dict[str, str] = {}
        self.needs: dict[str, tuple[str | None, str | None]] = {}  # order -> new customer, item
        self.floor = Floor(provider)

    # set-up ----------------------------------------------------------------------------------
    def setup(self) -> None:
        a, p = self.args, self.provider
        self.commit = common.machine()["commit"]  # the code this process imported
        kw = dict(
            seed=a.seed,
            products=a.products,
            customers=a.customers,
            clock=self.clock,
            time_scale=self.scale,
        )
        if a.faults:
            kw["faults"] = a.faults
        main_kw = dict(kw)
        if self.mode == "webhooks":
            drop = f"drop:{a.webhook_drop}" if a.webhook_drop else ""
            main_kw["faults"] = ",".join(filter(None, [a.faults, drop])) or None
            main_kw["deliveries"] = "manual"
        self.main = harness.start(p, **main_kw)
        self.app = self.main.app
        self.world = self.app.catalogue.tenant(self.app.tenant)
        self.twin = None
        if not a.no_naive and not a.webhooks:
            self.twin = harness.start(p, **kw, limits=common.NO_LIMITS[p])
            self.twin_world = self.twin.app.catalogue.tenant(self.twin.app.tenant)
            if set(self.world.products) != set(self.twin_world.products):
                raise SystemExit("the twin sandbox does not hold the same catalogue")
        if p == "unleashed":  # every product gets a StockOnHand row (a live account)
            moved = self.app.catalogue.change_stock(self.app.tenant, len(self.world.products))
            self._mirror(moved)
        harness.add_connection(
            self.store,
            "shop",
            self.main,
            notify_email="owner@shop.example",
            time_scale=self.scale,
            **self.charge_item(),
        )
        self.conn = get_connection(self.store, "shop")
        if self.mode == "webhooks":
            from _webhooks import Pushes

            self.pushes = Pushes(p, self.main, self.store, "shop", self.clock)
            self.pushes.subscribe()
        # the shop's customers: the same people as the provider's (linked by email/account)
        now = self.clock.now()
        with self.store.session() as s:
            s.add_all(
                Customer(
                    connection_id=self.conn.id,
                    name=c.name,
                    email=c.email,
                    account_number=c.account_number,
                    first_name=c.first_name,
                    last_name=c.last_name,
                    created_at=now,
                )
                for c in sorted(self.world.customers.values(), key=lambda c: c.code)
            )
        self.known_customers = sorted(self.world.customers.values(), key=lambda c: c.code)
        self.naive = Naive(p, self.twin, self.clock, self.scale) if self.twin else None

    def charge_item(self) -> dict[str, str]:
        """The connection's service item for lines without a product code, where the provider
        needs one (an existing product of the catalogue, as a merchant would name); or the
        account payments go into, where they are applied after the invoice (Xero)."""
        docs = registry.get(self.provider).capabilities.documents
        if self.args.mix == "merchant" and docs.payments == "applied":
            # the account the order's payments go into: the simulator's bank account
            return {"payment_account_code": "090"}
        if self.args.mix != "merchant" or docs.codeless_lines != "charge_item":
            return {}
        first = min(self.world.products.values(), key=lambda x: x.code)
        self.charge_code = first.code  # never picked for an order line
        if self.provider == "unleashed":
            return {"charge_item": first.code}
        if self.provider == "lightspeed":
            item = next(p for p, _ in self.app.items() if p.id == first.id)
            return {"charge_item": str(item.seq)}
        return {"charge_item": first.id}

    def onboard(self) -> None:
        """The new connection's first full reads, two days before the month; then a warm-up day
        of the whole schedule (cursors, links and caches reach their steady state) that is not
        counted either."""
        self.clock.set(self.start - timedelta(days=1, hours=12))
        for job in (Job.PULL_PRODUCTS, Job.LINK_CUSTOMERS):
            self.run_job(job, None, record=False)
            self.onboarding[job] = self._last_calls
        if self.naive:
            self.naive.pull()
            self.naive.link_customers()

    def _mirror(self, products: list[Any], delete: bool = False) -> None:
        """Apply to the twin what a catalogue mutation did to the main sandbox."""
        if self.twin is None:
            return
        tw = self.twin_world
        for p in products:
            t = tw.products.get(p.id) or tw.product_by_code(p.code)
            if t is None:
                continue
            if delete:
                del tw.products[t.id]
                tw.deleted_products.add(t.id)
                continue
            t.price, t.description, t.stock = p.price, p.description, p.stock
            t.updated_at, t.stock_updated_at, t.archived = (
                p.updated_at,
                p.stock_updated_at,
                p.archived,
            )

    # events ----------------------------------------------------------------------------------
    def push(self, at: datetime, prio: int, kind: str, payload: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, prio, self.seq, kind, payload))

    def plan_events(self) -> None:
        a = self.args
        per_day = {
            "fields": round(a.products * a.change_rate),
            "stock": round(a.products * a.stock_change_rate),
            "customer": 20,
            "order": a.orders,
        }
        for day in range(-self.warmup, self.days):
            base = self.start + timedelta(days=day)
            for run in self.cron:
                self.push(base + timedelta(minutes=run.minute), P_JOB + run.order, "job", run)
            for kind, n in per_day.items():
                for i in range(n):
                    at = base + timedelta(seconds=self.rng.randrange(86400))
                    prio = P_ORDER if kind == "order" else P_MUTATION
                    self.push(at, prio, kind, i)
        # ghosts: 20 deleted and 20 archived, spread over the month (a week kept at the end so a
        # 7-day sweep cycle can find the last ones); scaled down for shorter runs
        n = max(1, round(20 * self.days / 30))
        window = self.days - 7 if self.days >= 14 else max(1, self.days / 2)
        kinds = ["delete", "archive"] * n
        for i, kind in enumerate(kinds):
            at = self.start + timedelta(seconds=int((i + 0.5) / len(kinds) * window * 86400))
            self.push(at, P_MUTATION, kind)

    def run(self) -> None:
        while self.events:
            at, _, _, kind, payload = heapq.heappop(self.events)
            if at >= self.end:
                break
            if self.pushes is not None:  # deliveries and applies due before this event
                self.pushes.deliver_until(at, self._pushed)
            if not self.recording and at >= self.start:
                self.month_starts()
            self.clock.set(at)
            if kind == "job":
                self.run_job(payload.job, payload.argument, record=self.recording)
                if self.naive:
                    self.naive_job(payload.job)
            elif kind == "order":
                self.add_order(payload)
            elif kind == "fix":
                self.fix(payload)
            elif kind == "refund":
                self.add_refund(payload)
            else:
                self.mutate(kind)
            if self.args.progress and kind == "job" and payload.minute == 0:
                day = (at - self.start).days
                if payload.order == 1 and day != getattr(self, "_shown", None):
                    self._shown = day
                    print(
                        f"  {self.provider}: day {day + 1}/{self.days}, "
                        f"{sum(self.calls.values())} calls, {time.perf_counter() - self.t0:.0f}s",
                        file=sys.stderr,
                        flush=True,
                    )

    def _pushed(self, now: datetime) -> None:
        """After a `webhooks apply`: what it made visible, at its time."""
        if self.recording:
            self.fresh.check(self.store, self.conn.id, now, self.world.products)

    def month_starts(self) -> None:
        self.recording = True
        self.before = self.sandbox_snapshot()
        if self.naive:
            self.naive.calls.clear()
            self.naive.ghosts_found.clear()

    def close(self) -> None:
        """After the month: one more post-invoices run drains what the last hour queued."""
        self.clock.set(self.end + timedelta(minutes=5))
        self.run_job(Job.POST_INVOICES, None, record=False)
        if self.naive:
            self.naive.post_invoices()

    # mutations -------------------------------------------------------------------------------
    def mutate(self, kind: str) -> None:
        cat, tenant, now = self.app.catalogue, self.app.tenant, self.clock.now()
        if kind == "fields":
            if self.rng.random() < 0.5:
                picked = cat.change_prices(tenant, 1)
            else:
                picked = cat.change_descriptions(tenant, 1)
            for p in picked:
                if self.recording:
                    self.fresh.changed_fields(remote_id(self.provider, p), p, now)
            self._mirror(picked)
        elif kind == "stock":
            picked = cat.change_stock(tenant, 1)
            for p in picked:
                # a non-inventory item (Xero: created at sale time untracked) shows no stock
                if self.recording and p.tracked:
                    self.fresh.changed_stock(remote_id(self.provider, p), p, now)
            self._mirror(picked)
        elif kind == "customer":
            added = cat.add_customers(tenant, 1)
            with self.store.session() as s:
                for c in added:
                    s.add(
                        Customer(
                            connection_id=self.conn.id,
                            name=c.name,
                            email=c.email,
                            account_number=c.account_number,
                            first_name=c.first_name,
                            last_name=c.last_name,
                            created_at=now,
                        )
                    )
            if self.twin is not None:
                for c in added:
                    self.twin_world.customers[c.id] = dataclasses.replace(c)
        elif kind in ("delete", "archive"):
            picked = (cat.delete if kind == "delete" else cat.archive)(tenant, 1)
            for p in picked:
                rid = remote_id(self.provider, p)
                self.ghosts.add(rid, kind, now)
                self.fresh.drop(rid)
            self._mirror(picked, delete=kind == "delete")

    def add_order(self, index: int) -> None:
        """One order of the day: 1 in 10 has a product or a customer the provider lacks (turn
        about), 1 in 50 a tax code the provider rejects."""
        p = self.provider
        self.order_no += 1
        number = f"WEB-{self.order_no:05d}"
        charge = getattr(self, "charge_code", None)
        active = [x for x in self.world.products.values() if not x.archived and x.code != charge]
        picks = self.rng.sample(active, self.rng.choice((1, 1, 2, 3)))
        good = common.TAX[p]
        unknown = index % 10 == 0
        bad = index % 50 == 5
        tax = BAD_TAX if bad else good
        lines = [
            {
                "sku": x.code,
                "description": x.name,
                "quantity": self.rng.choice((1, 1, 2, 3)),
                "unit_price": str(x.price),
                "tax_code": tax,
                "tax_rate": common.TAX_RATE,
            }
            for x in picks
        ]
        c = self.rng.choice(self.known_customers)
        customer = {"email": c.email, "account_number": c.account_number, "name": c.name}
        k = 0
        if unknown:
            self.unknown_no += 1
            k = self.unknown_no
            if k % 2:  # a product the provider lacks
                lines.append(
                    {
                        "sku": f"NEW-{k:05d}",
                        "description": f"New product {k}",
                        "quantity": 1,
                        "unit_price": "19.99",
                        "tax_code": good,
                        "tax_rate": common.TAX_RATE,
                    }
                )
            else:  # a customer the provider lacks
                customer = {
                    "email": f"new.buyer{k}@buyer.example",
                    "account_number": f"NEWC-{k:05d}",
                    "name": f"New Buyer{k}",
                }
        new_customer = customer["email"] if unknown and not k % 2 else None
        new_item = lines[-1]["sku"] if unknown and k % 2 else None
        self.needs[number] = (new_customer, new_item)
        plain = _order(number, self.clock.now(), customer, lines)
        order = self.merchant_mix(plain, tax) if self.args.mix == "merchant" else plain
        add_orders(self.store, self.conn, json.dumps(order), now=self.clock.now())
        self.orders.append(number)
        if bad:
            self.bad_tax.add(number)
        if self.naive:
            self.naive.queue.append(json.loads(json.dumps(plain)))

    def merchant_mix(self, order: dict[str, Any], tax: str) -> dict[str, Any]:
        """The order as a shop sends it (module docstring), as far as the provider takes it."""
        docs = registry.get(self.provider).capabilities.documents
        n = self.order_no
        lines = list(order["lines"])
        if docs.codeless_lines != "none" and n % 2 == 0:
            shipping = {"kind": "shipping", "description": "Courier", "quantity": 1}
            shipping.update(unit_price="8.00", tax_code=tax, tax_rate=common.TAX_RATE)
            lines.append(shipping)
            self.documents["shipping lines"] += 1
        inclusive = docs.tax_inclusive != "none" and n % 3 == 1
        out = _order(order["number"], self.clock.now(), order["customer"], lines, inclusive)
        if inclusive:
            out["prices_include_tax"] = True
            self.documents["tax-inclusive orders"] += 1
        if docs.payments != "none" and n % 10 != 3:
            out["payments"] = [{"amount": out["total"], "date": out["date"], "method": "card"}]
            self.documents["orders with payments"] += 1
        if docs.refunds != "none" and n % 33 == 0:
            self.push(self.clock.now() + timedelta(days=1), P_ORDER, "refund", order["number"])
        return out

    def add_refund(self, number: str) -> None:
        """A day later the customer returns one of the first line: a refund of it."""
        refund = {
            "number": f"{number}-R",
            "date": self.clock.now().date().isoformat(),
            "refund_of": number,
            "lines": [{"line": 1, "quantity": 1}],
        }
        add_orders(self.store, self.conn, json.dumps(refund), now=self.clock.now())
        self.refunds.append(refund["number"])
        self.documents["refunds"] += 1

    def fix(self, number: str) -> None:
        """The merchant corrects the order's tax code in the shop and runs `invoices retry`."""
        good = common.TAX[self.provider]
        with self.store.session() as s:
            order = s.scalar(
                select(Order).where(Order.connection_id == self.conn.id, Order.number == number)
            )
            for line in s.scalars(select(OrderLine).where(OrderLine.order_id == order.id)):
                if line.tax_code == BAD_TAX:
                    line.tax_code = good
        invoice_jobs.retry_invoice(self.store, number, self.conn.name, self.clock.now())
        if self.naive:
            self.naive.fix(number, good)

    # jobs ------------------------------------------------------------------------------------
    def run_job(self, job: str, argument: str | None, record: bool = True) -> None:
        started = time.perf_counter()
        jc = None
        outcome = "ok"
        try:
            with job_run(self.store, job, self.conn, clock=self.clock) as jc:
                if job == Job.PULL_PRODUCTS:
                    jc.counts = product_jobs.pull_products(jc)
                elif job == Job.SWEEP_OLDEST:
                    n = self.sweep_n(jc, argument)
                    self._last_sweep = n
                    if record:
                        self.sweep_sizes.append(n)
                    jc.counts = product_jobs.sweep_oldest(jc, n)
                elif job == Job.LINK_CUSTOMERS:
                    jc.counts = customer_jobs.link_customers(jc)
                else:
                    jc.counts = invoice_jobs.post_invoices(jc)
        except SyncError as err:
            outcome = type(err).__name__
        except Exception as err:  # a bug in a job: count it, show it once, keep simulating
            outcome = f"BUG {type(err).__name__}"
            if outcome not in self.bugs:
                self.bugs[outcome] = traceback.format_exc()
                print(f"{self.provider} {job}: {self.bugs[outcome]}", file=sys.stderr)
        calls = jc.calls if jc is not None else 0
        self._last_calls = calls
        now = self.clock.now()
        if job == Job.POST_INVOICES:
            self._schedule_fixes(now)
        if not record:
            return
        self.runs[job] += 1
        self.calls[job] += calls
        if job == Job.POST_INVOICES and jc is not None:
            self.floor.run(jc.counts, self.needs, now)
        self.outcomes[job][outcome] += 1
        self.wall[job] += time.perf_counter() - started
        if job in (Job.PULL_PRODUCTS, Job.SWEEP_OLDEST):
            self.fresh.check(self.store, self.conn.id, now, self.world.products)
            self.ghosts.check(self.store, self.conn.id, now)

    def sweep_n(self, jc: Any, argument: str | None) -> int:
        choice = self.args.sweep
        if choice == "cron":
            choice = argument or "auto"
        if choice == "auto":
            return product_jobs.sweep_budget(jc)  # what `sweep-oldest auto` does
        if choice == "plan":  # plan's model of `auto`: the whole catalogue in 7 days
            merchant = self.merchant()
            model = plan_mod.model(self.provider)
            return plan_mod._sweep_n(argument, model, merchant, self.entries)
        return int(choice)

    def _schedule_fixes(self, now: datetime) -> None:
        pending = self.bad_tax - self.fix_scheduled
        if not pending:
            return
        with self.store.session() as s:
            failed = s.scalars(
                select(Order.number)
                .join(InvoiceJob, InvoiceJob.order_id == Order.id)
                .where(
                    Order.connection_id == self.conn.id,
                    Order.number.in_(pending),
                    InvoiceJob.state == "failed",
                )
            ).all()
        for number in failed:
            self.fix_scheduled.add(number)
            self.push(now + FIX_DELAY, P_FIX, "fix", number)

    def naive_sweep_n(self) -> int:
        """``--naive-sweep``: the seed's 10, a number, or ``equal``: the coverage the target
        asks of us, every product within 7 days (a seventh of the catalogue a day), which is
        what our sweep checks on Unleashed and Lightspeed (Xero's checks all of it daily)."""
        choice = self.args.naive_sweep
        if choice == "equal":
            assert self.naive is not None
            return math.ceil(len(self.naive.swept) / 7)
        return int(choice)

    def naive_job(self, job: str) -> None:
        started = time.perf_counter()
        assert self.naive is not None
        try:
            {
                Job.PULL_PRODUCTS: self.naive.pull,
                Job.SWEEP_OLDEST: lambda: self.naive.sweep(self.naive_sweep_n()),
                Job.LINK_CUSTOMERS: self.naive.link_customers,
                Job.POST_INVOICES: self.naive.post_invoices,
            }[job]()
        except Exception as err:
            self.naive.errors[type(err).__name__] += 1
        self.wall["naive"] += time.perf_counter() - started

    # results ---------------------------------------------------------------------------------
    def merchant(self) -> plan_mod.Merchant:
        a = self.args
        return plan_mod.Merchant(
            products=a.products,
            customers=a.customers,
            orders_per_day=a.orders,
            product_change_rate=a.change_rate,
            stock_change_rate=a.stock_change_rate,
            new_customers_per_day=20,
            unknown_share=0.10,
            # the mix's documents as merchant_mix makes them (plan leaves out what the provider
            # does not take): payments on 9 orders in 10, a refund on one in 33
            payment_share=0.9 if a.mix == "merchant" else 0.0,
            refund_share=1 / 33 if a.mix == "merchant" else 0.0,
        )

    def results(self, wall: float) -> dict[str, Any]:
        scale30 = 30 / self.days
        with self.store.session() as s:
            db_calls = dict(
                s.execute(
                    select(Run.job, func.sum(Run.calls))
                    .where(
                        Run.connection_id == self.conn.id,
                        Run.started_at >= self.start,
                        Run.started_at < self.end,
                    )
                    .group_by(Run.job)
                ).all()
            )
        report = plan_mod.plan(self.provider, self.merchant(), self.entries)
        planned = {j.job: j.calls_per_month for j in report.jobs}
        jobs = {}
        for job in JOB_ORDER:
            measured = self.calls.get(job, 0)
            month = measured * scale30
            naive = self.naive.calls.get(job, 0) * scale30 if self.naive else None
            jobs[job] = {
                "runs": self.runs.get(job, 0),
                "calls": measured,
                "calls_db": int(db_calls.get(job) or 0),
                "per_month": round(month, 1),
                "plan_per_month": planned.get(job),
                "diff_pct": common.pct(month, planned.get(job) or 0),
                "naive_per_month": round(naive, 1) if naive is not None else None,
                "outcomes": dict(self.outcomes.get(job, {})),
                "wall_s": round(self.wall.get(job, 0.0), 1),
            }
        floor = self.floor.calls * scale30
        jobs[Job.POST_INVOICES]["floor_per_month"] = round(floor, 1)
        jobs[Job.POST_INVOICES]["floor_parts"] = dict(self.floor.parts)
        jobs[Job.POST_INVOICES]["vs_floor_pct"] = common.pct(
            jobs[Job.POST_INVOICES]["per_month"], floor
        )
        total = sum(self.calls.values())
        total_month = total * scale30
        naive_total = sum(self.naive.calls.values()) * scale30 if self.naive else None
        safety = timedelta(hours=self.args.safety_hours)
        return {
            "provider": self.provider,
            "mode": self.mode,
            "commit": self.commit,
            "days": self.days,
            "seed": self.args.seed,
            "store": common.store_label(self.store),
            "sweep": self.args.sweep,
            "sweep_sizes": _spread(self.sweep_sizes),
            "calls": total,
            "calls_per_month": round(total_month, 1),
            "plan_per_month": report.calls_per_month,
            "plan_diff_pct": common.pct(total_month, report.calls_per_month),
            "plan_limit": {"day": report.limit_day, "month": report.limit_month},
            "naive_per_month": round(naive_total, 1) if naive_total is not None else None,
            "naive_ratio": round(naive_total / total_month, 2)
            if naive_total and total_month
            else None,
            "naive_ghosts_found": len(self.naive.ghosts_found) if self.naive else None,
            "naive_sweep": self.args.naive_sweep,
            "naive_errors": dict(self.naive.errors) if self.naive else None,
            "sandbox": self.sandbox_counts,
            "jobs": jobs,
            "onboarding": self.onboarding,
            "freshness": self.fresh.summary(),
            "ghosts": self.ghosts.summary(self.start),
            "invoices": self.invoice_figures(),
            "mix": self.args.mix,
            "documents": {**self.documents, **self.refund_figures(), **self.payment_figures()},
            "naive_invoices": self.naive_invoice_figures() if self.naive else None,
            "wall_s": round(wall, 1),
            "wall_naive_s": round(self.wall.get("naive", 0.0), 1),
            "bugs": self.bugs,
            # a change older than the safety poll and a run's slack that never showed is lost
            "lost_changes": self.fresh.waiting_since(self.end - safety - timedelta(minutes=30)),
            "webhooks": self.pushes.summary() if self.pushes is not None else None,
        }

    def invoice_figures(self) -> dict[str, Any]:
        ours = set(self.orders)
        remote = Counter(inv.number for inv in self.world.invoices.values())
        with self.store.session() as s:
            states = Counter(
                dict(
                    s.execute(
                        select(InvoiceJob.state, func.count())
                        .join(Order, InvoiceJob.order_id == Order.id)
                        .where(InvoiceJob.connection_id == self.conn.id)
                        .where(Order.refund_of.is_(None))  # refunds: refund_figures
                        .group_by(InvoiceJob.state)
                    ).all()
                )
            )
            posted_numbers = set(
                s.scalars(
                    select(Order.number)
                    .join(InvoiceJob, InvoiceJob.order_id == Order.id)
                    # ``paying``: posted, its payments waiting for a batch (payments_wait_hours)
                    .where(Order.connection_id == self.conn.id)
                    .where(InvoiceJob.state.in_(("posted", "paying")))
                    .where(Order.refund_of.is_(None))
                )
            )
        return {
            "orders": len(ours),
            "posted": states.get("posted", 0) + states.get("paying", 0),
            "payments_waiting_at_end": states.get("paying", 0),
            "remote_invoices": sum(remote[n] for n in ours),
            "duplicated": sum(remote[n] - 1 for n in ours if remote[n] > 1),
            "lost": len(posted_numbers - set(remote)) + states.get("gave_up", 0),
            "not_posted_at_end": len(ours - posted_numbers),
            "rejected_then_fixed": len(self.fix_scheduled),
            "unique_numbers": all(remote[n] <= 1 for n in remote),
            "states": dict(states),
        }

    def payment_figures(self) -> dict[str, Any]:
        """Where payments are applied after the invoice (Xero): the payments at the provider
        (each by its reference: applied once?), and those still waiting at the month's end for
        their batch (``payments_wait_hours``)."""
        extra = getattr(self.app, "extra", None)
        if not isinstance(extra, dict) or self.app.tenant not in extra:
            return {}
        payments = getattr(extra[self.app.tenant], "payments", {})
        refs = Counter(p.get("Reference") for p in payments.values() if "Invoice" in p)
        if not refs:
            return {}
        with self.store.session() as s:
            waiting = s.scalar(
                select(func.count(OrderPayment.id))
                .join(Order, OrderPayment.order_id == Order.id)
                .where(Order.connection_id == self.conn.id)
                .where(OrderPayment.state.is_(None) | (OrderPayment.state != "posted"))
            )
        return {
            "payments at the provider": sum(refs.values()),
            "payments applied twice": sum(n - 1 for n in refs.values() if n > 1),
            "payments waiting at the end": int(waiting or 0),
        }

    def refund_figures(self) -> dict[str, Any]:
        """The refunds' end states, and the calls on the endpoints only refunds use (Xero's
        credit notes and allocations, and the invoice read before an allocation; an X-Series
        return is one POST /sales, an order's too: refunds posted x 1)."""
        if not self.refunds:
            return {}
        with self.store.session() as s:
            states = Counter(
                s.scalars(
                    select(InvoiceJob.state)
                    .join(Order, InvoiceJob.order_id == Order.id)
                    .where(Order.connection_id == self.conn.id, Order.refund_of.is_not(None))
                )
            )
        counts = getattr(self, "sandbox_counts", {}).get("by_endpoint", {})
        calls = {k: n for k, n in counts.items() if "CreditNotes" in k or "Allocations" in k}
        if calls:
            calls["GET Invoices"] = counts.get("GET Invoices", 0)
        return {"refund states": dict(states), "refund endpoint calls": calls}

    def naive_invoice_figures(self) -> dict[str, Any]:
        assert self.naive is not None and self.twin is not None
        ours = set(self.orders)
        remote = Counter(inv.number for inv in self.twin_world.invoices.values())
        return {
            "orders": len(ours),
            "remote_invoices": sum(remote[n] for n in ours),
            "duplicated": sum(remote[n] - 1 for n in ours if remote[n] > 1),
            "not_posted_at_end": sum(1 for n in ours if remote[n] == 0),
        }

    def sandbox_snapshot(self) -> tuple[int, int, dict[str, int]]:
        c = self.app.counters
        with c.lock:
            by = {
                f"{m} {ep}": n
                for (m, ep), n in c.calls.items()
                if not ep.startswith(common.AUTH_ENDPOINTS)
            }
            return sum(by.values()), c.throttled, by


def _order(
    number: str, at: datetime, customer: dict[str, Any], lines: list[Any], inclusive: bool = False
) -> dict[str, Any]:
    """An order of ``invoices add``, its total by the money rule of its tax mode."""
    total = Decimal("0.00")
    for ln in lines:
        amount, tax_amount = line_amounts(
            Decimal(ln["quantity"]),
            Decimal(ln["unit_price"]),
            Decimal(ln["tax_rate"]),
            inclusive=inclusive,
        )
        total += amount + tax_amount
    return {
        "number": number,
        "date": at.date().isoformat(),
        "currency": "NZD",
        "customer": customer,
        "lines": lines,
        "total": str(total),
    }


def _spread(values: list[int]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def simulate(provider: str, args: argparse.Namespace, mode: str = "polled") -> dict[str, Any]:
    wall0 = time.perf_counter()
    with common.temp_store(args.database_url) as store:
        sim = Month(provider, args, store, mode)
        sim.t0 = wall0
        sim.setup()
        try:
            sim.onboard()
            sim.plan_events()
            sim.run()
            after = sim.sandbox_snapshot()
            sim.sandbox_counts = {
                "api_calls": after[0] - sim.before[0],
                "throttled_429": after[1] - sim.before[1],
                "unleashed_quota_used": (sim.app.calls_used() if provider == "unleashed" else None),
                "by_endpoint": {
                    k: n - sim.before[2].get(k, 0)
                    for k, n in sorted(after[2].items())
                    if n - sim.before[2].get(k, 0)
                },
            }
            sim.close()
            return sim.results(time.perf_counter() - wall0)
        finally:
            sim.main.stop()
            if sim.twin is not None:
                sim.twin.stop()


# --- output -----------------------------------------------------------------------------------
def render(results: list[dict[str, Any]], info: dict[str, str], args: argparse.Namespace) -> str:
    out = []
    out.append(
        f"bench/month.py: {args.days} simulated day(s) of {args.crontab}, seed {args.seed}, "
        f"{args.products} products, {args.customers} customers, {args.orders} orders/day, "
        f"sweep={args.sweep}, naive sweep={args.naive_sweep}"
    )
    out.append(
        f"machine: {info['uname']}; nproc {info['nproc']}; Python {info['python']}; "
        f"{info['date']}; commit {info['commit']}; load average {info['load']}"
    )
    rows = []
    for r in results:
        for job in JOB_ORDER:
            j = r["jobs"][job]
            rows.append(
                [
                    r["provider"],
                    job,
                    j["runs"],
                    j["calls"],
                    j["per_month"],
                    j["plan_per_month"],
                    _signed(j["diff_pct"]),
                    j["naive_per_month"],
                    _ratio(j["naive_per_month"], j["per_month"]),
                ]
            )
        rows.append(
            [
                r["provider"],
                "TOTAL",
                sum(j["runs"] for j in r["jobs"].values()),
                r["calls"],
                r["calls_per_month"],
                r["plan_per_month"],
                _signed(r["plan_diff_pct"]),
                r["naive_per_month"],
                r["naive_ratio"],
            ]
        )
    out.append("")
    out.append(
        common.table(
            [
                "provider",
                "job",
                "runs",
                "calls",
                "per 30 d",
                "plan",
                "vs plan %",
                "naive/30 d",
                "naive/ours",
            ],
            rows,
            title="API calls (ours measured from runs.calls; plan = synccli plan)",
        )
    )
    rows = []
    for r in results:
        f, g, inv, sb = r["freshness"], r["ghosts"], r["invoices"], r["sandbox"]
        rows.append(
            [
                r["provider"],
                f["all"]["median_min"],
                f["all"]["p95_min"],
                f["all"]["worst_min"],
                f["all"]["changes"],
                f["pending_at_end"],
                g["worst_days"],
                g["all_flagged_on_day"],
                f"{g['flagged']}/{g['ghosts']}",
                r["naive_ghosts_found"],
            ]
        )
    out.append("")
    out.append(
        common.table(
            [
                "provider",
                "fresh median min",
                "p95 min",
                "worst min",
                "changes",
                "pending",
                "ghost worst d",
                "all flagged day",
                "ghosts flagged",
                "naive found",
            ],
            rows,
            title="Freshness of product changes and ghosts",
        )
    )
    rows = []
    for r in results:
        inv, sb, ni = r["invoices"], r["sandbox"], r["naive_invoices"] or {}
        rows.append(
            [
                r["provider"],
                inv["orders"],
                inv["posted"],
                inv["remote_invoices"],
                inv["duplicated"],
                inv["lost"],
                inv["not_posted_at_end"],
                inv["rejected_then_fixed"],
                sb["api_calls"],
                sb["throttled_429"],
                ni.get("duplicated"),
                r["wall_s"],
            ]
        )
    out.append("")
    out.append(
        common.table(
            [
                "provider",
                "orders",
                "posted",
                "remote inv",
                "duplicated",
                "lost",
                "open at end",
                "rejected+fixed",
                "sandbox calls",
                "429s",
                "naive dup",
                "wall s",
            ],
            rows,
            title="Invoices, sandbox counters, run time",
        )
    )
    for r in results:
        docs = r.get("documents") or {}
        if docs:
            out.append(f"  {r['provider']} ({r.get('mix')} mix): " + json.dumps(docs))
        post = r["jobs"][Job.POST_INVOICES]
        if post.get("floor_per_month") is not None:
            out.append(
                f"{r['provider']}: post-invoices {post['per_month']} a month against a safe floor "
                f"of {post['floor_per_month']} ({_signed(post['vs_floor_pct'])}%): "
                + ", ".join(f"{k} {v}" for k, v in post["floor_parts"].items())
                + " (the calls any correct client needs for the month's orders, Floor above)"
            )
    for r in results:
        notes = []
        if r["sweep_sizes"]:
            s = r["sweep_sizes"]
            notes.append(f"sweep sizes min/median/max {s['min']}/{s['median']}/{s['max']}")
        notes.append(f"onboarding (not in the month) {r['onboarding']}")
        failed = {j: o for j, v in r["jobs"].items() for o in [v["outcomes"]] if set(o) - {"ok"}}
        if failed:
            notes.append(f"runs not ok: {failed}")
        limit = r["plan_limit"]
        if limit["month"] and r["calls_per_month"] > limit["month"]:
            notes.append(f"OVER the monthly quota of {limit['month']}")
        if limit["day"] and r["calls_per_month"] / 30 > limit["day"]:
            notes.append(f"OVER the daily limit of {limit['day']}")
        if r["naive_per_month"] and limit["month"] and r["naive_per_month"] > limit["month"]:
            notes.append(f"naive would exceed the monthly quota of {limit['month']}")
        if r["naive_per_month"] and limit["day"] and r["naive_per_month"] / 30 > limit["day"]:
            notes.append(f"naive would exceed the daily limit of {limit['day']}")
        bench_wall = {j: v["wall_s"] for j, v in r["jobs"].items()}
        notes.append(f"wall seconds per job {bench_wall}, naive {r['wall_naive_s']}")
        out.append(f"{r['provider']}: " + "; ".join(notes))
    return "\n".join(out)


def render_webhooks(
    results: list[dict[str, Any]], info: dict[str, str], args: argparse.Namespace
) -> str:
    """``--webhooks``: each provider's month polled and with webhooks, side by side."""
    out = [
        f"bench/month.py --webhooks: {args.days} simulated day(s) of {args.crontab}, seed "
        f"{args.seed}, {args.products} products, {args.customers} customers, {args.orders} "
        f"orders/day, {args.webhook_drop:.0%} of deliveries dropped, safety poll judged at "
        f"{args.safety_hours:g} h",
        f"machine: {info['uname']}; nproc {info['nproc']}; Python {info['python']}; "
        f"{info['date']}; commit {info['commit']}; load average {info['load']} at the start, "
        f"{info.get('load_end', '?')} at the end",
        "",
    ]
    polled = {r["provider"]: r for r in results if r["mode"] == "polled"}
    rows = []
    for r in results:
        base = polled.get(r["provider"])
        ratio = _ratio(r["calls_per_month"], base["calls_per_month"]) if base else None
        per = [r["jobs"][job]["per_month"] for job in JOB_ORDER]
        rows.append([r["provider"], r["mode"], *per, r["calls_per_month"], ratio])
    out.append(
        common.table(
            ["provider", "mode", *JOB_ORDER, "total/30 d", "vs polled"],
            rows,
            title="API calls per 30 days, per job (runs.calls)",
        )
    )
    rows = []
    for r in results:
        f, g, inv = r["freshness"], r["ghosts"], r["invoices"]
        lags = [f[k][m] for k in ("fields", "stock", "all") for m in ("median_min", "worst_min")]
        rows.append(
            [
                r["provider"],
                r["mode"],
                *lags,
                f["all"]["p95_min"],
                f["pending_at_end"],
                r["lost_changes"],
                f"{g['flagged']}/{g['ghosts']}",
                inv["duplicated"],
                inv["lost"],
                r["sandbox"]["throttled_429"],
            ]
        )
    head = [f"{k} {m}" for k in ("fields", "stock", "all") for m in ("med", "worst")]
    out.append("")
    out.append(
        common.table(
            ["provider", "mode", *head, "all p95", "pending", "lost", "ghosts"]
            + ["inv dup", "inv lost", "429s"],
            rows,
            title="Freshness of product changes (minutes), changes lost, ghosts, invoices",
        )
    )
    out.append("")
    for r in results:
        w = r.get("webhooks")
        if not w:
            continue
        out.append(
            f"{r['provider']} deliveries: {w['queued']} queued, {w['dropped']} dropped, "
            f"{w['delivered']} delivered, {w['failed_attempts']} failed attempts, answers "
            f"{w['answers']}, subscriptions {w['subscriptions']}"
        )
        base = polled.get(r["provider"])
        if base:
            out.append(f"{r['provider']} targets: " + _verdict(r, base, args.safety_hours))
    pushed = {r["provider"]: r for r in results if r["mode"] == "webhooks"}
    x_series = pushed.get("lightspeed-x")
    r_series = polled.get("lightspeed")
    if x_series and r_series:
        out.append(
            f"X-Series with webhooks against the R-Series month (polled): "
            f"{x_series['calls_per_month']:,.0f} / {r_series['calls_per_month']:,.0f} = "
            f"{_ratio(x_series['calls_per_month'], r_series['calls_per_month'])} (#20 asks at "
            f"most 0.5); per job "
            + ", ".join(
                f"{job} {x_series['jobs'][job]['per_month']:,.0f}/"
                f"{r_series['jobs'][job]['per_month']:,.0f}"
                for job in JOB_ORDER
            )
        )
    return "\n".join(out)


def _verdict(r: dict[str, Any], base: dict[str, Any], safety_hours: float) -> str:
    f = r["freshness"]["all"]
    checks = {
        "median <= 2 min": f["median_min"] is not None and f["median_min"] <= 2,
        f"worst <= {safety_hours:g} h": f["worst_min"] is not None
        and f["worst_min"] <= safety_hours * 60,
        "0 lost": r["lost_changes"] == 0,
        "calls >= 30% below polled": r["calls_per_month"] <= 0.7 * base["calls_per_month"],
    }
    return ", ".join(f"{k}: {'holds' if ok else 'MISSES'}" for k, ok in checks.items())


def _signed(value: float | None) -> str | None:
    return None if value is None else f"{value:+.1f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


# --- entry point ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--provider",
        action="append",
        choices=common.PROVIDERS,
        help="repeatable; default: all three",
    )
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="days of the schedule run before the month and not counted (default 1)",
    )
    ap.add_argument("--products", type=int, default=5000)
    ap.add_argument("--customers", type=int, default=3000)
    ap.add_argument("--orders", type=int, default=50, help="orders a day")
    ap.add_argument(
        "--change-rate",
        type=float,
        default=plan_mod.REFERENCE.product_change_rate,
        help="share of the products whose price or description changes a day (plan's default)",
    )
    ap.add_argument(
        "--stock-change-rate",
        type=float,
        default=plan_mod.REFERENCE.stock_change_rate,
        help="share of the products whose stock moves a day (plan's default)",
    )
    ap.add_argument("--crontab", default=str(common.ROOT / "crontab.example"))
    ap.add_argument(
        "--sweep",
        default="cron",
        help="cron (the crontab's argument: auto = sweep_budget), plan (plan's model "
        "of auto), or a number",
    )
    ap.add_argument(
        "--mix",
        choices=("merchant", "plain"),
        default="merchant",
        help="the order mix: merchant (tax-inclusive, shipping, payments, 3%% refunds where the "
        "provider takes them; default) or plain (the mix before them)",
    )
    ap.add_argument("--faults", default=None, help="sandbox fault spec, e.g. 'lost:0.02@PUT'")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive strategy")
    ap.add_argument(
        "--naive-sweep",
        default="equal",
        help="products the naive strategy sweeps a day: equal (default: every product within 7 "
        "days, the coverage the target asks of us), or a number (10 is the seed's)",
    )
    ap.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (a throwaway schema is used); default: SQLite in a "
        "temporary directory",
    )
    ap.add_argument(
        "--jobs", type=int, default=1, help="providers simulated in parallel processes (default 1)"
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--json-out", help="also write the results as JSON to this file")
    ap.add_argument("--progress", action="store_true", help="a line per simulated day on stderr")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the jobs' log lines")
    ap.add_argument(
        "--webhooks",
        action="store_true",
        help="each provider's month polled and with webhooks + safety poll, side by side "
        "(default providers: unleashed and lightspeed-x; the R-Series polled beside X-Series)",
    )
    ap.add_argument(
        "--webhook-drop",
        type=float,
        default=0.05,
        help="with --webhooks: the share of deliveries the provider never sends (default 0.05)",
    )
    ap.add_argument(
        "--safety-hours",
        type=float,
        default=2.0,
        help="the safety poll's interval the figures are judged by (synccli's default 2 h)",
    )
    ap.add_argument(
        "--no-r-series", action="store_true", help="with --webhooks: skip the R-Series month"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: write one month's JSON
    ap.add_argument("--worker-mode", default="polled", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.days < 1:
        ap.error("--days must be at least 1")
    if args.sweep not in ("cron", "auto", "plan") and not args.sweep.isdigit():
        ap.error("--sweep is cron, auto, plan or a number")
    if args.naive_sweep != "equal" and not args.naive_sweep.isdigit():
        ap.error("--naive-sweep is equal or a number")
    return args


def tasks(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(provider, mode) of each month to simulate. ``--webhooks``: each provider polled and with
    webhooks, and the R-Series polled beside X-Series (#20 compares their months)."""
    if not args.webhooks:
        return [(p, "polled") for p in args.provider or list(common.PROVIDERS)]
    providers = args.provider or list(common.PUSHED)
    out = [(p, mode) for p in providers for mode in ("polled", "webhooks")]
    if "lightspeed-x" in providers and "lightspeed" not in providers and not args.no_r_series:
        out.append(("lightspeed", "polled"))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the jobs' own warnings (a rejected invoice...) are part of the scenario, not of the output
    logging.getLogger("synccli").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    if args.worker:
        result = simulate(args.provider[0], args, args.worker_mode)
        Path(args.worker).write_text(json.dumps(result, default=str), encoding="utf-8")
        return 0
    info = common.machine()
    todo = tasks(args)
    if args.jobs > 1 and len(todo) > 1:
        results = _parallel(todo, args, argv if argv is not None else sys.argv[1:])
    else:
        results = [simulate(p, args, mode) for p, mode in todo]
    info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    doc = {"machine": info, "args": vars(args), "results": results}
    show = render_webhooks if args.webhooks else render
    common.emit(doc, args.json_out, args.json, lambda: show(results, info, args))
    return 0


def _parallel(todo: list[tuple[str, str]], args: argparse.Namespace, argv: list[str]) -> list[dict]:
    base = [a for a in argv if not a.startswith("--provider") and a not in common.PROVIDERS]
    out_dir = Path(tempfile.mkdtemp(prefix="bench-month-"))
    pending: list[tuple[tuple[str, str], subprocess.Popen, Path]] = []
    results: dict[tuple[str, str], dict] = {}
    queue = sorted(todo, key=lambda t: t[1] != "webhooks")  # the longest months first
    while queue or pending:
        while queue and len(pending) < args.jobs:
            task = queue.pop(0)
            p, mode = task
            target = out_dir / f"{p}-{mode}.json"
            cmd = [sys.executable, __file__, *base, "--provider", p, "--worker", str(target)]
            cmd += ["--worker-mode", mode]
            pending.append((task, subprocess.Popen(cmd, env=os.environ.copy()), target))
        time.sleep(0.5)
        for item in list(pending):
            task, proc, target = item
            if proc.poll() is None:
                continue
            pending.remove(item)
            if proc.returncode != 0:
                raise SystemExit(f"month simulation {task} failed (exit {proc.returncode})")
            results[task] = json.loads(target.read_text(encoding="utf-8"))
    return [results[t] for t in todo]


if __name__ == "__main__":
    raise SystemExit(main())
