"""The secure file-set: file IDs, the DICOMDIR, the README, and reading a disc back.

One responsibility: lay Part 10 files out as a PS3.10 file-set in which every file, the
DICOMDIR included, is a Secure DICOM File (PS3.10 7.4, PS3.15 D.1), and walk such a
file-set to open it again.

- File IDs (PS3.10 8.2, 8.5): at most 8 components of 1 to 8 characters from ``A-Z 0-9 _``;
  pydicom's :class:`~pydicom.fileset.FileSet` assigns ``PTxxxxxx/STxxxxxx/SExxxxxx/IMxxxxxx``
  and builds the DICOMDIR's directory records (PS3.3 F.5). The records are computed from the
  instances' headers only (pixel data is never read for it), and the DICOMDIR is encoded in
  memory: nothing of an instance is written anywhere but, sealed, to the media.
- The instances themselves are sealed byte for byte as read from their source, so a round
  trip gives back identical files; the DICOMDIR is sealed like any other file.
- ``README.TXT`` at the root is the only plain file: what the media is and how to open it.
  It names no patient, study or date of an examination.
- Describing without a key is :mod:`securepacs.media.summary`.
- Reading: :class:`FolderMedia` (an image reads through :mod:`securepacs.media.image`),
  :func:`open_files` opens the DICOMDIR first and then every other file with one
  :class:`~securepacs.media.cms.Keyring`, so a password costs one PBKDF2 run per disc.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filebase import DicomFileLike
from pydicom.fileset import _PREFIXES, FileInstance, FileSet, RecordNode
from pydicom.uid import MediaStorageDirectoryStorage

from securepacs.errors import (
    IntegrityError,
    MalformedFileError,
    MediaError,
    UnsupportedMediaError,
    WrongKeyError,
)
from securepacs.media import cms
from securepacs.media.records import RecordFiller
from securepacs.media.viewer import is_viewer_path

__all__ = [
    "DICOMDIR",
    "DICOM_READ_ERRORS",
    "README",
    "UNPROTECTED",
    "FileResult",
    "FileSetPlan",
    "FolderMedia",
    "MediaSource",
    "Source",
    "check_dicomdir",
    "is_valid_file_id",
    "open_files",
    "plan_fileset",
    "protected_disc_refuses",
    "readme_text",
    "seal_fileset",
    "wrong_key_message",
]

DICOM_READ_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError, BytesLengthException, ValueError, EOFError, OSError, KeyError,
    TypeError, IndexError, AttributeError, RuntimeError, NotImplementedError, OverflowError,
    struct.error)
"""What pydicom raises on a damaged Part 10 file, when reading or when a value is first
accessed (``BytesLengthException``, found by tests/fuzz, derives from Exception only)."""

DICOMDIR = "DICOMDIR"
README = "README.TXT"
PROBE_FILES = 3
"""A key that opens none of the first this-many files tried is a wrong key (exit 2)."""

_COMPONENT = re.compile(r"[A-Z0-9_]{1,8}")


def is_valid_file_id(parts: Sequence[str]) -> bool:
    """PS3.10 8.2/8.5: 1 to 8 components, each 1 to 8 of ``A-Z 0-9 _``."""
    return 1 <= len(parts) <= 8 and all(_COMPONENT.fullmatch(p) for p in parts)


# --------------------------------------------------------------------------- writing


class Source(Protocol):
    """One Part 10 file to put on the media (a file in a folder, an archived instance)."""

    @property
    def label(self) -> str:
        """How an error names it (a path or a UID, never patient data)."""
        ...

    def read(self) -> bytes:
        """The complete Part 10 file."""
        ...


@dataclass(frozen=True)
class FileSetPlan:
    """Where each instance goes and the DICOMDIR that says so.

    Attributes
    ----------
    entries : tuple of (tuple of str, Source)
        File ID components and the source sealed there.
    dicomdir : bytes
        The plain DICOMDIR (Part 10), referencing every entry.
    skipped : tuple of (str, str)
        Sources left out, with the reason (not DICOM, a DICOMDIR, a duplicate).
    patients, studies, series : int
        Record counts.
    left_out : tuple of (str, str)
        DICOM instances left out because no directory record could be made for them,
        with the reason (a failure: the user asked for them).
    invented : tuple of (str, str)
        Instances whose directory records needed values the instance lacks, and the values
        filled in (:class:`~securepacs.media.records.RecordFiller`; the instance itself is
        unchanged).
    """

    entries: tuple[tuple[tuple[str, ...], Source], ...]
    dicomdir: bytes
    skipped: tuple[tuple[str, str], ...] = ()
    patients: int = 0
    studies: int = 0
    series: int = 0
    left_out: tuple[tuple[str, str], ...] = ()
    invented: tuple[tuple[str, str], ...] = ()

    @property
    def instances(self) -> int:
        return len(self.entries)


def _header(source: Source) -> Dataset | None:
    data = source.read()
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    try:
        return dcmread(BytesIO(data), stop_before_pixels=True)
    except DICOM_READ_ERRORS:
        return None


class _UniqueFileSet(FileSet):
    """pydicom's :class:`FileSet`, built for one write of a DICOMDIR that exists only in memory.

    :meth:`add_unique` is :meth:`FileSet.add` without its scan for a duplicate instance
    (:func:`plan_fileset` has already made the UIDs unique; the scan made building a file-set
    quadratic) and without staging a copy of each header in a temporary folder (no instance
    file is written here: the sources are sealed straight from where they are).
    :meth:`encode` assigns the File IDs as :meth:`FileSet.write` does and encodes the
    DICOMDIR to bytes, without copying staged files to a folder and reading it back.
    The directory records are pydicom's own (PS3.3 F.5), as is the DICOMDIR encoding.
    """

    def add_unique(self, ds: Dataset) -> FileInstance:
        records = self._recordify(ds)
        node = parent = RecordNode(next(records))
        for record in records:
            node = RecordNode(record)
            node.parent = parent
            parent = node
        instance = FileInstance(node)
        node.instance = instance
        _add_leaf(self._tree, node)
        self._instances.append(instance)
        return instance

    def encode(self) -> tuple[bytes, dict[int, tuple[str, ...]]]:
        """The DICOMDIR (Part 10 bytes) and each instance's File ID, by ``id(instance)``."""
        alphanumeric = len(self._instances) > 10**6  # as FileSet.write decides
        file_ids: dict[int, tuple[str, ...]] = {}

        def walk(node: RecordNode, parts: tuple[str, ...]) -> None:
            for index, child in enumerate(node.children):
                here = (*parts, _component(child, index, alphanumeric))
                if child.instance is not None:
                    file_ids[id(child.instance)] = here
                    child._record.ReferencedFileID = list(here)
                walk(child, here)

        walk(self._tree, ())
        self._use_alphanumeric = alphanumeric
        buffer = BytesIO()
        self._write_dicomdir(DicomFileLike(buffer))
        return buffer.getvalue(), file_ids


