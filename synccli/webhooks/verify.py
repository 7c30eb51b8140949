"""Is a delivery the provider's? Each check reads the raw body, before anything is parsed.

Sources are in docs/providers.md ("Webhooks" of each provider):

- Xero signs the raw body: ``x-xero-signature`` = base64(HMAC-SHA256(webhook key, body)), the key
  used as the text the developer portal shows (not base64-decoded) [Xero-OpenAPI
  ``xero-webhooks.yaml``; Xero's webhooks guide].
- X-Series: a delivery proves itself with a token of ours in the URL `webhooks subscribe`
  registers (random, 256 bits, stored encrypted). Deliveries to an OAuth app may also carry
  ``X-Signature: signature=<HMAC-SHA256 of the raw body with the app's client secret>,
  algorithm=HMAC-SHA256``; the digest's encoding is not documented, so hex or base64 is taken.
  Where that header comes, it must verify; it is never the only check.
- Unleashed: the same URL token, and where the connection holds Unleashed's signing key,
  ``x-unleashed-signature`` = base64(HMAC-SHA256(key, "{x-unleashed-timestamp}.{body}")) with the
  timestamp within five minutes (the scheme as public clients implement it: unconfirmed in
  Unleashed's own text, so never the only check).

Every comparison is constant-time (:func:`hmac.compare_digest`), and every refusal costs one HMAC
over the body, whichever check failed and whether the name in the URL is a connection's or not
(:func:`no_ones_signature`): the time of a 401 tells no one which names exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime

UNLEASHED_WINDOW_SECONDS = 300  # a signed timestamp older or newer than this is refused


def _hmac(key: str, message: bytes) -> bytes:
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()


# A key made afresh in each process, never stored or shown: what a request for a name no
# connection has is checked against, so that it costs what a real check does.
NO_ONES_KEY = secrets.token_urlsafe(32)


def no_ones_signature(body: bytes, given: str | None) -> bool:
    """The work of a signature check (an HMAC over ``body``, compared in constant time), against
    a key no one has: False."""
    expected = base64.b64encode(_hmac(NO_ONES_KEY, body))
    hmac.compare_digest(expected, (given or "").strip().encode("utf-8", "replace"))
    return False


def xero_signature_ok(key: str | None, body: bytes, header: str | None) -> bool:
    """Whether ``header`` (``x-xero-signature``) signs ``body`` with the webhook ``key``. The
    HMAC is computed even where the header or the key is missing: a refusal costs the same."""
    expected = base64.b64encode(_hmac(key or NO_ONES_KEY, body))
    same = hmac.compare_digest(expected, (header or "").strip().encode("utf-8", "replace"))
    return bool(key and header) and same


def token_ok(expected: str | None, given: str | None) -> bool:
    """Whether the token in the URL is the connection's (none stored: nothing passes)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "replace"))


def unleashed_signature_ok(
    key: str, body: bytes, signature: str | None, timestamp: str | None, now: datetime
) -> bool:
    """Whether ``signature`` signs ``"{timestamp}.{body}"`` with ``key``, the timestamp (Unix
    seconds) no further than five minutes from ``now``: a captured delivery cannot be replayed
    later."""
    if not signature or not timestamp or not timestamp.strip().isdigit():
        return False
    if abs(now.timestamp() - int(timestamp)) > UNLEASHED_WINDOW_SECONDS:
        return False
    digest = _hmac(key, timestamp.strip().encode("ascii") + b"." + body)
    expected = base64.b64encode(digest).decode("ascii")
    return hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace"))


def x_series_signature_ok(app_secret: str, body: bytes, header: str) -> bool:
    """Whether an ``X-Signature`` header (``signature=...,algorithm=HMAC-SHA256``) signs
    ``body`` with the app's client secret, its digest in hex or base64."""
    fields = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part.strip())
    given = fields.get("signature", "").strip()
    if fields.get("algorithm", "HMAC-SHA256").strip().upper() != "HMAC-SHA256" or not given:
        return False
    digest = _hmac(app_secret, body)
    expected = (digest.hex(), base64.b64encode(digest).decode("ascii"))
    return any(hmac.compare_digest(e.encode(), given.encode("utf-8", "replace")) for e in expected)
