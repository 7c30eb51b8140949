"""The OAuth2 authorization-code flow for a connection, with a loopback redirect.

Prints the provider's authorize URL, listens on 127.0.0.1 only for the redirect, checks ``state``,
exchanges the code at once (codes live 30 s to 5 minutes), and stores the tokens encrypted.

A provider sends the browser back only to a redirect URI registered with the app, compared
exactly, port included: so the port is fixed (:data:`DEFAULT_PORT`, or ``--port``) and the URI
printed is the one to register. A registered URI that is not a plain-HTTP loopback address (such
as Lightspeed's HTTPS-only redirect URLs) is not listened on: the merchant pastes the address the
browser was sent to, and the code and state are read from it.
"""

from __future__ import annotations

import secrets as pysecrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from synccli.connectors.auth import Tokens
from synccli.errors import AuthError, UsageError
from synccli.store.connections import StoreTokenStore, credentials, set_values
from synccli.store.db import Store
from synccli.store.models import Connection
from synccli.sync.context import provider_of

DEFAULT_PORT = 8765
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


def redirect_uri_for(port: int) -> str:
    """The redirect URI to register for a loopback listener on ``port``."""
    return f"http://localhost:{port}/callback"


def _listens(redirect_uri: str) -> tuple[int, str] | None:
    """(port, path) when ``redirect_uri`` is a plain-HTTP loopback address we can listen on."""
    parts = urlsplit(redirect_uri)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        return None
    return parts.port or 80, parts.path or "/"


@dataclass
class AuthorizeResult:
    connection: str
    expires_at: str | None
    details: dict[str, Any]


class _Callback(BaseHTTPRequestHandler):
    result: dict[str, str] | None = None
    done: threading.Event

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        if "code" not in query and "error" not in query:
            self.send_response(404)
            self.end_headers()
            return
        type(self).result = query
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        self.wfile.write(b"synccli: authorised. You can close this window.\n")
        self.done.set()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def _query_of(pasted: str, redirect_uri: str) -> dict[str, str]:
    text = pasted.strip()
    if not text.startswith(redirect_uri.split("?")[0]):
        raise AuthError(f"the pasted address does not start with the redirect URI {redirect_uri}")
    query = {k: v[0] for k, v in parse_qs(urlsplit(text).query).items()}
    if "code" not in query and "error" not in query:
        raise AuthError("the pasted address carries no code: approve access and paste again")
    return query


def _listen(port: int) -> tuple[HTTPServer, type[_Callback]]:
    handler = type("Callback", (_Callback,), {"done": threading.Event(), "result": None})
    try:
        server = HTTPServer(("127.0.0.1", port), handler)  # loopback only, never 0.0.0.0
    except OSError as exc:
        raise UsageError(
            f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): free the port, or give "
            "another with --port (and register that redirect URI with the app)"
        ) from None
    return server, handler


def _wait_for_redirect(
    name: str,
    server: HTTPServer,
    handler: type[_Callback],
    say: Callable[[str], None],
    timeout: float,
) -> dict[str, str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        say(f"Waiting for the redirect on 127.0.0.1:{server.server_address[1]} "
            f"(up to {timeout:.0f}s)...")  # fmt: skip
        if not handler.done.wait(timeout):
            raise AuthError(
                f"no redirect within {timeout:.0f}s: "
                f"run `synccli connections authorize {name}` again"
            )
        return handler.result or {}
    finally:
        server.shutdown()
        server.server_close()


def authorize(
    store: Store,
    conn: Connection,
    *,
    say: Callable[[str], None],
    port: int = DEFAULT_PORT,
    redirect_uri: str | None = None,
    timeout: float = 300.0,
    on_listen: Callable[[str], None] | None = None,
    read_pasted: Callable[[], str] | None = None,
) -> AuthorizeResult:
    """Run the flow for ``conn``; ``on_listen(url)`` lets a test play the browser.

    ``redirect_uri``: the one registered with the provider (default: ``http://localhost:PORT/
    callback``); when it is not a loopback address, ``read_pasted()`` returns the address the
    browser landed on."""
    provider = provider_of(conn.provider)
    hooks = provider.oauth
    if hooks is None:
        # the one other kind of provider (registry.AuthKind)
        raise UsageError(f"{conn.provider} connections use an API id and key: nothing to authorise")
    settings = dict(conn.settings)
    creds = credentials(store, conn)
    own = hooks.nothing_to_authorise(settings)
    if own is not None:
        raise UsageError(own)
    app = provider.account_key.key  # the OAuth app's client id
    if not settings.get(app):
        # optional where the provider has a grant of its own (X-Series' personal token): without
        # it the consent page would be opened for no app
        raise UsageError(
            f"connection {conn.name} has no {app}: set it first with "
            f"`synccli connections set {conn.name} {app}=...`"
        )
    server = None
    if redirect_uri is None or _listens(redirect_uri) is not None:
        loopback = _listens(redirect_uri) if redirect_uri else None
        server, handler = _listen(loopback[0] if loopback else port)
        redirect_uri = redirect_uri or redirect_uri_for(int(server.server_address[1]))
    state = pysecrets.token_urlsafe(24)
    url = hooks.authorize_url(settings, redirect_uri, state)
    say(f"Redirect URI (must be registered with the app exactly): {redirect_uri}")
    say(f"Open this URL in a browser and approve access:\n{url}")
    if server is None:
        if read_pasted is None:
            raise UsageError(f"--redirect-uri {redirect_uri}: nothing to read the address from")
        say(
            "Then paste here the whole address the browser was sent to "
            "(it starts with the redirect URI; the code in it lasts about a minute):"
        )
        if on_listen is not None:
            on_listen(url)
        query = _query_of(read_pasted(), redirect_uri)
    else:
        if on_listen is not None:
            on_listen(url)
        query = _wait_for_redirect(conn.name, server, handler, say, timeout)
    if query.get("state") != state:
        raise AuthError(
            "the redirect's state does not match: the authorisation was not ours, ignored"
        )
    if "error" in query:
        raise AuthError(f"the provider refused: {query.get('error_description') or query['error']}")
    # the whole redirect goes along: Lightspeed X-Series names the store (domain_prefix) there
    tokens: Tokens = hooks.exchange_code(
        settings, creds, query["code"], redirect_uri, callback=query
    )
    StoreTokenStore(store, conn.id).update_locked(lambda _old: tokens)
    extra = {k: v for k, v in (tokens.extra or {}).items() if isinstance(v, (str, int))}
    found = hooks.learned(settings, tokens)  # Xero's tenant, Lightspeed's account
    if found:
        set_values(store, conn.name, found)
    return AuthorizeResult(
        conn.name, tokens.expires_at.isoformat() if tokens.expires_at else None, extra
    )