def _component(node: RecordNode, index: int, alphanumeric: bool) -> str:
    """pydicom's ``RecordNode.component`` for the node at `index` among its siblings.

    pydicom finds the index with ``list.index`` on every call, quadratic over a series.
    """
    record_type = node.record_type
    prefix = _PREFIXES[record_type]
    if record_type == "PRIVATE":
        prefix = f"{prefix}{node.depth}"
    chars = "0123456789ABCDEFGHIKLMNOPQRSTUVWXYZ" if alphanumeric else "0123456789"
    suffix = ""
    n = index
    while n:
        suffix += chars[n % len(chars)]
        n //= len(chars)
    return f"{prefix}{suffix[::-1]:>0{8 - len(prefix)}}"


def _add_leaf(tree: RecordNode, leaf: RecordNode) -> None:
    """pydicom's ``RecordNode.add`` with the two tests of its loop swapped.

    pydicom asks ``node in current`` before ``node.children``; for the instance record
    (no children) that is a scan of every sibling's key, so filling one series of N
    images was quadratic (two thirds of ``media create`` for 1,000 images). The tests
    have no side effects, so the result is the same.
    """
    node = leaf.root
    if node is tree:
        node = node.children[0]
    current = tree.root
    while node.children and node in current:
        current = current[node]
        node = node.children[0]
    node.parent = current


