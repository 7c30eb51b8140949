"""The HTTP layer reads proxy settings from the environment once, and still honours them.

A merchant behind a company proxy sets ``HTTPS_PROXY`` / ``HTTP_PROXY`` and ``NO_PROXY``; the
client must route through the proxy exactly as requests itself would. A loopback server stands in
for the proxy: a proxied request arrives with an absolute URI in its request line.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from local_json import answering

from synccli.connectors.http import HttpClient


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    with answering(lambda url, call: {"ok": True}) as served:
        yield served.url, served.paths


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
