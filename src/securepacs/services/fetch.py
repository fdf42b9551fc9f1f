"""Retrieving on the client side: C-GET into a folder layout, and C-MOVE (PS3.4 C.4.2, C.4.3).

One responsibility: decide which storage presentation contexts a C-GET must offer (from a
C-FIND of the SOP classes involved), write each received instance as a Part 10 file
(PS3.10 7.1; the data set bytes as they arrived, only File Meta Information added) at
``DIR/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, and
collect the sub-operation counts of a C-GET or C-MOVE.
"""

from __future__ import annotations

import copy
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import uid
from pydicom.dataset import Dataset

from securepacs.errors import InvalidInstanceError, QueryError
from securepacs.model.levels import Level
from securepacs.services.deidentify import Deidentifier, deidentify_part10
from securepacs.services.part10 import as_text, file_meta, part10_header, read_header
from securepacs.services.scuport import (
    DimseStatus,
    Finder,
    PermissionRefused,
    ReceivedInstance,
    RetrieveProgress,
    Retriever,
)

UNCOMPRESSED = (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian)
#: Offered for every SOP class, one context each, while there is room (PS3.8: 128 contexts).
#: Implicit VR Little Endian comes first: an instance stored in it then comes back as stored
#: (the context with both uncompressed syntaxes is accepted as Explicit VR).
COMPRESSED = (
    uid.ImplicitVRLittleEndian, uid.JPEGLosslessSV1, uid.JPEGBaseline8Bit, uid.JPEG2000Lossless, uid.JPEG2000,
    uid.JPEGLSLossless, uid.RLELossless, uid.JPEGLossless, uid.JPEGExtended12Bit,
    uid.JPEGLSNearLossless, uid.DeflatedExplicitVRLittleEndian, uid.ExplicitVRBigEndian,
)
#: When the SOP classes cannot be queried first: the common image and document classes.
COMMON_STORAGE = (
    uid.CTImageStorage, uid.EnhancedCTImageStorage, uid.MRImageStorage,
    uid.EnhancedMRImageStorage, uid.ComputedRadiographyImageStorage,
    uid.DigitalXRayImageStorageForPresentation, uid.DigitalXRayImageStorageForProcessing,
    uid.DigitalMammographyXRayImageStorageForPresentation, uid.UltrasoundImageStorage,
    uid.UltrasoundMultiFrameImageStorage, uid.SecondaryCaptureImageStorage,
    uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage, uid.XRayAngiographicImageStorage,
    uid.XRayRadiofluoroscopicImageStorage, uid.NuclearMedicineImageStorage,
    uid.PositronEmissionTomographyImageStorage, uid.RTImageStorage, uid.RTDoseStorage,
    uid.RTStructureSetStorage, uid.RTPlanStorage, uid.BasicTextSRStorage,
    uid.EnhancedSRStorage, uid.ComprehensiveSRStorage, uid.KeyObjectSelectionDocumentStorage,
    uid.GrayscaleSoftcopyPresentationStateStorage, uid.EncapsulatedPDFStorage,
    uid.VLPhotographicImageStorage,
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000


def storage_contexts(sop_classes: Sequence[str], limit: int = 127) -> list[tuple[str, tuple[str, ...]]]:
    """Presentation contexts a C-GET requestor offers as Storage SCP (PS3.4 C.4.3.3).

    Every SOP class gets one context with the uncompressed syntaxes; then, in the order of
    :data:`COMPRESSED`, one context per (class, compressed syntax) while fewer than `limit`
    contexts are used (the C-GET model itself takes the 128th).
    """
    classes = list(dict.fromkeys(sop_classes))[:limit]
    out: list[tuple[str, tuple[str, ...]]] = [(c, UNCOMPRESSED) for c in classes]
    for ts in COMPRESSED:
        for sop_class in classes:
            if len(out) >= limit:
                return out
            out.append((sop_class, (ts,)))
    return out


def _component(value: str, fallback: str) -> str:
    cleaned = _UNSAFE.sub("_", value.strip()).strip("._")
    return cleaned[:64] or fallback


def instance_path(root: Path, ds: Dataset, sop_instance_uid: str) -> Path:
    """``root/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.

    Characters outside ``A-Z a-z 0-9 . _ -`` become ``_``; a missing value becomes
    ``UNKNOWN``, so the layout is predictable for any data set.
    """
    return (root
            / _component(as_text(ds.get("PatientID")), "UNKNOWN")
            / _component(as_text(ds.get("StudyInstanceUID")), "UNKNOWN")
            / _component(as_text(ds.get("SeriesInstanceUID")), "UNKNOWN")
            / f"{_component(sop_instance_uid, 'UNKNOWN')}.dcm")


@dataclass
class InstanceWriter:
    """Writes each instance a C-GET delivers; the callable answers the C-STORE status."""

    root: Path
    source_ae: str = ""
    written: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bytes_written: int = 0
    on_written: Callable[[Path], None] | None = None
    #: De-identify each instance before it is written (PS3.15 Annex E, one map per run);
    #: the SOP Instance UIDs of those left out (burned-in annotation) go to ``left_out``.
    deidentify: Deidentifier | None = None
    left_out: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, item: ReceivedInstance) -> int:
        try:
            header = part10_header(file_meta(item.sop_class_uid, item.sop_instance_uid,
                                             item.transfer_syntax_uid, self.source_ae))
            content = header + item.dataset
            uid = item.sop_instance_uid
            if self.deidentify is not None:
                made = self._deidentified(content)
                if made is None:
                    with self._lock:
                        self.left_out.append(item.sop_instance_uid)
                    return 0x0000
                content, uid = made
            ds = read_header(content)
            path = instance_path(self.root, ds, uid)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(content)
            os.replace(tmp, path)
        except InvalidInstanceError as exc:
            with self._lock:
                self.errors.append(f"{item.sop_instance_uid}: {exc}")
            return STATUS_CANNOT_UNDERSTAND
        except OSError as exc:
            with self._lock:
                self.errors.append(f"{item.sop_instance_uid}: cannot write: {exc}")
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            self.written.append(path)
            self.bytes_written += len(content)
        if self.on_written is not None:
            self.on_written(path)
        return 0x0000

    def _deidentified(self, part10: bytes) -> tuple[bytes, str] | None:
        assert self.deidentify is not None
        try:
            out = deidentify_part10(self.deidentify, part10)
        except ValueError as exc:
            raise InvalidInstanceError(str(exc)) from None
        if out is None:
            return None
        return out, str(read_header(out).get("SOPInstanceUID", ""))


