"""Importing the images of a disc into a PACS with the patient identity reconciled.

One responsibility: the IHE Import Reconciliation Workflow (IRWF) step for media: every
instance of an open :class:`~securepacs.services.media_view.Catalog` is decrypted in memory,
its Patient ID / Issuer of Patient ID (and optionally Patient's Name and Birth Date) are
replaced by the receiving site's values through :mod:`securepacs.services.coerce`, which
keeps the previous values in Original Attributes Sequence (PS3.3 C.12.1.1.9, Reason
``COERCE``); the media's own identifier is added to Other Patient IDs Sequence (0010,1002)
(PS3.3 C.7.1.1), and the instance is sent with C-STORE (PS3.4 B.2) through a
:class:`~securepacs.services.scuport.StoreConnector`. UIDs never change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence

from securepacs.errors import InvalidInstanceError, MediaError
from securepacs.model.levels import Level
from securepacs.services.coerce import Coercion, apply
from securepacs.services.discovery import read_meta
from securepacs.services.media_view import Catalog, InstanceEntry
from securepacs.services.scuport import (
    STATUS_NOT_AUTHORIZED,
    ConnectionFailed,
    Finder,
    PermissionRefused,
    StoreConnector,
    StoreRequest,
    StoreSession,
)
from securepacs.services.send import plan, status_text

__all__ = ["HeldInstance", "ImportProgress", "ImportSummary", "Reconciliation", "held_under",
           "identities", "import_catalog", "reconcile", "source_label"]


@dataclass(frozen=True)
class Reconciliation:
    """The receiving site's patient identity; empty fields are left as on the media.

    Attributes
    ----------
    patient_id, issuer : str
        Patient ID (0010,0020) and Issuer of Patient ID (0010,0021) at the receiving site.
    patient_name, birth_date : str
        Patient's Name (0010,0010) and Birth Date (0010,0030), optional.
    source : str
        Source of Previous Values (0400,0564), e.g. the media's or the sender's name.
    """

    patient_id: str = ""
    issuer: str = ""
    patient_name: str = ""
    birth_date: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.issuer and not self.patient_id:
            raise ValueError("--issuer needs --patient-id (the new Patient ID it qualifies)")
        for name, value, limit in (("--patient-id", self.patient_id, 64),
                                   ("--issuer", self.issuer, 64),
                                   ("--patient-name", self.patient_name, 324)):
            if len(value) > limit or "\\" in value or any(ord(c) < 32 for c in value):
                raise ValueError(f"{name} {value!r}: at most {limit} characters, no backslash "
                                 "or control characters")
        if self.birth_date and not (len(self.birth_date) == 8 and self.birth_date.isdigit()):
            raise ValueError(f"--birth-date {self.birth_date!r}: expected YYYYMMDD")

    @property
    def empty(self) -> bool:
        return not (self.patient_id or self.patient_name or self.birth_date)

    def coercion(self) -> Coercion:
        """The ``--set`` assignments this amounts to (:class:`Coercion`)."""
        args = []
        if self.patient_id:
            args += [f"PatientID={self.patient_id}", f"IssuerOfPatientID={self.issuer}"]
        if self.patient_name:
            args.append(f"PatientName={self.patient_name}")
        if self.birth_date:
            args.append(f"PatientBirthDate={self.birth_date}")
        return Coercion.parse(args, self.source)


def source_label(media_name: str) -> str:
    """Source of Previous Values (0400,0564, LO) for media: ``media`` and the disc's name."""
    name = media_name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return f"media {name}"[:64]


def reconcile(ds: Dataset, rec: Reconciliation, *, at: datetime) -> list[str]:
    """Apply `rec` to `ds` in place; returns the keywords changed.

    The previous Patient ID and Issuer go into a new item of Other Patient IDs Sequence
    (Type of Patient ID ``TEXT``) unless an equal item is there already; the previous value of
    that sequence is recorded in the same Original Attributes Sequence item as the others.
    """
    old_id, old_issuer = str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", ""))
    # the element, copied: the sequence itself is appended to below (PS3.3 C.12.1.1.9 keeps
    # the previous value, and a media file may already carry one, as CT_small.dcm does)
    old_others = deepcopy(ds["OtherPatientIDsSequence"]) if "OtherPatientIDsSequence" in ds else None
    changed = apply(ds, rec.coercion(), at=at)
    if "PatientID" not in changed or not old_id:
        return changed
    others = ds.get("OtherPatientIDsSequence") or DicomSequence()
    if not any(str(i.get("PatientID", "")) == old_id
               and str(i.get("IssuerOfPatientID", "")) == old_issuer for i in others):
        item = Dataset()
        item.PatientID = old_id
        if old_issuer:
            item.IssuerOfPatientID = old_issuer
        item.TypeOfPatientID = "TEXT"
        others.append(item)
        ds.OtherPatientIDsSequence = others
        modified = ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
        if old_others is not None:
            modified.add(old_others)
        else:
            modified.add_new(0x00101002, "SQ", None)
        changed.append("OtherPatientIDsSequence")
    return changed


def _encoded(part10: bytes, rec: Reconciliation, at: datetime) -> tuple[str, str, str, bytes]:
    """(SOP class, SOP instance, transfer syntax, data set bytes) after reconciliation."""
    meta = read_meta(BytesIO(part10))
    if rec.empty:
        return (meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax_uid,
                part10[meta.dataset_offset:])
    try:
        ds = dcmread(BytesIO(part10))
        reconcile(ds, rec, at=at)
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
    except (InvalidDicomError, ValueError, TypeError, KeyError, LookupError, OSError) as exc:
        raise InvalidInstanceError(f"cannot reconcile: {exc}".splitlines()[0]) from None
    data = out.getvalue()
    offset = read_meta(BytesIO(data)).dataset_offset
    return meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax_uid, data[offset:]


