"""A cron run with nothing to do is cheap: the CLI imports what the command runs, not every
command's machinery (alembic's migration environment, the connectors and their HTTP stack, the
terminal renderer), and the schema check reads the stored version against the newest migration
file's without alembic."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from synccli.store.db import Store, _alembic_head, head_revision

# Not needed to find out that nothing is due with no connection to serve.
HEAVY = (
    "alembic",
    "mako",
    "requests",
    "urllib3",
    "rich",
    "cryptography",
    "rapidfuzz",
    "synccli.connectors",
    "synccli.sandbox",
    "synccli.sync.context",
    "synccli.sync.status",
    "synccli.sync.plan",
)
RUN = (
    "import sys\n"
    "sys.argv = ['synccli', 'post-invoices', '--all']\n"
    "from synccli.cli.main import app\n"
    "try:\n"
    "    app(prog_name='synccli')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print('\\n' + __import__('json').dumps([code, sorted(sys.modules)]))\n"
)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # compiled once into the test's directory, as an installed package's modules are
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
    return env


def _cpu(args: list[str], env: dict[str, str], cwd: Path) -> float:
    """CPU seconds (user + system) of one child process running ``args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(args, env=env, check=True, capture_output=True, cwd=cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def test_the_newest_migration_is_read_from_the_files_as_alembic_reads_it() -> None:
    assert head_revision() == _alembic_head()


def test_a_store_without_a_schema_has_no_revision_and_an_upgraded_one_the_newest(
    store: Store, tmp_path: Path
) -> None:
    assert store.current_revision() == head_revision()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
    assert store.current_revision() is None


def test_a_quiet_post_invoices_run_imports_no_migration_or_job_machinery(
    store: Store, tmp_path: Path
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", RUN],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    code, modules = json.loads(out.stdout.splitlines()[-1])
    assert code in (0, None), out.stderr
    loaded = [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert not loaded


@pytest.mark.slow
def test_a_quiet_post_invoices_run_spends_at_most_0_3_s_of_cpu(
    store: Store, tmp_path: Path
) -> None:
    """The CPU time (not wall time: less sensitive to other work on the machine) of
    ``synccli post-invoices --all`` with nothing to do, the least of a few runs. Two libraries the
    CLI cannot start without (SQLAlchemy's ORM and typer's parameter checks) take about two
    thirds of the budget on an idle machine; on a loaded one every process runs slower, so the
    bound is 0.3 s or twice what those two imports cost here and now, whichever is larger (1.5
    times left about 15% of margin, too little under the parallel suite's load)."""
    env = _env(tmp_path)
    command = [sys.executable, "-m", "synccli", "post-invoices", "--all"]
    floor = [sys.executable, "-c", "import sqlalchemy.orm, typer._adapters"]
    _cpu(command, env, tmp_path)  # compiles the modules once
    ours, libraries = [], []
    for _ in range(5):  # alternating: a burst of load hits both alike
        ours.append(_cpu(command, env, tmp_path))
        libraries.append(_cpu(floor, env, tmp_path))
    bound = max(0.3, 2.0 * min(libraries))
    load = os.getloadavg()[0]
    assert min(ours) <= bound, (min(ours), min(libraries), load)
