"""The HTTP layer's part in fencing (see synccli.sync.invoices): a job's ``fence`` runs right
before every write is sent, retries included, never before a read; a fence that finds the claim
gone stops the write before anything leaves; and one write never waits longer than ``write_wait``
in retries and Retry-After sleeps.

A small provider on loopback answers: ``/limited`` with a 429 and the Retry-After it is given,
then 200.
"""

from __future__ import annotations

import time

import pytest

from synccli.connectors.http import HttpClient, MemoryLedger
from synccli.errors import ClaimLost, TransientError
from synccli.sandbox.core import Request, Response, SandboxApp, SandboxServer


class Limited(SandboxApp):
    """429 with ``Retry-After: retry_after`` for the first ``refusals`` requests, then 200."""

    def __init__(self, retry_after: float, refusals: int = 1) -> None:
        super().__init__()
        self.retry_after, self.refusals = retry_after, refusals
        self.seen: list[str] = []
        for method in ("GET", "PUT", "POST"):
            self.route(method, "/limited", "limited", self.limited)

    def limited(self, req: Request) -> Response:
        self.seen.append(req.method)
        if len(self.seen) <= self.refusals:
            return Response(429, {"message": "slow down"}, {"Retry-After": f"{self.retry_after}"})
        return Response(200, {"ok": True})


def _client(url: str, fences: list[str], ledger: MemoryLedger | None = None) -> HttpClient:
    client = HttpClient(url, ledger=ledger, pace=False)
    client.fence = lambda: fences.append("fence")
    client.write_wait = 5.0
    return client


def test_fence_runs_before_every_write_attempt_never_before_a_read() -> None:
    app = Limited(retry_after=0.05)
    with SandboxServer(app) as server:
        fences: list[str] = []
        client = _client(server.url, fences)
        assert client.json("PUT", "/limited", json_body={"x": 1})["ok"]
        assert app.seen == ["PUT", "PUT"] and fences == ["fence", "fence"]
        app.seen.clear()
        app.refusals = 1
        assert client.json("GET", "/limited")["ok"]
        assert app.seen == ["GET", "GET"] and fences == ["fence", "fence"]  # none for reads


def test_a_lost_claim_sends_nothing() -> None:
    app = Limited(retry_after=0.05, refusals=0)
    with SandboxServer(app) as server:
        ledger = MemoryLedger()
        client = HttpClient(server.url, ledger=ledger, pace=False)

        def lost() -> None:
            raise ClaimLost("taken over", lost=frozenset({1}))

        client.fence = lost
        with pytest.raises(ClaimLost):
            client.request("POST", "/limited", json_body={"x": 1})
        assert app.seen == [] and ledger.calls == []  # nothing left, nothing counted


def test_a_write_never_waits_longer_than_its_share_of_the_claim() -> None:
    app = Limited(retry_after=30)
    with SandboxServer(app) as server:
        fences: list[str] = []
        client = _client(server.url, fences)
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            client.request("PUT", "/limited", json_body={"x": 1})
        assert time.monotonic() - started < 2.0  # did not sleep the 30 s
        assert app.seen == ["PUT"]  # and did not send again
        assert "not waiting 30s more" in caught.value.message
