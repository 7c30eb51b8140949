"""Running the receiver under waitress (a pure-Python production WSGI server: a thread pool
behind an event loop, request bodies buffered before the application sees them, so a slow
client holds no worker)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# A request whose client goes quiet (a slow-loris sending its body a byte at a time, or not at
# all) is dropped after this many seconds without a byte; waitress checks every CLEANUP_INTERVAL.
# Waitress's own default keeps it 120 s, and 100 such connections fill every slot, so the
# providers' deliveries would be refused. A provider sends a delivery in one go, within its own
# 5-second deadline [Xero, X-Series], so 10 s of silence is never one of theirs.
CHANNEL_TIMEOUT = 10
CLEANUP_INTERVAL = 2


def serve(
    application: Any,
    *,
    host: str,
    port: int,
    threads: int,
    body_cap: int,
    seconds: float | None = None,
    listening: Callable[[str, int], None] | None = None,
) -> None:
    """Serve until stopped (Ctrl-C, SIGTERM), or for ``seconds``. ``listening`` is told the
    address once the socket is bound (port 0 picks a free one)."""
    from waitress.server import create_server

    server = create_server(
        application,
        host=host,
        port=port,
        threads=threads,
        # waitress buffers a body before calling the application: this cap bounds what it
        # buffers; the application's own, lower, answers 413 with a log line below it
        max_request_body_size=body_cap,
        channel_timeout=CHANNEL_TIMEOUT,
        cleanup_interval=CLEANUP_INTERVAL,
        ident="synccli",
    )
    if listening is not None:
        listening(str(server.effective_host), int(server.effective_port))
    if seconds is None:
        server.run()
        return
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            server.asyncore.loop(timeout=0.1, map=server._map, count=1)
    finally:
        server.task_dispatcher.shutdown()
        server.close()
