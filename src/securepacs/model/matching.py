"""C-FIND attribute matching, a pure core (DICOM PS3.4 C.2.2.2).

One :class:`Matcher` per key of an identifier:

- universal matching (C.2.2.2.3): an empty value, or a lone ``*``, matches everything
  (the key is a return key only);
- single value matching (C.2.2.2.1): exact; for PN case-insensitive (a site choice that
  PS3.4 permits and that users expect);
- list of UID matching (C.2.2.2.2): UI values separated by ``\\``;
- wildcard matching (C.2.2.2.4): ``*`` any run, ``?`` one character, for the string VRs
  where the standard allows it;
- range matching (C.2.2.2.5): ``low-high``, ``-high``, ``low-`` for DA, TM, DT, inclusive;
- sequence matching (C.2.2.2.6): a sequence key holds one item of keys; a stored sequence
  matches when at least one of its items matches every key of that item (nested sequences
  alike); a sequence key with no item, or whose item holds only universal keys, is
  universal. :func:`matching_items` gives the stored items that match, to be returned.

A backslash in a non-UID value is taken as a list of alternatives (any may match), which
is how ModalitiesInStudy queries such as ``CT\\MR`` are written. A stored multi-valued
attribute matches when any of its values matches. An attribute that is absent or empty
in the stored object matches universal matching only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, TypeAlias

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
    if stored is None or stored.strip(" \x00") == "":
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

    @cached_property
    def _folded(self) -> re.Pattern[str]:
        # the same folding as Wildcard (re.IGNORECASE), so both agree on every character
        body = "|".join(f"(?:{re.escape(v)})" for v in self.values)
        return re.compile(body, re.IGNORECASE | re.DOTALL)

    def matches(self, stored: str | None) -> bool:
        if self.fold_case:
            return any(self._folded.fullmatch(v.strip()) for v in _values(stored))
        return any(v.strip() in self.values for v in _values(stored))


@dataclass(frozen=True)
class Wildcard:
    """``*`` / ``?`` patterns; any pattern may match."""

    patterns: tuple[str, ...]
    fold_case: bool = False

    @cached_property
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
        regex = self._regex
        return any(regex.fullmatch(v.strip()) for v in _values(stored))


def _normal_time(value: str, pad: str = "0") -> str:
    """TM to ``HHMMSS.ffffff`` (old ``HH:MM:SS`` form accepted); the missing precision is
    filled with `pad`: ``"0"`` for a value or a lower bound, ``"9"`` for an upper bound, so
    that ``-0900`` includes 09:00:30 (the bound names the whole minute)."""
    value = value.strip().replace(":", "")
    whole, _, fraction = value.partition(".")
    return whole.ljust(6, pad) + "." + fraction.ljust(6, pad)


def _normal(vr: str, value: str, pad: str = "0") -> str:
    value = value.strip()
    if vr == "TM":
        return _normal_time(value, pad)
    if vr == "DT":
        # YYYYMMDDHHMMSS.ffffff, offsets ignored for ordering
        core = _DT_OFFSET.sub("", value)
        date, time = core[:8].ljust(8, pad), core[8:]
        return date + _normal_time(time, pad) if time else date + _normal_time("", pad)
    return value


#: A DT value (PS3.5 6.2) with an optional UTC offset, and a DT range.
_DT_VALUE = r"\d{4,14}(?:\.\d{1,6})?(?:[+-]\d{4})?"
_DT_OFFSET = re.compile(r"[+-]\d{4}$")
_DT_SINGLE = re.compile(r"\d{10,14}(?:\.\d{1,6})?[+-]\d{4}")
_DT_RANGE = re.compile(f"({_DT_VALUE})?-({_DT_VALUE})?")


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
            if self.high is not None and v > _normal(self.vr, self.high, "9"):
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
    is_single_dt = vr == "DT" and all(_DT_SINGLE.fullmatch(v) for v in alternatives)
    if vr in RANGE_VRS and not is_single_dt and any("-" in v for v in alternatives):
        if len(alternatives) != 1:
            raise ValueError(f"range matching takes one range, got {value!r}")
        if vr == "DT":
            found = _DT_RANGE.fullmatch(alternatives[0])
            if found is None:
                raise ValueError(f"malformed DT range {value!r}")
            low, high = found.group(1), found.group(2)
        else:
            low, _, high = alternatives[0].partition("-")
        if not low and not high:
            return Universal()
        return Range(vr, low or None, high or None)
    if vr in WILDCARD_VRS and any(("*" in v or "?" in v) for v in alternatives):
        return Wildcard(alternatives, fold_case=fold)
    return Single(alternatives, fold_case=fold)


#: A stored sequence item: attribute name -> DICOM string value, or the items of a nested
#: sequence.
StoredItem: TypeAlias = Mapping[str, "str | Sequence[StoredItem]"]


@dataclass(frozen=True)
class ItemKey:
    """One key inside the item of a sequence key: name, VR and value, or (for a nested
    sequence) the keys of its item (`items`, empty for a zero-length sequence key)."""

    name: str
    vr: str
    value: str = ""
    items: tuple[ItemKey, ...] = ()

    def is_universal(self) -> bool:
        if self.vr == "SQ":
            return all(k.is_universal() for k in self.items)
        return isinstance(parse(self.vr, self.value), Universal)

    def matches(self, item: StoredItem) -> bool:
        stored = item.get(self.name)
        if self.vr == "SQ":
            if self.is_universal():
                return True
            return bool(matching_items(self.items, stored if isinstance(stored, Sequence)
                                       and not isinstance(stored, str) else ()))
        return parse(self.vr, self.value).matches(stored if isinstance(stored, str) else None)


def matching_items(keys: Sequence[ItemKey], stored: Sequence[StoredItem]) -> list[int]:
    """Positions of the stored items that match every one of `keys` (PS3.4 C.2.2.2.6).

    With only universal keys every item matches. Raises ValueError as :func:`parse` does.
    """
    return [i for i, item in enumerate(stored) if all(k.matches(item) for k in keys)]
