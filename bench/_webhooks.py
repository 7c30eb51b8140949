"""The month's webhook side (``bench/month.py --webhooks``): the simulator's deliveries, each at
its own simulated time, handed to the receiver's WSGI application in this process.

The connection subscribes as an operator would (``synccli webhooks subscribe``; where the
provider has no subscription API synccli calls, the step it prints is done here against the
simulator: Unleashed's ``POST /webhooks/subscriptions``, Xero's portal stand-in), and its webhook
secrets are stored as ``connections set`` stores them. The simulator's outbox sends nothing by
itself ("manual" deliveries): :meth:`Pushes.deliver_until` sends every delivery due before the
next event of the month, moving the shared clock to each one's time, through
:func:`synccli.sandbox.webhooks.wsgi_transport` into the receiver (the same bytes and headers as
over HTTP, without a socket: tens of thousands of deliveries stay fast). What the receiver stored
is applied as ``* * * * * synccli webhooks apply`` would: at the first minute after a delivery
(a run with nothing stored does nothing and is skipped), no API call.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from synccli.clock import SimClock
from synccli.sandbox import harness
from synccli.sandbox.webhooks import wsgi_transport
from synccli.store.connections import get_connection, set_values
from synccli.store.db import Store

BASE_URL = "http://127.0.0.1:8443"  # the receiver's address as subscribed (never dialled)
UNLEASHED_EVENTS = [
    f"{thing}.{change}" for thing in ("product", "customer") for change in ("created", "updated")
]


class Pushes:
    def __init__(
        self, provider: str, running: harness.Running, store: Store, name: str, clock: SimClock
    ) -> None:
        self.provider, self.running, self.store, self.name = provider, running, store, name
        self.clock = clock
        self.outbox = running.app.webhooks
        self.answers: Counter[int] = Counter()
        self.apply_at: datetime | None = None  # the next `webhooks apply` with work to do
        self.applied = 0

    # set-up -------------------------------------------------------------------------------------
    def subscribe(self) -> None:
        from synccli.webhooks import manage
        from synccli.webhooks.app import Receiver

        done = manage.subscribe(self.store, self.name, BASE_URL, self.clock)
        if self.provider == "unleashed":
            url = Path(done.url_file or "").read_text(encoding="utf-8").strip()
            key = self._unleashed(url)
            set_values(self.store, self.name, {"webhook_signing_key": key})
        elif self.provider == "xero":
            url = manage.endpoint(BASE_URL, self.name)
            portal = f"{self.running.url}/sandbox/webhooks"
            made = requests.post(portal, json={"url": url}, timeout=10)
            made.raise_for_status()
            set_values(self.store, self.name, {"webhook_key": made.json()["key"]})
        receiver = Receiver(self.store, clock=self.clock)
        self.outbox.transport = self._counting(wsgi_transport(receiver))
        self.outbox.pump(self.clock.now())  # Xero's intent-to-receive check, before any event

    def _unleashed(self, url: str) -> str:
        from synccli.sandbox.unleashed import sign

        creds = self.running.app.credentials()
        resp = requests.post(
            f"{self.running.url}/webhooks/subscriptions",
            json={"notificationUrl": url, "eventTypes": UNLEASHED_EVENTS},
            headers={
                "api-auth-id": creds["api_id"],
                "api-auth-signature": sign(creds["api_key"], ""),
                "Accept": "application/json",
                "client-type": "synccli/bench",
            },
            timeout=10,
        )
        resp.raise_for_status()
        return str(resp.json()["signatureKey"])

    def _counting(self, send: Any) -> Any:
        def counted(url: str, body: bytes, headers: dict[str, str], deadline: float) -> Any:
            status, answer = send(url, body, headers, deadline)
            self.answers[status] += 1
            return status, answer

        return counted

    # the month ----------------------------------------------------------------------------------
    def deliver_until(self, until: datetime, after: Any = None) -> int:
        """Send every delivery due before ``until``, each at its own time on the shared clock,
        and run the ``webhooks apply`` minutes that fall before it; ``after(now)`` follows each
        apply (the month checks freshness there)."""
        sent = 0
        while True:
            due = self.outbox.next_due()
            apply_at = self.apply_at
            if apply_at is not None and apply_at < until and (due is None or apply_at <= due):
                self.clock.set(apply_at)
                self.apply()
                if after is not None:
                    after(apply_at)
                continue
            if due is None or due >= until:
                return sent
            self.clock.set(due)
            sent += self.outbox.pump(due)
            if self.apply_at is None:
                minute = due.replace(second=0, microsecond=0) + timedelta(minutes=1)
                self.apply_at = minute

    def apply(self) -> None:
        from synccli.sync import push

        self.apply_at = None
        conn = get_connection(self.store, self.name)
        report = push.apply_connection(self.store, conn, clock=self.clock)
        self.applied += int(getattr(report, "applied", 0) or 0)

    def summary(self) -> dict[str, Any]:
        stats = self.outbox.stats
        return {
            "queued": stats["queued"],
            "dropped": stats["dropped"],
            "delivered": stats["delivered"],
            "failed_attempts": stats["failed_attempts"],
            "gave_up": stats["gave_up"],
            "answers": {str(k): v for k, v in sorted(self.answers.items())},
            "subscriptions": {s.id: s.status for s in self.outbox.subscriptions.values()},
        }
