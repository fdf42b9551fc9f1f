"""WADO-RS retrieval (PS3.18 10.4): instances, metadata, frames, bulk data, rendered images.

One responsibility: find what a WADO-RS resource names (study, series or instance; the
same index lookup as C-GET, :meth:`~securepacs.services.query.RetrieveService.instances`),
after the caller's get permission is checked (:mod:`securepacs.services.dicomweb_access`),
and give it out: the stored Part 10 bytes in pieces as they are read from the blob store
(a study is never held in memory whole), re-encoded only into another uncompressed
transfer syntax (PS3.18 8.7.3.5); the metadata as DICOM JSON (PS3.18 F.2) with a
BulkDataURI (F.2.6) for each large binary value; frames (PS3.18 10.4.1.1.4) as stored or
decoded; rendered frames and thumbnails (PS3.18 10.4.1.1.6, 10.4.1.1.7) through
:mod:`securepacs.services.rendering`. Every retrieval is audited as a C-GET is (DICOM
Instances Transferred, Read).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from PIL import Image
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from securepacs.errors import MediaError, RetrieveError
from securepacs.model.levels import Level, Root
from securepacs.model.record import StoredInstance
from securepacs.services import rendering
from securepacs.services.audit_events import AuditEvents
from securepacs.services.dicomweb_access import Caller, DicomwebAccess
from securepacs.services.query import RetrieveService

__all__ = ["UNCOMPRESSED", "Frame", "NoSuchResource", "NotConvertible", "WadoService"]

#: The transfer syntaxes a stored instance can be re-encoded into on request.
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_CHUNK = 1 << 20
_BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


class NoSuchResource(RetrieveError):
    """Nothing in the archive under the UIDs of the request (HTTP 404)."""


class NotConvertible(RetrieveError):
    """The transfer syntax asked for cannot be made from the stored one (HTTP 406)."""


@dataclass(frozen=True)
class Frame:
    """One frame's bytes, and the transfer syntax they are in (None: native pixels)."""

    data: bytes
    transfer_syntax_uid: str | None


def _identifier(study: str, series: str | None, sop: str | None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = (Level.IMAGE if sop else Level.SERIES if series
                             else Level.STUDY).value
    ds.StudyInstanceUID = study
    if series:
        ds.SeriesInstanceUID = series
    if sop:
        ds.SOPInstanceUID = sop
    return ds


def _read(fh: Any, what: str, *, pixels: bool) -> Dataset:
    try:
        return dcmread(fh, stop_before_pixels=not pixels)
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError) as exc:
        raise MediaError(f"{what}: stored file not readable ({exc})".splitlines()[0]) from None


