"""Issue 2: packaging, store and migrations, CLI conventions, connections."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import typer
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from synccli.cli.main import app
from synccli.config import load_settings
from synccli.errors import ExitCode
from synccli.store.db import Store
from synccli.store.models import Base

SECRET = "xero-client-secret-7f3a9c"


def _diff(store: Store) -> list:
    with store.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def test_models_match_migrations_on_sqlite(store: Store) -> None:
    assert _diff(store) == []


@pytest.mark.postgres
def test_models_match_migrations_on_postgres(pg_store: Store) -> None:
    assert _diff(pg_store) == []


def test_secret_never_shown_and_encrypted_at_rest(cli, _isolated_env: Path) -> None:
    assert cli("db", "upgrade").exit_code == 0
    added = cli(
        "connections",
        "add",
        "shop1",
        "--provider",
        "xero",
        "--client-id",
        "app1",
        "--tenant-id",
        "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a",
        env={"SYNC_CLIENT_SECRET": SECRET},  # never on the command line
    )
    assert added.exit_code == 0, added.stderr
    shown = cli("connections", "show", "shop1", "--json")
    assert shown.exit_code == 0
    assert SECRET not in shown.stdout + shown.stderr
    assert '"client_secret": "(set)"' in shown.stdout
    raw = b"".join(p.read_bytes() for p in _isolated_env.glob("synccli.db*"))
    assert raw, "the store file exists"
    assert SECRET.encode() not in raw


def test_secret_from_stdin_is_not_echoed(cli) -> None:
    cli("db", "upgrade")
    added = cli(
        "connections",
        "add",
        "u1",
        "--provider",
        "unleashed",
        "--api-id",
        "id-1",
        "--secret-stdin",
        input=SECRET + "\n",
    )
    assert added.exit_code == 0
    assert SECRET not in added.stdout + added.stderr
    assert "(set)" in cli("connections", "show", "u1", "--json").stdout


def test_unknown_connection_is_one_line_exit_2(cli) -> None:
    cli("db", "upgrade")
    result = cli("connections", "show", "nope")
    assert result.exit_code == ExitCode.USAGE == 2
    assert result.stderr.strip().count("\n") == 0
    assert "nope" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_out_of_date_schema_tells_to_upgrade(cli) -> None:
    result = cli("connections", "list")
    assert result.exit_code == 2
    assert "synccli db upgrade" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_store_and_key_files_are_owner_only(cli, _isolated_env: Path) -> None:
    cli("db", "upgrade")
    cli("connections", "add", "s", "--provider", "xero", env={"SYNC_CLIENT_SECRET": SECRET})
    for name in ("synccli.db", "secret.key"):
        mode = stat.S_IMODE(os.stat(_isolated_env / name).st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"


def test_removed_key_file_is_not_silently_replaced(cli, _isolated_env: Path) -> None:
    """A new key could not open the stored credentials: say what to restore, make none."""
    cli("db", "upgrade")
    cli("connections", "add", "s", "--provider", "xero", env={"SYNC_CLIENT_SECRET": SECRET})
    key = _isolated_env / "secret.key"
    key.unlink()
    shown = cli("connections", "show", "s")
    assert shown.exit_code == 2
    assert "restore" in shown.stderr and str(key) in shown.stderr
    assert not key.exists()


def test_remove_refuses_unknown_provider_and_duplicate(cli) -> None:
    cli("db", "upgrade")
    bad = cli("connections", "add", "x", "--provider", "quickbooks")
    assert bad.exit_code == 2 and "quickbooks" in bad.stderr
    secret = {"SYNC_CLIENT_SECRET": SECRET}
    assert cli("connections", "add", "x", "--provider", "xero", env=secret).exit_code == 0
    again = cli("connections", "add", "x", "--provider", "xero", env=secret)
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert cli("connections", "remove", "x").exit_code == 0
    assert cli("connections", "show", "x").exit_code == 2


def test_config_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """option > environment > .env > default."""
    import synccli.config as config

    (tmp_path / ".env").write_text("SYNC_DATABASE_URL=sqlite:///from-dotenv.db\n")
    monkeypatch.setattr(config, "_loaded", False)
    monkeypatch.delenv("SYNC_DATABASE_URL", raising=False)
    assert load_settings().database_url == "sqlite:///from-dotenv.db"
    monkeypatch.setenv("SYNC_DATABASE_URL", "sqlite:///from-env.db")
    assert load_settings().database_url == "sqlite:///from-env.db"
    assert load_settings("sqlite:///from-option.db").database_url == "sqlite:///from-option.db"
    monkeypatch.delenv("SYNC_DATABASE_URL")
    monkeypatch.delenv("SYNC_DATA_DIR")
    (tmp_path / ".env").unlink()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert (
        load_settings().database_url == f"sqlite:///{tmp_path / 'xdg' / 'synccli' / 'synccli.db'}"
    )


def _commands(group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        path = (*prefix, name)
        if hasattr(cmd, "commands"):
            yield path, cmd
            yield from _commands(cmd, path)
        else:
            yield path, cmd


def test_every_command_has_help_with_description_and_example(cli) -> None:
    group = typer.main.get_command(app)
    paths = list(_commands(group))
    assert len(paths) >= 8
    for path, _cmd in paths:
        result = cli(*path, "--help")
        assert result.exit_code == 0, path
        text = result.stdout
        assert "Example" in text, f"`synccli {' '.join(path)} --help` has no example"
        body = text.split("Usage:", 1)[-1].splitlines()
        assert any(
            line.strip() and not line.strip().startswith(("-", "Usage")) for line in body[1:]
        ), path
