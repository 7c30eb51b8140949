"""Email to the merchant: SMTP (plain, STARTTLS with login, implicit TLS) against a real aiosmtpd
server on loopback, the ``.eml`` outbox, de-duplication in the database, retries of failed sends,
and no secret in any email."""

from __future__ import annotations

import email
import ipaddress
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from synccli import secrets
from synccli.config import load_settings
from synccli.notify import (
    DirectoryMailer,
    Email,
    SmtpMailer,
    flush_pending,
    gave_up_email,
    mailer_for,
    notify,
    reauth_email,
    rejected_email,
)
from synccli.store.connections import add_connection, get_connection, set_values
from synccli.store.db import Store
from synccli.store.models import Connection, Notification

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SMTP_PASSWORD = "smtp-pass-9f8e7d6c"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            self.logins.append((auth_data.login, auth_data.password))
            ok = auth_data.login == b"mailer" and auth_data.password == SMTP_PASSWORD.encode()
            return AuthResult(success=ok)
        return AuthResult(success=False)

    def parsed(self, i: int = -1) -> email.message.EmailMessage:
        return email.message_from_bytes(self.messages[i].content, policy=policy.default)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(days=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*certificate)
    return ctx


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture
def plain_server() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def conn(store: Store) -> Connection:
    add_connection(
        store,
        "shop",
        "xero",
        {"client_id": "app"},
        {"client_secret": "client-secret-abcdef123"},
        "owner@shop.example",
    )
    return get_connection(store, "shop")


def rows(store: Store) -> list[Notification]:
    with store.session() as s:
        return list(s.scalars(select(Notification).order_by(Notification.id)))


# --- SMTP ---------------------------------------------------------------------------------------
def test_plain_smtp_delivers_once_per_dedupe_key(
    store: Store, conn: Connection, plain_server: tuple[Controller, Inbox]
) -> None:
    controller, inbox = plain_server
    mailer = SmtpMailer("127.0.0.1", controller.port, "none")
    message = Email("[synccli] hello", "Body line\n")
    assert notify(store, conn, "k-1", message, NOW, mailer=mailer) is True
    assert notify(store, conn, "k-1", message, NOW, mailer=mailer) is False
    assert notify(store, conn, "k-2", message, NOW, mailer=mailer) is True
    assert len(inbox.messages) == 2
    got = inbox.parsed(0)
    assert got["To"] == "owner@shop.example"
    assert got["Subject"] == "[synccli] hello"
    assert got["From"] == store.settings.smtp_from
    assert got.get_content().strip() == "Body line"
    saved = rows(store)
    assert [r.dedupe_key for r in saved] == ["k-1", "k-2"]
    assert all(r.sent_at == NOW and r.error is None for r in saved)


def test_starttls_with_login(store: Store, conn: Connection, certificate) -> None:
    inbox = Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=server_context(certificate),
        require_starttls=True,
        authenticator=inbox.authenticate,
        auth_require_tls=True,
    )
    controller.start()
    try:
        mailer = SmtpMailer(
            "127.0.0.1",
            controller.port,
            "starttls",
            "mailer",
            SMTP_PASSWORD,
            context=client_context(certificate),
        )
        assert notify(store, conn, "tls-1", Email("s", "b"), NOW, mailer=mailer)
    finally:
        controller.stop()
    assert inbox.logins == [(b"mailer", SMTP_PASSWORD.encode())]
    assert len(inbox.messages) == 1
    assert SMTP_PASSWORD.encode() not in inbox.messages[0].content


def test_implicit_tls(store: Store, conn: Connection, certificate) -> None:
    inbox = Inbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=free_port(), ssl_context=server_context(certificate)
    )
    controller.start()
    try:
        mailer = SmtpMailer(
            "127.0.0.1", controller.port, "ssl", context=client_context(certificate)
        )
        assert notify(store, conn, "ssl-1", Email("s", "b"), NOW, mailer=mailer)
    finally:
        controller.stop()
    assert len(inbox.messages) == 1


def test_settings_pick_smtp_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_SMTP_HOST", "mail.example")
    monkeypatch.setenv("SYNC_SMTP_PORT", "465")
    monkeypatch.setenv("SYNC_SMTP_SECURITY", "ssl")
    monkeypatch.setenv("SYNC_SMTP_USER", "u")
    monkeypatch.setenv("SYNC_SMTP_PASSWORD", SMTP_PASSWORD)
    mailer = mailer_for(load_settings())
    assert isinstance(mailer, SmtpMailer)
    assert (mailer.host, mailer.port, mailer.security, mailer.user) == (
        "mail.example",
        465,
        "ssl",
        "u",
    )
    assert secrets.redact(f"x {SMTP_PASSWORD} y") == "x *** y"


