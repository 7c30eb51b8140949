"""README's walk-through as an operator meets it: what each step prints must be what README says
(plain numbers and times to the minute, next steps that work for the provider, states as
documented)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from synccli.sandbox import harness
from synccli.store.db import Store

# README "Commands": numbers are plain decimals, times for people are to the minute in UTC.
PADDED = re.compile(r"\d\.\d*0\b")  # 152.8200, 80.0000, 4.0
SECONDS = re.compile(r"\d\d:\d\d:\d\d")


def _order(number: str, price: str = "10.00", **extra: Any) -> dict[str, Any]:
    total = (Decimal(price) * Decimal("1.15")).quantize(Decimal("0.01"))
    return {
        "number": number,
        "date": "2026-05-01",
        "currency": "NZD",
        "customer": {"email": "jane@example.com", "name": "Jane"},
        "lines": [
            {
                "sku": "SKU-00001",
                "description": "item",
                "quantity": 1,
                "unit_price": price,
                "tax_code": "GST",
                "tax_rate": "0.15",
            }
        ],
        "total": str(total),
        **extra,
    }


def _add_unleashed(cli: Any, name: str) -> None:
    added = cli(
        "connections", "add", name, "--provider", "unleashed", "--api-id", "ID", "--secret-stdin",
        input="key\n",
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr


def test_trace_prints_plain_numbers_and_times_to_the_minute(store: Store, cli: Any) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running)
        assert cli("pull-products", "-c", "x").exit_code == 0
        order = _order("WEB-1", "80.00")
        assert cli("invoices", "add", "-", "-c", "x", input=json.dumps(order)).exit_code == 0
        product = cli("trace", "product", "SKU-00001", "-c", "x")
        invoice = cli("trace", "invoice", "WEB-1", "-c", "x")
    assert product.exit_code == 0 and invoice.exit_code == 0
    text = product.stdout + invoice.stdout
    assert not PADDED.search(text), text
    assert not SECONDS.search(text), text
    assert "total: 92" in invoice.stdout, invoice.stdout
    assert "date: 2026-05-01 00:00 UTC" in invoice.stdout, invoice.stdout


def test_a_refused_invoice_names_its_retry_time_to_the_minute_on_stderr(
    store: Store, cli: Any
) -> None:
    with harness.start("xero", products=5) as running:
        harness.add_connection(store, "x", running, notify_email="owner@shop.example")
        assert cli("pull-products", "-c", "x").exit_code == 0
        order = _order("WEB-2")
        order["lines"][0]["tax_code"] = "NOSUCHTAX"  # Xero refuses an unknown TaxType
        assert cli("invoices", "add", "-", "-c", "x", input=json.dumps(order)).exit_code == 0
        result = cli("post-invoices", "-c", "x")
    refused = [ln for ln in result.stderr.splitlines() if "retry at" in ln]
    assert refused, result.stderr
    assert re.search(r"retry at \d{4}-\d\d-\d\d \d\d:\d\d UTC\)", refused[0]), refused[0]


def test_invoices_show_in_another_connection_says_it_has_no_such_order(cli: Any) -> None:
    """An order of one connection is not "to be queued by the next run" in another."""
    assert cli("db", "upgrade").exit_code == 0
    _add_unleashed(cli, "a")
    _add_unleashed(cli, "b")
    assert cli("invoices", "add", "-", "-c", "a", input=json.dumps(_order("WEB-3"))).exit_code == 0
    shown = cli("invoices", "show", "WEB-3", "-c", "b")
    assert shown.exit_code == 2
    assert "no invoice for order 'WEB-3' in connection 'b'" in shown.stderr, shown.stderr
    assert "queues it" not in shown.stderr


def test_adding_an_r_series_connection_names_an_https_redirect_and_redirect_uri(cli: Any) -> None:
    """Lightspeed R-Series takes HTTPS redirect URLs only (README: Connect a real account), so
    the next step cannot be the loopback http:// address the other OAuth providers register."""
    assert cli("db", "upgrade").exit_code == 0
    added = cli(
        "connections", "add", "pos", "--provider", "lightspeed", "--client-id", "ABC",
        "--secret-stdin", input="secret\n",
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    assert "http://localhost" not in added.stdout, added.stdout
    assert "HTTPS" in added.stdout
    assert "synccli connections authorize pos --redirect-uri " in added.stdout, added.stdout
    xero = cli(
        "connections", "add", "books", "--provider", "xero", "--client-id", "ABC",
        "--secret-stdin", input="secret\n",
    )  # fmt: skip
    assert "http://localhost:8765/callback" in xero.stdout, xero.stdout


def test_a_refund_is_waiting_from_the_moment_it_is_added(
    store: Store, cli: Any, tmp_path: Path
) -> None:
    """README and docs/orders.md: a refund waits (state `waiting`) until its order is posted,
    and `invoices list`, `invoices show` and `status` say so, before any run."""
    with harness.start("lightspeed-x", products=5) as running:
        harness.add_connection(store, "xs", running)
        batch = [
            _order("WEB-4"),
            {"number": "WEB-4-R1", "date": "2026-05-03", "refund_of": "WEB-4"},
        ]
        added = cli("invoices", "add", "-", "-c", "xs", input=json.dumps(batch))
        assert added.exit_code == 0, added.stderr
        listed = {r["number"]: r for r in json.loads(cli("invoices", "list", "--json").stdout)}
        shown = cli("invoices", "show", "WEB-4-R1", "-c", "xs").stdout
        status = cli("status", "-c", "xs").stdout
    assert listed["WEB-4"]["state"] == "pending"
    assert listed["WEB-4-R1"]["state"] == "waiting", listed["WEB-4-R1"]
    assert "waiting for order WEB-4 to be posted" in shown, shown
    assert "(refunds: waiting 1)" in status, status


def test_the_demo_help_speaks_of_every_provider(cli: Any) -> None:
    """The demo runs a simulator of each of the four providers, not "the three sandboxes"."""
    shown = cli("demo", "--help").stdout
    assert "three" not in shown, shown
    assert "each provider" in shown, shown


def test_removing_a_connection_is_refused_while_a_refund_waits(store: Store, cli: Any) -> None:
    """README: the removal is refused while any invoice is unposted; a refund waiting for its
    order is one (removing would drop it unseen)."""
    with harness.start("lightspeed-x", products=5) as running:
        harness.add_connection(store, "xs", running)
        batch = [
            _order("WEB-5"),
            {"number": "WEB-5-R1", "date": "2026-05-03", "refund_of": "WEB-5"},
        ]
        assert cli("invoices", "add", "-", "-c", "xs", input=json.dumps(batch)).exit_code == 0
        assert cli("invoices", "cancel", "WEB-5", "-c", "xs").exit_code == 0
        assert cli("post-invoices", "-c", "xs").exit_code == 0  # the refund waits for WEB-5
        removed = cli("connections", "remove", "xs")
    assert removed.exit_code == 2, removed.stdout
    assert "1 unposted invoice(s)" in removed.stderr, removed.stderr


def test_a_dry_run_counts_the_refunds_that_wait_apart_from_the_posts(
    store: Store, cli: Any
) -> None:
    """The dry run's table says `wait` for a refund whose order is not posted; its closing line
    must not count that refund among the invoices it would post."""
    with harness.start("lightspeed-x", products=5) as running:
        harness.add_connection(store, "xs", running)
        batch = [
            _order("WEB-6"),
            {"number": "WEB-6-R1", "date": "2026-05-03", "refund_of": "WEB-6"},
        ]
        assert cli("invoices", "add", "-", "-c", "xs", input=json.dumps(batch)).exit_code == 0
        planned = cli("post-invoices", "-c", "xs", "--dry-run")
    assert planned.exit_code == 0, planned.stderr
    assert "would post 1 invoice(s), wait 1 " in planned.stdout, planned.stdout