def plan_fileset(sources: Iterable[Source], *, fileset_id: str = "SECUREPACS",
                 progress: Callable[[int], None] | None = None) -> FileSetPlan:
    """Assign file IDs and build the DICOMDIR for `sources`.

    Parameters
    ----------
    sources : iterable of Source
        Part 10 files; others (no ``DICM`` prefix) and DICOMDIRs are skipped and reported.
    fileset_id : str
        The DICOMDIR's File-set ID (CS, at most 16 characters).
    progress : callable, optional
        Called with 1 after each source is read.

    Returns
    -------
    FileSetPlan

    Raises
    ------
    MediaError
        No source is a DICOM file for which a directory record could be made.
    """
    fs = _UniqueFileSet()
    fs.ID = fileset_id
    by_uid: dict[str, Source] = {}
    added: list[tuple[FileInstance, Source]] = []
    skipped: list[tuple[str, str]] = []
    left_out: list[tuple[str, str]] = []
    invented: list[tuple[str, str]] = []
    filler = RecordFiller()
    levels: tuple[set[str], set[str], set[str]] = (set(), set(), set())
    for source in sources:
        ds = _header(source)
        if progress is not None:
            progress(1)
        if ds is None:
            skipped.append((source.label, "not a DICOM Part 10 file"))
            continue
        meta = getattr(ds, "file_meta", None)
        if meta is not None and meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
            skipped.append((source.label, "a DICOMDIR (a new one is made)"))
            continue
        uid = str(getattr(ds, "SOPInstanceUID", ""))
        if uid in by_uid:
            skipped.append((source.label, f"same SOP Instance UID as {by_uid[uid].label}"))
            continue
        filled = filler.fill(ds)
        try:
            added.append((fs.add_unique(ds), source))
        except (ValueError, KeyError, AttributeError, NotImplementedError, TypeError) as exc:
            left_out.append((source.label, f"cannot make a directory record ({exc})"))
            continue
        if filled:
            invented.append((source.label, ", ".join(filled)))
        by_uid[uid] = source
        for seen, keyword in zip(levels, ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"),
                                 strict=True):
            seen.add(str(ds.get(keyword, "")))
    if not by_uid:
        if left_out:
            label, reason = left_out[0]
            raise MediaError(f"no instance could be put on the media: {label}: {reason}")
        raise MediaError("no DICOM Part 10 file among the sources")
    dicomdir, file_ids = fs.encode()
    entries = tuple((file_ids[id(instance)], source) for instance, source in added)
    del fs  # pydicom's own (empty) staging folder goes with the object
    for parts, source in entries:
        if not is_valid_file_id(parts):  # pragma: no cover - pydicom's IDs conform
            raise MediaError(f"{source.label}: file ID {'/'.join(parts)} breaks PS3.10 8.2")
    patients, studies, series = (len(seen) for seen in levels)
    return FileSetPlan(entries, dicomdir, tuple(skipped), patients, studies, series,
                       left_out=tuple(left_out), invented=tuple(invented))


def seal_fileset(plan: FileSetPlan, recipients: Sequence[cms.Recipient]
                 ) -> Iterator[tuple[str, bytes]]:
    """Seal every planned file, then the DICOMDIR; yield (relative path, Secure DICOM File).

    Each source is read again and sealed byte for byte (one fresh content key and IV each).
    """
    for parts, source in plan.entries:
        yield "/".join(parts), cms.seal(source.read(), recipients)
    yield DICOMDIR, cms.seal(plan.dicomdir, recipients)


