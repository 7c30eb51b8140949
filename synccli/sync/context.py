"""Wiring for jobs: build a connection's connector over the store-backed ledger and token store,
hold the job's lease, and record the run.

Every job function takes a :class:`JobContext` and returns a report (a dataclass); the CLI renders
it. ``run_job`` is the one place where a run row is opened and closed, so every invocation is
recorded with its outcome, counts and calls, whatever happens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from synccli import fmt, registry
from synccli.clock import CLOCK_TOLERANCE, Clock, SystemClock
from synccli.connectors.base import Connector, Limits
from synccli.errors import (
    AuthError,
    ConfigError,
    ExitCode,
    LeaseBusy,
    LeaseLost,
    ReauthRequired,
    SyncError,
    TransientError,
)
from synccli.logs import bind
from synccli.outcomes import outcome_of
from synccli.progress import QUIET, ProgressObserver
from synccli.store.connections import StoreTokenStore, credentials
from synccli.store.connections import sandbox_time_scale as stored_time_scale
from synccli.store.db import Store
from synccli.store.ledger import StoreLedger
from synccli.store.models import Connection
from synccli.store.reference import keep_lists, kept_lists
from synccli.store.runs import (
    acquire_lease,
    finish_run,
    hold_lease,
    owner_id,
    ran_ok_between,
    release_lease,
    renew_lease,
    run_owner,
    start_run,
)
from synccli.sync.alerts import flag_reauth

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("synccli.job")
R = TypeVar("R")


def _seconds_setting(name: str, default: str) -> timedelta:
    text = os.environ.get(name, default)
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 7 * 86400:
        raise ConfigError(f"{name} must be a number of seconds, got {text!r}")
    return timedelta(seconds=seconds)


def lease_ttl() -> timedelta:
    """How long a run's lease lasts before another run may take it over (renewed every page)."""
    return _seconds_setting("SYNC_LEASE_SECONDS", "900")


def claim_ttl() -> timedelta:
    """How long a worker's claim on one invoice job lasts before another run may take the job
    over (``SYNC_CLAIM_SECONDS``, default 10 minutes). The worker renews it before every write it
    makes for the job, and one write may wait at most half of it (:data:`WRITE_WAIT_SHARE`)."""
    return _seconds_setting("SYNC_CLAIM_SECONDS", "600")


# The share of a claim that one write may spend in retries and Retry-After waits: the claim is
# renewed right before the write is sent, so the write ends well within it.
WRITE_WAIT_SHARE = 0.5


def provider_of(provider: str) -> registry.Provider:
    """A stored connection's provider; an unknown one (a hand-edited row) is a config error."""
    if provider not in registry.names():
        raise ConfigError(
            f"unknown provider {provider!r} in the store: "
            f"choose one of {', '.join(registry.names())}"
        )
    return registry.get(provider)


def connector_module(provider: str) -> Any:
    """The connector module of a provider (an unknown one is a config error)."""
    return provider_of(provider).module()


def build_connector(
    store: Store,
    conn: Connection,
    *,
    clock: Clock,
    run_id: int | None = None,
    reserve: int = 0,
    dry_run: bool = False,
    time_scale: float = 1.0,
    pace: bool = True,
    timeout: tuple[float, float] = (5.0, 30.0),
) -> Connector:
    """The connector for ``conn``, its calls counted in the store's ledger."""
    provider = provider_of(conn.provider)
    module = provider.module()
    creds = credentials(store, conn)
    never_authorised(conn, creds)
    limits = provider.limits
    ledger = StoreLedger(
        store, conn.id, limits, run_id=run_id, reserve=reserve, read_only=dry_run, name=conn.name
    )
    settings = dict(conn.settings)
    return module.connect(
        settings,
        creds,
        token_store=StoreTokenStore(store, conn.id),
        ledger=ledger,
        clock=clock,
        time_scale=sandbox_time_scale(store, conn) or time_scale,
        pace=pace,
        timeout=timeout,
    )


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def sandbox_time_scale(store: Store, conn: Connection) -> float | None:
    """The speed-up of the simulator ``conn`` points at, or None: pace as normal.

    Only the sandbox harness stores one (``SandboxClock``, no setting), and it counts only while
    the connection points at this machine: a connection re-pointed at a provider's host is
    paced as normal whatever the store holds."""
    host = urlsplit(str((conn.settings or {}).get("base_url") or "")).hostname
    if host not in LOOPBACK:
        return None
    return stored_time_scale(store, conn.id)


