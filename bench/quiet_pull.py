"""A quiet pull: the local work of ``pull-products`` when nothing changed at the provider, at
several catalogue sizes, for each provider, by this checkout and (with ``--baseline``) by an
earlier revision, in one run.

    .venv/bin/python bench/quiet_pull.py --baseline main
    .venv/bin/python bench/quiet_pull.py --provider xero --sizes 5000,50000,200000

For each provider and size one sandbox runs in this process (limits off, loopback). Each tree
(this checkout, the baseline exported into a temporary directory) gets a SQLite store of its own
with one connection; a first pull fills it (not measured), then a pull with nothing changed runs
in a fresh process whose CPU time (user + system, from just before the pull to just after it:
the fetch, the parse, the comparison and the store's work; not the interpreter's start-up or
imports) and peak RSS (``VmHWM``: the whole process) are printed. The sandbox's own work happens
in this process and is not counted. The simulator's products are stamped as last changed at
random over the past year (see ``spread``). The load average is printed beside every row.

Target (issue 21): a quiet Xero pull at 200,000 items within 1 s of CPU and 250 MB peak RSS;
the cursor-based providers stay flat as the catalogue grows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

import _common as common  # noqa: E402
import throughput  # noqa: E402
from store_writes import export  # noqa: E402

# The child: imports the synccli of its tree (PYTHONPATH), adds the connection on first use,
# runs one pull and writes what it measured to argv[2].
CHILD = """
import json, resource, sys, time
from pathlib import Path
from synccli.config import load_settings
from synccli.store.connections import add_connection, get_connection, set_values
from synccli.store.db import Store
from synccli.sync import products
from synccli.sync.context import job_run

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def hwm():
    with open("/proc/self/status") as status:
        kb = next(line for line in status if line.startswith("VmHWM:")).split()[1]
    return int(kb) / 1024.0

values = json.loads(Path(sys.argv[1]).read_text())
store = Store(load_settings())
store.upgrade()
try:
    conn = get_connection(store, "shop")
except Exception:
    creds = dict(values["credentials"])
    keys = ("access_token", "refresh_token", "expires_at")
    tokens = {k: creds.pop(k) for k in keys if k in creds}
    add_connection(store, "shop", values["provider"], values["settings"], creds, None)
    if tokens:
        set_values(store, "shop", {k: str(v) for k, v in tokens.items()})
    conn = get_connection(store, "shop")
before_mb = hwm()
started_cpu, started = cpu(), time.perf_counter()
with job_run(store, "pull-products", conn) as jc:
    report = products.pull_products(jc)
    jc.counts = report
out = {
    "cpu_s": round(cpu() - started_cpu, 3),
    "wall_s": round(time.perf_counter() - started, 3),
    "peak_mb": round(hwm(), 1),
    "before_mb": round(before_mb, 1),
    "seen": report.seen,
    "changed": report.changed,
    "new": report.new,
    "calls": report.calls,
    "errors": len(report.errors),
}
store.dispose()
Path(sys.argv[2]).write_text(json.dumps(out))
"""


def pull(tree: Path, data: Path, values: Path) -> dict[str, Any]:
    out = data / "pull.json"
    env = {**os.environ, "PYTHONPATH": str(tree), "SYNC_DATA_DIR": str(data)}
    subprocess.run(
        [sys.executable, "-c", CHILD, str(values), str(out)], env=env, cwd=data, check=True
    )
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    result["load"] = round(os.getloadavg()[0], 2)
    return result


def spread(app: Any) -> None:
    """Stamp the simulator's products as a catalogue's are: last changed at any time over the
    past year. It makes them one second apart, so the 14 hours Unleashed's pulls read again
    before their cursor (its stamps may be that far off) held the newest 50,400 products, every
    pull: a catalogue's changes that dense, not its size."""
    rng = random.Random(21)
    now = datetime.now(UTC)
    for p in app.catalogue.tenant(app.tenant).products.values():
        p.updated_at = p.stock_updated_at = now - timedelta(seconds=rng.randrange(365 * 86400))


