"""The normalised form of one pushed change, whatever the provider's payload looked like."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

STREAMS = ("products", "stock", "customers", "invoices", "sales")


@dataclass(frozen=True)
class WebhookEvent:
    """One change of one entity, as a provider pushed it.

    ``version`` orders two changes of the same entity where the provider gives an order
    (X-Series' ``version``), else it is the event's time in ISO form. ``record`` is the changed
    record when the payload carries it (applied without an API call), else None (the id is a
    hint for the next pull). ``dedup_key`` is the same for a provider's retry of this event and
    different for any other event of the connection."""

    provider: str
    connection_id: int
    stream: str
    entity_id: str
    version: str | None
    occurred_at: datetime
    record: dict[str, Any] | None
    dedup_key: str
    # the key is the payload's digest (it has no version and no time): the same payload again
    # is a retry, or the record changed back to what it was (stock 10 -> 7 -> 10)
    by_payload: bool = False
