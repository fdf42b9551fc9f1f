"""De-identify data sets on their way out (PS3.15 Annex E, Basic Application Level
Confidentiality Profile and options).

One responsibility: apply :class:`~securepacs.services.deid_profile.Profile` to pydicom data
sets of one export, keeping what must stay consistent inside it:

- every UID the table marks ``U`` (Study, Series, SOP Instance, Frame of Reference,
  Referenced SOP Instance UIDs in SR, SEG and RT references...) is replaced through one map
  per export, so references between the exported instances still resolve. The new UIDs are
  random ``2.25`` UIDs (PS3.5 B.2), or, with a mapping key, ``2.25`` UIDs derived with
  HMAC-SHA-256 from the key and the original UID: the same source gives the same UIDs in
  every export made with the same key, and only then;
- Patient ID and Patient's Name (``Z``: zero length or a dummy value) become one pseudonym
  per original patient (derived from the key when given); dates shifted under Retain
  Longitudinal Temporal Information with Modified Dates move by one offset per patient;
- Patient Identity Removed (0012,0062) = ``YES``, De-identification Method (0012,0063) and
  De-identification Method Code Sequence (0012,0064) with the CID 7050 codes of the profile
  and options (PS3.3 C.7.1.1, PS3.15 E.1.1), Longitudinal Temporal Information Modified
  (0028,0303); the File Meta's Media Storage SOP Instance UID follows the new SOP Instance
  UID; private attributes are removed; an overlay whose Overlay Data is removed is removed
  whole (its other attributes alone would be an invalid Overlay Plane, PS3.3 C.9.2);
- free text the options do not keep (descriptors, Text Value of content items, text of
  graphic annotations) is removed or replaced per the table; under a Clean option a value
  on the site's allowlist is kept (:mod:`securepacs.services.deid_profile`);
- images with burned-in annotation (Burned In Annotation = YES, or absent on modalities
  that usually carry it: US, secondary capture, XC, ES) are left out unless the caller
  includes them: the Basic Profile does not clean pixel data.
"""

from __future__ import annotations

import copy
import hmac
import secrets
import uuid
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from datetime import date, timedelta
from hashlib import sha256
from typing import TYPE_CHECKING

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from securepacs.services.deid_profile import Option, Profile

if TYPE_CHECKING:
    from securepacs.media.fileset import Source

__all__ = ["Deidentifier", "MIN_KEY_BYTES", "Option"]

