"""A store that fails under a command, told apart from a bug and from bad configuration.

A database error is an outage when a later run may succeed without anyone changing anything:
the server is unreachable or went away, the disk is full or failing, another process held a lock
for longer than the lock timeout. Those become :class:`~synccli.errors.StoreUnavailable` (one
line naming the cause, exit 1); anything else stays what it was (a bug shows as one).
"""

from __future__ import annotations

import sys

from synccli.errors import StoreUnavailable

# SQLite's messages (sqlite3 gives no error code before Python 3.11's sqlite_errorname, and the
# text is stable: it is sqlite3_errstr's).
_SQLITE = (
    ("database is locked", "locked"),
    ("database table is locked", "locked"),
    ("database or disk is full", "the disk is full (database or disk is full)"),
    ("disk i/o error", "a disk I/O error (is the disk full or failing?)"),
    ("unable to open database file", "the database file cannot be opened (removed or unreadable)"),
    ("attempt to write a readonly database", "the database file has become read-only"),
)
# PostgreSQL SQLSTATE codes (Appendix A of its manual) and classes.
_PG_CODES = {
    "55P03": "locked",  # lock_not_available: lock_timeout expired
    "40P01": "a deadlock with another process (deadlock_detected)",
    "53100": "the database server's disk is full (disk_full)",
    "53200": "the database server is out of memory (out_of_memory)",
    "53300": "the database server has too many connections (too_many_connections)",
    "57P01": "the database server is shutting down (admin_shutdown)",
    "57P02": "the database server crashed (crash_shutdown)",
    "57P03": "the database server is not accepting connections yet (cannot_connect_now)",
    "58030": "a disk I/O error on the database server (io_error)",
}
# libpq's texts (through psycopg or not) for a server that is not there or went away (no
# SQLSTATE: no server answered)
_PG_GONE = (
    "connection refused",
    "could not connect",
    "connection timeout",
    "timeout expired",
    "server closed the connection",
    "connection is closed",
    "connection is lost",
    "terminating connection",
    "no route to host",
    "name or service not known",
    "could not translate host name",
    "network is unreachable",
    "consuming input failed",
)


def store_outage(exc: BaseException, lock_timeout: float | None = None) -> StoreUnavailable | None:
    """The outage ``exc`` (or an exception it was raised from) stands for, or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StoreUnavailable):
            return current
        orig = _driver_error(current)
        if orig is not None:
            cause = _cause(orig)
            if cause is not None:
                return StoreUnavailable(_message(cause, lock_timeout))
        current = current.__cause__ or current.__context__
    return None


def _driver_error(exc: BaseException) -> BaseException | None:
    """The database driver's error ``exc`` is or wraps (SQLAlchemy's ``orig``), or None.

    A library not imported cannot have raised: a quiet cron run talks to its store through the
    driver alone (``store.quick``) and must not import SQLAlchemy to read its errors."""
    sa = sys.modules.get("sqlalchemy.exc")
    if sa is not None and isinstance(exc, sa.DBAPIError):
        return exc.orig
    for name in ("sqlite3", "psycopg", "synccli.store.libpq"):
        driver = sys.modules.get(name)
        if driver is not None and isinstance(exc, driver.Error):
            return exc
    return None


def _cause(orig: BaseException | None) -> str | None:
    text = str(orig).lower()
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        if sqlstate in _PG_CODES:
            return _PG_CODES[sqlstate]
        if sqlstate.startswith("08"):  # connection_exception
            return f"the connection to the database server failed ({_first_line(orig)})"
        return None
    if type(orig).__module__.startswith("sqlite3"):
        for needle, cause in _SQLITE:
            if needle in text:
                return cause
        return None
    if any(needle in text for needle in _PG_GONE):
        return f"the database server cannot be reached ({_first_line(orig)})"
    return None


def _message(cause: str, lock_timeout: float | None) -> str:
    if cause == "locked":
        waited = f" for {lock_timeout:g} s" if lock_timeout else ""
        return (
            f"store unavailable: another process held its lock{waited} (lock timeout; try again, "
            "or raise SYNC_LOCK_TIMEOUT)"
        )
    return f"store unavailable: {cause}"


def _first_line(orig: BaseException | None) -> str:
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return (lines[0] if lines else orig.__class__.__name__)[:200]
