"""Direct identifiers in exported text, as defined once in :mod:`synthetic.identifiers`.

The shared module decides what each kind looks like and how it is validated (resident ID check
character and birth date, Luhn for bank cards, MOD 31 for unified social credit codes, mobile and
e-mail shapes). Here it is applied to large texts quickly: instead of trying every pattern at every
position of a 16 MB file, only the runs of characters identifiers are made of, and the
surroundings of each '@', are handed to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from synthetic import identifiers as shared

KINDS = {
    "resident_id": "resident identity number",
    "mobile": "mobile phone number",
    "bank_card": "bank card number",
    "uscc": "unified social credit code",
    "email": "e-mail address",
}
assert set(KINDS) == set(shared.KINDS), "identifier kinds differ from synthetic.identifiers"

# Runs of the characters the digit/letter identifiers are made of, at least 11 long (a mobile number).
_CANDIDATE = re.compile(r"[0-9A-Z+][0-9A-Zx +-]{10,}")
_EDGE_L, _EDGE_R = r"(?<![0-9A-Za-z])", r"(?![0-9A-Za-z])"
# The shared patterns as one alternation, in the shared order of preference (an 18-digit resident
# ID is tried before a bank card), e-mail apart: it is looked for only around each '@'.
_NUMBERS = re.compile("|".join(
    f"{_EDGE_L}(?P<{kind}>{pattern}){_EDGE_R}" for kind, (pattern, _) in shared.PATTERNS.items() if kind != "email"
))
_EMAIL = re.compile(_EDGE_L + shared.PATTERNS["email"][0] + _EDGE_R)
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
    numbers, emails = [], []
    for span in _CANDIDATE.finditer(text):
        for m in _NUMBERS.finditer(text, span.start(), min(len(text), span.end() + 1)):
            kind = m.lastgroup
            if shared.PATTERNS[kind][1](m.group(kind)):
                numbers.append(Match(kind, m.group(kind), m.start(kind)))
        if limit is not None and len(numbers) >= limit:
            break
    at = text.find("@")
    while at != -1 and (limit is None or len(emails) < limit):
        local = _LOCAL_PART.search(text, max(0, at - 64), at)
        m = _EMAIL.match(text, local.start(), at + _RIGHT) if local else None
        if m is not None:
            emails.append(Match("email", m.group(), m.start()))
            at = text.find("@", m.end())
        else:
            at = text.find("@", at + 1)
    return sorted(numbers + emails, key=lambda m: m.start)
