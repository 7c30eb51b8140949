"""The HTTP layer reads each answer whole: the connection goes back to the pool for the next
call, and an answer cut short by the provider is a transient error (retried), not a crash."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from synccli.connectors.http import HttpClient
from synccli.errors import TransientError


class RawServer:
    """Answers every request on a connection with ``answer`` (raw bytes); counts connections."""

    def __init__(self, answer: bytes, close_after: bool) -> None:
        self.answer, self.close_after = answer, close_after
        self.connections = 0
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffered += chunk
                _, buffered = buffered.split(b"\r\n\r\n", 1)
                self.requests += 1
                conn.sendall(self.answer)
                if self.close_after:
                    return


@pytest.fixture
def serve() -> Iterator:
    servers: list[RawServer] = []

    def start(answer: bytes, close_after: bool = False) -> RawServer:
        server = RawServer(answer, close_after)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.sock.close()


def _answer(body: bytes, length: int | None = None) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


def test_a_large_answer_is_read_whole_and_the_connection_is_reused(serve) -> None:
    body = b'{"Items": [' + b",".join(b'{"Code": "P%06d"}' % n for n in range(60_000)) + b"]}"
    server = serve(_answer(body))
    client = HttpClient(f"http://127.0.0.1:{server.port}", pace=False)
    for _ in range(3):
        assert len(client.json("GET", "Items")["Items"]) == 60_000
    assert (server.requests, server.connections) == (3, 1)


def test_an_answer_cut_short_is_transient_and_retried(serve) -> None:
    server = serve(_answer(b'{"Items": [1, 2', length=1000), close_after=True)
    client = HttpClient(f"http://127.0.0.1:{server.port}", pace=False, retries=2, backoff=0)
    with pytest.raises(TransientError, match="cut short"):
        client.json("GET", "Items")
    assert server.requests == 3  # the first try and two retries, each on a new connection
