"""``doctor``: one line per check — configuration, schema, provider, token, clock, budget."""

from __future__ import annotations

import os
import smtplib
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from synccli import connsettings, fmt, registry
from synccli.config import Settings
from synccli.crypto import key_path
from synccli.errors import SyncError, UsageError
from synccli.procs import holder_gone
from synccli.store.db import Store, head_revision
from synccli.store.ledger import stored_block, usage
from synccli.store.models import Connection
from synccli.store.runs import leases_of
from synccli.sync.context import NeverAuthorised, build_connector, limits_of

SKEW_WARN_SECONDS = 120


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    fix: str = ""
    code: int = 1  # the exit code when this check failed


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


def check_connection(
    store: Store,
    conn: Connection,
    now: datetime,
    settings: Settings | None = None,
    *,
    send_test_email: bool = False,
) -> list[Check]:
    """Everything one connection needs, at the cost of one cheap call: its settings, its
    credentials (the call), the provider's clock, ``notify_email`` and the SMTP server (a test
    email on request), leases left by runs, and the budget (a stored block included)."""
    checks = [_settings_check(conn), *_credentials_checks(store, conn, now)]
    checks.append(_notify_check(conn))
    if settings is not None:
        checks.append(_email_check(settings, conn, now, send_test_email))
    checks.extend(_lease_checks(store, conn, now))
    checks.append(_budget_check(store, conn, now))
    return checks


def exit_code(checks: list[Check]) -> int:
    """The first failed check's exit code (0 when all passed)."""
    failed = [c for c in checks if not c.ok]
    return failed[0].code if failed else 0


def _settings_check(conn: Connection) -> Check:
    name = conn.name
    try:
        connsettings.check(conn.provider, dict(conn.settings or {}), removing_allowed=True)
        missing = connsettings.missing(conn.provider, dict(conn.settings or {}))
    except UsageError as err:
        return Check(f"{name}: settings", False, err.message,
                     f"correct it with `synccli connections set {name} KEY=VALUE`", 2)  # fmt: skip
    if missing:
        return Check(f"{name}: settings", False, f"{', '.join(missing)} not set",
                     f"`synccli connections set {name} {missing[0]}=...`", 2)  # fmt: skip
    return Check(f"{name}: settings", True, f"{len(conn.settings or {})} settings, all valid")


def _credentials_checks(store: Store, conn: Connection, now: datetime) -> list[Check]:
    name = conn.name
    try:
        from synccli.clock import SystemClock

        connector = build_connector(store, conn, clock=SystemClock(), timeout=(5.0, 15.0))
        answer = connector.ping()
    except SyncError as err:
        return [Check(f"{name}: credentials", False, err.message, _fix_for(err, conn),
                      _code_for(err, conn))]  # fmt: skip
    except NotImplementedError:
        return [Check(f"{name}: credentials", False, "connector has no ping", "", 1)]
    found = {k: answer[k] for k in ("organisation", "tenant_id", "account_id") if answer.get(k)}
    told = ", ".join(f"{k} {v}" for k, v in found.items())
    checks = [
        Check(f"{name}: credentials", True, f"accepted ({told or answer.get('status', 'ok')})")
    ]
    date = answer.get("date")
    if date:
        skew = abs((parsedate_to_datetime(date) - now).total_seconds())
        checks.append(Check(f"{name}: clock", skew < SKEW_WARN_SECONDS,
                            f"{skew:.0f}s from the provider's clock",
                            "fix this host's clock (NTP)", 1))  # fmt: skip
    payments = _payment_account_check(connector, conn)
    return checks + ([payments] if payments else [])


def _payment_account_check(connector: Any, conn: Connection) -> Check | None:
    """Where payments are applied into an account of the connection's (Xero), that account
    must take them: one look-up of it (``payment_account_code``), when it is set."""
    if connector.capabilities.documents.payments != "applied":
        return None
    name, code = conn.name, str((conn.settings or {}).get("payment_account_code") or "")
    if not code:
        return Check(f"{name}: payment account", True,
                     "payment_account_code not set: orders with payments are refused")  # fmt: skip
    try:
        problem = connector.payment_account_problem(code)
    except SyncError as err:
        return Check(f"{name}: payment account", False, err.message, "", int(err.exit_code))
    if problem:
        return Check(f"{name}: payment account", False, problem,
                     f"`synccli connections set {name} payment_account_code=CODE` (a bank "
                     "account, or one enabled for payments)", 2)  # fmt: skip
    return Check(f"{name}: payment account", True, f"{code} takes payments")


def _code_for(err: SyncError, conn: Connection) -> int:
    from synccli.errors import AuthError

    entry = registry.find(conn.provider)
    if isinstance(err, AuthError) and entry is not None and entry.key_only:
        return 2  # a key to set again (configuration), not an authorisation to redo
    return int(err.exit_code)


def _notify_check(conn: Connection) -> Check:
    name = conn.name
    if not conn.notify_email:
        return Check(
            f"{name}: notify_email",
            False,
            "not set: a refused invoice or a dead token cannot be told to the merchant",
            f"`synccli connections set {name} notify_email=owner@shop.example`",
            2,
        )
    return Check(f"{name}: notify_email", True, conn.notify_email)


