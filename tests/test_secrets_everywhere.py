"""Secrets: EVERY command, with ``-v`` and a ``--log-file``, on a configured connection of each
provider; no client secret, API key, access or refresh token (read from the store's decrypted
credentials before and after, so refreshed and re-authorised tokens count too) appears in stdout,
stderr, the log file, a ``--dry-run`` plan or an email in the outbox.

The commands are found by walking the typer app (``typer.main.get_command``): a command added
later without an entry in :func:`invocations` fails :func:`test_every_command_is_covered`.

Most commands run through the CLI's entry point in this process, with the process-wide redaction
registry emptied before each one (as a fresh process starts: a command must register what it
loads, or its own redaction would not know the value). ``connections authorize`` runs in a real
process while this test plays the browser; ``demo`` runs in a real process, cut short after a few
seconds (it uses a throwaway store of its own).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import typer
from hostile.support import cli_env, jsonl, orders_for, spawn
from sqlalchemy import select

from synccli import registry
from synccli import secrets as secret_registry
from synccli.cli.main import app
from synccli.sandbox import harness
from synccli.store.connections import credentials, get_connection, list_connections, set_values
from synccli.store.db import Store
from synccli.store.models import Customer, Link

pytestmark = pytest.mark.reliability

PROVIDERS = registry.suite_names()
SCALE = {**dict.fromkeys(PROVIDERS, 1000.0), "lightspeed": 200.0}
SECRET_FIELDS = (
    "client_secret",
    "api_key",
    "access_token",
    "refresh_token",
    "webhook_key",
    "webhook_signing_key",
)
FAKE = {  # secrets typed on the command line for `connections add` / `set`
    "client_secret": "typed-client-secret-4f9a1c27e0",
    "api_key": "typed-api-key-0b8e55d1c3a7",
}


def walk_commands() -> set[str]:
    """Every leaf command of the app, as "group sub" paths."""
    found: set[str] = set()

    def walk(cmd: Any, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        else:
            found.add(" ".join(path))

    walk(typer.main.get_command(app), [])
    return found


# providers whose `webhooks subscribe` prints steps (X-Series' calls the simulator's API)
WEBHOOK_STEPS = tuple(
    p.name
    for p in registry.providers()
    if p.webhooks and p.webhooks.subscription is not registry.Subscription.API
)


def store_secrets(store: Store) -> set[str]:
    """Every secret value the store holds now, decrypted."""
    found: set[str] = set()
    for conn in list_connections(store):
        creds = credentials(store, conn)
        found.update(str(creds[k]) for k in SECRET_FIELDS if creds.get(k))
    return found


def invocations(
    provider: str,
    orders_file: Path,
    current_secret: Callable[[], str],
    linked_customer: Callable[[], tuple[str, str]],
) -> Iterator[list[str]]:
    """Each command with sensible arguments, in an order where each finds what it needs (the two
    callables read the store at the moment the invocation is made)."""
    secret_key = "api_key" if provider == "unleashed" else "client_secret"
    add_extra = ["connections", "add", "extra", "--provider", provider, "--json"]
    # secrets never go on a command line: `add` reads them from the environment (or stdin)
    if provider == "unleashed":
        add_extra += ["--api-id", "typed-api-id"]
        secret_env = {"SYNC_API_KEY": FAKE["api_key"]}
    else:
        add_extra += ["--client-id", "typed-client-id"]
        secret_env = {"SYNC_CLIENT_SECRET": FAKE["client_secret"]}
    yield ["db", "upgrade"]
    yield ["db", "current", "--json"]
    yield ["connections", "list"]
    yield ["connections", "list", "--json"]
    yield ["connections", "show", "shop"]
    yield ["connections", "show", "shop", "--json"]
    os.environ.update(secret_env)
    yield add_extra
    for var in secret_env:
        del os.environ[var]
    # secrets never go on a command line: `set` takes them from the environment (or stdin)
    os.environ["TYPED_SECRET"] = FAKE[secret_key]
    yield [
        "connections",
        "set",
        "extra",
        "--secret-env",
        "TYPED_SECRET",
        "notify_email=a@b.example",
    ]
    yield ["connections", "remove", "extra", "--force"]
    os.environ["TYPED_SECRET"] = current_secret()
    yield ["connections", "set", "shop", "--secret-env", "TYPED_SECRET"]
    yield ["doctor"]
    yield ["connections", "test", "shop"]
    yield ["connections", "unblock", "shop"]
    yield ["connections", "ids", "shop"]
    yield ["doctor", "--json"]
    yield ["pull-products", "-c", "shop", "--dry-run"]
    yield ["pull-products", "-c", "shop", "--dry-run", "--json"]
    yield ["pull-products", "-c", "shop"]
    yield ["pull-products", "--all", "--json"]
    yield ["sweep-oldest", "5", "-c", "shop", "--dry-run"]
    yield ["sweep-oldest", "5", "-c", "shop", "--json"]
    yield ["sync-product", "SKU-00001", "-c", "shop", "--dry-run"]
    yield ["sync-product", "SKU-00002", "-c", "shop", "--json"]
    yield ["link-customers", "-c", "shop", "--dry-run"]
    yield ["link-customers", "-c", "shop"]
    yield ["invoices", "add", str(orders_file), "-c", "shop"]
    yield ["invoices", "cancel", "SEC-0003"]
    yield ["invoices", "list"]
    yield ["post-invoices", "-c", "shop", "--dry-run"]
    yield ["post-invoices", "-c", "shop", "--dry-run", "--json"]
    yield ["post-invoices", "-c", "shop"]
    yield ["invoices", "show", "SEC-0001"]
    yield ["invoices", "show", "SEC-0001", "--json"]
    yield ["invoices", "retry", "SEC-0003"]
    yield ["post-invoices", "--all", "--json"]
    yield ["invoices", "list", "--json"]
    yield ["trace", "product", "SKU-00001"]
    yield ["trace", "invoice", "SEC-0001", "--json"]
    email, remote = linked_customer()
    yield ["trace", "customer", email]
    yield ["customers", "list"]
    yield ["customers", "list", "--json"]
    yield ["customers", "review", "-c", "shop"]
    yield ["customers", "unlink", email, "-c", "shop"]
    yield ["customers", "link", email, remote, "-c", "shop", "--json"]
    yield ["status"]
    yield ["status", "--json"]
    yield ["plan", "--products", "5000", "--customers", "3000", "--orders-per-day", "50"]
    yield ["providers"]
    yield ["providers", provider, "--json"]
    yield [
        "sandbox",
        "serve",
        "--provider",
        provider,
        "--products",
        "3",
        "--seconds",
        "0.5",
        "--connect",
        "served",
    ]
    yield ["connections", "show", "served", "--json"]
    yield ["connections", "remove", "served", "--force"]
    yield ["webhooks", "serve", "--port", "0", "--seconds", "0.2"]
    if provider in WEBHOOK_STEPS:
        yield ["webhooks", "subscribe", "-c", "shop", "--url", "https://hooks.shop.example"]
    elif provider == "lightspeed-x":  # through the simulator's POST /webhooks: loopback only
        yield ["webhooks", "subscribe", "-c", "shop", "--url", "http://127.0.0.1:9", "--json"]
    yield ["webhooks", "status", "-c", "shop", "--json"]
    yield ["webhooks", "apply", "-c", "shop", "--hints", "--json"]


def _linked_customer(store: Store) -> tuple[str, str]:
    with store.session() as s:
        row = s.execute(
            select(Customer.email, Link.remote_id)
            .join(Link, (Link.local_id == Customer.id) & (Link.kind == "customer"))
            .where(Customer.email.is_not(None))
            .order_by(Customer.id)
        ).first()
    assert row is not None, "post-invoices linked no customer"
    return row[0], row[1]


def authorize_in_a_process(env: dict[str, str], log: Path) -> tuple[int, str, str]:
    """``connections authorize shop`` in a real process; this test plays the browser."""
    proc = spawn(
        [
            "-v",
            "--log-file",
            str(log),
            "connections",
            "authorize",
            "shop",
            "--port",
            "0",
            "--timeout",
            "20",
        ],
        env,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    url = None
    for line in proc.stderr:
        seen.append(line)
        match = re.search(r"(https?://\S+response_type=code\S*)", line)  # a consent page
        if match:
            url = match.group(1)
            break
    if url is not None:
        # the provider auto-consents and redirects to the CLI's loopback listener
        requests.get(url, timeout=20, allow_redirects=True)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, "".join(seen) + err


def start_demo(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """``synccli -v demo`` in the background (stopped after a few seconds of output)."""
    scratch = tmp_path / "demo-tmp"
    scratch.mkdir()
    log = tmp_path / "demo.log"
    env = cli_env(tmp_path / "demo-data", HOME=str(scratch), TMPDIR=str(scratch))
    return spawn(["-v", "--log-file", str(log), "demo"], env), log


def stop_demo(proc: subprocess.Popen[str], log: Path) -> list[str]:
    try:
        out, err = proc.communicate(timeout=6)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=30)
    return [out, err, log.read_text() if log.exists() else ""]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_secret_anywhere(
    store: Store,
    cli: Any,
    provider: str,
    tmp_path: Path,
    _isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    demo = start_demo(tmp_path) if provider == "xero" else None
    log = tmp_path / "secrets.log"
    texts: list[str] = []
    ran: set[str] = set()
    commands = walk_commands()
    with harness.start(provider, products=20, customers=10, time_scale=SCALE[provider]) as running:
        harness.add_connection(
            store, "shop", running, notify_email="owner@shop.example", time_scale=SCALE[provider]
        )
        known = store_secrets(store) | set(FAKE.values())
        if provider != "unleashed":  # the first job refreshes the token: new secrets to look for
            set_values(store, "shop", {"expires_at": "2000-01-01T00:00:00+00:00"})
        orders_file = tmp_path / "orders.jsonl"
        orders_file.write_text(jsonl(orders_for(running, provider, 3, "SEC")))
        secret_key = "api_key" if provider == "unleashed" else "client_secret"
        shop_secret = lambda: credentials(store, get_connection(store, "shop"))[secret_key]  # noqa: E731
        monkeypatch.setenv("TYPED_SECRET", "")  # restored after the test
        for args in invocations(
            provider, orders_file, shop_secret, lambda: _linked_customer(store)
        ):
            monkeypatch.setattr(secret_registry, "_secrets", set())  # as a fresh process starts
            verbosity = "-vv" if "--dry-run" in args else "-v"
            result = cli(verbosity, "--log-file", str(log), *args)
            texts += [result.stdout, result.stderr]
            assert "Traceback" not in result.stderr, (args, result.stderr)
            assert "internal error" not in result.stderr, (args, result.stderr)
            assert result.exit_code == 0, (args, result.stderr)
            ran.add(
                next(
                    c
                    for c in sorted(commands, key=len, reverse=True)
                    if args[: len(c.split())] == c.split()
                )
            )
            known |= store_secrets(store)
        env = cli_env(_isolated_env)
        if provider == "unleashed":
            result = cli("-v", "--log-file", str(log), "connections", "authorize", "shop")
            assert result.exit_code == 2 and "nothing to authorise" in result.stderr
            texts += [result.stdout, result.stderr]
        else:
            code, out, err = authorize_in_a_process(env, log)
            assert code == 0, err
            texts += [out, err]
            # the new tokens work: one more job on them
            after = cli("-v", "--log-file", str(log), "pull-products", "-c", "shop")
            assert after.exit_code == 0, after.stderr
            texts += [after.stdout, after.stderr]
        ran.add("connections authorize")
        known |= store_secrets(store)
    if demo is not None:
        texts += stop_demo(*demo)
        ran.add("demo")
    texts.append(log.read_text())
    texts += [p.read_text(errors="replace") for p in (_isolated_env / "outbox").glob("*.eml")]
    everything = "\n".join(texts)

    assert "/" in everything and "GET " in everything, "the -v log did log the calls"
    assert len(known) >= (2 if provider == "unleashed" else 5)
    leaked = sorted(s for s in known if s in everything)
    assert not leaked, f"secrets shown: {[s[:4] + '...' for s in leaked]}"
    missing = commands - ran - ({"demo"} if provider != "xero" else set())
    missing -= set() if provider in (*WEBHOOK_STEPS, "lightspeed-x") else {"webhooks subscribe"}
    assert not missing, f"commands not run: {sorted(missing)}"


def test_every_command_is_covered(tmp_path: Path) -> None:
    """A command added to the app without an invocation here fails this test."""
    commands = walk_commands()
    covered = {"connections authorize", "demo"}  # run on their own in test_no_secret_anywhere
    for args in invocations(
        "xero", tmp_path / "o.jsonl", lambda: "x", lambda: ("a@b.example", "r")
    ):
        covered |= {c for c in commands if args[: len(c.split())] == c.split()}
    assert commands <= covered, f"no invocation for: {sorted(commands - covered)}"
