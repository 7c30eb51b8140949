"""Helpers shared by the reliability and hostile suites (tests/test_reliability_*.py,
tests/test_hostile_*.py, tests/test_secrets_everywhere.py): the real CLI in subprocesses, table
snapshots, and orders built from a sandbox's own records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

from synccli import registry
from synccli.sandbox import harness
from synccli.store.db import Store
from synccli.sync.orders import line_amounts

SYNCCLI = [sys.executable, "-m", "synccli"]
# Every table a command could write to (alembic_version aside).
TABLES = (
    "connections",
    "products",
    "customers",
    "orders",
    "order_lines",
    "links",
    "cursors",
    "runs",
    "leases",
    "api_calls",
    "budgets",
    "invoice_jobs",
    "invoice_attempts",
    "notifications",
    "events",
    "review_items",
    "webhook_events",
    "webhook_days",
)
TAX = {p.name: p.sandbox.tax_code for p in registry.providers()}  # 15% in each sandbox


def cli_env(
    data_dir: Path,
    database_url: str | None = None,
    *,
    base: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of a cron-like CLI process: no SYNC_* from the machine, our data dir.
    ``base``: the machine's environment as read earlier (a thread must not iterate
    ``os.environ`` while another changes it, as an in-process CLI run does)."""
    machine = os.environ if base is None else base
    env = {k: v for k, v in machine.items() if not k.startswith("SYNC_")}
    env["SYNC_DATA_DIR"] = str(data_dir)
    if database_url:
        env["SYNC_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], env: dict[str, str], *, timeout: float = 120, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """``synccli ARGS`` in a fresh process; stdout and stderr decoded leniently."""
    done = subprocess.run(
        [*SYNCCLI, *args], env=env, input=stdin, capture_output=True, timeout=timeout
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


def spawn(args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SYNCCLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def kill9(proc: subprocess.Popen[Any]) -> None:
    """``kill -9`` and reap."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def row_counts(store: Store, tables: Sequence[str] = TABLES) -> dict[str, int]:
    with store.session() as s:
        return {t: int(s.scalar(text(f"SELECT count(*) FROM {t}")) or 0) for t in tables}


def world(running: harness.Running, tenant: str | None = None) -> Any:
    app = running.app
    return app.catalogue.tenant(tenant or app.tenant)


def order_json(
    number: str,
    product: Any,
    customer: Any,
    provider: str,
    *,
    quantity: int = 1,
    price: str = "10.00",
    day: str = "2026-01-05",
) -> dict[str, Any]:
    """A valid order for one of the sandbox's own products and customers (15% tax)."""
    amount, tax = line_amounts(Decimal(quantity), Decimal(price), Decimal("0.15"))
    return {
        "number": number,
        "date": day,
        "currency": "NZD",
        "customer": {"email": customer.email, "name": customer.name},
        "lines": [
            {
                "sku": product.code,
                "description": product.name,
                "quantity": quantity,
                "unit_price": price,
                "tax_code": TAX[provider],
                "tax_rate": "0.15",
            }
        ],
        "total": str(amount + tax),
    }


def orders_for(
    running: harness.Running, provider: str, n: int, prefix: str, tenant: str | None = None
) -> list[dict[str, Any]]:
    w = world(running, tenant)
    products = sorted(w.products.values(), key=lambda p: p.code)
    customers = sorted(w.customers.values(), key=lambda c: c.code)
    return [
        order_json(
            f"{prefix}-{i + 1:04d}",
            products[(i * 7) % len(products)],
            customers[i % len(customers)],
            provider,
            quantity=1 + i % 3,
            price=f"{10 + i % 17}.{(i * 37) % 100:02d}",
        )
        for i in range(n)
    ]


def jsonl(orders: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(o) for o in orders) + "\n"


def wait_for(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def serve(provider: str, app: Any) -> harness.Running:
    """Serve a simulator built (or subclassed) by the test, as ``harness.start`` would."""
    from synccli.sandbox.core import SandboxServer

    return harness.Running(provider, app, SandboxServer(app).start())
