"""Rendering: rich on a terminal, plain lines when piped, JSON with ``--json``; errors on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from synccli import secrets

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def to_plain(value: Any) -> Any:
    """Dataclasses, Decimals and datetimes as JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple, set)):
        return [to_plain(v) for v in value]
    if isinstance(value, Decimal):
        return str(value.normalize()) if value == value.to_integral() else str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def print_json(value: Any) -> None:
    text = json.dumps(to_plain(value), indent=2, sort_keys=False, default=str)
    sys.stdout.write(secrets.redact(text) + "\n")
    sys.stdout.flush()


def line(text: str = "") -> None:
    """One line of human output (rich markup allowed on a terminal)."""
    text = secrets.redact(text)
    if out.is_terminal:
        out.print(text)
    else:
        sys.stdout.write(_strip_markup(text) + "\n")


def warn(text: str) -> None:
    text = secrets.redact(text)
    if err.is_terminal:
        err.print(f"[yellow]{text}[/yellow]")
    else:
        sys.stderr.write(text + "\n")


def error_line(text: str) -> None:
    text = secrets.redact(text)
    if err.is_terminal:
        err.print(f"[red]error:[/red] {text}", markup=True)
    else:
        sys.stderr.write(f"error: {text}\n")


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A table on a terminal; aligned plain columns when piped (easy to grep and cut)."""
    rows = [[_cell(c) for c in row] for row in rows]
    if out.is_terminal:
        t = Table(*columns, title=title, title_justify="left")
        for row in rows:
            t.add_row(*row)
        out.print(t)
        return
    if title:
        sys.stdout.write(secrets.redact(title) + "\n")
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    for row in [list(columns), *rows]:
        text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        sys.stdout.write(secrets.redact(text) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, Decimal):
        return str(to_plain(value))
    return str(value)


def _strip_markup(text: str) -> str:
    from rich.text import Text

    return Text.from_markup(text).plain if "[" in text else text
