"""Issue 18, line 4 (`connections test NAME`, `doctor -c NAME`) and line 9 (a stored budget block
that can be lifted and says what it is)."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from synccli import registry
from synccli.sandbox import harness
from synccli.store.connections import add_connection
from synccli.store.db import Store
from synccli.store.ledger import StoreLedger
from synccli.store.models import ApiCall, Lease
from synccli.sync.context import connector_class


def _calls(store: Store) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(ApiCall)) or 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 OK"


@pytest.mark.parametrize("provider", registry.names())
def test_a_working_connection_is_checked_with_one_call(cli, store: Store, provider: str) -> None:
    with harness.start(provider, products=3) as running:
        harness.add_connection(store, "shop", running, notify_email="owner@shop.example")
        before = _calls(store)
        result = cli("connections", "test", "shop")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert _calls(store) == before + 1  # one cheap call
    text = result.stdout
    for name in ("credentials", "settings", "notify_email", "email"):
        assert f"shop: {name}" in text, text


@pytest.mark.parametrize("provider,extra", [
    ("xero", {}),
    ("xero", {"tenant_id": "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"}),
    ("lightspeed", {}),
    ("lightspeed", {"account_id": "12345"}),
])  # fmt: skip
def test_a_never_authorised_connection_is_one_message_and_one_exit_code(
    cli, store: Store, provider: str, extra: dict[str, str]
) -> None:
    with harness.start(provider, products=1) as running:
        settings, creds = harness.connection_values(running)
        for key in ("tenant_id", "account_id"):
            settings.pop(key, None)
        settings.update(extra)
        add_connection(store, "c", provider, settings, {"client_secret": creds["client_secret"]})
        outs = [cli(*args) for args in (
            ("pull-products", "-c", "c"),
            ("connections", "test", "c"),
            ("doctor", "-c", "c"),
        )]  # fmt: skip
    said = "connection c has never been authorised: run `synccli connections authorize c`"
    for out in outs:
        assert out.exit_code == 5, out.stdout + out.stderr
        assert said in out.stdout + out.stderr, out.stdout + out.stderr
        # the message names its fix once: no "-> run `...authorize c`" after it again
        assert (out.stdout + out.stderr).count("connections authorize c") == 1, out.stdout
    assert _calls(store) == 0


def test_an_unleashed_key_refusal_says_to_set_the_key_not_to_authorise(cli, store: Store) -> None:
    with harness.start("unleashed", products=1) as running:
        settings, _ = harness.connection_values(running)
        add_connection(store, "u", "unleashed", settings, {"api_key": "not-the-account-key"})
        result = cli("connections", "test", "u")
    text = result.stdout + result.stderr
    assert result.exit_code == 2, text
    assert "authorize" not in text
    assert "synccli connections set u --secret-stdin" in text
    assert "Unleashed API Access" in text  # where the id and key are shown


def test_it_checks_notify_email_and_the_smtp_server_and_can_send_a_test_email(
    cli, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        with harness.start("xero", products=1) as running:
            harness.add_connection(store, "shop", running)
            monkeypatch.setenv("SYNC_SMTP_HOST", "127.0.0.1")
            monkeypatch.setenv("SYNC_SMTP_SECURITY", "none")
            monkeypatch.setenv("SYNC_SMTP_PORT", str(controller.port))
            no_address = cli("connections", "test", "shop")
            assert no_address.exit_code == 2, no_address.stdout
            assert "notify_email" in no_address.stdout and "not set" in no_address.stdout
            assert (
                cli("connections", "set", "shop", "notify_email=owner@shop.example").exit_code == 0
            )
            sent = cli("connections", "test", "shop", "--send-test-email")
            assert sent.exit_code == 0, sent.stdout + sent.stderr
            assert [m.rcpt_tos for m in inbox.messages] == [["owner@shop.example"]]
            monkeypatch.setenv("SYNC_SMTP_PORT", str(_free_port()))  # nothing listens there
            down = cli("connections", "test", "shop")
    finally:
        controller.stop()
    assert down.exit_code == 1, down.stdout
    assert "shop: email" in down.stdout and "SYNC_SMTP_HOST" in down.stdout


def test_it_reports_a_stale_lease_and_a_stored_budget_block(cli, store: Store) -> None:
    with harness.start("xero", products=1) as running:
        conn = harness.add_connection(store, "shop", running, notify_email="owner@shop.example")
        now = datetime.now(UTC)
        with store.session() as s:
            s.add(Lease(job="pull-products", connection_id=conn.id, owner="gone-host:1:2:3:4",
                        expires_at=now - timedelta(minutes=5)))  # fmt: skip
        limits = connector_class("xero").capabilities.limits
        StoreLedger(store, conn.id, limits).exhausted(
            "day", now + timedelta(hours=20), "GET /Items: the day's limit (HTTP 429)"
        )
        result = cli("connections", "test", "shop")
    text = result.stdout
    assert result.exit_code == 3, text
    assert "pull-products" in text and "stale" in text
    assert "stored budget block until" in text
    assert "synccli connections unblock shop" in text


def test_a_stored_block_says_so_names_no_call_and_can_be_lifted(cli, store: Store) -> None:
    with harness.start("xero", products=2) as running:
        conn = harness.add_connection(store, "shop", running, notify_email="owner@shop.example")
        until = datetime.now(UTC) + timedelta(hours=20)
        limits = connector_class("xero").capabilities.limits
        StoreLedger(store, conn.id, limits).exhausted(
            "day", until, "GET /Items answered 429 (X-Rate-Limit-Problem: day)"
        )
        before = _calls(store)
        blocked = cli("pull-products", "-c", "shop")
        assert blocked.exit_code == 3, blocked.stderr
        assert _calls(store) == before  # no call made
        line = blocked.stderr
        assert "stored budget block" in line and "no call was made" in line, line
        assert f"{until:%Y-%m-%d %H:%M} UTC" in line, line
        assert "synccli connections unblock shop" in line, line
        lifted = cli("connections", "unblock", "shop")
        assert lifted.exit_code == 0 and "lifted" in lifted.stdout
        again = cli("pull-products", "-c", "shop")
    assert again.exit_code == 0, again.stderr


def test_calls_made_by_a_dry_run_count_in_the_ledger_and_status(cli, store: Store) -> None:
    with harness.start("xero", products=2) as running:
        harness.add_connection(store, "shop", running, notify_email="owner@shop.example")
        before = _calls(store)
        dry = cli("pull-products", "-c", "shop", "--dry-run")
        assert dry.exit_code == 0, dry.stderr
        assert _calls(store) == before + 1  # Xero's Items: one call, made and counted
        status = cli("status", "-c", "shop", "--json")
    assert status.exit_code == 0, status.stderr
    shown = json.loads(status.stdout)
    entry = shown[0] if isinstance(shown, list) else shown
    assert entry["calls"]["today"] == 1, entry["calls"]


def test_an_unleashed_key_refused_in_a_job_says_to_set_the_key_everywhere(
    cli, store: Store, _isolated_env
) -> None:
    with harness.start("unleashed", products=1) as running:
        settings, _ = harness.connection_values(running)
        add_connection(store, "u", "unleashed", settings, {"api_key": "wrong"}, "o@shop.example")
        job = cli("pull-products", "-c", "u")
        status = cli("status", "-c", "u")
    assert job.exit_code == 5, job.stderr
    assert "synccli connections set u --secret-stdin" in status.stdout, status.stdout
    assert "re-authoris" not in status.stdout
    (mail,) = list((_isolated_env / "outbox").glob("*.eml"))
    body = mail.read_text()
    assert "authoris" not in body and "API key" in body, body
    assert "Unleashed API Access" in body.replace("=\n", "")
