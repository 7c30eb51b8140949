"""Data shown in the terminal is never read as markup (issue 17, line 16): a product named
``Mug [/red] large``, an order ``M[/b]-1``, a customer ``Ann [bold] Lee`` are printed as they
are by every command that shows them, piped (CliRunner, stdout not a terminal) and on a terminal
(a real process on a pseudo-terminal, where rich renders)."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hostile.support import SYNCCLI, cli_env

from synccli.store.connections import add_connection, get_connection
from synccli.store.db import Store
from synccli.store.models import Event, Link, Product

PRODUCT = "Mug [/red] large"
SKU = "MUG[/i]-1"
ORDER = "M[/b]-1"
CUSTOMER = "Ann [bold] Lee"
EMOJI = "Tea :coffee: cup"  # rich would draw an emoji for :coffee:
ACCOUNT = "4[/u]00"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def shop(store: Store, cli, tmp_path: Path) -> Store:
    """A connection whose product, customer and order carry markup-like text."""
    add_connection(store, "shop", "xero", {"account_code": ACCOUNT}, {"client_secret": "s3cr3t"})
    conn_id = get_connection(store, "shop").id
    with store.session() as s:
        product = Product(
            connection_id=conn_id, sku=SKU, name=PRODUCT, price=Decimal("4.50"), updated_at=NOW
        )
        s.add(product)
        s.flush()
        s.add_all(
            [
                Link(
                    connection_id=conn_id,
                    kind="product",
                    local_id=product.id,
                    remote_id="r-1",
                    remote_code=SKU,
                    created_at=NOW,
                    last_synced_at=NOW,
                ),
                Event(
                    connection_id=conn_id,
                    kind="product",
                    local_id=product.id,
                    field="name",
                    old=EMOJI,
                    new=PRODUCT,
                    at=NOW,
                ),
            ]
        )
    order = {
        "number": ORDER,
        "date": "2026-05-01",
        "currency": "NZD",
        "customer": {"email": "ann@shop.example", "name": CUSTOMER},
        "lines": [{"sku": SKU, "description": PRODUCT, "quantity": 2, "unit_price": "4.50"}],
        "total": "9.00",
    }
    orders = tmp_path / "orders.jsonl"
    orders.write_text(json.dumps(order) + "\n")
    added = cli("invoices", "add", str(orders), "-c", "shop")
    assert added.exit_code == 0, added.stderr
    return store


# (arguments, what stdout must hold verbatim); errors: (arguments, exit code, stderr text)
SHOWN = [
    (["invoices", "list"], [ORDER]),
    (["invoices", "show", ORDER], [ORDER, CUSTOMER, PRODUCT, SKU]),
    (["trace", "invoice", ORDER], [ORDER]),
    (["trace", "product", SKU], [SKU, PRODUCT, EMOJI]),
    (["customers", "list"], [CUSTOMER]),
    (["trace", "customer", "ann@shop.example"], [CUSTOMER]),
    (["post-invoices", "-c", "shop", "--dry-run"], [ORDER]),
    (["connections", "show", "shop"], [ACCOUNT]),
    (["invoices", "retry", ORDER], [ORDER]),
    (["invoices", "cancel", ORDER], [ORDER]),
]
ERRORS = [
    (["invoices", "show", "X[/b]-9"], 2, "X[/b]-9"),
    (["trace", "product", "NO[/red]PE"], 2, "NO[/red]PE"),
]


def test_markup_like_data_is_printed_verbatim_when_piped(shop, cli):
    for args, expected in SHOWN:
        result = cli(*args)
        assert result.exit_code == 0, (args, result)
        for text in expected:
            assert text in result.stdout, (args, text, result.stdout)
    for args, code, text in ERRORS:
        result = cli(*args)
        assert result.exit_code == code, (args, result)
        assert text in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b\][^\x07]*\x07")


def _on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """``synccli ARGS`` with stdout and stderr on a pseudo-terminal 250 columns wide; returns
    the exit code and what the terminal showed, escape sequences removed."""
    import pty
    import struct
    import termios
    from fcntl import ioctl

    leader, follower = pty.openpty()
    ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    env = {**env, "TERM": "xterm-256color", "COLUMNS": "250", "LINES": "50"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*SYNCCLI, *args], env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(leader, 65536)
        except OSError:  # the follower side closed: the process is done
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    code = proc.wait(timeout=60)
    shown = _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")
    return code, shown


@pytest.mark.slow
def test_markup_like_data_is_printed_verbatim_on_a_terminal(shop):
    env = cli_env(shop.settings.data_dir)
    for args, expected in SHOWN:
        code, shown = _on_a_terminal(args, env)
        assert code == 0, (args, shown)
        for text in expected:
            assert text in shown, (args, text, shown)
    for args, want, text in ERRORS:
        code, shown = _on_a_terminal(args, env)
        assert code == want, (args, shown)
        assert text in shown and shown.strip().count("\n") == 0, (args, shown)
