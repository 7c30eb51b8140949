"""A clone of this repository alone runs its tests: no test or benchmark reads a file outside
the checkout (issue 17, line 1)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [*sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "bench").rglob("*.py"))]

# ``Path(__file__).parents[N]``: the folder N+1 levels above the file that names it.
PARENTS = re.compile(r"parents\[(\d+)\]")
# A path written out that leaves the checkout: an absolute path under the machine's work folders,
# the sibling ``shared`` folder the project's documents came from, or a step up with "..".
OUTSIDE = re.compile(
    r"""["'](/work/|/home/|\.\./)"""  # an absolute or upward path in a string
    r"""|["']shared["']\s*/"""  # ... / "shared" / ...
    r"""|shared/(specs|docs)"""
)


def _outside_references(path: Path, root: Path = ROOT) -> list[str]:
    text = path.read_text(encoding="utf-8")
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for match in PARENTS.finditer(line):
            target = path.resolve().parents[int(match.group(1))]
            if not target.is_relative_to(root):
                found.append(f"{path.relative_to(root)}:{n}: parents[{match.group(1)}] is {target}")
        if OUTSIDE.search(line):
            found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    return found


def test_no_test_or_benchmark_refers_to_a_path_outside_the_checkout():
    assert SCANNED, "the scan found no files: the test would pass whatever they held"
    found = [
        hit
        for path in SCANNED
        if path != Path(__file__).resolve()
        for hit in _outside_references(path)
    ]
    assert found == []


def test_the_guard_bites(tmp_path):
    """The scan recognises each way a file could leave the checkout."""
    root = tmp_path / "checkout"
    (root / "tests").mkdir(parents=True)
    probe = root / "tests" / "probe.py"
    bad = [
        # Built from parts so that this probe text is not itself a reference to outside.
        "SPEC = Path(__file__).resolve().parents["
        + "2] / "
        + '"sha'
        + 'red" / "specs" / "x.yaml"\n',
        'DOC = "/work/shared/docs/design.md"\n',
        'UP = Path("../elsewhere/file.txt")\n',
    ]
    for line in bad:
        probe.write_text(line)
        assert _outside_references(probe, root), line
    probe.write_text('DOC = Path(__file__).resolve().parents[1] / "docs" / "orders.md"\n')
    assert _outside_references(probe, root) == []


def test_the_xero_spec_used_by_the_tests_ships_with_its_licence():
    spec = ROOT / "tests" / "specs" / "xero_accounting.yaml"
    licence = ROOT / "tests" / "specs" / "LICENSE-Xero-OpenAPI"
    assert spec.read_text(encoding="utf-8").startswith("openapi: 3.0.0")
    assert "MIT License" in licence.read_text() and "Xero" in licence.read_text()
