"""The quiet ``post-invoices --all`` on PostgreSQL calls libpq alone (``synccli/store/libpq.py``):
it must behave as psycopg, which it stands in for, does where a cron run can tell: no server
notice on stderr (cron mails it), a run held by a lock stopped within the second by a signal
and its statement cancelled on the server, a connection the server ends read as an outage,
several hosts each tried, and a value it cannot read leaving the connection usable."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import text
from test_quiet_post import _add

from synccli.store import libpq
from synccli.store.db import Store
from synccli.store.quick import QuickStore

pytestmark = pytest.mark.postgres


def _quiet_run(store: Store, url: str | None = None, **extra: str) -> subprocess.Popen[str]:
    from hostile.support import SYNCCLI, cli_env

    env = cli_env(store.settings.data_dir, url or store.settings.database_url, **extra)
    return subprocess.Popen(
        [*SYNCCLI, "post-invoices", "--all"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _activity(holder: Any, where: str) -> list[Any]:
    # the activity view is read once a transaction unless its snapshot is cleared
    holder.execute(text("SELECT pg_stat_clear_snapshot()"))
    return list(holder.execute(text(f"SELECT pid, state FROM pg_stat_activity WHERE {where}")))


@contextmanager
def _run_held_by_a_lock(store: Store) -> Iterator[tuple[Any, subprocess.Popen[str], int]]:
    """A quiet run held up by a lock another session keeps (on the schema's version table,
    SYNC_LOCK_TIMEOUT 60 s): that session, the run, and the server process serving the run,
    once it waits for the lock."""
    with store.engine.connect() as holder:
        holder.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
        run = _quiet_run(store, SYNC_LOCK_TIMEOUT="60")
        try:
            deadline = time.monotonic() + 30
            while not (found := _activity(holder, "wait_event_type = 'Lock'")):
                assert run.poll() is None, run.communicate()
                assert time.monotonic() < deadline, "the run never waited for the lock"
                time.sleep(0.05)
            yield holder, run, int(found[0][0])
        finally:
            if run.poll() is None:
                run.kill()
            holder.rollback()


def test_a_server_notice_is_not_printed(pg_store: Store) -> None:
    """libpq's own notice processor prints on stderr; psycopg shows nothing."""
    _add(pg_store, 2)
    with pg_store.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE WARNING 'run row written'; RETURN NEW; END $$"
            )
        )
        conn.execute(
            text("CREATE TRIGGER note BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION note()")
        )
    run = _quiet_run(pg_store)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert out.count(": nothing due") == 2
    assert err == ""


@pytest.mark.parametrize("signum", [15, 2])  # SIGTERM, SIGINT (Ctrl-C)
def test_a_run_waiting_for_a_lock_stops_within_the_second_on_a_signal(
    pg_store: Store, signum: int
) -> None:
    """libpq is waited on in Python, as psycopg waits: a cron run held up by a lock ends at once
    on SIGTERM or Ctrl-C (exit 128 + the signal), not after the lock timeout."""
    _add(pg_store, 2)
    with _run_held_by_a_lock(pg_store) as (_, run, _):
        sent = time.monotonic()
        run.send_signal(signum)
        _, err = run.communicate(timeout=90)
        took = time.monotonic() - sent
    assert run.returncode == 128 + signum, err
    assert took < 3, (took, err)
    assert "Traceback" not in err


def test_a_stopped_run_leaves_no_statement_waiting_on_the_server(pg_store: Store) -> None:
    """SIGTERM while the server waits for a lock: the statement is cancelled (as psycopg
    cancels it), not left holding a connection slot until the lock timeout."""
    _add(pg_store, 1)
    with _run_held_by_a_lock(pg_store) as (holder, run, pid):
        run.terminate()
        run.communicate(timeout=30)
        deadline = time.monotonic() + 5
        while _activity(holder, f"pid = {pid} AND state = 'active'"):
            assert time.monotonic() < deadline, "the statement still runs on the server"
            time.sleep(0.05)
    assert run.returncode == 143


def test_a_connection_the_server_ends_is_an_outage_named_by_its_code(pg_store: Store) -> None:
    """The server ends the run's connection while it waits (an administrator, a fast
    shutdown): one line naming it, exit 1, as through psycopg."""
    _add(pg_store, 1)
    with _run_held_by_a_lock(pg_store) as (_, run, pid):
        with pg_store.engine.connect() as admin:
            admin.execute(text(f"SELECT pg_terminate_backend({pid})"))
        _, err = run.communicate(timeout=30)
    assert run.returncode == 1, err
    assert err.strip() == (
        "error: store unavailable: the database server is shutting down (admin_shutdown)"
    )


def test_several_hosts_are_each_tried(pg_store: Store, silent_server: int) -> None:
    """The first host never answers: psycopg gives each host its own connect timeout and
    reaches the second, and so does the quiet run."""
    _add(pg_store, 1)
    url = pg_store.settings.database_url
    query = url.split("?", 1)[1] if "?" in url else ""
    several = (
        f"postgresql+psycopg://postgres@/test?host=127.0.0.1,127.0.0.1&port={silent_server},5432"
        f"&connect_timeout=2&{query}"
    )
    run = _quiet_run(pg_store, several)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert out == "shop00: nothing due\n"


def test_a_value_not_read_leaves_the_connection_usable(pg_store: Store) -> None:
    quick = QuickStore.open(pg_store.settings.database_url, 5)
    assert quick is not None and quick.is_libpq
    try:
        with pytest.raises(ValueError):
            quick.rows("SELECT 'infinity'::timestamp")  # no Python datetime holds it
        assert quick.rows("SELECT 1") == [(1,)]
        with pytest.raises(libpq.Error) as refused:
            quick.rows("SELECT 1 / 0")
        assert refused.value.sqlstate == "22012"
        assert quick.rows("SELECT ?::int + 1", (41,)) == [(42,)]
    finally:
        quick.close()