class NeverAuthorised(ReauthRequired):
    """Set up, never authorised: the operator's next step, not a merchant's dead token (so no
    re-authorisation email)."""


def never_authorised(conn: Connection, creds: dict[str, Any]) -> None:
    """An OAuth connection that has never been through ``connections authorize`` stops here,
    with one message and exit 5 on every provider, before any call (Xero would otherwise say
    its tenant is missing, Lightspeed that its token was refused)."""
    if not provider_of(conn.provider).authorises(conn.settings or {}):
        return
    if not creds.get("access_token") and not creds.get("refresh_token"):
        raise NeverAuthorised(
            f"connection {conn.name} has never been authorised: "
            f"run `synccli connections authorize {conn.name}`"
        )


def shown_stamp(provider: str, value: datetime | None) -> datetime | dict[str, int] | None:
    """A stored cursor or record stamp of a provider's as reports show it
    (:meth:`Capabilities.shown_stamp`); a provider without a connector: the instant as kept."""
    try:
        return provider_of(provider).capabilities.shown_stamp(value)
    except (ConfigError, ImportError):
        return value


def limits_of(provider: str) -> Limits:
    """A stored connection's provider's limits (an unknown provider is a config error)."""
    return provider_of(provider).limits


def connector_class(provider: str) -> type[Connector]:
    """The connector class of a provider, by name."""
    return provider_of(provider).connector


