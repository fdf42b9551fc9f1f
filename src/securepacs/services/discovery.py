"""Finding the DICOM instances to send: files, folders (recursive) and zip archives.

One responsibility: turn the paths a user names into :class:`Instance` records (SOP Class,
SOP Instance, Transfer Syntax and where the data set starts) by reading only the File Meta
Information (PS3.10 7.1), and to count what is not a DICOM file. The data sets themselves
are not parsed here, so discovering thousands of files costs a few hundred bytes each.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

if TYPE_CHECKING:  # imported when a file is not a Part 10 file (start-up of send)
    import zipfile

#: Media Storage Directory Storage (PS3.4 Annex F): a DICOMDIR is not an instance to send.
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_MAX_META = 1 << 20  # a File Meta Information group larger than this is not believable
_HEAD = 8192  # bytes of the data set read to find its SOP Class / Instance UIDs
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")


class NotPart10Error(ValueError):
    """The bytes are not a DICOM Part 10 file (no preamble + ``DICM``, or a bad meta group)."""


@dataclass(frozen=True)
class FileMeta:
    """What the File Meta Information says about the instance, and where the data set starts."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset_offset: int


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise NotPart10Error("file ends inside the File Meta Information")
    return data


def read_meta(stream: BinaryIO) -> FileMeta:
    """Parse the preamble, ``DICM`` and the group 0002 elements of a Part 10 stream.

    The group is walked element by element (Explicit VR Little Endian, PS3.10 7.1) rather
    than trusting (0002,0000) File Meta Information Group Length, which some writers get
    wrong. The stream is left somewhere after the group.

    Parameters
    ----------
    stream : binary stream
        Positioned at the start of the file.

    Returns
    -------
    FileMeta

    Raises
    ------
    NotPart10Error
        Not a Part 10 file, or one without (0002,0002), (0002,0003) or (0002,0010).
    """
    head = stream.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise NotPart10Error("no DICOM preamble (not a DICOM Part 10 file)")
    values: dict[int, str] = {}
    offset = 132
    while True:
        tag_bytes = stream.read(8)
        if len(tag_bytes) < 8:
            if len(tag_bytes) == 0 and values:
                break  # meta only, no data set
            raise NotPart10Error("file ends inside the File Meta Information")
        group, element = struct.unpack("<HH", tag_bytes[:4])
        if group != 0x0002:
            break
        vr = tag_bytes[4:6]
        if vr in _LONG_VRS:
            length = struct.unpack("<I", _read(stream, 4))[0]
            header = 12
        else:
            length = struct.unpack("<H", tag_bytes[6:8])[0]
            header = 8
        if length > _MAX_META or offset > _MAX_META:
            raise NotPart10Error("implausible File Meta Information")
        value = _read(stream, length)
        offset += header + length
        if element in (0x0002, 0x0003, 0x0010):
            values[element] = value.decode("ascii", "replace").rstrip("\x00 ")
    missing = [name for element, name in ((0x0002, "Media Storage SOP Class UID"),
                                           (0x0003, "Media Storage SOP Instance UID"),
                                           (0x0010, "Transfer Syntax UID"))
               if not values.get(element)]
    if missing:
        raise NotPart10Error(f"File Meta Information without {', '.join(missing)}")
    return FileMeta(values[0x0002], values[0x0003], values[0x0010], offset)


def dataset_uids(head: bytes, transfer_syntax_uid: str) -> tuple[str, str] | None:
    """SOP Class and SOP Instance UID (0008,0016), (0008,0018) from the start of a data set.

    Walks the first elements of `head` (the first bytes of the data set, in its transfer
    syntax: implicit or explicit VR, little or big endian, deflated) up to (0008,0018) without
    decoding anything else, as DCMTK's storescu reads them. None when they cannot be found
    there (a sequence of undefined length before them, or `head` too short).
    """
    if transfer_syntax_uid in _DEFLATED:
        try:
            head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(head, _HEAD)
        except zlib.error:
            return None
    implicit = transfer_syntax_uid == _IMPLICIT_LE
    order = ">" if transfer_syntax_uid == _EXPLICIT_BE else "<"
    found: dict[int, str] = {}
    pos = 0
    while pos + 8 <= len(head):
        group, element = struct.unpack(order + "HH", head[pos:pos + 4])
        if (group, element) > (0x0008, 0x0018):
            break
        if implicit:
            length = struct.unpack(order + "I", head[pos + 4:pos + 8])[0]
            pos += 8
        elif head[pos + 4:pos + 6] in _LONG_VRS:
            if pos + 12 > len(head):
                return None
            length = struct.unpack(order + "I", head[pos + 8:pos + 12])[0]
            pos += 12
        else:
            length = struct.unpack(order + "H", head[pos + 6:pos + 8])[0]
            pos += 8
        if length == 0xFFFFFFFF or pos + length > len(head):
            return None
        if group == 0x0008 and element in (0x0016, 0x0018):
            found[element] = head[pos:pos + length].decode("ascii", "replace").rstrip("\x00 ")
        pos += length
    if 0x0016 in found and 0x0018 in found:
        return found[0x0016], found[0x0018]
    return None


