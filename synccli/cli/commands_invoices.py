"""``invoices add|list|show|retry|cancel`` and ``post-invoices``."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from synccli import fmt
from synccli.cli import output
from synccli.cli.jobs import (
    ALL_OPT,
    CONNECTION_OPT,
    DRY_RUN_OPT,
    JSON_OPT,
    run_for_connections,
    select_connections,
)
from synccli.cli.state import state
from synccli.clock import SystemClock
from synccli.errors import UsageError
from synccli.lazy import lazy_import
from synccli.sync.jobs import Job

if TYPE_CHECKING:
    from synccli.store.models import Connection
    from synccli.sync import invoices, orders
    from synccli.sync.context import JobContext
else:  # loaded when a command runs (see synccli.lazy)
    invoices = lazy_import("synccli.sync.invoices")
    orders = lazy_import("synccli.sync.orders")

app = typer.Typer(
    help="The invoice outbox: orders in, invoices out, exactly once.\n\n"
    "Example:\n\n    \b\n    synccli invoices add orders.jsonl --connection shop1\n"
    "    synccli invoices list --state failed",
    no_args_is_help=True,
    rich_markup_mode=None,
)

ONE_CONNECTION_OPT = typer.Option(
    None, "--connection", "-c", help="Connection name (needed when there are several)."
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="invoices")
    root.command(Job.POST_INVOICES)(post_invoices)


def _one_connection(ctx: typer.Context, name: str | None) -> Connection:
    store = state(ctx).store()
    return select_connections(store, [name] if name else [], False)[0]


@app.command("add")
def add(
    ctx: typer.Context,
    source: str = typer.Argument(
        ..., metavar="FILE|-", help="A JSON order, a JSON array, or JSON lines; - reads stdin."
    ),
    connection: str | None = ONE_CONNECTION_OPT,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the orders and show what would be queued; write nothing."
    ),
    json_out: bool = JSON_OPT,
) -> None:
    """Add orders to post as invoices, and refunds of them (an object with refund_of: posted
    once its order is). The whole input is checked first: one problem anywhere (named with its
    line and field) and nothing is written (exit 2). Schema: docs/orders.md. --dry-run makes
    every check and prints what would be queued, writing nothing.

    Example:

        \b
        synccli invoices add orders.jsonl --connection shop1
        cat order.json | synccli invoices add - -c shop1 --json
        synccli invoices add refunds.jsonl -c shop1   # {"refund_of": "WEB-1", ...}
    """
    conn = _one_connection(ctx, connection)
    store = state(ctx).store()
    now = SystemClock().now()
    if source == "-":
        stream = getattr(sys.stdin, "buffer", None)
        report = orders.add_orders(
            store, conn, stream if stream is not None else sys.stdin.read(), now, dry_run=dry_run
        )
    else:
        path = Path(source)
        try:
            with path.open("rb") as fh:
                report = orders.add_orders(store, conn, fh, now, dry_run=dry_run)
        except IsADirectoryError:
            raise UsageError(f"cannot read {source}: it is a directory") from None
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    if json_out:
        output.print_json(report)
        return
    if dry_run:
        new = f", {report.customers_created} new customer(s)" if report.customers_created else ""
        output.line(
            f"{conn.name}: would add {report.added} order(s) and queue {report.queued} "
            f"invoice(s){new}: {', '.join(report.numbers)} (dry run: nothing written)"
        )
    elif not state(ctx).quiet:
        output.line(
            f"{conn.name}: added {report.added} order(s); {report.queued} invoice(s) queued "
            f"(post them with `synccli post-invoices -c {conn.name}`)"
        )


def post_invoices(
    ctx: typer.Context,
    connection: list[str] = CONNECTION_OPT,
    all_: bool = ALL_OPT,
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Post at most N invoices per connection."
    ),
    dry_run: bool = DRY_RUN_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Post due invoices: customer and products first (created when the provider lacks them),
    then the invoice under its idempotency key. A job whose earlier post got no clear answer looks
    the invoice up before posting again. Rejected invoices email the merchant and retry on a slow
    schedule. Exit 3: budget exhausted (postponed); exit 5: re-authorisation needed.

    Example:

        \b
        synccli post-invoices --all                 # from cron, every 2 hours
        synccli post-invoices -c shop1 --dry-run
    """

    def work(jc: JobContext) -> invoices.PostReport:
        return invoices.post_invoices(jc, limit)

    def render(conn: Connection, r: invoices.PostReport) -> None:
        if r.dry_run:
            if r.invoices:
                output.table(
                    ["number", "would", "total", "note"],
                    [
                        [
                            i.number,
                            i.outcome.removeprefix("would_").replace("_", " "),
                            i.total,
                            i.error,
                        ]
                        for i in r.invoices[:200]
                    ],
                    title=f"{conn.name}: due invoices",
                )
            if r.unlinked_products:
                listed = _some(r.unlinked_products)
                output.line(f"{conn.name}: products to look up (or create): {listed}")
            if r.unlinked_customers:
                listed = _some(r.unlinked_customers)
                output.line(f"{conn.name}: customers to look up (or create): {listed}")
            # each due invoice counted under what its plan does (a refund waiting for its
            # order is not one posted)
            actions = Counter(i.outcome.removeprefix("would_") for i in r.invoices)
            posts = actions.pop("post", 0) if actions else r.due
            others = "".join(f", {a.replace('_', ' ')} {n}" for a, n in actions.items())
            output.line(
                f"{conn.name}: would post {posts} invoice(s){others} ({r.enqueued} not queued "
                "yet); no call made"
            )
            return
        if r.due == 0 and r.enqueued == 0:
            output.line(f"{conn.name}: nothing due")
            return
        output.line(
            f"{conn.name}: posted {r.posted}, found already posted {r.found}, "
            f"rejected {r.rejected}, "
            f"gave up {r.gave_up}, transient {r.transient}, postponed {r.postponed}; "
            f"products created {r.products_created}, linked {r.products_linked}; "
            f"emails sent {r.emails}"
            + (f", emails failed {r.emails_failed}" if r.emails_failed else "")
            + (f"; total mismatches {r.total_mismatches}" if r.total_mismatches else "")
            + (f"; left to another run that took them over {r.lost}" if r.lost else "")
            + (f"; payments applied {r.payments_applied}" if r.payments_applied else "")
        )
        for item in r.invoices:  # (a total mismatch is logged as an error, -q or not)
            if item.outcome in ("rejected", "invalid", "gave_up", "payment_refused"):
                verb = {"gave_up": "gave up on", "payment_refused": "payments refused for"}
                what = verb.get(item.outcome, "rejected")
                output.warn(f"{conn.name}: {what} invoice {item.number}: {item.error}")

    run_for_connections(
        ctx,
        Job.POST_INVOICES,
        connection,
        all_,
        dry_run,
        work,
        render,
        json_out,
        nothing_due=nothing_due_report,
    )