@dataclass(frozen=True)
class ImportProgress:
    """Counts so far."""

    done: int
    total: int


@dataclass
class ImportSummary:
    """What :func:`import_catalog` did; ``failed`` lists (file, reason), ``duplicates``
    (file, SOP Instance UID) of the instances the server already held (Warning 0xB006)."""

    total: int = 0
    sent: int = 0
    already_present: int = 0
    warnings: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_sent: int = 0
    stopped: str | None = None
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_sent and self.stopped is None


def identities(catalog: Catalog) -> list[tuple[str, str, str, str]]:
    """The distinct (Patient's Name, Patient ID, Issuer, Birth Date) on the media."""
    seen: dict[tuple[str, str, str, str], None] = {}
    for s in catalog.studies:
        seen[(s.patient_name, s.patient_id, s.issuer, s.birth_date)] = None
    return list(seen)


def _store(session: StoreSession, entry: InstanceEntry, item: tuple[str, str, str, bytes],
           summary: ImportSummary) -> None:
    sop_class, sop_instance, syntax, data = item
    refusal = session.refused(sop_class, syntax)
    if refusal is not None:
        summary.failed.append((entry.path, refusal))
        return
    status = session.store(StoreRequest(sop_class, sop_instance, syntax, len(data),
                                        lambda: BytesIO(data)))
    if status.category == "success":
        summary.sent += 1
    elif status.status == 0xB006 and "duplicate" in status.comment.lower():
        summary.already_present += 1
        summary.duplicates.append((entry.path, sop_instance))
    elif status.category == "warning":
        summary.sent += 1
        summary.warnings.append((entry.path, status_text(status.status)))
    else:
        comment = f": {status.comment}" if status.comment else ""
        summary.failed.append((entry.path, status_text(status.status) + comment))
        if status.status == STATUS_NOT_AUTHORIZED:
            raise PermissionRefused("the server does not allow this client to store images "
                                    f"(status 0x0124 Refused: Not Authorized{comment})")


def import_catalog(catalog: Catalog, rec: Reconciliation, connector: StoreConnector, *,
                   at: datetime, entries: Iterable[InstanceEntry] | None = None,
                   on_progress: Callable[[ImportProgress], None] | None = None) -> ImportSummary:
    """Send the instances of `catalog` (or `entries`), reconciled with `rec`.

    One association per group of at most 128 (SOP class, transfer syntax) pairs; each file is
    decrypted and reconciled just before it is sent, so only one is in memory at a time.
    Files that cannot be read or reconciled are listed in the summary; a connection that
    fails or a server that refuses this client stops the import (``stopped`` says why, the
    rest count as ``not_sent``). Never raises for those.
    """
    todo = list(catalog.instances() if entries is None else entries)
    summary = ImportSummary(total=len(todo))
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(ImportProgress(done, summary.total))

    for pairs in plan(e.pair for e in todo):
        wanted = set(pairs)
        session: StoreSession | None = None
        try:
            session = connector.open_store(pairs)
            for entry in (e for e in todo if e.pair in wanted):
                try:
                    item = _encoded(catalog.part10(entry.path), rec, at)
                except (MediaError, InvalidInstanceError, ValueError) as exc:
                    summary.failed.append((entry.path, str(exc)))
                else:
                    _store(session, entry, item, summary)
                advance()
        except ConnectionFailed as exc:
            summary.stopped = str(exc)
            summary.not_sent = summary.total - done
            if session is not None:
                session.abort()
            return summary
        session.close()
    return summary


@dataclass(frozen=True)
class HeldInstance:
    """An instance the server already held when it was imported again (Warning 0xB006).

    Attributes
    ----------
    path, sop_instance_uid : str
        The file on the media and its SOP Instance UID.
    patient_id : str or None
        The Patient ID the server holds it under (None: the server did not say).
    """

    path: str
    sop_instance_uid: str
    patient_id: str | None


def held_under(finder: Finder, duplicates: Iterable[tuple[str, str]],
               batch: int = 200) -> list[HeldInstance]:
    """Under which Patient ID the server holds each already-present instance.

    A second import of the same images is discarded by the archive (its first copy wins,
    PS3.4 B.2.3 Warning 0xB006 "Duplicate"), so a new Patient ID given this time is *not*
    applied: the caller reports the instances whose Patient ID differs. C-FIND at IMAGE level
    with List of UID Matching on SOP Instance UID (PS3.4 C.2.2.2.2) and Patient ID as a
    return key, `batch` UIDs per query.

    Raises
    ------
    ConnectionFailed
        The server cannot be asked (no connection, C-FIND not allowed).
    """
    pairs = list(duplicates)
    found: dict[str, str] = {}
    uids = list(dict.fromkeys(uid for _path, uid in pairs))
    for start in range(0, len(uids), batch):
        chunk = uids[start:start + batch]
        ds = Dataset()
        ds.QueryRetrieveLevel = Level.IMAGE.value
        ds.SOPInstanceUID = chunk if len(chunk) > 1 else chunk[0]
        ds.PatientID = ""
        for match in finder.find(ds, Level.IMAGE):
            uid = str(match.get("SOPInstanceUID", "") or "")
            if uid and "PatientID" in match:
                found[uid] = str(match.PatientID or "")
    return [HeldInstance(path, uid, found.get(uid)) for path, uid in pairs]
