"""Rendering: rich on a terminal, plain lines when piped, JSON with ``--json``; errors on stderr."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from synccli import fmt, logs, secrets

if TYPE_CHECKING:
    from rich.console import Console

# The consoles are made (and rich imported) when something is first printed through them: a
# cron run that has nothing to say does not pay for the terminal renderer.
_consoles: dict[bool, Console] = {}


def console(stderr: bool = False) -> Console:
    """The console of stdout (or stderr). emoji=False: a name like "Tea :coffee: cup" is data,
    not an emoji code."""
    made = _consoles.get(stderr)
    if made is None:
        from rich.console import Console

        made = _consoles[stderr] = Console(
            stderr=stderr, highlight=False, soft_wrap=True, emoji=False
        )
    return made


def __getattr__(name: str) -> Any:
    # ``output.out`` and ``output.err``, as they were before the consoles were made lazily
    if name in ("out", "err"):
        return console(stderr=name == "err")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_plain(value: Any) -> Any:
    """Dataclasses, Decimals and datetimes as JSON-ready values: numbers as plain decimals
    (Decimals as strings, whole floats as integers), times as ISO 8601 UTC."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple, set)):
        return [to_plain(v) for v in value]
    if isinstance(value, Decimal):
        return fmt.number(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, datetime):
        return fmt.iso(value)
    return value


def print_json(value: Any) -> None:
    text = json.dumps(to_plain(value), indent=2, sort_keys=False, default=str)
    write(secrets.redact(text) + "\n")
    flush()


class JsonArray:
    """A JSON array printed one element at a time, as soon as each is known: the same text
    :func:`print_json` gives for the whole list, without holding every element until the end
    (``--all --json`` over many connections, each report with its list of changes)."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, value: Any) -> None:
        text = json.dumps(to_plain(value), indent=2, sort_keys=False, default=str)
        body = "\n".join("  " + line for line in text.splitlines())
        write(secrets.redact(("[\n" if self.count == 0 else ",\n") + body))
        flush()
        self.count += 1

    def close(self) -> None:
        write("[]\n" if self.count == 0 else "\n]\n")
        flush()


def write(text: str) -> None:
    """Write to stdout; a reader that went away (``| head``) ends the output, not the command:
    a job keeps going to its end (lease released, run row closed), it just prints no more."""
    try:
        sys.stdout.write(text)
    except BrokenPipeError:
        stdout_gone()


def flush() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_gone()


def stdout_gone() -> None:
    """Point stdout at /dev/null once its reader has gone, so later writes and the flush at
    exit are silent (Python's own advice for SIGPIPE: docs.python.org/3/library/signal.html)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (a test runner's buffer)
        pass


def _piped() -> bool:
    """stdout is surely no terminal (rich's own rule: neither TTY_COMPATIBLE nor FORCE_COLOR set,
    and not a tty), told without importing rich: a cron run's "nothing due" lines, to a log."""
    if False in _consoles or "TTY_COMPATIBLE" in os.environ or "FORCE_COLOR" in os.environ:
        return False
    try:
        return not sys.stdout.isatty()
    except (AttributeError, ValueError):  # no stdout, or a closed one
        return False


def line(text: str = "") -> None:
    """One line of human output, printed as it is: never read as markup, so a product named
    ``Mug [/red] large`` or an order ``M[/b]-1`` shows verbatim, on a terminal and piped."""
    text = secrets.redact(text)
    if not _piped() and console().is_terminal:
        try:
            console().print(text, markup=False)
        except BrokenPipeError:
            stdout_gone()
    else:
        write(text + "\n")


def styled(markup: str) -> None:
    """One line with rich markup of our own (``[bold]...[/bold]``), shown on a terminal and
    dropped when piped. Every value from data inside it must go through :func:`esc`."""
    markup = secrets.redact(markup)
    if console().is_terminal:
        try:
            console().print(markup)
        except BrokenPipeError:
            stdout_gone()
    else:
        write(_strip_markup(markup) + "\n")


def esc(value: Any) -> str:
    """``value`` as text that markup shows as it is (for :func:`styled`)."""
    from rich.markup import escape

    return escape(str(value))


def warn(text: str) -> None:
    text = secrets.redact(text)
    if logs.user_line(logging.WARNING, text):
        return
    if console(stderr=True).is_terminal:
        console(stderr=True).print(f"[yellow]{esc(text)}[/yellow]")
    else:
        sys.stderr.write(text + "\n")


def error_line(text: str) -> None:
    text = secrets.redact(text)
    if logs.user_line(logging.ERROR, text):
        return
    if console(stderr=True).is_terminal:
        console(stderr=True).print(f"[red]error:[/red] {esc(text)}", markup=True)
    else:
        sys.stderr.write(f"error: {text}\n")


def say(text: str) -> None:
    """A line for the person at the terminal, on stderr (stdout stays for results): plain, or a
    JSON record with ``--log-format json``."""
    text = secrets.redact(text)
    if not logs.user_line(logging.INFO, text):
        console(stderr=True).print(text, markup=False, highlight=False)


def detail(text: str) -> None:
    """Detail under an error (``-v``: the cause, ``-vv``: the traceback); a JSON record with
    ``--log-format json``."""
    text = secrets.redact(text)
    if not logs.user_line(logging.DEBUG, text.rstrip("\n")):
        sys.stderr.write(text if text.endswith("\n") else text + "\n")


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A table on a terminal; aligned plain columns when piped (easy to grep and cut)."""
    rows = [[cell(c) for c in row] for row in rows]
    if console().is_terminal:
        from rich.table import Table
        from rich.text import Text

        # cells and title as Text: data, never markup
        t = Table(*columns, title=Text(title) if title else None, title_justify="left")
        for row in rows:
            t.add_row(*(Text(secrets.redact(cell)) for cell in row))
        console().print(t)
        return
    if title:
        write(secrets.redact(title) + "\n")
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    for row in [list(columns), *rows]:
        text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        write(secrets.redact(text) + "\n")


def cell(value: Any) -> str:
    """One value for people: ``-`` for none, a time to the minute, a number as a plain
    decimal."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return fmt.minute(value)
    if isinstance(value, (Decimal, float)) and not isinstance(value, bool):
        return fmt.number(value)
    return str(value)


def _strip_markup(text: str) -> str:
    from rich.text import Text

    return Text.from_markup(text).plain if "[" in text else text
