"""Store writes, side by side: a first pull of 50,000 products with stock into PostgreSQL, by
this checkout and by an earlier revision, against the same sandboxes in one run.

    .venv/bin/python bench/store_writes.py --baseline main
    .venv/bin/python bench/store_writes.py --baseline 413862a --provider unleashed --repeat 5

The baseline revision is exported (``git archive``) into a temporary directory and its pulls run
there, in subprocesses that import its ``synccli``; this checkout's pulls run the same way from
here. Runs alternate (baseline, ours, baseline, ours...), so the machine's load, which no one run
controls, falls on both alike; the load average is printed beside every pair. The figure to read
is the ratio of medians (baseline seconds / ours), not either absolute time: an absolute time
measured on a loaded machine says little about another day's. Both sides read the same answers
from one simulator in this process; the seconds it spends building them are added up per pull
and the ratio is also given without them (the simulator's time is not the pull's).

Target (issue 21): ratio >= 3 for every provider.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]


# --- the worker: imports the synccli of the tree it runs in (PYTHONPATH) ------------------------
def worker(values_path: str, database_url: str, out: str) -> None:
    from sqlalchemy import func, select, text

    import synccli
    from synccli.config import load_settings
    from synccli.store.connections import add_connection, get_connection, set_values
    from synccli.store.db import Store, make_engine
    from synccli.store.models import Product
    from synccli.sync import products
    from synccli.sync.context import job_run

    values = json.loads(Path(values_path).read_text(encoding="utf-8"))
    calls = _CallClock()
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = make_engine(database_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in database_url else "?"
    url = f"{database_url}{sep}options=-csearch_path%3D{schema}&application_name={schema}"
    data_dir = tempfile.mkdtemp(prefix="synccli-bench-")
    os.environ["SYNC_DATA_DIR"] = data_dir
    try:
        store = Store(load_settings(database_url=url, data_dir=data_dir))
        store.upgrade()
        creds = dict(values["credentials"])
        tokens = {
            k: creds.pop(k) for k in ("access_token", "refresh_token", "expires_at") if k in creds
        }
        add_connection(store, "shop", values["provider"], values["settings"], creds, None)
        if tokens:
            set_values(store, "shop", {k: str(v) for k, v in tokens.items()})
        connection = get_connection(store, "shop")
        server = _backend_cpu(admin, schema)
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        with job_run(store, "pull-products", connection) as ctx, calls.timing():
            report = products.pull_products(ctx)
            ctx.counts = report
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        server_after = _backend_cpu(admin, schema)
        with store.session() as s:
            stored = s.scalar(select(func.count()).select_from(Product)) or 0
            stocked = (
                s.scalar(
                    select(func.count()).select_from(Product).where(Product.stock.is_not(None))
                )
                or 0
            )
        store.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
    result = {
        "synccli": str(Path(synccli.__file__).resolve().parents[1]),
        "seconds": round(seconds, 3),
        "cpu_s": round(
            after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
            3,
        ),
        # the database's side of the pull: its backends' CPU (PostgreSQL on this machine)
        "server_cpu_s": round(sum(t - server.get(pid, 0.0) for pid, t in server_after.items()), 3),
        "calls_s": round(calls.seconds, 3),
        "calls": calls.count,
        "stored": stored,
        "with_stock": stocked,
        "errors": len(report.errors),
    }
    Path(out).write_text(json.dumps(result), encoding="utf-8")


class _CallClock:
    """The wall seconds the pull spent in its calls to the provider (each ``HttpClient.request``,
    with the ledger's reads and writes around it), added up. A pull makes one call at a time,
    so no pull, ours or the baseline's, can take less than these: with the same calls on both
    sides, the baseline's time over ours' calls bounds the ratio any store could reach."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def timing(self) -> Any:
        from synccli.connectors.http import HttpClient

        real = HttpClient.request

        def timed(client: Any, *args: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return real(client, *args, **kw)
            finally:
                with self.lock:
                    self.seconds += time.perf_counter() - started
                    self.count += 1

        HttpClient.request = timed  # type: ignore[method-assign]
        try:
            yield
        finally:
            HttpClient.request = real  # type: ignore[method-assign]


def _backend_cpu(admin: Any, schema: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving the pull's store (by the
    application name its connections carry), read from /proc: the server runs on this machine."""
    from sqlalchemy import text

    with admin.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :n"), {"n": schema}
        ).scalars()
        found = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


# --- the parent ----------------------------------------------------------------------------------
def export(rev: str, into: Path) -> str:
    """``rev``'s tree, exported into ``into``; answers its short commit."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", f"{rev}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    archive = into.with_suffix(".tar")
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), commit],
        check=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
    return commit


