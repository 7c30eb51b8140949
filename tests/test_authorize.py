"""Issue 4: `connections authorize` runs the OAuth2 authorization-code flow against the sandbox."""

from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from synccli import registry
from synccli.errors import AuthError, UsageError
from synccli.sandbox import harness
from synccli.store.connections import add_connection, credentials, get_connection
from synccli.store.db import Store
from synccli.sync.authorize import authorize
from synccli.sync.context import job_run
from synccli.sync.products import pull_products


def _unauthorised(store: Store, running: harness.Running, name: str):
    settings, creds = harness.connection_values(running)
    secret = {"client_secret": creds["client_secret"]}
    for key in registry.get(running.provider).oauth.learns:  # type: ignore[union-attr]
        settings.pop(key, None)  # the flow must discover them
    return add_connection(store, name, running.provider, settings, secret)


def _browser(url: str) -> None:
    """The merchant approves: the provider redirects to our loopback listener."""
    threading.Thread(target=lambda: requests.get(url, timeout=10), daemon=True).start()


OAUTH = [p.name for p in registry.providers() if p.oauth is not None]


@pytest.mark.parametrize("provider", OAUTH)
def test_authorize_stores_tokens_and_discovers_the_account(store: Store, provider: str) -> None:
    with harness.start(provider, products=5) as running:
        conn = _unauthorised(store, running, "c")
        said: list[str] = []
        result = authorize(store, conn, say=said.append, port=0, timeout=20, on_listen=_browser)
        assert any(running.url in line for line in said)  # the URL was printed
        assert any("http://localhost:" in line for line in said)  # loopback redirect only
        creds = credentials(store, get_connection(store, "c"))
        assert creds["access_token"] and creds["refresh_token"]
        for key in registry.get(provider).oauth.learns:  # type: ignore[union-attr]
            assert get_connection(store, "c").settings[key] == str(result.details[key]), key
        with job_run(store, "pull-products", get_connection(store, "c")) as jc:
            report = pull_products(jc)
        assert report.new == 5


def test_authorize_refuses_a_redirect_with_another_state(store: Store) -> None:
    with harness.start("xero", products=1) as running:
        conn = _unauthorised(store, running, "c")

        def forged(url: str) -> None:
            redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
            threading.Thread(
                target=lambda: requests.get(f"{redirect}?code=abc&state=not-ours", timeout=10),
                daemon=True,
            ).start()

        with pytest.raises(AuthError, match="state"):
            authorize(store, conn, say=lambda _t: None, port=0, timeout=20, on_listen=forged)
        assert "access_token" not in credentials(store, get_connection(store, "c"))


def test_authorize_times_out(store: Store) -> None:
    with harness.start("xero", products=1) as running:
        conn = _unauthorised(store, running, "c")
        with pytest.raises(AuthError, match="no redirect"):
            authorize(store, conn, say=lambda _t: None, port=0, timeout=0.5)


def test_unleashed_has_nothing_to_authorise(store: Store, cli) -> None:
    with harness.start("unleashed", products=1) as running:
        harness.add_connection(store, "u", running)
        result = cli("connections", "authorize", "u")
    assert result.exit_code == 2 and "API id and key" in result.stderr


@pytest.mark.parametrize("provider", OAUTH)
def test_authorize_without_a_client_id_names_the_setting_before_printing_a_url(
    store: Store, provider: str
) -> None:
    """A connection added without its app's client id (optional where a provider has a grant
    of its own, as X-Series' personal token) is told to set it, not sent to the provider's
    consent page with ``client_id=`` empty."""
    account = registry.get(provider).account_key.key
    add_connection(store, "c", provider, {}, {"client_secret": "s3cret"})
    said: list[str] = []
    with pytest.raises(UsageError, match=f"synccli connections set c {account}="):
        authorize(store, get_connection(store, "c"), say=said.append, port=0, timeout=1)
    assert said == []  # no URL, no listener
