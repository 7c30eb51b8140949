"""The progress line of a long job on a terminal: records read of the provider's total (when it
says one), an ETA, and "waiting N s for the rate limit" while the client waits.

Drawn with rich on stderr, and only when stderr is a terminal: never piped, never under ``-q``,
``--json`` or ``--log-format json`` (stdout stays the report's, stderr the logs'). While it is
shown, log lines and anything else written to stderr are printed above it by rich, never onto it.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.text import Text

from synccli import logs
from synccli.cli import output
from synccli.cli.state import state
from synccli.progress import QUIET, ProgressObserver


def wanted(ctx: typer.Context, json_out: bool) -> bool:
    """Whether this invocation shows a progress line: stderr itself must be a terminal (rich
    also takes FORCE_COLOR, which CI runners set, for one) that can move its cursor."""
    if json_out or state(ctx).quiet or logs.json_on_stderr():
        return False
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed, or no real stream
        return False
    return tty and os.environ.get("TERM") != "dumb"


class _Status(ProgressColumn):
    """``1000/2500  ETA 0:00:04``, or ``1000 read`` without a total; the rate-limit wait."""

    def render(self, task: Task) -> Text:
        done = int(task.completed)
        parts = [f"{done}/{int(task.total)}" if task.total else f"{done} read"]
        waiting = task.fields.get("waiting")
        if waiting:
            parts.append(f"waiting {waiting} s for the rate limit")
        remaining = _remaining(task)
        if remaining is not None:
            parts.append(f"ETA {timedelta(seconds=max(0, int(remaining)))}")
        return Text("  ".join(parts))


def _remaining(task: Task) -> float | None:
    """Seconds left at the pace read so far. rich's own estimate needs two counts in its
    window, so it has none after the first page; a listing of three pages read between
    rate-limit waits may end before a second is drawn. The pace since the listing started
    gives one from the first page on."""
    if not task.total or task.completed <= 0:
        return None
    if task.time_remaining is not None:
        return task.time_remaining
    elapsed = task.elapsed
    if not elapsed:
        return None
    return elapsed / task.completed * max(0.0, task.total - task.completed)


class LiveProgress(ProgressObserver):
    """One progress line for a job over one connection (see the module docstring)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            _Status(),
            console=Console(stderr=True, highlight=False),
            transient=True,  # the report printed next replaces it
            redirect_stdout=False,  # stdout may be a pipe: the report is its only content
            redirect_stderr=True,
        )
        self.task: TaskID = self.progress.add_task(label, total=None, waiting=None)

    def listing(self, name: str) -> None:
        # a task of its own: rich keeps a total once set, and the last listing's is not this one's
        self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"{self.label}: {name}", total=None, waiting=None)

    def read(self, records: int, total: int | None) -> None:
        self.progress.update(self.task, advance=records, total=total)

    def restarted(self) -> None:
        task = self.progress.tasks[self.task]
        self.progress.reset(self.task, total=task.total, completed=0)

    def waiting(self, seconds: float) -> None:
        self.progress.update(self.task, waiting=max(1, math.ceil(seconds)))
        self.progress.refresh()

    def waited(self) -> None:
        self.progress.update(self.task, waiting=None)


@contextmanager
def shown(label: str, enabled: bool) -> Iterator[ProgressObserver]:
    """A live progress line while the block runs (nothing when not ``enabled``)."""
    if not enabled:
        yield QUIET
        return
    # The output consoles read their terminal (colours, width) when made: made here, before
    # rich stands in for sys.stderr, they see the real one, as when they were made at import.
    output.console()
    output.console(stderr=True)
    live = LiveProgress(label)
    live.progress.start()
    try:
        # rich now stands in for sys.stderr, printing above the line: the log handler, which
        # holds the stream it was given, writes there too
        with logs.console_stream(sys.stderr):
            yield live
    finally:
        live.progress.stop()
