"""``synccli status``: what ran, what it cost, what is waiting."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import typer

from synccli import fmt, registry
from synccli.cli import output
from synccli.cli.state import state
from synccli.clock import SystemClock

if TYPE_CHECKING:
    from synccli.store.db import Store


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def status(
    ctx: typer.Context,
    connection: list[str] = typer.Option([], "--connection", "-c", help="Only these connections."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Per connection: the last run of each job (when, outcome, counts, calls), when the last
    successful pull ended, calls used today and this month against the limits, the invoice
    queue, ghosts, review items, and products the provider has with no code (not synced).

    Example:

        synccli status --json | jq '.[0].invoices'
    """
    from synccli.sync.status import status_report  # here: the CLI starts for every cron run

    store = state(ctx).store()
    if json_out:
        output.print_json(status_report(store, SystemClock().now(), connection or None))
        return
    render_status(store, connection or None)


def render_status(store: Store, names: list[str] | None = None) -> None:
    """The human status view (also the end of the demo)."""
    from synccli.sync.status import status_report

    now = SystemClock().now()
    report = status_report(store, now, names)
    if not report:
        output.line(
            "no connections yet: add one with `synccli connections add NAME --provider ...`"
        )
        return
    for item in report:
        entry = registry.find(item.provider)
        keyed = entry if entry is not None and entry.key_only else None  # nothing to authorise
        need = f"{keyed.secret.name.upper()} REFUSED" if keyed else "NEEDS RE-AUTHORISATION"
        flag = f"  [red]{need}[/red]" if item.needs_reauth else ""
        day = item.limits.get("per_day")
        month = item.limits.get("per_month")
        budget = f"calls today {item.calls['today']}" + (f"/{day}" if day else "")
        budget += f", this month {item.calls['month']}" + (f"/{month}" if month else "")
        blocked = item.calls.get("blocked_until")
        if blocked:
            when = datetime.fromisoformat(blocked) if isinstance(blocked, str) else blocked
            budget += f", BLOCKED until {fmt.minute(when)}"
        queue = ", ".join(f"{k} {v}" for k, v in item.invoices.items() if v) or "empty"
        if item.refunds:  # the refunds among them, by state ("waiting" for their order)
            queue += " (refunds: " + ", ".join(f"{k} {v}" for k, v in item.refunds.items()) + ")"
        paid = ", ".join(f"{k} {v}" for k, v in item.payments.items() if v)
        queue += f"; payments: {paid}" if paid else ""
        if item.last_successful_pull is None:
            pulled = "last successful pull: never"
        else:
            minutes = max(0, int((now - fmt.utc(item.last_successful_pull)).total_seconds() // 60))
            pulled = f"last successful pull {minutes} minute{'' if minutes == 1 else 's'} ago"
        output.styled(f"[bold]{output.esc(item.name)}[/bold] ({output.esc(item.provider)}){flag}")
        if item.needs_reauth and item.reauth_reason:
            if keyed:  # a key to enter again
                output.line(
                    f"  {keyed.secret.name} refused: {item.reauth_reason} -> enter the "
                    f"{keyed.account_key.name} and key from {keyed.key_source} again: "
                    f"`synccli connections set {item.name} --secret-stdin`"
                )
            else:
                output.line(
                    f"  re-authorisation needed: {item.reauth_reason} -> "
                    f"`synccli connections authorize {item.name}`"
                )
        output.line(
            f"  {budget}; invoices: {queue}; ghosts {item.ghosts}; "
            f"review {item.review_waiting}; {pulled}"
        )
        output.line(f"  cursors: {cursors_line(item.cursors)}")
        for p in item.refused_payments:  # what the merchant has to fix, one line each
            output.line(
                f"  payment refused: {p['number']} payment {p['payment']} ({p['amount']} "
                f"{p['method']}): {p['error']}"
            )
        for stream, mode in item.push.items():
            output.line(f"  {stream}: {mode['summary']}")
        if item.uncoded:
            output.line(f"  {uncoded_line(item.provider, item.uncoded)}")
        output.table(
            ["job", "last run", "outcome", "calls", "counts"],
            [
                [j.job, j.started_at, j.outcome, j.calls, _counts(j.counts) or (j.error or "")]
                for j in item.jobs
            ],
        )


def cursors_line(cursors: dict[str, datetime | dict[str, int] | None]) -> str:
    """Where each stream reads from next: a time, or a version where the provider counts
    changes instead (its cursors are kept as instants after 1970, never shown as such)."""

    def shown(value: datetime | dict[str, int] | None) -> str:
        if value is None:
            return "never pulled"
        if isinstance(value, dict):
            return f"version {value['version']}"
        return fmt.minute(value)

    return ", ".join(f"{stream} {shown(value)}" for stream, value in cursors.items())


def uncoded_line(provider: str, n: int) -> str:
    """What status says of products the provider has with no code (never synced)."""
    entry = registry.find(provider)
    field = entry.setting("sku_field") if entry is not None else None  # a configurable SKU
    where = (
        f" in the field the connection's sku_field names ({field.default} unless set)"
        if field is not None
        else ""
    )
    its = "it has" if n == 1 else "they have"
    return f"{n} product{'' if n == 1 else 's'} at {provider} not synced: {its} no code{where}"


def _counts(counts: dict) -> str:
    """The counts worth a glance: non-zero whole numbers, not the bookkeeping."""
    skip = {"calls", "seconds", "pages", "dry_run", "connection"}
    return ", ".join(
        f"{k} {v}"
        for k, v in counts.items()
        if k not in skip and isinstance(v, int) and not isinstance(v, bool) and v
    )
