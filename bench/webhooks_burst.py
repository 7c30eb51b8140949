"""A burst of webhook deliveries on loopback against `synccli webhooks serve` (issue 23, line 8):
none lost, and how long each answer took.

    .venv/bin/python bench/webhooks_burst.py                 # 1,000 deliveries, SQLite store
    .venv/bin/python bench/webhooks_burst.py --database-url postgresql+psycopg://...
    .venv/bin/python bench/webhooks_burst.py --baseline /tmp/before   # and an earlier checkout's

The receiver runs as in production: its own process (`synccli webhooks serve`, waitress, 8
threads) on a fresh store. ``--clients`` senders start at once, each on a keep-alive connection,
and send X-Series deliveries (form-encoded 1.0-shaped product records of about 1.5 kB, each with
the connection's URL token) until ``--count`` have gone; then a tenth of them again (a provider's
retries), which must add no row. Printed: answer times (p50, p95, p99, max, from the sender's
side: connect to last byte), deliveries stored against sent, duplicates stored, wall time, and
the load average before and after (another process's work on the machine slows every figure).

Loopback only, and bounded: at most 20,000 deliveries, and the run stops after ``--timeout``
seconds whatever it has done (then it says so and exits 1).

Each store's burst runs twice, side by side in one run: the receiver as `webhooks serve` runs it,
with the thread that applies the delivered records (its writes compete with the receiver's for
the store), and without. With a PostgreSQL URL (``--database-url``, else
``SYNC_TEST_POSTGRES_URL``) the same runs go against PostgreSQL too; the ratios are printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

import _common as common  # noqa: E402
from sqlalchemy import func  # noqa: E402
from sqlalchemy import select as sql_select  # noqa: E402

from synccli.store.connections import add_connection  # noqa: E402
from synccli.store.models import WebhookEventRow  # noqa: E402

TOKEN = "bench-token-" + "7" * 40
LISTENING = re.compile(r"receiving webhooks on http://127\.0\.0\.1:(\d+)/")
MAX_COUNT = 20_000


def delivery(n: int) -> bytes:
    """The n-th product change, as X-Series posts it [D-WH]: 1.0-shaped, form-encoded."""
    record = {
        "id": f"0af7b240-{n:04x}-11e8-ed44-{n:012x}",
        "handle": f"product-{n}",
        "name": f"Product {n}",
        "description": "<p>" + "A plain description of a shop's product. " * 20 + "</p>",
        "sku": f"SKU-{n:06d}",
        "price": 12.5 + n % 100,
        "tax": 1.88,
        "active": True,
        "version": 1000 + n,
        "updated_at": "2026-03-01 09:00:00",
        "inventory": [{"outlet_id": "06e35f89-3e2a", "count": str(n % 40)}],
    }
    return urlencode({"payload": json.dumps(record), "domain_prefix": "benchstore"}).encode()


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms)) - 1))]


class Sender(threading.Thread):
    def __init__(self, port: int, numbers: list[int], deadline: float) -> None:
        super().__init__(daemon=True)
        self.port, self.numbers, self.deadline = port, numbers, deadline
        self.times: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        path = f"/webhooks/bench/{TOKEN}?type=product.update"
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}
        for n in self.numbers:
            if time.monotonic() > self.deadline:
                return
            body = delivery(n)
            began = time.monotonic()
            try:
                conn.request("POST", path, body, headers)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            self.times.append((time.monotonic() - began) * 1000)
            self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
        conn.close()


def burst(port: int, numbers: list[int], clients: int, deadline: float) -> list[Sender]:
    shares = [numbers[i::clients] for i in range(clients)]
    senders = [Sender(port, share, deadline) for share in shares if share]
    for s in senders:
        s.start()
    for s in senders:
        s.join(max(0.0, deadline - time.monotonic()) + 1)
    return senders


def start_receiver(
    env: dict[str, str], threads: int, apply: bool, checkout: str | None = None
) -> tuple[subprocess.Popen[str], int]:
    if checkout:  # the receiver's code from another checkout (--baseline), ahead of this one
        env = {**env, "PYTHONPATH": checkout}
    proc = subprocess.Popen(
        [sys.executable, "-m", "synccli", "webhooks", "serve", "--port", "0",
         "--threads", str(threads), "--apply" if apply else "--no-apply"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=checkout or ROOT,  # `-m` puts the working directory first on the path
    )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    found = LISTENING.search(proc.stdout.readline() if ready else "")
    if not found:
        proc.kill()
        raise SystemExit("the receiver did not start")
    return proc, int(found.group(1))


def run_once(
    args: argparse.Namespace,
    count: int,
    database_url: str | None,
    apply: bool,
    checkout: str | None = None,
) -> dict[str, Any]:
    """One burst against a receiver on a fresh store (SQLite, or PostgreSQL at the URL), its
    applier thread on or off."""
    with common.temp_store(database_url) as store:
        add_connection(
            store, "bench", "lightspeed-x",
            # no call is made: the applier applies records without one (a dead address, so a
            # call would show as an error, never reach anything)
            {"grant": "personal_token", "domain_prefix": "benchstore",
             "base_url": "http://127.0.0.1:9"},
            {"client_secret": "bench-personal-token", "webhook_key": TOKEN},
        )  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
        env["SYNC_DATA_DIR"] = str(store.settings.data_dir)
        env["SYNC_DATABASE_URL"] = store.settings.database_url
        proc, port = start_receiver(env, args.threads, apply, checkout)
        try:
            began = time.monotonic()
            deadline = began + args.timeout
            senders = burst(port, list(range(count)), args.clients, deadline)
            wall = time.monotonic() - began
            retries = burst(port, list(range(0, count, 10)), args.clients, deadline)
        finally:
            proc.terminate()
            proc.wait(30)
        with store.read_session() as s:
            stored = s.scalar(sql_select(func.count()).select_from(WebhookEventRow)) or 0
            by_state = sql_select(WebhookEventRow.state, func.count()).group_by(
                WebhookEventRow.state
            )
            states = {state: n for state, n in s.execute(by_state)}
        kind = common.store_label(store)
    times = sorted(t for s in senders for t in s.times)
    statuses: dict[int, int] = {}
    for sender in [*senders, *retries]:
        for code, n in sender.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
    return {
        "store": kind,
        "applier": apply,
        "baseline": checkout,
        "sent": count,
        "answered": len(times),
        "statuses": statuses,
        "errors": sum(sender.errors for sender in [*senders, *retries]),
        "stored": stored,
        "lost": max(0, count - stored),
        "retries_sent": len(range(0, count, 10)),
        "retries_answered_200": sum(sender.statuses.get(200, 0) for sender in retries),
        "duplicates_stored": max(0, stored - count),
        "states_after": states,  # what the applier thread made of them by the end
        "wall_s": round(wall, 2),
        "per_second": round(len(times) / wall, 1) if wall else None,
        "answer_ms": answer_ms(times),
        "_times": times,  # pooled over --repeat, then dropped
    }


def answer_ms(times: list[float]) -> dict[str, float | None]:
    return {
        "p50": round(percentile(times, 0.50), 1),
        "p95": round(percentile(times, 0.95), 1),
        "p99": round(percentile(times, 0.99), 1),
        "max": round(times[-1], 1) if times else None,
    }


def pooled(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """One receiver's repeats (--repeat) as one row: counts added, answer times pooled."""
    out = dict(repeats[0])
    for key in ("sent", "answered", "errors", "stored", "lost", "retries_sent",
                "retries_answered_200", "duplicates_stored", "wall_s"):  # fmt: skip
        out[key] = round(sum(r[key] for r in repeats), 2)
    for key in ("statuses", "states_after"):
        merged: dict[Any, int] = {}
        for r in repeats:
            for k, n in r[key].items():
                merged[k] = merged.get(k, 0) + n
        out[key] = merged
    times = sorted(t for r in repeats for t in r["_times"])
    out["per_second"] = round(len(times) / out["wall_s"], 1) if out["wall_s"] else None
    out["answer_ms"] = answer_ms(times)
    out["repeats"] = len(repeats)
    del out["_times"]
    return out


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> str:
    """b against a, in this run: p99 and deliveries a second."""
    p99 = b["answer_ms"]["p99"] / a["answer_ms"]["p99"] if a["answer_ms"]["p99"] else None
    rate = b["per_second"] / a["per_second"] if a["per_second"] else None
    return f"p99 x{p99:.2f}, deliveries a second x{rate:.2f}" if p99 and rate else "-"


