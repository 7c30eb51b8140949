"""Issue 18: the operator's tool - numbers, times, pipes, status keys, logs, signals, help.

Every test drives the real entry point: the in-process CLI runner (``cli``) or ``python -m
synccli`` in a subprocess where a pipe, a signal or a separate process is the point.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import update

from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.store.models import Connection

SYNCCLI = [sys.executable, "-m", "synccli"]
ROOT = Path(__file__).resolve().parents[1]

# An ISO 8601 time in UTC, as every JSON time must be.
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")
# A time for people: to the minute.
PEOPLE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d(?!:\d)")
EXPONENT = re.compile(r"\d[eE][+-]?\d")


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.update(SYNC_DATA_DIR=str(data), **extra)
    return env


def _order(number: str, *prices: str) -> str:
    lines = [
        {"sku": f"SKU-{i}", "description": f"item {i}", "quantity": 1, "unit_price": p}
        for i, p in enumerate(prices)
    ]
    total = sum((Decimal(p) for p in prices), start=Decimal(0))
    return json.dumps(
        {
            "number": number,
            "date": "2026-05-01",
            "currency": "NZD",
            "customer": {"email": "jane@example.com", "name": "Jane"},
            "lines": lines,
            "total": str(total),
        }
    )


def _json_times(value: object, key: str = "") -> list[tuple[str, str]]:
    """Every (key, string) in a JSON document whose key names a time."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            found.extend(_json_times(v, k))
    elif isinstance(value, list):
        for v in value:
            found.extend(_json_times(v, key))
    elif isinstance(value, str) and (key.endswith("_at") or key in ("at", "order_date")):
        found.append((key, value))
    return found


# --- line 10: plain numbers, one time format per output kind -------------------------------------
def test_money_and_plan_figures_print_as_plain_decimals_in_text_and_json(
    store: Store, cli, tmp_path: Path
) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        orders = tmp_path / "o.jsonl"
        orders.write_text(_order("WEB-80", "80.00", "12.50") + "\n")
        assert cli("invoices", "add", str(orders), "-c", "x").exit_code == 0
        listed = cli("invoices", "list", "--json")
        shown = cli("invoices", "show", "WEB-80", "--json")
        text = cli("invoices", "list").stdout + cli("invoices", "show", "WEB-80").stdout
    row = json.loads(listed.stdout)[0]
    assert row["total"] == "92.5"
    detail = json.loads(shown.stdout)
    assert [ln["unit_price"] for ln in detail["lines"]] == ["80", "12.5"]
    assert "92.5 NZD" in text
    assert not EXPONENT.search(listed.stdout + shown.stdout + text), text
    big = ["--products", "50000000", "--customers", "3000000", "--orders-per-day", "500000"]
    plan_text = cli("plan", *big).stdout
    plan_json = cli("plan", *big, "--json").stdout
    assert "calls/month" in plan_text
    assert not EXPONENT.search(plan_text), plan_text
    assert not EXPONENT.search(plan_json)
    assert not re.search(r"\d\.0\b", plan_json), "a whole number printed as a float"


def test_times_are_iso_utc_in_json_and_to_the_minute_for_people(store: Store, cli) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        assert cli("pull-products", "-c", "x").exit_code == 0
        running.app.faults.add("500", 1.0, path="/Invoices")
        cli("invoices", "add", "-", "-c", "x", input=_order("WEB-9", "10"))
        cli("post-invoices", "-c", "x")
        documents = [
            cli("status", "--json").stdout,
            cli("invoices", "show", "WEB-9", "--json").stdout,
            cli("invoices", "list", "--json").stdout,
            cli("connections", "show", "x", "--json").stdout,
        ]
        people = (
            cli("status").stdout
            + cli("invoices", "show", "WEB-9").stdout
            + cli("invoices", "list").stdout
        )
    times = [t for doc in documents for t in _json_times(json.loads(doc))]
    assert times
    for key, value in times:
        assert ISO_UTC.match(value), (key, value)
    assert PEOPLE_TIME.search(people)
    assert not re.search(r"\d\d:\d\d:\d\d", people), people
    assert "T" not in " ".join(re.findall(r"\d{4}-\d\d-\d\d\S*", people))


