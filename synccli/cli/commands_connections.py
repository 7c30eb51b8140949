"""``synccli connections``: merchants' accounts at providers, with encrypted credentials."""

from __future__ import annotations

import sys

import typer

from synccli.cli import output
from synccli.cli.state import state
from synccli.errors import UsageError
from synccli.store import connections as store_connections

app = typer.Typer(
    help="Merchants' accounts at providers.\n\nExample:\n\n    synccli connections list",
    no_args_is_help=True,
)


def _pairs(values: list[str]) -> dict[str, str]:
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value
    return pairs


@app.command("add")
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A short name, e.g. shop1."),
    provider: str = typer.Option(..., "--provider", help="xero, unleashed or lightspeed."),
    client_id: str | None = typer.Option(
        None, "--client-id", help="OAuth2 client id (Xero, Lightspeed)."
    ),
    client_secret: str | None = typer.Option(
        None,
        "--client-secret",
        envvar="SYNC_CLIENT_SECRET",
        help="OAuth2 client secret (or SYNC_CLIENT_SECRET).",
    ),
    api_id: str | None = typer.Option(None, "--api-id", help="Unleashed API id."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="SYNC_API_KEY", help="Unleashed API key (or SYNC_API_KEY)."
    ),
    secret_stdin: bool = typer.Option(
        False, "--secret-stdin", help="Read the client secret / API key from stdin (never echoed)."
    ),
    tenant_id: str | None = typer.Option(
        None, "--tenant-id", help="Xero tenant (organisation) id."
    ),
    account_id: str | None = typer.Option(None, "--account-id", help="Lightspeed account id."),
    grant: str | None = typer.Option(
        None, "--grant", help="Xero: authorization_code (default) or client_credentials."
    ),
    base_url: str | None = typer.Option(
        None, "--base-url", help="API base URL (default: the provider's)."
    ),
    notify_email: str | None = typer.Option(
        None, "--notify-email", help="Where the merchant's emails go."
    ),
    setting: list[str] = typer.Option(
        [], "--set", help="Any other setting, KEY=VALUE (repeatable)."
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Add a connection. Secrets are stored encrypted and never shown.

    Example:

        synccli connections add shop1 --provider xero --client-id ABC --secret-stdin < secret.txt
    """
    secret = client_secret
    key = api_key
    if secret_stdin:
        value = sys.stdin.readline().strip()
        if not value:
            raise UsageError("--secret-stdin: nothing on stdin")
        if provider == "unleashed":
            key = value
        else:
            secret = value
    settings = {
        "client_id": client_id,
        "api_id": api_id,
        "tenant_id": tenant_id,
        "account_id": account_id,
        "grant": grant,
        "base_url": base_url,
        **_pairs(setting),
    }
    store = state(ctx).store()
    conn = store_connections.add_connection(
        store, name, provider, settings, {"client_secret": secret, "api_key": key}, notify_email
    )
    data = store_connections.describe(store, conn)
    if json_out:
        output.print_json(data)
    else:
        output.line(f"connection {name} added ({provider})")


@app.command("list")
def list_(
    ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="JSON output.")
) -> None:
    """List connections.

    Example:

        synccli connections list --json
    """
    store = state(ctx).store()
    conns = store_connections.list_connections(store)
    if json_out:
        output.print_json([store_connections.describe(store, c) for c in conns])
        return
    output.table(
        ["name", "provider", "needs re-auth", "notify"],
        [[c.name, c.provider, "yes" if c.needs_reauth else "no", c.notify_email] for c in conns],
    )


@app.command("show")
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Connection name."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Show one connection; secrets are shown only as (set) or (not set).

    Example:

        synccli connections show shop1 --json
    """
    store = state(ctx).store()
    data = store_connections.describe(store, store_connections.get_connection(store, name))
    if json_out:
        output.print_json(data)
        return
    output.line(f"{data['name']} ({data['provider']})")
    for key, value in sorted(data["settings"].items()):
        output.line(f"  {key} = {value}")
    for key, value in data["credentials"].items():
        output.line(f"  {key} {value}")
    output.line(f"  notify_email = {data['notify_email'] or '-'}")
    if data["needs_reauth"]:
        output.line(f"  NEEDS RE-AUTHORISATION: {data['reauth_reason']}")


@app.command("set")
def set_(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Connection name."),
    values: list[str] = typer.Argument(
        ..., help="KEY=VALUE pairs; an empty VALUE removes a setting."
    ),
) -> None:
    """Change settings or credentials of a connection.

    Example:

        synccli connections set shop1 notify_email=owner@shop.example account_code=200
    """
    store = state(ctx).store()
    store_connections.set_values(store, name, _pairs(values))
    output.line(f"connection {name} updated")


@app.command("remove")
def remove(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Connection name."),
    force: bool = typer.Option(False, "--force", help="Remove even with unposted invoices."),
) -> None:
    """Remove a connection (refused while invoices are unposted, unless --force).

    Example:

        synccli connections remove shop1
    """
    store = state(ctx).store()
    dropped = store_connections.remove_connection(store, name, force)
    note = f", {dropped} unposted invoice(s) dropped" if dropped else ""
    output.line(f"connection {name} removed{note}")


@app.command("authorize")
def authorize(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Connection name."),
    port: int = typer.Option(
        0, "--port", help="Loopback port for the redirect (0: any free port)."
    ),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds to wait for the redirect."),
) -> None:
    """Authorise a Xero or Lightspeed connection (OAuth2 authorization code): prints the URL,
    listens on 127.0.0.1 for the redirect, stores the tokens encrypted.

    Example:

        synccli connections authorize shop1 --port 8765
    """
    from synccli.sync.authorize import authorize as run_authorize

    store = state(ctx).store()
    conn = store_connections.get_connection(store, name)
    result = run_authorize(
        store,
        conn,
        say=lambda text: output.err.print(text, markup=False),
        port=port,
        timeout=timeout,
    )
    details = ", ".join(f"{k} {v}" for k, v in result.details.items())
    output.line(f"connection {name} authorised{'; ' + details if details else ''}")