@dataclass
class JobContext:
    store: Store
    connection: Connection
    clock: Clock = field(default_factory=SystemClock)
    dry_run: bool = False
    run_id: int | None = None
    reserve: int = 0
    connector_factory: Callable[[JobContext], Connector] | None = None
    counts: Any = None  # the job's report, saved on the run row
    # told how far a long job has got, and of rate-limit waits (the CLI's progress line)
    progress: ProgressObserver = QUIET
    # the running job's name (``jobs.Job``): the lease a heartbeat renews is this job's own,
    # whichever job's code (a shared stream runner, say) is doing the work
    job: str = ""
    # who holds the job's lease for this run (``job_run``'s); "": no lease to fence writes with
    owner: str = ""
    _connector: Connector | None = None
    _renewed: datetime | None = None  # the last lease renewal

    @property
    def connector(self) -> Connector:
        if self._connector is None:
            if self.connector_factory is not None:
                self._connector = self.connector_factory(self)
            else:
                self._connector = build_connector(
                    self.store,
                    self.connection,
                    clock=self.clock,
                    run_id=self.run_id,
                    reserve=self.reserve,
                    dry_run=self.dry_run,
                )
            self._observe(self._connector)
            self._prime(self._connector)
        return self._connector

    def _prime(self, connector: Connector) -> None:
        """Hand the connector the lists an earlier run of any job kept (a day at most), so that
        no job reads them again: each job reading its own cost X-Series 5 calls a pull."""
        with self.store.session() as s:
            for name, value in kept_lists(s, self.connection.id, self.clock.now()).items():
                connector.prime(name, value)

    def keep_reference_lists(self) -> None:
        """Store the lists this run read afresh, for the next runs of every job."""
        if self._connector is None or self.dry_run:
            return
        fresh = self._connector.reference_lists()
        if fresh:
            with self.store.session() as s:
                keep_lists(s, self.connection.id, fresh, self.clock.now())

    def _observe(self, connector: Connector) -> None:
        http = getattr(connector, "http", None)
        if http is not None and hasattr(http, "observer"):
            http.observer = self.progress  # its rate-limit waits reach the same observer

    @contextmanager
    def observed(self, progress: ProgressObserver) -> Iterator[ProgressObserver]:
        """Within this block the job and its connector's HTTP layer report to ``progress``."""
        before = self.progress
        self.progress = progress
        if self._connector is not None:
            self._observe(self._connector)
        try:
            yield progress
        finally:
            self.progress = before
            if self._connector is not None:
                self._observe(self._connector)

    @property
    def calls(self) -> int:
        return self._connector.http.calls if self._connector is not None else 0

    @contextmanager
    def calls_deferred(self) -> Iterator[None]:
        """Record this block's calls without waiting for the store's write lock (see
        ``StoreLedger.deferred``); all are written when it ends."""
        deferred = getattr(getattr(self.connector, "http", None), "ledger", None)
        if not isinstance(deferred, StoreLedger):
            yield
            return
        with deferred.deferred():
            yield

    @contextmanager
    def fenced(self, fence: Callable[[], None], claim: timedelta) -> Iterator[None]:
        """Within this block every write the connector sends is preceded by ``fence()`` (which
        raises ClaimLost once the claim is gone), and none waits longer than its share of
        ``claim`` in retries and Retry-After sleeps (see ``HttpClient.fence``)."""
        http = getattr(self.connector, "http", None)
        if http is None or self.dry_run:
            yield
            return
        before = http.fence, http.write_wait
        http.fence, http.write_wait = fence, claim.total_seconds() * WRITE_WAIT_SHARE
        try:
            yield
        finally:
            http.fence, http.write_wait = before

    def heartbeat(self) -> None:
        """Extend the running job's lease during long runs: at most once a tenth of its lifetime.

        Jobs call this every page; a 500-page pull renewing 500 times spent a transaction a
        page on it. A tenth of the lease is still nine tenths of margin before it could lapse.
        A write's fence renews it too (a pull's batch), and counts as a renewal here. A dry run
        holds no lease, nor does a context no job run opened."""
        if self.dry_run or not self.job or not self.owner:
            return
        now, ttl = self.clock.now(), lease_ttl()
        last = self._renewed
        if last is not None and last <= now < last + ttl / 10:
            return
        renew_lease(self.store, self.job, self.connection.id, now, ttl, self.owner)
        self._renewed = now

    def fence(self, s: Session) -> None:
        """In a transaction that writes what the job read from the provider, before its writes:
        renew the run's lease, or raise LeaseLost once another run holds it (the transaction is
        then rolled back, having written nothing). One statement on the lease row, which orders
        this transaction against a takeover (``store.runs.hold_lease``): a run that stalled past
        its lease and was taken over never writes what it read before the stall."""
        if self.dry_run or not self.job or not self.owner:
            return
        now = self.clock.now()
        if not hold_lease(s, self.job, self.connection.id, self.owner, now, lease_ttl()):
            raise LeaseLost(
                f"the {self.job} lease ran out while this run was stalled and was taken over "
                "by another run: nothing more written (that run has the job now)"
            )
        self._renewed = now

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A transaction that writes, fenced by the run's lease (see :meth:`fence`)."""
        with self.store.session() as s:
            self.fence(s)
            yield s


class AlreadyDone(LeaseBusy):
    """Another process already did this round's work for the connection (``--all``)."""


def _done_since(store: Store, job: str, connection_id: int, since: datetime, now: datetime) -> bool:
    return ran_ok_between(store, job, connection_id, since, now + CLOCK_TOLERANCE)