@dataclass(frozen=True)
class Instance:
    """One instance found on disk or in an archive.

    Attributes
    ----------
    label : str
        For messages: the path, or ``archive.zip!member``.
    path : pathlib.Path
        The file, or the archive holding it.
    member : str or None
        The member name inside the zip archive at `path`, if any.
    sop_class_uid, sop_instance_uid : str
        From the data set (what C-STORE must name, PS3.4 B.2), as DCMTK's storescu does; the
        File Meta Information's only when the data set's cannot be read cheaply.
    transfer_syntax_uid : str
        From the File Meta Information.
    offset, length : int
        Where the data set starts in the file (or member) and how many bytes it has.
    meta_disagrees : str
        Empty, or how the File Meta Information's UIDs differ from the data set's.
    """

    label: str
    path: Path
    member: str | None
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    offset: int
    length: int
    meta_disagrees: str = ""

    @property
    def pair(self) -> tuple[str, str]:
        """(SOP Class UID, Transfer Syntax UID): what a presentation context must carry."""
        return self.sop_class_uid, self.transfer_syntax_uid


@dataclass
class Discovery:
    """What :func:`discover` found: instances to send and what was skipped (with why)."""

    instances: list[Instance] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(i.length for i in self.instances)


def _walk(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        else:
            yield path


def _from_stream(label: str, path: Path, member: str | None, stream: BinaryIO,
                 size: int) -> Instance:
    meta = read_meta(stream)
    if meta.sop_class_uid == MEDIA_STORAGE_DIRECTORY:
        raise NotPart10Error("a DICOMDIR (media directory), not an instance")
    sop_class, sop_instance, disagrees = meta.sop_class_uid, meta.sop_instance_uid, ""
    stream.seek(meta.dataset_offset)
    uids = dataset_uids(stream.read(_HEAD), meta.transfer_syntax_uid)
    if uids is not None and uids != (sop_class, sop_instance):
        differences = [f"{what} {m} in the File Meta, {d} in the data set"
                       for what, m, d in (("SOP Class UID", sop_class, uids[0]),
                                          ("SOP Instance UID", sop_instance, uids[1]))
                       if m != d]
        sop_class, sop_instance, disagrees = uids[0], uids[1], "; ".join(differences)
    return Instance(label, path, member, sop_class, sop_instance, meta.transfer_syntax_uid,
                    meta.dataset_offset, size - meta.dataset_offset, disagrees)


def _scan_zip(path: Path, found: Discovery) -> bool:
    """The instances of the zip archive `path` added to `found`; False if it is no zip archive."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        found.skipped.append((str(path), f"cannot read: {exc}"))
        return True
    with archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if info.is_dir():
                continue
            label = f"{path}!{info.filename}"
            try:
                with archive.open(info) as member:
                    stream = cast(BinaryIO, member)
                    found.instances.append(_from_stream(label, path, info.filename, stream,
                                                        info.file_size))
            except NotPart10Error as exc:
                found.skipped.append((label, str(exc)))
            except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
                found.skipped.append((label, f"cannot read from the archive: {exc}"))
    return True


def discover(paths: Iterable[Path]) -> Discovery:
    """Find every DICOM Part 10 instance under `paths` (files, folders, zip archives).

    Folders are walked recursively in name order; a zip archive (anywhere) is opened and
    its members examined the same way (archives inside archives are not). Everything that
    is not a Part 10 file, a DICOMDIR included, is skipped and listed with the reason.

    Parameters
    ----------
    paths : iterable of pathlib.Path
        What the user named.

    Returns
    -------
    Discovery

    Raises
    ------
    FileNotFoundError
        A named path does not exist.
    """
    paths = list(paths)
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
    found = Discovery()
    for path in _walk(paths):
        label = str(path)
        try:
            with open(path, "rb") as stream:
                try:
                    found.instances.append(_from_stream(label, path, None, stream,
                                                        os.fstat(stream.fileno()).st_size))
                    continue
                except NotPart10Error as exc:
                    reason = str(exc)
            if not _scan_zip(path, found):
                found.skipped.append((label, reason))
        except OSError as exc:
            found.skipped.append((label, f"cannot read: {exc}"))
    return found


class Sources:
    """Opens the data set of an :class:`Instance`; zip archives stay open, one lock each."""

    def __init__(self) -> None:
        self._archives: dict[Path, tuple[zipfile.ZipFile, threading.Lock]] = {}
        self._lock = threading.Lock()

    def _archive(self, path: Path) -> tuple[zipfile.ZipFile, threading.Lock]:
        import zipfile

        with self._lock:
            entry = self._archives.get(path)
            if entry is None:
                entry = (zipfile.ZipFile(path), threading.Lock())
                self._archives[path] = entry
            return entry

    def read_file(self, instance: Instance) -> bytes:
        """The whole Part 10 file (File Meta Information included)."""
        if instance.member is None:
            return instance.path.read_bytes()
        archive, lock = self._archive(instance.path)
        with lock:
            return archive.read(instance.member)

    def open_dataset(self, instance: Instance) -> BinaryIO:
        """A stream positioned at the data set: the file itself, or the member's bytes."""
        if instance.member is None:
            stream = open(instance.path, "rb")
            stream.seek(instance.offset)
            return stream
        data = BytesIO(self.read_file(instance))
        data.seek(instance.offset)
        return data

    def close(self) -> None:
        with self._lock:
            for archive, _ in self._archives.values():
                archive.close()
            self._archives.clear()
