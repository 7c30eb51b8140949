"""Bulk writes for the pull: a thousand rows in one statement, with little Python per row.

SQLAlchemy's executemany builds, for every row, a parameter dict from the compiled statement and
runs each column's bind processor through it: about half of a first pull's time in the store was
that bookkeeping, on the thread that shares the interpreter with the one fetching pages. These
helpers convert each value with the same bind processors SQLAlchemy would use (so what is stored
is identical) and hand plain tuples to the driver:

- SQLite: one executemany of a plain ``INSERT``/``UPDATE``.
- PostgreSQL (psycopg 3): ``COPY ... FROM STDIN`` in the binary format. A multi-row ``INSERT``
  made PostgreSQL the slow store (about 80% of a first pull was its write path: psycopg rewriting
  a statement of thousands of placeholders, the server planning it). The binary format sends each
  value as its column's type, so no text escaping can go wrong (tabs, newlines, backslashes in a
  name). Rows that need ids back draw them from the column's sequence first; updates go through a
  temporary table (``COPY`` into it, then one ``UPDATE ... FROM``).
- Anything else: SQLAlchemy as usual.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import (
    ARRAY,
    Connection,
    Select,
    Table,
    any_,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import bindparam
from sqlalchemy.sql.elements import ClauseElement, ColumnElement

T = TypeVar("T")

# Values in one IN (...) list, or rows in one multi-row INSERT: the one chunk size of the store's
# batched statements (SQLite binds up to 32,766 parameters; PostgreSQL plans such a list quickly).
CHUNK = 500
# Rows one SQLite INSERT ... RETURNING carries at most (fewer where the parameter limit needs):
# a first pull's page of new products is one statement.
RETURNING_ROWS = 1_000

# PostgreSQL types whose binary form psycopg writes from the Python values SQLAlchemy binds for
# them. A column of any other type (JSON, say) sends its table through SQLAlchemy instead.
_COPY_TYPES = frozenset(
    {"int2", "int4", "int8", "numeric", "float4", "float8", "bool", "text", "varchar", "bpchar"}
    | {"timestamp", "timestamptz", "date"}
)
# Whether PostgreSQL writes go through COPY; False sends them through SQLAlchemy's executemany
# (the path before COPY: the tests compare what both store).
use_copy = True
_temp_names = itertools.count(1)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _processors(conn: Connection, table: Table, names: Sequence[str]) -> list[Callable | None]:
    # the dialect's own type (SQLite's DATETIME format, its Numeric), as SQLAlchemy binds it
    dialect = conn.dialect
    return [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]


def _convert(
    rows: list[dict[str, Any]],
    names: Sequence[str],
    processors: list[Callable | None],
    extra: Sequence[Sequence[Any]] = (),
) -> list[tuple[Any, ...]]:
    """Rows as tuples in ``names`` order, each value through its column's processor. Column by
    column, with ``map``: the loops run in C, only the processors in Python. ``extra``: the
    last ``len(extra)`` names' columns, given whole (a default, the ids drawn for the rows),
    so no row is copied to add them."""
    keyed = names[: len(names) - len(extra)]
    columns: list[Sequence[Any]]
    if len(keyed) > 1:
        columns = list(zip(*map(itemgetter(*keyed), rows), strict=True))
    else:  # itemgetter of one name answers the value, not a 1-tuple
        columns = [tuple(row[keyed[0]] for row in rows)]
    columns.extend(extra)
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
    copy = _copy_types(conn, table) if _copies(conn) else None
    if conn.dialect.name != "sqlite" and copy is None:
        return _insert_rows_sa(conn, table, rows, returning)
    names = list(rows[0])
    missing = [c for c in table.c if c.name not in rows[0] and c.default is not None]
    if any(not c.default.is_scalar for c in missing):  # type: ignore[union-attr]
        return _insert_rows_sa(conn, table, rows, returning)  # a default computed per row
    # a default is one value: a column of it, not a copy of every row with it added
    defaults = {c.name: c.default.arg for c in missing}  # type: ignore[union-attr]
    names += list(defaults)
    extra: list[Sequence[Any]] = [(value,) * len(rows) for value in defaults.values()]
    if copy is not None:
        return _copy_insert(conn, table, rows, names, extra, returning, copy)
    values = _convert(rows, names, _processors(conn, table, names), extra)
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
    same keys), as one executemany (PostgreSQL: one ``UPDATE ... FROM`` a copied temporary
    table). Where two rows name one key, the later one is what is stored."""
    if not rows:
        return
    names = [n for n in rows[0] if n != key]
    copy = _copy_types(conn, table) if _copies(conn) else None
    if copy is not None:
        _copy_update(conn, table, key, rows, names, copy)
        return
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


