"""Running a job from the CLI over one connection or all of them: leases, run rows, exit codes.

With ``--all``, a connection whose lease another process holds, or whose job another process
already ran this round, is skipped (several cron hosts share the connections between them): one
line says so, and ``--json`` has an entry with ``skipped``. With ``--connection``, a busy lease
is exit code 4.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from synccli import secrets
from synccli.cli import output
from synccli.cli.state import state
from synccli.clock import CLOCK_TOLERANCE, SystemClock
from synccli.errors import ExitCode, LeaseBusy, SyncError, UsageError
from synccli.logs import bind
from synccli.outcomes import outcome_of

if TYPE_CHECKING:
    from synccli.store.db import Store
    from synccli.store.models import Connection
    from synccli.sync.context import JobContext

log = logging.getLogger("synccli.job")
R = TypeVar("R")

# When several connections fail differently, the most actionable code wins.
_PRIORITY = [
    ExitCode.REAUTH,
    ExitCode.BUDGET,
    ExitCode.USAGE,
    ExitCode.FAILURE,
    ExitCode.UNNOTIFIED,
    ExitCode.BUSY,
]


def round_slack() -> timedelta:
    """How long before this ``--all`` run began another host's finished run still counts as this
    round's (``SYNC_MIN_INTERVAL``, default 30; cron rounds lie minutes apart)."""
    text = os.environ.get("SYNC_MIN_INTERVAL", "30")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86400:
        raise UsageError(f"SYNC_MIN_INTERVAL must be a number of seconds, got {text!r}")
    return timedelta(seconds=seconds)


CONNECTION_OPT = typer.Option([], "--connection", "-c", help="Connection name (repeatable).")
ALL_OPT = typer.Option(False, "--all", help="Every connection.")
DRY_RUN_OPT = typer.Option(
    False, "--dry-run", help="Read from the provider, show what would change, write nothing."
)
JSON_OPT = typer.Option(False, "--json", help="JSON output.")


def select_connections(
    store: Store, names: list[str], all_: bool, *, offer_all: bool = False
) -> list[Connection]:
    """The named connections, all of them (``all_``), or the only one. ``offer_all``: the
    command has ``--all``, so the hint may suggest it."""
    if all_ and not store.has_connections():
        return []  # a store with none to serve: no mapped class is needed to say so
    from sqlalchemy import select

    from synccli.store.models import Connection

    with store.session() as s:
        conns = list(s.scalars(select(Connection).order_by(Connection.name)))
    if all_:
        return conns
    if not names:
        if len(conns) == 1:
            return conns
        if not conns:
            raise UsageError(
                "no connections yet: add one with `synccli connections add NAME --provider ...`"
            )
        known = ", ".join(c.name for c in conns)
        alternative = ", or use --all" if offer_all else ""
        raise UsageError(f"name a connection with -c NAME ({known}){alternative}")
    by_name = {c.name: c for c in conns}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise UsageError(f"no connection named {missing[0]!r} (see `synccli connections list`)")
    return [by_name[n] for n in names]


@dataclass
class Outcome:
    connection: str
    report: Any = None
    error: str | None = None
    code: int = 0
    skipped: str | None = None  # why --all left this connection alone


def _unnotified(conn: Connection, report: Any) -> int:
    """Print (under -q too) what the merchant should have been told by email and was not: a
    refused invoice nobody hears of is a failure (exit 6), not a count of emails."""
    failures = getattr(report, "email_failures", None) or []
    for failure in failures:
        output.error_line(f"{conn.name}: {failure}")
    return int(ExitCode.UNNOTIFIED) if failures else 0


def _internal(exc: Exception) -> str:
    """One line for an error none of our classes describes (the first line only: never the SQL
    statement and its parameters that a database error carries on the next lines)."""
    first = (str(exc).splitlines() or [""])[0][:300]
    return f"internal error: {exc.__class__.__name__}: {first}"


