"""Browsing a disc in memory: its patients, studies, series and images, for the viewer.

One responsibility: open media (a secure file-set, PS3.10 7.4 / PS3.15 D.1, in a folder or an
ISO 9660 image, or a plain folder of Part 10 files) with one keyring, index the headers of
every instance into a study / series / instance tree (the PS3.3 C.7 Patient, Study and Series
modules) and hand out single instances on demand. Nothing decrypted is ever written to disk:
each file is decrypted in memory when needed (the keyring caches the password's KEK, so this
costs one AES pass, PS3.15 D.1.1) and only headers stay in memory, plus a few recent files.

A file that does not decrypt, fails its digest or is not DICOM is listed in
:attr:`Catalog.errors` (the message names the file); the rest stays viewable. Each file that
opened says whether its integrity was verified (a DigestedData digest checked) or is not
protected (id-data from another writer): :attr:`Catalog.verified` and
:attr:`Catalog.unprotected`, which the viewer page shows.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from securepacs.errors import MediaError, MediaUsageError
from securepacs.media import cms, fileset
from securepacs.media.fileset import FolderMedia, MediaSource
from securepacs.media.image import IsoMedia
from securepacs.services.discovery import MEDIA_STORAGE_DIRECTORY

__all__ = ["Catalog", "InstanceEntry", "SeriesEntry", "StudyEntry", "needs_key", "open_catalog"]

_CACHE = 8  # decrypted files kept in memory (a multi-frame file is read once for all frames)
_PROBE = 5


def _media(path: Path) -> tuple[MediaSource, Callable[[], None]]:
    path = Path(path)
    if path.is_dir():
        return FolderMedia(path), lambda: None
    if not path.is_file():
        raise MediaUsageError(f"{path} does not exist")
    iso = IsoMedia(path)
    return iso, iso.close


def _is_plain(media: MediaSource) -> bool:
    """True when the first files are plain Part 10 (preamble + ``DICM``), not CMS."""
    seen = 0
    for rel in fileset.secure_paths(media):
        data = media.read(rel)
        if len(data) >= 132 and data[128:132] == b"DICM":
            return True
        seen += 1
        if seen >= _PROBE:
            break
    return False


def needs_key(path: Path) -> bool:
    """Whether the media at `path` is encrypted (a password or key is needed to view it)."""
    media, close = _media(path)
    try:
        return not _is_plain(media)
    finally:
        close()


@dataclass
class InstanceEntry:
    """One instance: where it is on the media and its main header values."""

    path: str
    sop_instance_uid: str
    instance_number: int | None
    frames: int
    tags: dict[str, str]
    sop_class_uid: str = ""
    transfer_syntax_uid: str = ""

    @property
    def pair(self) -> tuple[str, str]:
        """(SOP Class UID, Transfer Syntax UID): the presentation context it needs."""
        return self.sop_class_uid, self.transfer_syntax_uid


@dataclass
class SeriesEntry:
    """A series with its instances in Instance Number order."""

    uid: str
    number: str
    modality: str
    description: str
    instances: list[InstanceEntry] = field(default_factory=list)

    @property
    def images(self) -> int:
        return sum(i.frames for i in self.instances)


@dataclass
class StudyEntry:
    """A study with the patient it belongs to and its series."""

    uid: str
    patient_name: str
    patient_id: str
    issuer: str
    birth_date: str
    date: str
    description: str
    accession: str
    series: list[SeriesEntry] = field(default_factory=list)
    #: the owner organisation, in the archive (docs/tenants.md); "" on media
    organization: str = ""

    @property
    def modalities(self) -> str:
        return "/".join(sorted({s.modality for s in self.series if s.modality}))

    @property
    def images(self) -> int:
        return sum(s.images for s in self.series)


_MAIN_TAGS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
              "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "Modality",
              "SeriesNumber", "SeriesDescription", "InstanceNumber", "Rows", "Columns",
              "NumberOfFrames", "BitsStored", "PhotometricInterpretation", "PixelSpacing",
              "SliceThickness", "SliceLocation", "WindowCenter", "WindowWidth",
              "RescaleSlope", "RescaleIntercept", "Manufacturer", "InstitutionName")


def decode_instance(path: str, data: bytes) -> Dataset:
    """Part 10 bytes -> data set, or a one-line MediaError naming `path`."""
    try:
        return dcmread(BytesIO(data))
    except fileset.DICOM_READ_ERRORS as exc:
        raise MediaError(f"{path}: not a readable DICOM file ({exc})".splitlines()[0]) from None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


class Catalog:
    """An open disc: the tree of what is on it, and its instances on demand.

    Use :func:`open_catalog`; call :meth:`close` (or use it as a context manager) at the end.
    Methods are safe to call from several threads.
    """

    def __init__(self, media: MediaSource, close: Callable[[], None], keyring: cms.Keyring | None):
        self.name = media.name
        self.encrypted = keyring is not None
        self.studies: list[StudyEntry] = []
        self.errors: list[str] = []
        self.verified = 0
        """Files (the DICOMDIR included) opened with their digest checked."""
        self.unprotected: list[str] = []
        """Files opened without a digest to check (id-data: integrity not protected)."""
        self._media = media
        self._close = close
        self._keyring = keyring
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._series: dict[str, SeriesEntry] = {}

    # -- reading ---------------------------------------------------------------------------
    def _results(self) -> Iterator[tuple[str, bytes | None, str | None]]:
        if self._keyring is None:
            for rel in fileset.secure_paths(self._media):
                try:
                    yield rel, self._media.read(rel), None
                except MediaError as exc:
                    yield rel, None, str(exc)
            return
        for result in fileset.open_files(self._media, self._keyring):
            if result.error is not None:
                yield result.path, None, str(result.error)
            else:
                assert result.opened is not None
                if result.opened.integrity == "verified":
                    self.verified += 1
                else:
                    self.unprotected.append(result.path)
                yield result.path, result.opened.content, None

    def part10(self, path: str) -> bytes:
        """The complete Part 10 file at `path` (decrypted in memory, never written).

        Raises
        ------
        MediaError
            The file cannot be read or decrypted any more (the message names it).
        """
        with self._lock:
            data = self._cache.get(path)
            if data is not None:
                self._cache.move_to_end(path)
                return data
            raw = self._media.read(path)
            if self._keyring is None:
                data = raw
            else:
                opened = cms.open_file(raw, self._keyring)
                if opened.integrity != "verified" and path not in self.unprotected:
                    raise fileset.protected_disc_refuses(path)  # verified when indexed
                data = opened.content
            self._cache[path] = data
            while len(self._cache) > _CACHE:
                self._cache.popitem(last=False)
            return data

    def dataset(self, path: str) -> Dataset:
        """The decoded instance at `path` (pixel data included)."""
        return decode_instance(path, self.part10(path))

    def _index(self) -> None:
        studies: dict[str, StudyEntry] = {}
        for path, content, error in self._results():
            if error is not None:
                self.errors.append(error)
                continue
            assert content is not None
            if len(content) < 132 or content[128:132] != b"DICM":
                # a plain disc also carries a viewer, autorun files...: not an error there
                if self.encrypted and path.upper() != fileset.DICOMDIR:
                    self.errors.append(f"{path}: not a DICOM file")
                continue
            try:
                error = self._add(studies, path, content)
            except fileset.DICOM_READ_ERRORS as exc:
                error = f"{path}: not a readable DICOM file ({exc})".splitlines()[0]
            if error is not None:
                self.errors.append(error)
        for study in studies.values():
            study.series.sort(key=lambda s: (_int(s.number) is None, _int(s.number) or 0, s.uid))
            for s in study.series:
                s.instances.sort(key=lambda i: (i.instance_number is None, i.instance_number or 0,
                                                i.path))
        self.studies = sorted(studies.values(), key=lambda s: (s.patient_name, s.date, s.uid))

    def _add(self, studies: dict[str, StudyEntry], path: str, content: bytes) -> str | None:
        """Index one Part 10 file; the error line, or None. Every value is read (pydicom
        parses lazily, so a damaged one raises here) before the tree is touched."""
        ds = dcmread(BytesIO(content), stop_before_pixels=True)
        meta_class = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", ""))
        if MEDIA_STORAGE_DIRECTORY in (meta_class, str(ds.get("SOPClassUID", ""))):
            return None
        study_uid = _text(ds, "StudyInstanceUID")
        series_uid = _text(ds, "SeriesInstanceUID")
        if not study_uid or not series_uid:
            return f"{path}: no Study or Series Instance UID"
        study_values = (_text(ds, "PatientName"), _text(ds, "PatientID"),
                        _text(ds, "IssuerOfPatientID"), _text(ds, "PatientBirthDate"),
                        _text(ds, "StudyDate"), _text(ds, "StudyDescription"),
                        _text(ds, "AccessionNumber"))
        series_values = (_text(ds, "SeriesNumber"), _text(ds, "Modality"),
                         _text(ds, "SeriesDescription"))
        frames = _int(ds.get("NumberOfFrames")) or 1
        has_pixels = "Rows" in ds and "Columns" in ds  # the header is read without pixels
        instance = InstanceEntry(
            path, _text(ds, "SOPInstanceUID"), _int(ds.get("InstanceNumber")),
            frames if has_pixels else 0, {k: _text(ds, k) for k in _MAIN_TAGS if k in ds},
            _text(ds, "SOPClassUID"), str(ds.file_meta.get("TransferSyntaxUID", "")))
        study = studies.get(study_uid)
        if study is None:
            study = studies[study_uid] = StudyEntry(study_uid, *study_values)
        series = self._series.get(series_uid)
        if series is None:
            series = self._series[series_uid] = SeriesEntry(series_uid, *series_values)
            study.series.append(series)
        series.instances.append(instance)
        return None

    # -- lookup ----------------------------------------------------------------------------
    def series(self, uid: str) -> SeriesEntry:
        """The series with Series Instance UID `uid` (KeyError if it is not on the media)."""
        return self._series[uid]

    def study_of(self, series_uid: str) -> StudyEntry:
        """The study holding the series `series_uid` (KeyError if none)."""
        for study in self.studies:
            if any(s.uid == series_uid for s in study.series):
                return study
        raise KeyError(series_uid)

    def instances(self) -> Iterator[InstanceEntry]:
        """Every indexed instance, study by study and series by series."""
        for study in self.studies:
            for s in study.series:
                yield from s.instances

    @property
    def count(self) -> int:
        """Instances indexed."""
        return sum(len(s.instances) for s in self._series.values())

    def close(self) -> None:
        """Forget the decrypted files kept and close the media (an ISO image file)."""
        with self._lock:
            self._cache.clear()
            with contextlib.suppress(OSError, MediaError):
                self._close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_catalog(path: Path, keyring: cms.Keyring | None = None) -> Catalog:
    """Open and index the media at `path`.

    Parameters
    ----------
    path : Path
        A media folder, an ISO 9660 image, or a plain folder of Part 10 files.
    keyring : cms.Keyring, optional
        Needed for encrypted media (see :func:`needs_key`); ignored for plain files.

    Raises
    ------
    WrongKeyError
        The keyring opens nothing on the disc (no plaintext exists anywhere then).
    MediaError
        Encrypted media without a keyring, or media that cannot be read at all.
    """
    media, close = _media(path)
    try:
        plain = _is_plain(media)
        if not plain and keyring is None:
            raise MediaError("this media is encrypted: a password or key is needed")
        catalog = Catalog(media, close, None if plain else keyring)
        catalog._index()
    except BaseException:
        close()
        raise
    if not catalog.count and not catalog.errors:
        catalog.errors.append("no DICOM images found on this media")
    return catalog
