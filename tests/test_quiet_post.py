"""``post-invoices --all`` from cron with connections whose queues are empty is cheap (#21): one
query through the store's driver alone (no SQLAlchemy) finds that no connection has anything to
do, and none is opened (no lease, no connector, no HTTP stack, no ORM); each still gets a
finished run row, so ``status`` says when its queue was last looked at. Due work is never left
behind by that query."""

from __future__ import annotations

import inspect
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from test_quiet_start import HEAVY, RUN
from test_reliability_isolation import connect, job_state, jsonl, order, sandbox

from synccli import notify
from synccli.cli.commands_invoices import nothing_due_report
from synccli.store import libpq
from synccli.store.claims import HELD_STATES
from synccli.store.connections import add_connection, get_connection
from synccli.store.db import Store
from synccli.store.idle import (
    ACTIVE,
    EMAIL_GRACE,
    EMAIL_MAX_AGE,
    post_invoices_work,
    record_nothing_due,
)
from synccli.store.models import InvoiceJob, Lease, Notification, Order, Run
from synccli.store.quick import QuickStore, conninfo, plain_address
from synccli.store.runs import last_runs
from synccli.sync.context import run_counts
from synccli.sync.invoices import PostReport

JOB = "post-invoices"


def _add(store: Store, n: int) -> None:
    settings = {"base_url": "http://127.0.0.1:9", "api_id": "quiet"}
    for i in range(n):
        add_connection(store, f"shop{i:02d}", "unleashed", settings, {"api_key": "k"}, None)


@pytest.mark.parametrize("connections", [1, 20])
def test_an_idle_run_over_connections_imports_no_connector_http_or_orm(
    any_store: Store, tmp_path: Path, connections: int
) -> None:
    store = any_store
    _add(store, connections)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
    out = subprocess.run(
        [sys.executable, "-c", RUN], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    code, modules = json.loads(out.stdout.splitlines()[-1])
    assert code in (0, None), out.stderr
    assert out.stdout.count(": nothing due") == connections
    # on PostgreSQL not psycopg either (a fifth of a second): libpq is called alone
    heavy = (*HEAVY, "psycopg")
    loaded = [m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy)]
    assert not loaded
    # each connection's queue was looked at, and its run row says so
    with store.session() as s:
        runs = list(s.scalars(select(Run).where(Run.job == JOB)))
    assert len(runs) == connections
    assert {r.outcome for r in runs} == {"ok"} and all(r.ended_at for r in runs)
    assert {r.calls for r in runs} == {0}
    with store.session() as s:
        assert s.scalar(select(Lease)) is None