def run_for_connections(
    ctx: typer.Context,
    job: str,
    names: list[str],
    all_: bool,
    dry_run: bool,
    work: Callable[[JobContext], R],
    render: Callable[[Connection, R], None] | None = None,
    json_out: bool = False,
    nothing_due: Callable[[str], dict[str, Any]] | None = None,
) -> list[Outcome]:
    """Run ``work`` for each selected connection; render each report; exit with the worst code.

    Each connection's report is printed as soon as its run ends (``--json``: one object of the
    array a connection) and not kept: memory stays that of one connection's run, however many
    connections there are (the returned outcomes carry no report).

    ``nothing_due`` (post-invoices): with ``--all``, a connection one query finds nothing to do
    for is not run: a finished run row records this report of it, and "nothing due" is said,
    without SQLAlchemy, a lease or its connector (see ``store.idle`` and :func:`_quick_round`)."""
    st = state(ctx)
    outcomes: list[Outcome] = []
    # Hosts that cron starts "at once" start seconds apart: a run another host finished shortly
    # before this one began belongs to the same round.
    round_start = SystemClock().now() - round_slack() if all_ else None
    offer_all = any(p.name == "all_" for p in ctx.command.params)
    quick = None
    if all_ and not dry_run and nothing_due is not None:
        quick = _quick_round(st, job, round_start, nothing_due)
    conns: list[Connection | _Idle]
    idle: dict[int, tuple[int, dict[str, Any]] | None] = {}
    store: Store | None = None  # opened, and its schema checked, once: for the connections that run
    if quick is None:
        store = st.store()
        conns = list(select_connections(store, names, all_, offer_all=offer_all))
    else:
        conns, idle = quick
        if any(not isinstance(c, _Idle) for c in conns):
            store = st.store(check=False)  # _quick_round opened and checked it
    stream = output.JsonArray() if json_out else None
    say = not json_out and not st.quiet  # the human report and notes
    show = render if say else None
    try:
        for conn in conns:
            with bind(job=job, connection=conn.name):
                if isinstance(conn, _Idle):
                    outcome = _nothing_due(job, conn, idle, say)
                else:
                    assert store is not None
                    outcome = _run_one(
                        st, store, job, conn, all_, dry_run, round_start, work, show, say
                    )
            if stream is not None:
                stream.add(
                    {
                        "connection": outcome.connection,
                        "skipped": outcome.skipped,
                        "error": outcome.error,
                        "report": outcome.report,
                    }
                )
            outcome.report = None
            outcomes.append(outcome)
    finally:
        if stream is not None:
            stream.close()
    codes = {o.code for o in outcomes if o.code}
    if codes:
        worst = next(int(c) for c in _PRIORITY if int(c) in codes)
        raise typer.Exit(worst)
    return outcomes


@dataclass
class _Idle:
    """A connection a run would find nothing to do for."""

    id: int
    name: str


def _quick_round(
    st: Any, job: str, round_start: datetime | None, report: Callable[[str], dict[str, Any]]
) -> tuple[list[Connection | _Idle], dict[int, tuple[int, dict[str, Any]] | None]] | None:
    """Every connection by name, found through the store's driver alone (``store.quick``):
    those with something to do as the ORM's, the rest as :class:`_Idle`, their finished run rows
    written together (one write transaction, as soon as the query found them idle) unless
    another host's run already ended well this round (``job_run``'s round rule). Beside them,
    by idle connection id, its run id and report, or None when it is left alone.

    SQLAlchemy and the mapped classes are imported only when some connection has work. None:
    the store is not one the driver alone opens (an unusual URL, no SQLite file, a schema not
    at the code's version), and the command opens it as every other does, which says why."""
    from synccli.store.idle import post_invoices_work, record_nothing_due
    from synccli.store.quick import QuickStore
    from synccli.store.revision import head_revision

    quick = QuickStore.open(st.settings.database_url, st.settings.lock_timeout)
    if quick is None:
        return None
    try:
        if quick.versions() != [head_revision()]:
            return None
        found = post_invoices_work(quick, job, SystemClock().now())
        busy = {i for i, _, work in found if work}
        loaded: dict[int, Connection] = {}
        if busy:
            from sqlalchemy import select

            from synccli.store.models import Connection

            with st.store().session() as s:
                chosen = select(Connection).where(Connection.id.in_(busy))
                loaded = {c.id: c for c in s.scalars(chosen)}
        # a connection added between the two queries is left to the next run
        conns: list[Connection | _Idle] = [
            loaded[i] if i in busy else _Idle(i, name)
            for i, name, _ in found
            if i in loaded or i not in busy
        ]
        counts = {c.id: report(c.name) for c in conns if isinstance(c, _Idle)}
        if not counts:
            return conns, {}
        now = SystemClock().now()
        window = None if round_start is None else (round_start, now + CLOCK_TOLERANCE)
        written = record_nothing_due(quick, job, counts, now, window)
        return conns, {i: (written[i], counts[i]) if i in written else None for i in counts}
    finally:
        quick.close()