@contextmanager
def job_run(
    store: Store,
    job: str,
    conn: Connection,
    *,
    clock: Clock | None = None,
    dry_run: bool = False,
    lease: bool = True,
    connector_factory: Callable[[JobContext], Connector] | None = None,
    reserve: int = 0,
    round_start: datetime | None = None,
) -> Iterator[JobContext]:
    """Hold the (job, connection) lease, record a run row, and close it with the outcome.

    With ``round_start`` (``--all``: several hosts share the connections), a connection whose job
    another process finished after this round began is skipped (``AlreadyDone``): the job runs
    once a round, not once per host. A dry run takes no lease and writes no run row.
    """
    clock = clock or SystemClock()
    owner = run_owner()  # this run's own: another run, of this process too, is another holder
    # Configuration first: a bad provider name, an unreadable secret or lease setting is exit 2
    # with nothing written (no lease, no run row).
    connector_module(conn.provider)
    credentials(store, conn)
    ttl = lease_ttl()
    claim_ttl()  # checked here too, so a bad value is refused before any run is recorded
    if dry_run:
        dry = JobContext(store, conn, clock, True, None, reserve, connector_factory, job=job)
        dry_outcome: BaseException | None = None
        try:
            yield dry
        except BaseException as err:
            dry_outcome = err
            raise
        finally:
            _log_run_end(job, conn.name, None, dry_outcome, dry.counts, dry.calls, dry_run=True)
        return
    if lease:
        acquire_lease(store, job, conn.id, clock.now(), ttl, owner)
        if round_start is not None and _done_since(store, job, conn.id, round_start, clock.now()):
            release_lease(store, job, conn.id, owner)
            raise AlreadyDone(f"{job} already ran in this round")
    run_id = start_run(store, job, conn.id, clock.now(), owner)
    ctx = JobContext(
        store,
        conn,
        clock,
        False,
        run_id,
        reserve,
        connector_factory,
        job=job,
        owner=owner if lease else "",
    )
    counts: Any  # the job's report, or its plain form
    outcome, error, counts = "ok", None, {}
    raised: BaseException | None = None
    try:
        with bind(run_id=run_id, job=job, connection=conn.name):
            yield ctx
        counts = ctx.counts or {}
    except SyncError as err:
        outcome = run_outcome(err)
        error = err.message
        counts = ctx.counts or {}
        raised = err
        if isinstance(err, AuthError) and not isinstance(err, NeverAuthorised):
            _tell_merchant(store, conn, err, clock)
        raise
    except BaseException as err:
        outcome, error, raised = run_outcome(err), f"{err.__class__.__name__}: {err}", err
        raise
    finally:
        try:
            ctx.keep_reference_lists()
        except Exception:  # never hide the run's own outcome behind the lists it kept
            log.exception("could not keep the provider's reference lists")
        finish_run(store, run_id, clock.now(), outcome, run_counts(counts), ctx.calls, error)
        if lease:
            release_lease(store, job, conn.id, owner)
        _log_run_end(job, conn.name, run_id, raised, counts, ctx.calls)


def run_outcome(err: BaseException | None) -> str:
    """The outcome a run row records for how the job ended (the table in synccli.outcomes)."""
    return "ok" if err is None else outcome_of(err).run_outcome


def run_exit_code(err: BaseException | None) -> int:
    """The exit code this run alone would give the process (``--all``: the worst one wins)."""
    return 0 if err is None else outcome_of(err).exit_code


