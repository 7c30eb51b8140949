"""``synccli connections``: merchants' accounts at providers, with encrypted credentials."""

from __future__ import annotations

import getpass
import inspect
import os
import sys
from typing import TYPE_CHECKING, Any

import typer

from synccli import connsettings, registry
from synccli.cli import output
from synccli.cli.state import state
from synccli.errors import UsageError
from synccli.lazy import lazy_import

if TYPE_CHECKING:
    from synccli.store import connections as store_connections
else:  # loaded when a command runs (see synccli.lazy)
    store_connections = lazy_import("synccli.store.connections")

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


def _secret_name(provider: str) -> tuple[str, str]:
    """(credential key, what people call it) for ``provider``."""
    secret = registry.get(provider).secret
    return secret.key, secret.name


def _read_secret(label: str, name: str) -> str:
    """The secret on stdin: on a terminal a prompt that does not echo, else the first line."""
    if sys.stdin.isatty():
        value = getpass.getpass(f"{label} for {name} (not shown): ", stream=sys.stderr)
    else:
        value = sys.stdin.readline()
    value = value.strip()
    if not value:
        raise UsageError(f"--secret-stdin: no {label} on stdin")
    return value


def _refuse_secret_argument(ctx: typer.Context, secret: registry.Setting) -> None:
    """A secret typed on the command line is readable by every user of the machine (``ps``,
    /proc/PID/cmdline) and kept in the shell's history: refused, nothing written."""
    source = ctx.get_parameter_source(secret.key)
    if source is not None and source.name == "COMMANDLINE":
        label = secret.name if secret.key == "api_key" else "secret"
        raise UsageError(
            f"{secret.flag} would put the {label} on the command line, where other users of this "
            f"machine can read it: pipe it with --secret-stdin, or set {secret.env}"
        )


def _secret_from_env(var: str, label: str) -> str:
    value = (os.environ.get(var) or "").strip()
    if not value:
        raise UsageError(f"--secret-env: the environment variable {var} holds no {label}")
    return value


def _next_step(name: str, provider: str, settings: dict[str, object]) -> str:
    declared = registry.get(provider)
    if not declared.authorises(settings):
        return f"next: synccli connections test {name}"
    if declared.https_redirect:
        return (
            "next: register an HTTPS redirect URL you control with the app "
            f"({declared.display_name} takes no other), then run synccli connections authorize "
            f"{name} --redirect-uri URL (README: Connect a real account)"
        )
    from synccli.sync.authorize import DEFAULT_PORT, redirect_uri_for

    return (
        f"next: register {redirect_uri_for(DEFAULT_PORT)} as the app's redirect URI, then run "
        f"synccli connections authorize {name} (README: Connect a real account)"
    )


def _option_settings() -> tuple[registry.Setting, ...]:
    """The settings `connections add` offers as options: each key once, across providers."""
    seen: dict[str, registry.Setting] = {}
    for p in registry.providers():
        for setting in p.schema():
            if setting.option:
                seen.setdefault(setting.key, setting)
    return tuple(seen.values())


def _who(key: str) -> str:
    """Which providers a key belongs to, for its help text (all of them: nothing said)."""
    having = [p.display_name for p in registry.providers() if p.setting(key) is not None]
    return "" if len(having) == len(registry.names()) else f" ({', '.join(having)})"


def _said(s: registry.Setting) -> str:
    """A setting's meaning and default as a sentence's words."""
    first, *rest = s.meaning.split(" ", 1)  # "The app's id" yes, "Authorization_code" no
    first = first if "_" in first else first[0].upper() + first[1:]
    return " ".join([first, *rest]) + (f"; default: {s.default}" if s.default else "")


def _option_help(key: str) -> str:
    """One option's help: the meaning once where every provider having the key means the same,
    else each provider's own (a grant means something else to each)."""
    having = [(p, s) for p in registry.providers() if (s := p.setting(key)) is not None]
    if len({_said(s) for _, s in having}) == 1:
        first = having[0][1]
        default = f"; default: {first.default}" if first.default else ""
        return f"{_said(first).removesuffix(default)}{_who(key)}{default}."
    said: dict[str, list[str]] = {}  # providers that mean the same, together
    for p, s in having:
        said.setdefault(_said(s), []).append(p.display_name)
    return " ".join(f"{', '.join(names)}: {words}." for words, names in said.items())


def _secrets() -> tuple[registry.Setting, ...]:
    return tuple({c.key: c for p in registry.providers() for c in p.credentials}.values())


