"""Suspected duplicates among a provider's customers: near-identical names or the same email.

Pure functions over small records (no store, no HTTP), so ``customers review`` can run them over
the remote customers link-customers last saw without spending a call.

What counts as a suspected pair (each pair gets a similarity score, rapidfuzz ``ratio`` of the
normalised names, 100 for the same email):

- the same email address (case, surrounding spaces, dots and ``+tags`` in the local part ignored);
- person names whose surnames agree and whose first names agree, or where exactly one of the two
  differs by one edit or one swapped pair of neighbouring letters ("Jon"/"John", "Smtih"/"Smith"),
  or the first name is an initial of the other ("J. Smith"/"John Smith"). Two fuzzy parts at
  once ("Jhn Smtih") are not flagged.
- Names equal apart from a disambiguator (``"John Smith (2)"``, ``"John Smith #2"``, ``"-1"``)
  are *not* flagged on the name alone: someone (the merchant, or an integration working around
  Xero's unique Name) has already told those two apart. They are flagged when their emails agree.
- Other names (one token, or more than four: companies) match when their sorted tokens agree to
  ``company_threshold`` or more.

Blocking keeps this near-linear: a pair is only compared when it shares a block: (surname's
letters sorted, first letter of the first name) catches first-name variants and transposed
surname letters; (first name, surname's first letter) catches other surname typos; the
normalised email catches the same address under different names. 3,000 customers take well
under a second.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations

from rapidfuzz import fuzz
from rapidfuzz.distance import OSA

_BRACKETS = re.compile(r"[\(\[\{][^\)\]\}]*[\)\]\}]")
_TRAILING_NUMBER = re.compile(r"(?:\s*#\s*\d+|\s*-\s*\d+|\s+\d+)\s*$")
_NON_WORD = re.compile(r"[^a-z0-9]+")
_TITLES = {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir"}


@dataclass(frozen=True)
class Person:
    """One customer as the duplicate finder sees it."""

    id: str
    name: str
    email: str | None = None
    account: str | None = None


@dataclass
class DuplicatePair:
    a: Person
    b: Person
    score: int
    reasons: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.a.id, self.b.id) if self.a.id <= self.b.id else (self.b.id, self.a.id)


@dataclass
class _Norm:
    person: Person
    tokens: list[str]
    disambiguated: bool
    email: str | None

    @property
    def full(self) -> str:
        return " ".join(self.tokens)

    @property
    def is_person(self) -> bool:
        return 2 <= len(self.tokens) <= 4

    @property
    def first(self) -> str:
        return self.tokens[0]

    @property
    def last(self) -> str:
        return self.tokens[-1]


def normalise_name(name: str) -> tuple[list[str], bool]:
    """Lower-case tokens without accents, punctuation, titles or a trailing disambiguator, and
    whether a disambiguator (``(2)``, ``#2``, ``-1``) was removed."""
    text = unicodedata.normalize("NFKD", name or "")
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    stripped = _BRACKETS.sub(" ", text)
    disambiguated = stripped != text and any(ch.isdigit() for ch in text)
    text, n = _TRAILING_NUMBER.subn("", stripped.strip())
    disambiguated = disambiguated or n > 0
    text = text.replace("'", "").replace("\u2019", "")
    tokens = [t for t in _NON_WORD.split(text) if t]
    while len(tokens) > 2 and tokens[0] in _TITLES:
        tokens.pop(0)
    return tokens, disambiguated


def normalise_email(email: str | None) -> str | None:
    """``John.Smith+shop@Example.com `` -> ``johnsmith@example.com``."""
    value = (email or "").strip().lower()
    if "@" not in value:
        return value or None
    local, _, domain = value.rpartition("@")
    local = local.split("+", 1)[0].replace(".", "")
    return f"{local}@{domain}" if local else None


def _norm(p: Person) -> _Norm:
    tokens, disambiguated = normalise_name(p.name)
    return _Norm(p, tokens, disambiguated, normalise_email(p.email))


def _first_names(a: str, b: str) -> str | None:
    """How two first names agree: "same", "initial", "typo", or None."""
    if a == b:
        return "same"
    if (len(a) == 1 and b.startswith(a)) or (len(b) == 1 and a.startswith(b)):
        return "initial"
    if min(len(a), len(b)) >= 3 and OSA.distance(a, b) <= 1:
        return "typo"
    return None


def _surnames(a: str, b: str) -> str | None:
    if a == b:
        return "same"
    if min(len(a), len(b)) >= 4 and OSA.distance(a, b) <= 1:
        return "transposed letters" if sorted(a) == sorted(b) else "typo"
    return None


def compare(x: _Norm, y: _Norm, company_threshold: int) -> DuplicatePair | None:
    """The pair, scored, when ``x`` and ``y`` look like one customer; else None."""
    reasons: list[str] = []
    same_email = x.email is not None and x.email == y.email
    if same_email:
        reasons.append("same email")
    name_match = False
    if x.tokens and x.tokens == y.tokens:
        if not (x.disambiguated or y.disambiguated):
            name_match = True
            reasons.append("same name")
    elif x.is_person and y.is_person:
        first, last = _first_names(x.first, y.first), _surnames(x.last, y.last)
        if first and last and (first == "same" or last == "same"):
            name_match = True
            if first != "same":
                reasons.append(f"first name {first}")
            if last != "same":
                reasons.append(f"surname {last}")
    elif x.tokens and y.tokens and fuzz.token_sort_ratio(x.full, y.full) >= company_threshold:
        name_match = True
        reasons.append("similar name")
    if not (same_email or name_match):
        return None
    score = 100 if same_email else round(fuzz.ratio(x.full, y.full))
    a, b = (x.person, y.person) if x.person.id <= y.person.id else (y.person, x.person)
    return DuplicatePair(a, b, score, reasons)


def _blocks(norms: list[_Norm]) -> dict[tuple[str, ...], list[int]]:
    blocks: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, n in enumerate(norms):
        if n.email:
            blocks[("email", n.email)].append(i)
        if not n.tokens:
            continue
        if n.is_person:
            blocks[("sur", "".join(sorted(n.last)), n.first[0])].append(i)
            blocks[("first", n.first, n.last[0])].append(i)
        else:
            blocks[("org", " ".join(sorted(n.tokens))[:4])].append(i)
    return blocks


def find_duplicates(
    people: Iterable[Person],
    *,
    min_score: int = 0,
    company_threshold: int = 92,
    stats: dict[str, int] | None = None,
) -> list[DuplicatePair]:
    """Suspected duplicate pairs, best score first (each pair once). ``stats`` (when given)
    receives ``customers``, ``blocks`` and ``compared`` (pairs actually compared)."""
    norms = [_norm(p) for p in people]
    found: dict[tuple[str, str], DuplicatePair] = {}
    blocks = _blocks(norms)
    compared = 0
    for members in blocks.values():
        if len(members) < 2:
            continue
        compared += len(members) * (len(members) - 1) // 2
        for i, j in combinations(members, 2):
            x, y = norms[i], norms[j]
            if x.person.id == y.person.id:
                continue
            key = (
                (x.person.id, y.person.id)
                if x.person.id <= y.person.id
                else (y.person.id, x.person.id)
            )
            if key in found:
                continue
            pair = compare(x, y, company_threshold)
            if pair is not None and pair.score >= min_score:
                found[key] = pair
    if stats is not None:
        stats.update(customers=len(norms), blocks=len(blocks), compared=compared)
    return sorted(found.values(), key=lambda p: (-p.score, p.a.name.lower(), p.b.name.lower()))
