"""``synccli db``: schema migrations of the link store."""

from __future__ import annotations

import typer

from synccli.cli import output
from synccli.cli.state import state
from synccli.store.db import head_revision

app = typer.Typer(
    help="The link store's schema.\n\nExample:\n\n    synccli db upgrade", no_args_is_help=True
)


@app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Create or migrate the store to the newest schema (safe to run again).

    Example:

        SYNC_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/test synccli db upgrade
    """
    store = state(ctx).store(check=False, create=True)
    before, after = store.upgrade()
    if before == after:
        output.line(f"schema already at {after}")
    else:
        output.line(f"schema upgraded from {before or 'empty'} to {after}")


@app.command("current")
def current(
    ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="JSON output.")
) -> None:
    """Show the store's schema revision and the one this code expects.

    Example:

        synccli db current --json
    """
    store = state(ctx).store(check=False)
    current_rev, head = store.current_revision(), head_revision()
    data = {"current": current_rev, "head": head, "up_to_date": current_rev == head}
    if json_out:
        output.print_json(data)
    else:
        note = "up to date" if current_rev == head else "run `synccli db upgrade`"
        output.line(f"{current_rev or 'empty'} (code expects {head}): {note}")
