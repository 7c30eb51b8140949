"""What a provider's answer must name before we keep a link to it.

A provider that refused a record may still answer with an element: Xero echoes a refused element
with the nil GUID ``00000000-0000-0000-0000-000000000000`` (its OpenAPI examples for Contacts,
Accounts and xero-node#177 for Invoices), or, in its createItems example, with a real-looking
ItemID and a Code other than the one asked for (asked ``abc``, answered ``abc65591``). Neither
names a record we created, so neither may become a link or a posted invoice's remote id.
"""

from __future__ import annotations

import re

NIL_GUID = "00000000-0000-0000-0000-000000000000"
# Empty, "None" (str() of a missing id), or any all-zero id: the nil GUID, with or without braces
# or dashes, and a numeric 0 (no Lightspeed or Unleashed record has it).
_NIL = re.compile(r"\{?[0\-]*\}?")


def is_nil(remote_id: object) -> bool:
    """True when ``remote_id`` names no record."""
    if remote_id is None:
        return True
    text = str(remote_id).strip()
    return text in ("", "None", "null") or bool(_NIL.fullmatch(text))


def refusal(what: str, remote_id: object, asked: str | None = None, got: str | None = None) -> str:
    """Why an answer for ``what`` is not believed, or "" when it may be: a nil id, or a code
    (``got``) other than the one asked for (``asked``). An answer without a code is not a
    difference (some providers do not echo every field)."""
    if is_nil(remote_id):
        return (
            f"the provider answered {what} with no usable id ({remote_id!s:.60}): "
            "taken as not created, nothing was linked"
        )
    if asked is not None and got and got != asked:
        return (
            f"the provider answered {what} with code {got!r} instead of {asked!r} "
            f"(record {remote_id}): taken as a refusal, nothing was linked"
        )
    return ""