def nothing_due_report(name: str) -> dict[str, Any]:
    """The report (and run row counts) of a run that found nothing to do: an empty
    ``PostReport``'s plain form, written out so a quiet cron run imports neither the invoice
    machinery nor the ORM (a test keeps the two equal)."""
    zero = "enqueued due posted found transient rejected gave_up postponed products_created"
    zero += " products_linked emails emails_failed total_mismatches lost waiting payments_applied"
    empty = ("unlinked_products", "unlinked_customers", "invoices", "email_failures")
    report: dict[str, Any] = {"connection": name, "dry_run": False}
    report |= dict.fromkeys(zero.split(), 0) | {"stopped": None}
    return report | {k: [] for k in empty}


def _some(items: list[str], shown: int = 20) -> str:
    """The first ``shown`` items, and how many more there are."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


@app.command("list")
def list_(
    ctx: typer.Context,
    connection: list[str] = CONNECTION_OPT,
    state_: str | None = typer.Option(
        None,
        "--state",
        help="pending, posting, paying, posted, mismatch, failed, gave_up or cancelled.",
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most N rows."),
    json_out: bool = JSON_OPT,
) -> None:
    """List invoice jobs with their state, attempts, next attempt and last error.

    Example:

        \b
        synccli invoices list --state failed
        synccli invoices list -c shop1 --json | jq '.[] | select(.state=="gave_up") | .number'
    """
    store = state(ctx).store()
    rows = invoices.list_invoices(store, connection or None, state_, limit)
    if json_out:
        output.print_json(rows)
        return
    if not rows:
        output.line("no invoices")
        return
    output.table(
        [
            "connection",
            "number",
            "state",
            "attempts",
            "total",
            "next attempt",
            "remote id",
            "last error",
        ],
        [
            [
                r.connection,
                f"{r.number} (refund of {r.refund_of})" if r.refund_of else r.number,
                r.state,
                r.attempts,
                f"{fmt.number(r.total)} {r.currency}",
                r.next_attempt_at,
                r.remote_id,
                (r.last_error or "")[:70] or None,
            ]
            for r in rows
        ],
    )


@app.command("show")
def show(
    ctx: typer.Context,
    number: str = typer.Argument(..., help="The order number."),
    connection: str | None = ONE_CONNECTION_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Show one invoice: its order, state, and every attempt (time, request summary, error).

    Example:

        \b
        synccli invoices show WEB-1042
        synccli invoices show WEB-1042 -c shop1 --json
    """
    store = state(ctx).store()
    d = invoices.show_invoice(store, number, connection)
    if json_out:
        output.print_json(d)
        return
    r = d.invoice
    output.styled(
        f"[bold]invoice {output.esc(r.number)}[/bold] ({output.esc(r.connection)}): "
        f"{output.esc(r.state)}"
    )
    output.line(
        f"  order date {d.order_date:%Y-%m-%d}, total {fmt.number(r.total)} {r.currency}, customer "
        f"{d.customer['name']} <{d.customer['email'] or '-'}> "
        f"{d.customer['account_number'] or ''}".rstrip()
    )
    if r.refund_of:
        output.line(f"  refund of order {r.refund_of}")
    output.line(f"  idempotency key {r.idempotency_key}")
    if d.maybe_sent:
        output.line(
            "  an earlier post may have reached the provider (no clear answer): "
            "the next post looks it up first"
        )
    if r.remote_id:
        when = "posted" if r.state == "posted" else "at the provider since"  # e.g. a mismatch
        since = f", {when} {fmt.minute(r.posted_at)}" if r.posted_at else ""
        total = fmt.number(r.remote_total) if r.remote_total is not None else "-"
        output.line(f"  remote id {r.remote_id}, remote total {total}{since}")
    if r.next_attempt_at:
        output.line(f"  next attempt {fmt.minute(r.next_attempt_at)}; rejections {r.attempts}")
    if r.last_error:
        # a posted refund's note (its credit left on the contact), a refund's wait, or an error
        label = "note" if r.state == "posted" else "last error"
        output.line(f"  {r.last_error}" if r.state == "waiting" else f"  {label}: {r.last_error}")
    output.table(
        ["line", "sku", "description", "qty", "unit price", "tax code", "tax rate", "account"],
        [
            [
                ln["line"],
                ln["sku"],
                ln["description"][:40],
                ln["quantity"],
                ln["unit_price"],
                ln["tax_code"],
                ln["tax_rate"],
                ln["account_code"],
            ]
            for ln in d.lines
        ],
    )
    if d.payments:
        payments_table(d.payments)
    if d.history:
        output.table(
            ["time", "outcome", "request", "error"],
            [
                [
                    a.at,
                    a.outcome,
                    a.summary,
                    "\n".join(a.messages) if a.messages else a.error,  # one message a line
                ]
                for a in d.history
            ],
            title="attempts",
        )
    else:
        output.line("  no attempts yet")


