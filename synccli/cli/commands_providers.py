"""``synccli providers``: the providers synccli speaks to, with each setting a connection holds.

Read from the provider registry (synccli/registry.py), so it is what `connections add` and
`connections set` accept, with the meaning and default of each key.
"""

from __future__ import annotations

from typing import Any

import typer

from synccli import registry
from synccli.cli import output


def register(root: typer.Typer) -> None:
    root.command("providers")(providers)


def _describe(p: registry.Provider) -> dict[str, Any]:
    def setting(s: registry.Setting) -> dict[str, Any]:
        out: dict[str, Any] = {"key": s.key, "meaning": s.meaning, "default": s.default}
        out["required"] = s.required
        if s.secret:
            out["secret"] = True
            out["from"] = f"--secret-stdin or {s.env}" if s.env else "--secret-stdin"
        return out

    return {
        "name": p.name,
        "display_name": p.display_name,
        "auth": str(p.auth),
        "settings": [setting(s) for s in p.schema()],
        "credentials": [setting(c) for c in p.credentials],
    }


def providers(
    name: str | None = typer.Argument(None, help="Only this provider (default: every one)."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """List the providers and, for each, the settings and credentials a connection holds, with
    their meaning and default. Secrets are given with --secret-stdin (or their environment
    variable), never on the command line.

    Example:

        synccli providers unleashed
        synccli providers --json
    """
    chosen = [registry.get(name)] if name else list(registry.providers())
    if json_out:
        output.print_json([_describe(p) for p in chosen])
        return
    for p in chosen:
        how = "OAuth: `connections authorize`" if p.oauth else "an API key, nothing to authorise"
        rows = [
            [s.key, s.meaning, s.default or "", "yes" if s.required else ""] for s in p.schema()
        ]
        rows += [
            [c.key, c.meaning, f"secret: --secret-stdin or {c.env}", "yes"] for c in p.credentials
        ]
        output.table(
            ["key", "meaning", "default", "required"],
            rows,
            title=f"{p.name}: {p.display_name} ({how})",
        )
