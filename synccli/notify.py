"""Email to the merchant, de-duplicated in the database.

Transport: SMTP with :mod:`smtplib` (``SYNC_SMTP_HOST``, ``SYNC_SMTP_PORT``, ``SYNC_SMTP_SECURITY``
= starttls | ssl | none, ``SYNC_SMTP_USER``, ``SYNC_SMTP_PASSWORD``, ``SYNC_SMTP_FROM``; see
:mod:`synccli.config`), or, when no SMTP host is set (the embedded default and the demo), ``.eml``
files written into ``SYNC_OUTBOX_DIR``.

Every email is first recorded in ``notifications`` under a ``dedupe_key`` that is unique in the
database: whoever inserts the row sends the email, so two processes (or two runs) never send the
same one twice. A row whose sending failed keeps its error and is sent again by a later
:func:`flush_pending`. Bodies and subjects pass through :func:`synccli.secrets.redact`, and no
template ever includes a credential.
"""

from __future__ import annotations

import logging
import os
import re
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from synccli import mailsafe, registry, secrets
from synccli.config import Settings
from synccli.store.db import Store
from synccli.store.models import Connection, Notification

log = logging.getLogger("synccli.notify")


class Mailer(Protocol):
    """Delivers one message or raises (``OSError`` / ``smtplib.SMTPException``)."""

    def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """SMTP with STARTTLS (default), implicit TLS (``ssl``) or plain (``none``, e.g. a relay on
    localhost)."""

    def __init__(
        self,
        host: str,
        port: int = 587,
        security: str = "starttls",
        user: str | None = None,
        password: str | None = None,
        timeout: float = 15.0,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.user, self.password = user, password
        self.timeout = timeout
        self.context = context
        secrets.register(password)

    def _session(self) -> smtplib.SMTP:
        """Connect, EHLO, STARTTLS and log in: what a send and a probe both need."""
        context = self.context or ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.security == "ssl":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if self.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.user:
                smtp.login(self.user, self.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: EmailMessage) -> None:
        with self._session() as smtp:
            smtp.send_message(message)

    def probe(self) -> None:
        """Connect, EHLO, STARTTLS and log in as ``send`` would, and send nothing."""
        with self._session():
            pass


class DirectoryMailer:
    """Writes each message as an ``.eml`` file (owner-only) into a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def send(self, message: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S%f")
        slug = re.sub(r"[^A-Za-z0-9]+", "-", str(message["Subject"] or "email"))[:60].strip("-")
        path = self.directory / f"{stamp}-{slug}.eml"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(message.as_bytes())
        os.replace(tmp, path)


def mailer_for(settings: Settings) -> Mailer:
    """SMTP when ``SYNC_SMTP_HOST`` is set, else the ``.eml`` outbox directory."""
    if settings.smtp_host:
        return SmtpMailer(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_security,
            settings.smtp_user,
            settings.smtp_password,
        )
    return DirectoryMailer(settings.outbox_dir or settings.data_dir / "outbox")


@dataclass
class Email:
    subject: str
    body: str


def _message(settings: Settings, recipient: str, email: Email, now: datetime) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = recipient
    # A subject names an order whose number may predate the checks at `invoices add` (a row the
    # shop inserted itself): characters a header cannot carry are written as escapes.
    msg["Subject"] = mailsafe.header_text(secrets.redact(email.subject))[:250]
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain="synccli.local")
    msg.set_content(secrets.redact(email.body))
    return msg


def send_test(settings: Settings, recipient: str, mailer: Mailer, now: datetime) -> None:
    """One test email to ``recipient`` (``connections test --send-test-email``); raises as the
    mailer does."""
    email = Email(
        "synccli: test email",
        "This is a test email from synccli. The merchant's emails about refused invoices and\n"
        "expired authorisations will come to this address.\n",
    )
    mailer.send(_message(settings, recipient, email, now))


@dataclass(frozen=True)
class Delivery:
    """What became of one email: ``recorded`` False when one under its key was recorded before
    (nothing was done); else ``sent``, or the ``error`` kept on its notification row."""

    recorded: bool
    sent: bool = False
    error: str | None = None


def send_once(
    store: Store,
    connection: Connection,
    dedupe_key: str,
    email: Email,
    now: datetime,
    *,
    mailer: Mailer | None = None,
) -> Delivery:
    """Record and send ``email`` unless one with ``dedupe_key`` was recorded before.

    Nothing raises for one email: a message that cannot be built or sent keeps its error on its
    row (``flush_pending`` tries again later) and the caller gets it to report."""
    key = dedupe_key[:255]
    row = Notification(
        connection_id=connection.id,
        dedupe_key=key,
        recipient=connection.notify_email,
        subject=secrets.redact(email.subject)[:255],
        body=secrets.redact(email.body),
        created_at=now,
    )
    try:
        with store.session() as s:
            s.add(row)
    except IntegrityError:
        return Delivery(recorded=False)
    return _deliver(store, row.id, mailer or mailer_for(store.settings), now)


def notify(
    store: Store,
    connection: Connection,
    dedupe_key: str,
    email: Email,
    now: datetime,
    *,
    mailer: Mailer | None = None,
) -> bool:
    """:func:`send_once`, True when this call recorded the email (and tried to send it)."""
    return send_once(store, connection, dedupe_key, email, now, mailer=mailer).recorded


def _deliver(store: Store, notification_id: int, mailer: Mailer, now: datetime) -> Delivery:
    with store.locked() as s:
        row = s.get(Notification, notification_id)
        if row is None:
            return Delivery(recorded=True, error="the notification row was removed")
        if row.sent_at is not None:  # another process sent it meanwhile
            return Delivery(recorded=True, sent=True)
        recipient = row.recipient
        if recipient is None and row.connection_id is not None:
            conn = s.get(Connection, row.connection_id)
            recipient = conn.notify_email if conn else None
        email = Email(row.subject, row.body)
        if not recipient:
            row.error = (
                "no notify_email set for the connection "
                "(synccli connections set NAME notify_email=...)"
            )
            log.warning("email not sent (%s): %s", row.subject, row.error)
            return Delivery(recorded=True, error=row.error)
        row.recipient = recipient
    try:
        # Built inside the try: a recipient or subject the email package refuses (a row stored
        # before addresses were checked) is this email's failure, not the run's.
        mailer.send(_message(store.settings, recipient, email, now))
    except Exception as exc:  # OSError, SMTPException, ValueError from a header, ...
        error = secrets.redact(f"{exc.__class__.__name__}: {exc}")[:500]
        log.warning("email not sent (%s): %s", email.subject, error)
        with store.locked() as s:
            row = s.get(Notification, notification_id)
            if row is not None:
                row.error = error
        return Delivery(recorded=True, error=error)
    with store.locked() as s:
        row = s.get(Notification, notification_id)
        if row is not None:
            row.sent_at, row.error = now, None
    log.info("emailed %s: %s", recipient, email.subject)
    return Delivery(recorded=True, sent=True)


def flush_pending(
    store: Store,
    connection: Connection,
    now: datetime,
    *,
    mailer: Mailer | None = None,
    grace: timedelta = timedelta(minutes=10),
    max_age: timedelta = timedelta(days=7),
    created_before: datetime | None = None,
) -> int:
    """Send again the connection's emails that failed (or whose sender died before sending).
    Rows younger than ``grace`` without an error may still be in another process's hands; rows
    created from ``created_before`` on (this run's, just tried) wait for the next run."""
    with store.session() as s:
        query = select(Notification.id).where(
            Notification.connection_id == connection.id,
            Notification.sent_at.is_(None),
            Notification.created_at >= now - max_age,
            (Notification.error.is_not(None)) | (Notification.created_at < now - grace),
        )
        if created_before is not None:
            query = query.where(Notification.created_at < created_before)
        ids = list(s.scalars(query))
    if not ids:
        return 0
    mailer = mailer or mailer_for(store.settings)
    return sum(_deliver(store, i, mailer, now).sent for i in ids)


# --- templates ---------------------------------------------------------------------------------
def _provider(connection: Connection) -> str:
    entry = registry.find(connection.provider)
    return entry.display_name if entry is not None else connection.provider


def _bullets(messages: list[str]) -> str:
    return "\n".join(f"  - {m}" for m in messages) or "  - (no message given)"


def rejected_email(
    connection: Connection,
    number: str,
    messages: list[str],
    next_attempt_at: datetime | None,
    give_up_at: datetime | None,
    refund_of: str | None = None,
    *,
    payments: bool = False,
) -> Email:
    provider = _provider(connection)
    when = f"{next_attempt_at:%Y-%m-%d %H:%M} UTC" if next_attempt_at else "on the next run"
    deadline = f" It gives up on {give_up_at:%Y-%m-%d %H:%M} UTC." if give_up_at else ""
    if payments:
        return _payment_refused_email(connection, number, messages, when, deadline)
    what = f"refund {number} of order {refund_of}" if refund_of else f"invoice {number}"
    fix = (
        f"What to fix: check order {number} against your {provider} settings - the tax codes "
        "(tax\ntypes), account codes, product codes and the customer named on the order, and "
        f"the message\nabove. Fix the order (or the setting in {provider})."
    )
    if refund_of:
        fix = f"""What to fix: check refund {number} against order {refund_of} in {provider}:
its invoice must still be there (not voided or deleted), with at least the refund's amount
due to take a credit note's allocation, and the tax codes and accounts of the refunded lines
must still exist - and the message above. A credit note {provider} already holds is never
posted again: when the message says it is there, allocate it in {provider} or fix what it
names."""
    entry = registry.find(connection.provider)
    if refund_of and entry is not None and entry.refund_fix:  # how its refunds are posted
        fix = entry.refund_fix.format(number=number, refund_of=refund_of, provider=provider)
    body = f"""{provider} refused {what} (connection {connection.name}).

{provider} said:
{_bullets(messages)}

{fix}

How to retry: synccli tries again on its own, next at {when}.{deadline}
To try at once after fixing it, run:

    synccli invoices retry {number} --connection {connection.name}

See every attempt with: synccli invoices show {number} --connection {connection.name}
"""
    return Email(f"[synccli] {provider} refused {what}", body)


def mismatch_email(
    connection: Connection,
    number: str,
    reason: str,
    remote_id: str,
    order_total: str,
    remote_total: str | None,
) -> Email:
    provider = _provider(connection)
    body = f"""Invoice {number} reached {provider} (connection {connection.name}, {provider} id
{remote_id}), but its total there is not the order's: {reason}.

It is not counted as posted, and synccli will not post it again (that would make a second
invoice). The usual cause is a tax code whose rate in {provider} differs from the order's tax
rate, or a line {provider} priced differently.

What to do: correct the invoice in {provider} (order total {order_total}, {provider} total
{remote_total or "unknown"}), then have synccli check it again (it looks the invoice up and
never posts a second one):

    synccli invoices retry {number} --connection {connection.name}

See it with: synccli invoices show {number} --connection {connection.name}
"""
    return Email(f"[synccli] invoice {number}: {provider}'s total differs from the order", body)


def _payment_refused_email(
    connection: Connection, number: str, messages: list[str], when: str, deadline: str
) -> Email:
    provider = _provider(connection)
    account = (connection.settings or {}).get("payment_account_code") or "(not set)"
    body = f"""Invoice {number} is in {provider} (connection {connection.name}), but {provider}
refused to apply the order's payment(s) to it.

{provider} said:
{_bullets(messages)}

What to fix: payments go into the account set as the connection's payment_account_code
({account}); in {provider} it must be a bank account, or have
"Enable payments to this account" ticked in the chart of accounts. The invoice must still
be awaiting payment (approved, not voided, not paid by hand), and the payments may not add
up to more than it is due. Fix that in {provider}, or set another account:

    synccli connections set {connection.name} payment_account_code=CODE

The invoice is not posted again; only the payments not yet applied are sent.

How to retry: synccli tries again on its own, next at {when}.{deadline}
To try at once after fixing it, run:

    synccli invoices retry {number} --connection {connection.name}

See every attempt with: synccli invoices show {number} --connection {connection.name}
"""
    return Email(f"[synccli] {provider} refused the payments of invoice {number}", body)


def gave_up_email(
    connection: Connection,
    number: str,
    messages: list[str],
    attempts: int,
    since: datetime | None,
    *,
    payments: bool = False,
) -> Email:
    provider = _provider(connection)
    first = f" since {since:%Y-%m-%d %H:%M} UTC" if since else ""
    if payments:
        body = f"""synccli has stopped trying to apply the payments of invoice {number} in
{provider} (connection {connection.name}): they were refused {attempts} time(s){first}. The
invoice itself is in {provider}.

{provider}'s last answer:
{_bullets(messages)}

Nothing more happens on its own. After fixing it (the connection's payment_account_code must
be a bank account or one enabled for payments, and the invoice awaiting payment), run:

    synccli invoices retry {number} --connection {connection.name}

or record the payments in {provider} by hand and stop here:

    synccli invoices cancel {number} --connection {connection.name}
"""
        return Email(f"[synccli] gave up applying the payments of invoice {number}", body)
    body = f"""synccli has stopped trying to post invoice {number} to {provider} (connection
{connection.name}): it was refused {attempts} time(s){first}.

{provider}'s last answer:
{_bullets(messages)}

Nothing more happens on its own. After fixing the order, run:

    synccli invoices retry {number} --connection {connection.name}

or, if it should not be posted at all:

    synccli invoices cancel {number} --connection {connection.name}
"""
    return Email(f"[synccli] gave up posting invoice {number} to {provider}", body)


def reauth_email(connection: Connection, reason: str) -> Email:
    provider = _provider(connection)
    entry = registry.find(connection.provider)
    if entry is not None and entry.key_only:  # a key refused: nothing to authorise
        name, ident, key = connection.name, entry.account_key.name, entry.secret.name
        body = f"""synccli can no longer reach your {provider} account (connection {name}):
{provider} refuses its {key}.

Reason: {reason}

Invoices and syncs for this connection are paused until the {ident} and {key} are entered
again. Nothing is lost: queued invoices are posted once access is restored.

The account owner finds both under {entry.key_source}; ask your support contact
to enter them with `synccli connections set {connection.name} --secret-stdin`.
"""
        return Email(f"[synccli] {provider} refuses the {key} ({connection.name})", body)
    body = f"""synccli can no longer reach your {provider} account (connection {connection.name}):
{provider} no longer accepts its authorisation.

Reason: {reason}

Invoices and syncs for this connection are paused until the connection is authorised again.
Nothing is lost: queued invoices are posted once access is restored.

Ask your support contact to re-authorise connection {connection.name}, or see
`synccli connections show {connection.name}`.
"""
    return Email(f"[synccli] {provider} needs to be authorised again ({connection.name})", body)
