"""Opening the store: engine, sessions, schema version and migrations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, select, text
from sqlalchemy.engine import Connection as SAConnection
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from synccli.config import Settings, ensure_private_dir
from synccli.errors import ConfigError, SchemaOutdated, SyncError
from synccli.store.outage import store_outage
from synccli.store.revision import ROOT, VERSION_TABLE
from synccli.store.revision import _alembic_head as _alembic_head  # re-exported
from synccli.store.revision import head_revision as head_revision  # re-exported

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from sqlalchemy.orm import Session, sessionmaker

    from synccli.crypto import Vault

BUSY_TIMEOUT_MS = 30_000  # how long a SQLite write waits for another connection's lock


def alembic_config(url: str) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None: another database, or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    return Path(database) if database and database != ":memory:" else None


def store_location(url: str) -> str:
    """Where a store lives, for messages: the SQLite file, or the URL without its password."""
    path = sqlite_path(url)
    return str(path) if path is not None else make_url(url).render_as_string(hide_password=True)


def make_engine(
    url: str, *, create: bool = True, lock_timeout: float = BUSY_TIMEOUT_MS / 1000, **kw: Any
) -> Engine:
    """An engine for ``url``. SQLite files are created owner-only, in WAL mode, with a busy
    timeout, so cron runs and the ledger can write while another process reads. Without
    ``create``, a SQLite file that does not exist is an error and nothing is created (no
    directory, no empty file): a read-only command must leave no trace. A write waits at most
    ``lock_timeout`` seconds for another process's lock (SQLite's busy timeout, PostgreSQL's
    lock_timeout), then fails: the command stops with one line, exit 1."""
    lock_ms = max(1, int(lock_timeout * 1000))
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            path = Path(database)
            if not create and not path.exists():
                if path.parent.exists() and not path.parent.is_dir():
                    ensure_private_dir(path.parent)  # says why it cannot be the data directory
                raise ConfigError(f"no store at {path} yet: run `synccli db upgrade`")
            ensure_private_dir(path.parent)
            if not path.exists():
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
                except OSError as exc:
                    raise ConfigError(f"cannot create store {path}: {exc.strerror}") from None
        engine = create_engine(url, connect_args={"timeout": lock_ms / 1000}, **kw)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={lock_ms}")
            # With WAL, NORMAL survives a killed process; only a power cut may lose the last
            # commits, and every job re-checks the provider before repeating a write.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        # pysqlite's own transaction handling defers BEGIN; emit it ourselves so that
        # `BEGIN IMMEDIATE` (see Store.locked) works.
        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # IMMEDIATE: a transaction that reads and then writes must not find, at its first
            # write, that another process committed meanwhile (SQLITE_BUSY_SNAPSHOT fails at once,
            # busy_timeout does not wait for it). Sessions are short and never span an API call.
            conn.exec_driver_sql(
                conn.get_execution_options().get("sqlite_begin", "BEGIN IMMEDIATE")
            )

        return engine
    engine = create_engine(url, pool_pre_ping=True, **kw)

    @event.listens_for(engine, "connect")
    def _lock_timeout(dbapi_conn: Any, _record: Any) -> None:
        # PostgreSQL waits for a lock forever by default: a cron run behind a stuck one would
        # hang instead of failing with a reason. Set for the session, outside any transaction.
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET lock_timeout = {lock_ms}")
        finally:
            dbapi_conn.autocommit = autocommit

    return engine


class Store:
    """The link store: engine, session factory and the credential vault."""

    def __init__(
        self, settings: Settings, engine: Engine | None = None, *, create: bool = True
    ) -> None:
        self.settings = settings
        self.lock_timeout_ms = max(1, int(settings.lock_timeout * 1000))
        self.engine = engine or make_engine(
            settings.database_url, create=create, lock_timeout=settings.lock_timeout
        )
        self._sessions: sessionmaker[Session] | None = None
        self._vault: Vault | None = None

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The session factory. The ORM (SQLAlchemy's and the store's mapped classes: a fifth of
        a quiet cron run's CPU) is imported when a session is first needed, not to find out
        that there is no connection to serve."""
        if self._sessions is None:
            from sqlalchemy.orm import sessionmaker

            import synccli.store.models  # noqa: F401 - every mapped class, before a query

            self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        return self._sessions

    def has_connections(self) -> bool:
        """Whether the store has any connection (one Core query: no mapped class needed)."""
        with self.reading() as conn:
            return bool(conn.scalar(text("SELECT EXISTS (SELECT 1 FROM connections)")))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            # the cipher's library, once credentials are read or written
            from synccli.crypto import Vault, key_path, load_key

            # A new key is made only for a store that holds no credentials yet: a removed key file
            # must not be silently replaced by one that cannot open what is stored.
            sealed = self._sealed_sample()
            vault = Vault(load_key(self.settings, create=sealed is None))
            if sealed is not None and not vault.opens(sealed):
                # Refused before anything is sealed with it: credentials under two keys would
                # leave some that no key opens.
                source = (
                    "SYNC_SECRET_KEY"
                    if self.settings.secret_key
                    else f"key file {key_path(self.settings)}"
                )
                raise ConfigError(
                    f"stored credentials cannot be decrypted with {source}: they were sealed "
                    "with another key (use the key they were stored with)"
                )
            self._vault = vault
        return self._vault

    def _sealed_sample(self) -> str | None:
        """One connection's sealed credentials, or None when the store holds none yet."""
        # A read that takes no write lock: the vault is often first needed inside a session that
        # holds it (`connections set`), where a BEGIN IMMEDIATE here would wait for itself.
        from synccli.store.models import Connection

        with self.reading() as conn:
            if not inspect(conn).has_table(Connection.__tablename__):
                return None  # no tables yet: nothing is sealed
            return conn.scalar(
                select(Connection.credentials)
                .where(Connection.credentials.is_not(None))
                .order_by(Connection.id)
                .limit(1)
            )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only, never committed. On SQLite its transaction is deferred:
        with WAL it neither takes nor waits for the write lock, so a command that only reads
        works while another process writes."""
        with self.sessions() as session:
            if self.is_sqlite:
                session.connection(execution_options={"sqlite_begin": "BEGIN"})
            try:
                yield session
            finally:
                session.expunge_all()  # what was read stays loaded once the session is gone
                session.rollback()

    @contextmanager
    def reading(self) -> Iterator[SAConnection]:
        """A read-only connection (Core: it serves the budget check before every call). On
        SQLite its transaction is deferred: with WAL it neither waits for nor blocks a writer (a
        budget check beside a batch being applied)."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(sqlite_begin="BEGIN")
            with conn.begin() as transaction:
                try:
                    yield conn
                finally:
                    transaction.rollback()

    @contextmanager
    def locked(self) -> Iterator[Session]:
        """A session whose transaction takes the write lock at once on SQLite (BEGIN IMMEDIATE),
        so read-then-write sections (claiming, leases, token refresh) cannot interleave.
        On PostgreSQL use row locks (``with_for_update``) inside it."""
        with self.sessions() as session:
            if self.is_sqlite:
                session.connection(execution_options={"sqlite_begin": "BEGIN IMMEDIATE"})
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def current_revision(self) -> str | None:
        try:
            # a read: it neither takes nor waits for the write lock (SQLite), so a command can
            # start while another process writes
            with self.reading() as conn:
                if not inspect(conn).has_table(VERSION_TABLE):
                    return None
                versions = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").all()
                if len(versions) > 1:  # branches: alembic says what that means
                    from alembic.runtime.migration import MigrationContext

                    return MigrationContext.configure(conn).get_current_revision()
                return versions[0][0] if versions else None
        except OperationalError as exc:
            raise self.failure(exc) from None

    def failure(self, exc: Exception) -> SyncError:
        """What a database error met while opening the store means: an outage (exit 1, e.g. a
        lock held too long, the server gone) or a store that cannot be used as configured."""
        outage = store_outage(exc, self.settings.lock_timeout)
        if outage is not None:
            return outage
        return ConfigError(f"cannot open the store: {_first_line(exc)}")

    def check_schema(self) -> None:
        """Stop with one line when the schema is behind the code."""
        current, head = self.current_revision(), head_revision()
        if current is None:
            raise SchemaOutdated(
                f"no store at {store_location(self.settings.database_url)} yet "
                "(no schema): run `synccli db upgrade`"
            )
        if current != head:
            state = f"at {current}, code expects {head}"
            raise SchemaOutdated(
                f"the store's schema is out of date ({state}): run `synccli db upgrade`"
            )

    def upgrade(self) -> tuple[str | None, str | None]:
        from alembic import command

        before = self.current_revision()
        cfg = alembic_config(self.settings.database_url)
        with self.engine.connect() as conn:
            raw = None  # SQLite's driver connection, while its foreign keys are off
            if self.is_sqlite:
                # A migration that rebuilds a table (SQLite's batch mode) drops the old one, and
                # with foreign keys on that drop deletes every row referring to it, ON DELETE
                # CASCADE included (order lines of rebuilt orders). The pragma is a no-op inside
                # a transaction, so it is set on the driver's connection before BEGIN.
                raw = conn.connection.driver_connection
                assert raw is not None
                raw.execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.begin():
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                    if self.is_sqlite:
                        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                        if broken is not None:
                            raise ConfigError(
                                f"the upgrade left a broken reference in {broken[0]}: not applied"
                            )
            finally:
                if raw is not None:
                    raw.execute("PRAGMA foreign_keys=ON")
        return before, self.current_revision()

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(settings: Settings, check: bool = True, create: bool = True) -> Store:
    """Open the store named by ``settings``; with ``check``, refuse an out-of-date schema;
    without ``create``, refuse a SQLite file that does not exist (creating nothing)."""
    try:
        store = Store(settings, create=create)
        if check:
            store.check_schema()
        return store
    except SQLAlchemyError as exc:
        outage = store_outage(exc, settings.lock_timeout)
        if outage is not None:
            raise outage from None
        raise ConfigError(f"cannot open the store: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]
