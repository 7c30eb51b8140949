"""A tiny local HTTP server answering every GET with JSON, for tests that need a provider's
exact answer (a stuck cursor, a broken row) or a stand-in proxy, without a simulator."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Served:
    url: str  # http://127.0.0.1:port
    paths: list[str] = field(default_factory=list)  # each GET's request target, in order

    @property
    def calls(self) -> int:
        return len(self.paths)


@contextmanager
def answering(answer: Callable[[str, int], Any]) -> Iterator[Served]:
    """Serve ``answer(url, call number)`` as the JSON body of every GET (call numbers from 1)."""
    served = Served("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            served.paths.append(self.path)
            body = json.dumps(answer(served.url, served.calls)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
