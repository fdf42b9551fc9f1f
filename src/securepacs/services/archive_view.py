"""Browsing the archive for the viewer: studies, series and images from the index and blobs.

One responsibility: give the viewer of ``securepacs serve`` the same read interface as the
media :class:`~securepacs.services.media_view.Catalog` (``studies``, ``series(uid)``,
``study_of``, ``instances``, ``part10(path)``, ``dataset(path)``, ``count``, ``close``,
``name``, ``errors``), answered by C-FIND-like queries on the index (PS3.4 C.6.2 Study Root:
STUDY, SERIES and IMAGE levels) through :class:`~securepacs.services.ports.IndexPort`, and
instances read from the blob store through :class:`~securepacs.services.ports.BlobPort`.
An instance's "path" here is its SOP Instance UID.

A large archive is never loaded whole: the study list asks for the studies of the last
:data:`WINDOWS` days first (a Study Date range, which the index answers from its date
column), widening the window until :data:`LIST_LIMIT` studies match, each query capped at
:data:`SCAN_LIMIT` matches; they are sorted by Study Date / Time, newest first, and cut to
the limit. An optional search text narrows it by Patient ID or Patient's Name (wildcard
``*text*``, names case-insensitive as in C-FIND). Series are looked up when a
study or series is opened, and kept a few seconds so that the images of one series do not
each cost a query.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pydicom.dataset import Dataset

from securepacs.errors import MediaError, PacsError
from securepacs.model.levels import Level, Root
from securepacs.model.query import Key, Query
from securepacs.model.tenancy import Visibility
from securepacs.services.media_view import InstanceEntry, SeriesEntry, StudyEntry, decode_instance
from securepacs.services.ports import BlobPort, IndexPort

__all__ = ["LIST_LIMIT", "SCAN_LIMIT", "WINDOWS", "ArchiveCatalog", "StudyList"]

#: Studies shown in one list.
LIST_LIMIT = 200
#: STUDY-level matches read (in index order) before sorting by date.
SCAN_LIMIT = 5000
#: Study Date windows tried in turn (days back from today); None: every date, and no date.
WINDOWS: tuple[int | None, ...] = (31, 366, 5 * 366, None)
_CACHE = 8  # Part 10 files kept in memory (a multi-frame file is read once for all frames)
_SERIES_CACHE = 64
_SERIES_TTL = 10.0  # seconds a looked-up series is reused (new images show up after that)

#: The PS3.3 C.7 attributes shown beside an image that the index keeps.
_TAGS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
         "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "Modality",
         "SeriesNumber", "SeriesDescription", "BodyPartExamined", "InstanceNumber", "Rows",
         "Columns", "NumberOfFrames", "ContentDate", "ContentTime")


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _query(level: Level, **values: str) -> Query:
    vrs = {"PatientID": "LO", "PatientName": "PN", "StudyInstanceUID": "UI",
           "SeriesInstanceUID": "UI", "StudyDate": "DA"}
    return Query(root=Root.STUDY, level=level,
                 keys=tuple(Key(k, vrs[k], v) for k, v in values.items()))


def _study(row: dict[str, str], organization: str = "") -> StudyEntry:
    return StudyEntry(row.get("StudyInstanceUID", ""), row.get("PatientName", ""),
                      row.get("PatientID", ""), row.get("IssuerOfPatientID", ""),
                      row.get("PatientBirthDate", ""), row.get("StudyDate", ""),
                      row.get("StudyDescription", ""), row.get("AccessionNumber", ""),
                      organization=organization)


def _series(row: dict[str, str]) -> SeriesEntry:
    return SeriesEntry(row.get("SeriesInstanceUID", ""), row.get("SeriesNumber", ""),
                       row.get("Modality", ""), row.get("SeriesDescription", ""))


def _instance(row: dict[str, str]) -> InstanceEntry:
    has_pixels = bool(row.get("Rows")) and bool(row.get("Columns"))
    frames = (_int(row.get("NumberOfFrames")) or 1) if has_pixels else 0
    uid = row.get("SOPInstanceUID", "")
    return InstanceEntry(uid, uid, _int(row.get("InstanceNumber")), frames,
                         {k: row[k] for k in _TAGS if row.get(k)}, row.get("SOPClassUID", ""))


def _search_text(text: str) -> str:
    """The search words without C-FIND wildcard or list characters."""
    return " ".join("".join(c for c in text if c not in "*?\\").split())[:64]


@dataclass(frozen=True)
class StudyList:
    """One page of the study list.

    Attributes
    ----------
    studies : list of StudyEntry
        Newest first, series not filled in (use :meth:`ArchiveCatalog.study`).
    matched : int
        Studies that matched among those scanned.
    capped : bool
        True when the scan stopped at :data:`SCAN_LIMIT` (older studies were not looked at).
    images : dict
        Study Instance UID -> number of instances (NumberOfStudyRelatedInstances).
    modalities : dict
        Study Instance UID -> ModalitiesInStudy.
    since : str
        The first Study Date (YYYYMMDD) of the window the list comes from; "" for every date.
    """

    studies: list[StudyEntry]
    matched: int
    capped: bool
    images: dict[str, int]
    modalities: dict[str, str]
    since: str = ""


class ArchiveCatalog:
    """The archive, read only, with the media catalog's interface (see the module docstring).

    Parameters
    ----------
    index : IndexPort
        The index (queries and SOP Instance UID lookups).
    blobs : BlobPort
        Where the Part 10 files are.
    name : str
        Shown as the title of the study list (e.g. the AE title).
    list_limit, scan_limit : int
        Studies shown, and STUDY-level matches scanned, per list.
    today : callable
        Today's date (UTC by default), where the date windows of the list end.

    Methods are safe to call from several threads. The index and blob store are not closed
    by :meth:`close` (the archive owns them).
    """

    encrypted = False

    def __init__(self, index: IndexPort, blobs: BlobPort, *, name: str = "archive",
                 list_limit: int = LIST_LIMIT, scan_limit: int = SCAN_LIMIT,
                 today: Callable[[], date] = lambda: datetime.now(UTC).date()):
        self.name = name
        self.errors: list[str] = []
        self._index = index
        self._blobs = blobs
        self._list_limit = list_limit
        self._scan_limit = scan_limit
        self._today = today
        self._lock = threading.Lock()
        self._files: OrderedDict[tuple[Hashable, str], bytes] = OrderedDict()
        self._series: OrderedDict[tuple[Hashable, str], tuple[float, SeriesEntry, str]] = \
            OrderedDict()
        #: what this catalog shows (docs/tenants.md); the caches are kept per view
        self.visibility = Visibility.all()

    def scoped(self, visibility: Visibility) -> ArchiveCatalog:
        """This catalog as one caller sees it: the same index, blobs and caches (whose
        entries are kept apart per view), every look-up filtered by `visibility`."""
        view = copy.copy(self)
        view.visibility = visibility
        return view

    def _scope(self) -> Hashable:
        v = self.visibility
        return (v.organization, v.everything)

    # -- lists -----------------------------------------------------------------------------
    def search(self, text: str = "") -> StudyList:
        """The newest studies, or those whose Patient ID or name contains `text`.

        Raises
        ------
        QueryError, StorageError
            The index cannot answer.
        """
        words = _search_text(text)
        pattern = f"*{words.replace(' ', '*')}*" if words else ""
        since = ""
        for days in WINDOWS:
            since = "" if days is None else f"{self._today() - timedelta(days=days):%Y%m%d}"
            dates = {"StudyDate": f"{since}-"} if since else {}
            if words:
                queries = [_query(Level.STUDY, PatientID=pattern, **dates),
                           _query(Level.STUDY, PatientName=pattern, **dates)]
            else:
                queries = [_query(Level.STUDY, **dates)]
            rows: dict[str, dict[str, str]] = {}
            owner: dict[str, str] = {}
            capped = False
            for query in queries:
                owners: list[str] = []
                found = self._index.find(query, limit=self._scan_limit,
                                         visibility=self.visibility, owners=owners)
                capped = capped or len(found) >= self._scan_limit
                for row, org in zip(found, owners, strict=True):
                    rows.setdefault(row.get("StudyInstanceUID", ""), row)
                    owner.setdefault(row.get("StudyInstanceUID", ""), org)
            if len(rows) >= self._list_limit:
                break
        ordered = sorted(rows.values(), key=lambda r: (r.get("StudyDate", ""),
                                                       r.get("StudyTime", "")), reverse=True)
        shown = ordered[:self._list_limit]
        return StudyList([_study(r, owner.get(r.get("StudyInstanceUID", ""), ""))
                          for r in shown], len(ordered), capped,
                         {r["StudyInstanceUID"]: _int(r.get("NumberOfStudyRelatedInstances")) or 0
                          for r in shown},
                         {r["StudyInstanceUID"]: r.get("ModalitiesInStudy", "") for r in shown},
                         since)

    @property
    def studies(self) -> list[StudyEntry]:
        """The newest studies (at most the list limit), each with its series and instances."""
        return [self.study(s.uid) for s in self.search().studies]

    def study(self, uid: str) -> StudyEntry:
        """The study `uid` with its series and their instances (KeyError if not archived)."""
        owners: list[str] = []
        rows = self._index.find(_query(Level.SERIES, StudyInstanceUID=uid),
                                visibility=self.visibility, owners=owners)
        if not rows:
            raise KeyError(uid)
        study = _study(rows[0], owners[0])
        for row in rows:
            study.series.append(self.series(row["SeriesInstanceUID"]))
        study.series.sort(key=lambda s: (_int(s.number) is None, _int(s.number) or 0, s.uid))
        return study

    # -- lookup ----------------------------------------------------------------------------
    def _lookup(self, uid: str) -> tuple[SeriesEntry, str]:
        now = time.monotonic()
        key = (self._scope(), uid)
        with self._lock:
            kept = self._series.get(key)
            if kept is not None and now - kept[0] < _SERIES_TTL:
                return kept[1], kept[2]
        rows = self._index.find(_query(Level.IMAGE, SeriesInstanceUID=uid),
                                visibility=self.visibility)
        if not rows:
            raise KeyError(uid)
        series = _series(rows[0])
        series.instances = sorted((_instance(r) for r in rows),
                                  key=lambda i: (i.instance_number is None,
                                                 i.instance_number or 0, i.sop_instance_uid))
        study_uid = rows[0].get("StudyInstanceUID", "")
        with self._lock:
            self._series[key] = (now, series, study_uid)
            self._series.move_to_end(key)
            while len(self._series) > _SERIES_CACHE:
                self._series.popitem(last=False)
        return series, study_uid

    def series(self, uid: str) -> SeriesEntry:
        """The series `uid` with its instances in Instance Number order (KeyError if none)."""
        return self._lookup(uid)[0]

    def study_of(self, series_uid: str) -> StudyEntry:
        """The study holding the series `series_uid`, its series filled in (KeyError if none)."""
        return self.study(self._lookup(series_uid)[1])

    def instances(self) -> Iterator[InstanceEntry]:
        """The instances of the listed (newest) studies, study by study, series by series."""
        for study in self.studies:
            for s in study.series:
                yield from s.instances

    @property
    def count(self) -> int:
        """Instances in the listed (newest) studies."""
        return sum(self.search().images.values())

    # -- instances -------------------------------------------------------------------------
    def part10(self, path: str) -> bytes:
        """The Part 10 file of the instance whose SOP Instance UID is `path`.

        Raises
        ------
        MediaError
            Not in the archive, or its blob cannot be read (the message names it).
        """
        key = (self._scope(), path)
        with self._lock:
            data = self._files.get(key)
            if data is not None:
                self._files.move_to_end(key)
                return data
        stored = self._index.get(path, visibility=self.visibility)
        if stored is None:
            raise MediaError(f"{path}: not in the archive")
        try:
            data = self._blobs.read(stored.blob_key)
        except (PacsError, OSError) as exc:
            raise MediaError(f"{path}: cannot be read from the blob store ({exc})") from None
        with self._lock:
            self._files[key] = data
            while len(self._files) > _CACHE:
                self._files.popitem(last=False)
        return data

    def dataset(self, path: str) -> Dataset:
        """The decoded instance `path` (a SOP Instance UID), pixel data included."""
        return decode_instance(path, self.part10(path))

    def close(self) -> None:
        """Forget the files and series kept in memory (the index and blobs stay open)."""
        with self._lock:
            self._files.clear()
            self._series.clear()

    def __enter__(self) -> ArchiveCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
