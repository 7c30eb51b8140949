"""PostgreSQL through libpq alone, for the few statements of a quiet cron run (``store.quick``).

Importing psycopg costs about 0.2 s of CPU (its type adapters, error classes, asyncio, package
metadata): two thirds of a ``post-invoices --all`` run that finds nothing to do. psycopg is a
layer over libpq, and so is this module, over the same library file psycopg loads (the copy its
binary wheel bundles, else the system's, as psycopg chooses): the connection string psycopg
would be given is given here, so libpq reads it, the environment (``PGPASSWORD``, ``PGSSLMODE``,
...) and ``~/.pgpass`` exactly as it does for psycopg. Where that library cannot be found, this
module says None and ``store.quick`` uses psycopg.

Statements take text parameters and give text results, converted by the result's column type;
only the types the quick statements read are known (a statement reading another fails loudly).
Connecting and waiting for an answer happen in Python, on the socket (libpq's asynchronous
calls, as psycopg waits): a stop signal (``synccli.interrupt``) ends a run waiting for a lock or
for a server that does not answer within the second, not after the lock or connect timeout, and
psycopg's 130 s connect timeout applies where ``connect_timeout`` is not given.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from importlib.util import find_spec
from pathlib import Path
from typing import Any

CONNECTION_OK, CONNECTION_BAD = 0, 1
POLLING_FAILED, POLLING_READING, POLLING_WRITING, POLLING_OK = 0, 1, 2, 3
PGRES_COMMAND_OK, PGRES_TUPLES_OK = 1, 2
# psycopg's connect timeout where the connection string sets none (psycopg.conninfo), and its
# least (libpq's: a value of 1 is taken as 2)
DEFAULT_CONNECT_TIMEOUT, LEAST_CONNECT_TIMEOUT = 130, 2
PG_DIAG_SQLSTATE, PG_DIAG_MESSAGE_PRIMARY = ord("C"), ord("M")

# column type OIDs (pg_type.dat) -> how their text reads
_READ: dict[int, Any] = {
    16: lambda t: t == "t",  # bool
    20: int,  # int8
    21: int,  # int2
    23: int,  # int4
    25: str,  # text
    1043: str,  # varchar
    19: str,  # name
    2205: str,  # regclass
    700: float,  # float4
    701: float,  # float8
    1700: Decimal,  # numeric
    1114: datetime.fromisoformat,  # timestamp (the store keeps naive UTC)
    1082: date.fromisoformat,  # date
    114: json.loads,  # json
    3802: json.loads,  # jsonb
}


log = logging.getLogger("synccli.store")


class Error(Exception):
    """A libpq error: ``sqlstate`` as the server gave it (None: no server answered)."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def library_path() -> str | None:
    """The libpq psycopg loads: its binary wheel's own copy where that implementation is the one
    psycopg picks (``PSYCOPG_IMPL``, else the C build, then the binary), else the system's."""
    impl = os.environ.get("PSYCOPG_IMPL", "").lower()
    binary = impl == "binary" or (
        not impl and find_spec("psycopg_c") is None and find_spec("psycopg_binary") is not None
    )
    if binary:
        spec = find_spec("psycopg_binary")
        if spec is None or spec.origin is None:
            return None
        bundled = sorted(Path(spec.origin).parent.parent.glob("psycopg_binary.libs/libpq*.so*"))
        return str(bundled[0]) if len(bundled) == 1 else None
    return "libpq.so.5"  # the soname psycopg's own loader finds on Linux


_lib: Any = None
_NoticeProcessor = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)


@_NoticeProcessor
def _drop_notice(_arg: Any, message: bytes | None) -> None:
    """A server's notice or warning goes to the debug log, as psycopg leaves it unshown: libpq's
    own processor prints it on stderr, which cron mails."""
    log.debug("server notice: %s", _decoded(message))


