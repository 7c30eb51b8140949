"""Start simulators and point store connections at them: for the demo, tests and benchmarks."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from synccli import registry
from synccli.errors import UsageError
from synccli.sandbox.core import SandboxApp, SandboxServer
from synccli.store.connections import add_connection as store_add_connection
from synccli.store.db import Store
from synccli.store.models import Connection

_SECRET_WORDS = ("secret", "token", "api_key", "password")
# The setting that marks a connection made for a simulator: only such a connection may be
# re-pointed by `sandbox serve --connect`.
SANDBOX_MARK = "sandbox"


@dataclass
class Running:
    provider: str
    app: Any
    server: SandboxServer

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_app(provider: str, **kw: Any) -> SandboxApp:
    if provider not in registry.names():
        raise ValueError(f"unknown provider {provider!r}")
    app: SandboxApp = importlib.import_module(registry.get(provider).sandbox.module).create(**kw)
    return app


def start(
    provider: str,
    host: str = "127.0.0.1",
    port: int = 0,
    deliveries: str = "thread",
    **kw: Any,
) -> Running:
    """Create a simulator and serve it on loopback in a background thread. ``deliveries``: its
    webhooks go out from a sender thread by the sandbox's clock ("thread"), or only when the
    caller pumps them ("manual": a simulated month sends each at its own simulated time)."""
    if deliveries not in ("thread", "manual"):
        raise ValueError("deliveries is 'thread' or 'manual'")
    app = create_app(provider, **kw)
    running = Running(provider, app, SandboxServer(app, host, port).start())
    if deliveries == "thread" and app.webhooks is not None:
        app.webhooks.start()
    return running


def connection_values(
    running: Running, tenant: str | None = None, **extra: Any
) -> tuple[dict, dict]:
    """(settings, credentials) for a connection to ``running``'s tenant."""
    app = running.app
    raw = dict(app.credentials(tenant) if tenant else app.credentials())
    settings: dict[str, Any] = {"base_url": running.url}
    creds: dict[str, Any] = {}
    # every URL the provider's connector reads points at the one simulator
    settings.update(dict.fromkeys(registry.get(running.provider).sandbox.urls, running.url))
    expires_in = raw.pop("expires_in", None)
    raw.pop("expires_at", None)  # recomputed below on the sandbox's clock
    for key, value in raw.items():
        if key in ("token_type", "scope", "tenant", "id_token"):
            continue
        if any(word in key for word in _SECRET_WORDS):
            creds[key] = value
        else:
            settings[key] = value
    if expires_in is not None and "access_token" in creds:
        creds["expires_at"] = (app.clock.now() + timedelta(seconds=int(expires_in))).isoformat()
    settings.update(extra)
    return settings, creds


def add_connection(
    store: Store,
    name: str,
    running: Running,
    tenant: str | None = None,
    notify_email: str | None = None,
    time_scale: float | None = None,
    **settings: Any,
) -> Connection:
    """A store connection pointing at ``running`` (tokens included, as if authorised), marked
    as a sandbox connection (setting ``sandbox``). ``time_scale``: the simulator's speed-up,
    which the connector paces to (stored apart from the settings, where no command can set it)."""
    values, creds = connection_values(running, tenant, **settings)
    values[SANDBOX_MARK] = True
    conn = store_add_connection(
        store,
        name,
        running.provider,
        values,
        {k: v for k, v in creds.items() if k != "expires_at"},
        notify_email,
        sandbox_time_scale=time_scale,
    )
    tokens = {k: creds[k] for k in ("access_token", "refresh_token", "expires_at") if k in creds}
    if tokens:
        from synccli.store.connections import set_values

        set_values(store, name, {k: str(v) for k, v in tokens.items()})
    return conn


def connect(
    store: Store, name: str, running: Running, time_scale: float | None = None, **settings: Any
) -> Connection:
    """Point connection ``name`` at ``running``: a new sandbox connection, or an existing one of
    ours re-pointed in place (its links, cursors and the shop's rows untouched: nothing is
    deleted). A connection that is not a sandbox connection, or is for another provider, is
    refused: it may be a merchant's real account."""
    from synccli.store.connections import get_connection, list_connections, repoint

    if not any(c.name == name for c in list_connections(store)):
        return add_connection(store, name, running, time_scale=time_scale, **settings)
    existing = get_connection(store, name)
    if not existing.settings.get(SANDBOX_MARK):
        raise UsageError(
            f"connection {name!r} exists and is not a sandbox connection: "
            "choose another name for --connect"
        )
    if existing.provider != running.provider:
        raise UsageError(
            f"connection {name!r} is a {existing.provider} sandbox connection, "
            f"not {running.provider}: choose another name for --connect"
        )
    values, creds = connection_values(running, **settings)
    values[SANDBOX_MARK] = True
    return repoint(
        store,
        name,
        values,
        {k: str(v) for k, v in creds.items()},
        sandbox_time_scale=time_scale,
    )
