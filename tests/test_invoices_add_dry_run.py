"""Issue 18, line 19: `invoices add --dry-run` checks the orders and prints what would be queued,
writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text
from test_orders import jsonl, order

from synccli.store.connections import add_connection
from synccli.store.db import Store

TABLES = ("orders", "order_lines", "invoice_jobs", "customers")


def _counts(store: Store) -> dict[str, int]:
    with store.session() as s:
        return {t: int(s.scalar(text(f"SELECT count(*) FROM {t}")) or 0) for t in TABLES}


def test_dry_run_prints_what_would_be_queued_and_writes_nothing(
    cli, store: Store, tmp_path: Path
) -> None:
    add_connection(store, "shop", "xero", {"client_id": "c"}, {"client_secret": "s3cr3t-value"})
    orders = tmp_path / "orders.jsonl"
    orders.write_text(
        jsonl(order("WEB-1"), order("WEB-2", customer={"email": "b@shop.example", "name": "Bo"}))
    )
    before = _counts(store)

    dry = cli("invoices", "add", str(orders), "-c", "shop", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "WEB-1" in dry.stdout and "WEB-2" in dry.stdout
    assert "would" in dry.stdout and "nothing written" in dry.stdout
    assert _counts(store) == before

    as_json = cli("invoices", "add", str(orders), "-c", "shop", "--dry-run", "--json")
    report = json.loads(as_json.stdout)
    assert report["dry_run"] is True and report["numbers"] == ["WEB-1", "WEB-2"]
    assert report["queued"] == 2 and report["customers_created"] == 2
    assert _counts(store) == before

    bad = tmp_path / "bad.jsonl"
    bad.write_text(jsonl(order("WEB-3", lines=[])))
    refused = cli("invoices", "add", str(bad), "-c", "shop", "--dry-run")
    assert refused.exit_code == 2 and "line 1" in refused.stderr
    # the real add then writes what the dry run said
    assert cli("invoices", "add", str(orders), "-c", "shop").exit_code == 0
    assert _counts(store)["invoice_jobs"] == before["invoice_jobs"] + 2
    again = cli("invoices", "add", str(orders), "-c", "shop", "--dry-run")
    assert again.exit_code == 2 and "already exists" in again.stderr  # checked as for real
