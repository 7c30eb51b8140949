"""Shared fixtures for the Lightspeed X-Series simulator and connector tests (real HTTP on
loopback), and the official spec's validators (the spec lives in ``tests/specs``)."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from synccli.clock import SimClock
from synccli.connectors.auth import MemoryTokenStore, Tokens
from synccli.connectors.http import MemoryLedger
from synccli.connectors.lightspeed_x import LightspeedXConnector, connect
from synccli.sandbox.core import Request, Response, SandboxServer
from synccli.sandbox.lightspeed_x import LightspeedXSandbox

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SPEC = Path(__file__).parent / "specs" / "lightspeed_x_series.json"
HOST = "https://sandboxstore.retail.lightspeed.app"
API = "/api/2026-07"


def make_app(**kw: Any) -> LightspeedXSandbox:
    kw.setdefault("clock", SimClock(START))
    kw.setdefault("products", 30)
    kw.setdefault("customers", 10)
    return LightspeedXSandbox(**kw)


@contextmanager
def serve(app: LightspeedXSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(app) as server:
        yield server


def make_connector(
    app: LightspeedXSandbox,
    server: SandboxServer,
    *,
    personal: bool = False,
    pace: bool = False,
    time_scale: float = 1.0,
    ledger: Any = None,
    store: MemoryTokenStore | None = None,
    **settings: Any,
) -> tuple[LightspeedXConnector, MemoryTokenStore]:
    creds = app.credentials()
    base = {"base_url": server.url, "domain_prefix": app.domain_prefix, **settings}
    if store is None:
        store = MemoryTokenStore(Tokens(creds["access_token"], creds["refresh_token"], None, {}))
    if personal:
        secret = {"personal_token": app.personal_token()}
    else:
        base["client_id"] = creds["client_id"]
        secret = {"client_secret": creds["client_secret"]}
    conn = connect(
        base,
        secret,
        token_store=store,
        ledger=ledger or MemoryLedger(),
        clock=app.clock,
        pace=pace,
        time_scale=time_scale,
    )
    return conn, store


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# the official spec ----------------------------------------------------------------------------
@cache
def spec() -> Any:
    from openapi_core import Config, OpenAPI

    with SPEC.open(encoding="utf-8") as fh:
        return OpenAPI.from_dict(json.load(fh), config=Config(spec_validator_cls=None))


class SpecRequest:
    """A request (a sent ``requests.PreparedRequest`` or one the simulator received) seen
    through openapi-core's Request protocol, moved to the store's real host."""

    def __init__(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        split = urlsplit(url)
        self.host_url = HOST
        self.path = split.path
        self.method = method.lower()
        self.body = body or None
        self.content_type = headers.get("Content-Type") or headers.get("content-type") or ""
        self.content_type = self.content_type or "application/json"
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(split.query, keep_blank_values=True)),
            header=Headers(headers),
            cookie=ImmutableMultiDict(),
        )

    @classmethod
    def sent(cls, prepared: requests.PreparedRequest) -> SpecRequest:
        body = prepared.body
        raw = body.encode() if isinstance(body, str) else body
        return cls(str(prepared.method), str(prepared.url), raw, dict(prepared.headers))

    @classmethod
    def received(cls, req: Request) -> SpecRequest:
        url = f"{HOST}{req.path}" + (f"?{req.query_string}" if req.query_string else "")
        return cls(req.method, url, req.body, dict(req.headers))


class SpecResponse:
    def __init__(self, resp: Response) -> None:
        from werkzeug.datastructures import Headers

        self.data = resp.encode()
        self.status_code = resp.status
        self.content_type = resp.content_type.split(";")[0]
        self.headers = Headers(resp.headers)


def validate_request(req: SpecRequest) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec().validate_request(req)


@cache
def spec_dict() -> dict[str, Any]:
    with SPEC.open(encoding="utf-8") as fh:
        return dict(json.load(fh))


def documented(method: str, path: str, status: int) -> bool:
    """Whether the spec documents this status for the operation at ``path``."""
    name = path.removeprefix(API)
    paths = spec_dict()["paths"]
    ops = paths.get(name)
    if ops is None:
        for template, candidate in paths.items():
            if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), name):
                ops = candidate
                break
    operation = (ops or {}).get(method.lower()) or {}
    return str(status) in operation.get("responses", {})


def validate_answer(req: Request, resp: Response) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec().validate_response(SpecRequest.received(req), SpecResponse(resp))
