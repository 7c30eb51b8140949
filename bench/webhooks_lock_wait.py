"""How long a receiver's insert waits while the applier applies a backlog (issue 23), on SQLite.

    .venv/bin/python bench/webhooks_lock_wait.py                        # this checkout
    .venv/bin/python bench/webhooks_lock_wait.py --baseline /tmp/before # and an earlier one

SQLite has one writer: while the applier writes a batch of delivered records, the receiver's
insert of the next delivery waits for the lock. Here, in one process as `webhooks serve` runs
them, the applier applies ``--backlog`` pending X-Series product records (the burst bench's
records) while a receiver thread, on a store of its own, stores one delivery after another and
times each insert's transaction. Printed: the inserts' p50, p99 and max, how many were stored
while the applier ran, its wall time, and the load average. With ``--baseline DIR`` the same runs
go against the synccli checkout in DIR (a `git worktree add --detach DIR COMMIT`), in turn, in
the same run, and the ratios are printed. No network; a throwaway store each run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms)) - 1))]


def measure(backlog: int) -> dict[str, Any]:
    """One run against the synccli importable here (PYTHONPATH picks the checkout)."""
    sys.path.insert(0, str(HERE.parent))
    import webhooks_burst as burst

    from synccli.clock import SystemClock
    from synccli.config import load_settings
    from synccli.store.connections import add_connection
    from synccli.store.db import Store
    from synccli.store.webhooks import record_delivery, record_events
    from synccli.sync.push import apply_connection
    from synccli.webhooks import parse

    with tempfile.TemporaryDirectory() as data:
        os.environ["SYNC_DATA_DIR"] = data
        os.environ.pop("SYNC_DATABASE_URL", None)
        store = Store(load_settings())
        store.upgrade()
        settings = {"grant": "personal_token", "domain_prefix": "benchstore",
                    "base_url": "http://127.0.0.1:9", "outlet_id": "06e35f89-3e2a"}  # fmt: skip
        creds = {"client_secret": "bench-token", "webhook_key": burst.TOKEN}
        conn = add_connection(store, "bench", "lightspeed-x", settings, creds)
        # the receiver's deliveries are another connection's: the applier's work stays the
        # backlog, while their inserts need the same (one) write lock
        other = add_connection(store, "other", "lightspeed-x", settings, creds)

        def event(n: int, cid: int) -> Any:
            now = datetime.now(UTC)
            found = parse.lightspeed_x_event(burst.delivery(n), "product.update", now)
            return dataclasses.replace(found, connection_id=cid)

        with store.session() as s:
            record_events(s, [event(n, conn.id) for n in range(backlog)], datetime.now(UTC))
        receiver = Store(load_settings())  # another pool, as the receiver's threads have
        done = threading.Event()
        times: list[float] = []

        def receive() -> None:
            n = backlog
            while not done.is_set():
                one = event(n, other.id)
                began = time.perf_counter()
                with receiver.session() as s:
                    record_events(s, [one], datetime.now(UTC))
                    record_delivery(s, other.id, datetime.now(UTC))
                times.append((time.perf_counter() - began) * 1000)
                n += 1

        thread = threading.Thread(target=receive, daemon=True)
        thread.start()
        began = time.perf_counter()
        applied = 0
        while True:
            report = apply_connection(store, conn, SystemClock())
            applied += report.applied
            if not report.applied:
                break
        wall = time.perf_counter() - began
        done.set()
        thread.join(30)
        receiver.dispose()
        store.dispose()
    ms = sorted(times)
    return {
        "backlog": backlog,
        "applied": applied,
        "inserts": len(ms),
        "apply_wall_s": round(wall, 2),
        "insert_ms": {
            "p50": round(percentile(ms, 0.5), 1),
            "p99": round(percentile(ms, 0.99), 1),
            "max": round(ms[-1], 1) if ms else None,
        },
    }


def run_in(checkout: str | None, backlog: int) -> dict[str, Any]:
    """``measure`` in a process of its own, on this checkout or on ``checkout``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    if checkout:
        env["PYTHONPATH"] = checkout
    out = subprocess.run(
        [sys.executable, str(HERE), "--measure", "--backlog", str(backlog)],
        env=env, cwd=checkout or HERE.parents[1], capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(out.stdout), code=checkout or "this checkout")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backlog", type=int, default=2000, help="pending records to apply")
    ap.add_argument("--baseline", metavar="DIR", help="also the synccli checkout in DIR")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each, in turn")
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.backlog)))
        return 0
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    codes: list[str | None] = [None]
    if args.baseline:
        codes.append(str(Path(args.baseline).resolve()))
    runs: dict[str | None, list[dict[str, Any]]] = {code: [] for code in codes}
    for _ in range(max(1, args.repeat)):
        for code in codes:
            runs[code].append(run_in(code, args.backlog))
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"receiver inserts while the applier applies {args.backlog} records (SQLite)")
    summary: dict[str | None, dict[str, float]] = {}
    for code, found in runs.items():
        p99 = sorted(r["insert_ms"]["p99"] for r in found)[len(found) // 2]
        peak = sorted(r["insert_ms"]["max"] for r in found)[len(found) // 2]
        wall = sorted(r["apply_wall_s"] for r in found)[len(found) // 2]
        summary[code] = {"p99": p99, "max": peak, "wall": wall}
        for r in found:
            ms = r["insert_ms"]
            print(
                f"  {r['code']}: inserts {r['inserts']}, p50 {ms['p50']} ms, p99 {ms['p99']} ms, "
                f"max {ms['max']} ms; applied {r['applied']} in {r['apply_wall_s']} s"
            )
    print(f"load average before {load_before}, after {load_after}")
    if args.baseline:
        this, base = summary[None], summary[codes[1]]
        print(
            "this / baseline (medians of the runs): "
            + ", ".join(f"{k} x{this[k] / base[k]:.2f}" for k in ("p99", "max", "wall") if base[k])
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
