"""No documented invocation puts a secret on a command line (issue 17, line 14).

Every ``synccli`` invocation the project documents (README.md and docs/*.md, code blocks and
inline code; crontab.example; the examples in every command's ``--help``) runs as written, through
``bash -c``, as a real process, with the secrets it may refer to in the environment (``$KEY``,
``$SECRET``, ``SYNC_CLIENT_SECRET`` ...) and in the files it may read (``secret.txt`` ...). A
``sitecustomize`` hook holds each Python process at start-up until this test has read
``/proc/<pid>/cmdline``; then the process is stopped (nothing it would do is needed).
Other processes of the invocation (a pipe's, a shell's) are read from ``/proc`` while they run.
No secret value may appear in any of them, nor any option or ``KEY=VALUE`` that carries one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer

from synccli.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {  # what a documented invocation may name; each value unique and easy to find
    "KEY": "env-key-3c1f9a7be2d4",
    "SECRET": "env-secret-8d2e6b0c41f7",
    "API_KEY": "env-api-key-5a9c3e1d7b20",
    "CLIENT_SECRET": "env-client-secret-1b7d4f9e2c",
    "SYNC_CLIENT_SECRET": "env-sync-client-secret-6e0a2c",
    "SYNC_API_KEY": "env-sync-api-key-9f4b1d3a8e",
    "SYNC_ACCESS_TOKEN": "env-sync-access-token-2d8f0b",
    "SYNC_REFRESH_TOKEN": "env-sync-refresh-token-7c3e",
    "TOKEN": "env-token-0e5a7c9b1d3f",
    "PASSWORD": "env-password-4b6d8f0a2c",
}
FILES = {  # secret files a documented invocation may read
    "secret.txt": "file-secret-txt-91ab3c5d7e",
    "api-key.txt": "file-api-key-txt-2f4e6a8c0b",
    "new-secret.txt": "file-new-secret-txt-5d7f9b1e3a",
    "webhook-key.txt": "file-webhook-key-txt-8c2a4e6f0d",
}
# An argument that carries a secret whatever its value (an option or a KEY=VALUE pair).
SECRET_ARGUMENT = re.compile(
    r"^--(client-secret|api-key|password|token|access-token|refresh-token)(=|$)"
    r"|^(client_secret|api_key|access_token|refresh_token|password|webhook_key"
    r"|webhook_signing_key)="
    r"|://[^/@:\s]+:[^/@\s]+@"  # a password in a URL
)
GATE_HOOK = """
import os, time
_gate = os.environ.get("SYNCCLI_TEST_CMDLINE_GATE")
if _gate:
    _pid = os.getpid()
    open(os.path.join(_gate, f"{_pid}.ready"), "w").close()
    _go = os.path.join(_gate, f"{_pid}.go")
    _until = time.monotonic() + 30
    while not os.path.exists(_go) and time.monotonic() < _until:
        time.sleep(0.002)
