"""Shared helpers for the Xero sandbox and connector tests (real HTTP on loopback)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import requests

from synccli.clock import Clock
from synccli.connectors.auth import MemoryTokenStore, Tokens
from synccli.connectors.base import InvoiceDraft, InvoiceLine
from synccli.connectors.http import MemoryLedger
from synccli.connectors.xero import XeroConnector, connect
from synccli.sandbox.core import SandboxServer
from synccli.sandbox.xero import API, XeroSandbox

SANDBOX_HOST = "http://sandbox.test"


@contextlib.contextmanager
def running(app: XeroSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(app) as server:
        yield server


class Raw:
    """A tiny client for the sandbox tests: one tenant, one token."""

    def __init__(self, app: XeroSandbox, server: SandboxServer, tenant: str | None = None):
        self.app = app
        self.url = server.url
        self.creds = app.credentials(tenant)
        self.session = requests.Session()

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.creds['access_token']}",
            "xero-tenant-id": self.creds["tenant_id"],
            "Accept": "application/json",
            **extra,
        }

    def get(self, path: str, params: Any = None, **headers: str) -> requests.Response:
        return self.session.get(
            f"{self.url}{API}/{path}", params=params, headers=self.headers(**headers), timeout=30
        )

    def put(self, path: str, body: Any, params: Any = None, **headers: str) -> requests.Response:
        return self.session.put(
            f"{self.url}{API}/{path}",
            params=params,
            json=body,
            headers=self.headers(**headers),
            timeout=30,
        )


def make_connector(
    app: XeroSandbox,
    base_url: str,
    *,
    clock: Clock | None = None,
    ledger: MemoryLedger | None = None,
    time_scale: float = 1.0,
    pace: bool = False,
    tenant: str | None = None,
    expires_at: Any = "sandbox",
) -> tuple[XeroConnector, MemoryTokenStore, dict[str, Any]]:
    creds = app.credentials(tenant)
    store = MemoryTokenStore(
        Tokens(
            access_token=creds["access_token"],
            refresh_token=creds["refresh_token"],
            expires_at=creds["expires_at"] if expires_at == "sandbox" else expires_at,
            extra={"tenant_id": creds["tenant_id"]},
        )
    )
    connector = connect(
        {"base_url": base_url, "client_id": creds["client_id"]},
        {"client_secret": creds["client_secret"]},
        token_store=store,
        ledger=ledger,
        clock=clock or app.clock,
        time_scale=time_scale,
        pace=pace,
    )
    return connector, store, creds


def draft(
    app: XeroSandbox,
    number: str,
    *,
    codes: list[str] | None = None,
    tax_code: str = "OUTPUT2",
    customer_id: str | None = None,
    when: datetime | None = None,
) -> InvoiceDraft:
    world = app.world()
    products = {p.code: p for p in world.products.values()}
    codes = codes or sorted(products)[:2]
    lines = []
    for i, code in enumerate(codes):
        p = products.get(code)
        lines.append(
            InvoiceLine(
                product_remote_id=p.id if p else "",
                code=code,
                description=p.description if p else f"{code} line",
                quantity=Decimal(i + 1),
                unit_price=p.price if p else Decimal("9.99"),
                tax_code=tax_code,
                tax_rate=Decimal("0.15"),
            )
        )
    customer_id = customer_id or next(iter(world.customers))
    return InvoiceDraft(
        number=number,
        date=when or app.clock.now(),
        currency="NZD",
        customer_remote_id=customer_id,
        lines=lines,
        reference=f"Order {number}",
    )


def expected_total(inv: InvoiceDraft) -> Decimal:
    """The shared money rule: round2 per line, tax per line."""
    total = Decimal(0)
    for line in inv.lines:
        amount = (line.quantity * line.unit_price).quantize(Decimal("0.01"), "ROUND_HALF_UP")
        total += amount + (amount * line.tax_rate).quantize(Decimal("0.01"), "ROUND_HALF_UP")
    return total
