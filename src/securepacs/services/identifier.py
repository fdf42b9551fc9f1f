"""Identifiers the client sends: C-FIND queries, C-GET / C-MOVE requests, and the resume lookup.

One responsibility: turn what a user typed (``--level STUDY -k PatientID=12*``, ``--study
UID --series UID``) into Query/Retrieve identifiers (PS3.4 C.4.1.1.3, C.4.2.1.4, C.6.2), with
useful return keys by default, and run the queries through a
:class:`~securepacs.services.scuport.Finder`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from pydicom.dataset import Dataset

from securepacs.model.levels import Level
from securepacs.services.scuport import Finder
from securepacs.services.tagvalue import TagValue, parse

#: Return keys asked for when the user names none of their own (shown as table columns).
DEFAULT_RETURN_KEYS: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: ("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                    "NumberOfPatientRelatedStudies"),
    Level.STUDY: ("PatientID", "PatientName", "StudyDate", "StudyTime", "AccessionNumber",
                  "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
                  "StudyInstanceUID"),
    Level.SERIES: ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber",
                   "SeriesDescription", "NumberOfSeriesRelatedInstances"),
    Level.IMAGE: ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                  "InstanceNumber"),
}

#: SOP Instance UIDs per resume query: 200 UIDs of 64 characters stay well inside one PDU.
RESUME_BATCH = 200


def query(level: Level, keys: Sequence[str], *, defaults: bool = True) -> Dataset:
    """A C-FIND identifier at `level` from ``-k`` arguments.

    Parameters
    ----------
    level : Level
        Query/Retrieve Level (0008,0052).
    keys : sequence of str
        ``TAG=VALUE`` (a matching key) or ``TAG`` / ``TAG=`` (a return key).
    defaults : bool
        Also ask for :data:`DEFAULT_RETURN_KEYS` of the level.

    Returns
    -------
    pydicom.dataset.Dataset
        The identifier, QueryRetrieveLevel included.

    Raises
    ------
    ValueError
        A malformed key (the message names it).
    """
    ds = Dataset()
    ds.QueryRetrieveLevel = level.value
    parsed: list[TagValue] = [parse(k) for k in keys]
    if defaults:
        for keyword in DEFAULT_RETURN_KEYS[level]:
            ds.add_new(keyword, _vr(keyword), None)
    for item in parsed:
        ds.add_new(item.tag, item.vr, item.value if item.text else None)
    if any(not str(i.text or "").isascii() for i in parsed):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _vr(keyword: str) -> str:
    return parse(keyword).vr


def columns(identifier: Dataset) -> list[str]:
    """Keywords of the identifier's keys, in tag order, for a table (QueryRetrieveLevel and
    Specific Character Set left out)."""
    return [e.keyword for e in identifier
            if e.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet")]


def retrieve(study: str, series: str | None = None, image: str | None = None) -> tuple[Level, Dataset]:
    """The Study Root identifier of a C-GET / C-MOVE (PS3.4 C.4.2.1.4.1): unique keys only.

    Raises
    ------
    ValueError
        ``image`` without ``series``.
    """
    if image and not series:
        raise ValueError("--image needs --series (the Study Root model is hierarchical)")
    level = Level.IMAGE if image else Level.SERIES if series else Level.STUDY
    ds = Dataset()
    ds.QueryRetrieveLevel = level.value
    ds.StudyInstanceUID = study
    if series:
        ds.SeriesInstanceUID = series
    if image:
        ds.SOPInstanceUID = image
    return level, ds


def existing(finder: Finder, sop_instance_uids: Iterable[str],
             batch: int = RESUME_BATCH) -> set[str]:
    """Which of `sop_instance_uids` the server already holds.

    C-FIND at IMAGE level with List of UID Matching on SOP Instance UID (PS3.4 C.2.2.2.2),
    `batch` UIDs per query. Relies on the server answering IMAGE-level queries without the
    Study and Series UIDs (relational queries, PS3.4 C.4.1.2.2), as securepacs does.
    """
    wanted = list(dict.fromkeys(sop_instance_uids))
    found: set[str] = set()
    for start in range(0, len(wanted), batch):
        chunk = wanted[start:start + batch]
        ds = Dataset()
        ds.QueryRetrieveLevel = Level.IMAGE.value
        ds.SOPInstanceUID = chunk if len(chunk) > 1 else chunk[0]
        for match in finder.find(ds, Level.IMAGE):
            uid = str(match.get("SOPInstanceUID", "") or "")
            if uid:
                found.add(uid)
    return found & set(wanted)


def results(finder: Finder, level: Level, identifier: Dataset) -> Iterator[Dataset]:
    """Run a C-FIND and yield each match (a thin seam, so the CLI never talks to dimse)."""
    yield from finder.find(identifier, level)
