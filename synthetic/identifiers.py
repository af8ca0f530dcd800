"""Mainland-China identifier patterns, shared by release masking/gates and export review checks.

Each kind is a candidate regular expression plus a validator (check digits where the identifier
has one), so a long number that merely looks like an identifier is not reported. Candidates must
not touch other ASCII letters or digits: a hex pseudonym that happens to contain eleven digits in
a row is not a mobile number, while Chinese text around an identifier does not hide it.

Kinds: ``resident_id`` (居民身份证, GB 11643, ISO 7064 MOD 11-2), ``mobile`` (mainland mobile,
optional +86), ``bank_card`` (16-19 digits, optionally grouped by 4, Luhn), ``uscc`` (统一社会信用代码,
GB 32100, MOD 31) and ``email``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import pandas as pd

_START = r"(?<![0-9A-Za-z])"
_END = r"(?![0-9A-Za-z])"

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def resident_id_check_char(first17: str) -> str:
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS)) % 11]


def is_resident_id(value: str) -> bool:
    """18 characters, a real birth date, and the right check character."""
    v = value.strip().upper()
    if len(v) != 18 or not v[:17].isdigit() or not (v[17].isdigit() or v[17] == "X"):
        return False
    try:
        date(int(v[6:10]), int(v[10:12]), int(v[12:14]))
    except ValueError:
        return False
    return resident_id_check_char(v[:17]) == v[17]


@dataclass(frozen=True)
class ResidentID:
    region: str  # the six-digit administrative division code
    birth_date: date
    sex: str  # "M" or "F": the 17th digit is odd for men


def parse_resident_id(value: str) -> ResidentID:
    v = value.strip().upper()
    if not is_resident_id(v):
        raise ValueError(f"'{value}' is not a valid resident ID number")
    return ResidentID(
        region=v[:6],
        birth_date=date(int(v[6:10]), int(v[10:12]), int(v[12:14])),
        sex="M" if int(v[16]) % 2 else "F",
    )


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def uscc_check_char(first17: str) -> str:
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS))
    return _USCC_CHARS[(31 - total % 31) % 31]


def is_uscc(value: str) -> bool:
    v = value.strip().upper()
    if len(v) != 18 or any(c not in _USCC_CHARS for c in v) or not v[2:8].isdigit():
        return False
    return uscc_check_char(v[:17]) == v[17]


def is_bank_card(value: str) -> bool:
    digits = re.sub(r"[ -]", "", value)
    return 16 <= len(digits) <= 19 and digits.isdigit() and luhn_valid(digits)


_U = "[0-9A-HJ-NPQRTUWXY]"

# Kind -> (candidate pattern, validator). Order matters where shapes overlap: an 18-digit
# resident ID could also pass the USCC or Luhn check by chance, and is reported as what it is.
PATTERNS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "resident_id": (r"\d{17}[\dXx]", is_resident_id),
    "uscc": (rf"{_U}{{2}}\d{{6}}{_U}{{10}}", is_uscc),
    "bank_card": (r"\d{4}(?:[ -]?\d{4}){3}(?:[ -]?\d{1,3})?", is_bank_card),
    "mobile": (r"(?:\+?86[ -]?)?1[3-9]\d{9}", lambda v: True),
    "email": (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", lambda v: True),
}
KINDS = tuple(PATTERNS)

_COMPILED = {kind: re.compile(_START + pat + _END) for kind, (pat, _) in PATTERNS.items()}
# One pass to find the strings worth a closer look.
ANY_CANDIDATE = re.compile("|".join(f"{_START}(?:{pat}){_END}" for pat, _ in PATTERNS.values()))


@dataclass(frozen=True)
class Found:
    kind: str
    start: int
    end: int
    value: str


def find(text: str) -> list[Found]:
    """Every validated identifier in ``text``, without overlaps, in order of position."""
    taken: list[Found] = []
    for kind, rx in _COMPILED.items():
        validate = PATTERNS[kind][1]
        for m in rx.finditer(text):
            if not validate(m.group()):
                continue
            if any(m.start() < f.end and f.start < m.end() for f in taken):
                continue
            taken.append(Found(kind, m.start(), m.end(), m.group()))
    return sorted(taken, key=lambda f: f.start)


def redact(text: str) -> str:
    """``text`` with each identifier replaced by ``[kind]``."""
    found = find(text)
    if not found:
        return text
    out, pos = [], 0
    for f in found:
        out.append(text[pos : f.start])
        out.append(f"[{f.kind}]")
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


def scan_series(series: pd.Series) -> dict[str, int]:
    """Rows of ``series`` holding each kind of identifier; distinct values are scanned once."""
    import pandas as pd

    s = series.dropna()
    if s.empty or not (s.dtype == object or isinstance(s.dtype, pd.StringDtype)):
        return {}
    s = s.astype(str)
    counts_per_value = s.value_counts()
    candidates = counts_per_value[counts_per_value.index.str.contains(ANY_CANDIDATE)]
    counts: dict[str, int] = {}
    for value, n in candidates.items():
        for kind in {f.kind for f in find(value)}:
            counts[kind] = counts.get(kind, 0) + int(n)
    return counts
