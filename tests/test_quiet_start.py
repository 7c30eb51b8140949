"""A cron run with nothing to do is cheap: the CLI imports what the command runs, not every
command's machinery (alembic's migration environment, the connectors and their HTTP stack, the
terminal renderer), and the schema check reads the stored version against the newest migration
file's without alembic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from synccli.store.db import Store, _alembic_head, head_revision

# Not needed to parse a command line whose options are left at their defaults (typer checks
# values with pydantic adapters it builds on first use).
PARSING = ("pydantic", "typer._adapters")
# Not needed to find out that nothing is due with no connection to serve.
HEAVY = (
    *PARSING,
    "alembic",
    "mako",
    # the store's library and its mapped classes: the driver's own connection finds that no
    # connection has anything to do
    "sqlalchemy",
    "synccli.store.models",
    "requests",
    "urllib3",
    "rich",
    "cryptography",
    "rapidfuzz",
    "synccli.connectors",
    "synccli.sandbox",
    "synccli.sync.context",
    "synccli.sync.status",
    "synccli.sync.plan",
    "dotenv",  # no .env file to read where cron runs
    # the other commands' modules: a command's module is imported when the command is named
    *(
        f"synccli.cli.{module}"
        for module in (
            "commands_db",
            "commands_connections",
            "commands_status",
            "commands_sandbox",
            "commands_products",
            "commands_customers",
            "commands_ops",
            "commands_providers",
            "commands_webhooks",
        )
    ),
)
RUN = (
    "import sys\n"
    "sys.argv = ['synccli', 'post-invoices', '--all']\n"
    "from synccli.cli.main import app\n"
    "try:\n"
    "    app(prog_name='synccli')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print('\\n' + __import__('json').dumps([code, sorted(sys.modules)]))\n"
)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # compiled once into the test's directory, as an installed package's modules are
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
    return env


def test_the_newest_migration_is_read_from_the_files_as_alembic_reads_it() -> None:
    assert head_revision() == _alembic_head()


def test_a_store_without_a_schema_has_no_revision_and_an_upgraded_one_the_newest(
    store: Store, tmp_path: Path
) -> None:
    assert store.current_revision() == head_revision()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
    assert store.current_revision() is None


def test_a_quiet_post_invoices_run_imports_no_migration_or_job_machinery(
    store: Store, tmp_path: Path
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", RUN],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    code, modules = json.loads(out.stdout.splitlines()[-1])
    assert code in (0, None), out.stderr
    loaded = [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert not loaded


def test_options_given_on_the_command_line_are_still_checked_and_converted(
    store: Store, tmp_path: Path
) -> None:
    def synccli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "synccli", *args]
        return subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True)

    bad = synccli("post-invoices", "--all", "--limit", "many")
    assert bad.returncode == 2 and "Invalid value for '--limit'" in bad.stderr
    assert "valid integer" in bad.stderr
    low = synccli("post-invoices", "--all", "--limit", "0")
    assert low.returncode == 2 and "greater than or equal to 1" in low.stderr
    fine = synccli("-v", "-v", "post-invoices", "-c", "a", "-c", "b", "--limit", "3")
    assert fine.returncode == 2 and "no connection named 'a'" in fine.stderr
    assert "synccli started" in fine.stderr  # -vv counted: debug logging
    logs = tmp_path / "cron.log"
    ok = synccli("--log-format", "json", "--log-file", str(logs), "post-invoices", "--all")
    assert ok.returncode == 0, ok.stderr
    assert logs.exists()


def test_each_command_is_built_from_the_module_named_for_it_and_listed_in_the_old_order() -> None:
    """``COMMANDS`` says which module registers each command: a command missing from it, or
    named with the wrong module, could not be run by its name."""
    import typer

    from synccli.cli.main import COMMANDS, _build, app, register

    modules = dict.fromkeys(COMMANDS.values())
    for module in modules:
        root = typer.Typer()
        register(root, module)
        built = typer.main.get_group(root).commands
        assert set(built) == {name for name, m in COMMANDS.items() if m == module}
    # a command line builds the command it names, and that one only
    for name, module in COMMANDS.items():
        assert list(_build([module], only=name)) == [name]
    # help lists them as registering every module on the app, in this order, always did
    every = typer.Typer()
    for module in modules:
        register(every, module)
    listed = list(typer.main.get_group(every).commands)
    assert list(typer.main.get_command(app).commands) == listed  # type: ignore[attr-defined]
    assert listed[:3] == ["status", "pull-products", "sweep-oldest"]
