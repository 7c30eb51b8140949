"""Runs (one row per job invocation) and leases (one runner per job and connection)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from synccli import fmt, procs
from synccli.errors import LeaseBusy
from synccli.store.db import Store
from synccli.store.models import Lease, Run


def owner_id() -> str:
    """Who holds a lease: host and process, so a support engineer can find it (and, after them,
    what tells a dead holder from a live one: see ``synccli.procs``)."""
    return procs.owner_id()


def run_owner() -> str:
    """Who holds a job run's lease: this process (``owner_id``) and a token of the run's own,
    so that no other run, of this process either, holds it under the same name."""
    return procs.run_owner(uuid.uuid4().hex[:8])


def start_run(
    store: Store, job: str, connection_id: int | None, now: datetime, owner: str | None = None
) -> int:
    """A run row, owned by ``owner`` (the lease's holder; this process by default)."""
    with store.session() as s:
        holder = owner or owner_id()
        run = Run(job=job, connection_id=connection_id, started_at=now, owner=holder, counts={})
        s.add(run)
        s.flush()
        return run.id


def finish_run(
    store: Store,
    run_id: int,
    now: datetime,
    outcome: str,
    counts: dict[str, Any],
    calls: int,
    error: str | None = None,
) -> None:
    with store.session() as s:
        s.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(ended_at=now, outcome=outcome, counts=counts, calls=calls, error=error)
        )


def ran_ok_between(
    store: Store, job: str, connection_id: int, since: datetime, until: datetime
) -> bool:
    """Whether a run of ``job`` for the connection ended successfully between the two times."""
    with store.session() as s:
        found = s.scalar(
            select(Run.id)
            .where(
                Run.connection_id == connection_id,
                Run.job == job,
                Run.outcome == "ok",
                Run.ended_at >= since,
                Run.ended_at <= until,
            )
            .limit(1)
        )
    return found is not None


def last_runs(store: Store, connection_id: int) -> list[Run]:
    """The most recent run of each job for a connection."""
    with store.session() as s:
        newest = (
            select(Run.job, func.max(Run.id).label("id"))
            .where(Run.connection_id == connection_id)
            .group_by(Run.job)
            .subquery()
        )
        return list(s.scalars(select(Run).join(newest, Run.id == newest.c.id).order_by(Run.job)))


def acquire_lease(
    store: Store, job: str, connection_id: int, now: datetime, ttl: timedelta, owner: str
) -> None:
    """Take the lease or raise LeaseBusy. A lease whose holder died is taken over once it has
    expired, or at once when its holder was a process of this host that is gone; the run rows
    the dead holder left open are closed then (outcome ``died``)."""
    expires = now + ttl
    with store.locked() as s:
        lease = s.get(Lease, (job, connection_id), with_for_update=True)
        if lease is None:
            s.add(Lease(job=job, connection_id=connection_id, owner=owner, expires_at=expires))
            try:
                s.flush()
            except IntegrityError:  # another host inserted it between our read and write
                raise LeaseBusy(f"{job} is already running for this connection") from None
            return
        if lease.owner != owner:
            if lease.expires_at > now and not procs.holder_gone(lease.owner):
                raise LeaseBusy(
                    f"{job} is already running for this connection (held by {lease.owner} "
                    f"until {fmt.minute(lease.expires_at)})"
                )
            _close_dead_runs(s, job, connection_id, lease.owner, now)
        lease.owner, lease.expires_at = owner, expires


def _close_dead_runs(s: Any, job: str, connection_id: int, owner: str, now: datetime) -> None:
    s.execute(
        update(Run)
        .where(
            Run.job == job,
            Run.connection_id == connection_id,
            Run.owner == owner,
            Run.ended_at.is_(None),
        )
        .values(
            ended_at=now,
            outcome="died",
            error="its process ended without closing the run (lease taken over)",
        )
    )


def renew_lease(
    store: Store, job: str, connection_id: int, now: datetime, ttl: timedelta, owner: str
) -> None:
    with store.session() as s:
        s.execute(
            update(Lease)
            .where(Lease.job == job, Lease.connection_id == connection_id, Lease.owner == owner)
            .values(expires_at=now + ttl)
        )


def hold_lease(
    s: Session, job: str, connection_id: int, owner: str, now: datetime, ttl: timedelta
) -> bool:
    """Renew ``owner``'s lease for ``ttl`` in the caller's transaction, where ``owner`` still
    holds it; answers whether it does. A fence for the writes made in that transaction: one who
    takes a lease over changes its owner in a transaction of its own (``acquire_lease``), which
    this statement's row lock orders before or after this one (SQLite: one writer at a time),
    so writes committed with a True answer were made while no one else held the lease. One that
    ran out while its holder stalled, but that no one took, is still its holder's."""
    renewed = s.execute(
        update(Lease)
        .where(Lease.job == job, Lease.connection_id == connection_id, Lease.owner == owner)
        .values(expires_at=now + ttl)
        .returning(Lease.job)
    )
    return renewed.first() is not None


def release_lease(store: Store, job: str, connection_id: int, owner: str) -> None:
    with store.session() as s:
        s.execute(
            delete(Lease).where(
                Lease.job == job, Lease.connection_id == connection_id, Lease.owner == owner
            )
        )


def holds_lease(store: Store, run: Run, now: datetime) -> bool:
    """Whether ``run``'s process still holds its job's lease (a running row without one is a
    dead run's)."""
    if run.connection_id is None or run.owner is None:
        return False
    with store.session() as s:
        lease = s.get(Lease, (run.job, run.connection_id))
    return (
        lease is not None
        and lease.owner == run.owner
        and lease.expires_at > now
        and not procs.holder_gone(lease.owner)
    )


def leases_of(store: Store, connection_id: int) -> list[Lease]:
    """The leases held on ``connection_id``'s jobs now (running, or left by a run that died)."""
    with store.session() as s:
        return list(
            s.scalars(select(Lease).where(Lease.connection_id == connection_id).order_by(Lease.job))
        )
