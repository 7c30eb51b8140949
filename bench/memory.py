"""Memory over many connections, side by side: the peak RSS of ``synccli pull-products --all``
(and with ``--json``) over N connections' first pulls, by this checkout and by an earlier
revision, in one run.

    .venv/bin/python bench/memory.py --baseline main --connections 5 --products 20000

One Xero sandbox (every connection points at it, so each connection's first pull imports the
whole catalogue) runs in this process; each command runs as a child process from its tree (the
baseline exported into a temporary directory, its ``synccli`` first on the path), on a SQLite
store of its own, and its peak RSS is the child's own high-water mark (``VmHWM``).
The load average is printed. Target (issue 21): memory does not grow with the number of
connections (300 MB at 20 connections of 50,000 products).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

import _common as common  # noqa: E402
import throughput  # noqa: E402
from store_writes import export  # noqa: E402

# the child's own peak (VmHWM: this address space's high-water mark, see _common.peak_rss_mb),
# written where PEAK_OUT says when it exits
RUN = """
import atexit, os, sys
def _peak():
    with open("/proc/self/status") as status:
        kb = next(line for line in status if line.startswith("VmHWM:")).split()[1]
    with open(os.environ["PEAK_OUT"], "w") as out:
        out.write(kb)
atexit.register(_peak)
from synccli.cli.main import run
sys.argv[0] = "synccli"
run()
"""


SETUP = """
import json, sys
from synccli.config import load_settings
from synccli.store.connections import add_connection, set_values
from synccli.store.db import Store
values = json.loads(open(sys.argv[1]).read())
store = Store(load_settings())
store.upgrade()
for i in range(int(sys.argv[2])):
    creds = dict(values["credentials"])
    keys = ("access_token", "refresh_token", "expires_at")
    tokens = {k: creds.pop(k) for k in keys if k in creds}
    name = f"shop{i:02d}"
    add_connection(store, name, values["provider"], values["settings"], creds, None)
    if tokens:
        set_values(store, name, {k: str(v) for k, v in tokens.items()})
store.dispose()
"""


def store_with(tree: Path, data: Path, values: Path, n: int) -> None:
    """An upgraded SQLite store in ``data`` (by ``tree``'s code: its schema) with ``n``
    connections to the sandbox."""
    data.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "SYNC_DATA_DIR": str(data)}
    subprocess.run(
        [sys.executable, "-c", SETUP, str(values), str(n)], env=env, cwd=data, check=True
    )


def peak_mb(tree: Path, data: Path, *args: str) -> float:
    out = data / "peak"
    env = {**os.environ, "PYTHONPATH": str(tree), "SYNC_DATA_DIR": str(data), "PEAK_OUT": str(out)}
    subprocess.run(
        [sys.executable, "-c", RUN, *args],
        env=env,
        cwd=data,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return int(out.read_text()) / 1024.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--baseline", default="main", help="revision to compare with (default main)")
    ap.add_argument("--connections", type=int, default=5)
    ap.add_argument("--products", type=int, default=20_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--json-out")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="synccli-memory-"))
    commit = export(args.baseline, work / "baseline")
    doc: dict[str, Any] = {
        "machine": common.machine(),
        "baseline": {"rev": args.baseline, "commit": commit},
        "connections": args.connections,
        "products": args.products,
        "runs": [],
    }
    running, _timed = throughput.start_sandbox("xero", args.products)
    try:
        values = throughput.connection_file(running, work)
        for flags in ((), ("--json",)):
            row: dict[str, Any] = {"command": " ".join(["pull-products", "--all", *flags])}
            for name, tree in (("ours", ROOT), ("baseline", work / "baseline")):
                data = work / f"{name}-{len(flags)}"
                store_with(tree, data, values, args.connections)
                row[f"{name}_mb"] = round(peak_mb(tree, data, "pull-products", "--all", *flags))
            doc["runs"].append(row)
    finally:
        running.stop()
    doc["machine"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    common.emit(doc, args.json_out, args.json, lambda: render(doc))
    return 0


def render(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    return "\n".join(
        [
            f"bench/memory.py: peak RSS of a first pull over {doc['connections']} connections of "
            f"{doc['products']:,} products (Xero sandbox, SQLite); baseline "
            f"{doc['baseline']['rev']} ({doc['baseline']['commit']}) and this checkout "
            f"({m['commit']}), in one run",
            f"machine: {m['uname']}; nproc {m['nproc']}; Python {m['python']}; {m['date']}; "
            f"load average {m['load']} at the start, {m['load_after']} at the end",
            "",
            common.table(
                ["command", "baseline peak MB", "ours peak MB"],
                [[r["command"], r["baseline_mb"], r["ours_mb"]] for r in doc["runs"]],
            ),
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
