"""``synccli webhooks``: receive the changes providers push (serve), register for them
(subscribe), and see how deliveries are going (status)."""

from __future__ import annotations

import typer

from synccli import fmt
from synccli.cli import output
from synccli.cli.jobs import ALL_OPT, CONNECTION_OPT, DRY_RUN_OPT, JSON_OPT, select_connections
from synccli.cli.state import state
from synccli.clock import SystemClock

app = typer.Typer(
    help="Receive the changes Xero, X-Series and Unleashed push (webhooks).\n\nExample:\n\n"
    "    synccli webhooks status",
    no_args_is_help=True,
)

MAX_BODY = 1024 * 1024


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="webhooks")


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (behind a TLS proxy: keep loopback)."
    ),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    threads: int = typer.Option(8, "--threads", metavar="N", help="Requests handled at once."),
    max_body: int = typer.Option(
        MAX_BODY, "--max-body", metavar="BYTES", help="Larger bodies are refused with 413."
    ),
    seconds: float | None = typer.Option(
        None, "--seconds", help="Stop after this many seconds (a trial run; default: never)."
    ),
    apply_records: bool = typer.Option(
        True,
        "--apply/--no-apply",
        help="Apply delivered records right after storing them, off the request path (no API "
        "call); --no-apply leaves them to `webhooks apply` or the next pull.",
    ),
) -> None:
    """Run the webhook receiver (a WSGI application under waitress) until stopped. Each
    delivery is verified on its raw body (signature or URL token), stored once, and answered
    200 only after the commit; nothing else is done inline (no API call). Deliveries go to
    POST /webhooks/NAME (Xero) or the URL `webhooks subscribe` registered. Put it behind a
    TLS-terminating proxy (README: Webhooks); -v logs one line per delivery.

    The same application runs under any WSGI server: synccli.webhooks.app:application.

    Example:

        synccli webhooks serve --host 127.0.0.1 --port 8080 -v
    """
    from synccli.webhooks.app import build
    from synccli.webhooks.applier import Applier
    from synccli.webhooks.serving import serve as run

    store = state(ctx).store()
    # records that came in a delivery are applied a moment after their commit, on a thread of
    # their own (no API call): changes reach the store within seconds, answers stay fast
    applier = Applier(store).start() if apply_records else None
    receiver = build(
        store, max_body=max_body, on_stored=applier.stored if applier is not None else None
    )

    def listening(address: str, bound: int) -> None:
        output.line(f"receiving webhooks on http://{address}:{bound}/webhooks/<connection>")
        output.flush()

    try:
        run(
            receiver,
            host=host,
            port=port,
            threads=threads,
            body_cap=max_body * 8,
            seconds=seconds,
            listening=listening,
        )
    finally:
        receiver.refusals.flush()  # refused requests counted since the last write
        if applier is not None:
            applier.stop()


@app.command("subscribe")
def subscribe(
    ctx: typer.Context,
    connection: str = typer.Option(..., "--connection", "-c", help="The connection."),
    url: str = typer.Option(
        ...,
        "--url",
        metavar="URL",
        help="The receiver's public https address (its proxy), without /webhooks/...",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be registered: no call, nothing stored."
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Register the connection's webhooks. X-Series: through its API, one webhook per followed
    type (product, inventory, customer, sale); one already there is left as it is. Xero and
    Unleashed: the exact steps to take (Xero's are in its developer portal). The URL token that
    proves a delivery is made and stored encrypted here, and never printed.

    Example:

        synccli webhooks subscribe -c shop1 --url https://hooks.shop.example

        synccli webhooks subscribe -c shop1 --url https://hooks.shop.example --dry-run
    """
    from synccli.webhooks import manage

    result = manage.subscribe(state(ctx).store(), connection, url, SystemClock(), dry_run)
    if json_out:
        output.print_json(result)
        return
    said = " (dry run: no call, nothing stored)" if result.dry_run else ""
    output.line(
        f"{result.connection} ({result.provider}): deliveries go to {result.endpoint}{said}"
    )
    for kind in result.planned:
        output.line(f"  would subscribe: {kind}")
    for kind in result.created:
        output.line(f"  subscribed: {kind}")
    for kind in result.already:
        output.line(f"  already subscribed: {kind}")
    for step in result.steps:
        output.line(step)


@app.command("status")
def status(
    ctx: typer.Context,
    connection: list[str] = typer.Option([], "--connection", "-c", help="Only these connections."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Per connection: the last delivery, deliveries today, requests refused today for a bad or
    missing signature, and changes received but not applied yet (records, and ids the next
    pull fetches).

    Example:

        synccli webhooks status --json | jq '.[] | select(.rejected_today > 0)'
    """
    from synccli.webhooks import manage

    now = SystemClock().now()
    rows = manage.status(state(ctx).store(), now, connection or None)
    if json_out:
        output.print_json(rows)
        return
    if not rows:
        output.line("no connection receives webhooks (Xero, X-Series and Unleashed do)")
        return
    table = []
    for r in rows:
        last = fmt.minute(r.last_delivery_at) if r.last_delivery_at else "never"
        key = "" if r.key_stored else " (no webhook key: every delivery refused)"
        table.append(
            [
                f"{r.connection}{key}",
                r.provider,
                last,
                r.deliveries_today,
                r.rejected_today,
                r.pending_records,
                r.pending_hints,
            ]
        )
    output.table(
        ["connection", "provider", "last delivery", "today", "rejected", "to apply", "hints"],
        table,
    )
    for r in rows:
        if not r.key_stored:  # what to do, not only what is wrong
            output.line(
                f"{r.connection}: no webhook key; make one with `synccli webhooks subscribe"
                f" -c {r.connection} --url URL` (it says each provider's steps)"
            )


@app.command("apply")
def apply(
    ctx: typer.Context,
    connection: list[str] = CONNECTION_OPT,
    all_: bool = ALL_OPT,
    hints: bool | None = typer.Option(
        None,
        "--hints/--no-hints",
        help="Also fetch the records delivered as ids only (batched API calls, as a pull); "
        "default: once the oldest has waited the connection's hint_wait (unset: never here).",
    ),
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Apply stored webhook deliveries that carry their record, with no API call.

    For a receiver behind another WSGI server, or from cron. A connection whose pull (or
    link-customers) is running is left to that job, which applies them itself.

    Example:

        synccli webhooks apply --all            # every minute from cron

        synccli webhooks apply -c shop1 --hints # fetch id-only deliveries too

        synccli webhooks apply -c shop1 --dry-run  # what would be applied; writes nothing
    """
    from synccli.errors import SyncError
    from synccli.sync import push

    store = state(ctx).store()
    clock = SystemClock()
    results = {}
    failed: list[SyncError] = []
    for conn in select_connections(store, connection, all_, offer_all=True):
        try:  # one connection that cannot be applied (never authorised...) stops no other
            report = push.apply_connection(store, conn, clock, hints=hints, dry_run=dry_run)
        except SyncError as err:
            failed.append(err)
            results[conn.name] = {"error": err.message}
            continue
        results[conn.name] = report.summary() | {"busy": report.busy}
    if as_json:
        output.print_json(results)
    else:
        for name, counts in results.items():
            if counts.get("busy"):
                output.line(f"{name}: a job of this connection is running; it applies them")
                continue
            shown = ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("busy", "modes"))
            said = "(dry run, nothing written) " if dry_run else ""
            output.line(f"{name}: {said}{shown or 'nothing to apply'}")
    if failed:
        raise failed[0]  # the exit code of the first failure (README: exit codes)
