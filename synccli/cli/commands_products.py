"""``pull-products``, ``sweep-oldest`` and ``sync-product``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from synccli.cli import output
from synccli.cli.jobs import ALL_OPT, CONNECTION_OPT, DRY_RUN_OPT, JSON_OPT, run_for_connections
from synccli.errors import UsageError
from synccli.lazy import lazy_import
from synccli.sync.jobs import Job

if TYPE_CHECKING:
    from synccli.cli import progress
    from synccli.store.models import Connection
    from synccli.sync import products
    from synccli.sync.context import JobContext
else:  # loaded when a command runs (see synccli.lazy)
    products = lazy_import("synccli.sync.products")
    progress = lazy_import("synccli.cli.progress")  # rich's live display


def register(app: typer.Typer) -> None:
    app.command(Job.PULL_PRODUCTS)(pull_products)
    app.command(Job.SWEEP_OLDEST)(sweep_oldest)
    app.command(Job.SYNC_PRODUCT)(sync_product)


def _changes_table(changes: list[products.Change], title: str) -> None:
    if changes:
        output.table(
            ["sku", "field", "old", "new"],
            [[c.sku, c.field, c.old, c.new] for c in changes[:200]],
            title=title,
        )
        if len(changes) > 200:
            output.line(f"... and {len(changes) - 200} more (use --json for all)")


def _future_stamps(conn: Connection, n: int) -> None:
    """Say so when the provider stamped records past its own clock (they were clamped)."""
    if n:
        output.warn(f"{conn.name}: {n} product(s) stamped past the provider's clock (clamped)")


def pull_products(
    ctx: typer.Context,
    since: str | None = typer.Option(
        None, "--since", help="2h, 30m, 1d or an ISO timestamp (default: the stored cursor)."
    ),
    connection: list[str] = CONNECTION_OPT,
    all_: bool = ALL_OPT,
    dry_run: bool = DRY_RUN_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Download products and stock positions changed since the last pull, page by page.

    Example:

        synccli pull-products --all            # from cron, every 30 minutes
        synccli pull-products -c shop1 --since 2h --dry-run
    """
    show = progress.wanted(ctx, json_out)

    def work(jc: JobContext) -> products.PullReport:
        start = products.parse_since(since, jc.clock.now())
        with progress.shown(jc.connection.name, show) as observer, jc.observed(observer):
            return products.pull_products(jc, start)

    def render(conn: Connection, r: products.PullReport) -> None:
        if r.dry_run:
            _changes_table(r.changes, f"{conn.name}: would change")
        prefix = "would apply" if r.dry_run else "pulled"
        output.line(
            f"{conn.name}: {prefix} {r.pages} page(s): {r.seen} items seen, {r.changed} changed, "
            f"{r.new} new, {r.deactivated} deactivated; {r.calls} call(s), {r.seconds:.1f}s"
        )
        for err in r.errors:
            output.warn(f"{conn.name}: {err}")
        _future_stamps(conn, r.future_stamps)

    run_for_connections(ctx, Job.PULL_PRODUCTS, connection, all_, dry_run, work, render, json_out)


def sweep_oldest(
    ctx: typer.Context,
    n: str = typer.Argument(..., help="How many products, or 'auto' (the day's leftover budget)."),
    connection: list[str] = CONNECTION_OPT,
    all_: bool = ALL_OPT,
    dry_run: bool = DRY_RUN_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Re-check the N products synced longest ago; flag ghosts (vanished or archived remotely).

    Where every pull reads the whole catalogue (Xero), the pulls flag ghosts and one every
    sweep_days checks every product as a sweep would: the sweep then makes no call and says so.

    Example:

        synccli sweep-oldest auto --all       # from cron, every night
        synccli sweep-oldest 500 --all
        synccli sweep-oldest auto -c shop1 --dry-run
    """
    if n != "auto" and not n.isdigit():
        raise UsageError(f"sweep-oldest: N must be a number or 'auto', got {n!r}")

    def work(jc: JobContext) -> products.SweepReport:
        count = products.sweep_budget(jc) if n == "auto" else int(n)
        return products.sweep_oldest(jc, count)

    def render(conn: Connection, r: products.SweepReport) -> None:
        if r.swept_by_pull is not None:
            output.line(
                f"{conn.name}: nothing to sweep: every pull reads the whole catalogue and flags "
                f"what is gone from it, and the pull at {r.swept_by_pull:%Y-%m-%d %H:%M} UTC "
                f"checked it as a sweep would; {r.calls} call(s)"
            )
            return
        if r.dry_run:
            _changes_table(r.changes, f"{conn.name}: would change")
        output.line(
            f"{conn.name}: swept {r.swept} of {r.requested} requested, {r.changed} changed, "
            f"{len(r.ghosts)} ghost(s); {r.calls} call(s), {r.seconds:.1f}s"
        )
        _future_stamps(conn, r.future_stamps)
        if r.ghosts:
            output.table(
                ["sku", "remote id", "state"],
                [[g["sku"], g["remote_id"], g["state"]] for g in r.ghosts],
                title="ghosts",
            )

    run_for_connections(ctx, Job.SWEEP_OLDEST, connection, all_, dry_run, work, render, json_out)


def sync_product(
    ctx: typer.Context,
    sku: str = typer.Argument(..., help="The product's code (SKU)."),
    connection: list[str] = CONNECTION_OPT,
    dry_run: bool = DRY_RUN_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Sync one product and its stock now (at most 2 calls); prints before and after.

    Example:

        synccli sync-product SKU-00042 -c shop1 --dry-run
    """

    def work(jc: JobContext) -> products.ProductSyncReport:
        return products.sync_product(jc, sku)

    def render(conn: Connection, r: products.ProductSyncReport) -> None:
        if r.deleted:
            done = "would be deactivated (dry run)" if r.dry_run else "deactivated"
            output.line(
                f"{conn.name}: {sku} was deleted at the provider: {done}, marked as a ghost; "
                f"{r.calls} call(s)"
            )
            return
        if not r.found:
            output.line(f"{conn.name}: {sku} not found at the provider; {r.calls} call(s)")
            return
        keys = ["name", "description", "price", "stock", "active"]
        before, after = r.before or {}, r.after or {}
        output.table(
            ["field", "before", "after"],
            [[k, before.get(k), after.get(k)] for k in keys],
            title=f"{conn.name}: {sku}{' (dry run, nothing written)' if r.dry_run else ''}",
        )
        output.line(f"{len(r.changes)} change(s); {r.calls} call(s)")
        _future_stamps(conn, r.future_stamps)

    run_for_connections(ctx, Job.SYNC_PRODUCT, connection, False, dry_run, work, render, json_out)
