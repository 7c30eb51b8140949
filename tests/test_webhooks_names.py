"""The receiver does not tell anyone which connection names exist: a name no connection has is
answered exactly as a known one with a bad signature (status, headers, body), after the same work
(the body read and one HMAC over it), and only the operator's log line tells the two apart."""

from __future__ import annotations

import io
import logging
import statistics
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest

from synccli.clock import SimClock
from synccli.store.connections import add_connection
from synccli.store.db import Store
from synccli.store.webhooks import webhook_stats
from synccli.webhooks.app import Receiver

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
XERO_KEY = "xero-webhook-key-0123456789abcdefghijklmnopqrstuvwxyz"
X_TOKEN = "x-token-0123456789abcdef0123456789abcdef"
U_TOKEN = "u-token-0123456789abcdef0123456789abcdef"
U_SIGNING = "unleashed-signing-key-98765"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def answer(
    app: Callable[..., Iterable[bytes]],
    path: str,
    body: bytes,
    content_type: str = JSON,
    headers: dict[str, str] | None = None,
    length: str | None = None,
) -> tuple[str, list[tuple[str, str]], bytes]:
    """What a client sees: the status line, the headers and the body."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)) if length is None else length,
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen: list[tuple[str, list[tuple[str, str]]]] = []
    out = b"".join(app(environ, lambda status, hdrs: seen.append((status, list(hdrs)))))
    return seen[0][0], seen[0][1], out


def connections(store: Store) -> int:
    """Three connections, one of each provider that pushes; answers the Xero one's id."""
    books = add_connection(
        store,
        "books",
        "xero",
        {"client_id": "app", "tenant_id": "t-1"},
        {"client_secret": "s" * 8, "webhook_key": XERO_KEY},
    ).id
    add_connection(
        store,
        "pos",
        "lightspeed-x",
        {"grant": "personal_token"},
        {"client_secret": "pt" * 8, "webhook_key": X_TOKEN},
    )
    add_connection(
        store,
        "stock",
        "unleashed",
        {"api_id": "id"},
        {"api_key": "k" * 10, "webhook_key": U_TOKEN, "webhook_signing_key": U_SIGNING},
    )
    return books


BODY = b'{"events": [], "firstEventSequence": 0, "lastEventSequence": 0, "entropy": "x"}'
BAD_SIG = {"x-xero-signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}
# (a known connection's path with a bad signature or token, the same shape for a name no
# connection has)
SHAPES = [
    ("/webhooks/books", "/webhooks/bookz"),  # Xero: signed body, no token
    (f"/webhooks/pos/{X_TOKEN[:-1]}x", f"/webhooks/p0s/{X_TOKEN[:-1]}x"),  # X-Series: token
    (f"/webhooks/stock/{U_TOKEN[:-1]}x", f"/webhooks/st0ck/{U_TOKEN[:-1]}x"),  # Unleashed
    ("/webhooks/pos", "/webhooks/p0s"),  # a token provider's URL without its token
]


@pytest.mark.parametrize(("known", "unknown"), SHAPES)
def test_an_unknown_name_is_answered_as_a_known_one_with_a_bad_signature(
    store: Store, known: str, unknown: str
) -> None:
    connections(store)
    app = Receiver(store, clock=SimClock(NOW))
    refused = answer(app, known, BODY, headers=BAD_SIG)
    assert refused[0] == "401 Unauthorized"
    assert answer(app, unknown, BODY, headers=BAD_SIG) == refused
    assert answer(app, unknown, BODY) == answer(app, known, BODY)  # no signature at all
    # the checks before the signature's do not depend on the name either
    big = b"x" * (app.max_body + 1)
    assert answer(app, unknown, big) == answer(app, known, big)
    assert answer(app, unknown, BODY, length="")[0] == "411 Length Required"
    assert answer(app, unknown, BODY, length="") == answer(app, known, BODY, length="")


def test_the_operator_is_told_which_it_was_and_no_secret(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    connections(store)
    app = Receiver(store, clock=SimClock(NOW))
    lines = {}
    for path in (f"/webhooks/pos/{X_TOKEN[:-1]}x", f"/webhooks/p0s/{X_TOKEN[:-1]}x"):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="synccli"):
            answer(app, path, BODY, FORM)
        [line] = [r for r in caplog.records if r.name.startswith("synccli")]
        text = line.getMessage()
        assert line.levelno == logging.WARNING
        assert X_TOKEN[:-1] not in text and XERO_KEY not in text and U_SIGNING not in text
        lines[path.split("/")[2]] = text
    assert "no connection of that name" in lines["p0s"] and "401" in lines["p0s"]
    assert "bad or missing signature" in lines["pos"]
    assert "no connection" not in lines["pos"]


def test_a_known_names_refusals_are_still_counted(store: Store) -> None:
    books = connections(store)
    app = Receiver(store, clock=SimClock(NOW))
    for _ in range(3):
        answer(app, "/webhooks/books", BODY, headers=BAD_SIG)
        answer(app, "/webhooks/bookz", BODY, headers=BAD_SIG)

    def counted() -> int:
        with store.read_session() as s:
            return webhook_stats(s, books, NOW).rejected_today

    deadline = time.monotonic() + 5  # written off the request path, a moment later
    while counted() != 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert counted() == 3


def test_an_unknown_name_costs_the_receiver_what_a_bad_signature_does(store: Store) -> None:
    """Timing would tell the names apart where the answer does not: a known Xero name's refusal
    reads the body and computes its HMAC (a millisecond or two for a large body), a name no
    connection has was answered before the body was read. Measured side by side, interleaved,
    as medians: within a factor of two of each other."""
    connections(store)
    app = Receiver(store, clock=SimClock(NOW))
    body = b'{"events": [' + b" " * (900 * 1024) + b"]}"
    took: dict[str, list[float]] = {"known": [], "unknown": []}
    pair = [("known", "/webhooks/books"), ("unknown", "/webhooks/bookz")]
    for n in range(60):
        for kind, path in pair if n % 2 else pair[::-1]:  # neither always first
            began = time.perf_counter()
            status = answer(app, path, body, headers=BAD_SIG)[0]
            if n >= 10:  # the first ones warm the directory and the caches
                took[kind].append(time.perf_counter() - began)
            assert status == "401 Unauthorized"
    ratio = statistics.median(took["unknown"]) / statistics.median(took["known"])
    assert 0.5 < ratio < 2.0, ratio