"""


# the documented invocations ------------------------------------------------------------------
def _strip_comment(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


def _from_markdown(path: Path) -> list[str]:
    found = []
    in_block = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            text = line.strip().removeprefix("$ ")
            if re.search(r"(^|\s|\|)synccli\s", text) and not text.startswith("synccli/"):
                found.append(_strip_comment(text))
        else:
            found += [s.strip() for s in re.findall(r"`(synccli [^`]+)`", line)]
    return found


def _from_crontab(path: Path) -> list[str]:
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or "synccli" not in line:
            continue
        fields = line.split(None, 5)
        if len(fields) == 6:
            found.append(_strip_comment(fields[5]))
    return found


def _from_help() -> list[str]:
    found = []

    def walk(cmd: Any) -> None:
        for line in (cmd.help or "").splitlines():
            text = line.strip().replace("\b", "").strip()
            if text.startswith("synccli "):
                found.append(_strip_comment(text))
        for sub in (getattr(cmd, "commands", None) or {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return found


def documented() -> list[tuple[str, str]]:
    """(where, invocation) for every documented invocation."""
    found: list[tuple[str, str]] = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        found += [(path.name, line) for line in _from_markdown(path)]
    found += [("crontab.example", line) for line in _from_crontab(ROOT / "crontab.example")]
    found += [("--help", line) for line in _from_help()]
    return list(dict.fromkeys(found))


# running one, reading its processes' command lines -------------------------------------------
def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and fields[3] == str(sid):  # field 6 of stat: session id
            members.append(int(entry.name))
    return members


def run_documented(line: str, work: Path, env: dict[str, str]) -> tuple[int, list[list[str]]]:
    """Run ``line`` through bash; returns how many Python processes the gate held and every
    command line read while the invocation ran."""
    gate = work / "gate"
    for old in gate.iterdir():
        old.unlink()
    proc = subprocess.Popen(
        ["bash", "-c", line],
        cwd=work,
        env={**env, "SYNCCLI_TEST_CMDLINE_GATE": str(gate)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    seen: list[list[str]] = []
    read: set[int] = set()
    held = 0
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            for pid in _session_members(proc.pid):  # bash, a pipe's other side, ...
                if pid not in read and (args := _cmdline(pid)):
                    read.add(pid)
                    seen.append(args)
            ready = sorted(gate.glob("*.ready"))
            for mark in ready:
                pid = int(mark.stem)
                args = _cmdline(pid)  # read while it runs: the gate holds it
                assert args is not None, f"{line}: process {pid} gone before it was read"
                seen.append(args)
                read.add(pid)
                held += 1
                mark.unlink()
                (gate / f"{pid}.go").touch()
                # what the process would do next is not needed: stop the invocation
                os.killpg(proc.pid, signal.SIGKILL)
            if held or proc.poll() is not None:
                break
            time.sleep(0.002)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    return held, seen


@pytest.fixture(scope="module")
def sandbox_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    work = tmp_path_factory.mktemp("documented")
    (work / "gate").mkdir()
    (work / "log").mkdir()
    hook = work / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(GATE_HOOK)
    for name, value in FILES.items():
        (work / name).write_text(value + "\n")
    (work / "orders.jsonl").write_text("{}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.update(SECRETS)
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONPATH=str(hook),
        SYNC_DATA_DIR=str(work / "data"),
        HOME=str(work),
    )
    return work, env


def test_every_documented_invocation_is_found():
    found = documented()
    where = {w for w, _ in found}
    assert {"README.md", "orders.md", "crontab.example", "--help"} <= where
    commands = {line for _, line in found}
    assert any(line.startswith("synccli connections add") for line in commands)
    assert any(line.startswith("synccli connections set") for line in commands)
    assert len(found) > 60


def test_the_gate_reads_a_secret_put_on_a_command_line(sandbox_env):
    """The check bites: a secret typed as an argument is seen in the process's cmdline."""
    work, env = sandbox_env
    held, seen = run_documented('synccli connections list --database-url "$SECRET"', work, env)
    assert held == 1
    assert any(SECRETS["SECRET"] in arg for args in seen for arg in args)


@pytest.mark.parametrize("where,line", documented(), ids=lambda v: str(v)[:60])
def test_no_documented_invocation_puts_a_secret_on_a_command_line(sandbox_env, where, line):
    work, env = sandbox_env
    line = line.replace("/var/log/", f"{work}/log/").replace("/usr/local/bin/synccli", "synccli")
    held, seen = run_documented(line, work, env)
    assert held >= 1, f"{where}: {line!r} started no synccli process"
    values = [*SECRETS.values(), *FILES.values()]
    for args in seen:
        for arg in args:
            assert not any(v in arg for v in values), f"{where}: {line!r} shows a secret: {args}"
            assert not SECRET_ARGUMENT.search(arg), f"{where}: {line!r} passes {arg!r}"


@pytest.mark.parametrize(
    "provider,args",
    [
        ("xero", ["--client-id", "app1", "--client-secret", "typed-secret-9f8e7d6c5b"]),
        ("lightspeed", ["--client-id", "app1", "--client-secret=typed-secret-9f8e7d6c5b"]),
        ("unleashed", ["--api-id", "id-1", "--api-key", "typed-secret-9f8e7d6c5b"]),
    ],
)
def test_a_secret_typed_on_the_command_line_is_refused(store, cli, provider, args):
    result = cli("connections", "add", "shop", "--provider", provider, *args)
    assert result.exit_code == 2, result
    assert result.stderr.count("\n") == 1 and "command line" in result.stderr
    assert "--secret-stdin" in result.stderr
    assert "typed-secret-9f8e7d6c5b" not in result.stdout + result.stderr
    assert "shop" not in cli("connections", "list").stdout  # nothing added
    # the same secret from the environment is taken
    env_var = "SYNC_API_KEY" if provider == "unleashed" else "SYNC_CLIENT_SECRET"
    kept = [a for a in args if not a.startswith(("--client-secret", "--api-key", "typed"))]
    added = cli(
        "connections", "add", "shop", "--provider", provider, *kept,
        env={env_var: "typed-secret-9f8e7d6c5b"},
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr


def test_connections_help_shows_no_option_that_takes_a_secret():
    runner_args = [["connections", "add", "--help"], ["connections", "set", "--help"]]
    from typer.testing import CliRunner

    for args in runner_args:
        shown = CliRunner().invoke(app, args).stdout
        assert "--client-secret" not in shown and "--api-key" not in shown, shown