def measure(tree: Path, values: Path, database_url: str, timed: Any = None) -> dict[str, Any]:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    served = timed.seconds if timed is not None else 0.0
    env = {**os.environ, "PYTHONPATH": str(tree)}
    load = os.getloadavg()[0]
    cmd = [sys.executable, str(HERE), "--worker", str(values), "--store-url", database_url]
    proc = subprocess.run([*cmd, "--out", str(out)], env=env, cwd=tree)
    if proc.returncode != 0:
        raise SystemExit(f"the pull from {tree} failed (exit {proc.returncode})")
    result = json.loads(out.read_text(encoding="utf-8"))
    out.unlink()
    if Path(result["synccli"]) != tree.resolve():  # the right code ran, or the ratio is void
        raise SystemExit(f"expected synccli from {tree}, ran {result['synccli']}")
    result["load"] = round(load, 2)
    # the simulator answers from this process: the seconds it spent building answers are not
    # the pull's, and the same answers cost both sides alike
    result["sandbox_s"] = round(timed.seconds - served, 3) if timed is not None else 0.0
    result["own_s"] = round(max(1e-3, result["seconds"] - result["sandbox_s"]), 3)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(HERE.parent))
    import _common as common
    import throughput

    url = common.database_url_from(args.database_url)
    if not url:
        raise SystemExit("a PostgreSQL URL is needed (--database-url or SYNC_TEST_POSTGRES_URL)")
    work = Path(tempfile.mkdtemp(prefix="synccli-store-writes-"))
    baseline_tree = work / "baseline"
    commit = export(args.baseline, baseline_tree)
    doc: dict[str, Any] = {
        "machine": common.machine(),
        "baseline": {"rev": args.baseline, "commit": commit},
        "products": args.products,
        "pulls": [],
    }
    for name in args.provider or []:
        if name not in common.PROVIDERS:
            raise SystemExit(f"--provider {name}: one of {', '.join(common.PROVIDERS)}")
    for provider in args.provider or common.PROVIDERS:
        running, timed = throughput.start_sandbox(provider, args.products)
        try:
            values = throughput.connection_file(running, work)
            # the sandbox renders each listing row on its first read: a warm-up for both
            measure(ROOT, values, url, timed)
            pairs = []
            for _ in range(args.repeat):
                base = measure(baseline_tree, values, url, timed)
                ours = measure(ROOT, values, url, timed)
                pairs.append({"baseline": base, "ours": ours})
                print(
                    f"  {provider}: baseline {base['seconds']} s, ours {ours['seconds']} s "
                    f"(in calls {base['calls_s']} / {ours['calls_s']} s) "
                    f"(less the simulator's {base['sandbox_s']} / {ours['sandbox_s']} s) "
                    f"(load {base['load']} / {ours['load']})",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            running.stop()
        base_s = statistics.median(p["baseline"]["seconds"] for p in pairs)
        ours_s = statistics.median(p["ours"]["seconds"] for p in pairs)
        complete = all(
            r["stored"] == args.products and r["with_stock"] == args.products and not r["errors"]
            for p in pairs
            for r in p.values()
        )
        base_own = statistics.median(p["baseline"]["own_s"] for p in pairs)
        ours_own = statistics.median(p["ours"]["own_s"] for p in pairs)
        ours_calls = statistics.median(p["ours"]["calls_s"] for p in pairs)
        cpu_ratio = statistics.median(_cpu(p["baseline"]) for p in pairs) / max(
            1e-9, statistics.median(_cpu(p["ours"]) for p in pairs)
        )
        doc["pulls"].append(
            {
                "provider": provider,
                "baseline_s": base_s,
                "ours_s": ours_s,
                "ratio": round(base_s / ours_s, 2),
                "own_ratio": round(base_own / ours_own, 2),
                "cpu_ratio": round(cpu_ratio, 2),
                "baseline_cpu_s": statistics.median(_cpu(p["baseline"]) for p in pairs),
                "ours_cpu_s": statistics.median(_cpu(p["ours"]) for p in pairs),
                "ours_calls_s": ours_calls,
                "calls": pairs[0]["ours"]["calls"],
                # the most any store could make of it: the baseline's time over ours' calls
                "calls_bound": round(base_s / max(1e-9, ours_calls), 2),
                "loads": [[p["baseline"]["load"], p["ours"]["load"]] for p in pairs],
                "complete": complete,
            }
        )
    doc["machine"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return doc


def _cpu(run: dict[str, Any]) -> float:
    """The pull's CPU seconds, ours and the database's: less sensitive to a loaded machine than
    its wall time (which also holds the time other processes had the cores)."""
    return float(run["cpu_s"] + run["server_cpu_s"])


def render(doc: dict[str, Any]) -> str:
    import _common as common

    m = doc["machine"]
    rows = [
        [
            r["provider"],
            r["baseline_s"],
            r["ours_s"],
            f"{r['ratio']}x",
            f"{r['own_ratio']}x",
            r["baseline_cpu_s"],
            r["ours_cpu_s"],
            f"{r['cpu_ratio']}x",
            f"{r['ours_calls_s']} ({r['calls']})",
            f"{r['calls_bound']}x",
            " ".join(f"{a}/{b}" for a, b in r["loads"]),
            "yes" if r["complete"] else "NO",
            "met" if r["ratio"] >= 3 else "MISSED",
        ]
        for r in doc["pulls"]
    ]
    return "\n".join(
        [
            f"bench/store_writes.py: first pull of {doc['products']:,} products with stock into "
            f"PostgreSQL; baseline {doc['baseline']['rev']} ({doc['baseline']['commit']}) and this "
            f"checkout ({m['commit']}), alternating, in one run",
            f"machine: {m['uname']}; nproc {m['nproc']}; Python {m['python']}; {m['date']}; "
            f"load average {m['load']} at the start, {m['load_after']} at the end",
            "",
            common.table(
                [
                    "provider",
                    "baseline s",
                    "ours s",
                    "baseline/ours",
                    "less simulator",
                    "baseline CPU s",
                    "ours CPU s",
                    "CPU baseline/ours",
                    "ours in calls s (calls)",
                    "bound: baseline/ours' calls",
                    "load (1 min) per pair",
                    "all stored",
                    "target >= 3x",
                ],
                rows,
                title="Medians of the alternating runs (less simulator: the wall time less the "
                "seconds the simulator spent answering; CPU: the pull's process and its "
                "PostgreSQL backends; in calls: ours' wall seconds inside its calls to the "
                "provider, one at a time, which no store write shortens)",
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--baseline", default="main", help="revision to compare with (default main)")
    ap.add_argument("--provider", action="append", help="a provider (default: every one)")
    ap.add_argument("--products", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3, help="pairs of runs (medians compared)")
    ap.add_argument("--database-url", help="PostgreSQL URL (default: SYNC_TEST_POSTGRES_URL)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--json-out")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--store-url", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.store_url, args.out)
        return 0
    doc = run(args)
    import _common as common

    common.emit(doc, args.json_out, args.json, lambda: render(doc))
    return 0 if all(r["complete"] for r in doc["pulls"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
