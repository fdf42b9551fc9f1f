"""Reading encrypted media back: what it declares, its files decrypted into a folder, or
every digest and DICOMDIR reference checked (PS3.10 7.4, PS3.15 Annex D.1).

One responsibility: :func:`media_info`, :func:`extract_media` and :func:`verify_media`
over a folder or an ISO 9660 image (:func:`open_media`) with a keyring of a password
and/or private keys (:func:`keyring_from`). A wrong password or key raises
:class:`~securepacs.errors.WrongKeyError` before any plaintext is written; output goes
through a staging folder (:mod:`securepacs.services.media_output`). Emergency recovery
with the escrow key is :mod:`securepacs.services.media_recovery`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread

from securepacs.errors import MediaError, MediaUsageError, PkiError
from securepacs.media import cms, fileset, summary
from securepacs.media.fileset import FileResult, FolderMedia, MediaSource
from securepacs.media.image import IsoMedia
from securepacs.pki import authority
from securepacs.services.media_output import (
    NO_PROGRESS,
    Progress,
    check_target,
    publish,
    staging,
    write_file,
)

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["ExtractReport", "VerifyReport", "extract_from", "extract_media", "keyring_from",
           "media_info", "open_media", "verify_media"]


@contextlib.contextmanager
def open_media(path: Path) -> Iterator[MediaSource]:
    """The media at `path`: a folder (mounted disc, USB stick) or an ISO 9660 image file."""
    path = Path(path)
    if path.is_dir():
        yield FolderMedia(path)
        return
    if not path.is_file():
        raise MediaUsageError(f"{path} does not exist")
    with IsoMedia(path) as media:
        yield media


def keyring_from(*, password: str | None = None, keys: Sequence[Path] = (),
                 certificates: Sequence[Path] = (),
                 key_passphrase: bytes | None = None) -> cms.Keyring:
    """A keyring from a password and/or private key files.

    A key file may also hold its certificate (PEM); a certificate file given in
    `certificates` is matched to the keys as well. Certificates make the match exact.
    `key_passphrase` decrypts encrypted key files (PKCS #8).

    Raises
    ------
    MediaUsageError
        A key that cannot be loaded or is not RSA.
    MediaError
        No password and no key.
    """
    certs: list[x509.Certificate] = []
    for path in [*keys, *certificates]:
        with contextlib.suppress(PkiError):
            certs += authority.load_certificates(path)
    loaded = []
    for path in keys:
        try:
            key = authority.load_private_key(path, key_passphrase)
        except PkiError as exc:
            raise MediaUsageError(str(exc)) from exc
        mine = [c for c in certs if c.public_key() == key.public_key()]
        try:
            loaded.append(cms.RecipientKey(key, mine[0] if mine else None))  # type: ignore[arg-type]
        except ValueError as exc:
            raise MediaUsageError(f"{path}: {exc}") from exc
    octets = None
    if password is not None:
        octets = password.encode("ascii") if password.isascii() else password.encode("utf-8")
    try:
        return cms.Keyring(password=octets, keys=loaded)
    except ValueError as exc:
        raise MediaError(str(exc)) from exc


def media_info(path: Path) -> summary.MediaSummary:
    """What the media declares, without any key (recipients, algorithms, sizes)."""
    with open_media(path) as media:
        return summary.summarize(media)


@dataclass
class ExtractReport:
    """What :func:`extract_media` (or :func:`recover_media`) wrote and what failed.

    Attributes
    ----------
    verified : int
        Files written whose digest was checked (integrity verified).
    unprotected : list of str
        Files written that carried no digest (id-data from another writer): their integrity
        is not protected, which the caller must say.
    """

    target: Path | None
    written: int = 0
    failures: list[str] = field(default_factory=list)
    dicomdir_problems: list[str] = field(default_factory=list)
    derivations: int = 0
    verified: int = 0
    unprotected: list[str] = field(default_factory=list)


def _sop_uid(content: bytes) -> str:
    try:
        return str(dcmread(BytesIO(content), stop_before_pixels=True).get("SOPInstanceUID", ""))
    except fileset.DICOM_READ_ERRORS:
        return ""


def _walk(media: MediaSource, keyring: cms.Keyring, progress: Progress,
          on_first: Callable[[], None] | None = None) -> Iterator[FileResult]:
    paths = fileset.secure_paths(media)
    progress.begin("Decrypting", len(paths))
    first = True
    try:
        for result in fileset.open_files(media, keyring, paths):
            if result.opened is not None and first:
                first = False
                if on_first is not None:
                    on_first()
            progress.advance()
            yield result
    finally:
        progress.end()


def extract_from(media: MediaSource, to: Path, keyring: cms.Keyring, *, keep_going: bool,
                 progress: Progress, on_first: Callable[[], None] | None = None) -> ExtractReport:
    """:func:`extract_media` on an open :class:`MediaSource`.

    Parameters
    ----------
    on_first : callable, optional
        Called once, when the first file has opened and before anything is written (the
        emergency recovery writes its audit record there; if it raises, nothing is written).
    """
    check_target(to, folder=True)
    report = ExtractReport(to)
    uids: dict[str, str] = {}
    dicomdir: bytes | None = None
    with staging(to) as temp:
        for result in _walk(media, keyring, progress, on_first):
            if result.error is not None:
                if not keep_going:
                    raise result.error
                report.failures.append(str(result.error))
                continue
            assert result.opened is not None
            content = result.opened.content
            is_dicomdir = result.path.upper() == fileset.DICOMDIR
            write_file(temp, fileset.DICOMDIR if is_dicomdir else result.path, content)
            report.written += 1
            if result.opened.integrity == "verified":
                report.verified += 1
            else:
                report.unprotected.append(result.path)
            if is_dicomdir:
                dicomdir = content
            else:
                uids[result.path] = _sop_uid(content)
        if dicomdir is not None:
            report.dicomdir_problems = [
                p for p in fileset.check_dicomdir(dicomdir, uids)
                if not any(p.startswith(f.split(":", 1)[0] + ":") for f in report.failures)]
        publish(temp, to, mode=0o700)
    report.derivations = keyring.derivations
    return report


def extract_media(path: Path, to: Path, keyring: cms.Keyring, *, keep_going: bool = False,
                  progress: Progress = NO_PROGRESS) -> ExtractReport:
    """Decrypt every file of the media into a new folder: plain Part 10 files and DICOMDIR.

    Parameters
    ----------
    path : Path
        The media (folder or ISO image).
    to : Path
        Folder to create (absent or empty).
    keyring : cms.Keyring
        Password and/or private keys.
    keep_going : bool
        Skip files that fail (named in the report) instead of stopping at the first.

    Raises
    ------
    WrongKeyError
        The key opens nothing: nothing is written.
    IntegrityError, MalformedFileError, UnsupportedMediaError
        Without `keep_going`, the first file that fails (named): nothing is written.
    """
    with open_media(path) as media:
        return extract_from(media, Path(to), keyring, keep_going=keep_going, progress=progress)


@dataclass
class VerifyReport:
    """What :func:`verify_media` found.

    A file that opens but carries no digest (id-data) is a failure here: verifying is
    checking integrity, and such a file has none to check.
    """

    checked: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    dicomdir_problems: list[str] = field(default_factory=list)
    derivations: int = 0

    @property
    def passed(self) -> bool:
        return not self.failures and not self.dicomdir_problems


def verify_media(path: Path, keyring: cms.Keyring, *,
                 progress: Progress = NO_PROGRESS) -> VerifyReport:
    """Decrypt every file, check every digest and the DICOMDIR's references; write nothing.

    Any file without a digest to check (integrity not protected) fails verification.

    Raises
    ------
    WrongKeyError
        The key opens nothing.
    """
    report = VerifyReport()
    uids: dict[str, str] = {}
    dicomdir: bytes | None = None
    with open_media(path) as media:
        for result in _walk(media, keyring, progress):
            report.checked += 1
            if result.error is not None:
                report.failures.append(str(result.error))
                continue
            assert result.opened is not None
            if result.opened.integrity != "verified":
                report.failures.append(f"{result.path}: {fileset.UNPROTECTED}")
            else:
                report.ok += 1
            if result.path.upper() == fileset.DICOMDIR:
                dicomdir = result.opened.content
            else:
                uids[result.path] = _sop_uid(result.opened.content)
    failed = {f.split(":", 1)[0].upper() for f in report.failures}
    if dicomdir is not None:
        report.dicomdir_problems = [p for p in fileset.check_dicomdir(dicomdir, uids)
                                    if p.split(":", 1)[0].upper() not in failed]
    elif fileset.DICOMDIR not in failed:
        report.dicomdir_problems = ["the media has no DICOMDIR"]
    report.derivations = keyring.derivations
    return report
