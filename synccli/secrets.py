"""A process-wide registry of secret values, so that anything printed or logged can be scrubbed.

Connectors and the credential store register every token, key and secret they hold; the logging
filter and the CLI renderers pass text through :func:`redact`. Defence in depth: we also never put
secrets in log messages in the first place.
"""

from __future__ import annotations

import logging
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
MASK = "***"


def register(*values: str | None) -> None:
    """Remember values that must never be shown (values under 6 characters would mask noise)."""
    with _lock:
        for value in values:
            if value and len(value) >= 6:
                _secrets.add(value)


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` with ``***``."""
    if not text:
        return text
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    return text


def mask(value: str | None) -> str:
    """How a stored secret is shown: present or not, never its content."""
    return "(set)" if value else "(not set)"


class RedactingFilter(logging.Filter):
    """Scrubs registered secrets from every log record before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
