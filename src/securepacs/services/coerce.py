"""Attribute coercion on the way out (``send --set``), recorded in Original Attributes Sequence.

One responsibility: replace attribute values of a data set (e.g. PatientID and
IssuerOfPatientID for the receiving site) and keep what they were in a new item of Original
Attributes Sequence (0400,0561), as PS3.3 C.12.1.1.9 describes: Modified Attributes Sequence
(0400,0550) holds the previous values (an attribute that was absent is listed with no
value), with Attribute Modification DateTime, Modifying System, Source of Previous Values
and Reason for the Attribute Modification = ``COERCE``. Earlier items are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence

from securepacs import __version__
from securepacs.errors import InvalidInstanceError
from securepacs.services.discovery import NotPart10Error, read_meta
from securepacs.services.tagvalue import TagValue, parse

#: Attributes --set may not change: identity of the instance, and what the file meta
#: describes. Changing them would make another instance, not coerce this one.
PROTECTED = {0x00080016, 0x00080018, 0x7FE00010, 0x00080005}
MODIFYING_SYSTEM = f"securepacs {__version__}"


@dataclass(frozen=True)
class Coercion:
    """The ``--set`` assignments to apply to every instance sent.

    Attributes
    ----------
    assignments : tuple of TagValue
        In the order given; a later one for the same tag wins.
    source : str
        Source of Previous Values (0400,0564), e.g. the sending institution; may be empty.
    """

    assignments: tuple[TagValue, ...]
    source: str = ""

    @classmethod
    def parse(cls, arguments: Sequence[str], source: str = "") -> Coercion:
        """Build from ``TAG=VALUE`` strings.

        Raises
        ------
        ValueError
            A malformed assignment, or one that targets a protected attribute (SOP Class /
            Instance UID, Specific Character Set, Pixel Data) or group 0002.
        """
        parsed = []
        for argument in arguments:
            item = parse(argument, need_value=True)
            if item.tag in PROTECTED or item.tag >> 16 == 0x0002:
                raise ValueError(f"--set {item.keyword}: this attribute cannot be coerced")
            parsed.append(item)
        return cls(tuple(parsed), source)


def apply(ds: Dataset, coercion: Coercion, *, at: datetime) -> list[str]:
    """Apply `coercion` to `ds` in place and record the previous values (PS3.3 C.12.1.1.9).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The data set (decoded).
    coercion : Coercion
    at : datetime.datetime
        Attribute Modification DateTime; timezone-aware values keep their offset.

    Returns
    -------
    list of str
        Keywords whose value changed (nothing is recorded if the list is empty).
    """
    previous = Dataset()
    changed: list[str] = []
    for item in coercion.assignments:
        old = ds.get(item.tag)
        new_value = item.value
        if old is not None and old.value == new_value:
            continue
        if item.keyword not in previous:
            if old is not None:
                previous.add(old)
            else:
                previous.add_new(item.tag, item.vr, None)
        ds.add_new(item.tag, item.vr, new_value)
        if item.keyword not in changed:
            changed.append(item.keyword)
    if not changed:
        return changed
    record = Dataset()
    record.AttributeModificationDateTime = at.strftime("%Y%m%d%H%M%S.%f") + (
        at.strftime("%z") if at.tzinfo else "")
    record.ModifyingSystem = MODIFYING_SYSTEM[:64]
    record.SourceOfPreviousValues = coercion.source[:64]
    record.ReasonForTheAttributeModification = "COERCE"
    record.ModifiedAttributesSequence = DicomSequence([previous])
    if "OriginalAttributesSequence" not in ds:
        ds.OriginalAttributesSequence = DicomSequence()
    ds.OriginalAttributesSequence.append(record)
    needs_utf8 = any(not str(i.text or "").isascii() for i in coercion.assignments)
    if needs_utf8 and "SpecificCharacterSet" not in ds:
        ds.SpecificCharacterSet = "ISO_IR 192"
    return changed


def coerce_file(part10: bytes, coercion: Coercion, *, at: datetime) -> tuple[bytes, list[str]]:
    """Decode a Part 10 file, apply `coercion`, and encode the data set in its own syntax.

    Returns
    -------
    (bytes, list of str)
        The data set bytes (no File Meta Information), in the file's transfer syntax
        (compressed pixel data stays as it is), and the keywords changed.

    Raises
    ------
    InvalidInstanceError
        The file cannot be decoded, or the new values cannot be encoded (e.g. characters
        outside the data set's character set).
    """
    try:
        ds = dcmread(BytesIO(part10))
        changed = apply(ds, coercion, at=at)
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
    except (InvalidDicomError, ValueError, TypeError, KeyError, LookupError,
            NotImplementedError, OSError) as exc:
        raise InvalidInstanceError(f"cannot apply --set: {exc}".splitlines()[0]) from None
    data = out.getvalue()
    try:
        offset = read_meta(BytesIO(data)).dataset_offset
    except NotPart10Error as exc:  # pragma: no cover - pydicom wrote it
        raise InvalidInstanceError(f"cannot apply --set: {exc}") from None
    return data[offset:], changed
