"""Operations: ``plan``, ``doctor``, ``trace`` and ``demo``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from synccli import fmt, registry
from synccli.cli import output
from synccli.cli.state import state
from synccli.clock import SystemClock
from synccli.errors import ExitCode, SyncError, UsageError

if TYPE_CHECKING:
    from synccli.sync.doctor import Check

# Each command imports what it runs when it runs: the CLI starts for every cron run, and one
# command's machinery (the planner, the doctor's checks) is no other command's cost.


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    app.command("doctor")(doctor)
    app.command("trace")(trace)
    app.command("demo")(demo)


def plan(
    products: int = typer.Option(..., "--products", help="Products in the catalogue."),
    customers: int = typer.Option(..., "--customers", help="Customers."),
    orders_per_day: int = typer.Option(..., "--orders-per-day", help="Orders a day."),
    change_rate: float = typer.Option(
        0.02,
        "--change-rate",
        help="Share of the products whose price or description changes a day (0.02: 2%).",
    ),
    stock_change_rate: float = typer.Option(
        0.05, "--stock-change-rate", help="Share of the products whose stock moves a day."
    ),
    payment_share: float = typer.Option(
        0.9,
        "--payment-share",
        help="Share of the orders that carry payments (0.9: 9 in 10, the merchant mix); they "
        "cost calls where the provider applies payments after the invoice. "
        "Example: --payment-share 0 for a shop that sends no payments.",
    ),
    refund_share: float = typer.Option(
        0.03,
        "--refund-share",
        help="Share of the orders refunded (0.03: 3%, the merchant mix); each refund is posted "
        "on its own, where the provider takes refunds. Example: --refund-share 0.05.",
    ),
    payments_wait_hours: float | None = typer.Option(
        None,
        "--payments-wait-hours",
        help="The connections' payments_wait_hours: hours payments wait to go together "
        "(default: each provider's; 0: every run). Example: --payments-wait-hours 0.",
    ),
    crontab: Path | None = typer.Option(
        None, "--crontab", help="A crontab to cost (default: the recommended one)."
    ),
    provider: list[str] = typer.Option(
        [], "--provider", help="Only this provider (repeatable; default all)."
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """The calls per day and per month a schedule spends, per job, against each provider's limits,
    and the worst-case freshness of a product change. Over budget it warns, prints crontab lines
    that fit (to paste as they are) and exits 3. Orders follow the merchant mix unless told:
    payments on 9 in 10 (--payment-share 0.9) and refunds on 3% (--refund-share 0.03), costed
    where the provider takes them.

    Example:

        synccli plan --products 5000 --customers 3000 --orders-per-day 50 --crontab crontab.example
        synccli plan --products 5000 --customers 3000 --orders-per-day 50 --refund-share 0.05
    """
    from synccli.sync import plan as planning

    for value, name in (
        (products, "--products"),
        (customers, "--customers"),
        (orders_per_day, "--orders-per-day"),
    ):
        if value < 0:
            raise UsageError(f"{name} must not be negative")
    for rate, name in ((change_rate, "--change-rate"), (stock_change_rate, "--stock-change-rate")):
        if not 0 <= rate <= 1:
            raise UsageError(f"{name} is a share of the products a day, from 0 to 1")
    for share, name in ((payment_share, "--payment-share"), (refund_share, "--refund-share")):
        if not 0 <= share <= 1:
            raise UsageError(f"{name} is a share of the orders, from 0 to 1")
    if payments_wait_hours is not None and payments_wait_hours < 0:
        raise UsageError("--payments-wait-hours must not be negative")
    schedule = planning.load_schedule(crontab)
    merchant = planning.Merchant(
        products,
        customers,
        orders_per_day,
        product_change_rate=change_rate,
        stock_change_rate=stock_change_rate,
        payment_share=payment_share,
        refund_share=refund_share,
        payments_wait_hours=payments_wait_hours,
    )
    reports = [planning.plan(p, merchant, schedule) for p in (provider or registry.names())]
    over = any(r.over_budget for r in reports)
    if json_out:
        output.print_json(reports)
        if over:
            raise typer.Exit(int(ExitCode.BUDGET))
        return
    for r in reports:
        limit = (
            f"limit {r.limit_day}/day"
            if r.limit_day
            else (
                f"limit {r.limit_month}/month"
                if r.limit_month
                else "no day/month cap: a short window only"  # a bucket, 5 minutes
            )
        )
        output.table(
            ["job", "runs/day", "calls/day", "calls/month", "how"],
            [[j.job, j.runs_per_day, j.calls_per_day, j.calls_per_month, j.note] for j in r.jobs],
            title=f"{r.provider}: {fmt.number(r.calls_per_day)} calls/day, "
            f"{fmt.number(r.calls_per_month)} calls/month ({limit})",
        )
        fresh = (
            f"{fmt.number(r.freshness_minutes)} minutes"
            if r.freshness_minutes is not None
            else "no pull scheduled"
        )
        sweep = fmt.every_days(r.sweep_days) if r.sweep_days is not None else "never"
        output.line(
            f"  worst-case freshness of a product change: {fresh}; whole catalogue swept {sweep}"
        )
        for w in r.warnings:
            output.warn(f"  warning: {w}")
        if r.proposal:
            output.line("  a schedule that fits (crontab lines, to paste as they are):")
            for line in r.proposal:
                output.line(line)
        output.line("")
    if over:
        raise typer.Exit(int(ExitCode.BUDGET))  # exit 3: the schedule spends more than allowed


def doctor(
    ctx: typer.Context,
    connection: list[str] = typer.Option([], "--connection", "-c", help="Only these connections."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Check configuration, schema, and for each connection its settings, credentials (one
    cheap call), clock skew, notify_email, email delivery, leases and budget: one line each, ok
    or the problem and what to do; the exit code is the first problem's.

    Example:

        synccli doctor --connection shop1
    """
    from synccli.store.connections import get_connection, list_connections
    from synccli.sync.doctor import check_connection, check_setup

    st = state(ctx)
    try:
        store = st.store(check=False)
    except SyncError as err:
        output.error_line(err.message)
        raise typer.Exit(int(err.exit_code)) from None
    checks = check_setup(st.settings, store)
    schema_ok = all(c.ok for c in checks if c.name == "schema")
    if schema_ok:
        now = SystemClock().now()
        conns = (
            [get_connection(store, n) for n in connection]
            if connection
            else list_connections(store)
        )
        for conn in conns:
            checks.extend(check_connection(store, conn, now, st.settings))
    render_checks(checks, json_out)