def _label(r: dict[str, Any]) -> str:
    base = " (baseline)" if r.get("baseline") else ""
    return f"{r['store']}, applier {'on' if r['applier'] else 'off'}{base}"


def render(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    rows = []
    for r in runs:
        ms = r["answer_ms"]
        rows.append(
            [_label(r), r["sent"], r["answered"], r["stored"], r["lost"],
             r["duplicates_stored"], f"{r['retries_answered_200']}/{r['retries_sent']}",
             ms["p50"], ms["p95"], ms["p99"], ms["max"], r["per_second"]]
        )  # fmt: skip
    head = ["receiver", "sent", "answered", "stored", "lost", "dup", "retries 200", "p50 ms",
            "p95 ms", "p99 ms", "max ms", "a second"]  # fmt: skip
    m = doc["machine"]
    lines = [
        common.table(head, rows, "webhook burst on loopback (one receiver process each)"),
        f"senders {doc['clients']}, receiver threads {doc['receiver_threads']}, each receiver "
        f"run {runs[0].get('repeats', 1)} time(s) in turn; load average "
        f"before {m['load_before']}, after {m['load_after']}",
    ]
    by = {(r["store"], r["applier"]): r for r in runs if not r.get("baseline")}
    for r in runs:
        if r.get("baseline") and (r["store"], r["applier"]) in by:
            this = by[(r["store"], r["applier"])]
            peak = this["answer_ms"]["max"] / r["answer_ms"]["max"] if r["answer_ms"]["max"] else 0
            lines.append(
                f"{_label(this)}: this code / the baseline in this run: {_ratio(r, this)}, "
                f"max x{peak:.2f} (baseline: {r['baseline']})"
            )
    for store in ("sqlite", "postgresql"):
        if (store, True) in by and (store, False) in by:
            ratio = _ratio(by[(store, False)], by[(store, True)])
            lines.append(f"{store}, applier on / off in this run: {ratio}")
    for applier in (True, False):
        if ("sqlite", applier) in by and ("postgresql", applier) in by:
            ratio = _ratio(by[("sqlite", applier)], by[("postgresql", applier)])
            lines.append(f"postgresql / sqlite (applier {'on' if applier else 'off'}): {ratio}")
    lines.append("ok: none lost" if doc["ok"] else "FAILED: deliveries lost or refused")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000, help="deliveries (at most 20,000)")
    ap.add_argument("--clients", type=int, default=16, help="senders at once")
    ap.add_argument("--threads", type=int, default=8, help="the receiver's threads")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up")
    ap.add_argument(
        "--database-url",
        help="also PostgreSQL (a throwaway schema), side by side with SQLite; default "
        "SYNC_TEST_POSTGRES_URL when set",
    )
    ap.add_argument("--sqlite-only", action="store_true", help="no PostgreSQL run")
    ap.add_argument(
        "--no-apply",
        action="store_true",
        help="only the receiver without its applier thread (default: with it, as `webhooks "
        "serve` runs, and without, side by side)",
    )
    ap.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run the receiver (applier on) from the synccli checkout in DIR, e.g. a "
        "`git worktree add --detach DIR COMMIT` of an earlier commit, side by side in this run",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every receiver this many times, in turn, and pool the answer times",
    )
    ap.add_argument("--json", action="store_true", help="JSON output")
    ap.add_argument("--json-out", help="also write the JSON here")
    args = ap.parse_args()
    count = max(1, min(args.count, MAX_COUNT))
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    urls: list[str | None] = [None]
    postgres = None if args.sqlite_only else common.database_url_from(args.database_url)
    if postgres:
        urls.append(postgres)
    modes = (False,) if args.no_apply else (True, False)
    plan: list[tuple[str | None, bool, str | None]] = []
    for url in urls:
        for apply in modes:
            plan.append((url, apply, None))
            if args.baseline and apply:
                plan.append((url, apply, str(Path(args.baseline).resolve())))
    done: list[list[dict[str, Any]]] = [[] for _ in plan]
    for _ in range(max(1, args.repeat)):  # alternating, so the machine's drift hits each alike
        for i, (url, apply, checkout) in enumerate(plan):
            done[i].append(run_once(args, count, url, apply, checkout))
    runs = [pooled(repeats) for repeats in done]
    doc: dict[str, Any] = {
        "machine": common.machine() | {"load_before": load_before},
        "runs": runs,
        "clients": args.clients,
        "receiver_threads": args.threads,
    }
    doc["machine"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    doc["ok"] = all(
        r["answered"] == r["stored"] == count * r["repeats"]
        and r["errors"] == 0
        and not r["duplicates_stored"]
        for r in runs
    )
    common.emit(doc, args.json_out, args.json, lambda: render(doc))
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
