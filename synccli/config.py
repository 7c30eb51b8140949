"""Configuration: command-line option > environment > .env > default.

Variables (all optional):

- ``SYNC_DATA_DIR``: where the embedded store, the key file and the email outbox live
  (default ``$XDG_DATA_HOME/synccli`` or ``~/.local/share/synccli``).
- ``SYNC_DATABASE_URL``: SQLAlchemy URL (default ``sqlite:///<data dir>/synccli.db``);
  production: ``postgresql+psycopg://user@host/db``.
- ``SYNC_SECRET_KEY``: Fernet key that encrypts credentials at rest (default: generated into
  ``<data dir>/secret.key`` with mode 0600 on first use).
- ``SYNC_SMTP_HOST``, ``SYNC_SMTP_PORT``, ``SYNC_SMTP_SECURITY`` (``starttls``|``ssl``|``none``),
  ``SYNC_SMTP_USER``, ``SYNC_SMTP_PASSWORD``, ``SYNC_SMTP_FROM``: merchant email. Without a host,
  emails are written as ``.eml`` files into ``SYNC_OUTBOX_DIR`` (default ``<data dir>/outbox``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from synccli.errors import ConfigError

_loaded = False


def load_env() -> None:
    """Read ``.env`` from the working directory once; real environment variables win."""
    global _loaded
    if not _loaded:
        path = Path.cwd() / ".env"
        # the parser only for a file to parse: cron runs from a directory without one
        if path.exists():
            from dotenv import load_dotenv

            load_dotenv(path, override=False)
        _loaded = True


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "synccli"


@dataclass
class Settings:
    data_dir: Path
    database_url: str
    secret_key: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = "synccli@localhost"
    outbox_dir: Path | None = None
    lock_timeout: float = 30.0  # seconds a store write waits for another process's lock

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(database_url: str | None = None, data_dir: str | None = None) -> Settings:
    """Settings from options (arguments), the environment, ``.env`` and defaults."""
    load_env()
    env = os.environ
    directory = Path(data_dir or env.get("SYNC_DATA_DIR") or default_data_dir()).expanduser()
    url = database_url or env.get("SYNC_DATABASE_URL") or f"sqlite:///{directory / 'synccli.db'}"
    _check_url(url)
    port_text = env.get("SYNC_SMTP_PORT", "587")
    if not port_text.isdigit():
        raise ConfigError(f"SYNC_SMTP_PORT must be a number, got {port_text!r}")
    security = env.get("SYNC_SMTP_SECURITY", "starttls").lower()
    if security not in ("starttls", "ssl", "none"):
        raise ConfigError(f"SYNC_SMTP_SECURITY must be starttls, ssl or none, got {security!r}")
    outbox = env.get("SYNC_OUTBOX_DIR")
    lock_text = env.get("SYNC_LOCK_TIMEOUT", "30")
    try:
        lock_timeout = float(lock_text)
    except ValueError:
        lock_timeout = -1.0
    if not 0 < lock_timeout <= 3600:
        raise ConfigError(
            f"SYNC_LOCK_TIMEOUT must be a number of seconds (at most 3600), got {lock_text!r}"
        )
    return Settings(
        data_dir=directory,
        database_url=url,
        secret_key=env.get("SYNC_SECRET_KEY") or None,
        smtp_host=env.get("SYNC_SMTP_HOST") or None,
        smtp_port=int(port_text),
        smtp_security=security,
        smtp_user=env.get("SYNC_SMTP_USER") or None,
        smtp_password=env.get("SYNC_SMTP_PASSWORD") or None,
        smtp_from=env.get("SYNC_SMTP_FROM", "synccli@localhost"),
        outbox_dir=Path(outbox) if outbox else directory / "outbox",
        lock_timeout=lock_timeout,
    )


def _check_url(url: str) -> None:
    from synccli.store.quick import plain_address

    if plain_address(url) is not None:
        return  # a form SQLAlchemy reads the same way: checked without importing it
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"SYNC_DATABASE_URL is not a database URL: {_hide_password(url)!r} "
            "(expected e.g. sqlite:///path/synccli.db or postgresql+psycopg://user@host/db)"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"SYNC_DATABASE_URL: unsupported database {parsed.get_backend_name()!r} "
            "(use sqlite or postgresql)"
        )


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) or say in one line why it cannot be used."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"data directory {path} cannot be created: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"data directory {path} is not writable")
    return path
