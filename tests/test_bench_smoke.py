"""The benchmark scripts run from a fresh checkout with one command each (bench/*.py, README's
`make bench`): here with tiny parameters, so CI proves they still run and their figures hold
together. The real figures are in docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from synccli import registry

ROOT = Path(__file__).resolve().parents[1]
PROVIDERS = set(registry.suite_names())  # the benchmarks run for these
PUSHED = registry.pushed_product_names()  # the month with webhooks runs these

pytestmark = pytest.mark.slow


def bench(script: str, *args: str, timeout: float = 120) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_month_simulates_two_days_of_the_crontab_for_every_provider() -> None:
    doc = bench(
        "month.py",
        *("--days", "2", "--warmup", "0", "--products", "300", "--customers", "100"),
        *("--orders", "10", "--jobs", "2"),
    )
    assert {r["provider"] for r in doc["results"]} == PROVIDERS
    for r in doc["results"]:
        name = r["provider"]
        assert not r["bugs"], (name, r["bugs"])
        jobs = r["jobs"]
        assert jobs["pull-products"]["runs"] == 2 * 48, name  # */30 from crontab.example
        assert all(j["calls"] == j["calls_db"] for j in jobs.values()), name  # runs.calls agrees
        assert r["sandbox"]["api_calls"] == r["calls"], name  # and so does the sandbox
        assert r["sandbox"]["throttled_429"] == 0, name
        inv = r["invoices"]
        assert inv["orders"] == inv["posted"] == inv["remote_invoices"] == 20, (name, inv)
        assert inv["duplicated"] == inv["lost"] == 0 and inv["unique_numbers"], (name, inv)
        assert inv["rejected_then_fixed"] == 2, (name, inv)  # rejected once, fixed, posted
        assert r["naive_invoices"]["duplicated"] == 0, name
        fresh = r["freshness"]["all"]
        assert fresh["changes"] > 0 and fresh["worst_min"] <= 30, (name, fresh)  # pulls */30
        # about 21 changes a day here: only one made in the last half hour may still wait (a
        # change the measure never sees, such as one whose stamp runs behind, would pile up)
        assert r["freshness"]["pending_at_end"] <= 3, (name, r["freshness"])
        assert r["plan_per_month"] > 0 and r["naive_per_month"] > r["calls_per_month"], name


def test_throughput_pulls_2000_products_and_times_the_xero_sdk() -> None:
    quick = ("--repeat", "1", "--pull-repeat", "1", "--warmup", "0")
    doc = bench("throughput.py", "--products", "2000", *quick)
    stores = {"sqlite", "postgresql"} if os.environ.get("SYNC_TEST_POSTGRES_URL") else {"sqlite"}
    assert {(p["provider"], p["store"]) for p in doc["pulls"]} == {
        (provider, store) for provider in PROVIDERS for store in stores
    }
    for p in doc["pulls"]:
        assert p["items"] == p["stored"] == p["with_stock"] == 2000, p
        assert p["items_per_s"] > 0 and p["peak_rss_mb"] > 0, p
    assert doc["fetch"]["ours"]["items"] == doc["fetch"]["sdk"]["items"] == 2000
    assert doc["fetch"]["ratio"] > 0


def test_ratelimit_posts_30_invoices_within_the_minute_limit() -> None:
    doc = bench("ratelimit.py", "--invoices", "30", "--time-scale", "600")
    assert [r["via"] for r in doc["results"]] == ["connector", "job", "job (batched)"]
    for r in doc["results"]:
        assert r["posted_remote"] == 30 and r["duplicated"] == 0, r
        assert r["throttled_429"] == 0, r
    assert doc["results"][0]["requests"] == 30  # one PUT per invoice through the connector


def test_thousand_merchants_round_runs_each_job_once_across_processes() -> None:
    """bench/thousand.py with 8 connections: four processes started at once share them through
    the store (leases and the round rule), so every connection's pull and post run once, and
    every queued order reaches the provider once."""
    url = os.environ.get("SYNC_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("the thousand-merchants bench runs on PostgreSQL (SYNC_TEST_POSTGRES_URL)")
    doc = bench(
        "thousand.py",
        *("--connections", "8", "--latency", "0.01", "--processes", "4"),
        timeout=240,
    )
    assert [r["processes"] for r in doc["rounds"]] == [1, 4]
    for r in doc["rounds"]:
        assert r["each_job_once"], r["runs"]
        assert r["runs"] == {"pull-products": 8, "post-invoices": 8}
        assert r["orders_posted"] == 8
        assert r["exits"] == [0]
        assert r["peak_rss_mb"] > 0
    assert len(doc["rounds"][1]["runs_per_process"]["pull-products"]) >= 2  # shared out
    assert doc["ratio"] is not None


def test_webhooks_burst_stores_every_delivery_once() -> None:
    doc = bench("webhooks_burst.py", "--count", "40", "--clients", "4", "--threads", "2")
    assert doc["ok"] is True
    for run in doc["runs"]:
        assert run["sent"] == run["answered"] == run["stored"] == 40, run
        assert run["lost"] == run["duplicates_stored"] == run["errors"] == 0, run
        assert run["retries_sent"] == run["retries_answered_200"] == 4, run
        assert set(run["answer_ms"]) == {"p50", "p95", "p99", "max"}
    assert doc["machine"]["load_before"] and doc["machine"]["load_after"]


# its bench's own 600 s timeout decides (the suite's 300 s would stop it first)
@pytest.mark.timeout(660)
def test_month_with_webhooks_loses_no_change_and_costs_x_series_fewer_calls() -> None:
    """#23: the month side by side, polled and with webhooks (5% dropped) + safety poll."""
    doc = bench(
        "month.py",
        "--webhooks",
        *(arg for name in PUSHED for arg in ("--provider", name)),
        "--no-r-series",
        *("--days", "2", "--warmup", "0", "--products", "300", "--customers", "100"),
        *("--orders", "10", "--jobs", "2"),
        timeout=600,
    )
    got = {(r["provider"], r["mode"]): r for r in doc["results"]}
    assert set(got) == {(p, m) for p in PUSHED for m in ("polled", "webhooks")}
    for (name, mode), r in got.items():
        assert not r["bugs"], (name, mode, r["bugs"])
        assert r["lost_changes"] == 0, (name, mode, r["freshness"])
        inv = r["invoices"]
        assert inv["duplicated"] == inv["lost"] == 0 and inv["posted"] == 20, (name, mode, inv)
        if mode == "webhooks":
            w = r["webhooks"]
            assert w["delivered"] > 0 and w["dropped"] > 0, (name, w)  # 5% of them dropped
            assert set(w["answers"]) == {"200"}, (name, w)  # the receiver took every one sent
    pushed, polled = got[("lightspeed-x", "webhooks")], got[("lightspeed-x", "polled")]
    assert pushed["calls"] < polled["calls"]
    assert pushed["freshness"]["all"]["median_min"] < polled["freshness"]["all"]["median_min"]


# its bench's own 600 s timeout decides (the suite's 300 s would stop it first)
@pytest.mark.timeout(660)
def test_quiet_pull_measures_every_provider_at_two_sizes() -> None:
    doc = bench("quiet_pull.py", "--sizes", "200,400", timeout=600)
    rows = doc["rows"]
    assert {(r["provider"], r["products"]) for r in rows} == {
        (p, n) for p in PROVIDERS for n in (200, 400)
    }
    for r in rows:
        ours = r["ours"]
        assert ours["seen"] >= 0 and ours["changed"] == ours["new"] == ours["errors"] == 0, r
        assert ours["cpu_s"] > 0 and ours["peak_mb"] > 0, r