class WadoService:
    """WADO-RS resources of the archive (see the module docstring).

    Parameters
    ----------
    retrieve : RetrieveService
        The C-GET service (instance lookup and blob reads).
    access : DicomwebAccess
        The permission check.
    audit : AuditEvents
        Where retrievals are audited.
    """

    def __init__(self, retrieve: RetrieveService, access: DicomwebAccess, audit: AuditEvents):
        self._retrieve = retrieve
        self._access = access
        self._audit = audit

    # -- what a resource names -------------------------------------------------------------
    def instances(self, caller: Caller, study: str, series: str | None = None,
                  sop: str | None = None) -> list[StoredInstance]:
        """The stored instances a resource names, audited as retrieved by `caller`.

        Raises
        ------
        NotPermitted
            No get permission.
        NoSuchResource
            Nothing stored under these UIDs that the caller may see.
        """
        self._access.require(caller, "WADO-RS")
        found = self._retrieve.instances(_identifier(study, series, sop), Root.STUDY,
                                         visibility=self._access.visibility(caller,
                                                                            retrieve=True))
        found = [i for i in found if i.study_uid == study
                 and (series is None or i.series_uid == series)
                 and (sop is None or i.sop_instance_uid == sop)]
        if not found:
            raise NoSuchResource("no such study, series or instance in the archive")
        found.sort(key=lambda i: (i.series_uid, i.sop_instance_uid))
        self._access.crossed(caller, found)
        self._audit.retrieved(caller.identity, ae_title="", address=caller.address,
                              destination=caller.identity.name,
                              patient_ids=[i.patient_id for i in found if i.patient_id],
                              study_uids=[i.study_uid for i in found], success=True)
        return found

    # -- the stored instances ----------------------------------------------------------------
    @staticmethod
    def can_send(instance: StoredInstance, transfer_syntax: str | None) -> bool:
        """Whether `instance` can be given in `transfer_syntax` (None or "*": as stored)."""
        if transfer_syntax in (None, "*", instance.transfer_syntax_uid):
            return True
        return (transfer_syntax in UNCOMPRESSED
                and instance.transfer_syntax_uid in UNCOMPRESSED)

    def part10(self, instance: StoredInstance, transfer_syntax: str | None = None
               ) -> Iterator[bytes]:
        """The instance's Part 10 file in pieces: the stored bytes, or re-encoded.

        Raises
        ------
        NotConvertible
            Another transfer syntax than the stored one, and not both uncompressed.
        StorageError
            The blob cannot be read.
        """
        if not self.can_send(instance, transfer_syntax):
            raise NotConvertible(f"{instance.sop_instance_uid} is stored as "
                                 f"{UID(instance.transfer_syntax_uid).name} and cannot be "
                                 f"sent as {transfer_syntax}")
        if transfer_syntax in (None, "*", instance.transfer_syntax_uid):
            return self._chunks(instance)
        return iter([self._reencode(instance, str(transfer_syntax))])

    def _chunks(self, instance: StoredInstance) -> Iterator[bytes]:
        with self._retrieve.open(instance) as fh:
            while chunk := fh.read(_CHUNK):
                yield chunk

    def _reencode(self, instance: StoredInstance, transfer_syntax: str) -> bytes:
        with self._retrieve.open(instance) as fh:
            ds = _read(fh, instance.sop_instance_uid, pixels=True)
        ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        out = BytesIO()
        ds.save_as(out, implicit_vr=transfer_syntax == ImplicitVRLittleEndian,
                   little_endian=True, enforce_file_format=True)
        return out.getvalue()

    def dataset(self, instance: StoredInstance, *, pixels: bool = True) -> Dataset:
        """The stored instance decoded (with or without its pixel data)."""
        with self._retrieve.open(instance) as fh:
            return _read(fh, instance.sop_instance_uid, pixels=pixels)

    # -- metadata ----------------------------------------------------------------------------
    def metadata(self, instance: StoredInstance, bulk_url: Callable[[str], str]
                 ) -> dict[str, Any]:
        """The instance's DICOM JSON object; large binary values are BulkDataURIs made by
        `bulk_url` from the attribute's tag (8 hex digits), pixel data never read."""
        ds = self.dataset(instance, pixels=False)

        def handler(elem: DataElement) -> str:
            return bulk_url(f"{elem.tag:08X}")

        out = ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=handler)
        if self._has_pixels(instance, ds):
            vr = "OB" if ds.file_meta.TransferSyntaxUID.is_compressed else "OW"
            out["7FE00010"] = {"vr": vr, "BulkDataURI": bulk_url("7FE00010")}
        return out

    @staticmethod
    def _has_pixels(instance: StoredInstance, ds: Dataset) -> bool:
        return "Rows" in ds and "Columns" in ds and "BitsAllocated" in ds

    # -- bulk data and frames ----------------------------------------------------------------
    # Pixel data is never read whole: the data set is parsed with its large values deferred,
    # then only the frames asked for are read from the file (native: at their offsets;
    # encapsulated: fragment by fragment), so a 1 GB multi-frame costs one frame of memory.
    def _pixels(self, fh: Any, instance: StoredInstance) -> tuple[Dataset, int, int]:
        """(data set with large values deferred, offset of the Pixel Data value, frames)."""
        try:
            ds = dcmread(fh, defer_size=4096)
        except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError) as exc:
            raise MediaError(f"{instance.sop_instance_uid}: stored file not readable "
                             f"({exc})".splitlines()[0]) from None
        raw = ds.get_item(0x7FE00010, keep_deferred=True) if "PixelData" in ds else None
        tell = getattr(raw, "value_tell", None)
        if raw is None or tell is None:
            raise NoSuchResource(f"{instance.sop_instance_uid} has no pixel data")
        return ds, int(tell), int(ds.get("NumberOfFrames", 1) or 1)

    def _stored_frames(self, fh: Any, ds: Dataset, tell: int, count: int,
                       numbers: Sequence[int]) -> list[bytes]:
        wanted = set(numbers)
        if not ds.file_meta.TransferSyntaxUID.is_compressed:
            size = self._frame_size(ds)
            out: dict[int, bytes] = {}
            for n in wanted:
                fh.seek(tell + (n - 1) * size)
                out[n] = fh.read(size)
        else:
            fh.seek(tell)
            out = {}
            for n, frame in enumerate(generate_frames(fh, number_of_frames=count), 1):
                if n in wanted:
                    out[n] = frame
                if len(out) == len(wanted):
                    break
        return [out[n] for n in numbers]

    def bulkdata(self, instance: StoredInstance, tag: str
                 ) -> Iterator[tuple[str | None, Iterator[bytes]]]:
        """A top-level binary attribute's value (8 hex digits) as parts of (transfer syntax
        or None for native, pieces): encapsulated Pixel Data gives one part per frame as
        stored; native Pixel Data one part read from the file in 1 MiB pieces.

        Raises
        ------
        NoSuchResource
            The instance has no such binary attribute.
        """
        try:
            number = int(tag, 16)
        except ValueError:
            raise NoSuchResource(f"no bulk data {tag!r}") from None
        if number == 0x7FE00010:
            with self._retrieve.open(instance) as fh:
                ds, tell, count = self._pixels(fh, instance)
            syntax = ds.file_meta.TransferSyntaxUID
            if syntax.is_compressed:
                return ((str(syntax), iter([f.data])) for f in self._bulk_frames(instance, count))
            length = self._frame_size(ds) * count
            return iter([(None, self._region(instance, tell, length))])
        ds = self.dataset(instance, pixels=False)
        elem = ds.get(number)
        if elem is None or elem.VR not in _BULK_VRS or elem.value is None:
            raise NoSuchResource(f"{instance.sop_instance_uid} has no bulk data {tag}")
        return iter([(None, iter([bytes(elem.value)]))])

    def _region(self, instance: StoredInstance, start: int, length: int) -> Iterator[bytes]:
        with self._retrieve.open(instance) as fh:
            fh.seek(start)
            while length > 0:
                chunk = fh.read(min(_CHUNK, length))
                if not chunk:
                    return
                length -= len(chunk)
                yield chunk

    def _bulk_frames(self, instance: StoredInstance, count: int) -> Iterator[Frame]:
        for first in range(1, count + 1, 16):  # a few frames at a time
            yield from self.frames(instance, list(range(first, min(first + 16, count + 1))),
                                   native=False)

    def frames(self, instance: StoredInstance, numbers: Sequence[int], *,
               native: bool) -> list[Frame]:
        """Frames `numbers` (1-based) as stored (`native` False and compressed) or as
        native little-endian pixels.

        Raises
        ------
        NoSuchResource
            No pixel data, or a frame number beyond the last frame.
        MediaError
            Compressed pixel data that cannot be decoded (native asked for).
        """
        with self._retrieve.open(instance) as fh:
            ds, tell, count = self._pixels(fh, instance)
            bad = [n for n in numbers if not 1 <= n <= count]
            if bad:
                raise NoSuchResource(f"{instance.sop_instance_uid} has {count} frame(s), "
                                     f"not {bad[0]}")
            stored = self._stored_frames(fh, ds, tell, count, numbers)
        syntax = ds.file_meta.TransferSyntaxUID
        if not syntax.is_compressed:
            return [Frame(f, None) for f in stored]
        if not native:
            return [Frame(f, str(syntax)) for f in stored]
        return [Frame(self._decoded(self._one_frame(instance, f)), None) for f in stored]

    def _one_frame(self, instance: StoredInstance, frame: bytes) -> Dataset:
        """The instance's attributes with `frame` as its only frame (for decoding)."""
        ds = self.dataset(instance, pixels=False)
        ds.NumberOfFrames = 1
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.PixelData = encapsulate([frame])
        else:
            ds.PixelData = frame
        return ds

    @staticmethod
    def _frame_size(ds: Dataset) -> int:
        bits = int(ds.BitsAllocated)
        pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
        return (pixels * bits + 7) // 8

    @staticmethod
    def _decoded(ds: Dataset) -> bytes:
        from pydicom.pixels import pixel_array

        try:
            array = pixel_array(ds)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types here
            raise MediaError(f"cannot decode the pixel data: {exc}".splitlines()[0]) from None
        return bytes(array.astype(array.dtype.newbyteorder("<")).tobytes())

    # -- rendered ------------------------------------------------------------------------------
    def rendered(self, instance: StoredInstance, frame: int = 1, *, media_type: str,
                 window: rendering.Window | None = None, viewport: tuple[int, int] | None = None,
                 quality: int | None = None) -> bytes:
        """One frame (1-based) rendered as ``image/jpeg`` or ``image/png``.

        Raises
        ------
        MediaError
            No image, a frame that does not exist, pixel data that cannot be decoded.
        """
        try:
            stored = self.frames(instance, [frame], native=False)[0]
        except NoSuchResource as exc:
            raise MediaError(str(exc)) from None
        ds = self._one_frame(instance, stored.data)
        picture = rendering.render_png(ds, 0, window)
        if viewport is None and media_type == "image/png":
            return picture.png
        image = Image.open(BytesIO(picture.png))
        if viewport is not None:
            image.thumbnail(viewport)
        out = BytesIO()
        if media_type == "image/png":
            image.save(out, "PNG", compress_level=1)
        else:
            image.save(out, "JPEG", quality=quality or 90)
        return out.getvalue()

    def representative(self, instances: Sequence[StoredInstance]) -> StoredInstance:
        """The instance a study or series thumbnail shows: the middle one with an image."""
        with_image = [i for i in instances if i.size > 0]
        if not with_image:
            raise NoSuchResource("nothing to show")
        return with_image[len(with_image) // 2]


def frame_list(text: str) -> list[int]:
    """``"1,3,5"`` -> [1, 3, 5] (PS3.18 10.4.1.1.4).

    Raises
    ------
    ValueError
        Not a comma-separated list of positive whole numbers.
    """
    numbers = [int(part) for part in text.split(",")]
    if not numbers or any(n < 1 for n in numbers) or len(numbers) > 10000:
        raise ValueError(f"bad frame list {text!r}")
    return numbers

