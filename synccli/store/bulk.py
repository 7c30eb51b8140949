"""Bulk writes for the pull: a thousand rows in one statement, with little Python per row.

SQLAlchemy's executemany builds, for every row, a parameter dict from the compiled statement and
runs each column's bind processor through it: about half of a first pull's time in the store was
that bookkeeping, on the thread that shares the interpreter with the one fetching pages. On
SQLite these helpers convert each value with the same bind processors SQLAlchemy would use (so
what is stored is identical) and hand plain tuples to the driver. Other databases go through
SQLAlchemy as usual: psycopg's own batching is already lean.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Select,
    Table,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import bindparam
from sqlalchemy.sql.elements import ColumnElement

T = TypeVar("T")

# Values in one IN (...) list, or rows in one multi-row INSERT: the one chunk size of the store's
# batched statements (SQLite binds up to 32,766 parameters; PostgreSQL plans such a list quickly).
CHUNK = 500
# Rows one SQLite INSERT ... RETURNING carries at most (fewer where the parameter limit needs):
# a first pull's page of new products is one statement.
RETURNING_ROWS = 1_000


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _processors(conn: Connection, table: Table, names: Sequence[str]) -> list[Callable | None]:
    # the dialect's own type (SQLite's DATETIME format, its Numeric), as SQLAlchemy binds it
    dialect = conn.dialect
    return [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]


def _convert(
    rows: list[dict[str, Any]], names: Sequence[str], processors: list[Callable | None]
) -> list[tuple[Any, ...]]:
    """Rows as tuples in ``names`` order, each value through its column's processor. Column by
    column, with ``map``: the loops run in C, only the processors in Python."""
    columns = list(zip(*map(itemgetter(*names), rows), strict=True)) if len(names) > 1 else None
    if columns is None:  # itemgetter of one name answers the value, not a 1-tuple
        columns = [tuple(row[names[0]] for row in rows)]
    for i, process in enumerate(processors):
        if process is not None:
            columns[i] = tuple(map(process, columns[i]))
    return list(zip(*columns, strict=True))


def insert_rows(
    conn: Connection, table: Table, rows: list[dict[str, Any]], returning: Sequence[str] = ()
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (dicts with the same keys) into ``table``; with ``returning``, answer those
    columns of every inserted row (in no particular order)."""
    if not rows:
        return []
    if conn.dialect.name != "sqlite":
        return _insert_rows_sa(conn, table, rows, returning)
    names = list(rows[0])
    missing = [c for c in table.c if c.name not in rows[0] and c.default is not None]
    if any(not c.default.is_scalar for c in missing):  # type: ignore[union-attr]
        return _insert_rows_sa(conn, table, rows, returning)  # a default computed per row
    defaults = {c.name: c.default.arg for c in missing}  # type: ignore[union-attr]
    if defaults:
        names += list(defaults)
        rows = [{**defaults, **row} for row in rows]
    values = _convert(rows, names, _processors(conn, table, names))
    q = conn.dialect.identifier_preparer.quote
    head = f"INSERT INTO {q(table.name)} ({', '.join(map(q, names))}) VALUES "
    one = f"({', '.join('?' * len(names))})"
    if not returning:
        conn.exec_driver_sql(head + one, values)
        return []
    # RETURNING needs one statement per set of rows (executemany answers nothing): as many rows
    # a statement as SQLite's limit on parameters allows.
    driver = conn.connection.dbapi_connection
    assert driver is not None
    limit = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per = max(1, min(RETURNING_ROWS, limit // len(names)))
    tail = f" RETURNING {', '.join(map(q, returning))}"
    found: list[tuple[Any, ...]] = []
    for start in range(0, len(values), per):
        chunk = values[start : start + per]
        sql = head + ", ".join([one] * len(chunk)) + tail
        flat = [v for row in chunk for v in row]
        found.extend(map(tuple, conn.exec_driver_sql(sql, tuple(flat)).all()))
    return found


def _insert_rows_sa(
    conn: Connection, table: Table, rows: list[dict[str, Any]], returning: Sequence[str]
) -> list[tuple[Any, ...]]:
    stmt = insert(table)
    if returning:
        result = conn.execute(stmt.returning(*(table.c[n] for n in returning)), rows)
        return [tuple(r) for r in result]
    conn.execute(stmt, rows)
    return []


def update_rows(conn: Connection, table: Table, key: str, rows: list[dict[str, Any]]) -> None:
    """``UPDATE table SET <other keys> WHERE key = row[key]`` for each of ``rows`` (dicts with the
    same keys), as one executemany."""
    if not rows:
        return
    names = [n for n in rows[0] if n != key]
    if conn.dialect.name != "sqlite":
        stmt = (
            update(table)
            .where(table.c[key] == bindparam("b_key"))
            .values({n: bindparam(f"b_{n}") for n in names})
        )
        conn.execute(stmt, [{"b_key": r[key], **{f"b_{n}": r[n] for n in names}} for r in rows])
        return
    ordered = [*names, key]
    values = _convert(rows, ordered, _processors(conn, table, ordered))
    q = conn.dialect.identifier_preparer.quote
    sets = ", ".join(f"{q(n)} = ?" for n in names)
    conn.exec_driver_sql(f"UPDATE {q(table.name)} SET {sets} WHERE {q(key)} = ?", values)


def one_of(column: Any, values: Sequence[str | int], dialect: Dialect) -> ColumnElement[bool]:
    """``column IN values``. On SQLite the values go as one JSON parameter, read back with
    ``json_each``: SQLAlchemy renders and binds an IN list one placeholder at a time in Python
    (a first pull looks up 150,000 values), and SQLite still searches the column's index for each
    value (``SEARCH ... USING INDEX``, then ``LIST SUBQUERY``). Strings and integers only."""
    if dialect.name != "sqlite":
        return column.in_(values)
    listed: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(literal(json.dumps(values)))
    )
    return column.in_(listed)
