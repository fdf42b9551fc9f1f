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

Options: a chosen option's ``K`` keeps the attribute; its ``C`` ("clean": keep it, with any
identifying information replaced by values of similar meaning, PS3.15 E.3) is done where it
can be done without guessing:

- dates and times are shifted (Retain Longitudinal Temporal Information with Modified Dates);
- a text attribute under Clean Descriptors, Clean Structured Content or Clean Graphics is
  kept only when its value is on the site's allowlist (values known to hold no identifying
  information, e.g. ``CHEST PA``); any other value gets the Basic Profile action. No rule
  can tell a free-text description without a name in it from one with a name in it;
- a sequence under Clean Structured Content (Content Sequence, Acquisition Context and
  Specimen Preparation Sequences) or Clean Graphics (Graphic Annotation Sequence) is kept
  and its items de-identified in turn, their free text (Text Value (0040,A160), Unformatted
  Text Value (0070,0006)) kept only when allowlisted, else replaced by a dummy; a code
  sequence under Clean Descriptors gets the Basic Profile action.

Free text inside content items and graphic annotations, which Table E.1-1 does not list by
itself (it lists the enclosing sequence), is replaced by a dummy value under the Basic
Profile too (the sequence's ``D``), and the dates and times of content items (0040,A120-
A122) take the action of Content Date, Content Time and Acquisition DateTime. Clean Pixel
Data and Clean Recognizable Visual Features are not offered: they need to know where in the
pixels the text or the face is (:data:`NOT_OFFERED`). Private attributes are removed
(Retain Safe Private is not offered).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import resources

__all__ = ["NOT_OFFERED", "Option", "Profile", "load_table"]


class Option(Enum):
    """The options of PS3.15 E.3 that securepacs offers, by their Table E.1-1 column."""

    RETAIN_UIDS = "rtnUIDsOpt"
    RETAIN_DEVICE_IDENTITY = "rtnDevIdOpt"
    RETAIN_INSTITUTION_IDENTITY = "rtnInstIdOpt"
    RETAIN_PATIENT_CHARACTERISTICS = "rtnPatCharsOpt"
    RETAIN_LONGITUDINAL_FULL_DATES = "rtnLongFullDatesOpt"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "rtnLongModifDatesOpt"
    CLEAN_DESCRIPTORS = "cleanDescOpt"
    CLEAN_STRUCTURED_CONTENT = "cleanStructContOpt"
    CLEAN_GRAPHICS = "cleanGraphOpt"

    @property
    def cli_name(self) -> str:
        """The name on the command line, e.g. ``retain-uids``."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_cli(cls, text: str) -> Option:
        """The option named `text` (``retain-uids``...); ValueError otherwise."""
        name = text.strip().lower()
        for option in cls:
            if option.cli_name == name:
                return option
        if name in NOT_OFFERED:
            raise ValueError(f"option {name} is not offered: {NOT_OFFERED[name]}")
        names = ", ".join(o.cli_name for o in cls)
        raise ValueError(f"unknown de-identification option {text!r} (one of: {names})")


#: The PS3.15 E.3 options securepacs refuses, and why (said on the command line).
NOT_OFFERED = {
    "clean-pixel-data": "burned-in text cannot be found and blanked automatically without "
                        "knowing where it is; such images are left out unless "
                        "--include-burned-in",
    "clean-recognizable-visual-features": "faces in the pixels (head CT/MR, photographs) "
                                          "cannot be recognised and defaced automatically",
    "retain-safe-private": "no list of safe private attributes is kept; private attributes "
                           "are removed",
}
#: The options whose C on a text attribute keeps an allowlisted value.
CLEANING = frozenset({Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT,
                      Option.CLEAN_GRAPHICS})
#: Free text inside a sequence that Table E.1-1 lists as a whole (the C of that option).
CONTENT_TEXT = {0x0040A160: Option.CLEAN_STRUCTURED_CONTENT,  # Text Value (content items)
                0x00700006: Option.CLEAN_GRAPHICS}  # Unformatted Text Value (graphic text)
#: Dates and times of content items, de-identified as the row they are an instance of.
_CONTENT_TIMES = {0x0040A121: 0x00080023,  # Date -> Content Date
                  0x0040A122: 0x00080033,  # Time -> Content Time
                  0x0040A120: 0x0008002A}  # DateTime -> Acquisition DateTime
_TEXT_VRS = frozenset({"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


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
    allowlist : iterable of str
        Text values known to hold no identifying information (compared without case and
        runs of spaces): under a Clean option, a listed text attribute keeps such a value.

    Raises
    ------
    ValueError
        Both longitudinal options, or Clean Descriptors without an allowlist (it would
        then keep nothing and only claim to).
    """

    def __init__(self, options: frozenset[Option] | set[Option] | tuple[Option, ...] = (),
                 allowlist: frozenset[str] | set[str] | tuple[str, ...] = ()) -> None:
        self.options = frozenset(options)
        self.allowlist = frozenset(_normal(v) for v in allowlist if v.strip())
        if {Option.RETAIN_LONGITUDINAL_FULL_DATES,
                Option.RETAIN_LONGITUDINAL_MODIFIED_DATES} <= self.options:
            raise ValueError("choose one of retain-longitudinal-full-dates and "
                             "retain-longitudinal-modified-dates")
        if Option.CLEAN_DESCRIPTORS in self.options and not self.allowlist:
            raise ValueError("clean-descriptors needs an allowlist (--clean-allowlist FILE: "
                             "the descriptions known to hold no identifying information); "
                             "without one every descriptor is removed, as in the Basic "
                             "Profile")
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

    def allowed(self, value: object) -> bool:
        """True when every value of `value` (a str or a list of them) is on the allowlist."""
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            values = [str(value)] if value else []
        else:
            values = [str(v) for v in value]
        return bool(values) and all(_normal(str(v)) in self.allowlist for v in values)

    def action(self, tag: int, *, vr: str = "", value: object = None) -> str | None:
        """The action for `tag` whose value representation is `vr` and whose value is
        `value` (None: not listed, keep it), options applied.

        ``C`` is returned for a date or time (DA, DT, TM) under Retain Longitudinal
        Temporal Information with Modified Dates (the caller shifts it), and for a sequence
        that a chosen Clean option keeps (the caller de-identifies its items); a text value
        a Clean option keeps because it is allowlisted is ``K``.
        """
        is_uid = vr == "UI"
        if tag in CONTENT_TEXT:
            option = CONTENT_TEXT[tag]
            return "K" if option in self.options and self.allowed(value) else "D"
        row = self.row(_CONTENT_TIMES.get(tag, tag))
        if row is None:
            return None
        chosen = [row.actions[o.value] for o in self.options if o.value in row.actions]
        if "K" in chosen:
            return "K"
        if "C" in chosen and vr in _TEMPORAL \
                and Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options \
                and row.actions.get(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES.value) == "C":
            return "C"
        cleaning = {o for o in CLEANING & self.options if row.actions.get(o.value) == "C"}
        if cleaning and vr == "SQ" and cleaning - {Option.CLEAN_DESCRIPTORS}:
            return "C"
        if cleaning and vr in _TEXT_VRS and self.allowed(value):
            return "K"
        basic = row.actions["basicProfile"]
        if basic == "X/Z/U*":
            return "U" if is_uid else "Z"
        return _COMPOUND.get(basic, basic)
