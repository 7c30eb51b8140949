"""The store through its database driver alone (sqlite3; libpq, else psycopg), without SQLAlchemy.

A cron run of ``post-invoices --all`` that finds every queue empty sends three statements: the
schema's version, one query of which connections have work, and one insert of their run rows.
Importing SQLAlchemy to send them was three quarters of that run's CPU (0.28 of 0.37 s on a quiet
machine). On PostgreSQL, importing psycopg was then two thirds of what was left: libpq, the
library psycopg calls, is called alone (``store.libpq``; psycopg where it cannot be loaded).
Only the plain URL forms are read here (a SQLite file; PostgreSQL as psycopg reads it, with its
connect arguments in the query); for any other URL :meth:`QuickStore.open` says None and the
command goes through :class:`synccli.store.db.Store`, which parses every form SQLAlchemy knows.

A connection here is set up as ``store.db.make_engine`` sets up its own (the same busy and lock
timeouts, SQLite's pragmas), and its values are stored as the mapped classes store them (naive
UTC times, SQLite's time text, JSON).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from synccli.store.revision import VERSION_TABLE

_PG = re.compile(
    r"^postgresql\+psycopg://"
    r"(?:(?P<user>[^:@/?#\[\]]*)(?::(?P<password>[^@/?#\[\]]*))?@)?"
    r"(?P<host>[^:@/?#\[\]]*)(?::(?P<port>\d+))?"
    r"(?:/(?P<dbname>[^?#/]*))?(?:\?(?P<query>[^#]*))?$"
)


@dataclass(frozen=True)
class Address:
    """Where a plain store URL points: a SQLite file, or psycopg's connect arguments."""

    backend: str  # "sqlite" or "postgresql"
    path: str | None = None
    params: dict[str, str] = field(default_factory=dict)


def plain_address(url: str) -> Address | None:
    """The address of a plain store URL (``sqlite:///FILE``, ``postgresql+psycopg://...``), or
    None for any other form (an in-memory database, another driver, a repeated or bracketed
    part): those are left to SQLAlchemy. A form accepted here is one SQLAlchemy reads the same
    way (a test holds the two to it)."""
    if url.startswith("sqlite:///"):
        path = unquote(url.removeprefix("sqlite:///"))
        if not path or path == ":memory:" or "?" in path or path.startswith("file:"):
            return None
        return Address("sqlite", path=path)
    found = _PG.match(url)
    if found is None:
        return None
    params = {
        key: unquote(value)
        for key in ("user", "password", "host", "port", "dbname")
        if (value := found[key])
    }
    for key, value in parse_qsl(found["query"] or ""):
        if key in params:
            return None  # a repeated argument: SQLAlchemy makes a list of it
        params[key] = value
    return Address("postgresql", params=params)


class QuickStore:
    """One driver connection to the store, for a few statements written for both databases
    with ``?`` parameters."""

    def __init__(self, address: Address, connection: Any) -> None:
        self.address = address
        self.connection = connection
        self.is_sqlite = address.backend == "sqlite"
        # PostgreSQL through libpq alone (``store.libpq``), else psycopg
        self.is_libpq = type(connection).__module__ == "synccli.store.libpq"

    @classmethod
    def open(cls, url: str, lock_timeout: float) -> QuickStore | None:
        """A connection to the store at ``url``, or None where this module does not go: a URL
        it does not read, a SQLite file not there (the store says that in its own words)."""
        address = plain_address(url)
        if address is None:
            return None
        lock_ms = max(1, int(lock_timeout * 1000))
        if address.path is not None:
            if not Path(address.path).is_file():
                return None
            return cls(address, _sqlite(address.path, lock_ms))
        return cls(address, _postgresql(address.params, lock_ms))

    def close(self) -> None:
        self.connection.close()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement (outside :meth:`writing`, a transaction of its own: one
        statement sees one snapshot, and on SQLite takes no lock a writer waits for)."""
        if self.is_libpq:
            return self.connection.execute(sql, params)
        if not self.is_sqlite:
            sql = sql.replace("?", "%s")
        return list(self.connection.execute(sql, params))

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A write transaction around the statements sent inside it, committed on success: on
        SQLite it takes the write lock at once (``BEGIN IMMEDIATE``, as ``Store.locked``), so
        what it reads first stays true until it commits."""
        if self.is_sqlite:
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.connection.execute("COMMIT")
            except BaseException:
                self.connection.execute("ROLLBACK")
                raise
        else:
            with self.connection.transaction():
                yield

    def versions(self) -> list[str]:
        """The schema versions the store records (none: no schema yet)."""
        if self.is_sqlite:
            found = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
        else:
            found = "SELECT count(to_regclass(?))"  # the table as the search path finds it
        if not self.rows(found, (VERSION_TABLE,))[0][0]:
            return []
        return [str(v) for (v,) in self.rows(f"SELECT version_num FROM {VERSION_TABLE}")]

    def time(self, when: datetime) -> Any:
        """``when`` as the store keeps times: naive UTC; on SQLite the text SQLAlchemy's
        DATETIME writes (compared as text, so it must be the same text)."""
        naive = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
        return naive.isoformat(" ", "microseconds") if self.is_sqlite else naive

    def json(self, value: Any) -> Any:
        """``value`` for a JSON column (SQLAlchemy's JSON type: ``json.dumps`` text on SQLite)."""
        if self.is_sqlite or self.is_libpq:
            return json.dumps(value)  # text (libpq: PostgreSQL reads it as the column's json)
        from psycopg.types.json import Json

        return Json(value)


