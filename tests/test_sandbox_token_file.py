"""``sandbox serve --token-file``: a simulator whose provider has tokens made without an app
(Lightspeed X-Series' personal tokens) writes one to a file only its owner reads, so the
README's ``connections add ... --grant personal_token --secret-stdin < FILE`` can be tried
against it; the token is never printed."""

from __future__ import annotations

import socket
import stat
import threading
import time
from pathlib import Path

import requests

from synccli.sandbox.lightspeed_x import API


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_writes_a_personal_token_the_sandbox_accepts(cli, tmp_path: Path) -> None:
    port, token_file, results = _free_port(), tmp_path / "token.txt", []
    args = ("--port", str(port), "--seconds", "3", "--token-file", str(token_file))
    serve = threading.Thread(
        target=lambda: results.append(
            cli("sandbox", "serve", "--provider", "lightspeed-x", "--products", "2", *args)
        )
    )
    serve.start()
    deadline = time.monotonic() + 10
    while not (token_file.exists() and token_file.read_text().endswith("\n")):
        assert time.monotonic() < deadline and serve.is_alive(), results
        time.sleep(0.05)
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    answer = requests.get(
        f"http://127.0.0.1:{port}{API}/retailer",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    serve.join(timeout=10)
    assert results and results[0].exit_code == 0, results
    assert token not in results[0].stdout + results[0].stderr


def test_a_sandbox_without_such_tokens_refuses_the_option(cli, tmp_path: Path) -> None:
    token_file = tmp_path / "token.txt"
    args = ("--seconds", "0.1", "--token-file", str(token_file))
    result = cli("sandbox", "serve", "--provider", "xero", "--products", "1", *args)
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "--token-file" in result.stderr and "--connect" in result.stderr
    assert not token_file.exists()