def render_checks(checks: list[Check], json_out: bool) -> None:
    """One line per check (ok, or FAIL with what to do); exit with the first failure's code."""
    from synccli.sync.doctor import exit_code

    if json_out:
        output.print_json(checks)
    else:
        for c in checks:
            mark = "ok  " if c.ok else "FAIL"
            fix = f" -> {c.fix}" if c.fix and not c.ok else ""
            output.line(f"{mark} {c.name}: {c.message}{fix}")
    code = exit_code(checks)
    if code:
        raise typer.Exit(code)


def trace(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help="product, customer or invoice."),
    key: str = typer.Argument(..., help="SKU, email or order number."),
    connection: str | None = typer.Option(
        None, "--connection", "-c", help="Connection (default: the only one)."
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """The history of one record: its links, every change with its run, every attempt with its
    error.

    Example:

        synccli trace invoice WEB-1042
        synccli trace product SKU-00042 --json
    """
    from synccli.store.connections import get_connection, list_connections
    from synccli.sync.trace import trace as trace_record

    store = state(ctx).store()
    if connection:
        conn = get_connection(store, connection)
    else:
        conns = list_connections(store)
        if len(conns) != 1:
            raise UsageError("name a connection with --connection NAME")
        conn = conns[0]
    result = trace_record(store, conn, kind, key)
    if json_out:
        output.print_json(result)
        return
    output.line(f"{kind} {key} ({conn.name})")
    for name, value in result.record.items():
        output.line(f"  {name}: {output.cell(value)}")
    for link in result.links:
        output.line(
            f"  link: remote {link['remote_id']} ({link['state']}, {link['origin']}), "
            f"last synced {_when(link['last_synced_at'])}"
        )
    if result.payments:
        from synccli.cli.commands_invoices import payments_table

        payments_table(result.payments)
    output.table(
        ["when", "what", "detail", "run"],
        [
            [h.at, h.what, h.detail, f"{h.job or ''} #{h.run_id}" if h.run_id else "-"]
            for h in result.history
        ],
    )


def demo(
    ctx: typer.Context,
    keep: Path | None = typer.Option(
        None, "--keep", help="Keep the demo's store in this directory."
    ),
) -> None:
    """Run the whole schedule against a simulator of each provider in a throwaway store, change
    data, run again, and show the status. Needs no configuration and no network.

    Example:

        synccli demo
    """
    from synccli.sync.demo import run_demo

    run_demo(keep, say=output.line)


def _when(value: datetime | None) -> str:
    return fmt.minute(value) if value is not None else "never"