# --- the outbox directory -----------------------------------------------------------------------
def test_without_smtp_host_emails_become_eml_files(store: Store, conn: Connection) -> None:
    assert store.settings.smtp_host is None
    mailer = mailer_for(store.settings)
    assert isinstance(mailer, DirectoryMailer)
    assert notify(store, conn, "eml-1", Email("[synccli] refused WEB-1", "text\n"), NOW)
    files = list(Path(store.settings.outbox_dir).glob("*.eml"))
    assert len(files) == 1
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    msg = email.message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert msg["To"] == "owner@shop.example" and msg["Subject"] == "[synccli] refused WEB-1"
    assert rows(store)[0].sent_at == NOW


# --- failures and retries -----------------------------------------------------------------------
def test_failed_send_keeps_the_error_and_is_sent_later(
    store: Store, conn: Connection, plain_server: tuple[Controller, Inbox]
) -> None:
    controller, inbox = plain_server
    dead = SmtpMailer("127.0.0.1", free_port(), "none", timeout=2)
    assert notify(store, conn, "f-1", Email("s", "b"), NOW, mailer=dead) is True
    row = rows(store)[0]
    assert row.sent_at is None and "ConnectionRefused" in (row.error or "")
    # a second notify with the same key does not send again; the flush does
    live = SmtpMailer("127.0.0.1", controller.port, "none")
    assert notify(store, conn, "f-1", Email("s", "b"), NOW, mailer=live) is False
    assert inbox.messages == []
    assert flush_pending(store, conn, NOW + timedelta(minutes=1), mailer=live) == 1
    assert len(inbox.messages) == 1
    assert rows(store)[0].error is None and rows(store)[0].sent_at is not None
    assert flush_pending(store, conn, NOW + timedelta(minutes=2), mailer=live) == 0


def test_no_recipient_is_recorded_and_sent_once_one_is_set(
    store: Store, plain_server: tuple[Controller, Inbox]
) -> None:
    controller, inbox = plain_server
    add_connection(store, "quiet", "unleashed", {"api_id": "a"}, {"api_key": "key-123456789"})
    conn = get_connection(store, "quiet")
    live = SmtpMailer("127.0.0.1", controller.port, "none")
    notify(store, conn, "n-1", Email("s", "b"), NOW, mailer=live)
    assert "notify_email" in (rows(store)[0].error or "") and inbox.messages == []
    set_values(store, "quiet", {"notify_email": "late@shop.example"})
    assert flush_pending(store, conn, NOW, mailer=live) == 1
    assert inbox.messages[0].rcpt_tos == ["late@shop.example"]


def test_a_registered_secret_never_reaches_an_email(
    store: Store, conn: Connection, plain_server: tuple[Controller, Inbox]
) -> None:
    controller, inbox = plain_server
    token = "tok-5555-6666-7777-8888"
    secrets.register(token)
    mailer = SmtpMailer("127.0.0.1", controller.port, "none")
    notify(
        store,
        conn,
        "sec-1",
        Email(f"subject {token}", f"the provider said: bad token {token}"),
        NOW,
        mailer=mailer,
    )
    raw = inbox.messages[0].content
    assert token.encode() not in raw and b"***" in raw
    assert token not in rows(store)[0].body


# --- templates ----------------------------------------------------------------------------------
def test_templates_name_the_order_the_message_and_the_fix(conn: Connection) -> None:
    rejected = rejected_email(
        conn,
        "WEB-1042",
        ["The TaxType code BOGUS does not exist"],
        NOW + timedelta(hours=2),
        NOW + timedelta(days=7),
    )
    assert "WEB-1042" in rejected.subject and "Xero" in rejected.subject
    for text in (
        "The TaxType code BOGUS does not exist",
        "What to fix",
        "synccli invoices retry WEB-1042 --connection shop",
        "2026-03-02 12:00 UTC",
        "2026-03-09 10:00 UTC",
    ):
        assert text in rejected.body
    final = gave_up_email(conn, "WEB-1042", ["bad"], 7, NOW)
    assert "gave up" in final.subject and "synccli invoices retry WEB-1042" in final.body
    reauth = reauth_email(conn, "refresh token expired")
    assert "authorised again" in reauth.subject and "refresh token expired" in reauth.body
    for mail in (rejected, final, reauth):
        assert "client-secret-abcdef123" not in mail.subject + mail.body