# --- PostgreSQL: COPY ---------------------------------------------------------------------------
def _copies(conn: Connection) -> bool:
    """Whether this connection's writes go through COPY: PostgreSQL through psycopg 3 (whose
    cursor copies rows; another driver's writes go through SQLAlchemy)."""
    return use_copy and conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def _copy_types(conn: Connection, table: Table) -> dict[str, int] | None:
    """Column name -> type oid of ``table`` as the database has it, when every column's type is
    one COPY writes here (else None). Read once per database connection and table: the
    connection's search path decides which table the name is."""
    cache: dict[str, dict[str, int] | None] = conn.connection.info.setdefault("synccli_copy", {})
    if table.name not in cache:
        rows = conn.exec_driver_sql(
            "SELECT a.attname, a.atttypid::int8, t.typname FROM pg_attribute a "
            "JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = to_regclass(%(name)s) AND a.attnum > 0 AND NOT a.attisdropped",
            {"name": conn.dialect.identifier_preparer.quote(table.name)},
        ).all()
        known = bool(rows) and all(typ in _COPY_TYPES for _n, _oid, typ in rows)
        cache[table.name] = {name: int(oid) for name, oid, _t in rows} if known else None
    return cache[table.name]


def _copy_insert(
    conn: Connection,
    table: Table,
    rows: list[dict[str, Any]],
    names: list[str],
    extra: list[Sequence[Any]],
    returning: Sequence[str],
    types: dict[str, int],
) -> list[tuple[Any, ...]]:
    pk = [c.name for c in table.primary_key.columns]
    wanted = set(returning) - set(names)
    if wanted and (wanted != set(pk) or len(pk) != 1):
        # only the key can be known before the rows are written (drawn from its sequence)
        return _insert_rows_sa(conn, table, rows, returning)
    if wanted:
        key = pk[0]
        names = [*names, key]
        extra = [*extra, _draw_ids(conn, table, key, len(rows))]
    values = _convert(rows, names, _processors(conn, table, names), extra)
    _copy(conn, table.name, names, values, types)
    if not returning:
        return []
    at = [names.index(n) for n in returning]
    return [tuple(row[i] for i in at) for row in values] if at else []


def _draw_ids(conn: Connection, table: Table, key: str, n: int) -> list[int]:
    """``n`` values drawn from the sequence of ``table``'s key column (the ids COPY writes, as
    it answers none), as one array the driver reads (no result row a value). The sequence is
    named by its oid, a constant of the statement: named by ``pg_get_serial_sequence``, it was
    looked up again for every value drawn (ten times the server's work)."""
    cache: dict[str, int] = conn.connection.info.setdefault("synccli_sequences", {})
    if table.name not in cache:
        cache[table.name] = int(
            conn.exec_driver_sql(
                "SELECT pg_get_serial_sequence(%(t)s, %(c)s)::regclass::oid::int8",
                {"t": conn.dialect.identifier_preparer.quote(table.name), "c": key},
            ).scalar_one()
        )
    sql = f"SELECT array_agg(nextval({cache[table.name]}::regclass)) FROM generate_series(1, %s)"
    driver: Any = conn.connection.driver_connection
    try:
        with driver.cursor() as cursor:
            ids: list[int] = cursor.execute(sql, (n,)).fetchone()[0]
    except conn.dialect.loaded_dbapi.Error as e:
        raise DBAPIError.instance(sql, (n,), e, conn.dialect.loaded_dbapi.Error) from e
    return ids


