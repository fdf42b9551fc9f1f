"""C-FIND attribute matching, a pure core (DICOM PS3.4 C.2.2.2).

One :class:`Matcher` per key of an identifier:

- universal matching (C.2.2.2.3): an empty value, or a lone ``*``, matches everything
  (the key is a return key only);
- single value matching (C.2.2.2.1): exact; for PN case-insensitive (a site choice that
  PS3.4 permits and that users expect);
- list of UID matching (C.2.2.2.2): UI values separated by ``\\``;
- wildcard matching (C.2.2.2.4): ``*`` any run, ``?`` one character, for the string VRs
  where the standard allows it;
- range matching (C.2.2.2.5): ``low-high``, ``-high``, ``low-`` for DA, TM, DT, inclusive.

A backslash in a non-UID value is taken as a list of alternatives (any may match), which
is how ModalitiesInStudy queries such as ``CT\\MR`` are written. A stored multi-valued
attribute matches when any of its values matches. An attribute that is absent or empty
in the stored object matches universal matching only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

#: VRs on which wildcard matching applies (PS3.4 C.2.2.2.4).
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
#: VRs on which range matching applies (PS3.4 C.2.2.2.5).
RANGE_VRS = frozenset({"DA", "TM", "DT"})


class Matcher(Protocol):
    """Decides whether a stored value matches one key of a C-FIND identifier."""

    def matches(self, stored: str | None) -> bool:
        """True when `stored` (the DICOM string form, None if absent) matches."""
        ...


def _values(stored: str | None) -> list[str]:
    if stored is None or stored == "":
        return []
    return stored.split("\\")


@dataclass(frozen=True)
class Universal:
    """Matches everything, absent values included."""

    def matches(self, stored: str | None) -> bool:
        return True


@dataclass(frozen=True)
class Single:
    """Exact match of any of `values` (case-insensitive when `fold_case`)."""

    values: tuple[str, ...]
    fold_case: bool = False

    def matches(self, stored: str | None) -> bool:
        wanted = {v.lower() for v in self.values} if self.fold_case else set(self.values)
        for value in _values(stored):
            candidate = value.strip()
            if (candidate.lower() if self.fold_case else candidate) in wanted:
                return True
        return False


@dataclass(frozen=True)
class Wildcard:
    """``*`` / ``?`` patterns; any pattern may match."""

    patterns: tuple[str, ...]
    fold_case: bool = False

    def _regex(self) -> re.Pattern[str]:
        parts = []
        for pattern in self.patterns:
            body = "".join(
                ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern
            )
            parts.append(f"(?:{body})")
        flags = re.IGNORECASE | re.DOTALL if self.fold_case else re.DOTALL
        return re.compile("|".join(parts), flags)

    def matches(self, stored: str | None) -> bool:
        regex = self._regex()
        return any(regex.fullmatch(v.strip()) for v in _values(stored))


def _normal_time(value: str) -> str:
    """TM to ``HHMMSS.ffffff`` (old ``HH:MM:SS`` form accepted), padded with zeros."""
    value = value.strip().replace(":", "")
    whole, _, fraction = value.partition(".")
    return whole.ljust(6, "0") + "." + fraction.ljust(6, "0")


def _normal(vr: str, value: str) -> str:
    value = value.strip()
    if vr == "TM":
        return _normal_time(value)
    if vr == "DT":
        # YYYYMMDDHHMMSS.ffffff, offsets ignored for ordering
        core = re.split(r"[+-]", value, maxsplit=1)[0] if len(value) > 8 else value
        date, time = core[:8].ljust(8, "0"), core[8:]
        return date + _normal_time(time or "0")
    return value


@dataclass(frozen=True)
class Range:
    """Inclusive range on DA/TM/DT; `low` or `high` None for an open end."""

    vr: str
    low: str | None
    high: str | None

    def matches(self, stored: str | None) -> bool:
        for value in _values(stored):
            v = _normal(self.vr, value)
            if self.low is not None and v < _normal(self.vr, self.low):
                continue
            if self.high is not None and v > _normal(self.vr, self.high):
                continue
            return True
        return False


def parse(vr: str, value: str | None) -> Matcher:
    """Build the matcher PS3.4 C.2.2.2 prescribes for a key of VR `vr` with `value`.

    Parameters
    ----------
    vr : str
        The key's value representation (``"PN"``, ``"DA"``, ``"UI"`` ...).
    value : str or None
        The key's value in the identifier, in DICOM string form.

    Raises
    ------
    ValueError
        A range on a VR that has no ordering, or a malformed range.
    """
    if value is None:
        return Universal()
    value = value.strip()
    if value == "" or value.strip("*") == "":
        return Universal()
    fold = vr == "PN"
    alternatives = tuple(v.strip() for v in value.split("\\") if v.strip())
    if vr in RANGE_VRS and any("-" in v for v in alternatives):
        if len(alternatives) != 1:
            raise ValueError(f"range matching takes one range, got {value!r}")
        low, sep, high = alternatives[0].partition("-")
        if vr == "DT" and alternatives[0].count("-") > 1:
            raise ValueError(f"ambiguous DT range {value!r}")
        if not low and not high:
            return Universal()
        return Range(vr, low or None, high or None)
    if vr in WILDCARD_VRS and any(("*" in v or "?" in v) for v in alternatives):
        return Wildcard(alternatives, fold_case=fold)
    return Single(alternatives, fold_case=fold)
