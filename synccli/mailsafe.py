"""What Python's email package accepts in a header, checked where text enters the store.

An order number reaches the subject of the merchant's emails, ``notify_email`` the ``To``
header. The email package splits a header value with ``str.splitlines()`` and refuses any value
that splits ("Header values may not contain linefeed or carriage return characters"): besides
CR and LF that is VT, FF, U+001C-U+001E, U+0085, U+2028 and U+2029. The other C0 and C1 controls
pass the email package but garble the header (and a terminal), so they are refused too.
"""

from __future__ import annotations

import re
from email.headerregistry import Address

# C0 controls, DEL, C1 controls, LINE SEPARATOR, PARAGRAPH SEPARATOR.
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ADDRESS = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+")


def first_unsafe(text: str) -> str | None:
    """``U+2028`` for the first character a header cannot carry, or None."""
    match = UNSAFE.search(text)
    return f"U+{ord(match.group()):04X}" if match else None


def header_text(text: str) -> str:
    """``text`` with every unsafe character written as its ``\\uXXXX`` escape, so a subject
    naming a record stored before these checks existed can still be sent (and still names it)."""
    return UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def check_address(value: str, setting: str = "notify_email") -> str:
    """One email address (``owner@shop.example``) as the email package will take it in ``To``;
    raises ValueError with a message naming ``setting``."""
    bad = first_unsafe(value.strip(" \t"))  # before str.strip(), which drops U+2028 silently
    text = value.strip()
    if bad:
        raise ValueError(f"{setting}: {value!r} contains a control character or line break ({bad})")
    problem = f"{setting}: {value!r} is not an email address (give one, such as owner@shop.example)"
    if not _ADDRESS.fullmatch(text):
        raise ValueError(problem)
    try:
        Address(addr_spec=text)
    except Exception:  # the email package's own parser: HeaderParseError, IndexError, ...
        raise ValueError(problem) from None
    return text
