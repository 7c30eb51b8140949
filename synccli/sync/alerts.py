"""The merchant told once: a connection that needs re-authorisation, whichever job found it."""

from __future__ import annotations

from datetime import datetime

from synccli import notify
from synccli.store.connections import flag_reauth_needed
from synccli.store.db import Store
from synccli.store.models import Connection


def flag_reauth(
    store: Store,
    connection: Connection,
    reason: str,
    now: datetime,
    *,
    mailer: notify.Mailer | None = None,
) -> notify.Delivery:
    """Flag the connection as needing re-authorisation and email the merchant once: once per
    authorisation (the key changes when the credentials or tokens are next renewed)."""
    since = flag_reauth_needed(store, connection.id, reason)
    if since is None:
        return notify.Delivery(recorded=False)
    key = f"reauth:{connection.id}:{since}"
    return notify.send_once(
        store, connection, key, notify.reauth_email(connection, reason), now, mailer=mailer
    )