def add(
    ctx: typer.Context,
    name: str,
    provider: str,
    secret_stdin: bool,
    notify_email: str | None,
    setting: list[str],
    json_out: bool,
    **given: str | None,
) -> None:
    """Add a connection. Secrets are stored encrypted and never shown.

    Example:

        synccli connections add shop1 --provider xero --client-id ABC --secret-stdin < secret.txt
    """
    if provider not in registry.names():
        raise UsageError(
            f"unknown provider {provider!r}: choose one of {', '.join(registry.names())}"
        )
    entry = registry.get(provider)
    for secret in _secrets():
        _refuse_secret_argument(ctx, secret)
    secret = entry.secret
    value = _read_secret(secret.name, name) if secret_stdin else given.get(secret.key)
    if value is None or not value.strip():
        raise UsageError(
            f"connections add: no {secret.name} given (an empty one is refused): pipe it with "
            f"--secret-stdin, or set {secret.env}"
        )
    settings: dict[str, str | None] = {s.key: given.get(s.key) for s in _option_settings()}
    settings.update(_pairs(setting))
    connsettings.check(provider, settings)
    store = state(ctx).store()
    conn = store_connections.add_connection(
        store, name, provider, settings, {secret.key: value.strip()}, notify_email
    )
    data = store_connections.describe(store, conn)
    if json_out:
        output.print_json(data)
    else:
        output.line(f"connection {name} added ({provider})")
        output.line(_next_step(name, provider, conn.settings))


def _add_parameters() -> list[inspect.Parameter]:
    """``add``'s options: the fixed ones, then one per option setting of the registry (its
    meaning as help), then each credential, hidden: read only from its environment variable,
    its option there only to refuse a value typed after it (see _refuse_secret_argument)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    fixed = [
        ("ctx", typer.Context, inspect.Parameter.empty),
        ("name", str, typer.Argument(..., help="A short name, e.g. shop1.")),
        ("provider", str, typer.Option(..., "--provider", help=f"{registry.choices()}.")),
        (
            "secret_stdin",
            bool,
            typer.Option(
                False,
                "--secret-stdin",
                help="Read the "
                + " or ".join(f"{c.name}{_who(c.key)}" for c in _secrets())
                + " from stdin (a prompt, not echoed, on a terminal). Without it they are read "
                + "from "
                + " or ".join(str(c.env) for c in _secrets())
                + "; never from the command line.",
            ),
        ),
        (
            "notify_email",
            str | None,
            typer.Option(None, "--notify-email", help="Where the merchant's emails go."),
        ),
        (
            "setting",
            list[str],
            typer.Option([], "--set", help="Any other setting, KEY=VALUE (repeatable)."),
        ),
        ("json_out", bool, typer.Option(False, "--json", help="JSON output.")),
    ]
    params = [inspect.Parameter(n, keyword, annotation=t, default=d) for n, t, d in fixed]
    for s in _option_settings():
        option = typer.Option(None, s.flag, help=_option_help(s.key))
        params.append(inspect.Parameter(s.key, keyword, annotation=str | None, default=option))
    for c in _secrets():
        option = typer.Option(None, c.flag, envvar=c.env, hidden=True)
        params.append(inspect.Parameter(c.key, keyword, annotation=str | None, default=option))
    return params


def _register_add() -> None:
    """Typer reads a command's options from its signature: ``add``'s is built from the
    registry, so a provider's new setting is an option without an edit here."""

    def command(**kw: Any) -> None:
        add(**kw)

    params = _add_parameters()
    command.__doc__ = add.__doc__
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    app.command("add")(command)


