"""``TAG=VALUE`` arguments of the client commands, in the spirit of DCMTK's ``-k``.

One responsibility: parse ``PatientID=123``, ``0010,0020=123``, ``(0010,0020)=123`` or a
bare ``PatientName`` (no value: a return key for C-FIND, PS3.4 C.4.1.1.3.1) into a tag, its
dictionary VR (PS3.6) and a value of the right Python type for pydicom.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

_HEX_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")
_INT_VRS = {"US", "UL", "SS", "SL", "UV", "SV", "IS"}
_FLOAT_VRS = {"FL", "FD", "DS"}
_UNSUPPORTED_VRS = {"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "AT"}


@dataclass(frozen=True)
class TagValue:
    """One parsed argument: tag, keyword, VR and the value text (``None`` when none was given).

    Attributes
    ----------
    tag : int
        ``0xGGGGEEEE``.
    keyword : str
        The data dictionary keyword.
    vr : str
        The dictionary VR.
    text : str or None
        The value as typed; ``None`` for ``-k PatientName`` (return key).
    """

    tag: int
    keyword: str
    vr: str
    text: str | None

    @property
    def value(self) -> object:
        """The value for pydicom: str, int, float or a list of them (``\\`` separates values)."""
        return typed_value(self.vr, self.text or "")


def parse_tag(text: str) -> int:
    """A keyword (``PatientID``) or a tag (``0010,0020``, ``(0010,0020)``, ``00100020``).

    Raises
    ------
    ValueError
        Unknown keyword, malformed tag, or a tag that is not in the data dictionary.
    """
    raw = text.strip()
    found = _HEX_TAG.match(raw)
    if found:
        tag = int(found.group(1) + found.group(2), 16)
        if not keyword_for_tag(tag):
            raise ValueError(f"{raw}: not in the DICOM data dictionary (private tags are "
                             "not supported here)")
        return tag
    by_keyword = tag_for_keyword(raw)
    if by_keyword is None:
        raise ValueError(f"{raw!r} is neither a DICOM keyword (e.g. PatientID) nor a tag "
                         "(e.g. 0010,0020)")
    return int(by_keyword)


def typed_value(vr: str, text: str) -> object:
    """`text` converted for `vr`: numbers for numeric VRs, lists for ``a\\b`` values."""
    if text == "":
        return None
    if vr in ("LT", "ST", "UT"):
        return text
    parts = text.split("\\")
    try:
        values: list[object] = list(parts)
        if vr in _INT_VRS:
            values = [int(p) for p in parts]
        elif vr in _FLOAT_VRS:
            numbers = [float(p) for p in parts]
            if vr != "DS":  # DS stays text: its string form is what gets encoded
                values = list(numbers)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid {vr} value") from None
    return values[0] if len(values) == 1 else values


def parse(argument: str, *, need_value: bool = False) -> TagValue:
    """Parse ``TAG=VALUE`` (or ``TAG`` alone, unless `need_value`).

    Raises
    ------
    ValueError
        A malformed argument, an unknown tag, a VR that cannot be written as text here
        (sequences, binary data), or a value that does not fit the VR.
    """
    name, sep, text = argument.partition("=")
    if not name.strip():
        raise ValueError(f"{argument!r}: expected TAG=VALUE")
    if need_value and not sep:
        raise ValueError(f"{argument!r}: expected TAG=VALUE (e.g. PatientID=12345)")
    tag = parse_tag(name)
    keyword = keyword_for_tag(tag)
    vr = dictionary_VR(tag)
    if vr in _UNSUPPORTED_VRS or " or " in vr:
        raise ValueError(f"{keyword}: VR {vr} cannot be given as text here")
    parsed = TagValue(tag, keyword, vr, text if sep else None)
    if parsed.text:
        parsed.value  # noqa: B018 - validates the value against the VR
    return parsed
