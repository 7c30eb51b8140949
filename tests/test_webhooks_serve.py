"""#23: `synccli webhooks serve` in a real process. Killed (SIGKILL) with a delivery in flight,
it has stored nothing of it; the provider's retry to the restarted receiver is stored once."""

from __future__ import annotations

import re
import select
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hostile.support import cli_env, kill9, spawn
from sqlalchemy import func
from sqlalchemy import select as sql_select
from test_webhooks_receiver import FORM, X_TOKEN, _x_form, _x_series

from synccli.store.db import Store, sqlite_path
from synccli.store.models import WebhookEventRow

LISTENING = re.compile(r"receiving webhooks on http://([\d.]+):(\d+)/")


@contextmanager
def receiver(data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = spawn(["-v", "webhooks", "serve", "--port", "0"], cli_env(data_dir))
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        found = LISTENING.search(line)
        assert found, f"no listening line: {line!r}"
        yield proc, int(found.group(2))
    finally:
        kill9(proc)


def _request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {FORM}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def send(port: int, path: str, body: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(_request(path, body))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def stored(store: Store) -> int:
    with store.read_session() as s:
        return s.scalar(sql_select(func.count()).select_from(WebhookEventRow)) or 0


@pytest.mark.slow  # three receiver processes started
def test_killed_mid_request_then_the_retry_is_stored_once(
    store: Store, _isolated_env: Path
) -> None:
    _x_series(store)
    path = f"/webhooks/xs/{X_TOKEN}"
    body = _x_form({"id": "p-1", "sku": "MUG", "version": 12})
    db = sqlite_path(store.settings.database_url)
    assert db is not None

    # 1. killed while the delivery's body is still arriving
    with receiver(_isolated_env) as (proc, port):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        whole = _request(path, body)
        sock.sendall(whole[: len(whole) - 20])
        time.sleep(0.3)
        kill9(proc)
        sock.close()
    assert stored(store) == 0

    # 2. killed inside the application, its write waiting for a lock another process holds
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with receiver(_isolated_env) as (proc, port):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(_request(path, body))
            time.sleep(1.0)  # read, verified, parsed: now waiting for the write lock
            assert proc.poll() is None
            kill9(proc)
            sock.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert stored(store) == 0

    # 3. the provider retries (twice: it never saw an answer): one row
    with receiver(_isolated_env) as (_proc, port):
        assert send(port, path, body) == 200
        assert send(port, path, body) == 200
    assert stored(store) == 1
