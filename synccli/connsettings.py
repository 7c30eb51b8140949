"""Every setting a connection may hold, per provider, and a check of each value where it enters.

A mistyped key (``acount_code``) or value (``give_up_after=7 days``) would otherwise be stored and
found only when a job reads it, hours later, under cron. ``connections add`` and ``connections
set`` check here first and stop with exit 2 naming the key; nothing is written.

The keys are those the connectors and jobs read (their module docstrings list them with their
defaults); the limits are the providers' (Xero takes at most 50 invoices a call, the notes' §2;
Unleashed's guid look-ups keep the URL near 4 kB at 100).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from synccli.errors import UsageError

Check = Callable[[str], str | None]  # a problem with the value, or None


def _text(value: str) -> str | None:
    if not value.strip():
        return "is empty (an empty value removes a setting: use `connections set NAME KEY=`)"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains a control character"
    return None


def _url(value: str) -> str | None:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL such as https://api.example.com"
    if parts.query or parts.fragment:
        return "must not carry a query or fragment"
    return None


def _duration(value: str) -> str | None:
    from synccli.sync.invoices import parse_duration

    try:
        parse_duration(value)
    except UsageError:
        return "is not a duration such as 2h, 30m or 7d"
    return None


def _durations(value: str) -> str | None:
    parts = [p for p in value.split(",")]
    if not parts or any(_duration(p) for p in parts):
        return "is not a list of durations such as 2h,4h,8h,12h,24h"
    return None


def _whole(low: int, high: int | None = None) -> Check:
    def check(value: str) -> str | None:
        text = value.strip()
        if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
            upper = f" to {high}" if high is not None else " or more"
            return f"is not a whole number from {low}{upper}"
        return None

    return check


def _positive(value: str) -> str | None:
    try:
        ok = float(value) > 0
    except ValueError:
        ok = False
    return None if ok else "is not a number above zero"


def _choice(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"is not one of {', '.join(choices)}"

    return check


def _boolean(value: str) -> str | None:
    return None if value.lower() in ("true", "false") else "is not true or false"


def _digits(value: str) -> str | None:
    return None if value.strip().isdigit() else "is not a Lightspeed id (digits, such as 1)"


def _uuid(value: str) -> str | None:
    pattern = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    return None if re.fullmatch(pattern, value.strip()) else "is not a Xero tenant id (a GUID)"


COMMON: dict[str, Check] = {
    "base_url": _url,
    "retry_schedule": _durations,
    "give_up_after": _duration,
    "due_days": _whole(0, 3650),
    "sweep_days": _positive,
    "sandbox": _boolean,  # marks a connection `sandbox serve --connect` made
    "time_scale": _positive,  # a simulator's clock speed (the demo and the tests)
}
PROVIDER: dict[str, dict[str, Check]] = {
    "xero": {
        "client_id": _text,
        "tenant_id": _uuid,
        "grant": _choice("authorization_code", "client_credentials"),
        "account_code": _text,
        "tax_type": _text,
        "invoice_batch": _whole(1, 50),
        "scopes": _text,
        "identity_url": _url,
        "login_url": _url,
    },
    "unleashed": {
        "api_id": _text,
        "warehouse_code": _text,
        "complete_orders": _boolean,
        "order_status": _choice("Parked", "Placed"),
        "stock_field": _choice("AvailableQty", "QtyOnHand"),
        "lookup_batch": _whole(1, 100),
        "client_type": _text,
    },
    "lightspeed": {
        "client_id": _text,
        "account_id": _digits,
        "shop_id": _digits,
        "register_id": _digits,
        "employee_id": _digits,
        "payment_type_id": _digits,
        "scope": _text,
        "auth_url": _url,
    },
}
SECRETS = ("client_secret", "api_key")
TOKENS = ("access_token", "refresh_token", "expires_at")


def known_keys(provider: str) -> list[str]:
    return sorted({*COMMON, *PROVIDER.get(provider, {}), "notify_email"})


def check(provider: str, values: dict[str, Any], *, removing_allowed: bool = False) -> None:
    """Raise a usage error (exit 2) naming the first key that is unknown for ``provider`` or
    whose value is not valid; an empty value (removal) passes where ``removing_allowed``."""
    checks = {**COMMON, **PROVIDER.get(provider, {})}
    for key, raw in values.items():
        if raw is None:
            continue
        value = str(raw)
        if key == "notify_email":
            continue  # checked by the store with the email package's own rules
        if key in SECRETS or key in TOKENS:
            raise UsageError(
                f"{key} is a secret and never goes on a command line: pipe it with "
                "--secret-stdin, or name an environment variable with --secret-env VAR"
            )
        if key not in checks:
            raise UsageError(
                f"unknown setting {key!r} for a {provider} connection "
                f"(known: {', '.join(known_keys(provider))})"
            )
        if value == "" and removing_allowed:
            continue
        problem = checks[key](value)
        if problem:
            raise UsageError(f"setting {key}: {value!r} {problem}")


REQUIRED = {"xero": ("client_id",), "unleashed": ("api_id",), "lightspeed": ("client_id",)}


def missing(provider: str, settings: dict[str, Any]) -> list[str]:
    """Settings ``provider`` cannot work without that are not set."""
    return [k for k in REQUIRED.get(provider, ()) if not settings.get(k)]