def _load() -> Any | None:
    global _lib
    if _lib is not None:
        return _lib
    path = library_path()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    for name, restype, argtypes in (
        ("PQconnectStart", p, [s]),
        ("PQconnectPoll", i, [p]),
        ("PQsocket", i, [p]),
        ("PQstatus", i, [p]),
        ("PQsendQueryParams", i, [p, s, i, p, ctypes.POINTER(s), p, p, i]),
        ("PQconsumeInput", i, [p]),
        ("PQisBusy", i, [p]),
        ("PQgetResult", p, [p]),
        ("PQerrorMessage", s, [p]),
        ("PQfinish", None, [p]),
        ("PQresultStatus", i, [p]),
        ("PQresultErrorMessage", s, [p]),
        ("PQresultErrorField", s, [p, i]),
        ("PQntuples", i, [p]),
        ("PQnfields", i, [p]),
        ("PQftype", ctypes.c_uint, [p, i]),
        ("PQgetvalue", s, [p, i, i]),
        ("PQgetisnull", i, [p, i, i]),
        ("PQclear", None, [p]),
        ("PQlibVersion", i, []),
        ("PQsetNoticeProcessor", p, [p, _NoticeProcessor, p]),
        ("PQgetCancel", p, [p]),
        ("PQcancel", i, [p, s, i]),
        ("PQfreeCancel", None, [p]),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    _lib = lib
    return lib


def available() -> bool:
    return _load() is not None


def version() -> int:
    """The loaded libpq's version number (as ``psycopg.pq.version()`` gives psycopg's)."""
    lib = _load()
    if lib is None:
        raise Error("libpq is not available")
    return int(lib.PQlibVersion())


def _text(value: Any) -> bytes | None:
    """A parameter as PostgreSQL reads its text (the column or function says its type)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, datetime):
        return value.isoformat(" ").encode()
    return str(value).encode()


def _decoded(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace").strip()


class Connection:
    """One libpq connection (autocommit, as psycopg's with ``autocommit=True``)."""

    def __init__(self, conninfo: str, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        lib = _load()
        if lib is None:
            raise Error("libpq is not available")
        self._lib = lib
        handle = lib.PQconnectStart(conninfo.encode())
        if handle is None:
            raise Error("could not connect: out of memory")
        self._handle: Any = handle
        lib.PQsetNoticeProcessor(handle, _drop_notice, None)
        try:
            self._connect(max(connect_timeout, LEAST_CONNECT_TIMEOUT))
        except BaseException:
            self.close()
            raise

    def _connect(self, timeout: float) -> None:
        """libpq's connection steps, each waited for on the socket (libpq's manual, "Connecting
        without blocking"): first as if the last poll said "writing"."""
        lib, handle = self._lib, self._handle
        deadline = time.monotonic() + timeout
        poll = POLLING_WRITING
        while lib.PQstatus(handle) != CONNECTION_BAD and poll not in (POLLING_OK, POLLING_FAILED):
            left = deadline - time.monotonic()
            if left <= 0:
                raise Error("connection timeout expired")
            self._wait(reading=poll == POLLING_READING, timeout=left)
            poll = lib.PQconnectPoll(handle)
        if lib.PQstatus(handle) != CONNECTION_OK:
            raise Error(_decoded(lib.PQerrorMessage(handle)) or "could not connect")

    def _wait(self, *, reading: bool, timeout: float | None = None) -> None:
        """Until the socket can be read (or written), in Python: a signal's handler runs, and
        its exception (``Interrupted``) ends the wait."""
        fd = self._lib.PQsocket(self._handle)
        if fd < 0:
            raise Error(_decoded(self._lib.PQerrorMessage(self._handle)) or "connection is closed")
        watched = [fd]
        select.select(watched if reading else [], [] if reading else watched, [], timeout)

    def close(self) -> None:
        if self._handle is not None:
            self._lib.PQfinish(self._handle)
            self._handle = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement, its ``?`` marks bound to ``params`` in order."""
        if self._handle is None:
            raise Error("the connection is closed")
        lib, handle = self._lib, self._handle
        values = (ctypes.c_char_p * max(1, len(params)))(*[_text(v) for v in params])
        sent = lib.PQsendQueryParams(
            handle, _numbered(sql).encode(), len(params), None, values, None, None, 0
        )
        if not sent:
            raise Error(_decoded(lib.PQerrorMessage(handle)) or "server closed the connection")
        rows: list[tuple[Any, ...]] = []
        failure: Exception | None = None
        answered = False
        try:
            while (res := self._result()) is not None:  # one statement: one result, then none
                answered = True
                try:
                    if failure is None:
                        rows, failure = self._read(res)
                except Exception as exc:  # a value not read: the results are still drained
                    failure = exc
                finally:
                    lib.PQclear(res)
        except KeyboardInterrupt:
            # a stop signal while the server works (waits for a lock, say): ask it to stop,
            # as psycopg does, or the statement runs on until its own timeout
            self._cancel()
            raise
        if not answered:  # no result at all: the connection went before any came
            raise Error(_decoded(lib.PQerrorMessage(handle)) or "server closed the connection")
        if failure is not None:
            raise failure
        return rows

    def _cancel(self) -> None:
        lib = self._lib
        cancel = lib.PQgetCancel(self._handle)
        if cancel is None:
            return
        try:
            lib.PQcancel(cancel, ctypes.create_string_buffer(256), 256)
        finally:
            lib.PQfreeCancel(cancel)

    def _result(self) -> Any:
        """The next result of the statement sent (None: no more), waited for on the socket."""
        lib, handle = self._lib, self._handle
        while lib.PQisBusy(handle):
            self._wait(reading=True)
            if not lib.PQconsumeInput(handle):  # the connection went: what the server said last
                break
        return lib.PQgetResult(handle)

    def _read(self, res: Any) -> tuple[list[tuple[Any, ...]], Error | None]:
        lib = self._lib
        if lib.PQresultStatus(res) not in (PGRES_COMMAND_OK, PGRES_TUPLES_OK):
            state = lib.PQresultErrorField(res, PG_DIAG_SQLSTATE)
            # the server's own message, as psycopg's errors give it ("ERROR:" and the
            # statement's position left out)
            message = (
                _decoded(lib.PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY))
                or _decoded(lib.PQresultErrorMessage(res))
                or _decoded(lib.PQerrorMessage(self._handle))
            )
            return [], Error(message, state.decode() if state else None)
        readers = []
        for col in range(lib.PQnfields(res)):
            oid = lib.PQftype(res, col)
            if oid not in _READ:
                return [], Error(f"column {col + 1}: type {oid} is not read here")
            readers.append(_READ[oid])
        rows = [
            tuple(
                None
                if lib.PQgetisnull(res, row, col)
                else read(lib.PQgetvalue(res, row, col).decode())
                for col, read in enumerate(readers)
            )
            for row in range(lib.PQntuples(res))
        ]
        return rows, None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.execute("BEGIN")
        try:
            yield
        except BaseException:
            if self._handle is not None:
                try:
                    self.execute("ROLLBACK")
                except Error:
                    pass  # the connection went: the server rolled it back
            raise
        self.execute("COMMIT")


def _numbered(sql: str) -> str:
    """``?`` marks as libpq's ``$1``, ``$2``, ... (the quick statements hold no other ``?``)."""
    parts = sql.split("?")
    return "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, 1))
