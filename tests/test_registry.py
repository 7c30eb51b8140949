"""The provider registry: one entry per provider, and everything else reads it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from synccli import connsettings, registry
from synccli.connectors.base import Connector
from synccli.errors import UsageError


def test_names_are_the_entries_in_order() -> None:
    assert registry.names() == tuple(p.name for p in registry.providers())
    assert len(set(registry.names())) == len(registry.names())


def test_unknown_provider_is_a_usage_error_naming_the_choices() -> None:
    with pytest.raises(UsageError) as err:
        registry.get("quickbooks")
    for name in registry.names():
        assert name in str(err.value)


@pytest.mark.parametrize("name", registry.names())
def test_each_entry_is_complete(name: str) -> None:
    p = registry.get(name)
    assert issubclass(p.connector, Connector)
    assert p.limits is p.connector.capabilities.limits
    assert p.credentials and all(c.secret for c in p.credentials)
    assert not any(s.secret for s in p.schema())
    assert p.display_name and all(s.meaning for s in (*p.schema(), *p.credentials))
    # an OAuth provider declares its hooks; an API-key one has nothing to authorise
    assert (p.oauth is not None) == (p.auth is registry.AuthKind.OAUTH)
    assert connsettings.missing(name, {}) == [s.key for s in p.schema() if s.required]


@pytest.mark.parametrize("name", registry.names())
def test_every_default_passes_its_own_check(name: str) -> None:
    for s in registry.get(name).schema():
        if s.default is None or s.default.startswith(("the ", "found ")):
            continue  # described, not a value (the provider's own URL, the tenant found)
        assert s.check(s.default) is None, (s.key, s.default)


ROOT = Path(__file__).resolve().parent.parent


def _literal_lists(tree: ast.AST, names: set[str], *, dicts: bool) -> list[int]:
    """Lines of a tuple, list or set literal naming 2+ providers (with ``dicts``, a dict literal
    keyed by 2+ providers too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            elements: list[ast.expr | None] = list(node.elts)
        elif dicts and isinstance(node, ast.Dict):
            elements = list(node.keys)
        else:
            continue
        named = [e for e in elements if isinstance(e, ast.Constant) and e.value in names]
        if len(named) >= 2:
            found.append(node.lineno)
    return found


def test_no_literal_list_of_providers_outside_the_registry() -> None:
    """Every list of providers derives from ``registry.names()``: adding one is one entry. A
    test about one provider names it; a dict of per-provider expectations in a test is that
    test's data (which providers it runs for still comes from the registry), but in synccli/ and
    bench/ such facts belong to the registry entry."""
    names = set(registry.names())
    offences = []
    for top in ("synccli", "tests", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == ROOT / "synccli" / "registry.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for line in _literal_lists(tree, names, dicts=top != "tests"):
                offences.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offences, "literal lists of providers (use registry.names()):\n" + "\n".join(
        offences
    )


def _provider_modules() -> set[Path]:
    """The modules a provider owns: its connector and simulator modules (registry entry) and the
    parts split off beside them (``xero_payments.py``)."""
    owned = {ROOT / "synccli" / "registry.py"}
    for p in registry.providers():
        for module in (p.connector_module, p.sandbox.module):
            path = ROOT / (module.replace(".", "/") + ".py")
            owned |= {path, *path.parent.glob(f"{path.stem}_*.py")}
    return owned


def _strings(tree: ast.AST) -> list[ast.Constant]:
    """The string constants of ``tree`` that are not docstrings or help text (``help=``: a
    command's example, as #19 left them)."""
    docs = {
        id(kw.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg in ("help", "epilog")
    } | {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


def test_no_module_outside_a_providers_own_names_it() -> None:
    """Generic code never names a provider (#20: "the registry is the only other place that
    names it"): a string constant holding a provider's name as a word (``"xero"``,
    ``f"xero:{id}"``) is allowed only in synccli/registry.py and the provider's own connector and
    simulator modules. Docstrings, comments and help text (its examples) may name providers;
    messages name them by the entry's ``display_name``."""
    names = sorted(registry.names(), key=len, reverse=True)
    word = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w-])")
    owned = _provider_modules()
    offences = []
    for path in sorted((ROOT / "synccli").rglob("*.py")):
        if path in owned:
            continue
        for node in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            if word.search(node.value):
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value[:40]!r}")
    assert not offences, "provider names outside the provider's modules:\n" + "\n".join(offences)