def test_idle_connections_are_recorded_in_one_write_transaction(
    store: Store, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 idle connections take the store's write lock once, not once a connection: what SQLite
    is sent (its trace callback) has one write transaction and one insert of run rows, and
    each connection still has its own finished run row and its own ok record in the log."""
    _add(store, 20)
    sent: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(sent.append)
        return conn

    # every connection the run opens, through SQLAlchemy or the driver alone
    monkeypatch.setattr(sqlite3, "connect", traced)
    result = cli("-v", "post-invoices", "--all", env={"SYNC_MIN_INTERVAL": "0"})
    monkeypatch.undo()
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count(": nothing due") == 20
    statements = [s.split(None, 2)[:2] for s in sent]
    assert statements.count(["BEGIN", "IMMEDIATE"]) == 1, sent
    assert sum(s[:1] == ["COMMIT"] for s in statements) == 1, sent
    assert sum(s == ["INSERT", "INTO"] for s in statements) == 1, sent
    with store.session() as s:
        runs = list(s.scalars(select(Run).where(Run.job == JOB).order_by(Run.id)))
    by_connection = {r.connection_id: r for r in runs}
    assert len(runs) == len(by_connection) == 20
    for name in (f"shop{i:02d}" for i in range(20)):
        run = by_connection[get_connection(store, name).id]
        assert (run.outcome, run.calls, run.error) == ("ok", 0, None)
        assert run.started_at == run.ended_at is not None
        assert run.counts == nothing_due_report(name)
        assert f"run {run.id} ended: ok, exit 0, 0 call(s): {JOB}: nothing due" in result.stderr


def test_an_idle_run_reports_and_records_what_an_empty_run_did(store: Store, cli) -> None:
    _add(store, 1)
    assert nothing_due_report("shop00") == run_counts(PostReport("shop00"))
    result = cli("post-invoices", "--all", "--json", env={"SYNC_MIN_INTERVAL": "0"})
    assert result.exit_code == 0, result.stderr
    [entry] = json.loads(result.stdout)
    assert entry == {
        "connection": "shop00",
        "skipped": None,
        "error": None,
        "report": run_counts(PostReport("shop00")),
    }
    with store.session() as s:
        run = s.scalar(select(Run))
    assert run is not None and run.counts == run_counts(PostReport("shop00"))
    # the round rule holds: another host's run this round leaves this one alone
    again = cli("post-invoices", "--all", env={"SYNC_MIN_INTERVAL": "600"})
    assert again.exit_code == 0
    assert again.stdout == "shop00: skipped: post-invoices already ran in this round\n"


def test_the_quick_check_uses_the_claim_and_email_rules(store: Store) -> None:
    assert ACTIVE == HELD_STATES
    defaults = inspect.signature(notify.flush_pending).parameters
    assert (defaults["grace"].default, defaults["max_age"].default) == (EMAIL_GRACE, EMAIL_MAX_AGE)


def _quick(store: Store) -> QuickStore:
    """The store as the quiet path opens it: its driver alone."""
    quick = QuickStore.open(store.settings.database_url, store.settings.lock_timeout)
    assert quick is not None
    return quick


@pytest.fixture(params=["libpq", "psycopg"])
def driver(request: pytest.FixtureRequest, any_store: Store, monkeypatch) -> str:
    """How the quiet path reaches PostgreSQL: libpq alone, or psycopg where no libpq can be
    loaded (SQLite has one way)."""
    if request.param == "psycopg":
        if any_store.settings.database_url.startswith("sqlite"):
            pytest.skip("SQLite is reached through sqlite3 alone")
        monkeypatch.setattr(libpq, "_load", lambda: None)
    return str(request.param)


def _work(store: Store, driver: str = "libpq") -> dict[str, bool]:
    now = datetime.now(UTC)
    quick = _quick(store)
    assert quick.is_libpq == (driver == "libpq" and not quick.is_sqlite)
    try:
        return {name: work for _, name, work in post_invoices_work(quick, JOB, now)}
    finally:
        quick.close()


def _order(connection_id: int, number: str, now: datetime) -> Order:
    return Order(
        connection_id=connection_id,
        number=number,
        date=now,
        currency="NZD",
        total=0,
        created_at=now,
    )


def test_everything_a_run_would_do_counts_as_work(any_store: Store, driver: str) -> None:
    """Each case on its own connection; shop00 has nothing to do."""
    store = any_store
    _add(store, 8)
    ids = {f"shop{i:02d}": get_connection(store, f"shop{i:02d}").id for i in range(8)}
    now = datetime.now(UTC)
    ago, ahead = now - timedelta(minutes=5), now + timedelta(hours=2)
    jobs = {
        # (state, next attempt, claimed until)
        "shop01": ("pending", ago, None),  # a job due now
        "shop02": ("failed", ago, None),  # a retry whose time came
        "shop03": ("posting", ago, ago),  # claimed by a run that died: taken over
        "shop04": ("waiting", now, None),  # a refund looked at again each run
        "shop05": ("failed", ahead, None),  # a retry not yet due: nothing to do
        "shop06": ("posting", ago, ahead),  # held by a live run: nothing to do here
        "shop00": ("posted", ago, None),  # done
    }
    with store.session() as s:
        for name, (state, due, claimed) in jobs.items():
            o = _order(ids[name], f"{name}-1", now)
            s.add(o)
            s.flush()
            s.add(
                InvoiceJob(
                    connection_id=ids[name],
                    order_id=o.id,
                    state=state,
                    idempotency_key=f"k-{name}",
                    next_attempt_at=due,
                    claimed_by="other-host:1" if claimed else None,
                    claimed_until=claimed,
                    created_at=ago,
                )
            )
        # an order the shop inserted without a job: a run queues it
        s.add(_order(ids["shop07"], "S7", now))
    work = _work(store, driver)
    assert work == {
        "shop00": False,
        "shop01": True,
        "shop02": True,
        "shop03": True,
        "shop04": True,
        "shop05": False,
        "shop06": False,
        "shop07": True,
    }


def test_an_email_to_send_again_and_a_lease_count_as_work(any_store: Store, driver: str) -> None:
    store = any_store
    _add(store, 3)
    now = datetime.now(UTC)
    with store.session() as s:
        s.add(
            Notification(
                connection_id=get_connection(store, "shop01").id,
                dedupe_key="d",
                subject="s",
                body="b",
                created_at=now - timedelta(minutes=1),
                error="smtp refused",
            )
        )
        s.add(
            Lease(
                job=JOB,
                connection_id=get_connection(store, "shop02").id,
                owner="dead-host:1",
                expires_at=now - timedelta(minutes=1),
            )
        )
    assert _work(store, driver) == {"shop00": False, "shop01": True, "shop02": True}
    # the idle run's row, read back by the round rule and by status as any run's
    shop = get_connection(store, "shop00")
    counts = {shop.id: nothing_due_report("shop00")}
    quick = _quick(store)
    [(_, run_id)] = record_nothing_due(quick, JOB, counts, now).items()
    [run] = last_runs(store, shop.id)
    assert (run.id, run.outcome, run.started_at, run.ended_at, run.calls) == (
        (run_id, "ok", now, now, 0)
    )
    # a row written this round leaves the next idle run of the round alone, not the next round's
    assert record_nothing_due(quick, JOB, counts, now, (now - timedelta(seconds=1), now)) == {}
    later = now + EMAIL_GRACE
    window = (now + timedelta(seconds=1), later)
    assert list(record_nothing_due(quick, JOB, counts, later, window)) == [shop.id]
    quick.close()


def test_due_work_is_still_posted_by_all_beside_idle_connections(store: Store, cli) -> None:
    """A due job, a retry whose time came and a dead run's expired claim are posted by
    ``--all``; a retry not yet due waits; idle connections say "nothing due"."""
    env = {"SYNC_MIN_INTERVAL": "0"}
    with sandbox("xero") as running:
        connect(store, running, "a-idle")
        connect(store, running, "b-shop")
        orders = [order(running, n) for n in ("B-1", "B-2", "B-3", "B-4")]
        assert cli("invoices", "add", "-", "-c", "b-shop", input=jsonl(*orders))
        now = datetime.now(UTC)
        past, ahead = now - timedelta(minutes=1), now + timedelta(hours=3)
        with store.session() as s:
            by = {o.number: o.id for o in s.scalars(select(Order))}

            def set_job(number: str, **values: object) -> None:
                s.execute(
                    update(InvoiceJob).where(InvoiceJob.order_id == by[number]).values(values)
                )

            set_job("B-2", state="failed", attempts=1, next_attempt_at=past)
            set_job("B-3", state="pending", claimed_by="gone:1", claimed_until=past)
            set_job("B-4", state="failed", attempts=1, next_attempt_at=ahead)
        result = cli("post-invoices", "--all", env=env)
        assert result.exit_code == 0, result.stderr
        assert "a-idle: nothing due" in result.stdout
        assert [job_state(store, n) for n in ("B-1", "B-2", "B-3")] == ["posted"] * 3
        assert job_state(store, "B-4") == "failed"
        quiet = cli("post-invoices", "--all", env=env)
        assert quiet.stdout == "a-idle: nothing due\nb-shop: nothing due\n", quiet.stderr


def test_a_store_the_quiet_path_cannot_use_is_refused_in_the_stores_own_words(
    store: Store, cli, tmp_path: Path
) -> None:
    """No store file yet, a schema behind the code: ``post-invoices --all`` says what every
    command says (exit 2), creating nothing."""
    _add(store, 1)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    behind = cli("post-invoices", "--all")
    assert behind.exit_code == 2
    assert "the store's schema is out of date (at 0001" in behind.stderr
    assert "run `synccli db upgrade`" in behind.stderr
    missing = tmp_path / "elsewhere" / "synccli.db"
    absent = cli("--database-url", f"sqlite:///{missing}", "post-invoices", "--all")
    assert absent.exit_code == 2
    assert absent.stderr.strip() == f"error: no store at {missing} yet: run `synccli db upgrade`"
    assert not missing.parent.exists()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////var/lib/synccli/synccli.db",
        "sqlite:///relative/synccli.db",
        "sqlite:////tmp/with space/and%20percent#hash.db",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg://shop:p%40ss%3Aw0rd@db.example:6432/books?sslmode=require",
        "postgresql+psycopg://127.0.0.1/test?options=-csearch_path%3Dsynccli_test_1",
        "postgresql+psycopg:///test?host=/var/run/postgresql",
        "postgresql+psycopg://shop@db.example",
        "postgresql+psycopg://sh%20op:it%27s%20a%5Cpass@db.example/books?application_name=",
    ],
)
def test_a_plain_url_is_read_as_sqlalchemy_reads_it(url: str) -> None:
    """The quiet path opens the store through its driver from the URL it reads itself: the
    file or the connect arguments must be SQLAlchemy's for the same URL."""
    from sqlalchemy.engine import make_url

    from synccli.store.quick import plain_address

    address = plain_address(url)
    assert address is not None
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert address.path == parsed.database
    else:
        expected = parsed.translate_connect_args(username="user", database="dbname")
        expected = {k: str(v) for k, v in expected.items()} | dict(parsed.query)
        assert address.params == expected


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:books.db?mode=ro&uri=true",
        "postgresql://postgres@127.0.0.1/test",  # SQLAlchemy's default driver, not psycopg 3
        "postgresql+psycopg2://postgres@127.0.0.1/test",
        "postgresql+psycopg://[::1]:5432/test",
        "postgresql+psycopg://h/test?sslmode=require&sslmode=disable",
        "mysql://shop@127.0.0.1/shop",
    ],
)
def test_a_url_of_another_form_is_left_to_sqlalchemy(url: str) -> None:
    from synccli.store.quick import plain_address

    assert plain_address(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg://shop:p%40ss%3Aw0rd@db.example:6432/books?sslmode=require",
        "postgresql+psycopg://127.0.0.1/test?options=-csearch_path%3Dsynccli_test_1",
        "postgresql+psycopg:///test?host=/var/run/postgresql",
        "postgresql+psycopg://sh%20op:it%27s%20a%5Cpass@db.example/books?application_name=",
    ],
)
def test_libpq_is_given_the_connection_string_psycopg_is_given(url: str) -> None:
    """The quiet path hands libpq what psycopg would hand it for the same URL: the same
    host, password, options, SSL mode, quoted the same way."""
    from psycopg.conninfo import make_conninfo

    address = plain_address(url)
    assert address is not None
    assert conninfo(address.params) == make_conninfo("", **address.params)


