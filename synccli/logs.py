"""Logging for cron and for people: human lines on a terminal, JSON lines for a log collector.

Every record passes the secrets filter, and carries the job, connection and run it belongs to
(set with :func:`bind`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from synccli.errors import ConfigError
from synccli.secrets import RedactingFilter

_context: ContextVar[dict[str, object] | None] = ContextVar("synccli_log_context", default=None)

# Set by setup_logging: the stderr handler, the --log-file handler, and whether stderr speaks JSON.
_console: logging.Handler | None = None
_file: logging.Handler | None = None
_json_console = False


@contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Attach fields (job, connection, run_id) to every log record inside the block."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One object per line: time, level, job, connection, run id, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "job": getattr(record, "job", None),
            "connection": getattr(record, "connection", None),
            "run_id": getattr(record, "run_id", None),
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:  # top level, so `jq 'select(.outcome)'` finds a run's closing record
            payload.update({k: v for k, v in fields.items() if k not in payload})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        where = "/".join(
            str(getattr(record, k)) for k in ("connection", "job") if getattr(record, k, None)
        )
        prefix = f"[{where}] " if where else ""
        text = f"{record.levelname.lower():7} {prefix}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def user_line(level: int, text: str) -> bool:
    """An error or warning line the user is shown: the log file gets it too, at its level.

    With ``--log-format json`` the line goes to stderr as a JSON record (whatever the verbosity:
    what the text form always prints, the JSON form prints too) and True is returned: the
    caller prints nothing itself, so stderr carries only JSON lines."""
    record = logging.getLogger("synccli.cli").makeRecord(
        "synccli.cli", level, "", 0, text, (), None
    )
    attached = logging.getLogger("synccli").handlers  # not a handler of an earlier setup
    if _file is not None and _file in attached:
        _file.handle(record)
    if _json_console and _console is not None and _console in attached:
        _console.handle(record)
        return True
    return False


def setup_logging(verbosity: int = 0, fmt: str = "text", log_file: Path | None = None) -> None:
    """-q: errors only; default: warnings; -v: one line per call and job step; -vv: debug."""
    global _console, _file, _json_console
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        max(-1, min(verbosity, 2)), logging.DEBUG
    )
    root = logging.getLogger("synccli")
    root.handlers.clear()
    root.setLevel(level)
    root.propagate = False
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else HumanFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        try:
            # Created owner-only: a log can name the merchant's products, customers and calls.
            os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot open log file {log_file}: {exc.strerror}") from None
        # cron: the file gets everything from INFO up even when the terminal stays quiet
        root.setLevel(min(level, logging.INFO))
        handlers[0].setLevel(level)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_ContextFilter())
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    _console = handlers[0]
    _file = handlers[1] if len(handlers) > 1 else None
    _json_console = fmt == "json"


def json_on_stderr() -> bool:
    """Whether stderr carries JSON log lines (``--log-format json``): nothing else may go there."""
    return (
        _json_console and _console is not None and _console in logging.getLogger("synccli").handlers
    )


@contextmanager
def console_stream(stream: TextIO) -> Iterator[None]:
    """Inside the block the stderr log lines go to ``stream`` instead: a live progress line's
    proxy, which prints each line above the progress line instead of onto it."""
    handler = _console
    if (
        not isinstance(handler, logging.StreamHandler)
        or handler not in logging.getLogger("synccli").handlers
    ):
        yield
        return
    before = handler.stream
    handler.setStream(stream)
    try:
        yield
    finally:
        handler.setStream(before)
