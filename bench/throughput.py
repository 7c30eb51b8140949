"""Throughput: a first pull of 50,000 products with stock from each sandbox on loopback, limits
off, into SQLite and (when a URL is given) PostgreSQL; and Xero's Items fetch by our connector
against the official ``xero-python`` SDK.

    .venv/bin/python bench/throughput.py
    .venv/bin/python bench/throughput.py --products 20000 --provider xero --profile

Each measurement runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own; the
sandboxes run in this (parent) process and answer over loopback, like a remote provider. The parent
also times every answer the sandbox builds, so each pull is reported twice: end to end, and with
the sandbox's own time taken out (what our client code sustains when the provider is not the
bottleneck).

Targets: >= 10,000 items/s into SQLite with peak RSS <= 200 MB; our Xero Items fetch at least as
fast as the SDK's (ratio ours/SDK <= 1).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from synccli.connectors.auth import MemoryTokenStore, Tokens  # noqa: E402
from synccli.sandbox import harness  # noqa: E402
from synccli.sandbox.core import SandboxServer  # noqa: E402
from synccli.store.connections import add_connection, get_connection, set_values  # noqa: E402
from synccli.store.models import Product  # noqa: E402
from synccli.sync import products as product_jobs  # noqa: E402
from synccli.sync.context import connector_module, job_run  # noqa: E402

API = "/api.xro/2.0"
SCALE = 1000.0  # the connection's limiter windows shrink this much (limits are off anyway)


# --- the parent: sandboxes and their answer time -----------------------------------------
class TimedApp:
    """WSGI middleware: adds up the seconds the sandbox spends building answers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seconds = 0.0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # the server reads the app's own parts (its webhook sender, on stop) through this
        return getattr(self.app, name)

    def __call__(self, environ: dict, start_response: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.app(environ, start_response)
        finally:
            with self.lock:
                self.seconds += time.perf_counter() - started


def start_sandbox(provider: str, n: int) -> tuple[harness.Running, TimedApp]:
    app = harness.create_app(
        provider,
        products=n,
        customers=10,
        time_scale=SCALE,
        limits=common.NO_LIMITS[provider],
    )
    if provider == "unleashed":
        app.move_all_stock()  # every product has a StockOnHand row
    timed = TimedApp(app)
    server = SandboxServer(timed).start()
    return harness.Running(provider, app, server), timed


def connection_file(running: harness.Running, directory: Path) -> Path:
    settings, creds = harness.connection_values(running)  # the worker connects at SCALE
    path = directory / f"{running.provider}.json"
    path.write_text(
        json.dumps({"provider": running.provider, "settings": settings, "credentials": creds}),
        encoding="utf-8",
    )
    return path


def run_child(args: list[str], timed: TimedApp) -> dict[str, Any]:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    before = timed.seconds
    cmd = [sys.executable, __file__, "--worker", *args, "--out", str(out)]
    proc = subprocess.run(cmd, env=os.environ.copy())
    server = timed.seconds - before
    if proc.returncode != 0:
        raise SystemExit(f"measurement {args[0]} failed (exit {proc.returncode})")
    result = json.loads(out.read_text(encoding="utf-8"))
    out.unlink()
    result["server_s"] = round(server, 3)
    if "seconds" in result:
        client = max(1e-9, result["seconds"] - server)
        result["client_s"] = round(client, 3)
        if "items" in result:
            result["items_per_s"] = round(result["items"] / result["seconds"])
            result["client_items_per_s"] = round(result["items"] / client)
    return result


# --- the children ------------------------------------------------------------------------------
def _values(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def worker_pull(values: dict[str, Any], database_url: str | None, profile: str | None) -> dict:
    provider = values["provider"]
    with common.temp_store(database_url) as store:
        creds = dict(values["credentials"])
        tokens = {
            k: creds.pop(k) for k in ("access_token", "refresh_token", "expires_at") if k in creds
        }
        add_connection(store, "shop", provider, values["settings"], creds, None)
        if tokens:
            set_values(store, "shop", {k: str(v) for k, v in tokens.items()})
        conn = get_connection(store, "shop")
        rss_before = common.peak_rss_mb()
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        with job_run(store, "pull-products", conn) as jc:
            report = product_jobs.pull_products(jc)
            jc.counts = report
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
        with store.session() as s:
            stored = s.scalar(select(func.count()).select_from(Product)) or 0
            with_stock = (
                s.scalar(
                    select(func.count()).select_from(Product).where(Product.stock.is_not(None))
                )
                or 0
            )
        if profiler:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
            Path(profile).write_text(text.getvalue(), encoding="utf-8")
        return {
            "provider": provider,
            "store": common.store_label(store),
            # the products a shop can hold: items with no code (Lightspeed's uncoded items,
            # read and counted) are not stored
            "items": report.seen - report.uncoded,
            "uncoded": report.uncoded,
            "stored": stored,
            "with_stock": with_stock,
            "calls": report.calls,
            "pages": report.pages,
            "seconds": round(seconds, 3),
            "rss_before_mb": round(rss_before, 1),
            "peak_rss_mb": round(common.peak_rss_mb(), 1),
            "ru_maxrss_mb": round(common.ru_maxrss_mb(), 1),
        }


def worker_fetch_ours(values: dict[str, Any]) -> dict:
    """Our Xero connector's Items fetch: one call, parsed into RemoteProduct pages."""
    creds = dict(values["credentials"])
    expires = creds.pop("expires_at", None)
    tokens = Tokens(
        access_token=creds.pop("access_token", None),
        refresh_token=creds.pop("refresh_token", None),
        expires_at=datetime.fromisoformat(expires) if expires else None,
    )
    conn = connector_module("xero").connect(
        values["settings"], creds, token_store=MemoryTokenStore(tokens), time_scale=SCALE
    )
    started = time.perf_counter()
    items = sum(len(page.records) for page in conn.changed_products(None))
    seconds = time.perf_counter() - started
    return {
        "items": items,
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(common.peak_rss_mb(), 1),
    }


def worker_fetch_sdk(values: dict[str, Any]) -> dict:
    """The same Items fetch with the official xero-python SDK."""
    from xero_python.accounting import AccountingApi
    from xero_python.api_client import ApiClient, Configuration
    from xero_python.api_client.oauth2 import OAuth2Token

    settings, creds = values["settings"], values["credentials"]
    token = {
        "access_token": creds["access_token"],
        "refresh_token": creds.get("refresh_token"),
        "expires_in": 1800,
        "expires_at": time.time() + 1500,
        "token_type": "Bearer",
        "scope": ["accounting.settings"],
    }
    client = ApiClient(
        Configuration(oauth2_token=OAuth2Token(settings["client_id"], creds["client_secret"])),
        pool_threads=1,
    )
    client.oauth2_token_getter(lambda: token)
    client.oauth2_token_saver(lambda new: token.update(new))
    api = AccountingApi(client, base_url=f"{settings['base_url']}{API}")
    started = time.perf_counter()
    items = len(api.get_items(settings["tenant_id"]).items)
    seconds = time.perf_counter() - started
    return {
        "items": items,
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(common.peak_rss_mb(), 1),
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median speed, with every run's rate and the highest peak RSS beside it."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    result = dict(ordered[(len(ordered) - 1) // 2])
    result["runs_items_per_s"] = [r["items_per_s"] for r in runs]
    result["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return result


# --- output -----------------------------------------------------------------------------------
def render(doc: dict[str, Any]) -> str:
    a = doc["args"]
    info = doc["machine"]
    out = [
        f"bench/throughput.py: first pull of {a['products']:,} products with stock, limits off, "
        "sandbox on loopback in another process",
        f"machine: {info['uname']}; nproc {info['nproc']}; Python {info['python']}; "
        f"{info['date']}; commit {info['commit']}; load average {info['load']}",
        "",
    ]
    rows = []
    for r in doc["pulls"]:
        rows.append(
            [
                r["provider"],
                r["store"],
                r["items"],
                r["calls"],
                r["seconds"],
                r["items_per_s"],
                r["server_s"],
                r["client_items_per_s"],
                r["peak_rss_mb"],
                "/".join(f"{x:,}" for x in r.get("runs_items_per_s", [r["items_per_s"]]))
                + (
                    f" (warm-up {'/'.join(f'{x:,}' for x in r['warmup_items_per_s'])})"
                    if r.get("warmup_items_per_s")
                    else ""
                ),
                "yes" if r["stored"] == r["items"] and r["with_stock"] == r["items"] else "NO",
                _verdict(r),
            ]
        )
    out.append(
        common.table(
            [
                "provider",
                "store",
                "items",
                "calls",
                "seconds",
                "items/s",
                "sandbox s",
                "items/s w/o sandbox",
                "peak RSS MB",
                "runs items/s",
                "all stored",
                "target",
            ],
            rows,
            title="Pull (target: >= 10,000 items/s into SQLite, peak RSS <= 200 MB)",
        )
    )
    if doc.get("fetch"):
        f = doc["fetch"]
        out.append("")
        out.append(
            common.table(
                ["client", "items", "median s", "runs s", "peak RSS MB"],
                [
                    [
                        "synccli XeroConnector",
                        f["ours"]["items"],
                        f["ours"]["median_s"],
                        " ".join(str(x) for x in f["ours"]["runs"]),
                        f["ours"]["peak_rss_mb"],
                    ],
                    [
                        "xero-python SDK",
                        f["sdk"]["items"],
                        f["sdk"]["median_s"],
                        " ".join(str(x) for x in f["sdk"]["runs"]),
                        f["sdk"]["peak_rss_mb"],
                    ],
                ],
                title=f"Xero Items fetch of {a['products']:,} items (target: ours/SDK <= 1): "
                f"ours/SDK = {f['ratio']}",
            )
        )
    if doc.get("profile"):
        out.append("")
        out.append(f"profiles written: {', '.join(doc['profile'])}")
    return "\n".join(out)


def _verdict(r: dict[str, Any]) -> str:
    if r["store"] != "sqlite":
        return "-"
    ok = r["items_per_s"] >= 10_000 and r["peak_rss_mb"] <= 200
    return "met" if ok else "MISSED"


# --- entry point --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--provider", action="append", choices=common.PROVIDERS)
    ap.add_argument("--products", type=int, default=50_000)
    ap.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (default: SYNC_TEST_POSTGRES_URL when set); a throwaway "
        "schema is created and dropped",
    )
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each Items fetch (median)")
    ap.add_argument("--pull-repeat", type=int, default=3, help="runs of each pull (median)")
    ap.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="pulls run first against each sandbox and left out of the median (reported)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="cProfile each pull (writes bench-profile-<provider>-<store>.txt)",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--json-out")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--values", help=argparse.SUPPRESS)
    ap.add_argument("--store-url", help=argparse.SUPPRESS)
    ap.add_argument("--profile-to", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        values = _values(args.values)
        if args.worker == "pull":
            result = worker_pull(values, args.store_url or None, args.profile_to)
        elif args.worker == "fetch-ours":
            result = worker_fetch_ours(values)
        else:
            result = worker_fetch_sdk(values)
        Path(args.out).write_text(json.dumps(result), encoding="utf-8")
        return 0

    providers = args.provider or list(common.PROVIDERS)
    pg = None if args.no_postgres else common.database_url_from(args.database_url)
    stores = [("sqlite", None)] + ([("postgresql", pg)] if pg else [])
    doc: dict[str, Any] = {"machine": common.machine(), "args": vars(args), "pulls": []}
    profiles = []
    work = Path(tempfile.mkdtemp(prefix="synccli-throughput-"))
    for provider in providers:
        running, timed = start_sandbox(provider, args.products)
        try:
            values = connection_file(running, work)
            if provider == "xero":  # the sandbox renders each item once; not part of a pull
                run_child(["fetch-ours", "--values", str(values)], timed)
            for label, url in stores:
                child = ["pull", "--values", str(values), "--store-url", url or ""]
                if args.profile:
                    target = str(common.ROOT / f"bench-profile-{provider}-{label}.txt")
                    child += ["--profile-to", target]
                    profiles.append(target)
                # The simulator renders and keeps each listing row on its first read: a first
                # run pays for that (about 1 s at 50,000 items), which no provider would.
                # Warm-up runs are reported but not in the median.
                first_store = label == stores[0][0]
                warm = [run_child(child, timed) for _ in range(args.warmup if first_store else 0)]
                runs = [run_child(child, timed) for _ in range(args.pull_repeat)]
                result = _median_run(runs)
                result["warmup_items_per_s"] = [r["items_per_s"] for r in warm]
                doc["pulls"].append(result)
                print(
                    f"  {provider} -> {label}: {result['items_per_s']:,} items/s, "
                    f"{result['peak_rss_mb']} MB",
                    file=sys.stderr,
                    flush=True,
                )
            if provider == "xero":
                ours, sdk = [], []
                for _ in range(args.repeat):  # alternate, so drift hits both alike
                    ours.append(run_child(["fetch-ours", "--values", str(values)], timed))
                    sdk.append(run_child(["fetch-sdk", "--values", str(values)], timed))
                doc["fetch"] = {
                    name: {
                        "items": runs[0]["items"],
                        "runs": [r["seconds"] for r in runs],
                        "median_s": statistics.median(r["seconds"] for r in runs),
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                    }
                    for name, runs in (("ours", ours), ("sdk", sdk))
                }
                doc["fetch"]["ratio"] = round(
                    doc["fetch"]["ours"]["median_s"] / doc["fetch"]["sdk"]["median_s"], 2
                )
        finally:
            running.stop()
    doc["profile"] = profiles
    common.emit(doc, args.json_out, args.json, lambda: render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