def _copy_update(
    conn: Connection,
    table: Table,
    key: str,
    rows: list[dict[str, Any]],
    names: list[str],
    types: dict[str, int],
) -> None:
    rows = list({row[key]: row for row in rows}.values())  # the later row for a key wins
    q = conn.dialect.identifier_preparer.quote
    temp = f"synccli_update_{next(_temp_names)}"
    ordered = [key, *names]
    columns = ", ".join(map(q, ordered))
    # the table's own column types (and no constraints): the copy converts nothing twice
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {temp} ON COMMIT DROP AS "
        f"SELECT {columns} FROM {q(table.name)} WITH NO DATA"
    )
    _copy(conn, temp, ordered, _convert(rows, ordered, _processors(conn, table, ordered)), types)
    sets = ", ".join(f"{q(n)} = {temp}.{q(n)}" for n in names)
    conn.exec_driver_sql(
        f"UPDATE {q(table.name)} SET {sets} FROM {temp} "
        f"WHERE {q(table.name)}.{q(key)} = {temp}.{q(key)}"
    )
    conn.exec_driver_sql(f"DROP TABLE {temp}")  # a pull updates many pages in one run


def _copy(
    conn: Connection,
    table: str,
    names: list[str],
    values: list[tuple[Any, ...]],
    types: dict[str, int],
) -> None:
    """``COPY table (names) FROM STDIN`` of ``values``, binary, in the connection's transaction.
    A failure (a duplicate key, say) is raised as SQLAlchemy raises it for a statement, so
    callers catch ``IntegrityError`` whichever path wrote."""
    q = conn.dialect.identifier_preparer.quote
    sql = f"COPY {q(table)} ({', '.join(map(q, names))}) FROM STDIN (FORMAT BINARY)"
    driver: Any = conn.connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:
            copy.set_types([types[n] for n in names])
            for row in values:
                copy.write_row(row)
    except conn.dialect.loaded_dbapi.Error as e:
        raise DBAPIError.instance(sql, None, e, conn.dialect.loaded_dbapi.Error) from e


def one_of(column: Any, values: Sequence[str | int], dialect: Dialect) -> ColumnElement[bool]:
    """``column IN values``, as one parameter where the database allows it. SQLAlchemy renders and
    binds an IN list one placeholder at a time in Python (a first pull looks up 150,000 values),
    and the driver then parses a statement of a thousand placeholders again (psycopg: a quarter
    of a first pull's reads). Strings and integers only.

    - SQLite: one JSON parameter, read back with ``json_each``; SQLite still searches the
      column's index for each value (``SEARCH ... USING INDEX``, then ``LIST SUBQUERY``).
    - PostgreSQL: ``column = ANY(array)``, one array parameter; its plan uses the column's index
      for any values, so the statement's generic plan is as good as one made for each list."""
    if dialect.name == "postgresql":
        array = bindparam(None, list(values), type_=ARRAY(column.type))
        return column == any_(array)
    if dialect.name != "sqlite":
        return column.in_(values)
    listed: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(literal(json.dumps(values)))
    )
    return column.in_(listed)


def plain_rows(conn: Connection, stmt: ClauseElement) -> Iterator[tuple[Any, ...]]:
    """The rows of ``stmt`` as the driver's own tuples, with no result processing: for reads of
    a row per product where each column is an integer or a string (SQLAlchemy's result rows
    cost as much again as the database's work: 0.1 s of CPU at 200,000 rows). Its parameters
    must be integers or strings too."""
    compiled: Any = stmt.compile(dialect=conn.dialect)
    params: Any = compiled.params
    if compiled.positiontup is not None:  # qmark and format styles: in the statement's order
        params = tuple(compiled.params[name] for name in compiled.positiontup)
    driver: Any = conn.connection.dbapi_connection
    cursor = driver.cursor()
    try:
        cursor.execute(str(compiled), params)
        while rows := cursor.fetchmany(10_000):
            yield from rows
    finally:
        cursor.close()
