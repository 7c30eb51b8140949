"""Issue 8: leases, status, plan, doctor, structured logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synccli.sandbox import harness
from synccli.store.db import Store

SYNCCLI = [sys.executable, "-m", "synccli"]


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.update(SYNC_DATA_DIR=str(data), **extra)
    return env


def _wait_for(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_second_run_exits_busy_and_a_dead_runs_lease_is_taken_over(
    store: Store, _isolated_env: Path
) -> None:
    with harness.start("xero", products=20) as running:
        harness.add_connection(store, "x", running)
        running.app.faults.slow_seconds = 5.0
        running.app.faults.add("slow", 1.0, path="/Items")
        env = _env(_isolated_env, SYNC_LEASE_SECONDS="8")
        cmd = [*SYNCCLI, "pull-products", "--connection", "x"]
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _wait_for(lambda: running.app.counters.total("GET", "Items") >= 1)
            second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
            assert second.returncode == 4, second.stderr
            assert second.stderr.strip().count("\n") == 0
            assert "already running" in second.stderr
            first.kill()  # kill -9 while it holds the lease
            first.wait()
            again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
            assert again.returncode == 4  # the dead run's lease has not expired yet
        finally:
            if first.poll() is None:
                first.kill()
        running.app.faults.clear()
        time.sleep(8.2)
        after = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert after.returncode == 0, after.stderr
        assert "pulled" in after.stdout


def test_status_shows_last_runs_budget_and_json(store: Store, cli) -> None:
    with harness.start("unleashed", products=30) as running:
        harness.add_connection(store, "u", running)
        assert cli("pull-products", "-c", "u").exit_code == 0
        human = cli("status")
        assert human.exit_code == 0
        assert "pull-products" in human.stdout and "ok" in human.stdout
        data = json.loads(cli("status", "--json").stdout)
        job = next(j for j in data[0]["jobs"] if j["job"] == "pull-products")
        assert job["outcome"] == "ok" and job["calls"] == 2
        assert data[0]["calls"]["today"] == 2
        assert data[0]["limits"]["per_month"] == 15000


def test_plan_prints_calls_per_month_for_each_provider(cli) -> None:
    result = cli(
        "plan",
        "--products",
        "5000",
        "--customers",
        "3000",
        "--orders-per-day",
        "50",
        "--crontab",
        str(Path(__file__).parents[1] / "crontab.example"),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    reports = json.loads(result.stdout)
    assert [r["provider"] for r in reports] == ["xero", "unleashed", "lightspeed"]
    for r in reports:
        assert r["calls_per_month"] > 0
        assert {j["job"] for j in r["jobs"]} == {
            "pull-products",
            "sweep-oldest",
            "link-customers",
            "post-invoices",
        }
        assert r["freshness_minutes"] <= 30


def test_plan_warns_and_proposes_when_over_budget(tmp_path: Path, cli) -> None:
    tab = tmp_path / "tab"
    tab.write_text(
        "* * * * * synccli pull-products --all\n*/5 * * * * synccli sweep-oldest 5000 --all\n"
        "0 * * * * synccli post-invoices --all\n"
    )
    result = cli(
        "plan",
        "--products",
        "5000",
        "--customers",
        "10",
        "--orders-per-day",
        "4000",
        "--crontab",
        str(tab),
        "--provider",
        "unleashed",
    )
    assert result.exit_code == 0
    assert "warning" in result.stdout + result.stderr
    assert "a schedule that fits" in result.stdout


def test_json_logs_carry_job_connection_and_run(store: Store, cli, tmp_path: Path) -> None:
    log = tmp_path / "sync.log"
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        result = cli(
            "-v", "--log-format", "json", "--log-file", str(log), "pull-products", "-c", "x"
        )
        assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    calls = [line for line in lines if "/Items" in line["message"]]
    assert calls, lines
    assert calls[0]["job"] == "pull-products" and calls[0]["connection"] == "x"
    assert isinstance(calls[0]["run_id"], int)
    assert {"time", "level", "message"} <= calls[0].keys()


def test_doctor_reports_each_check_on_one_line(store: Store, cli) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        result = cli("doctor")
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("ok   schema") for line in lines)
    assert any("x: provider" in line for line in lines)
    assert any("x: clock" in line for line in lines)
    assert result.exit_code == 0, result.stdout


@pytest.mark.parametrize("missing", ["nope"])
def test_trace_unknown_record_is_a_usage_error(store: Store, cli, missing: str) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        result = cli("trace", "product", missing)
    assert result.exit_code == 2 and missing in result.stderr
