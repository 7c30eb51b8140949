"""A run row's counts stay small (at most 64 KB) whatever the run did: the changes themselves
are ``events`` and the shop's rows, so the row keeps the numbers and the first entries of each
list, and says how long each cut list was."""

from __future__ import annotations

import json

from fakes import FakeProvider
from sqlalchemy import select

from synccli.clock import SimClock
from synccli.store.db import Store
from synccli.store.models import Run
from synccli.sync import products
from synccli.sync.context import RUN_COUNTS_BYTES, RUN_LIST_KEEP, run_counts


def test_a_first_pull_of_thousands_of_products_leaves_a_small_run_row(store: Store) -> None:
    fake = FakeProvider("lightspeed", products=3_000, clock=SimClock())
    conn = fake.add_connection(store)
    with fake.run(store, "pull-products", conn) as ctx:
        report = products.pull_products(ctx)
        ctx.counts = report
    assert report.new == 3_000 and len(report.changes) == 3_000  # the report is whole
    with store.session() as s:
        counts = s.scalars(select(Run.counts)).one()
    assert len(json.dumps(counts)) <= RUN_COUNTS_BYTES
    assert counts["new"] == 3_000 and counts["seen"] == 3_000
    assert counts["truncated"] == {"changes": 3_000}
    assert len(counts["changes"]) == RUN_LIST_KEEP
    assert counts["changes"][0] == {
        "sku": "SKU-00001",
        "field": "new",
        "old": None,
        "new": (report.changes[0].new),
    }


def test_long_entries_keep_fewer_of_them_and_short_lists_stay_whole() -> None:
    report = {"errors": ["x" * 5_000] * 40, "ghosts": [{"sku": "A"}], "seen": 7}
    counts = run_counts(report)
    assert len(json.dumps(counts)) <= RUN_COUNTS_BYTES
    assert 0 < len(counts["errors"]) < 40 and counts["truncated"] == {"errors": 40}
    assert counts["ghosts"] == [{"sku": "A"}] and counts["seen"] == 7
    assert run_counts({"seen": 1, "errors": ["e"]}) == {"seen": 1, "errors": ["e"]}


def test_a_run_rows_money_reads_as_a_plain_decimal() -> None:
    """`status --json` shows a run's counts as its row keeps them: a total of 179.7400 (as the
    store gives it back) reads 179.74, as every other number the CLI prints (README: numbers
    print as plain decimals), not "179.7400" beside a remote total of "11.5"."""
    from decimal import Decimal

    from synccli.sync.context import run_counts
    from synccli.sync.invoices import InvoiceOutcome, PostReport

    report = PostReport(connection="shop")
    report.invoices.append(
        InvoiceOutcome("W-1", "mismatch", total=Decimal("179.7400"), remote_total=Decimal("11.5"))
    )
    kept = run_counts(report)
    assert kept["invoices"][0]["total"] == "179.74"
    assert kept["invoices"][0]["remote_total"] == "11.5"
