"""The OAuth2 authorization-code flow for a connection, with a loopback redirect.

Prints the provider's authorize URL, listens on 127.0.0.1 only for the redirect, checks ``state``,
exchanges the code at once (codes live 30 s to 5 minutes), and stores the tokens encrypted.
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
from synccli.sync.context import connector_module


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


def authorize(
    store: Store,
    conn: Connection,
    *,
    say: Callable[[str], None],
    port: int = 0,
    timeout: float = 300.0,
    on_listen: Callable[[str], None] | None = None,
) -> AuthorizeResult:
    """Run the flow for ``conn``; ``on_listen(url)`` lets a test play the browser."""
    module = connector_module(conn.provider)
    if not hasattr(module, "authorize_url"):
        raise UsageError(f"{conn.provider} connections use an API id and key: nothing to authorise")
    settings = dict(conn.settings)
    creds = credentials(store, conn)
    if settings.get("grant") == "client_credentials":
        raise UsageError(
            "this Xero custom connection gets its tokens with its client secret: "
            "nothing to authorise"
        )
    handler = type("Callback", (_Callback,), {"done": threading.Event(), "result": None})
    server = HTTPServer(("127.0.0.1", port), handler)  # loopback only, never 0.0.0.0
    redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/callback"
    state = pysecrets.token_urlsafe(24)
    url = module.authorize_url(settings, redirect_uri, state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        say(f"Open this URL in a browser and approve access:\n{url}")
        say(f"Waiting for the redirect on {redirect_uri} (up to {timeout:.0f}s)...")
        if on_listen is not None:
            on_listen(url)
        if not handler.done.wait(timeout):
            raise AuthError(
                f"no redirect within {timeout:.0f}s: "
                f"run `synccli connections authorize {conn.name}` again"
            )
        query = handler.result or {}
    finally:
        server.shutdown()
        server.server_close()
    if query.get("state") != state:
        raise AuthError(
            "the redirect's state does not match: the authorisation was not ours, ignored"
        )
    if "error" in query:
        raise AuthError(f"the provider refused: {query.get('error_description') or query['error']}")
    tokens: Tokens = module.exchange_code(settings, creds, query["code"], redirect_uri)
    StoreTokenStore(store, conn.id).update_locked(lambda _old: tokens)
    extra = {k: v for k, v in (tokens.extra or {}).items() if isinstance(v, (str, int))}
    found = {
        k: v for k, v in extra.items() if k in ("tenant_id", "account_id") and not settings.get(k)
    }
    if found:
        set_values(store, conn.name, {k: str(v) for k, v in found.items()})
    return AuthorizeResult(
        conn.name, tokens.expires_at.isoformat() if tokens.expires_at else None, extra
    )