_register_add()


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
        None, metavar="[KEY=VALUE]...", help="Settings; an empty VALUE removes a setting."
    ),
    secret_stdin: bool = typer.Option(
        False,
        "--secret-stdin",
        help="Read a new client secret / API key from stdin (a prompt, not echoed, on a terminal).",
    ),
    secret_env: str | None = typer.Option(
        None,
        "--secret-env",
        metavar="VAR",
        help="Take a new client secret / API key from the environment variable VAR.",
    ),
    webhook_key_stdin: bool = typer.Option(
        False,
        "--webhook-key-stdin",
        help="Read the webhook key from stdin: Xero's, from its developer portal; for X-Series "
        "and Unleashed, a new URL token (then `webhooks subscribe` again).",
    ),
    webhook_signing_key_stdin: bool = typer.Option(
        False,
        "--webhook-signing-key-stdin",
        help="Read the key Unleashed signs its webhook deliveries with from stdin.",
    ),
) -> None:
    """Change settings or credentials of a connection. Every key and value is checked first
    (exit 2 naming the key); secrets never go on the command line.

    Example:

        synccli connections set shop1 notify_email=owner@shop.example account_code=200
        synccli connections set shop1 --secret-stdin < new-secret.txt
        synccli connections set books --webhook-key-stdin < webhook-key.txt
    """
    pairs = _pairs(values or [])
    webhook = {"webhook_key": webhook_key_stdin, "webhook_signing_key": webhook_signing_key_stdin}
    wanted = [key for key, given in webhook.items() if given]
    if not pairs and not secret_stdin and not secret_env and not wanted:
        raise UsageError("connections set: give KEY=VALUE pairs, --secret-stdin or --secret-env")
    if len(wanted) + bool(secret_stdin) > 1:
        raise UsageError("connections set: stdin holds one secret: give one --...-stdin option")
    store = state(ctx).store()
    conn = store_connections.get_connection(store, name)
    connsettings.check(conn.provider, pairs, removing_allowed=True)
    secret_key, label = _secret_name(conn.provider)
    if secret_stdin and secret_env:
        raise UsageError("give one of --secret-stdin and --secret-env")
    if secret_stdin:
        pairs[secret_key] = _read_secret(label, name)
    elif secret_env:
        pairs[secret_key] = _secret_from_env(secret_env, label)
    for key in wanted:  # webhook secrets, stored with the credentials (encrypted)
        pairs[key] = _read_secret(key.replace("_", " "), name)
    store_connections.set_values(store, name, pairs)
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
        8765,
        "--port",
        metavar="N",
        help="Loopback port for the redirect; the redirect URI to register is "
        "http://localhost:N/callback.",
    ),
    redirect_uri: str | None = typer.Option(
        None,
        "--redirect-uri",
        metavar="URL",
        help="The redirect URI registered with the app, if not http://localhost:N/callback; "
        "one that is not a loopback address (Lightspeed's HTTPS URL) is pasted back from "
        "the browser.",
    ),
    timeout: float = typer.Option(
        300.0, "--timeout", metavar="SECONDS", help="Seconds to wait for the redirect."
    ),
) -> None:
    """Authorise a Xero or Lightspeed connection (OAuth2 authorization code): prints the redirect
    URI to register and the URL to open, listens on 127.0.0.1 for the redirect (or reads the
    address pasted back), stores the tokens encrypted and finds the tenant or account id.

    Example:

        synccli connections authorize shop1 --port 8765
        ssh -L 8765:127.0.0.1:8765 me@server     # from a laptop, for a headless server
    """
    from synccli.sync.authorize import authorize as run_authorize

    store = state(ctx).store()
    conn = store_connections.get_connection(store, name)
    result = run_authorize(
        store,
        conn,
        say=output.say,
        port=port,
        redirect_uri=redirect_uri,
        timeout=timeout,
        read_pasted=sys.stdin.readline,
    )
    details = ", ".join(f"{k} {v}" for k, v in result.details.items())
    output.line(f"connection {name} authorised{'; ' + details if details else ''}")


@app.command("test")
def test(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Connection name."),
    send_test_email: bool = typer.Option(
        False, "--send-test-email", help="Also send a test email to the notify_email address."
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Check one connection with one cheap call: its settings, credentials, the provider's
    clock, notify_email, email delivery (SMTP reachable; a test email on request), leases left
    by runs and the budget (a stored block included). Same as `doctor -c NAME`.

    Example:

        synccli connections test shop1 --send-test-email
    """
    from datetime import UTC, datetime

    from synccli.cli.commands_ops import render_checks
    from synccli.sync.doctor import check_connection

    st = state(ctx)
    store = st.store()
    conn = store_connections.get_connection(store, name)
    checks = check_connection(
        store, conn, datetime.now(UTC), st.settings, send_test_email=send_test_email
    )
    render_checks(checks, json_out)


@app.command("unblock")
def unblock(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Connection name."),
) -> None:
    """Lift a stored budget block (the day's or month's allowance was read as spent) once the
    provider allows calls again: more calls bought, or a wrong reading. The next call the
    provider refuses for its budget stores a new one.

    Example:

        synccli connections unblock stock
    """
    from synccli import fmt
    from synccli.store.ledger import lift_block

    store = state(ctx).store()
    conn = store_connections.get_connection(store, name)
    was = lift_block(store, conn.id)
    if was is None:
        output.line(f"connection {name} has no stored budget block")
        return
    output.line(f"budget block of {name} lifted (it was until {fmt.minute(was[0])}: {was[1]})")


@app.command("ids")
def ids(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Connection name."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """List the ids a connection's settings name, as the provider has them: Xero's
    organisations (tenant_id), Unleashed's warehouses (warehouse_code), Lightspeed's shops,
    registers, employees and payment types (shop_id, register_id, employee_id, payment_type_id),
    Lightspeed X-Series' outlets, registers, payment types, taxes and users (outlet_id,
    register_id, payment_type_id, no_tax_id, user_id). The setting in use is marked with *.

    Example:

        synccli connections ids pos
    """
    from synccli.sync.doctor import list_ids

    store = state(ctx).store()
    conn = store_connections.get_connection(store, name)
    found = list_ids(store, conn)
    if json_out:
        output.print_json(found)
        return
    for setting, rows in found.items():
        current = str((conn.settings or {}).get(setting) or "")
        output.line(f"{setting}:")
        for row in rows:
            mark = "*" if row["id"] == current else " "
            output.line(f"  {mark} {row['id']}  {row['name']}")
        if not rows:
            output.line("    (none)")
    output.line(f"set one with: synccli connections set {name} KEY=ID")