def _log_run_end(
    job: str,
    connection: str,
    run_id: int | None,
    err: BaseException | None,
    counts: Any,
    calls: int,
    *,
    dry_run: bool = False,
) -> None:
    """One record closes every run, for cron's log: job, connection, run id (bound), outcome,
    the report's counts (its numbers, not its lists), calls and the exit code."""
    outcome, code = run_outcome(err), run_exit_code(err)
    if code == 0 and getattr(counts, "email_failures", None):
        code = int(ExitCode.UNNOTIFIED)  # the merchant was not told: the CLI exits 6
    plain = run_counts(counts) if counts else {}
    numbers = {
        k: v
        for k, v in (plain.items() if isinstance(plain, dict) else ())
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    fields = {
        "outcome": outcome,
        "counts": numbers,
        "calls": calls,
        "exit_code": code,
        "dry_run": dry_run,
    }
    with bind(run_id=run_id, job=job, connection=connection):
        log.info(
            "run %s ended: %s, exit %d, %d call(s)%s",
            run_id if run_id is not None else "(dry run)",
            outcome,
            code,
            calls,
            "".join(f", {k} {v}" for k, v in numbers.items() if k not in ("calls",)),
            extra={"fields": fields},
        )


def _tell_merchant(store: Store, conn: Connection, err: AuthError, clock: Clock) -> None:
    """Whichever job finds the connection's authorisation dead, the merchant is emailed once
    (post-invoices has done it already; the email's key makes this a no-op then)."""
    try:
        delivery = flag_reauth(store, conn, err.message, clock.now())
    except Exception:  # never hide the run's own outcome behind an email problem
        log.exception("could not record the re-authorisation email")
        return
    if delivery.recorded and not delivery.sent:
        log.error("the merchant was not emailed about it: %s", delivery.error)


_PLAIN_TYPES = frozenset({int, float, str, bool, type(None)})  # kept as they are, no call
# A run row's counts stay small whatever the run did: a first pull's report lists 100,000
# changes (a 3.7 MB document written, and walked twice, at the end of the run), but the changes
# themselves are rows of ``events``. A list keeps its first entries, and ``truncated`` says how
# long it was.
RUN_COUNTS_BYTES = 64 * 1024
RUN_LIST_KEEP = 100


def run_counts(report: Any) -> Any:
    """``report`` as a run row keeps it: plain values, each list cut to its first entries so the
    whole stays within RUN_COUNTS_BYTES (``truncated``: list name -> its full length)."""
    keep = RUN_LIST_KEEP
    while True:
        plain = _plain(_cut(report, keep))
        if keep == 0 or len(json.dumps(plain, default=str)) <= RUN_COUNTS_BYTES:
            return plain
        keep //= 2  # long entries (error messages): fewer of them


def _cut(report: Any, keep: int) -> Any:
    """A dataclass report or a dict with every top-level list longer than ``keep`` cut to
    ``keep`` entries, and their lengths under ``truncated``; anything else as it is."""
    if is_dataclass(report) and not isinstance(report, type):
        items = {name: getattr(report, name) for name in _field_names(type(report))}
    elif isinstance(report, dict):
        items = dict(report)
    else:
        return report
    long = {k: len(v) for k, v in items.items() if isinstance(v, (list, tuple)) and len(v) > keep}
    if not long:
        return items
    cut = {k: (v[:keep] if k in long else v) for k, v in items.items()}
    return {**cut, "truncated": {**(cut.get("truncated") or {}), **long}}


def _plain(value: Any) -> Any:
    # The run row's counts: a first pull's report holds 100,000 changes, so plain values are
    # kept without a call and dataclasses are walked field by field (``asdict`` deep-copies every
    # value before this walk would convert it again).
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return {
            name: v if type(v := getattr(value, name)) in _PLAIN_TYPES else _plain(v)
            for name in _field_names(type(value))
            if not name.startswith("_")
        }
    if isinstance(value, dict):
        return {
            k: v if type(v) in _PLAIN_TYPES else _plain(v)
            for k, v in value.items()
            if not k.startswith("_")
        }
    if isinstance(value, (list, tuple)):
        return [v if type(v) in _PLAIN_TYPES else _plain(v) for v in value]
    if isinstance(value, Decimal):  # money as the CLI prints numbers: 179.74, not 179.7400
        return fmt.number(value)
    return str(value)


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


CREATE_LOCK_TTL = timedelta(minutes=5)  # a crashed holder's lock is taken over after this
CREATE_LOCK_WAIT = 60.0  # real seconds to wait for another run creating the same record


@contextmanager
def creation_lock(ctx: JobContext, what: str, key: str) -> Iterator[None]:
    """Serialise find-then-create of one record (a product by code, a customer) across runs,
    processes and hosts, so two workers never both create it: a lease row per record. It works
    on SQLite and PostgreSQL alike, and holds no transaction open across the HTTP calls, which
    the call ledger must be free to write meanwhile."""
    if ctx.dry_run:
        yield
        return
    name = f"create-{what}:" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:30]
    owner = f"{owner_id()}:{uuid.uuid4().hex[:8]}"[-100:]
    deadline = time.monotonic() + CREATE_LOCK_WAIT
    while True:
        try:
            acquire_lease(
                ctx.store, name, ctx.connection.id, ctx.clock.now(), CREATE_LOCK_TTL, owner
            )
            break
        except LeaseBusy:
            if time.monotonic() > deadline:
                raise TransientError(
                    f"another run is creating {what} {key!r}; retried next run"
                ) from None
            time.sleep(0.05)
    try:
        yield
    finally:
        release_lease(ctx.store, name, ctx.connection.id, owner)