def readme_text(*, instances: int, studies: int, recipient_kinds: Sequence[str],
                kdf_label: str | None, at: datetime, version: str,
                viewer: bool = False) -> str:
    """The plain README.TXT: what the media is and how to open it, no patient data.

    Parameters
    ----------
    instances, studies : int
        Counts only.
    recipient_kinds : sequence of str
        ``"password"``, ``"certificate"``, ``"escrow"``.
    kdf_label : str or None
        The PBKDF2 parameters when a password opens the media.
    at : datetime
        When the media was made (a parameter: nothing here reads the clock).
    version : str
        The securepacs version.
    viewer : bool
        The disc viewer (INDEX.HTM) is on the media.
    """
    ways = []
    if "password" in recipient_kinds:
        ways.append("- with the password, which is sent to you separately from this media\n"
                    "  (never on or with it).")
    if "certificate" in recipient_kinds:
        ways.append("- with the private key of a certificate it was addressed to.")
    if "escrow" in recipient_kinds:
        ways.append("- in an emergency, by the holder of the sending organisation's recovery\n"
                    "  (escrow) key; every such recovery is recorded.")
    lines = [
        "ENCRYPTED MEDICAL IMAGES",
        "",
    ]
    if viewer:
        lines += [
            "TO LOOK AT THE IMAGES: open INDEX.HTM (on this disc) in a web browser, such as",
            "Chrome, Edge or Firefox, and type the password. Nothing needs to be installed and",
            "nothing is sent anywhere. If the page asks for it, choose or drag the disc folder.",
            "",
        ]
    lines += [
        f"This media holds {instances} encrypted DICOM image file(s) of {studies} study(ies)",
        "and an encrypted DICOMDIR. Every file except this README is a Secure DICOM File",
        "(DICOM PS3.10 section 7.4, Basic DICOM Media Security Profile, PS3.15 Annex D.1):",
        "a CMS EnvelopedData (RFC 5652) encrypted with AES-256-CBC, holding a DigestedData",
        "(SHA-256) around the original DICOM file.",
        "",
        "It can be opened:",
        *ways,
        "",
        "How to open it:",
        *(["- any web browser: open INDEX.HTM (the viewer on this disc, see above);"]
          if viewer else []),
        "- securepacs:  securepacs media extract <this media> --to <folder> --password-file <file>",
        "- a DICOM viewer or importer that supports the DICOM Secure Media profile;",
        "- OpenSSL, one file at a time, for example:",
        "    openssl cms -decrypt -binary -inform DER -in DICOMDIR -pwri_password <password> \\",
        "        -out DICOMDIR.digested",
        "  The output is the CMS DigestedData; the DICOM file is its encapsulated content.",
        "",
    ]
    if kdf_label:
        lines += [f"Password key derivation: {kdf_label}, RFC 3211 PWRI-KEK.", ""]
    lines += [
        f"Written by securepacs {version} on {at.date().isoformat()}.",
        "If you received this media by mistake, please return it to the sender unopened.",
        "",
    ]
    return "\r\n".join(lines)


# --------------------------------------------------------------------------- reading


class MediaSource(Protocol):
    """Files of a disc: a folder, or an ISO 9660 image."""

    name: str

    def files(self) -> list[str]:
        """Relative paths (``/``-separated, as on the media), sorted."""
        ...

    def read(self, path: str) -> bytes:
        """The bytes of one file."""
        ...


