"""QIDO-RS search (PS3.18 10.6) answered by the C-FIND query service.

One responsibility: turn the query parameters of a QIDO-RS request (PS3.18 8.3.4:
``{attributeID}={value}``, ``includefield``, ``fuzzymatching``, ``limit``, ``offset``) and
the resource (all studies / series / instances, within a study or a series) into the same
C-FIND identifier a DIMSE peer would send, run it through
:class:`~securepacs.services.query.QueryService` (the same matching rules and SQL), and
return DICOM JSON (PS3.18 F.2) objects. Attributes that cannot be matched are named in
warnings (the ``Warning: 299`` header of PS3.18 8.3.4.6); the default return attributes
are those of PS3.18 Tables 10.6.3-3 to 10.6.3-5.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from securepacs.errors import QueryError
from securepacs.model.levels import Level, Root
from securepacs.model.record import level_of
from securepacs.services.audit_events import AuditEvents
from securepacs.services.dicomweb_access import Caller, DicomwebAccess
from securepacs.services.query import QueryService

__all__ = ["DEFAULT_FIELDS", "QidoParams", "QidoResult", "QidoService", "parse_params"]

#: PS3.18 Table 10.6.3-3 (study), -4 (series), -5 (instance): returned without includefield.
DEFAULT_FIELDS: dict[Level, tuple[str, ...]] = {
    Level.STUDY: ("StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
                  "ModalitiesInStudy", "ReferringPhysicianName", "PatientName", "PatientID",
                  "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
                  "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    Level.SERIES: ("Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
                   "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
                   "PerformedProcedureStepStartTime", "StudyInstanceUID"),
    Level.IMAGE: ("SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "InstanceNumber",
                  "Rows", "Columns", "BitsAllocated", "NumberOfFrames", "StudyInstanceUID",
                  "SeriesInstanceUID"),
}
#: Returned with ``includefield=all``: every attribute the index keeps at or above the level.
_PARAMS = {"includefield", "fuzzymatching", "limit", "offset"}
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
MAX_LIMIT = 10000


@dataclass(frozen=True)
class QidoParams:
    """A QIDO-RS request's parameters, parsed.

    Attributes
    ----------
    match : dict
        keyword -> value to match (DICOM string form).
    include : tuple of str
        Extra keywords to return; ``("all",)`` for every one the index keeps.
    limit, offset : int or None
    fuzzy : bool
        ``fuzzymatching=true`` was asked (not supported: literal matching is done).
    warnings : list of str
        What was ignored, for the Warning header.
    """

    match: dict[str, str] = field(default_factory=dict)
    include: tuple[str, ...] = ()
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class QidoResult:
    """The matches as DICOM JSON objects, and the warnings for the response."""

    matches: list[dict[str, Any]]
    warnings: list[str]


def _keyword(name: str) -> str | None:
    """The keyword an attribute ID (keyword or 8 hex digits) names, or None."""
    if _TAG.match(name):
        keyword = keyword_for_tag(int(name, 16))
        return keyword or None
    return name if tag_for_keyword(name) is not None else None


def _int(name: str, text: str, warnings: list[str]) -> int | None:
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"{name} must be a whole number, not {text!r}") from None
    if value < 0:
        raise QueryError(f"{name} must not be negative")
    if name == "limit" and value > MAX_LIMIT:
        warnings.append(f"limit {value} lowered to {MAX_LIMIT}")
        value = MAX_LIMIT
    return value


def parse_params(items: Sequence[tuple[str, str]]) -> QidoParams:
    """The parsed query parameters of a QIDO-RS request (names as given, repeats allowed).

    Raises
    ------
    QueryError
        A bad ``limit``/``offset``/``fuzzymatching`` value (HTTP 400).
    """
    match: dict[str, str] = {}
    include: list[str] = []
    warnings: list[str] = []
    limit: int | None = None
    offset = 0
    fuzzy = False
    for name, value in items:
        if name == "includefield":
            for part in value.split(","):
                part = part.strip()
                if part == "all":
                    include.append("all")
                elif part:
                    keyword = _keyword(part)
                    if keyword is None:
                        warnings.append(f"{part} is not a known attribute; not included")
                    else:
                        include.append(keyword)
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise QueryError(f"fuzzymatching must be true or false, not {value!r}")
            fuzzy = value.lower() == "true"
            if fuzzy:
                warnings.append("The fuzzymatching parameter is not supported. Only literal "
                                "matching has been performed.")
        elif name == "limit":
            limit = _int(name, value, warnings)
        elif name == "offset":
            offset = _int(name, value, warnings) or 0
        elif "." in name:
            warnings.append(f"{name}: sequence matching is not supported; ignored")
        else:
            keyword = _keyword(name)
            if keyword is None:
                warnings.append(f"{name} is not a known attribute; ignored")
            elif dictionary_VR(keyword) == "SQ":
                warnings.append(f"{name}: sequence matching is not supported; ignored")
            else:
                match[keyword] = value
    return QidoParams(match, tuple(dict.fromkeys(include)), limit, offset, fuzzy, warnings)


def _all_fields(level: Level) -> tuple[str, ...]:
    from securepacs.model.record import COMPUTED_ATTRIBUTES, LEVEL_ATTRIBUTES

    out: list[str] = []
    for at in level.at_or_above():
        out += LEVEL_ATTRIBUTES[at]
        if at is level or (level is Level.SERIES and at is Level.STUDY):
            out += COMPUTED_ATTRIBUTES[at]
    return tuple(out)


class QidoService:
    """QIDO-RS searches through the C-FIND query service (see the module docstring).

    Parameters
    ----------
    query : QueryService
        The C-FIND service of the DIMSE server.
    access : DicomwebAccess
        The permission check.
    audit : AuditEvents
        Each search is audited as a C-FIND (Query, PS3.15 A.5.3.10).
    """

    def __init__(self, query: QueryService, access: DicomwebAccess, audit: AuditEvents):
        self._query = query
        self._access = access
        self._audit = audit

    def identifier(self, level: Level, params: QidoParams, *, study: str | None = None,
                   series: str | None = None) -> tuple[Dataset, list[str]]:
        """The C-FIND identifier (Study Root) for a search, and its warnings."""
        warnings = list(params.warnings)
        ds = Dataset()
        ds.QueryRetrieveLevel = level.value
        wanted = list(DEFAULT_FIELDS[level])
        if "all" in params.include:
            wanted += _all_fields(level)
        wanted += [k for k in params.include if k != "all"]
        values = dict(params.match)
        for keyword, uid in (("StudyInstanceUID", study), ("SeriesInstanceUID", series)):
            if uid is not None:
                values[keyword] = uid
        matched: dict[str, str] = {}
        for keyword, value in values.items():
            at = level_of(keyword)
            if at is None or at.depth > level.depth:
                warnings.append(f"{keyword} is not supported for matching at the "
                                f"{level.value} level; ignored")
                continue
            matched[keyword] = value
            wanted.append(keyword)
        for keyword in dict.fromkeys(wanted):
            vr = dictionary_VR(keyword)
            if vr == "SQ":
                ds.add_new(keyword, "SQ", [])
            else:
                ds.add_new(keyword, vr, matched.get(keyword) or None)
        return ds, warnings

    def search(self, caller: Caller, level: Level, params: QidoParams, *,
               retrieve_url: Callable[[Dataset], str], study: str | None = None,
               series: str | None = None) -> QidoResult:
        """The matches of a QIDO-RS search, as DICOM JSON objects.

        Raises
        ------
        NotPermitted
            The caller has no find permission.
        QueryError, StorageError
            The identifier cannot be evaluated; the index cannot answer.
        """
        self._access.require(caller, "QIDO-RS")
        identifier, warnings = self.identifier(level, params, study=study, series=series)
        encoded = _identifier_bytes(identifier)
        owned: list[tuple[str, str]] = []
        try:
            found = self._query.find(identifier, Root.STUDY, owned=owned,
                                     visibility=self._access.visibility(caller))
            end = None if params.limit is None else params.offset + params.limit
            matches = []
            for number, ds in enumerate(found):
                if end is not None and number >= end:
                    break
                if number < params.offset:
                    continue
                matches.append(_json(ds, retrieve_url(ds)))
        except Exception:
            self._audit.queried(caller.identity, ae_title="", address=caller.address,
                                sop_class_uid=_STUDY_ROOT_FIND, identifier=encoded,
                                success=False)
            raise
        self._audit.queried(caller.identity, ae_title="", address=caller.address,
                            sop_class_uid=_STUDY_ROOT_FIND, identifier=encoded, success=True)
        self._access.found(caller, owned)
        return QidoResult(matches, warnings)


_STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _identifier_bytes(ds: Dataset) -> bytes:
    """The identifier as the audit record's query (Explicit VR Little Endian)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    out = DicomBytesIO()
    out.is_little_endian = True
    out.is_implicit_VR = False
    write_dataset(out, ds)
    return out.getvalue()


def _json(ds: Dataset, url: str) -> dict[str, Any]:
    """A C-FIND response identifier as a DICOM JSON object, with its RetrieveURL."""
    if "QueryRetrieveLevel" in ds:
        del ds.QueryRetrieveLevel
    if "RetrieveAETitle" in ds:
        del ds.RetrieveAETitle
    ds.add_new("RetrieveURL", "UR", url)
    return ds.to_json_dict()