MIN_KEY_BYTES = 16
_PATIENT_ID, _PATIENT_NAME = 0x00100020, 0x00100010
_BURNED_IN_MODALITIES = {"US", "XC", "ES", "OT", "SC", "DOC"}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_CODES = {
    Option.RETAIN_UIDS: "RetainUidsOption",
    Option.RETAIN_DEVICE_IDENTITY: "RetainDeviceIdentityOption",
    Option.RETAIN_INSTITUTION_IDENTITY: "RetainInstitutionIdentityOption",
    Option.RETAIN_PATIENT_CHARACTERISTICS: "RetainPatientCharacteristicsOption",
    Option.RETAIN_LONGITUDINAL_FULL_DATES:
        "RetainLongitudinalTemporalInformationFullDatesOption",
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES:
        "RetainLongitudinalTemporalInformationModifiedDatesOption",
    Option.CLEAN_DESCRIPTORS: "CleanDescriptorsOption",
    Option.CLEAN_STRUCTURED_CONTENT: "CleanStructuredContentOption",
    Option.CLEAN_GRAPHICS: "CleanGraphicsOption",
}
_DUMMY = {"AE": "ANONYMOUS", "AS": "000Y", "CS": "ANONYMOUS", "DA": "19000101",
          "DT": "19000101000000", "TM": "000000", "DS": "0", "IS": "0", "LO": "ANONYMOUS",
          "LT": "ANONYMOUS", "PN": "ANONYMOUS", "SH": "ANONYMOUS", "ST": "ANONYMOUS",
          "UC": "ANONYMOUS", "UT": "ANONYMOUS", "UR": "", "FL": 0.0, "FD": 0.0, "SL": 0,
          "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0}


@dataclass
class Deidentifier:
    """De-identifies the data sets of one export (one UID map, one pseudonym per patient).

    Parameters
    ----------
    options : frozenset of Option
        The PS3.15 E.3 options chosen by the site (none: the Basic Profile alone).
    mapping_key : bytes, optional
        At least :data:`MIN_KEY_BYTES` secret bytes: new UIDs, pseudonyms and date offsets
        are derived from it, so the same source maps the same way in every export made
        with it. Without it they are random for each export.
    include_burned_in : bool
        Also export images flagged as carrying burned-in annotation.
    allowlist : frozenset of str
        Text values known to hold no identifying information: kept under the Clean
        Descriptors, Clean Structured Content and Clean Graphics options.
    """

    options: frozenset[Option] = frozenset()
    mapping_key: bytes | None = None
    include_burned_in: bool = False
    allowlist: frozenset[str] = frozenset()
    uids: dict[str, str] = field(default_factory=dict)
    left_out: int = 0

    def __post_init__(self) -> None:
        if self.mapping_key is not None and len(self.mapping_key) < MIN_KEY_BYTES:
            raise ValueError(f"a mapping key must hold at least {MIN_KEY_BYTES} bytes")
        self.profile = Profile(self.options, self.allowlist)
        self._patients: dict[str, str] = {}
        self._offsets: dict[str, int] = {}
        # original patient -> study -> SOP class -> SOP instances de-identified (for the
        # audit trail, which names the originals: PS3.15 A.5.3)
        self._originals: dict[str, dict[str, dict[str, set[str]]]] = {}

    def originals(self) -> dict[str, dict[str, dict[str, int]]]:
        """What this export de-identified, by its original identifiers: Patient ID ->
        Study Instance UID -> SOP Class UID -> number of instances."""
        return {patient: {study: {cls: len(uids) for cls, uids in classes.items()}
                          for study, classes in list(studies.items())}
                for patient, studies in list(self._originals.items())}

    def method_codes(self) -> list[tuple[str, str]]:
        """The CID 7050 codes (value, meaning) of the profile and the chosen options."""
        from pydicom.sr.codedict import codes  # large: loaded only when de-identifying

        chosen = sorted(self.options, key=lambda o: o.value)
        names = ["BasicApplicationConfidentialityProfile", *(_CODES[o] for o in chosen)]
        return [(getattr(codes.DCM, n).value, getattr(codes.DCM, n).meaning) for n in names]

    # -- derived values -------------------------------------------------------------
    def _digest(self, purpose: str, value: str) -> bytes | None:
        if self.mapping_key is None:
            return None
        return hmac.new(self.mapping_key, f"{purpose}\0{value}".encode(), sha256).digest()

    def new_uid(self, uid: str) -> str:
        """The export's UID for `uid` (the same every time within this export)."""
        if uid not in self.uids:
            derived = self._digest("uid", uid)
            number = int.from_bytes(derived[:16]) if derived else uuid.uuid4().int
            self.uids.setdefault(uid, f"2.25.{number}")  # atomic: parallel senders agree
        return self.uids[uid]

    def pseudonym(self, patient_id: str) -> str:
        """The export's Patient ID (and name) for the original `patient_id`."""
        if patient_id not in self._patients:
            derived = self._digest("patient", patient_id)
            self._patients.setdefault(patient_id, "ANON-" + (
                derived[:6].hex().upper() if derived else secrets.token_hex(6).upper()))
        return self._patients[patient_id]

    def date_offset(self, patient_id: str) -> int:
        """Days the dates of `patient_id` move back (365 to 3,650; one per patient)."""
        if patient_id not in self._offsets:
            derived = self._digest("dates", patient_id)
            spread = int.from_bytes(derived[:4]) if derived else secrets.randbits(32)
            self._offsets.setdefault(patient_id, 365 + spread % 3286)
        return self._offsets[patient_id]

    # -- the data set ---------------------------------------------------------------
    @staticmethod
    def burned_in(ds: Dataset) -> bool:
        """True when `ds` says or is likely to carry burned-in annotation."""
        flag = str(ds.get("BurnedInAnnotation", "")).strip().upper()
        if flag:
            return flag != "NO"
        modality = str(ds.get("Modality", "")).upper()
        return modality in _BURNED_IN_MODALITIES or \
            str(ds.get("SOPClassUID", "")).startswith(_SECONDARY_CAPTURE)

    def apply(self, original: Dataset) -> Dataset | None:
        """A de-identified copy of `original` (file meta included), or None when it is
        left out for burned-in annotation (counted in :attr:`left_out`)."""
        if not self.include_burned_in and self.burned_in(original):
            self.left_out += 1
            return None
        ds = copy.deepcopy(original)
        patient = str(original.get("PatientID", ""))
        self._originals.setdefault(patient, {}).setdefault(
            str(original.get("StudyInstanceUID", "")), {}).setdefault(
            str(original.get("SOPClassUID", "")), set()).add(
            str(original.get("SOPInstanceUID", "")))
        self._walk(ds, patient)
        pseudonym = self.pseudonym(patient)
        ds.PatientID = pseudonym
        ds.PatientName = pseudonym.replace("-", "^", 1)  # family^given: no retired form
        self._mark(ds)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds

    def _walk(self, ds: Dataset, patient: str, seen: set[int] | None = None) -> None:
        seen = set() if seen is None else seen
        if id(ds) in seen:  # one item object in two sequences: de-identified once
            return
        seen.add(id(ds))
        for elem in list(ds):
            tag = int(elem.tag)
            if elem.tag not in ds:  # removed with its overlay
                continue
            if elem.tag.is_private or elem.tag.element == 0:
                del ds[elem.tag]
                continue
            action = self.profile.action(tag, vr=elem.VR,
                                         value=None if elem.VR == "SQ" else elem.value)
            if action == "X":
                del ds[elem.tag]
                if tag & 0xFF01FFFF == 0x60003000:  # Overlay Data: its overlay goes too
                    for rest in [e.tag for e in ds if e.tag.group == elem.tag.group]:
                        del ds[rest]
            elif elem.VR == "SQ":
                if action == "Z":
                    elem.value = Sequence()
                else:
                    for item in elem.value:
                        self._walk(item, patient, seen)
            elif action in (None, "K"):
                continue
            elif action == "Z":
                elem.value = None
            elif action == "U":
                self._replace_uid(elem)
            elif action == "C":
                self._shift(elem, self.date_offset(patient))
            else:  # "D"
                self._dummy(elem)

    def _replace_uid(self, elem: DataElement) -> None:
        if elem.VR != "UI":
            self._dummy(elem)
        elif elem.VM > 1:
            elem.value = [self.new_uid(str(v)) for v in elem.value]
        elif elem.value:
            elem.value = self.new_uid(str(elem.value))

    def _dummy(self, elem: DataElement) -> None:
        if elem.VR == "UI":
            elem.value = self.new_uid(str(elem.value or ""))
        elif elem.VR in _DUMMY:
            elem.value = _DUMMY[elem.VR]
        else:
            elem.value = None

    @staticmethod
    def _shift(elem: DataElement, days: int) -> None:
        """Move a DA or DT value `days` back; a TM keeps its time of day."""
        if elem.VR not in ("DA", "DT") or not elem.value:
            return
        values = list(elem.value) if elem.VM > 1 else [elem.value]
        shifted = []
        for value in values:
            text = str(value)
            try:
                day = date(int(text[:4]), int(text[4:6]), int(text[6:8]))
            except ValueError:
                elem.value = None  # not a date: nothing to keep
                return
            shifted.append((day - timedelta(days=days)).strftime("%Y%m%d") + text[8:])
        elem.value = shifted if len(shifted) > 1 else shifted[0]

    def _mark(self, ds: Dataset) -> None:
        ds.PatientIdentityRemoved = "YES"
        chosen = sorted(self.options, key=lambda o: o.value)
        items = []
        for value, meaning in self.method_codes():
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.DeidentificationMethod = "PS3.15 E Basic Profile" + "".join(
            f", {o.cli_name}" for o in chosen)[:64 - 22]
        if Option.RETAIN_LONGITUDINAL_FULL_DATES in self.options:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        elif Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"


def deidentify_part10(deid: Deidentifier, data: bytes) -> bytes | None:
    """The de-identified Part 10 file for the Part 10 file `data` (None: left out).

    Raises
    ------
    ValueError
        `data` is not a DICOM file pydicom can read.
    """
    from io import BytesIO

    from pydicom import dcmread

    try:
        ds = dcmread(BytesIO(data))
    except Exception as exc:  # pydicom raises several kinds on bad input
        raise ValueError(f"not a readable DICOM file: {exc}") from exc
    out = deid.apply(ds)
    if out is None:
        return None
    buffer = BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def burned_in_part10(data: bytes) -> bool:
    """True when the Part 10 file `data` is flagged as carrying burned-in annotation."""
    from io import BytesIO

    from pydicom import dcmread

    return Deidentifier.burned_in(dcmread(BytesIO(data), stop_before_pixels=True))


@dataclass(frozen=True)
class _Source:
    label: str
    reader: Callable[[], bytes]

    def read(self) -> bytes:
        return self.reader()


def deidentified_sources(sources: Seq[Source], deid: Deidentifier
                         ) -> tuple[list[Source], tuple[tuple[str, str], ...]]:
    """`sources` read through `deid` (the same bytes on every read: one map per disc), and
    the (label, reason) of those it leaves out for burned-in annotation."""
    kept: list[Source] = []
    dropped: list[tuple[str, str]] = []
    for source in sources:
        try:
            flagged = burned_in_part10(source.read())
        except Exception:  # not DICOM: the plan skips and reports it as usual
            kept.append(source)
            continue
        if flagged and not deid.include_burned_in:
            dropped.append((source.label, "burned-in annotation (not de-identified)"))
            continue

        def read(source: Source = source) -> bytes:
            data = source.read()
            try:
                out = deidentify_part10(deid, data)
            except ValueError:
                return data  # not DICOM: never written, the plan skips it
            assert out is not None
            return out
        kept.append(_Source(source.label, read))
    deid.left_out += len(dropped)
    return kept, tuple(dropped)


def deidentify_for_store(deid: Deidentifier, part10: bytes) -> tuple[str, bytes] | None:
    """For C-STORE: the de-identified instance's SOP Instance UID and its data set bytes
    (after the File Meta Information, in the file's transfer syntax); None when left out.

    Raises
    ------
    ValueError
        `part10` is not a DICOM file pydicom can read.
    """
    out = deidentify_part10(deid, part10)
    if out is None:
        return None
    group_length = int.from_bytes(out[140:144], "little")
    from io import BytesIO

    from pydicom import dcmread

    uid = str(dcmread(BytesIO(out), stop_before_pixels=True,
                      specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
    return uid, out[144 + group_length:]
