"""Direct identifiers that must never leave a workspace, found in any text.

One combined regular expression finds candidates in a single pass; each kind then has a validator
(checksums, date, prefixes) so that arbitrary digit runs are not reported.

* Resident identity number (GB 11643-1999): 17 digits + check digit (ISO 7064 MOD 11-2), with a
  plausible region and birth date.
* Mainland mobile number: 11 digits starting 13-19, optionally +86/0086.
* Bank card number: 16-19 digits (spaces or dashes allowed between groups) passing Luhn, with a
  card-scheme prefix (UnionPay 62, Visa 4, Mastercard 5, Amex/JCB 3).
* Unified social credit code (GB 32100-2015): 18 characters with its MOD 31 check character.
* E-mail address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
_ID_CHECK = "10X98765432"

_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]

KINDS = {
    "resident_id": "resident identity number",
    "mobile": "mobile phone number",
    "bank_card": "bank card number",
    "uscc": "unified social credit code",
    "email": "e-mail address",
}

# Alternatives are tried left to right at each position: the longer, checksummed forms first.
_PATTERN = re.compile(
    r"(?<![0-9A-Za-z])(?:"
    r"(?P<resident_id>[1-9]\d{16}[\dXx])"
    r"|(?P<uscc>[0-9A-HJ-NP-RTUW-Y]{2}\d{6}[0-9A-HJ-NP-RTUW-Y]{10})"
    r"|(?P<bank_card>[3-6]\d{3}(?:[ -]?\d{4}){2}[ -]?\d{4,7})"
    r"|(?P<mobile>(?:\+?86[ -]?|0086[ -]?)?1[3-9]\d{9})"
    r")(?![0-9A-Za-z])"
)
# Candidate spans: runs of the characters the patterns above are made of. Scanning for these first
# is several times faster than trying the full pattern at every position of a large text.
_CANDIDATE = re.compile(r"[0-9A-Z+][0-9A-Zx +-]{10,}")
# E-mail addresses are searched only around each '@': a pattern that starts with a word run would
# otherwise be tried, and fail, at almost every position of a large text.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}")
_EMAIL_LEFT = re.compile(r"[A-Za-z0-9._%+-]{1,64}$")


def valid_resident_id(value: str) -> bool:
    if len(value) != 18 or not value[:17].isdigit():
        return False
    if value[0] not in "12345678":
        return False
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if not date(1900, 1, 1) <= born <= date.today():
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == value[17].upper()


def resident_id_check_digit(first17: str) -> str:
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS)) % 11]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def valid_bank_card(value: str) -> bool:
    digits = re.sub(r"[ -]", "", value)
    return 16 <= len(digits) <= 19 and digits[0] in "3456" and luhn_ok(digits)


def uscc_check_char(first17: str) -> str:
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def valid_uscc(value: str) -> bool:
    if len(value) != 18 or any(c not in _USCC_ALPHABET for c in value):
        return False
    # An all-digit value is far more likely a resident ID or an account number than a USCC.
    if value.isdigit():
        return False
    return uscc_check_char(value[:17]) == value[17]


_VALIDATORS = {
    "resident_id": valid_resident_id,
    "uscc": valid_uscc,
    "bank_card": valid_bank_card,
    "mobile": lambda v: True,
}


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


def find(text: str) -> list[Match]:
    """Every validated identifier in ``text``, in order of position."""
    found = []
    for span in _CANDIDATE.finditer(text):
        found.extend(_in_span(text, span.start(), span.end()))
    at = text.find("@")
    while at != -1:
        left = _EMAIL_LEFT.search(text, max(0, at - 64), at)
        if left is not None:
            m = _EMAIL.match(text, left.start())
            if m is not None:
                found.append(Match("email", m.group(), m.start()))
        at = text.find("@", at + 1)
    found.sort(key=lambda m: m.start)
    return found


def _in_span(text: str, start: int, end: int) -> list[Match]:
    found = []
    # The end is widened by one so the trailing boundary assertion sees the next character.
    for m in _PATTERN.finditer(text, start, min(end + 1, len(text))):
        kind = m.lastgroup
        value = m.group(kind)
        if _VALIDATORS[kind](value):
            found.append(Match(kind, value, m.start(kind)))
        elif kind == "resident_id" and valid_bank_card(value):
            # 18 digits failing the ID checksum may still be a card number.
            found.append(Match("bank_card", value, m.start(kind)))
    return found
