"""A thousand merchants on one PostgreSQL store: a round of ``pull-products --all`` and
``post-invoices --all`` run by one process, then by four processes started at once.

    .venv/bin/python bench/thousand.py                         # 1,000 connections, 100 ms a call
    .venv/bin/python bench/thousand.py --connections 50 --processes 4 --latency 0.1

Every connection points at one simulator (limits off) that answers each call after ``--latency``
seconds (the provider's round trip, slept in a WSGI wrapper so it costs no CPU), so the round is
dominated by waiting, as it is against a real provider. Before the rounds, every connection's
first import runs (no latency, not measured). Each round first changes a few products at the
provider and queues one order for every connection, then starts its processes, each running the
two commands one after the other as cron would, with the real CLI (``python -m synccli``).

Several processes share the connections through the store alone: each (job, connection) is leased
by the process that runs it, and a connection whose job another process finished after this
round began is skipped (``SYNC_MIN_INTERVAL=0``: the round begins when the process starts). The
bench checks that every job ran exactly once for every connection in each round (the ``runs``
table) and that every queued order reached the provider once.

Printed: each round's wall time and the ratio 4-process / 1-process, in one run, with the load
average at the start and end of each round, and each process's peak RSS (``ru_maxrss`` from
``wait4``). Target (issue #21): the 4-process round at most 0.35x the 1-process round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from sqlalchemy import select  # noqa: E402

from synccli.connectors.wire import line_amounts  # noqa: E402
from synccli.sandbox import harness  # noqa: E402
from synccli.sandbox.core import SandboxServer  # noqa: E402
from synccli.store.connections import list_connections  # noqa: E402
from synccli.store.models import Run  # noqa: E402
from synccli.sync.jobs import Job  # noqa: E402
from synccli.sync.orders import add_orders  # noqa: E402

JOBS = (Job.PULL_PRODUCTS, Job.POST_INVOICES)


class Latency:
    """WSGI wrapper: every answer waits ``seconds`` first (a provider's round trip)."""

    def __init__(self, app: Any, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self.calls = 0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # the server asks its app for its parts
        return getattr(self.app, name)

    def __call__(self, environ: dict, start_response: Any) -> Any:
        with self.lock:
            self.calls += 1
        if self.seconds:
            time.sleep(self.seconds)
        return self.app(environ, start_response)


def _cli_env(store_url: str, data_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SYNC_DATABASE_URL=store_url,
        SYNC_DATA_DIR=data_dir,
        SYNC_MIN_INTERVAL="0",
        SYNC_OUTBOX_DIR=str(Path(data_dir) / "outbox"),
    )
    env.pop("SYNC_SMTP_HOST", None)
    return env


def _run_round(env: dict[str, str], processes: int) -> tuple[float, list[dict[str, Any]]]:
    """Start ``processes`` workers at once; each runs ``pull-products --all`` then
    ``post-invoices --all``. Returns (wall seconds, per-invocation records)."""
    started = time.perf_counter()
    live: dict[int, tuple[int, int]] = {}  # pid -> (worker, step)
    records: list[dict[str, Any]] = []

    def spawn(worker: int, step: int) -> None:
        cmd = [sys.executable, "-m", "synccli", "-q", str(JOBS[step]), "--all"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        live[proc.pid] = (worker, step)
        errs[proc.pid] = proc

    errs: dict[int, subprocess.Popen[bytes]] = {}
    for w in range(processes):
        spawn(w, 0)
    while live:
        pid, status, usage = os.wait4(-1, 0)
        if pid not in live:
            continue
        worker, step = live.pop(pid)
        proc = errs.pop(pid)
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.returncode = os.waitstatus_to_exitcode(status)
        records.append(
            {
                "worker": worker,
                "command": str(JOBS[step]),
                "exit": proc.returncode,
                "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "stderr": stderr.strip().splitlines()[-3:],
            }
        )
        if step + 1 < len(JOBS):
            spawn(worker, step + 1)
    return time.perf_counter() - started, records


def _queue_orders(store: Any, conns: list[Any], app: Any, tag: str, rng_seed: int) -> None:
    """One order per connection, for a product and a customer the provider has."""
    products = sorted(
        (p for p in _world(app).products.values() if not p.archived), key=lambda p: p.code
    )
    customers = sorted(_world(app).customers.values(), key=lambda c: c.code)
    tax = common.TAX[app_provider(app)]
    for i, conn in enumerate(conns):
        p = products[(i + rng_seed) % len(products)]
        c = customers[(i + rng_seed) % len(customers)]
        amount, tax_amount = line_amounts(
            Decimal(1), Decimal(str(p.price)), Decimal(common.TAX_RATE)
        )
        order = {
            "number": f"{tag}-{i:04d}",
            "date": datetime.now(UTC).date().isoformat(),
            "currency": "NZD",
            "customer": {"email": c.email, "account_number": c.account_number, "name": c.name},
            "lines": [
                {
                    "sku": p.code,
                    "description": p.name,
                    "quantity": 1,
                    "unit_price": str(p.price),
                    "tax_code": tax,
                    "tax_rate": common.TAX_RATE,
                }
            ],
            "total": str(amount + tax_amount),
        }
        add_orders(store, conn, json.dumps(order))


def _world(app: Any) -> Any:
    return app.catalogue.tenant(app.tenant)


def app_provider(app: Any) -> str:
    return str(app.provider)


def _runs_per_connection(
    store: Any, since: datetime
) -> tuple[dict[str, Counter[int]], dict[str, list[int]]]:
    """Runs since ``since``: per job, how many each connection had; and per job, how many runs
    each process (run owner) made, to show the processes shared the connections."""
    with store.session() as s:
        rows = s.execute(
            select(Run.job, Run.connection_id, Run.owner).where(
                Run.started_at >= since.replace(tzinfo=None)
            )
        ).all()
    out: dict[str, Counter[int]] = {str(j): Counter() for j in JOBS}
    owners: dict[str, Counter[str]] = {str(j): Counter() for j in JOBS}
    for job, conn_id, owner in rows:
        out.setdefault(job, Counter())[conn_id] += 1
        owners.setdefault(job, Counter())[owner] += 1
    return out, {j: sorted(c.values(), reverse=True) for j, c in owners.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.1, help="seconds per provider call")
    ap.add_argument("--provider", default="unleashed")
    ap.add_argument("--products", type=int, default=30, help="products at the provider")
    ap.add_argument("--database-url", help="PostgreSQL URL (default SYNC_TEST_POSTGRES_URL)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    url = common.database_url_from(args.database_url)
    if not url:
        ap.error("a PostgreSQL URL is needed: --database-url or SYNC_TEST_POSTGRES_URL")

    with common.temp_store(url) as store:
        app: Any = harness.create_app(
            args.provider,
            products=args.products,
            customers=50,
            limits=common.NO_LIMITS[args.provider],
        )
        app.provider = args.provider
        wrapped = Latency(app, 0.0)
        server = SandboxServer(cast(Any, wrapped)).start()
        running = harness.Running(args.provider, app, server)
        for i in range(args.connections):
            harness.add_connection(store, f"m{i:04d}", running, notify_email="ops@shop.example")
        conns = sorted(list_connections(store), key=lambda c: c.name)
        env = _cli_env(store.settings.database_url, str(store.settings.data_dir))

        # the first imports (not measured)
        t_onboard, onboard = _run_round(env, 1)
        bad = [r for r in onboard if r["exit"] != 0]
        if bad:
            print(f"onboarding failed: {bad[:2]}", file=sys.stderr)
            return 1

        rounds = []
        for n, procs in enumerate((1, args.processes)):
            app.catalogue.change_prices(app.tenant, 3)
            _queue_orders(store, conns, app, f"R{n}", n * 7)
            invoices_before = len(_world(app).invoices)
            time.sleep(1.0)  # a clear second between rounds (run rows are timed to the second)
            since = datetime.now(UTC)
            wrapped.calls, wrapped.seconds = 0, args.latency
            load0 = os.getloadavg()[0]
            wall, records = _run_round(env, procs)
            load1 = os.getloadavg()[0]
            wrapped.seconds = 0.0
            runs, shares = _runs_per_connection(store, since)
            once = all(runs.get(str(j), Counter()).get(c.id) == 1 for j in JOBS for c in conns)
            posted = len(_world(app).invoices) - invoices_before
            rounds.append(
                {
                    "processes": procs,
                    "wall_s": round(wall, 1),
                    "calls": wrapped.calls,
                    "each_job_once": once,
                    "runs": {j: sum(c.values()) for j, c in runs.items()},
                    "runs_per_process": shares,
                    "orders_posted": posted,
                    "exits": sorted({r["exit"] for r in records}),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in records),
                    "processes_detail": records,
                    "load": [round(load0, 2), round(load1, 2)],
                }
            )
        server.stop()

    ratio = rounds[1]["wall_s"] / rounds[0]["wall_s"] if rounds[0]["wall_s"] else None
    doc = {
        "machine": common.machine(),
        "connections": args.connections,
        "latency_s": args.latency,
        "provider": args.provider,
        "onboarding_s": round(t_onboard, 1),
        "rounds": rounds,
        "ratio": round(ratio, 3) if ratio else None,
    }

    def render() -> str:
        rows = [
            [
                r["processes"],
                r["wall_s"],
                r["calls"],
                "yes" if r["each_job_once"] else "NO",
                r["orders_posted"],
                r["peak_rss_mb"],
                f"{r['load'][0]} -> {r['load'][1]}",
                ",".join(map(str, r["exits"])),
            ]
            for r in rounds
        ]
        title = (
            f"bench/thousand.py: {args.connections:,} {args.provider} connections on PostgreSQL, "
            f"{args.latency * 1000:.0f} ms a call, commit {doc['machine'].get('commit', '?')}"
        )
        head = [
            "procs",
            "wall s",
            "calls",
            "each job once",
            "posted",
            "peak RSS MB",
            "load",
            "exit",
        ]
        lines = [common.table(head, rows, title)]
        per = [
            f"  round {r['processes']}: "
            + ", ".join(
                f"{p['command']}#{p['worker']} {p['peak_rss_mb']} MB {p['cpu_s']} s CPU"
                for p in r["processes_detail"]
            )
            for r in rounds
        ]
        lines += per
        lines += [
            f"  round {r['processes']}: runs per process "
            + "; ".join(f"{j} {v}" for j, v in r["runs_per_process"].items())
            for r in rounds
        ]
        lines.append(
            f"ratio {args.processes}-process / 1-process wall: **{doc['ratio']}** (target <= 0.35)"
        )
        return "\n".join(lines)

    common.emit(doc, args.json_out, args.json, render)
    ok = all(r["each_job_once"] and r["orders_posted"] == args.connections for r in rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
