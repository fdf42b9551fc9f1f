"""STOW-RS storage (PS3.18 10.5) through the C-STORE ingest service.

One responsibility: store each received ``application/dicom`` part (a Part 10 file the
web edge spooled to disk, in the blob store's spool folder so that ingest can move it in
without a copy) with :class:`~securepacs.services.ingest.IngestService` (the same checks,
the same durability order, the same duplicate rule as C-STORE), audit it as a C-STORE
(DICOM Instances Transferred, Create), and build the PS3.18 10.5.3 response: a
ReferencedSOPSequence item per stored instance (with WarningReason 0xB006 for a
duplicate whose first copy was kept, the C-STORE warning status), a FailedSOPSequence
item with FailureReason (the C-STORE failure status) per refused one, the HTTP status
200 / 202 / 409 of PS3.18 Table 10.5.3-1.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from securepacs.errors import (
    InvalidInstanceError,
    PacsError,
    SopClassMismatchError,
    StorageError,
    StorageFullError,
)
from securepacs.services import part10
from securepacs.services.audit_events import AuditEvents
from securepacs.services.dicomweb_access import Caller, DicomwebAccess
from securepacs.services.ingest import IngestService, Outcome, Received

__all__ = ["DUPLICATE_WARNING", "StowOutcome", "StowService", "stow_response"]

log = logging.getLogger(__name__)

#: Warning Reason of a duplicate whose first copy was kept (C-STORE's 0xB006).
DUPLICATE_WARNING = 0xB006
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
#: The study of the request (``/studies/{uid}``) differs from the instance's (PS3.18 10.5.2).
STUDY_MISMATCH = 0xA900
#: The part is not application/dicom (PS3.18 Table 10.5.3-2 "SOP Class not supported"
#: would mislead; this is "cannot understand").
NOT_DICOM = 0xC000

_FAILURES: tuple[tuple[type[BaseException], int], ...] = (
    (StorageFullError, OUT_OF_RESOURCES),
    (SopClassMismatchError, DATASET_MISMATCH),
    (InvalidInstanceError, CANNOT_UNDERSTAND),
    (StorageError, OUT_OF_RESOURCES),
    (PacsError, PROCESSING_FAILURE),
)


class PartSpool:
    """One received part, written to a 0600 temp file as it arrives.

    Its File Meta Information (PS3.10 7.1) is replaced by exactly the one ingest writes
    (:func:`part10.header_for`), so that ingest moves the file in as the blob without
    copying it (as it does for a large C-STORE). Content that does not start like a Part
    10 file is written as it came (ingest then refuses it with a reason).

    Parameters
    ----------
    folder : Path or None
        The spool folder (the blob store's, so that the move is a rename).
    """

    _META_LIMIT = 64 * 1024

    def __init__(self, folder: Path | None) -> None:
        fd, name = tempfile.mkstemp(prefix="stow-", suffix=f".{os.getpid()}.tmp", dir=folder)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._head = bytearray()
        self._passing = False

    def write(self, data: bytes) -> None:
        if self._passing:
            self._file.write(data)
            return
        self._head += data
        if len(self._head) < 144:
            return
        try:
            offset = part10.dataset_offset(bytes(self._head[:144]))
        except InvalidInstanceError:
            offset = -1
        if offset < 0 or offset > self._META_LIMIT:
            self._pass_through()
            return
        if len(self._head) < offset:
            return
        header = self._our_header(bytes(self._head[:offset]))
        if header is None:
            self._pass_through()
            return
        self._file.write(header)
        self._file.write(self._head[offset:])
        self._head = bytearray()
        self._passing = True

    @staticmethod
    def _our_header(meta_bytes: bytes) -> bytes | None:
        try:
            meta = dcmread(BytesIO(meta_bytes), stop_before_pixels=True).file_meta
            return part10.header_for(str(meta.MediaStorageSOPClassUID),
                                     str(meta.MediaStorageSOPInstanceUID),
                                     str(meta.TransferSyntaxUID), "")
        except Exception:  # noqa: BLE001 - any unreadable meta: keep the bytes as they came
            return None

    def _pass_through(self) -> None:
        self._file.write(self._head)
        self._head = bytearray()
        self._passing = True

    def finish(self) -> Path:
        """Close the file (what is buffered written as it came); its path."""
        if not self._passing:
            self._file.write(self._head)
        self._file.close()
        return self.path

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class StowOutcome:
    """What happened to one part.

    Attributes
    ----------
    sop_class_uid, sop_instance_uid, study_uid : str
        From the part's File Meta Information / data set ("" when unreadable).
    failure : int or None
        The FailureReason when the instance was not stored.
    warning : int or None
        The WarningReason of a stored (or already stored) instance.
    reason : str
        Why, in words (logged; not sent).
    """

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str = ""
    failure: int | None = None
    warning: int | None = None
    reason: str = ""


def _failure_code(exc: BaseException) -> int:
    for kind, code in _FAILURES:
        if isinstance(exc, kind):
            return code
    return PROCESSING_FAILURE


class StowService:
    """STOW-RS through the C-STORE ingest service (see the module docstring)."""

    def __init__(self, ingest: IngestService, access: DicomwebAccess, audit: AuditEvents):
        self._ingest = ingest
        self._access = access
        self._audit = audit

    def spool(self) -> PartSpool:
        """A temp file for the next received part, in the blob store's spool folder."""
        return PartSpool(self._ingest.spool_folder)

    def begin(self, caller: Caller) -> None:
        """Check the caller may store, before the request body is read.

        Raises
        ------
        NotPermitted, AuditError
        """
        self._access.require(caller, "STOW-RS")

    def not_dicom(self, content_type: str) -> StowOutcome:
        """The outcome of a part that is not ``application/dicom``."""
        return StowOutcome("", "", failure=NOT_DICOM,
                           reason=f"part of type {content_type or '(none)'} is not "
                                  "application/dicom")

    def store_file(self, caller: Caller, path: Path, study: str | None = None) -> StowOutcome:
        """Store the Part 10 file at `path` (removed afterwards in every case).

        `study` is the Study Instance UID of the request's resource (``/studies/{uid}``),
        which the instance must carry.
        """
        try:
            return self._store(caller, path, study)
        finally:
            path.unlink(missing_ok=True)

    def _store(self, caller: Caller, path: Path, study: str | None) -> StowOutcome:
        try:
            head = part10.read_header(path)
            meta = head.file_meta
            sop_class = str(meta.MediaStorageSOPClassUID)
            sop = str(meta.MediaStorageSOPInstanceUID)
            syntax = str(meta.TransferSyntaxUID)
        except (InvalidInstanceError, AttributeError) as exc:
            reason = (str(exc) if isinstance(exc, InvalidInstanceError)
                      else "not a DICOM Part 10 file (no File Meta Information)")
            self._audited(caller, "", "", "", success=False, why=reason)
            return StowOutcome("", "", failure=CANNOT_UNDERSTAND, reason=reason)
        study_uid = part10.as_text(head.get("StudyInstanceUID"))
        if study is not None and study_uid != study:
            reason = (f"instance of study {study_uid or '(none)'} sent to the resource of "
                      f"study {study}")
            self._audited(caller, sop_class, "", study_uid, success=False, why=reason)
            return StowOutcome(sop_class, sop, study_uid, failure=STUDY_MISMATCH,
                               reason=reason)
        item = Received(dataset=b"", sop_class_uid=sop_class, sop_instance_uid=sop,
                        transfer_syntax_uid=syntax, calling_ae="", dataset_file=path,
                        organization=self._access.owner(caller))
        try:
            result = self._ingest.store_instance(item)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a FailureReason
            code = _failure_code(exc)
            reason = str(exc) if isinstance(exc, PacsError) else f"internal error: {exc!r}"
            log.error("STOW-RS %s from %s refused (0x%04X): %s", sop, caller.identity.describe(),
                      code, reason, exc_info=not isinstance(exc, PacsError))
            self._audited(caller, sop_class, "", study_uid, success=False, why=reason)
            return StowOutcome(sop_class, sop, study_uid, failure=code, reason=reason)
        self._audited(caller, sop_class, result.patient_id, result.study_uid, success=True,
                      why=None)
        if result.outcome is Outcome.DUPLICATE:
            log.warning("STOW-RS %s from %s: duplicate SOP Instance UID, first copy kept", sop,
                        caller.identity.describe())
            return StowOutcome(sop_class, sop, result.study_uid, warning=DUPLICATE_WARNING,
                               reason="Duplicate SOP Instance UID: first copy kept")
        return StowOutcome(sop_class, sop, result.study_uid)

    def _audited(self, caller: Caller, sop_class: str, patient_id: str, study_uid: str, *,
                 success: bool, why: str | None) -> None:
        self._audit.stored(caller.identity, ae_title="", address=caller.address,
                           patient_id=patient_id, study_uid=study_uid, sop_class_uid=sop_class,
                           success=success, description=why)


def stow_response(outcomes: Sequence[StowOutcome], *, study_url: Callable[[str], str],
                  instance_url: Callable[[StowOutcome], str]) -> tuple[int, Dataset]:
    """The HTTP status and the Store Instances Response Module (PS3.18 10.5.3).

    200: every instance stored without warning; 202: some stored, or stored with
    warnings; 409: none stored (also for a request with no part at all).
    """
    ds = Dataset()
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    studies = {o.study_uid for o in stored if o.study_uid}
    if len(studies) == 1:
        ds.add_new("RetrieveURL", "UR", study_url(next(iter(studies))))
    if failed:
        ds.FailedSOPSequence = []
        for o in failed:
            item = Dataset()
            item.ReferencedSOPClassUID = o.sop_class_uid
            item.ReferencedSOPInstanceUID = o.sop_instance_uid
            item.FailureReason = o.failure
            ds.FailedSOPSequence.append(item)
    if stored:
        ds.ReferencedSOPSequence = []
        for o in stored:
            item = Dataset()
            item.ReferencedSOPClassUID = o.sop_class_uid
            item.ReferencedSOPInstanceUID = o.sop_instance_uid
            item.add_new("RetrieveURL", "UR", instance_url(o))
            if o.warning is not None:
                item.WarningReason = o.warning
            ds.ReferencedSOPSequence.append(item)
    if not stored:
        return 409, ds
    if failed or any(o.warning is not None for o in stored):
        return 202, ds
    return 200, ds
