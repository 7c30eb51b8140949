"""Shared fixtures: a fresh store per test (SQLite, or PostgreSQL when its URL is set), and a
CLI runner that keeps stdout and stderr apart."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from typer.testing import CliRunner

from synccli import secrets
from synccli.config import ensure_private_dir, load_settings
from synccli.store.db import Store, make_engine

POSTGRES_URL = os.environ.get("SYNC_TEST_POSTGRES_URL")
POSTGRES_SKIP = "PostgreSQL tests need SYNC_TEST_POSTGRES_URL (set by .ci/run)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow run first. ``make test`` hands tests to its workers in this order, one
    at a time: a 90-second test started early overlaps the rest, started last it ends the run
    alone. (The sort is stable, and every worker sorts the same collection the same way, as
    pytest-xdist requires.)"""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _logging_reset() -> Iterator[None]:
    """A CLI run configures the synccli logger for itself; give the next test a clean one."""
    yield
    import logging

    logger = logging.getLogger("synccli")
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(autouse=True)
def _secrets_of_this_test() -> Iterator[None]:
    """The secrets a test registers for redaction are forgotten when it ends. The registry is
    process-wide: a value one test registered ("refresh", say) would otherwise be masked in the
    output or the replayed cassettes of whichever test its worker runs next, so a test's result
    would depend on the tests run before it in the same process."""
    before = set(secrets._secrets)
    yield
    with secrets._lock:
        secrets._secrets.clear()
        secrets._secrets.update(before)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data directory and no configuration leaking in from the machine."""
    data = tmp_path / "data"
    for var in list(os.environ):
        if var.startswith("SYNC_") and var != "SYNC_TEST_POSTGRES_URL":
            monkeypatch.delenv(var)
    monkeypatch.setenv("SYNC_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)
    return data


def _isolated_url(base: str) -> tuple[str, str]:
    """The test database URL confined to a schema of this test process, so two test runs on one
    server (a developer's and CI's, say) never drop each other's tables."""
    schema = f"synccli_test_{os.getpid()}"
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", schema


def reset_postgres(url: str) -> None:
    base = url.split("?")[0]
    schema = f"synccli_test_{os.getpid()}"
    engine = make_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()


@pytest.fixture(scope="session")
def _head_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store upgraded to the newest schema once per test process. Running every
    migration again before each test cost a third of a second a test (and the migrations have
    tests of their own); each test's store starts as a copy of this file instead."""
    data = tmp_path_factory.mktemp("head-store")
    path = data / "synccli.db"
    st = Store(load_settings(f"sqlite:///{path}", str(data)))
    st.upgrade()
    st.dispose()  # the last connection closed folds the write-ahead log into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture
def store(tmp_path: Path, _head_store: Path) -> Iterator[Store]:
    """An upgraded SQLite store in the test's data directory."""
    settings = load_settings()
    target = make_url(settings.database_url).database
    if settings.database_url.startswith("sqlite") and target:
        ensure_private_dir(Path(target).parent)
        shutil.copy2(_head_store, target)  # owner-only, as the store creates its file
    st = Store(settings)
    if st.current_revision() is None:  # not the copy (a database URL set by the test)
        st.upgrade()
    yield st
    st.dispose()


@pytest.fixture
def pg_url() -> str:
    if not POSTGRES_URL:
        pytest.skip(POSTGRES_SKIP)
    url, _schema = _isolated_url(POSTGRES_URL)
    reset_postgres(url)
    return url


@pytest.fixture
def pg_store(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("SYNC_DATABASE_URL", pg_url)
    st = Store(load_settings())
    st.upgrade()
    yield st
    st.dispose()


@pytest.fixture(scope="session", autouse=True)
def _drop_test_schema() -> Iterator[None]:
    yield
    if POSTGRES_URL:
        base = POSTGRES_URL.split("?")[0]
        engine = make_engine(base)
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "synccli_test_{os.getpid()}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest) -> Store:
    """The test's SQLite store (one writer), then a PostgreSQL one in its own schema (row locks)
    where one is set. A test module may define its own (``test_store_safety.py``)."""
    return request.getfixturevalue("store" if request.param == "sqlite" else "pg_store")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli():
    """Run ``synccli ARGS`` in-process; returns exit code, stdout and stderr separately."""
    from synccli.cli.main import app

    runner = CliRunner()

    def invoke(
        *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> CliResult:
        try:
            result = runner.invoke(app, list(args), input=input, env=env, catch_exceptions=False)
        finally:
            # the run's log handlers write to the runner's streams, closed from here on
            logging.getLogger("synccli").handlers.clear()
            logging.getLogger("synccli").propagate = True
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return invoke


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that takes connections and never answers (a server hung, a half-open firewall)."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]
