"""Hostile input: bad order files fed to ``synccli invoices add`` and bad configuration.

Acceptance: each is a one-line error naming the problem, exit 2, no row written, no traceback.

Every case runs against its own copy of one prepared data directory (a store with connection
``shop`` and one order ``EXIST-1`` already added), so "no row written" is checked per case by
comparing every table's row count. Every case goes through the CLI's entry point in this process
(fast); one of each kind the issue names also through ``python -m synccli`` in a fresh process,
as cron runs it (three at a time). A case the code does not hold up to yet can carry
``xfail=reason`` (strict).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from hostile.support import TABLES, cli_env, row_counts, run_cli
from typer.testing import CliRunner

from synccli.config import load_settings
from synccli.store.connections import add_connection
from synccli.store.db import Store
from synccli.sync.orders import MAX_LINE, add_orders

pytestmark = pytest.mark.reliability

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --- the corpus -------------------------------------------------------------------------------
def good(number: str = "H-1", **changes: Any) -> dict[str, Any]:
    """A valid order (10.00 + 15% tax), with top-level or first-line fields replaced."""
    line = {
        "sku": "SKU-00001",
        "description": "Blue mug",
        "quantity": 1,
        "unit_price": "10.00",
        "tax_code": "OUTPUT2",
        "tax_rate": "0.15",
    }
    order: dict[str, Any] = {
        "number": number,
        "date": "2026-01-05",
        "currency": "NZD",
        "customer": {"email": "jane@example.com", "name": "Jane Smith"},
        "lines": [line],
        "total": "11.50",
    }
    for key, value in changes.items():
        if key.startswith("line_"):
            line[key[5:]] = value
        else:
            order[key] = value
    return order


def lines(*orders: Any) -> bytes:
    return ("\n".join(json.dumps(o) for o in orders) + "\n").encode()


def _huge_line(case_dir: Path) -> None:
    filler = "x" * (MAX_LINE + 1024)
    with (case_dir / "orders.jsonl").open("w", encoding="utf-8") as fh:
        fh.write(lines(good("OK-1")).decode())
        fh.write(json.dumps(good("BIG-1", line_description=filler)) + "\n")


def _deeply_nested(case_dir: Path) -> None:
    (case_dir / "orders.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")


def _lone_surrogate() -> bytes:
    # JSON allows the escape \ud800 on its own; no encoder can store the string it decodes to.
    text = json.dumps(good("SUR-1", customer={"email": "sur@example.com", "name": "SURROGATE"}))
    return (text.replace("SURROGATE", "Zo\\ud800e") + "\n").encode()


def _remove_key(case_dir: Path) -> None:
    (case_dir / "secret.key").unlink()


def _unknown_stored_provider(case_dir: Path) -> None:
    with sqlite3.connect(case_dir / "synccli.db") as db:
        db.execute("UPDATE connections SET provider = 'quickbooks'")


def _file_in_the_way(case_dir: Path) -> None:
    (case_dir / "not-a-dir").write_text("a file where the data directory should be\n")


@dataclass
class Case:
    id: str
    args: list[str]
    expect: str  # the one error line contains this (case-insensitive)
    orders: bytes | None = None  # written to orders.jsonl in the case's directory
    stdin: bytes | None = None
    env: dict[str, str] = field(default_factory=dict)  # {dir} is the case's data directory
    prepare: Callable[[Path], None] | None = None
    xfail: str | None = None
    code: int = 2
    process: bool = False  # also through ``python -m synccli`` in a fresh process


ADD = ["invoices", "add", "{dir}/orders.jsonl", "-c", "shop"]
BAD_ORDERS = [
    Case(
        "invalid-json",
        ADD,
        "invalid JSON",
        b'{"number": "H-1", "date": "2026-01-05",\n  "currency": \n',
        process=True,
    ),
    Case(
        "truncated-jsonl",
        ADD,
        "line 2: invalid JSON",
        lines(good("H-1")) + b'{"number": "H-2", "date": "2026-0',
    ),
    Case("nan", ADD, "NaN", lines(good()).replace(b'"quantity": 1', b'"quantity": NaN')),
    Case(
        "deeply-nested",
        ADD,
        "invalid JSON",
        prepare=_deeply_nested,
    ),
    Case(
        "int-too-long",
        ADD,
        "invalid JSON",
        lines(good()).replace(b'"quantity": 1', b'"quantity": 1' + b"0" * 5000),
    ),
    Case(
        "wrong-type-quantity",
        ADD,
        "lines[0].quantity must be a number",
        lines(good(line_quantity="two")),
    ),
    Case(
        "wrong-type-quantity-bool",
        ADD,
        "lines[0].quantity must be a number",
        lines(good(line_quantity=True)),
    ),
    Case(
        "wrong-type-lines", ADD, "lines must be an array", lines(good(lines={"sku": "SKU-00001"}))
    ),
    Case(
        "wrong-type-customer",
        ADD,
        "customer must be an object",
        lines(good(customer="jane@example.com")),
    ),
    Case("wrong-type-order", ADD, "expected a JSON object", b'["H-1", "H-2"]\n'),
    Case("wrong-type-top-level", ADD, "expected a JSON object", b"42\n"),
    Case("wrong-type-currency", ADD, "currency must be a string", lines(good(currency=554))),
    Case(
        "negative-quantity",
        ADD,
        "lines[0].quantity must not be negative",
        lines(good(line_quantity=-2, total="-23.00")),
    ),
    Case("tax-rate-percent", ADD, "tax_rate must be at most 1", lines(good(line_tax_rate=15))),
    Case(
        "too-many-places", ADD, "more than 4 decimal places", lines(good(line_quantity="0.00001"))
    ),
    Case("huge-number", ADD, "too large", lines(good(line_unit_price="1e400"))),
    Case(
        "unknown-currency",
        ADD,
        "'ZZZ' is not an ISO 4217 currency code",
        lines(good(currency="ZZZ")),
    ),
    Case("total-mismatch", ADD, "total 1.00 does not match", lines(good(total="1.00"))),
    Case(
        "missing-sku-line-3",
        ADD,
        "line 3: lines[0].sku is required",
        lines(good("H-1"), good("H-2"), good("H-3", line_sku=None)),
    ),
    Case("unknown-field", ADD, "did you mean unit_price", lines(good(line_unit_prce="10.00"))),
    Case("bad-date", ADD, "date is not a date", lines(good(date="2026-13-45"))),
    Case(
        "bad-email",
        ADD,
        "customer.email is not an email address",
        lines(good(customer={"email": "not-an-email", "name": "X"})),
    ),
    Case("control-characters", ADD, "number contains control characters", lines(good("H\u0000-1"))),
    Case(
        "lone-surrogate",
        ADD,
        "customer.name contains an invalid character",
        _lone_surrogate(),
    ),
    Case(
        "duplicate-in-file",
        ADD,
        "'DUP-1' appears twice in the input",
        lines(good("DUP-1"), good("DUP-1")),
    ),
    Case(
        "duplicate-existing",
        ADD,
        "'EXIST-1' already exists",
        lines(good("NEW-1"), good("EXIST-1")),
        process=True,
    ),
    Case("line-over-10mb", ADD, "longer than 10 MB", prepare=_huge_line, process=True),
    Case(
        "non-utf8",
        ADD,
        "not UTF-8",
        lines(good()).replace(b"Jane Smith", "Zoë Smith".encode("latin-1")),
        process=True,
    ),
    Case("binary", ADD, "not UTF-8", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"),
    Case("empty", ADD, "no orders in the input", b""),
    Case("blank-lines-only", ADD, "no orders in the input", b"\n\n   \n"),
    Case(
        "stdin-non-utf8",
        ["invoices", "add", "-", "-c", "shop"],
        "not UTF-8",
        stdin=b'{"number": "\xe9"}\n',
        process=True,
    ),
    Case("directory", ["invoices", "add", "{dir}", "-c", "shop"], "is a directory"),
    Case("missing-file", ["invoices", "add", "{dir}/nope.jsonl", "-c", "shop"], "cannot read"),
    Case(
        "unknown-connection",
        ["invoices", "add", "{dir}/orders.jsonl", "-c", "nope"],
        "no connection named 'nope'",
        lines(good()),
    ),
]
NEW_KEY = Fernet.generate_key().decode()
BAD_CONFIG = [
    Case(
        "unknown-provider-add",
        ["connections", "add", "other", "--provider", "nope", "--client-id", "abc"],
        "unknown provider 'nope'",
        process=True,
    ),
    Case(
        "unknown-provider-serve",
        ["sandbox", "serve", "--provider", "nope", "--seconds", "0.1"],
        "unknown provider 'nope'",
    ),
    Case(
        "unknown-provider-stored",
        ["pull-products", "-c", "shop"],
        "unknown provider",
        prepare=_unknown_stored_provider,
    ),
    Case(
        "database-url-nonsense",
        ADD,
        "SYNC_DATABASE_URL is not a database URL",
        lines(good()),
        env={"SYNC_DATABASE_URL": "nonsense"},
        process=True,
    ),
    Case(
        "database-url-unsupported",
        ADD,
        "unsupported database 'mysql'",
        lines(good()),
        env={"SYNC_DATABASE_URL": "mysql://shop@127.0.0.1/shop"},
    ),
    Case(  # a store outage, not bad input: a later run may succeed (issue 17)
        "database-unreachable",
        ADD,
        "store unavailable: the database server cannot be reached",
        lines(good()),
        env={"SYNC_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/none"},
        code=1,
    ),
    Case(
        "secret-key-changed-show",
        ["connections", "show", "shop"],
        "stored credentials cannot be decrypted",
        env={"SYNC_SECRET_KEY": NEW_KEY},
    ),
    Case(
        "secret-key-changed-job",
        ["pull-products", "-c", "shop"],
        "stored credentials cannot be decrypted",
        env={"SYNC_SECRET_KEY": NEW_KEY},
        process=True,
    ),
    Case(
        "secret-key-file-removed",
        ["connections", "show", "shop"],
        "set SYNC_SECRET_KEY or restore",  # and no new key is made in its place
        prepare=_remove_key,
        process=True,
    ),
    Case(
        "secret-key-invalid",
        ["connections", "show", "shop"],
        "not a valid Fernet key",
        env={"SYNC_SECRET_KEY": "not-a-fernet-key"},
    ),
    Case(
        "data-dir-unwritable",
        ["db", "upgrade"],  # the one command that creates a store (issue 18, line 15)
        "cannot be created",
        lines(good()),
        env={"SYNC_DATA_DIR": "/sys/synccli-hostile"},
        process=True,
    ),
    Case(
        "data-dir-is-a-file",
        ["status"],
        "cannot be created",
        prepare=_file_in_the_way,
        env={"SYNC_DATA_DIR": "{dir}/not-a-dir"},
    ),
    Case(
        "log-file-unwritable",
        ["--log-file", "/proc/nonexistent/sync.log", "status"],
        "cannot open log file",
    ),
    Case("smtp-port", ["status"], "SYNC_SMTP_PORT must be a number", env={"SYNC_SMTP_PORT": "25x"}),
    Case(
        "lease-seconds",
        ["pull-products", "-c", "shop"],
        "SYNC_LEASE_SECONDS",
        env={"SYNC_LEASE_SECONDS": "ten"},
    ),
]
if not IS_ROOT:  # root writes anywhere: the permission bits cannot stop it
    BAD_CONFIG.append(
        Case(
            "data-dir-read-only",
            ADD,
            "not writable",
            lines(good()),
            prepare=lambda d: d.chmod(0o500),
        )
    )
CASES = BAD_ORDERS + BAD_CONFIG
CONTROL = Case(
    "control-valid-file", ADD, "", lines(good("OK-1"), good("OK-2")), code=0, process=True
)


# --- running them ------------------------------------------------------------------------------
@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    before: dict[str, int]
    after: dict[str, int]


def _counts(data_dir: Path) -> dict[str, int]:
    store = Store(load_settings(f"sqlite:///{data_dir / 'synccli.db'}", str(data_dir)))
    try:
        return row_counts(store, TABLES)
    finally:
        store.dispose()


def _prepare(case: Case, template: Path, case_dir: Path) -> tuple[list[str], dict[str, str]]:
    shutil.copytree(template, case_dir)
    if case.orders is not None:
        (case_dir / "orders.jsonl").write_bytes(case.orders)
    if case.prepare is not None:
        case.prepare(case_dir)
    env = {"SYNC_DATA_DIR": str(case_dir)}
    env.update({k: v.replace("{dir}", str(case_dir)) for k, v in case.env.items()})
    return [a.replace("{dir}", str(case_dir)) for a in case.args], env


def _in_process(case: Case, template: Path, root: Path) -> Outcome:
    """Through the CLI's own entry point in this process (fast: most of the corpus)."""
    from synccli.cli.main import app

    case_dir = root / f"{case.id}-in-process"
    args, env = _prepare(case, template, case_dir)
    before = _counts(case_dir)
    unset: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("SYNC_") and k not in env
    }
    result = CliRunner().invoke(app, args, input=case.stdin, env={**unset, **env})
    case_dir.chmod(0o700)
    return Outcome(result.exit_code, result.stdout, result.stderr, before, _counts(case_dir))