def _nothing_due(
    job: str, conn: _Idle, recorded: dict[int, tuple[int, dict[str, Any]] | None], say: bool
) -> Outcome:
    """The outcome of a run with nothing to do (its run row written by :func:`_quick_round`, so
    ``status`` shows when the queue was last looked at): skipped when another host's run
    already ended well this round."""
    row = recorded[conn.id]
    if row is None:
        message = f"{job} already ran in this round"
        log.info("skipped: %s", message)
        if say:
            output.line(f"{conn.name}: skipped: {message}")
        return Outcome(conn.name, skipped=message)
    run_id, counts = row
    numbers = {k: v for k, v in counts.items() if type(v) in (int, float)}
    fields = {"outcome": "ok", "counts": numbers, "calls": 0, "exit_code": 0, "dry_run": False}
    # the record that closes every run (sync.context._log_run_end), so cron's log reads an idle
    # run as it reads any other: its run id, outcome ok, no call
    with bind(run_id=run_id):
        log.info(
            "run %s ended: ok, exit 0, 0 call(s): %s: nothing due",
            run_id,
            job,
            extra={"fields": fields},
        )
    if say:
        output.line(f"{conn.name}: nothing due")
    return Outcome(conn.name, counts)


def _run_one(
    st: Any,
    store: Store,
    job: str,
    conn: Connection,
    all_: bool,
    dry_run: bool,
    round_start: datetime | None,
    work: Callable[[JobContext], R],
    render: Callable[[Connection, R], None] | None,
    say: bool,
) -> Outcome:
    """One connection's run and its outcome; ``render`` shows its report (None: not shown),
    ``say``: whether a skipped connection is said to be."""
    # the jobs' machinery (connectors, HTTP), once there is a job to run
    from synccli.sync.context import job_run

    jc: JobContext | None = None
    try:
        with job_run(
            store, job, conn, clock=SystemClock(), dry_run=dry_run, round_start=round_start
        ) as jc:
            report = work(jc)
            jc.counts = report
        if render is not None:
            render(conn, report)
        return Outcome(conn.name, report, code=_unnotified(conn, report))
    except LeaseBusy as err:
        if all_:
            log.info("skipped: %s", err.message)
            if say:
                output.line(f"{conn.name}: skipped: {err.message}")
            return Outcome(conn.name, skipped=err.message)
        output.error_line(f"{conn.name}: {err.message}")
        return Outcome(conn.name, None, err.message, outcome_of(err).exit_code)
    except SyncError as err:
        output.error_line(f"{conn.name}: {err.message}")
        if jc is not None:
            _unnotified(conn, jc.counts)
        return Outcome(conn.name, None, err.message, outcome_of(err).exit_code)
    except Exception as exc:  # a bug or a surprise in one connection: the others still run
        message = _internal(exc)
        output.error_line(f"{conn.name}: {message}")
        if st.verbosity > 0:
            sys.stderr.write(secrets.redact(traceback.format_exc()))
        return Outcome(conn.name, None, message, outcome_of(exc).exit_code)
