"""`synccli providers` and `connections add` are both read from the provider registry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from synccli import registry


def test_providers_json_lists_each_setting_with_meaning_and_default(cli: Any) -> None:
    done = cli("providers", "--json")
    assert done.exit_code == 0, done.stderr
    listed = {p["name"]: p for p in json.loads(done.stdout)}
    assert tuple(listed) == registry.names()
    for entry in registry.providers():
        shown = listed[entry.name]
        assert shown["display_name"] == entry.display_name
        assert [(s["key"], s["meaning"], s["default"]) for s in shown["settings"]] == [
            (s.key, s.meaning, s.default) for s in entry.schema()
        ]
        assert [c["key"] for c in shown["credentials"]] == [c.key for c in entry.credentials]
        assert all(c["secret"] for c in shown["credentials"])


@pytest.mark.parametrize("name", registry.names())
def test_providers_table_names_every_key_of_one_provider(cli: Any, name: str) -> None:
    done = cli("providers", name)
    assert done.exit_code == 0, done.stderr
    entry = registry.get(name)
    assert entry.display_name in done.stdout
    for s in (*entry.schema(), *entry.credentials):
        assert s.key in done.stdout
    others = [p for p in registry.names() if p != name]
    assert not any(f"{o}:" in done.stdout for o in others)


def test_providers_help_has_an_example_and_an_unknown_one_is_refused(cli: Any) -> None:
    assert "synccli providers --json" in cli("providers", "--help").stdout
    done = cli("providers", "quickbooks")
    assert done.exit_code == 2 and all(n in done.stderr for n in registry.names())


def test_connections_add_offers_each_option_setting_and_hides_each_secret(cli: Any) -> None:
    shown = cli("connections", "add", "--help").stdout
    for entry in registry.providers():
        for s in entry.schema():
            assert (s.flag in shown) == s.option, s.key
        for c in entry.credentials:
            assert c.flag not in shown  # read from its variable or stdin only
    assert registry.choices() in shown


@pytest.mark.parametrize("name", registry.names())
def test_connections_add_checks_option_values_with_the_schema(
    store: Any, cli: Any, name: str
) -> None:
    entry = registry.get(name)
    secret = entry.secret
    done = cli(
        "connections", "add", "shop", "--provider", name,
        entry.account_key.flag, "id-1", "--base-url", "ftp://nowhere",
        env={str(secret.env): "a-secret-value-123"},
    )  # fmt: skip
    assert done.exit_code == 2 and "base_url" in done.stderr
    # an option of another provider is refused naming the key, nothing is added
    foreign = next(
        (
            s
            for p in registry.providers()
            for s in p.settings
            if s.option and not entry.setting(s.key)
        ),
        None,
    )
    if foreign is not None:
        done = cli(
            "connections", "add", "shop", "--provider", name,
            entry.account_key.flag, "id-1", foreign.flag, "1",
            env={str(secret.env): "a-secret-value-123"},
        )  # fmt: skip
        assert done.exit_code == 2 and foreign.key in done.stderr
    assert "shop" not in cli("connections", "list").stdout
    added = cli(
        "connections", "add", "shop", "--provider", name, entry.account_key.flag, "id-1",
        env={str(secret.env): "a-secret-value-123"},
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
