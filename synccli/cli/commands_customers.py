"""``link-customers`` and ``customers review|link|unlink|list``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

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
from synccli.errors import UsageError
from synccli.lazy import lazy_import
from synccli.sync.jobs import Job

if TYPE_CHECKING:
    from synccli.cli import progress
    from synccli.store.models import Connection
    from synccli.sync import customers
    from synccli.sync.context import JobContext
else:  # loaded when a command runs (see synccli.lazy)
    customers = lazy_import("synccli.sync.customers")
    progress = lazy_import("synccli.cli.progress")  # rich's live display

app = typer.Typer(
    no_args_is_help=True,
    help="Customer links: review what needs the merchant, link and unlink by hand, list.\n\n"
    "Example:\n\n    synccli customers review -c shop1",
)


def register(root: typer.Typer) -> None:
    root.command(Job.LINK_CUSTOMERS)(link_customers)
    root.add_typer(app, name="customers")


def _one_connection(ctx: typer.Context, names: list[str]) -> Connection:
    conns = select_connections(state(ctx).store(), names, False)
    if len(conns) != 1:
        raise UsageError("name one connection with --connection NAME")
    return conns[0]


def _now() -> datetime:
    return datetime.now(UTC)


# --- link-customers -------------------------------------------------------------------------------
def link_customers(
    ctx: typer.Context,
    since: str | None = typer.Option(
        None, "--since", help="2h, 30m, 1d or an ISO timestamp (default: the stored cursor)."
    ),
    connection: list[str] = CONNECTION_OPT,
    all_: bool = ALL_OPT,
    dry_run: bool = DRY_RUN_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Link remote customers changed since the last run to unlinked local customers, by email
    (case and surrounding spaces ignored) or account number / customer code.

    Exactly one candidate on both sides: linked. Several candidates either way: a review item and
    no link (see `synccli customers review`). Never writes a customer field, on either side.

    Example:

        \b
        synccli link-customers --all                 # from cron, every 6 hours
        synccli link-customers -c shop1 --since 1d --dry-run
    """

    show = progress.wanted(ctx, json_out)

    def work(jc: JobContext) -> customers.LinkReport:
        start = customers.parse_since(since, jc.clock.now())
        with progress.shown(jc.connection.name, show) as observer, jc.observed(observer):
            return customers.link_customers(jc, start)

    def render(conn: Connection, r: customers.LinkReport) -> None:
        if r.dry_run and r.would_link:
            shown = r.would_link[:200]
            output.table(
                ["local", "name", "remote", "remote name", "by"],
                [
                    [w["local_id"], w["name"], w["remote_id"], w["remote_name"], w["by"]]
                    for w in shown
                ],
                title=f"{conn.name}: would link",
            )
            if len(r.would_link) > len(shown):
                output.line(f"... and {len(r.would_link) - len(shown)} more (use --json for all)")
        verb = "would link" if r.dry_run else "linked"
        output.line(
            f"{conn.name}: {r.pages} page(s), {r.seen} customers seen, {verb} {r.linked}, "
            f"ambiguous {r.ambiguous}, already linked {r.already_linked}, unmatched {r.unmatched}; "
            f"{r.calls} call(s), {r.seconds:.1f}s"
        )
        if r.ambiguous:
            output.warn(
                f"{conn.name}: {r.ambiguous} ambiguous match(es) left unlinked: "
                f"synccli customers review -c {conn.name}"
            )
        for err in r.errors:
            output.warn(f"{conn.name}: {err}")

    run_for_connections(ctx, Job.LINK_CUSTOMERS, connection, all_, dry_run, work, render, json_out)


# --- customers review -----------------------------------------------------------------------------
def _who(d: dict) -> str:
    bits = [str(d.get("name") or "?")]
    if d.get("email"):
        bits.append(f"<{d['email']}>")
    if d.get("account_number"):
        bits.append(f"[{d['account_number']}]")
    return " ".join(bits)


