"""The newest migration's revision, read from the migration files without alembic or SQLAlchemy.

Alembic (its environment, script directory, Mako templates) is imported only to change the
schema (``db upgrade``): every other command just compares the stored version with the newest
migration's, and a cron run with nothing to do must not pay a third of a second of imports for
that. The two module-level assignments of a migration file name its place in the chain.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERSION_TABLE = "alembic_version"  # alembic's default, which alembic/env.py keeps

_HEADER_CHARS = 4096
_REVISION = re.compile(r"^(down_revision|revision)\b[^=\n]*=\s*(.+?)\s*$", re.MULTILINE)


def head_revision() -> str | None:
    """The newest migration's revision: read from the migration files' ``revision`` and
    ``down_revision`` lines; alembic's own script directory when they are not plain (several
    heads, a merge, a computed value)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (ROOT / "alembic" / "versions").glob("*.py"):
        with path.open(encoding="utf-8") as file:
            # the two lines open the file (alembic's template): its head is searched, not the
            # migration's code, which grows with each file (a file found without them is
            # read by alembic instead)
            head = file.read(_HEADER_CHARS)
        found = dict(_REVISION.findall(head))
        rev, down = found.get("revision", ""), found.get("down_revision", "")
        if not _quoted(rev) or not (down == "None" or _quoted(down)):
            return _alembic_head()
        revisions.add(rev[1:-1])
        if down != "None":
            parents.add(down[1:-1])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else _alembic_head()


def _quoted(value: str) -> bool:
    return len(value) > 2 and value[0] == value[-1] and value[0] in "'\"" and value[1:-1].isalnum()


def _alembic_head() -> str | None:
    from alembic.script import ScriptDirectory

    from synccli.store.db import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
