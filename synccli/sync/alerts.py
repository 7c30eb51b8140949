"""The merchant told once: a connection that needs re-authorisation, whichever job found it."""

from __future__ import annotations

from datetime import datetime

from synccli import notify
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
    with store.locked() as s:
        conn = s.get(Connection, connection.id)
        if conn is None:
            return notify.Delivery(recorded=False)
        conn.needs_reauth = True
        conn.reauth_reason = reason[:1000]
        since = conn.updated_at.isoformat() if conn.updated_at else "never"
    key = f"reauth:{connection.id}:{since}"
    return notify.send_once(
        store, connection, key, notify.reauth_email(connection, reason), now, mailer=mailer
    )
