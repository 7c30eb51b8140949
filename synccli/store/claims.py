"""Claims on invoice jobs, re-asserted (fencing).

A claim (``invoice_jobs.claimed_by`` / ``claimed_until``) is a promise that can expire while its
holder is stalled (a stopped process, a long Retry-After, a swapped-out host), after which another
run may take the job over. So a holder re-asserts it right before each write to the provider and
in each final state write: one conditional statement on its own claim id and an unexpired claim,
which also renews it. A holder that finds it gone stops and leaves the job alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from synccli.store.db import Store
from synccli.store.models import InvoiceJob

# a job in any other state has no live claim; ``waiting``: a refund whose order is not posted yet;
# ``paying``: its invoice is posted, its payments remain
HELD_STATES = ("pending", "posting", "paying", "failed", "waiting")


def _held(job_ids: Iterable[int], worker: str, now: datetime) -> Any:
    return (
        InvoiceJob.id.in_(list(job_ids)),
        InvoiceJob.claimed_by == worker,
        InvoiceJob.claimed_until > now,
        InvoiceJob.state.in_(HELD_STATES),
    )


def reassert(
    store: Store, job_ids: Iterable[int], worker: str, now: datetime, ttl: timedelta
) -> set[int]:
    """Renew ``worker``'s claims on ``job_ids`` for ``ttl`` where it still holds them (its own
    claim id, not yet expired). Returns the ids whose claim it no longer holds."""
    ids = set(job_ids)
    if not ids:
        return set()
    with store.session() as s:
        renewed = s.scalars(
            update(InvoiceJob)
            .where(*_held(ids, worker, now))
            .values(claimed_until=now + ttl)
            .returning(InvoiceJob.id)
        )
        return ids - set(renewed)


def held_job(s: Session, job_id: int, worker: str, now: datetime) -> InvoiceJob | None:
    """The job row, locked for this transaction, while ``worker`` still holds its claim; None
    once it does not (the caller then writes nothing to it)."""
    return s.scalar(
        select(InvoiceJob)
        .where(*_held([job_id], worker, now))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