class FolderMedia:
    """A file-set in a folder (a mounted disc, a USB stick, an unpacked copy).

    Parameters
    ----------
    root : Path
        The folder holding the DICOMDIR.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.name = str(self.root)
        if not self.root.is_dir():
            raise MediaError(f"{self.root} is not a folder")

    def files(self) -> list[str]:
        out = []
        for dirpath, _dirs, names in os.walk(self.root):
            for name in names:
                out.append(Path(dirpath, name).relative_to(self.root).as_posix())
        return sorted(out)

    def read(self, path: str) -> bytes:
        try:
            return (self.root / path).read_bytes()
        except OSError as exc:
            raise MalformedFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def secure_paths(media: MediaSource) -> list[str]:
    """Every file of `media` but the plain ones (README, disc viewer), the DICOMDIR first."""
    paths = [p for p in media.files() if p.upper() != README and not is_viewer_path(p)]
    dicomdir = [p for p in paths if p.upper() == DICOMDIR]
    return dicomdir + [p for p in paths if p.upper() != DICOMDIR]


@dataclass(frozen=True)
class FileResult:
    """One file of the media, opened or not.

    Attributes
    ----------
    path : str
        Relative path on the media.
    opened : cms.Opened or None
        The decrypted file when it opened and verified.
    error : MediaError or None
        Why not (the message names the file).
    """

    path: str
    opened: cms.Opened | None = None
    error: MediaError | None = None


def wrong_key_message(keyring: cms.Keyring) -> str:
    """The one line a person reads when nothing opens."""
    if keyring.has_password and keyring.keys:
        return "neither the password nor the key opens this media"
    if keyring.has_password:
        return "the password does not open this media"
    return "the key does not open this media"


def _named(path: str, exc: MediaError) -> MediaError:
    return type(exc)(f"{path}: {exc}")


UNPROTECTED = ("integrity not protected: the file holds plain id-data, no digest to check "
               "(written by another program; an alteration would go unnoticed)")
"""What :func:`open_files` callers show for a file opened without a digest to check."""


def protected_disc_refuses(path: str) -> IntegrityError:
    """The error for an id-data file on a disc whose DICOMDIR is integrity protected."""
    return IntegrityError(
        f"{path}: claims unprotected id-data content on media whose DICOMDIR is protected by "
        "a digest (a writer that protects one file protects all): its content type was "
        "altered (tampered)")


def open_files(media: MediaSource, keyring: cms.Keyring,
               paths: Sequence[str] | None = None) -> Iterator[FileResult]:
    """Open every Secure DICOM File of `media`, the DICOMDIR first.

    A file that no recipient opens is a wrong key while nothing has opened yet; once the same
    keyring has opened another file of the disc it is a damaged file instead.

    Integrity (PS3.15 D.1.1): each file opened says whether its digest was checked
    (:attr:`cms.Opened.integrity`). :func:`cms.open_file` refuses a file written by securepacs
    (its key carries :data:`cms.INTEGRITY_MARK`) that claims unprotected content; here, in
    addition, once the DICOMDIR opened with a verified digest every other file must too, and
    one that claims unprotected content is yielded as an :class:`IntegrityError` (tampered).
    Files of other writers (GDCM writes id-data) open unprotected; callers warn about them.

    Parameters
    ----------
    media : MediaSource
        The disc.
    keyring : cms.Keyring
        Password and/or private keys, one for the whole disc.
    paths : sequence of str, optional
        Defaults to :func:`secure_paths`.

    Yields
    ------
    FileResult
        One per file, the errors named.

    Raises
    ------
    WrongKeyError
        The keyring opened none of the first :data:`PROBE_FILES` files it recognised (or none
        at all); raised before any file is yielded as opened.
    """
    proven = False
    protected = False  # the DICOMDIR's digest was verified: every file must have one
    pending: list[tuple[str, WrongKeyError]] = []
    for path in secure_paths(media) if paths is None else paths:
        try:
            opened = cms.open_file(media.read(path), keyring)
        except WrongKeyError as exc:
            if proven:
                yield FileResult(path, error=IntegrityError(
                    f"{path}: no recipient opens this file although the same key opened the "
                    "others: it was altered or damaged"))
                continue
            pending.append((path, exc))
            if len(pending) >= PROBE_FILES:
                raise WrongKeyError(wrong_key_message(keyring)) from None
            continue
        except (MalformedFileError, IntegrityError, UnsupportedMediaError) as exc:
            yield FileResult(path, error=_named(path, exc))
            continue
        if not proven:
            proven = True
            for earlier, _exc in pending:
                yield FileResult(earlier, error=IntegrityError(
                    f"{earlier}: no recipient opens this file although the same key opened "
                    "the others: it was altered or damaged"))
            pending.clear()
        if path.upper() == DICOMDIR and opened.integrity == "verified":
            protected = True
        elif protected and opened.integrity != "verified":
            yield FileResult(path, error=protected_disc_refuses(path))
            continue
        yield FileResult(path, opened=opened)
    if pending:
        raise WrongKeyError(wrong_key_message(keyring))


def _referenced(dicomdir: bytes) -> dict[str, str]:
    ds = dcmread(BytesIO(dicomdir))
    out = {}
    for record in ds.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if file_id is None:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        out[_printable("/".join(parts).upper())] = _printable(
            str(record.get("ReferencedSOPInstanceUIDInFile", "")))
    return out


def _printable(text: str) -> str:
    """`text` with control characters escaped: a damaged DICOMDIR's values reach a terminal."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def check_dicomdir(dicomdir: bytes, instances: dict[str, str]) -> list[str]:
    """Problems between a decrypted DICOMDIR and the files opened.

    Parameters
    ----------
    dicomdir : bytes
        The plain DICOMDIR.
    instances : dict of str to str
        Relative path on the media to the SOP Instance UID found inside.

    Returns
    -------
    list of str
        One line per problem (a record whose file is missing or holds another instance, a
        file no record references); empty when the DICOMDIR and the files agree.
    """
    try:
        referenced = _referenced(dicomdir)
    except DICOM_READ_ERRORS as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return [f"{DICOMDIR}: not a valid DICOMDIR ({detail})"]
    found = {path.upper(): uid for path, uid in instances.items()}
    problems = []
    for path, uid in sorted(referenced.items()):
        if path not in found:
            problems.append(f"{path}: referenced by the DICOMDIR but missing or unreadable")
        elif uid and found[path] != uid:
            problems.append(f"{path}: holds SOP Instance {found[path]}, the DICOMDIR says {uid}")
    for path in sorted(set(found) - set(referenced)):
        problems.append(f"{path}: not referenced by the DICOMDIR")
    return problems