def warm(values: Path) -> None:
    """Read Xero's Items once: the simulator renders and keeps each item on its first read (a
    200,000-item answer took over the connector's 30 s timeout on a loaded machine), which no
    provider does."""
    doc = json.loads(values.read_text(encoding="utf-8"))
    settings, creds = doc["settings"], doc["credentials"]
    headers = {
        "Authorization": f"Bearer {creds['access_token']}",
        "xero-tenant-id": settings["tenant_id"],
    }
    url = f"{settings['base_url']}/api.xro/2.0/Items"
    requests.get(url, headers=headers, timeout=600).raise_for_status()


def measure(provider: str, n: int, trees: dict[str, Path], work: Path) -> dict[str, Any]:
    running, _timed = throughput.start_sandbox(provider, n)
    row: dict[str, Any] = {"provider": provider, "products": n}
    spread(running.app)
    try:
        values = throughput.connection_file(running, work)
        if provider == "xero":
            warm(values)
        for name, tree in trees.items():
            data = work / f"{provider}-{n}-{name}"
            data.mkdir(parents=True)
            first = pull(tree, data, values)
            if first["new"] < n or first["errors"]:
                raise SystemExit(f"{provider} {n} ({name}): the first pull stored {first}")
            quiet = pull(tree, data, values)
            if quiet["changed"] or quiet["new"] or quiet["errors"]:
                raise SystemExit(f"{provider} {n} ({name}): the quiet pull found {quiet}")
            row[name] = quiet
            print(
                f"  {provider} {n:,} {name}: {quiet['cpu_s']} s CPU, {quiet['peak_mb']} MB",
                file=sys.stderr,
                flush=True,
            )
    finally:
        running.stop()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--baseline", help="revision to compare with, side by side (e.g. main)")
    ap.add_argument("--provider", action="append", choices=common.PROVIDERS)
    ap.add_argument("--sizes", default="5000,50000,200000", help="catalogue sizes, comma-separated")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--json-out")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="synccli-quiet-"))
    trees = {"ours": ROOT}
    doc: dict[str, Any] = {"machine": common.machine(), "sizes": sizes, "rows": []}
    if args.baseline:
        doc["baseline"] = {"rev": args.baseline, "commit": export(args.baseline, work / "base")}
        trees["baseline"] = work / "base"
    for provider in args.provider or list(common.PROVIDERS):
        for n in sizes:
            doc["rows"].append(measure(provider, n, trees, work))
    doc["machine"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    common.emit(doc, args.json_out, args.json, lambda: render(doc))
    return 0


def render(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    base = doc.get("baseline")
    headers = ["provider", "products", "calls", "CPU s", "peak MB"]
    if base:
        headers += ["baseline CPU s", "baseline MB", "CPU baseline/ours", "MB baseline/ours"]
    headers.append("load (1 min)")
    rows = []
    for r in doc["rows"]:
        ours = r["ours"]
        row: list[Any] = [r["provider"], r["products"], ours["calls"], ours["cpu_s"]]
        row.append(ours["peak_mb"])
        loads = [ours["load"]]
        if base:
            b = r["baseline"]
            row += [b["cpu_s"], b["peak_mb"]]
            row += [_ratio(b["cpu_s"], ours["cpu_s"]), _ratio(b["peak_mb"], ours["peak_mb"])]
            loads.append(b["load"])
        row.append(" / ".join(f"{x:.2f}" for x in loads))
        rows.append(row)
    against = f"; baseline {base['rev']} ({base['commit']})" if base else ""
    return "\n".join(
        [
            "bench/quiet_pull.py: pull-products with nothing changed (the pull's CPU, the "
            f"process's peak RSS; SQLite store, sandbox on loopback){against}",
            f"machine: {m['uname']}; nproc {m['nproc']}; Python {m['python']}; {m['date']}; "
            f"commit {m['commit']}; load average {m['load']} at the start, {m['load_after']} "
            "at the end",
            "",
            common.table(headers, rows),
        ]
    )


def _ratio(baseline: float, ours: float) -> str:
    return f"{baseline / ours:.1f}x" if ours else "-"


if __name__ == "__main__":
    raise SystemExit(main())