def _in_a_process(case: Case, template: Path, root: Path, machine: dict[str, str]) -> Outcome:
    """Through ``python -m synccli`` in a fresh process, as cron runs it (``machine``: the
    environment, read before the in-process cases began changing ``os.environ``)."""
    case_dir = root / f"{case.id}-process"
    args, env = _prepare(case, template, case_dir)
    before = _counts(case_dir)
    done = run_cli(args, cli_env(case_dir, base=machine, **env), stdin=case.stdin, timeout=120)
    case_dir.chmod(0o700)
    return Outcome(done.returncode, done.stdout, done.stderr, before, _counts(case_dir))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Outcome]]:
    """Prepare one data directory, then run every case (and a valid control) on a copy of it:
    bad orders in this process, configuration (and a few orders) in fresh processes."""
    root = tmp_path_factory.mktemp("hostile-input")
    template = root / "template"
    store = Store(load_settings(f"sqlite:///{template / 'synccli.db'}", str(template)))
    store.upgrade()
    conn = add_connection(
        store,
        "shop",
        "xero",
        {"base_url": "http://127.0.0.1:9", "client_id": "CLIENT", "tenant_id": "t-1"},
        {
            "client_secret": "hostile-secret-0123456789",
            "access_token": "hostile-access-0123456789",
            "refresh_token": "hostile-refresh-0123456789",
        },
    )
    add_orders(store, conn, lines(good("EXIST-1")))
    store.dispose()
    runs = root / "runs"
    runs.mkdir()
    results: dict[tuple[str, str], Outcome] = {}
    machine = dict(os.environ)  # before any thread: the in-process cases change os.environ
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            (c.id, "process"): pool.submit(_in_a_process, c, template, runs, machine)
            for c in [*CASES, CONTROL]
            if c.process
        }
        for c in [*CASES, CONTROL]:
            results[(c.id, "in-process")] = _in_process(c, template, runs)
        results.update({key: f.result() for key, f in futures.items()})
    yield results


