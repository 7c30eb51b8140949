"""The HTTP layer reads proxy settings from the environment once, and still honours them.

A merchant behind a company proxy sets ``HTTPS_PROXY`` / ``HTTP_PROXY`` and ``NO_PROXY``; the
client must route through the proxy exactly as requests itself would. A loopback server stands in
for the proxy: a proxied request arrives with an absolute URI in its request line.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from synccli.connectors.http import HttpClient


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).seen.append(self.path)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    finally:
        server.shutdown()
        server.server_close()


def _clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_http_proxy_from_the_environment_is_used_on_every_call(
    recorder: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, seen = recorder
    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    client = HttpClient("http://provider.example.invalid/api", pace=False)
    for _ in range(2):
        assert client.json("GET", "Items", params={"page": "1"}) == {"ok": True}
    # the proxy saw both calls, addressed to the provider's host
    assert seen == ["http://provider.example.invalid/api/Items?page=1"] * 2


def test_no_proxy_host_is_reached_directly(
    recorder: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, seen = recorder
    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # discard port: nothing answers
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = HttpClient(direct, pace=False)
    assert client.json("GET", "ping") == {"ok": True}
    assert seen == ["/ping"]