@app.command("review")
def review_cmd(
    ctx: typer.Context,
    connection: list[str] = typer.Option([], "--connection", "-c", help="Only these connections."),
    min_score: int = typer.Option(
        0, "--min-score", help="Only duplicate pairs scoring this or more (0-100)."
    ),
    resolve: list[int] = typer.Option(
        [], "--resolve", help="Mark this review item done (repeatable)."
    ),
    json_out: bool = JSON_OPT,
) -> None:
    """What the merchant should look at: ambiguous matches (left unlinked), customers created at
    sale time, and suspected duplicates among the provider's customers (near-identical names or
    the same email, with a similarity score), as link-customers last saw them: no API call.

    Example:

        \b
        synccli customers review -c shop1
        synccli customers review -c shop1 --json | jq '.[0].duplicates[] | select(.score >= 90)'
        synccli customers review -c shop1 --resolve 12     # the merchant has dealt with item 12
    """
    store = state(ctx).store()
    conns = select_connections(store, connection, not connection)
    if resolve:
        if len(conns) != 1:
            raise UsageError("name the connection of the items with --connection NAME")
        n = customers.resolve_items(store, conns[0], resolve, _now())
        if not json_out:
            output.line(f"{conns[0].name}: {n} review item(s) marked done")
    reports = [customers.review(store, c, min_score=min_score) for c in conns]
    if json_out:
        output.print_json(reports)
        return
    for r in reports:
        output.styled(
            f"[bold]{output.esc(r.connection)}[/bold]: {len(r.ambiguous)} ambiguous, "
            f"{len(r.created)} created "
            f"at sale time, {len(r.duplicates)} suspected duplicate pair(s) among "
            f"{r.remote_customers_known} remote customers"
        )
        if r.ambiguous:
            rows = []
            for e in r.ambiguous:
                d = e.detail
                subject = d.get("local") or d.get("remote") or {}
                cands = "; ".join(
                    f"{c.get('remote_id') or '#' + str(c.get('local_id'))} {_who(c)}"
                    for c in d.get("candidates", [])
                )
                rows.append([e.id, e.subject, _who(subject), cands, d.get("reason")])
            output.table(
                ["item", "subject", "customer", "candidates", "why"],
                rows,
                title="ambiguous (not linked): link one with "
                f"`synccli customers link -c {r.connection} LOCAL REMOTE`",
            )
        if r.created:
            rows = []
            for e in r.created:
                d = e.detail
                rows.append(
                    [
                        e.id,
                        (d.get("local") or {}).get("local_id"),
                        _who(d.get("local") or {}),
                        (d.get("remote") or {}).get("remote_id"),
                        d.get("order"),
                        e.created_at,
                    ]
                )
            output.table(
                ["item", "local", "customer", "created remote", "order", "at"],
                rows,
                title="created at sale time",
            )
        if r.duplicates:
            rows = [
                [
                    p.score,
                    f"{p.a['remote_id']} {_who(p.a)}",
                    f"{p.b['remote_id']} {_who(p.b)}",
                    ", ".join(p.reasons),
                ]
                for p in r.duplicates[:500]
            ]
            output.table(
                ["score", "customer", "looks like", "why"],
                rows,
                title="suspected duplicates at the provider (merge them there)",
            )
            if len(r.duplicates) > 500:
                output.line(f"... and {len(r.duplicates) - 500} more (use --json for all)")


# --- customers link / unlink / list ---------------------------------------------------------------
@app.command("link")
def link_cmd(
    ctx: typer.Context,
    local: str = typer.Argument(
        ..., help="Local customer: id, or an email / account number only one has."
    ),
    remote: str = typer.Argument(..., help="The provider's customer id (see `customers review`)."),
    connection: list[str] = typer.Option([], "--connection", "-c", help="Connection name."),
    force: bool = typer.Option(
        False, "--force", help="Link a remote id link-customers has never seen."
    ),
    json_out: bool = JSON_OPT,
) -> None:
    """Link a local customer to a remote one by hand (settles the review items about them). A
    remote id link-customers has never seen is refused unless --force.

    Example:

        \b
        synccli customers link -c shop1 42 8d3c1f0e-5a8e-4c62-9d57-0b6f2f4f8a10
        synccli customers link -c shop1 jane@example.com 8d3c1f0e-5a8e-4c62-9d57-0b6f2f4f8a10
    """
    conn = _one_connection(ctx, connection)
    change = customers.link_manual(state(ctx).store(), conn, local, remote, _now(), force)
    if json_out:
        output.print_json(change)
        return
    output.line(
        f"{conn.name}: linked local customer #{change.local_id} ({change.name}) to "
        f"{change.remote_id}"
        + (f" ({change.remote_name})" if change.remote_name else "")
        + (f"; {change.resolved} review item(s) settled" if change.resolved else "")
    )
    if change.warning:
        output.warn(f"{conn.name}: {change.warning}")


@app.command("unlink")
def unlink_cmd(
    ctx: typer.Context,
    local: str = typer.Argument(
        ..., help="Local customer: id, or an email / account number only one has."
    ),
    connection: list[str] = typer.Option([], "--connection", "-c", help="Connection name."),
    json_out: bool = JSON_OPT,
) -> None:
    """Remove a local customer's link. Neither customer is changed; the next link-customers run
    that sees the remote customer may match it again.

    Example:

        \b
        synccli customers unlink -c shop1 42
    """
    conn = _one_connection(ctx, connection)
    change = customers.unlink(state(ctx).store(), conn, local, _now())
    if json_out:
        output.print_json(change)
        return
    output.line(
        f"{conn.name}: unlinked local customer #{change.local_id} ({change.name}) from "
        f"{change.remote_id}"
    )


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    connection: list[str] = typer.Option([], "--connection", "-c", help="Connection name."),
    unlinked: bool = typer.Option(False, "--unlinked", help="Only local customers without a link."),
    json_out: bool = JSON_OPT,
) -> None:
    """Local customers and what each is linked to (origin: matched, created or manual).

    Example:

        \b
        synccli customers list -c shop1 --unlinked
        synccli customers list -c shop1 --json | jq '[.[] | select(.origin == "created")]'
    """
    conn = _one_connection(ctx, connection)
    rows = customers.list_customers(state(ctx).store(), conn, unlinked)
    if json_out:
        output.print_json(rows)
        return
    output.table(
        ["local", "name", "email", "account", "remote", "origin"],
        [[r.local_id, r.name, r.email, r.account_number, r.remote_id, r.origin] for r in rows],
    )
    linked = sum(1 for r in rows if r.remote_id)
    output.line(
        f"{conn.name}: {len(rows)} customer(s), {linked} linked, {len(rows) - linked} unlinked"
    )
