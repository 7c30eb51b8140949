"""What each provider's API lets an order carry is declared once, in its capabilities
(``Capabilities.documents``), and README's provider table says the same (issue 22, line 5)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from synccli import registry

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("tax-inclusive prices", "lines without a product code", "payments", "refunds")


def readme_rows() -> dict[str, dict[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    header = "| provider | " + " | ".join(COLUMNS) + " |"
    assert header in text, "README has no provider table of what an order may carry"
    rows: dict[str, dict[str, str]] = {}
    for line in text[text.index(header) :].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(COLUMNS, cells[1:], strict=True))
    return rows


@pytest.mark.parametrize("provider", registry.names())
def test_readme_table_says_what_the_capabilities_say(provider: str) -> None:
    row = readme_rows()[provider]
    documents = registry.get(provider).capabilities.documents
    said = {column: re.match(r"(yes|no)\b", cell).group(1) for column, cell in row.items()}  # type: ignore[union-attr]
    assert said == {
        "tax-inclusive prices": "no" if documents.tax_inclusive == "none" else "yes",
        "lines without a product code": "no" if documents.codeless_lines == "none" else "yes",
        "payments": "no" if documents.payments == "none" else "yes",
        "refunds": "no" if documents.refunds == "none" else "yes",
    }


def test_every_provider_has_a_row() -> None:
    assert set(readme_rows()) == set(registry.names())