def _email_check(settings: Settings, conn: Connection, now: datetime, send: bool) -> Check:
    """SMTP reachable (connect, EHLO, STARTTLS, login), or the outbox directory writable; with
    ``send`` one test email to ``notify_email``."""
    from synccli import notify

    name = conn.name
    mailer = notify.mailer_for(settings)
    outbox = settings.outbox_dir or settings.data_dir / "outbox"
    where = (
        f"SMTP {settings.smtp_host}:{settings.smtp_port}"
        if settings.smtp_host
        else f"no SYNC_SMTP_HOST: .eml files in {outbox}"
    )
    try:
        if send:
            if not conn.notify_email:
                return Check(f"{name}: email", False, "no notify_email to send to", "", 2)
            notify.send_test(settings, conn.notify_email, mailer, now)
            return Check(
                f"{name}: email", True, f"test email sent to {conn.notify_email} ({where})"
            )
        if isinstance(mailer, notify.SmtpMailer):
            mailer.probe()
            return Check(f"{name}: email", True, f"{where} answers")
        return Check(f"{name}: email", True, where)
    except (OSError, smtplib.SMTPException) as exc:
        return Check(
            f"{name}: email",
            False,
            f"{where}: {exc.__class__.__name__}: {exc}",
            "check SYNC_SMTP_HOST, SYNC_SMTP_PORT, SYNC_SMTP_SECURITY and the login",
            1,
        )


def _lease_checks(store: Store, conn: Connection, now: datetime) -> list[Check]:
    out = []
    for lease in leases_of(store, conn.id):
        if lease.expires_at <= now or holder_gone(lease.owner):
            why = "its holder is gone" if holder_gone(lease.owner) else "expired"
            out.append(Check(
                f"{conn.name}: lease",
                True,
                f"stale lease on {lease.job} ({why}; held by {lease.owner} until "
                f"{fmt.minute(lease.expires_at)}): the next run takes it over",
            ))  # fmt: skip
        else:
            out.append(Check(
                f"{conn.name}: lease",
                True,
                f"{lease.job} running now (held by {lease.owner} until "
                f"{fmt.minute(lease.expires_at)})",
            ))  # fmt: skip
    return out


def _budget_check(store: Store, conn: Connection, now: datetime) -> Check:
    name = conn.name
    used = usage(store, conn.id, now)
    try:
        limits = limits_of(conn.provider)
    except SyncError:
        limits = None
    today, month = int(str(used["today"])), int(str(used["month"]))  # counts
    parts = [f"{today} calls today", f"{month} this month"]
    ok = True
    if limits and limits.per_day:
        parts[0] += f" of {limits.per_day}"
        ok = today < limits.per_day * 0.9
    if limits and limits.per_month:
        parts[1] += f" of {limits.per_month}"
        ok = ok and month < limits.per_month * 0.9
    fix = "" if ok else "lower the sweep size or pull less often (`synccli plan --help`)"
    block = stored_block(store, conn.id, now)
    if block is not None:
        until, reason = block
        ok = False
        parts.append(
            f"stored budget block until {fmt.minute(until)} (set by the provider's answer to an "
            f"earlier call: {reason})"
        )
        fix = (
            f"wait for it, or once the provider allows calls again (more bought, a wrong "
            f"reading) `synccli connections unblock {name}`"
        )
    return Check(f"{name}: budget", ok, ", ".join(parts), fix, 0 if ok else 3)


def _fix_for(err: SyncError, conn: Connection) -> str:
    """What to do, in this provider's terms: an Unleashed key is set, not authorised."""
    from synccli.errors import AuthError, BudgetExhausted, TransientError

    name = conn.name
    if isinstance(err, NeverAuthorised):
        return ""  # its message already says to run `connections authorize NAME`
    entry = registry.find(conn.provider)
    if isinstance(err, AuthError) and entry is not None:
        ident, key = entry.account_key, entry.secret
        if entry.key_only:
            return (
                f"copy the {ident.name} and {key.name} again from {entry.key_source} "
                f"(account owner only), then `synccli connections set {name} {ident.key}=ID` "
                f"and `synccli connections set {name} --secret-stdin`"
            )
        if not entry.authorises(conn.settings or {}):  # it gets its own tokens with its secret
            return (
                f"check the custom connection's {key.name}: "
                f"`synccli connections set {name} --secret-stdin`"
            )
    if isinstance(err, AuthError):
        return f"run `synccli connections authorize {name}`"
    if isinstance(err, BudgetExhausted):
        return f"wait for the reset, or `synccli connections unblock {name}` once calls are allowed"
    if isinstance(err, TransientError):
        return "check the network and the provider's status page, then retry"
    return f"check the connection's settings (`synccli connections show {name}`)"


def list_ids(store: Store, conn: Connection) -> dict[str, list[dict[str, str]]]:
    """What each id setting of ``conn`` may be set to, as the provider lists it (Xero: its
    organisations, one call; Unleashed: its warehouses, one call; Lightspeed: its shops,
    registers, employees and payment types, four calls)."""
    from synccli.clock import SystemClock

    connector = build_connector(store, conn, clock=SystemClock(), timeout=(5.0, 15.0))
    return connector.ids()
