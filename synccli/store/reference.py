"""Provider lists kept between runs (see :class:`~synccli.store.models.ReferenceList`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from synccli.store.models import ReferenceList

# A kept list older than this is read again even when nothing put it in doubt: a category
# renamed in the provider is then picked up within a day at worst.
MAX_AGE = timedelta(hours=24)


def kept_lists(
    s: Session, connection_id: int, now: datetime, max_age: timedelta = MAX_AGE
) -> dict[str, dict[str, Any]]:
    """The connection's kept lists read within ``max_age``, by name."""
    rows = s.scalars(
        select(ReferenceList).where(
            ReferenceList.connection_id == connection_id,
            ReferenceList.fetched_at >= now - max_age,
        )
    )
    return {row.name: row.value for row in rows}


def keep_lists(
    s: Session, connection_id: int, lists: dict[str, dict[str, Any]], now: datetime
) -> None:
    """Store lists a run read afresh, replacing older copies."""
    for name, value in lists.items():
        row = s.get(ReferenceList, (connection_id, name))
        if row is None:
            s.add(
                ReferenceList(connection_id=connection_id, name=name, value=value, fetched_at=now)
            )
        else:
            row.value, row.fetched_at = value, now
