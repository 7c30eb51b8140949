"""Rate limit: 600 invoices posted against Xero's 60 calls a minute, under a time scale.

    .venv/bin/python bench/ratelimit.py
    .venv/bin/python bench/ratelimit.py --invoices 120 --time-scale 120 --via connector

The Xero sandbox counts its minute window on real time x ``--time-scale`` (60: a minute lasts one
real second) and the connection carries the same ``time_scale``, so the HTTP layer's pacer window
shrinks alike (the pacer is steered by the sandbox's ``X-MinLimit-Remaining``, as by Xero's).
Contacts and items exist before the clock starts, so only invoice posts are timed and counted.
``--windows`` also prints, for each of the sandbox's minute windows, the invoice posts it admitted
and when the first and last arrived after the window began: where a shortfall comes from (a late
start drifting window after window, or bursts that no longer fit one window).

Three ways in, all measured by default:
- ``connector``: ``XeroConnector.post_invoice`` in a loop (built by ``build_connector`` over the
  store, as a job gets it: store-backed call ledger included);
- ``job``: the orders go into the shop (``invoices add``) and one ``post-invoices`` run posts them
  one invoice per call (connection setting ``invoice_batch=1``), with the job's store work
  (claims, attempts, links) between the calls;
- ``job-batched``: the same run with the provider's batching (Xero takes 50 invoices a call), for
  the record: it spends a fiftieth of the calls, so the rate limit is not in play.

Reported: 429s the sandbox served, the achieved rate in calls per (scaled) minute and its share of
the allowed 60, counted after the first minute's burst. Target: 0 429s and >= 90% of the allowed
rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

from synccli.clock import SystemClock  # noqa: E402
from synccli.connectors.base import InvoiceDraft, InvoiceLine  # noqa: E402
from synccli.sandbox import harness  # noqa: E402
from synccli.store.connections import get_connection  # noqa: E402
from synccli.sync import customers as customer_jobs  # noqa: E402
from synccli.sync import invoices as invoice_jobs  # noqa: E402
from synccli.sync import products as product_jobs  # noqa: E402
from synccli.sync.context import build_connector, job_run  # noqa: E402
from synccli.sync.jobs import Job  # noqa: E402
from synccli.sync.orders import add_orders, line_amounts  # noqa: E402

PER_MINUTE = 60  # Xero's limit per tenant


def _window(running: harness.Running) -> tuple[int, int]:
    c = running.app.counters
    with c.lock:
        posts = c.calls.get(("PUT", "Invoices"), 0)
        return posts, c.throttled


class WindowLog:
    """When the sandbox admitted (or refused) each invoice post, against its minute windows."""

    def __init__(self, running: harness.Running) -> None:
        self.app = running.app
        self.seen: list[tuple[float, float, bool]] = []  # (real s, window start real s, refused)
        take = self.app._take_limits

        def logged(req: Any, tenant: str, client_id: str) -> Any:
            answer = take(req, tenant, client_id)
            if req.method == "PUT":
                start = self.app._limits[tenant].minute.start / self.app.time_scale
                self.seen.append((time.monotonic(), start, answer is not None))
            return answer

        self.app._take_limits = logged  # type: ignore[method-assign]

    def rows(self) -> list[dict[str, Any]]:
        """One row per window: calls admitted, refused, first and last arrival after its start."""
        by_window: dict[float, list[tuple[float, bool]]] = {}
        for t, start, refused in self.seen:
            by_window.setdefault(start, []).append((t, refused))
        rows, origin = [], min(by_window, default=0.0)
        for start, calls in sorted(by_window.items()):
            admitted = [t for t, refused in calls if not refused]
            rows.append(
                {
                    "window_at_s": round(start - origin, 3),
                    "admitted": len(admitted),
                    "refused": len(calls) - len(admitted),
                    "first_ms": round((admitted[0] - start) * 1000, 1) if admitted else None,
                    "last_ms": round((admitted[-1] - start) * 1000, 1) if admitted else None,
                }
            )
        return rows


def _lines(world: Any, i: int) -> list[tuple[Any, int]]:
    products = sorted(world.products.values(), key=lambda p: p.code)
    first = products[i % len(products)]
    second = products[(i * 7 + 3) % len(products)]
    return [(first, 1 + i % 3)] + ([(second, 2)] if second is not first and i % 2 else [])


def via_connector(store: Any, running: harness.Running, n: int, scale: float) -> dict[str, Any]:
    harness.add_connection(store, "rl-connector", running, time_scale=scale)
    conn = get_connection(store, "rl-connector")
    connector = build_connector(store, conn, clock=SystemClock(), time_scale=scale)
    world = running.app.world()
    contacts = sorted(world.customers.values(), key=lambda c: c.code)
    drafts = []
    for i in range(n):
        lines = [
            InvoiceLine(
                product_remote_id=p.id,
                code=p.code,
                description=p.name,
                quantity=Decimal(q),
                unit_price=p.price,
                tax_code="OUTPUT2",
                tax_rate=Decimal("0.15"),
            )
            for p, q in _lines(world, i)
        ]
        drafts.append(
            InvoiceDraft(
                number=f"RL-C-{i + 1:04d}",
                date=datetime(2026, 3, 2, tzinfo=UTC),
                currency="NZD",
                customer_remote_id=contacts[i % len(contacts)].id,
                lines=lines,
                reference=f"RL-C-{i + 1:04d}",
            )
        )
    before = _window(running)
    started = time.perf_counter()
    for d in drafts:
        connector.post_invoice(d, f"rl-connector:{d.number}")
    elapsed = time.perf_counter() - started
    after = _window(running)
    return _figures("connector", n, elapsed, before, after, scale, connector.http.calls, running)


def via_job(
    store: Any, running: harness.Running, n: int, scale: float, batched: bool = False
) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if not batched:
        settings["invoice_batch"] = 1  # one invoice per call: the pacing is what is measured
    harness.add_connection(store, "rl-job", running, time_scale=scale, **settings)
    conn = get_connection(store, "rl-job")
    world = running.app.world()
    contacts = sorted(world.customers.values(), key=lambda c: c.code)
    # the shop knows these customers; link them and the products first (not timed)
    from synccli.store.models import Customer

    with store.session() as s:
        s.add_all(
            Customer(
                connection_id=conn.id,
                name=c.name,
                email=c.email,
                account_number=c.account_number,
                created_at=datetime.now(UTC),
            )
            for c in contacts
        )
    with job_run(store, Job.PULL_PRODUCTS, conn) as jc:
        jc.counts = product_jobs.pull_products(jc)
    with job_run(store, Job.LINK_CUSTOMERS, conn) as jc:
        jc.counts = customer_jobs.link_customers(jc)
    orders = []
    for i in range(n):
        lines, total = [], Decimal("0.00")
        for p, q in _lines(world, i):
            amount, tax = line_amounts(Decimal(q), p.price, Decimal("0.15"))
            total += amount + tax
            lines.append(
                {
                    "sku": p.code,
                    "description": p.name,
                    "quantity": q,
                    "unit_price": str(p.price),
                    "tax_code": "OUTPUT2",
                    "tax_rate": "0.15",
                }
            )
        c = contacts[i % len(contacts)]
        orders.append(
            {
                "number": f"RL-J-{i + 1:04d}",
                "date": "2026-03-02",
                "currency": "NZD",
                "customer": {"email": c.email, "account_number": c.account_number, "name": c.name},
                "lines": lines,
                "total": str(total),
            }
        )
    add_orders(store, conn, "\n".join(json.dumps(o) for o in orders))
    time.sleep(60 / scale)  # a fresh minute window: the set-up calls above do not count
    before = _window(running)
    started = time.perf_counter()
    with job_run(store, invoice_jobs.JOB, conn) as jc:
        report = invoice_jobs.post_invoices(jc)
        jc.counts = report
    elapsed = time.perf_counter() - started
    after = _window(running)
    via = "job (batched)" if batched else "job"
    result = _figures(via, n, elapsed, before, after, scale, jc.calls, running)
    result["job_posted"] = report.posted
    return result


def _figures(
    via: str,
    n: int,
    elapsed: float,
    before: tuple[int, int],
    after: tuple[int, int],
    scale: float,
    client_calls: int,
    running: harness.Running,
) -> dict[str, Any]:
    posts = after[0] - before[0]  # PUT /Invoices the sandbox saw, 429s included
    throttled = after[1] - before[1]
    accepted = posts - throttled
    minutes = elapsed * scale / 60  # scaled (provider) minutes
    # Both the sandbox's window and the client's limiter let the first minute's 60 calls go at
    # once; the rate is counted over the calls after that burst (the steady state).
    steady = max(0, accepted - PER_MINUTE)
    rate = steady / minutes if minutes and steady else (accepted / minutes if minutes else 0.0)
    prefix = "RL-C-" if via == "connector" else "RL-J-"
    numbers = Counter(
        inv.number for inv in running.app.world().invoices.values() if inv.number.startswith(prefix)
    )
    return {
        "via": via,
        "invoices": n,
        "posted_remote": len(numbers),
        "duplicated": sum(v - 1 for v in numbers.values() if v > 1),
        "requests": posts,
        "client_calls": client_calls,
        "throttled_429": throttled,
        "elapsed_s": round(elapsed, 2),
        "scaled_minutes": round(minutes, 2),
        "rate_per_min": round(rate, 1),
        "allowed_per_min": PER_MINUTE,
        "fraction": round(rate / PER_MINUTE, 3),
        "target": (
            "n/a (batched)"
            if posts < n / 2
            else "met"
            if throttled == 0 and rate / PER_MINUTE >= 0.9
            else "MISSED"
        ),
    }


def render(doc: dict[str, Any]) -> str:
    a, info = doc["args"], doc["machine"]
    rows = [
        [
            r["via"],
            r["invoices"],
            r["posted_remote"],
            r["duplicated"],
            r["requests"],
            r["throttled_429"],
            r["elapsed_s"],
            r["scaled_minutes"],
            r["rate_per_min"],
            f"{r['fraction'] * 100:.1f}%",
            r["target"],
        ]
        for r in doc["results"]
    ]
    windows = []
    for r in doc["results"]:
        if r.get("windows"):
            windows += ["", f"{r['via']}: the sandbox's minute windows"]
            windows.append(
                common.table(
                    ["window at s", "admitted", "refused", "first ms", "last ms"],
                    [
                        [w["window_at_s"], w["admitted"], w["refused"], w["first_ms"], w["last_ms"]]
                        for w in r["windows"]
                    ],
                )
            )
    return "\n".join(
        [
            f"bench/ratelimit.py: {a['invoices']} invoices against Xero's {PER_MINUTE}/minute, "
            f"time scale {a['time_scale']:g} (a minute lasts {60 / a['time_scale']:g} s)",
            f"machine: {info['uname']}; nproc {info['nproc']}; Python {info['python']}; "
            f"{info['date']}; commit {info['commit']}; load average {info['load']}",
            "",
            common.table(
                [
                    "via",
                    "invoices",
                    "posted",
                    "duplicated",
                    "PUTs seen",
                    "429s",
                    "real s",
                    "minutes",
                    "per minute",
                    "of allowed",
                    "target",
                ],
                rows,
                title="Target: 0 429s and >= 90% of the allowed rate",
            ),
            *windows,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--invoices", type=int, default=600)
    ap.add_argument("--time-scale", type=float, default=60.0)
    ap.add_argument(
        "--via",
        choices=("connector", "job", "job-batched", "all"),
        default="all",
        help="connector: post_invoice in a loop; job: post-invoices with one invoice a call; "
        "job-batched: post-invoices as the provider batches them (Xero: 50 a call)",
    )
    ap.add_argument("--database-url", default=None, help="PostgreSQL (default: SQLite)")
    ap.add_argument(
        "--windows", action="store_true", help="per minute window: posts admitted, first/last"
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--json-out")
    args = ap.parse_args(argv)
    import logging

    logging.getLogger("synccli").setLevel(logging.ERROR)
    doc: dict[str, Any] = {"machine": common.machine(), "args": vars(args), "results": []}
    ways = ("connector", "job", "job-batched") if args.via == "all" else (args.via,)
    for via in ways:
        # a fresh sandbox and store per way: each starts with an empty minute window
        with common.temp_store(args.database_url) as store:
            running = harness.start("xero", products=100, customers=100, time_scale=args.time_scale)
            log = WindowLog(running) if args.windows else None
            try:
                if via == "connector":
                    result = via_connector(store, running, args.invoices, args.time_scale)
                else:
                    result = via_job(
                        store, running, args.invoices, args.time_scale, via == "job-batched"
                    )
                if log is not None:
                    result["windows"] = log.rows()
                doc["results"].append(result)
            finally:
                running.stop()
    common.emit(doc, args.json_out, args.json, lambda: render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
