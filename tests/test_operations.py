"""Issue 8: leases, status, plan, doctor, structured logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synccli import registry
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


@pytest.mark.slow
def test_second_run_exits_busy_and_a_dead_runs_lease_is_taken_over(
    store: Store, _isolated_env: Path
) -> None:
    with harness.start("xero", products=20) as running:
        harness.add_connection(store, "x", running)
        # The first run holds its lease (15 minutes, the default) long enough for a second
        # process to start, however slow the host; it is killed long before its answer comes.
        # (A process took 8-22 s to start and make its first call at load average 25 on two
        # cores: 10 s for the first call, and 30 s of answer for the second to start, were short.)
        running.app.faults.slow_seconds = 300.0
        running.app.faults.add("slow", 1.0, path="/Items", times=1)
        env = _env(_isolated_env)
        cmd = [*SYNCCLI, "pull-products", "--connection", "x"]
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _wait_for(lambda: running.app.counters.total("GET", "Items") >= 1, seconds=120)
            second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
            assert second.returncode == 4, second.stderr
            assert second.stderr.strip().count("\n") == 0
            assert "already running" in second.stderr
            first.kill()  # kill -9 while it holds the lease
            first.wait()
        finally:
            if first.poll() is None:
                first.kill()
        running.app.faults.clear()
        # Its holder was a process of this host and is gone: taken over at once, not after
        # the lease expires (issue 18; expiry is the rule for other hosts, see
        # test_operator_cli).
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
    assert [r["provider"] for r in reports] == list(registry.names())
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
    assert result.exit_code == 3  # over budget (issue 18, line 18)
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
        harness.add_connection(store, "x", running, notify_email="owner@shop.example")
        result = cli("doctor")
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("ok   schema") for line in lines)
    assert any("x: credentials" in line for line in lines)
    assert any("x: clock" in line for line in lines)
    assert result.exit_code == 0, result.stdout


@pytest.mark.parametrize("missing", ["nope"])
def test_trace_unknown_record_is_a_usage_error(store: Store, cli, missing: str) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        result = cli("trace", "product", missing)
    assert result.exit_code == 2 and missing in result.stderr


@pytest.mark.slow
def test_sandbox_serve_answers_items_with_5000_in_one_response(
    store: Store, _isolated_env: Path
) -> None:
    from synccli.store.connections import get_connection
    from synccli.sync.context import build_connector

    env = _env(_isolated_env)
    proc = subprocess.Popen(
        [
            *SYNCCLI,
            "sandbox",
            "serve",
            "--provider",
            "xero",
            "--products",
            "5000",
            "--connect",
            "sbx",
            "--seconds",
            "60",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        url = next(line for line in lines if line.startswith("http://127.0.0.1:"))
        conn = get_connection(store, "sbx")
        assert conn.settings["base_url"] == url
        from synccli.clock import SystemClock

        connector = build_connector(store, conn, clock=SystemClock())
        items = [p for page in connector.changed_products(None) for p in page.records]
        assert len(items) == 5000
        assert connector.http.calls == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_trace_invoice_shows_two_failures_then_the_post(store: Store, cli) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from synccli.clock import SimClock
    from synccli.store.models import OrderLine
    from synccli.sync.context import job_run
    from synccli.sync.invoices import post_invoices
    from synccli.sync.orders import add_orders

    clock = SimClock(datetime.now(UTC))  # `invoices retry` below runs on the wall clock
    with harness.start("xero", products=5, clock=clock) as running:
        conn = harness.add_connection(store, "x", running)
        p = sorted(running.app.world().products.values(), key=lambda x: x.code)[0]
        order = {
            "number": "WEB-7",
            "date": "2026-01-05",
            "currency": "NZD",
            "customer": {"email": "trace@shop.example", "name": "Trace Me"},
            "lines": [
                {
                    "sku": p.code,
                    "description": "mug",
                    "quantity": 1,
                    "unit_price": "10.00",
                    "tax_code": "BADTAX",
                    "tax_rate": "0.15",
                }
            ],
            "total": "11.50",
        }
        add_orders(store, conn, json.dumps(order), now=clock.now())
        for _ in range(2):
            with job_run(store, "post-invoices", conn, clock=clock) as jc:
                post_invoices(jc)
            clock.advance(hours=5)
        with store.session() as s:  # the merchant fixes the tax code
            s.execute(update(OrderLine).values(tax_code="OUTPUT2"))
        assert cli("invoices", "retry", "WEB-7", "-c", "x").exit_code == 0
        clock.advance(timedelta(minutes=1).total_seconds())
        with job_run(store, "post-invoices", conn, clock=clock) as jc:
            report = post_invoices(jc)
        assert report.posted == 1
        result = cli("trace", "invoice", "WEB-7", "-c", "x", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    attempts = [h for h in data["history"] if h["what"].startswith("attempt")]
    assert [a["what"] for a in attempts] == [
        "attempt: rejected",
        "attempt: rejected",
        "attempt: posted",
    ]
    assert all(a["at"] for a in attempts)
    assert "BADTAX" in attempts[0]["detail"] and "BADTAX" in attempts[1]["detail"]
    assert data["record"]["state"] == "posted"
    human = cli("trace", "invoice", "WEB-7", "-c", "x")
    assert human.stdout.count("attempt:") == 3