@dataclass
class RetrieveSummary:
    """The outcome of a C-GET or C-MOVE."""

    final: RetrieveProgress
    expected: int | None = None
    written: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: A C-MOVE the server answered with Success and no sub-operation at all (no pending
    #: response counting one, final counts all 0): nothing it lets the caller retrieve
    #: matched; ``expected`` then says how many instances a C-FIND lists (None: unknown).
    moved_nothing: bool = False

    @property
    def ok(self) -> bool:
        return (self.final.status.category in ("success", "warning") and not self.final.failed
                and not self.errors and not self.withheld and not self.moved_nothing)

    @property
    def withheld(self) -> bool:
        """The C-FIND before the retrieve listed instances, and the server sent none and
        reported no failure: the caller may find them but not retrieve them (a study
        shared with its organisation read-only, docs/tenants.md), as if they did not exist."""
        f = self.final
        return (bool(self.expected) and not self.written and not self.errors
                and f.completed == f.failed == f.warning == 0)


def get(retriever: Retriever, finder: Finder | None, identifier: Dataset, level: Level,
        writer: InstanceWriter, *, on_progress: Callable[[RetrieveProgress], None],
        notice: Callable[[str], None] = lambda _: None,
        on_expected: Callable[[int], None] | None = None) -> RetrieveSummary:
    """C-GET `identifier`, writing what arrives with `writer`.

    A C-FIND at IMAGE level first lists the SOP classes (and the number of instances, for
    the progress bar) so that exactly the needed storage contexts are offered; if the
    query is refused, :data:`COMMON_STORAGE` is offered instead.
    """
    classes: list[str] = []
    expected: int | None = None
    if finder is not None:
        try:
            matches = _instances(finder, identifier)
            classes = [str(m.SOPClassUID) for m in matches if m.get("SOPClassUID")]
            expected = len(matches)
        except (PermissionRefused, QueryError) as exc:
            notice(f"cannot list the SOP classes first ({exc}); offering the common ones")
    if expected == 0:
        status = DimseStatus(0x0000)
        return RetrieveSummary(RetrieveProgress(0, 0, 0, 0, status), 0)
    if expected is not None and on_expected is not None:
        on_expected(expected)
    contexts = storage_contexts(classes or COMMON_STORAGE)
    final = retriever.get(identifier, contexts, writer, on_progress)
    return RetrieveSummary(final, expected, list(writer.written), list(writer.errors))


def _instances(finder: Finder, identifier: Dataset) -> list[Dataset]:
    """The instances a C-FIND at IMAGE level lists under `identifier`'s unique keys, each
    with its SOP Class UID (what the caller may find, which is not always what it may
    retrieve: docs/tenants.md)."""
    query = copy.deepcopy(identifier)  # update() would share (and change) its elements
    query.QueryRetrieveLevel = Level.IMAGE.value
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if keyword not in query:
            query.add_new(keyword, "UI", None)
    query.SOPClassUID = None
    return list(finder.find(query, Level.IMAGE))


def move(retriever: Retriever, identifier: Dataset, destination: str, *,
         on_progress: Callable[[RetrieveProgress], None],
         finder: Finder | None = None) -> RetrieveSummary:
    """C-MOVE `identifier` to the AE title `destination` (the server must know it).

    A C-MOVE of something the server will not send (an unknown UID, or a study it lets
    the caller find but not retrieve) is answered, by securepacs at least, with Success
    and no sub-operation (PS3.4 C.4.2.3 counts them): the summary then has
    ``moved_nothing`` set and is not ``ok``, and,
    with a `finder`, ``expected`` holds the number of instances a C-FIND lists, to tell
    the two apart (as :func:`get` does before it retrieves).
    """
    counted = False

    def progress(p: RetrieveProgress) -> None:
        nonlocal counted
        if p.remaining or p.completed or p.failed or p.warning:
            counted = True
        on_progress(p)

    final = retriever.move(identifier, destination, progress)
    summary = RetrieveSummary(final)
    if final.status.category == "success" and not counted:
        summary.moved_nothing = True
        if finder is not None:
            try:
                summary.expected = len(_instances(finder, identifier))
            except (PermissionRefused, QueryError):
                summary.expected = None
    return summary
