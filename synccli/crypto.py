"""Credentials at rest: a Fernet key from ``SYNC_SECRET_KEY`` or a key file made on first use."""

from __future__ import annotations

import json
import os
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
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(
                "SYNC_SECRET_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
        return key
    path = settings.data_dir / KEY_FILE
    if path.exists():
        return path.read_bytes().strip()
    if not create:
        raise ConfigError(
            f"no secret key: the store holds credentials sealed with a key; set SYNC_SECRET_KEY "
            f"or restore {path}"
        )
    ensure_private_dir(settings.data_dir)
    key = Fernet.generate_key()
    # O_EXCL: two first runs at once must not write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot create key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    return key


class Vault:
    """Encrypts and decrypts a connection's credentials (a JSON object)."""

    def __init__(self, key: bytes) -> None:
        self.fernet = Fernet(key)

    def seal(self, values: dict[str, Any]) -> str:
        return self.fernet.encrypt(json.dumps(values).encode()).decode()

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