# --- line 11: a closed pipe ends quietly ----------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--products", "5000", "--customers", "3000", "--orders-per-day", "50"],
        ["--help"],
        ["status", "--json"],
        ["invoices", "list"],
        ["pull-products", "-c", "x"],
    ],
    ids=["plan", "help", "status-json", "invoices-list", "pull-products"],
)
def test_piping_into_head_ends_quietly(
    store: Store, _isolated_env: Path, tmp_path: Path, args: list[str]
) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        subprocess.run(
            [*SYNCCLI, "invoices", "add", "-", "-c", "x"],
            input=_order("WEB-1", "10"),
            env=_env(_isolated_env),
            capture_output=True,
            text=True,
            check=True,
        )
        # `head` that has already read what it wanted: the read end is closed.
        read, write = os.pipe()
        os.close(read)
        try:
            done = subprocess.run(
                [*SYNCCLI, *args],
                env=_env(_isolated_env),
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
            )
        finally:
            os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.stderr == "", done.stderr
    assert done.returncode in (0, 141), done.returncode


def test_piping_a_long_listing_into_head_in_a_shell(store: Store, _isolated_env: Path) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        orders = "\n".join(_order(f"WEB-{n}", "10") for n in range(3000))
        env = _env(_isolated_env)
        subprocess.run(
            [*SYNCCLI, "invoices", "add", "-", "-c", "x"],
            input=orders,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        done = subprocess.run(
            ["sh", "-c", f"{' '.join(SYNCCLI)} invoices list | head -n 2; exit $?"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert len(done.stdout.splitlines()) == 2
    assert done.stderr == "", done.stderr
    assert done.returncode == 0


# --- line 12: status keys and messages ------------------------------------------------------------
INVOICE_STATES = {"pending", "posting", "posted", "failed", "gave_up", "cancelled"}


def test_status_json_has_the_same_keys_for_every_connection(store: Store, cli) -> None:
    with harness.start("xero", products=5) as xero, harness.start("unleashed") as unl:
        harness.add_connection(store, "a", xero)
        harness.add_connection(store, "b", unl)
        assert cli("pull-products", "-c", "a").exit_code == 0
        assert cli("link-customers", "-c", "b").exit_code == 0
        cli("invoices", "add", "-", "-c", "a", input=_order("WEB-1", "10"))
        with store.session() as s:
            s.execute(
                update(Connection)
                .where(Connection.name == "b")
                .values(needs_reauth=True, reauth_reason="refresh token expired")
            )
        data = json.loads(cli("status", "--json").stdout)
    a, b = data
    assert a.keys() == b.keys()
    assert set(a["invoices"]) == INVOICE_STATES == set(b["invoices"])
    assert a["invoices"]["pending"] == 1 and b["invoices"]["posted"] == 0
    assert a["cursors"].keys() == b["cursors"].keys() == {"products", "stock", "customers"}
    assert a["cursors"]["customers"] is None and b["cursors"]["products"] is None
    assert ISO_UTC.match(a["cursors"]["products"])
    assert b["needs_reauth"] is True and b["reauth_reason"] == "refresh token expired"
    assert a["reauth_reason"] is None
    assert a["last_successful_pull"] is not None and b["last_successful_pull"] is None
    assert "cursor_lag_minutes" not in a


def test_status_names_the_last_successful_pull_and_refuses_an_unknown_connection(
    store: Store, cli
) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        harness.add_connection(store, "y", running)
        assert cli("pull-products", "-c", "x").exit_code == 0
        text = cli("status").stdout
        unknown = cli("status", "-c", "nosuch")
        unknown_json = cli("status", "-c", "nosuch", "--json")
    assert "cursor lag" not in text
    assert "last successful pull 0 minutes ago" in text
    assert "last successful pull: never" in text
    assert unknown.exit_code == 2 and "nosuch" in unknown.stderr
    assert unknown_json.exit_code == 2 and unknown_json.stdout == ""
