"""Credentials at rest: a Fernet key from ``SYNC_SECRET_KEY`` or a key file made on first use."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from synccli import secrets
from synccli.config import Settings, ensure_private_dir
from synccli.errors import ConfigError

KEY_FILE = "secret.key"


def load_key(settings: Settings, create: bool = True) -> bytes:
    """The Fernet key: the environment's, else the data directory's key file (created 0600)."""
    if settings.secret_key:
        key = settings.secret_key.encode()
        if not _is_key(key):
            raise ConfigError(
                "SYNC_SECRET_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes)"
            )
        return key
    path = settings.data_dir / KEY_FILE
    if path.exists():
        return _read_key_file(path)
    if not create:
        raise ConfigError(
            f"no secret key: the store holds credentials sealed with a key; set SYNC_SECRET_KEY "
            f"or restore {path}"
        )
    ensure_private_dir(settings.data_dir)
    return _write_key_file(path, Fernet.generate_key())


def _is_key(key: bytes) -> bool:
    try:
        Fernet(key)
    except (ValueError, TypeError):
        return False
    return True


def _read_key_file(path: Path) -> bytes:
    """The key in ``path``; an empty, truncated or foreign file is one line naming it (exit 2),
    never replaced: it may be the only copy of the key that opens the stored credentials."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
    if not _is_key(key):
        what = "is empty" if not key else "does not hold a valid key (truncated or not a key)"
        raise ConfigError(
            f"key file {path} {what}: restore it from your backup, or set SYNC_SECRET_KEY"
        )
    return key


def _write_key_file(path: Path, key: bytes) -> bytes:
    """Write ``key`` under a temporary name, then link it into place: a write cut short (full
    disk, killed process) never leaves a broken key file behind, and two first runs at once
    keep the one key that was linked first (a link, unlike a rename, never replaces a file)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)  # mkstemp: mode 0600, a name no other run has
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key_file(path)  # another first run won: its key is the key
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create key file {path}: {exc.strerror}") from None
    return key


class Vault:
    """Encrypts and decrypts a connection's credentials (a JSON object)."""

    def __init__(self, key: bytes) -> None:
        self.fernet = Fernet(key)

    def seal(self, values: dict[str, Any]) -> str:
        return self.fernet.encrypt(json.dumps(values).encode()).decode()

    def opens(self, token: str) -> bool:
        """Whether this key opens ``token`` (sealed credentials)."""
        try:
            self.fernet.decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def open(self, token: str | None) -> dict[str, Any]:
        if not token:
            return {}
        try:
            values = json.loads(self.fernet.decrypt(token.encode()))
        except InvalidToken:
            raise ConfigError(
                "stored credentials cannot be decrypted: the secret key is missing or changed "
                "(set SYNC_SECRET_KEY to the key they were stored with)"
            ) from None
        secrets.register(*(str(v) for v in values.values() if isinstance(v, str)))
        return values


def key_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE
