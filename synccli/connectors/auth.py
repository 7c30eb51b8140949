"""OAuth2 for connectors: rotating refresh tokens, serialised across processes.

Two workers spending one rotating refresh token break the chain for good (Xero, Lightspeed), so a
refresh always runs under the token store's lock, re-reads the stored tokens first (another process
may have refreshed already), and commits the new refresh token before the new access token is used.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import requests

from synccli import secrets
from synccli.clock import Clock, SystemClock
from synccli.errors import BadResponse, ReauthRequired, TransientError

EXPIRY_MARGIN = timedelta(seconds=60)


@dataclass
class Tokens:
    access_token: str | None = None
    refresh_token: str | None = None
    expires_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def fresh(self, now: datetime) -> bool:
        return bool(self.access_token) and (
            self.expires_at is None or now < self.expires_at - EXPIRY_MARGIN
        )


class TokenStore(Protocol):
    """Where a connection's tokens live (the store implements it over the connections table)."""

    def load(self) -> Tokens:
        """The tokens as last committed."""

    def update_locked(self, fn: Callable[[Tokens], Tokens]) -> Tokens:
        """Run ``fn`` on the stored tokens under a lock that serialises every process of this
        connection, and commit what it returns before returning it."""

    def mark_reauth(self, reason: str) -> None:
        """Flag the connection as needing re-authorisation by the merchant."""


class MemoryTokenStore:
    """Tokens in memory, for tests and the sandbox."""

    def __init__(self, tokens: Tokens | None = None) -> None:
        self.tokens = tokens or Tokens()
        self.reauth_reason: str | None = None
        self._lock = threading.Lock()

    def load(self) -> Tokens:
        return replace(self.tokens)

    def update_locked(self, fn: Callable[[Tokens], Tokens]) -> Tokens:
        with self._lock:
            self.tokens = fn(replace(self.tokens))
            return replace(self.tokens)

    def mark_reauth(self, reason: str) -> None:
        self.reauth_reason = reason


def token_request(
    token_url: str,
    form: dict[str, str],
    *,
    client_id: str,
    client_secret: str,
    basic_auth: bool,
    timeout: float = 15.0,
    session: requests.Session | None = None,
) -> dict[str, Any]:
    """POST a form to an OAuth2 token endpoint; returns the parsed token response.

    Raises ReauthRequired on ``invalid_grant`` (a dead refresh token or code), TransientError when
    the answer is lost.
    """
    headers = {"Accept": "application/json"}
    data = dict(form)
    if basic_auth:
        pair = f"{client_id}:{client_secret}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    else:
        data.update(client_id=client_id, client_secret=client_secret)
    http = session or requests
    try:
        resp = http.post(token_url, data=data, headers=headers, timeout=timeout)
    except (requests.Timeout, requests.ConnectionError) as exc:
        raise TransientError(f"token endpoint unreachable ({exc.__class__.__name__})") from None
    if resp.status_code >= 500:
        raise TransientError(f"token endpoint answered HTTP {resp.status_code}")
    try:
        body = resp.json()
    except ValueError:
        raise BadResponse(f"token endpoint answered HTTP {resp.status_code} without JSON") from None
    if resp.status_code != 200 or "access_token" not in body:
        error = body.get("error", f"HTTP {resp.status_code}") if isinstance(body, dict) else ""
        raise ReauthRequired(
            f"the provider refused the token request ({error})", status=resp.status_code
        )
    secrets.register(body.get("access_token"), body.get("refresh_token"))
    return body


@dataclass
class PersonalToken:
    """A token the account owner made (Lightspeed X-Series' personal token [D-AUTH]): sent as
    is, never refreshed."""

    token: str

    def headers(self, method: str, url: str, query: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def on_unauthorized(self, used_headers: Mapping[str, str]) -> bool:
        return False


class OAuth2Auth:
    """Bearer tokens from an authorisation-code grant, refreshed with rotation."""

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        store: TokenStore,
        clock: Clock | None = None,
        basic_auth: bool = True,
        extra_headers: Callable[[Tokens], dict[str, str]] | None = None,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.store = store
        self.clock = clock or SystemClock()
        self.basic_auth = basic_auth
        self.extra_headers = extra_headers or (lambda t: {})
        self.refreshes = 0  # refresh grants this process sent
        self._tokens = store.load()
        secrets.register(client_secret, self._tokens.access_token, self._tokens.refresh_token)

    def headers(self, method: str, url: str, query: str) -> dict[str, str]:
        if not self._tokens.fresh(self.clock.now()):
            self._refresh(self._tokens.access_token)
        return {
            "Authorization": f"Bearer {self._tokens.access_token}",
            **self.extra_headers(self._tokens),
        }

    def on_unauthorized(self, used_headers: Mapping[str, str]) -> bool:
        used = (used_headers.get("Authorization") or "").removeprefix("Bearer ")
        self._refresh(used or None, force=True)
        return True

    def tokens(self) -> Tokens:
        return replace(self._tokens)

    def _refresh(self, used_access: str | None, force: bool = False) -> None:
        def rotate(stored: Tokens) -> Tokens:
            now = self.clock.now()
            # Another process refreshed while we waited for the lock: use its tokens.
            if stored.access_token and stored.access_token != used_access and stored.fresh(now):
                return stored
            if not force and stored.fresh(now):
                return stored
            if not stored.refresh_token:
                raise ReauthRequired("no refresh token stored: authorise the connection again")
            form = {"grant_type": "refresh_token", "refresh_token": stored.refresh_token}
            try:
                body = self._token_call(form)
            except TransientError:
                # The answer may be lost after the provider rotated: Xero keeps the previous
                # refresh token valid for a grace period, so one retry with it is safe.
                body = self._token_call(form)
            self.refreshes += 1
            return Tokens(
                access_token=body["access_token"],
                refresh_token=body.get("refresh_token", stored.refresh_token),
                expires_at=now + timedelta(seconds=int(body.get("expires_in", 1800))),
                extra=stored.extra,
            )

        try:
            self._tokens = self.store.update_locked(rotate)
        except ReauthRequired as err:
            self.store.mark_reauth(err.message)
            raise

    def _token_call(self, form: dict[str, str]) -> dict[str, Any]:
        return token_request(
            self.token_url,
            form,
            client_id=self.client_id,
            client_secret=self.client_secret,
            basic_auth=self.basic_auth,
        )


class ClientCredentialsAuth(OAuth2Auth):
    """Xero custom connections: no refresh token; ask for a new 30-minute token when needed."""

    def _refresh(self, used_access: str | None, force: bool = False) -> None:
        def renew(stored: Tokens) -> Tokens:
            now = self.clock.now()
            if stored.access_token and stored.access_token != used_access and stored.fresh(now):
                return stored
            body = self._token_call({"grant_type": "client_credentials"})
            self.refreshes += 1
            return Tokens(
                access_token=body["access_token"],
                expires_at=now + timedelta(seconds=int(body.get("expires_in", 1800))),
                extra=stored.extra,
            )

        try:
            self._tokens = self.store.update_locked(renew)
        except ReauthRequired as err:
            self.store.mark_reauth(err.message)
            raise
