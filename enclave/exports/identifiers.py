"""Direct identifiers in exported text, as defined once in :mod:`synthetic.identifiers`.

The shared module decides what each kind looks like and how it is validated (resident ID check
character and birth date, Luhn for bank cards, MOD 31 for unified social credit codes, mobile and
e-mail shapes). Here it is applied to large texts quickly: instead of trying every pattern at every
position of a 16 MB file, only the runs of characters identifiers are made of, and the
surroundings of each '@', are handed to it.

The shared module is imported on first use (it imports pandas), so importing the checks is cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

KINDS = {
    "resident_id": "resident identity number",
    "mobile": "mobile phone number",
    "bank_card": "bank card number",
    "uscc": "unified social credit code",
    "email": "e-mail address",
}

# Runs of the characters the digit/letter identifiers are made of, at least 11 long (a mobile number).
_CANDIDATE = re.compile(r"[0-9A-Z+][0-9A-Zx +-]{10,}")
_EDGE_L, _EDGE_R = r"(?<![0-9A-Za-z])", r"(?![0-9A-Za-z])"


@cache
def _shared():
    """The shared patterns and validators; the numbers' patterns as one alternation and e-mail's.

    The alternation keeps the shared order of preference (an 18-digit resident ID is tried before a
    bank card); e-mail is apart: it is looked for only around each '@'.
    """
    from synthetic import identifiers as shared

    assert set(KINDS) == set(shared.KINDS), "identifier kinds differ from synthetic.identifiers"
    numbers = re.compile("|".join(
        f"{_EDGE_L}(?P<{kind}>{pattern}){_EDGE_R}" for kind, (pattern, _) in shared.PATTERNS.items() if kind != "email"
    ))
    return shared.PATTERNS, numbers, re.compile(_EDGE_L + shared.PATTERNS["email"][0] + _EDGE_R)


_LOCAL_PART = re.compile(r"[A-Za-z0-9._%+-]{1,64}$")
# Longest domain looked at after an '@'.
_RIGHT = 255


@dataclass(frozen=True)
class Match:
    kind: str
    value: str
    start: int

    @property
    def masked(self) -> str:
        """The value with its middle hidden, so findings do not repeat the identifier in full."""
        v = self.value
        keep = 3 if len(v) > 8 else 1
        return v[:keep] + "*" * (len(v) - 2 * keep) + v[-keep:]


def find(text: str, limit: int | None = None) -> list[Match]:
    """Validated identifiers in ``text`` in order of position (the first ``limit`` of each sort)."""
    patterns, number_pattern, email_pattern = _shared()
    numbers, emails = [], []
    for span in _CANDIDATE.finditer(text):
        for m in number_pattern.finditer(text, span.start(), min(len(text), span.end() + 1)):
            kind = m.lastgroup
            if patterns[kind][1](m.group(kind)):
                numbers.append(Match(kind, m.group(kind), m.start(kind)))
        if limit is not None and len(numbers) >= limit:
            break
    at = text.find("@")
    while at != -1 and (limit is None or len(emails) < limit):
        local = _LOCAL_PART.search(text, max(0, at - 64), at)
        m = email_pattern.match(text, local.start(), at + _RIGHT) if local else None
        if m is not None:
            emails.append(Match("email", m.group(), m.start()))
            at = text.find("@", m.end())
        else:
            at = text.find("@", at + 1)
    return sorted(numbers + emails, key=lambda m: m.start)
