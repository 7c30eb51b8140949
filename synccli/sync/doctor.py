"""``doctor``: one line per check — configuration, schema, provider, token, clock, budget."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from synccli.config import Settings
from synccli.crypto import key_path
from synccli.errors import SyncError
from synccli.store.db import Store, head_revision
from synccli.store.ledger import usage
from synccli.store.models import Connection
from synccli.sync.context import _limits_of, build_connector, connector_module

SKEW_WARN_SECONDS = 120


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    fix: str = ""


def check_setup(settings: Settings, store: Store | None) -> list[Check]:
    checks = [Check("configuration", True, f"data directory {settings.data_dir}")]
    if settings.secret_key:
        checks.append(Check("secret key", True, "from SYNC_SECRET_KEY"))
    elif key_path(settings).exists():
        mode = os.stat(key_path(settings)).st_mode & 0o777
        checks.append(
            Check(
                "secret key",
                mode == 0o600,
                f"{key_path(settings)} (mode {oct(mode)})",
                "" if mode == 0o600 else f"chmod 600 {key_path(settings)}",
            )
        )
    else:
        checks.append(Check("secret key", True, "not created yet (made on first connection)"))
    if store is not None:
        try:
            current, head = store.current_revision(), head_revision()
            checks.append(
                Check(
                    "schema",
                    current == head,
                    f"at {current}, code expects {head}",
                    "" if current == head else "run `synccli db upgrade`",
                )
            )
        except SyncError as err:
            checks.append(Check("schema", False, err.message, "check SYNC_DATABASE_URL"))
    return checks


def check_connection(store: Store, conn: Connection, now: datetime) -> list[Check]:
    name = conn.name
    checks: list[Check] = []
    if conn.needs_reauth:
        checks.append(
            Check(
                f"{name}: token",
                False,
                conn.reauth_reason or "needs re-authorisation",
                f"run `synccli connections authorize {name}`",
            )
        )
    try:
        from synccli.clock import SystemClock

        connector = build_connector(store, conn, clock=SystemClock(), timeout=(5.0, 15.0))
        answer = connector.ping()
        checks.append(Check(f"{name}: provider", True, f"reachable ({answer.get('status', 'ok')})"))
        if not conn.needs_reauth:
            checks.append(Check(f"{name}: token", True, "valid or refreshed"))
        date = answer.get("date")
        if date:
            skew = abs((parsedate_to_datetime(date) - now).total_seconds())
            checks.append(
                Check(
                    f"{name}: clock",
                    skew < SKEW_WARN_SECONDS,
                    f"{skew:.0f}s from the provider's clock",
                    "" if skew < SKEW_WARN_SECONDS else "fix this host's clock (NTP)",
                )
            )
    except SyncError as err:
        checks.append(Check(f"{name}: provider", False, err.message, _fix_for(err, name)))
    except NotImplementedError:
        checks.append(Check(f"{name}: provider", False, "connector has no ping", ""))
    used = usage(store, conn.id, now)
    try:
        limits = _limits_of(connector_module(conn.provider))
    except SyncError:
        limits = None
    parts = [f"{used['today']} calls today", f"{used['month']} this month"]
    ok = True
    if limits and limits.per_day:
        parts[0] += f" of {limits.per_day}"
        ok = used["today"] < limits.per_day * 0.9
    if limits and limits.per_month:
        parts[1] += f" of {limits.per_month}"
        ok = ok and used["month"] < limits.per_month * 0.9
    if used.get("blocked_until"):
        ok = False
        parts.append(f"blocked until {used['blocked_until']}")
    checks.append(
        Check(
            f"{name}: budget",
            ok,
            ", ".join(parts),
            "" if ok else "lower the sweep size or pull less often (`synccli plan --help`)",
        )
    )
    return checks


def _fix_for(err: SyncError, name: str) -> str:
    from synccli.errors import AuthError, BudgetExhausted, TransientError

    if isinstance(err, AuthError):
        return f"run `synccli connections authorize {name}`"
    if isinstance(err, BudgetExhausted):
        return "wait for the reset, or lower the schedule (`synccli plan --help`)"
    if isinstance(err, TransientError):
        return "check the network and the provider's status page, then retry"
    return f"check the connection's settings (`synccli connections show {name}`)"
