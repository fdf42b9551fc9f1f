"""Which action PS3.15 Table E.1-1 asks for each attribute, under the options a site chose.

One responsibility: the table of the Basic Application Level Confidentiality Profile (PS3.15
E.2) and its options (E.3), read from ``deid_table.json`` (generated from the standard's
Table E.1-1 by ``scripts/gen-deid-table``: never edited by hand), and the action it gives
an attribute. Action codes (Table E.1-1 legend): ``D`` replace with a dummy value, ``Z``
zero length (or dummy), ``X`` remove, ``K`` keep, ``C`` clean, ``U`` replace the UID with a
consistently mapped one; compound codes (``X/Z``, ``Z/D``, ``X/D``, ``X/Z/D``, ``X/Z/U*``)
depend on the attribute's type in its IOD. Without the IOD's module tables the least
destructive choice that keeps a type 1 or 2 attribute valid is taken: ``X/Z`` -> ``Z``,
``X/D``, ``Z/D`` and ``X/Z/D`` -> ``D``, ``X/Z/U*`` -> ``U`` for UIDs (else ``Z``).

Options: a chosen option's ``K`` keeps the attribute; its ``C`` keeps it cleaned, which is
done only where cleaning is mechanical: dates and times shifted (Retain Longitudinal
Temporal Information with Modified Dates). Any other ``C`` (free-text descriptors, which no
rule can clean) falls back to the Basic Profile action. Private attributes are removed
(Retain Safe Private is not offered).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import resources

__all__ = ["Option", "Profile", "load_table"]


class Option(Enum):
    """The options of PS3.15 E.3 that securepacs offers, by their Table E.1-1 column."""

    RETAIN_UIDS = "rtnUIDsOpt"
    RETAIN_DEVICE_IDENTITY = "rtnDevIdOpt"
    RETAIN_INSTITUTION_IDENTITY = "rtnInstIdOpt"
    RETAIN_PATIENT_CHARACTERISTICS = "rtnPatCharsOpt"
    RETAIN_LONGITUDINAL_FULL_DATES = "rtnLongFullDatesOpt"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "rtnLongModifDatesOpt"

    @property
    def cli_name(self) -> str:
        """The name on the command line, e.g. ``retain-uids``."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_cli(cls, text: str) -> Option:
        """The option named `text` (``retain-uids``...); ValueError otherwise."""
        for option in cls:
            if option.cli_name == text.strip().lower():
                return option
        names = ", ".join(o.cli_name for o in cls)
        raise ValueError(f"unknown de-identification option {text!r} (one of: {names})")


_EXACT = re.compile(r"\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)")
_MASK = re.compile(r"\([0-9A-Fa-fXx]{4},[0-9A-Fa-fXx]{4}\)")
_TEMPORAL = ("DA", "DT", "TM")
_COMPOUND = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D"}


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1: tag pattern (e.g. ``(60XX,3000)``) and its action columns."""

    tag: str
    name: str
    actions: dict[str, str]

    def matches(self, tag: int) -> bool:
        text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        pattern = self.tag.upper()
        return len(pattern) == len(text) and all(p in ("X", c) for p, c in zip(pattern, text, strict=True))


@cache
def load_table() -> tuple[Row, ...]:
    """The rows of Table E.1-1 (from the generated ``deid_table.json``)."""
    raw = json.loads(resources.files("securepacs.services").joinpath("deid_table.json")
                     .read_text(encoding="utf-8"))
    return tuple(Row(r["tag"], r["name"], {k: v for k, v in r.items()
                                            if k not in ("tag", "name")})
                 for r in raw["rows"])


class Profile:
    """The Basic Profile plus `options`: :meth:`action` gives one of D Z X K C U for a tag.

    Parameters
    ----------
    options : iterable of Option
    """

    def __init__(self, options: frozenset[Option] | set[Option] | tuple[Option, ...] = ()
                 ) -> None:
        self.options = frozenset(options)
        if {Option.RETAIN_LONGITUDINAL_FULL_DATES,
                Option.RETAIN_LONGITUDINAL_MODIFIED_DATES} <= self.options:
            raise ValueError("choose one of retain-longitudinal-full-dates and "
                             "retain-longitudinal-modified-dates")
        self._exact: dict[int, Row] = {}
        self._masks: list[Row] = []
        for row in load_table():
            if _EXACT.fullmatch(row.tag):
                self._exact[int(row.tag[1:5] + row.tag[6:10], 16)] = row
            elif _MASK.fullmatch(row.tag):
                self._masks.append(row)
            # else: "(gggg,eeee) where gggg is odd", the private attributes: removed by the
            # caller (Retain Safe Private is not offered)

    def row(self, tag: int) -> Row | None:
        """The table row for `tag`, or None when the table does not list it."""
        found = self._exact.get(tag)
        if found is not None:
            return found
        return next((r for r in self._masks if r.matches(tag)), None)

    def action(self, tag: int, *, vr: str = "") -> str | None:
        """The action for `tag` whose value representation is `vr` (None: not listed,
        keep it), options applied.

        ``C`` is returned only for a date or time (DA, DT, TM) under Retain Longitudinal
        Temporal Information with Modified Dates (the caller shifts it).
        """
        is_uid = vr == "UI"
        row = self.row(tag)
        if row is None:
            return None
        chosen = [row.actions[o.value] for o in self.options if o.value in row.actions]
        if "K" in chosen:
            return "K"
        if "C" in chosen and vr in _TEMPORAL \
                and Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options \
                and row.actions.get(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES.value) == "C":
            return "C"
        basic = row.actions["basicProfile"]
        if basic == "X/Z/U*":
            return "U" if is_uid else "Z"
        return _COMPOUND.get(basic, basic)
