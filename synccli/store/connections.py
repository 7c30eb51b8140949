"""Connections: one merchant's account at one provider, with its credentials encrypted at rest."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from synccli import fmt, mailsafe, procs, registry, secrets
from synccli.connectors.auth import Tokens
from synccli.errors import LeaseBusy, TransientError, UsageError
from synccli.store.claims import HELD_STATES
from synccli.store.db import Store
from synccli.store.models import Connection, InvoiceJob, Lease, SandboxClock
from synccli.store.runs import acquire_lease, owner_id, release_lease

# Keys whose values are secrets wherever they appear (settings never hold them).
SECRET_KEYS = (
    *registry.credential_keys(),
    "access_token",
    "refresh_token",
    *registry.WEBHOOK_SECRETS,
)


def _now() -> datetime:
    return datetime.now(UTC)


def get_connection(store: Store, name: str) -> Connection:
    """The connection called ``name``; an unknown name is a usage error naming it."""
    with store.read_session() as s:
        conn = s.scalar(select(Connection).where(Connection.name == name))
    if conn is None:
        raise UsageError(f"no connection named {name!r} (see `synccli connections list`)")
    return conn


def list_connections(store: Store) -> list[Connection]:
    with store.read_session() as s:
        return list(s.scalars(select(Connection).order_by(Connection.name)))


def add_connection(
    store: Store,
    name: str,
    provider: str,
    settings: dict[str, Any],
    credentials: dict[str, Any],
    notify_email: str | None = None,
    *,
    sandbox_time_scale: float | None = None,
) -> Connection:
    """``sandbox_time_scale``: the sandbox harness's own connection to a simulator running that
    much faster than real time (never a setting: see ``Connection.sandbox_time_scale``)."""
    if provider not in registry.names():
        raise UsageError(
            f"unknown provider {provider!r}: choose one of {', '.join(registry.names())}"
        )
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"connection name {name!r}: use letters, digits, '-' and '_'")
    for key in settings:
        if key in SECRET_KEYS:
            raise UsageError(f"setting {key!r} is a secret: pass it as a credential")
    notify_email = _notify_email(notify_email)
    now = _now()
    conn = Connection(
        name=name,
        provider=provider,
        settings={k: v for k, v in settings.items() if v is not None},
        credentials=store.vault.seal({k: v for k, v in credentials.items() if v}),
        notify_email=notify_email,
        created_at=now,
        updated_at=now,
    )
    secrets.register(*(v for v in credentials.values() if isinstance(v, str)))
    try:
        with store.session() as s:
            s.add(conn)
            if sandbox_time_scale:
                s.flush()  # the connection's id
                s.add(SandboxClock(connection_id=conn.id, time_scale=sandbox_time_scale))
    except IntegrityError:
        raise UsageError(f"a connection named {name!r} already exists") from None
    return conn


def set_values(store: Store, name: str, values: dict[str, str]) -> Connection:
    """Change settings (``KEY=VALUE``); secrets go to the encrypted credentials."""
    if "notify_email" in values:
        _notify_email(values["notify_email"])  # refused before anything is opened
    with store.session() as s:
        conn = s.scalar(select(Connection).where(Connection.name == name))
        if conn is None:
            raise UsageError(f"no connection named {name!r} (see `synccli connections list`)")
        settings = dict(conn.settings)
        creds = store.vault.open(conn.credentials)
        for key, value in values.items():
            if key == "notify_email":
                conn.notify_email = _notify_email(value)
            elif key in SECRET_KEYS or key == "expires_at":
                creds[key] = value
                secrets.register(value)
            elif value == "":
                settings.pop(key, None)
            else:
                settings[key] = _typed(value)
        conn.settings = settings
        conn.credentials = store.vault.seal(creds)
        conn.updated_at = _now()
        return conn


def repoint(
    store: Store,
    name: str,
    settings: dict[str, Any],
    credentials: dict[str, Any],
    *,
    sandbox_time_scale: float | None = None,
) -> Connection:
    """Replace the settings and credentials of connection ``name`` in place (same id: its
    links, cursors and the shop's rows stay with it)."""
    with store.session() as s:
        conn = s.scalar(select(Connection).where(Connection.name == name))
        if conn is None:
            raise UsageError(f"no connection named {name!r} (see `synccli connections list`)")
        conn.settings = {k: v for k, v in settings.items() if v is not None}
        conn.credentials = store.vault.seal({k: v for k, v in credentials.items() if v})
        conn.needs_reauth = False
        conn.reauth_reason = None
        conn.updated_at = _now()
        s.execute(delete(SandboxClock).where(SandboxClock.connection_id == conn.id))
        if sandbox_time_scale:
            s.add(SandboxClock(connection_id=conn.id, time_scale=sandbox_time_scale))
        secrets.register(*(v for v in credentials.values() if isinstance(v, str)))
        return conn


def _notify_email(value: str | None) -> str | None:
    """The merchant's address, checked as the email package will read it in ``To``: a line
    break in it would fail every email (or add a header), found only when one is due."""
    if value is None or not value.strip():
        return None
    try:
        return mailsafe.check_address(value)
    except ValueError as exc:
        raise UsageError(f"setting {exc}") from None


def _typed(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    return value


def sandbox_time_scale(store: Store, connection_id: int) -> float | None:
    """The speed-up the sandbox harness stored for its connection to a simulator, if any."""
    with store.read_session() as s:
        return s.scalar(
            select(SandboxClock.time_scale).where(SandboxClock.connection_id == connection_id)
        )


def remove_connection(store: Store, name: str, force: bool = False) -> int:
    """Delete a connection; refuses while invoices are unposted unless ``force``."""
    with store.session() as s:
        conn = s.scalar(select(Connection).where(Connection.name == name))
        if conn is None:
            raise UsageError(f"no connection named {name!r} (see `synccli connections list`)")
        unposted = s.scalar(
            select(func.count())
            .select_from(InvoiceJob)
            .where(
                InvoiceJob.connection_id == conn.id,
                InvoiceJob.state.in_(HELD_STATES),  # a refund waiting for its order too
            )
        )
        if unposted and not force:
            raise UsageError(
                f"connection {name!r} has {unposted} unposted invoice(s); post or cancel them, "
                "or use --force"
            )
        _refuse_while_running(s, conn)
        s.delete(conn)
        return unposted or 0


def _refuse_while_running(s: Any, conn: Connection) -> None:
    """A run working on the connection would lose the rows it is about to write (an invoice the
    provider has just accepted among them) and die on the first one: removing waits for it.
    ``--force`` is about unposted invoices, not about pulling the store from under a run. On
    SQLite this transaction holds the write lock, so no run can take a lease meanwhile."""
    now = _now()
    for lease in s.scalars(
        select(Lease).where(Lease.connection_id == conn.id, Lease.expires_at > now)
    ):
        if procs.holder_gone(lease.owner):
            continue
        raise LeaseBusy(
            f"connection {conn.name!r} is in use by a run ({lease.job.split(':', 1)[0]}, "
            f"held until {fmt.minute(lease.expires_at)}); remove it when that run has ended"
        )


def credentials(store: Store, conn: Connection) -> dict[str, Any]:
    return store.vault.open(conn.credentials)


def describe(store: Store, conn: Connection) -> dict[str, Any]:
    """What ``connections show`` prints: settings, and only whether each credential is set."""
    creds = store.vault.open(conn.credentials)
    return {
        "name": conn.name,
        "provider": conn.provider,
        "settings": conn.settings,
        "credentials": {k: secrets.mask(v) for k, v in sorted(creds.items()) if k != "expires_at"},
        "notify_email": conn.notify_email,
        "needs_reauth": conn.needs_reauth,
        "reauth_reason": conn.reauth_reason,
        "created_at": conn.created_at.isoformat(),
    }


class StoreTokenStore:
    """OAuth tokens kept in the connection's encrypted credentials.

    ``update_locked`` serialises refreshes of one connection across processes and hosts with a
    lease row (job ``token-refresh``), not a database lock: the refresh's HTTP call runs with no
    transaction open, so every other process can read and write the store meanwhile (on SQLite a
    transaction held across the call would stop all writers). The new tokens are written only if
    the stored ones are still those the refresh started from.
    """

    LEASE_JOB = "token-refresh"
    # Longer than a refresh takes (two token calls of at most 15 s each); a holder that died is
    # taken over after it.
    LEASE_TTL = timedelta(seconds=60)
    POLL_SECONDS = 0.1

    def __init__(self, store: Store, connection_id: int) -> None:
        self.store = store
        self.connection_id = connection_id

    def load(self) -> Tokens:
        with self.store.session() as s:
            conn = s.get(Connection, self.connection_id)
            assert conn is not None
            return _tokens(self.store.vault.open(conn.credentials))

    def update_locked(self, fn: Callable[[Tokens], Tokens]) -> Tokens:
        owner = f"{owner_id()}:{uuid.uuid4().hex[:8]}"  # two threads of one process differ
        self._take_lease(owner)
        try:
            before = self.load()  # a short read, after the lease is ours
            tokens = fn(before)  # the HTTP call: no transaction open
            if tokens == before:
                return tokens
            with self.store.locked() as s:
                conn = s.get(Connection, self.connection_id, with_for_update=True)
                assert conn is not None
                creds = self.store.vault.open(conn.credentials)
                stored = _tokens(creds)
                if (stored.access_token, stored.refresh_token) != (
                    before.access_token,
                    before.refresh_token,
                ):
                    # Rotated by another process while we held the lease (only one that took
                    # it over after it expired can): what is stored wins, ours is not written
                    # over it. Other changes to the credentials meanwhile are kept either way.
                    return stored
                creds.update(
                    access_token=tokens.access_token,
                    refresh_token=tokens.refresh_token,
                    expires_at=tokens.expires_at.isoformat() if tokens.expires_at else None,
                    token_extra=tokens.extra,
                )
                conn.credentials = self.store.vault.seal(creds)
                conn.needs_reauth = False
                conn.reauth_reason = None
                conn.updated_at = _now()
                # committed by the context manager before the caller uses the new access token
            return tokens
        finally:
            release_lease(self.store, self.LEASE_JOB, self.connection_id, owner)

    def _take_lease(self, owner: str) -> None:
        """Wait for another process's refresh of this connection to end (or its lease to
        expire), then hold the lease."""
        deadline = time.monotonic() + self.LEASE_TTL.total_seconds() + 5
        while True:
            try:
                acquire_lease(
                    self.store, self.LEASE_JOB, self.connection_id, _now(), self.LEASE_TTL, owner
                )
                return
            except LeaseBusy:
                if time.monotonic() > deadline:
                    raise TransientError(
                        "another process has been refreshing this connection's token for too "
                        "long; try again later"
                    ) from None
                time.sleep(self.POLL_SECONDS)

    def mark_reauth(self, reason: str) -> None:
        with self.store.session() as s:
            conn = s.get(Connection, self.connection_id)
            if conn is not None:
                conn.needs_reauth = True
                conn.reauth_reason = reason


def _tokens(creds: dict[str, Any]) -> Tokens:
    expires = creds.get("expires_at")
    return Tokens(
        access_token=creds.get("access_token"),
        refresh_token=creds.get("refresh_token"),
        expires_at=datetime.fromisoformat(expires) if expires else None,
        extra=creds.get("token_extra") or {},
    )


def flag_reauth_needed(store: Store, connection_id: int, reason: str) -> str | None:
    """Mark the connection as needing re-authorisation. Returns when its credentials last
    changed (ISO time, or "never": what tells one authorisation from the next), or None when
    the connection is gone."""
    with store.locked() as s:
        conn = s.get(Connection, connection_id)
        if conn is None:
            return None
        conn.needs_reauth = True
        conn.reauth_reason = reason[:1000]
        return conn.updated_at.isoformat() if conn.updated_at else "never"