@pytest.mark.postgres
def test_the_quiet_path_calls_the_libpq_psycopg_loads(pg_store: Store) -> None:
    """One libpq in the process, whichever loaded it first: psycopg's binary build brings its
    own copy and the quiet path takes that one, not another version from the system."""
    import psycopg

    psycopg.pq.version()  # psycopg's libpq, loaded
    assert libpq.available()
    assert libpq.version() == psycopg.pq.version()
    with open("/proc/self/maps", encoding="utf-8") as maps:
        files = {line.split()[-1] for line in maps if "/libpq" in line}
    assert len(files) == 1, files


def _quiet_run(tmp_path: Path, url: str) -> subprocess.Popen[str]:
    from hostile.support import SYNCCLI, cli_env

    return subprocess.Popen(
        [*SYNCCLI, "post-invoices", "--all"],
        env=cli_env(tmp_path, url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_quiet_run_connecting_to_a_silent_server_gives_up_at_its_connect_timeout(
    tmp_path: Path, silent_server: int
) -> None:
    """``connect_timeout`` is kept while libpq is waited on in Python: one line, exit 1."""
    import time

    url = f"postgresql+psycopg://shop@127.0.0.1:{silent_server}/shop?connect_timeout=2"
    started = time.monotonic()
    run = _quiet_run(tmp_path, url)
    _, err = run.communicate(timeout=60)
    took = time.monotonic() - started
    assert run.returncode == 1, err
    assert err.strip() == (
        "error: store unavailable: the database server cannot be reached (connection timeout "
        "expired)"
    )
    assert 2 <= took < 10, took


def test_a_quiet_run_connecting_to_a_silent_server_stops_at_once_on_sigterm(
    tmp_path: Path, silent_server: int
) -> None:
    """Where no ``connect_timeout`` is set the connection waits up to 130 s (psycopg's): a stop
    signal still ends the run within the second."""
    import signal
    import time

    run = _quiet_run(tmp_path, f"postgresql+psycopg://shop@127.0.0.1:{silent_server}/shop")
    try:
        time.sleep(1.5)  # started, and waiting for the server's first answer
        assert run.poll() is None, run.communicate()
        sent = time.monotonic()
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 143, err
    assert took < 3, (took, err)
