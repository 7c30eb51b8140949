"""Help that reads well: examples keep their lines, values are named with words.

click re-wraps every help paragraph, so two examples on two lines ran together into one line;
a paragraph that begins with ``\\b`` is kept as written. Typer names an option's value by its
type (``TEXT``, ``INTEGER RANGE``, ``PATH``); the help names it by what it is (``NAME``, ``N``).
Both are done here once for every command, so a new command gets them without thinking of it.
"""

from __future__ import annotations

from typing import Any

# An option's value, named for what it is; options not listed fall back on their own name.
METAVARS = {
    "--connection": "NAME",
    "--connect": "NAME",
    "--since": "WHEN",
    "--limit": "N",
    "--products": "N",
    "--customers": "N",
    "--orders-per-day": "N",
    "--seed": "N",
    "--log-format": "FORMAT",
    "--log-file": "FILE",
    "--crontab": "FILE",
    "--database-url": "URL",
    "--base-url": "URL",
    "--data-dir": "DIR",
    "--keep": "DIR",
    "--port": "PORT",
    "--host": "ADDRESS",
    "--timeout": "SECONDS",
    "--seconds": "SECONDS",
    "--time-scale": "FACTOR",
    "--provider": "PROVIDER",
    "--state": "STATE",
    "--min-score": "SCORE",
    "--resolve": "ID",
    "--client-id": "ID",
    "--api-id": "ID",
    "--tenant-id": "ID",
    "--account-id": "ID",
    "--client-secret": "SECRET",
    "--api-key": "KEY",
    "--grant": "GRANT",
    "--notify-email": "EMAIL",
    "--set": "KEY=VALUE",
    "--faults": "SPEC",
}


def polish(command: Any) -> None:
    """Apply both to ``command`` and every command under it (idempotent)."""
    if getattr(command, "_synccli_polished", False):
        return
    command._synccli_polished = True
    if getattr(command, "help", None):
        command.help = keep_example_lines(command.help)
    for param in getattr(command, "params", []):
        _name_value(param)
    # a group that builds its commands when named polishes each as it builds it
    built = getattr(command, "built_commands", None)
    for sub in (built() if built is not None else getattr(command, "commands", {})).values():
        polish(sub)


def keep_example_lines(text: str) -> str:
    """Mark each paragraph after ``Example:`` as pre-formatted (click's ``\\b``)."""
    paragraphs = text.split("\n\n")
    after_example = False
    for i, paragraph in enumerate(paragraphs):
        stripped = paragraph.strip()
        if after_example and stripped and not stripped.startswith("\b"):
            indent = paragraph[: len(paragraph) - len(paragraph.lstrip(" "))]
            paragraphs[i] = f"{indent}\b\n{paragraph}"
        if stripped.endswith("Example:") or stripped.endswith("Examples:"):
            after_example = True
    return "\n\n".join(paragraphs)


def _name_value(param: Any) -> None:
    if getattr(param, "param_type_name", "") == "argument":
        if not param.metavar:
            param.metavar = (param.name or "VALUE").upper()
        # Typer adds the type after the name (`SKU <str>`): the name and its help say enough.
        param.display_type_rich = lambda ctx: None
        return
    if getattr(param, "is_flag", False) or getattr(param, "count", False) or param.metavar:
        return
    long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
    param.metavar = METAVARS.get(long, long.lstrip("-").upper().replace("-", "_"))
