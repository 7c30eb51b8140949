"""What the three benchmark scripts share: a throwaway store, the crontab's run times, sandbox
settings, machine facts and plain-text tables.

The scripts run from the repository root with the project's venv (``.venv/bin/python bench/X.py``);
nothing here is part of the installed package.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the checkout importable without install
    sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from synccli import registry  # noqa: E402
from synccli.config import load_settings  # noqa: E402
from synccli.store.db import Store, make_engine  # noqa: E402
from synccli.sync.plan import JOBS, Entry, _field_values, parse_crontab  # noqa: E402

PROVIDERS = registry.suite_names()
# the providers whose webhooks push product changes: the month with webhooks runs these
PUSHED = registry.pushed_product_names()
# Sandbox time scale (and the same on the connection): short limit windows (Xero's minute,
# Lightspeed's leaky bucket) run this much faster than real time, so a simulated month does not
# wait out real minutes. Day and month windows run on the simulated clock and are untouched.
TIME_SCALE = dict.fromkeys(PROVIDERS, 1000.0)
TAX = {p.name: p.sandbox.tax_code for p in registry.providers()}  # 15% at each sandbox
TAX_RATE = "0.15"
# Limits high enough to never answer 429: for the naive strategy's twin sandbox and throughput.
NO_LIMITS: dict[str, dict[str, Any]] = {
    p: dict(importlib.import_module(registry.get(p).sandbox.module).NO_LIMITS) for p in PROVIDERS
}
AUTH_ENDPOINTS = ("identity.", "oauth.", "connections")  # token calls are not API calls


# --- the store ------------------------------------------------------------------------------------
@contextmanager
def temp_store(database_url: str | None = None) -> Iterator[Store]:
    """An upgraded store that disappears afterwards: SQLite in a temporary data directory, or
    PostgreSQL in a throwaway schema of ``database_url`` (dropped at the end)."""
    data_dir = Path(tempfile.mkdtemp(prefix="synccli-bench-"))
    old = os.environ.get("SYNC_DATA_DIR")
    os.environ["SYNC_DATA_DIR"] = str(data_dir)
    schema = None
    url = database_url
    try:
        if database_url:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            admin = make_engine(database_url)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            admin.dispose()
            parsed = make_url(database_url)
            url = parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
                hide_password=False
            )
        store = Store(load_settings(database_url=url, data_dir=str(data_dir)))
        store.upgrade()
        try:
            yield store
        finally:
            store.dispose()
    finally:
        if schema and database_url:
            admin = make_engine(database_url)
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()
        if old is None:
            os.environ.pop("SYNC_DATA_DIR", None)
        else:
            os.environ["SYNC_DATA_DIR"] = old
        shutil.rmtree(data_dir, ignore_errors=True)


def database_url_from(option: str | None) -> str | None:
    """``--database-url``, else SYNC_TEST_POSTGRES_URL, else None (SQLite only)."""
    return option or os.environ.get("SYNC_TEST_POSTGRES_URL") or None


def store_label(store: Store) -> str:
    return "sqlite" if store.is_sqlite else "postgresql"


# --- the schedule ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CronRun:
    minute: int  # minute of the day
    order: int  # line of the crontab (runs at the same minute go in file order)
    job: str
    argument: str | None


def cron_runs(crontab: str) -> tuple[list[Entry], list[CronRun]]:
    """The synccli job lines of a crontab: plan's entries (``parse_crontab``) and every run of a
    day at its minute. Day-of-month, month and weekday fields must be ``*`` (a daily schedule)."""
    entries = parse_crontab(crontab)
    runs: list[CronRun] = []
    order = 0
    for raw in crontab.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" in line.split()[0]:
            continue
        parts = line.split(None, 5)
        words = parts[5].split()
        job = next((w for w in words if w in JOBS), None)
        if job is None:
            continue
        if parts[2:5] != ["*", "*", "*"]:
            raise SystemExit(f"crontab line {line!r}: only daily schedules are simulated")
        argument = None
        if job == "sweep-oldest":
            i = words.index(job)
            argument = words[i + 1] if i + 1 < len(words) else None
        order += 1
        for h in _field_values(parts[1], 0, 23):
            for m in _field_values(parts[0], 0, 59):
                runs.append(CronRun(h * 60 + m, order, job, argument))
    runs.sort(key=lambda r: (r.minute, r.order))
    per_job = {e.job: e.runs_per_day for e in entries}
    for job, n in per_job.items():  # our reading must agree with plan's
        mine = sum(1 for r in runs if r.job == job)
        if mine != n:
            raise SystemExit(f"crontab: {job} runs {mine} times a day here, {n} in plan")
    return entries, runs


# --- machine and output ---------------------------------------------------------------------------
def machine() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "uname": " ".join(platform.uname()),
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "commit": _git_commit(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),  # 1/5/15-minute load average
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MB.

    ``ru_maxrss`` of a child carries its parent's high-water mark when the parent spawned it with
    vfork/exec (Linux keeps the larger of the old and new address space's peaks across exec), so a
    child of a parent holding a 50,000-item sandbox would report the parent's size. Linux's
    ``VmHWM`` is the peak of this address space alone; elsewhere ``ru_maxrss`` is used."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    scale = 1024.0 if sys.platform != "darwin" else 1024.0 * 1024.0  # KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def ru_maxrss_mb() -> float:
    scale = 1024.0 if sys.platform != "darwin" else 1024.0 * 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def table(headers: list[str], rows: list[list[Any]], title: str | None = None) -> str:
    """A plain-text table (right-aligned numbers), for terminals and for pasting into markdown."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))

    def fmt(row: list[str], raw: list[Any] | None = None) -> str:
        out = []
        for i, value in enumerate(row):
            numeric = raw is not None and isinstance(raw[i], (int, float)) and raw[i] is not True
            out.append(value.rjust(widths[i]) if numeric else value.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [title] if title else []
    lines.append(fmt(headers))
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt(c, r) for c, r in zip(cells, rows, strict=True)]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e9:
            return f"{value:,.0f}"
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def pct(measured: float, reference: float) -> float | None:
    """(measured - reference) / reference, in percent."""
    if not reference:
        return None
    return round((measured - reference) / reference * 100.0, 1)


def emit(doc: dict, json_out: str | None, as_json: bool, render: Callable[[], str]) -> None:
    """A script's figures: kept as JSON in ``json_out`` when given, printed as JSON or a table."""
    text = json.dumps(doc, indent=2, default=str)
    if json_out:
        Path(json_out).write_text(text, encoding="utf-8")
    print(text if as_json else render())