def payments_table(payments: list[Any]) -> None:
    """The order's payments: amount, method, state (posted, pending, refused) and remote id."""
    output.table(
        ["payment", "amount", "date", "method", "reference", "state", "remote id", "error"],
        [
            [
                p.payment_no,
                p.amount,
                f"{p.date:%Y-%m-%d}",
                p.method,
                p.reference,
                p.state + (" (looked up first)" if p.maybe_sent else ""),
                p.remote_id,
                p.error,
            ]
            for p in payments
        ],
        title="payments",
    )


@app.command("retry")
def retry(
    ctx: typer.Context,
    number: str = typer.Argument(..., help="The order number."),
    connection: str | None = ONE_CONNECTION_OPT,
) -> None:
    """Make an invoice due now (also after it was given up or cancelled), with a fresh
    rejection count. The next post-invoices run posts it.

    Example:

        synccli invoices retry WEB-1042 -c shop1 && synccli post-invoices -c shop1
    """
    store = state(ctx).store()
    r = invoices.retry_invoice(store, number, connection, SystemClock().now())
    output.line(
        f"invoice {r.number} ({r.connection}) is due now: the next "
        f"`synccli post-invoices -c {r.connection}` posts it"
    )


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    number: str = typer.Argument(..., help="The order number."),
    connection: str | None = ONE_CONNECTION_OPT,
) -> None:
    """Stop posting an invoice (not possible once posted: void it at the provider).

    Example:

        synccli invoices cancel WEB-1042 -c shop1
    """
    store = state(ctx).store()
    r, warning = invoices.cancel_invoice(store, number, connection, SystemClock().now())
    if warning:
        output.warn(f"warning: {warning}")
    output.line(
        f"invoice {r.number} ({r.connection}) cancelled; "
        f"`synccli invoices retry {r.number} -c {r.connection}` undoes it"
    )
