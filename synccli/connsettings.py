"""Every setting a connection may hold, per provider, and a check of each value where it enters.

A mistyped key (``acount_code``) or value (``give_up_after=7 days``) would otherwise be stored and
found only when a job reads it, hours later, under cron. ``connections add`` and ``connections
set`` check here first and stop with exit 2 naming the key; nothing is written.

The keys, their meaning, defaults and checks are the provider registry's (synccli/registry.py);
this module applies them.
"""

from __future__ import annotations

from typing import Any

from synccli import registry
from synccli.errors import UsageError


def _schema(provider: str) -> dict[str, registry.Setting]:
    if provider not in registry.names():
        return {s.key: s for s in registry.COMMON}
    return {s.key: s for s in registry.get(provider).schema()}


def known_keys(provider: str) -> list[str]:
    return sorted({*_schema(provider), "notify_email"})


def check(provider: str, values: dict[str, Any], *, removing_allowed: bool = False) -> None:
    """Raise a usage error (exit 2) naming the first key that is unknown for ``provider`` or
    whose value is not valid; an empty value (removal) passes where ``removing_allowed``."""
    schema = _schema(provider)
    for key, raw in values.items():
        if raw is None:
            continue
        value = str(raw)
        if key == "notify_email":
            continue  # checked by the store with the email package's own rules
        if key in registry.secret_keys():
            raise UsageError(
                f"{key} is a secret and never goes on a command line: pipe it with "
                "--secret-stdin, or name an environment variable with --secret-env VAR"
            )
        if key not in schema:
            raise UsageError(
                f"unknown setting {key!r} for a {provider} connection "
                f"(known: {', '.join(known_keys(provider))})"
            )
        if value == "" and removing_allowed:
            continue
        problem = schema[key].check(value)
        if problem:
            raise UsageError(f"setting {key}: {value!r} {problem}")


def missing(provider: str, settings: dict[str, Any]) -> list[str]:
    """Settings ``provider`` cannot work without that are not set."""
    return [k for k, s in _schema(provider).items() if s.required and not settings.get(k)]