def _params() -> list[Any]:
    out = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        modes = ["in-process", "process"] if case.process else ["in-process"]
        out += [pytest.param(case, mode, id=f"{case.id}-{mode}", marks=marks) for mode in modes]
    return out


@pytest.mark.parametrize("mode", ["in-process", "process"])
def test_control_valid_file_is_added(outcomes: dict[tuple[str, str], Outcome], mode: str) -> None:
    """The harness itself: a valid file through the same path is accepted and written."""
    out = outcomes[(CONTROL.id, mode)]
    assert out.code == 0, out.stderr
    assert out.after["orders"] == out.before["orders"] + 2
    assert out.after["invoice_jobs"] == out.before["invoice_jobs"] + 2


@pytest.mark.parametrize(("case", "mode"), _params())
def test_hostile_input_is_one_line_exit_2_nothing_written(
    case: Case, mode: str, outcomes: dict[tuple[str, str], Outcome]
) -> None:
    out = outcomes[(case.id, mode)]
    lines_out = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr + out.stdout
    assert out.code == case.code, out.stderr
    assert len(lines_out) == 1, out.stderr
    assert lines_out[0].startswith("error: ")
    assert case.expect.lower() in lines_out[0].lower(), lines_out[0]
    assert "internal error" not in lines_out[0]
    assert len(lines_out[0]) < 400, "one readable line, not a dump of the input"
    assert out.after == out.before, "a row was written"


def test_corpus_covers_the_issue() -> None:
    """The issue's list: invalid JSON, wrong types, negative quantities, unknown currency,
    duplicate order numbers, 10 MB lines, non-UTF-8; unknown provider, malformed database URL,
    missing secret key, unwritable data directory."""
    ids = {c.id for c in CASES}
    for needed in (
        "invalid-json",
        "wrong-type-quantity",
        "negative-quantity",
        "unknown-currency",
        "duplicate-in-file",
        "duplicate-existing",
        "line-over-10mb",
        "non-utf8",
        "unknown-provider-add",
        "database-url-nonsense",
        "secret-key-changed-show",
        "secret-key-file-removed",
        "data-dir-unwritable",
    ):
        assert needed in ids