def _sqlite(path: str, lock_ms: int) -> Any:
    import sqlite3

    # mode=rw: the file is not created (it was there a moment ago; if it went, the error says so)
    uri = f"file:{quote(str(Path(path).absolute()))}?mode=rw"
    conn = sqlite3.connect(uri, uri=True, timeout=lock_ms / 1000, isolation_level=None)
    try:
        # make_engine's pragmas (see there for why each)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={lock_ms}")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _postgresql(params: dict[str, str], lock_ms: int) -> Any:
    from synccli.store import libpq

    conn: Any
    # several hosts: psycopg tries each with its own timeout, which libpq's asynchronous
    # connect leaves to its caller; psycopg is given those
    if libpq.available() and not _several_hosts(params):
        # results are read as UTF-8 text, whatever the database's encoding
        given = {**params, "client_encoding": "UTF8"}
        conn = libpq.Connection(conninfo(given), connect_timeout(params))
    else:
        import psycopg

        conn = psycopg.connect(conninfo(params), autocommit=True)
    try:
        # make_engine's: a lock is never waited for forever
        conn.execute(f"SET lock_timeout = {lock_ms}")
    except BaseException:
        conn.close()
        raise
    return conn


def conninfo(params: dict[str, str]) -> str:
    """libpq's connection string of ``params``, quoted as psycopg's ``make_conninfo`` quotes
    them (a test holds the two to it): a value with a space in quotes, ``\\`` and ``'``
    escaped, an empty one as ``''``."""
    return " ".join(f"{key}={_quoted(value)}" for key, value in params.items())


def _quoted(value: str) -> str:
    if not value:
        return "''"
    value = re.sub(r"([\\'])", r"\\\1", value)
    return f"'{value}'" if re.search(r"\s", value) else value


def connect_timeout(params: dict[str, str]) -> float:
    """How long psycopg waits to connect with ``params`` (``psycopg.conninfo``'s
    ``timeout_from_conninfo``): ``connect_timeout``, else ``PGCONNECT_TIMEOUT``, else 130 s;
    none or under 1 s is 130 s, and 1 s is 2."""
    from synccli.store import libpq

    value = params.get("connect_timeout", os.environ.get("PGCONNECT_TIMEOUT"))
    try:
        seconds = int(float(value)) if value is not None else 0
    except ValueError:
        raise libpq.Error(f"bad value for connect_timeout: {value!r}") from None  # psycopg's
    if seconds <= 0:
        return libpq.DEFAULT_CONNECT_TIMEOUT
    return max(seconds, libpq.LEAST_CONNECT_TIMEOUT)


def _several_hosts(params: dict[str, str]) -> bool:
    """Whether the connection lists several hosts (or ports), in ``params`` or in libpq's
    variables (``PGHOST``, ...)."""
    return any(
        "," in params.get(key, os.environ.get(env, ""))
        for key, env in (("host", "PGHOST"), ("hostaddr", "PGHOSTADDR"), ("port", "PGPORT"))
    )
