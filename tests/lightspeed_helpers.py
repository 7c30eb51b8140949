"""Shared fixtures for the Lightspeed sandbox and connector tests (real HTTP on loopback)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import vcr

from synccli.clock import SimClock
from synccli.connectors.auth import MemoryTokenStore, Tokens
from synccli.connectors.http import MemoryLedger
from synccli.connectors.lightspeed import LightspeedConnector, connect
from synccli.sandbox.core import SandboxServer
from synccli.sandbox.lightspeed import LightspeedSandbox

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CASSETTES = Path(__file__).parent / "cassettes" / "lightspeed"
FIXED_BASE = "http://sandbox.test"
REDACTED = "REDACTED"
LOOPBACK = re.compile(r"http://127\.0\.0\.1:\d+")
SECRET_FIELDS = ("client_secret", "refresh_token", "access_token", "code", "code_verifier")


def make_app(**kw: Any) -> LightspeedSandbox:
    kw.setdefault("clock", SimClock(START))
    kw.setdefault("products", 30)
    kw.setdefault("customers", 10)
    return LightspeedSandbox(**kw)


@contextmanager
def serve(app: LightspeedSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(app) as server:
        yield server


def api(server: SandboxServer, app: LightspeedSandbox, entity: str) -> str:
    return f"{server.url}/API/V3/Account/{app.tenant}/{entity}.json"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def get(url: str, token: str, **kw: Any) -> requests.Response:
    return requests.get(url, headers=bearer(token), timeout=10, **kw)


def make_connector(
    app: LightspeedSandbox,
    server: SandboxServer,
    *,
    clock: Any = None,
    store: MemoryTokenStore | None = None,
    ledger: MemoryLedger | None = None,
    pace: bool = False,
    time_scale: float = 1.0,
    account: bool = True,
    expires: bool = False,
    **settings: Any,
) -> tuple[LightspeedConnector, MemoryTokenStore, dict[str, Any]]:
    """A connector wired to the sandbox with a fresh token pair (expiring on ``clock`` when
    ``expires``, else never by our reckoning, so only the sandbox's 401 can expire it)."""
    creds = app.credentials()
    if store is None:
        expires_at = None
        if expires:
            from datetime import timedelta

            expires_at = (clock or app.clock).now() + timedelta(seconds=creds["expires_in"])
        store = MemoryTokenStore(
            Tokens(creds["access_token"], creds["refresh_token"], expires_at, {})
        )
    conf = {
        "base_url": server.url,
        "auth_url": server.url,
        "client_id": creds["client_id"],
        **({"account_id": creds["account_id"]} if account else {}),
        **settings,
    }
    conn = connect(
        conf,
        {"client_secret": creds["client_secret"]},
        token_store=store,
        ledger=ledger,
        clock=clock or app.clock,
        time_scale=time_scale,
        pace=pace,
    )
    return conn, store, creds


# ------------------------------------------------------------------------------------------------
# cassettes


def _scrub_text(text: str) -> str:
    text = LOOPBACK.sub(FIXED_BASE, text)
    for name in SECRET_FIELDS:
        text = re.sub(rf'("{name}"\s*:\s*")[^"]*(")', rf"\g<1>{REDACTED}\g<2>", text)
        text = re.sub(rf"(^|&)({name}=)[^&]*", rf"\g<1>\g<2>{REDACTED}", text)
    text = re.sub(r"(code=)[^&\s\"']+", rf"\g<1>{REDACTED}", text)
    return text


def scrub_request(request: Any) -> Any:
    request.uri = LOOPBACK.sub(FIXED_BASE, request.uri)
    if request.body:
        raw = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        request.body = _scrub_text(raw).encode()
    return request


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    body = response.get("body", {}).get("string")
    if body:
        raw = body.decode() if isinstance(body, bytes) else body
        response["body"]["string"] = _scrub_text(raw).encode()
    for name in list(response.get("headers", {})):
        if name.lower() == "location":
            response["headers"][name] = [_scrub_text(v) for v in response["headers"][name]]
    return response


def recorder(record_mode: str = "once") -> vcr.VCR:
    return vcr.VCR(
        record_mode=record_mode,
        match_on=["method", "path", "query"],
        filter_headers=[("authorization", f"Bearer {REDACTED}")],
        before_record_request=scrub_request,
        before_record_response=scrub_response,
        decode_compressed_response=True,
    )


@contextmanager
def recorded(
    name: str, **app_kw: Any
) -> Iterator[tuple[LightspeedConnector, LightspeedSandbox | None]]:
    """A connector inside the cassette ``name``: recorded against a fresh sandbox when the file is
    missing, else replayed with base_url http://sandbox.test and no sandbox at all."""
    path = CASSETTES / "recorded" / f"{name}.yaml"
    if path.exists():
        store = MemoryTokenStore(Tokens("replayed-access-token", "replayed-refresh", None, {}))
        conn = connect(
            {
                "base_url": FIXED_BASE,
                "auth_url": FIXED_BASE,
                "client_id": "synccli-sandbox-client",
                "account_id": "184467",
            },
            {"client_secret": "replayed-client-secret"},
            token_store=store,
            clock=SimClock(START),
            pace=False,
        )
        with recorder().use_cassette(str(path), allow_playback_repeats=False):
            yield conn, None
        return
    app_kw.setdefault("seed", 11)
    app = make_app(**app_kw)
    with serve(app) as server, recorder().use_cassette(str(path)):
        conn, _, _ = make_connector(app, server)
        yield conn, app


def replay(name: str) -> Any:
    """A hand-written cassette (built from the documented examples), replayed only."""
    # no scrubbing hooks: vcr also runs them on load, and these files hold only made-up values
    plain = vcr.VCR(record_mode="none", match_on=["method", "path", "query"])
    return plain.use_cassette(str(CASSETTES / "handwritten" / f"{name}.yaml"))


def doc_connector(**settings: Any) -> tuple[LightspeedConnector, MemoryTokenStore]:
    store = MemoryTokenStore(Tokens("doc-access-token", "doc-refresh-token", None, {}))
    # the real hosts: the hand-written cassettes answer (record mode "none": nothing leaves)
    conf = {"client_id": "doc-client", "account_id": "12345", **settings}
    conn = connect(
        conf,
        {"client_secret": "doc-client-secret"},
        token_store=store,
        clock=SimClock(START),
        pace=False,
    )
    return conn, store


def json_of(resp: requests.Response) -> Any:
    return json.loads(resp.text)
