"""Making encrypted media: a secure file-set (PS3.10 7.4, PS3.15 Annex D.1) from folders
and/or archived studies, in a folder or an ISO 9660 image.

One responsibility: :func:`create_media` takes Part 10 files from folders and/or archived
studies (through the small :class:`StudyArchive` Protocol), checks the password (PS3.15
D.1.1) and the certificates (at a given time), seals everything and writes the result
through a staging folder (:mod:`securepacs.services.media_output`). Passwords are never
logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Protocol

from pydicom.dataset import Dataset

from securepacs import __version__
from securepacs.errors import MediaError, MediaUsageError, PkiError
from securepacs.media import cms, fileset, image, passwords
from securepacs.media import viewer as media_viewer
from securepacs.media.fileset import Source
from securepacs.media.pwri import DEFAULT_ITERATIONS
from securepacs.model.levels import Root
from securepacs.model.tenancy import Visibility
from securepacs.pki import authority
from securepacs.services.deidentify import Deidentifier, deidentified_sources
from securepacs.services.media_output import (
    NO_PROGRESS,
    Progress,
    check_target,
    publish,
    staging,
    write_file,
)
from securepacs.services.query import RetrieveService

log = logging.getLogger(__name__)

__all__ = ["CreateReport", "FileSource", "RetrieveStudies", "StudyArchive", "create_media"]

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class StudyArchive(Protocol):
    """The archive's instances of a study, each readable as its stored Part 10 bytes."""

    def study_instances(self, study_uid: str) -> Sequence[Source]: ...


@dataclass(frozen=True)
class FileSource:
    """A Part 10 file on disk, labelled by its path (as :class:`fileset.Source`)."""

    path: Path
    label: str

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise MediaError(f"cannot read {self.label}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class _StoredSource:
    label: str
    reader: Callable[[], bytes]

    def read(self) -> bytes:
        return self.reader()


class RetrieveStudies:
    """:class:`StudyArchive` over :class:`RetrieveService`: the lookup C-MOVE uses.

    Parameters
    ----------
    retrieve : RetrieveService
        Index and blob store of the archive.
    close : callable, optional
        Called by :meth:`close` (the composition root passes the index's close).
    visibility : Visibility, optional
        What the disc may hold. Default: every organisation's studies, since ``media
        create --study`` runs as the local operator, who holds the data folder and the
        database anyway; ``--org`` gives that organisation's view for retrieving (its
        own studies and those fully shared with it, docs/tenants.md).
    """

    def __init__(self, retrieve: RetrieveService, close: Callable[[], None] | None = None,
                 visibility: Visibility | None = None):
        self._retrieve = retrieve
        self._close = close
        self._visibility = visibility or Visibility.all()
        #: owner organisation -> study UIDs read that the visibility's organisation does
        #: not own (shared with it): what the audit trail records as cross-organisation
        self.foreign: dict[str, list[str]] = {}

    @property
    def organization(self) -> str:
        """The organisation whose view this is ("" for every organisation's)."""
        return "" if self._visibility.everything else self._visibility.organization

    def study_instances(self, study_uid: str) -> Sequence[Source]:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study_uid
        found = self._retrieve.instances(identifier, Root.STUDY, visibility=self._visibility)
        others = {i.organization for i in found if self.organization
                  and i.organization != self.organization}
        for owner in sorted(others):  # a study shared with this organisation
            uids = self.foreign.setdefault(owner, [])
            if study_uid not in uids:
                uids.append(study_uid)
        return [_StoredSource(f"study {study_uid} instance {inst.sop_instance_uid}",
                              partial(self._retrieve.read, inst)) for inst in found]

    def close(self) -> None:
        if self._close is not None:
            self._close()


@dataclass(frozen=True)
class CreateReport:
    """What :func:`create_media` wrote."""

    target: Path
    iso: bool
    instances: int
    patients: int
    studies: int
    series: int
    bytes_written: int
    recipients: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    fits: str = ""
    patient_ids: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    viewer: bool = False
    left_out: tuple[tuple[str, str], ...] = ()
    invented: tuple[tuple[str, str], ...] = ()
    burned_in: tuple[tuple[str, str], ...] = ()  # left out by de-identification, by design


def _folder_sources(folder: Path) -> list[Source]:
    if not folder.is_dir():
        raise MediaError(f"{folder} is not a folder")
    out: list[Source] = []
    for dirpath, _dirs, names in os.walk(folder):
        for name in sorted(names):
            path = Path(dirpath, name)
            out.append(FileSource(path, str(path)))
    return out


def _certificate(path: Path, *, at: datetime, oaep: bool, what: str) -> cms.CertificateRecipient:
    try:
        cert = authority.load_certificates(path)[0]
    except PkiError as exc:
        raise MediaUsageError(str(exc)) from exc
    try:
        cms.check_certificate(cert, at=at)
        return cms.CertificateRecipient(cert, oaep=oaep)
    except (TypeError, ValueError) as exc:
        raise MediaError(f"{what} {path}: {exc}") from exc


def create_media(
    *,
    folders: Sequence[Path] = (),
    studies: Sequence[str] = (),
    archive: StudyArchive | None = None,
    out_dir: Path | None = None,
    iso: Path | None = None,
    password: str | None = None,
    recipients: Sequence[Path] = (),
    escrow: Sequence[Path] = (),
    oaep: bool = True,
    escrow_oaep: bool = False,
    viewer: bool = True,
    at: datetime,
    iterations: int = DEFAULT_ITERATIONS,
    fileset_id: str = "SECUREPACS",
    progress: Progress = NO_PROGRESS,
    deidentify: Deidentifier | None = None,
) -> CreateReport:
    """Make an encrypted file-set (PS3.10 7.4) in a folder or an ISO 9660 image.

    Parameters
    ----------
    folders : sequence of Path
        Folders of Part 10 files (searched recursively; other files are skipped and reported).
    studies : sequence of str
        Study Instance UIDs to take from `archive`.
    archive : StudyArchive, optional
        Needed when `studies` is not empty.
    out_dir, iso : Path, optional
        Exactly one: the folder to create (absent or empty), or the image file to create.
    password : str, optional
        Checked with :func:`securepacs.media.passwords.check_new_password`.
    recipients, escrow : sequence of Path
        PEM/DER files of RSA certificates: named recipients, and the escrow key(s) for
        emergency recovery. Each must be valid at `at`.
    oaep : bool
        RSAES-OAEP (SHA-256) for the certificate recipients (the default: browsers have no
        RSAES-PKCS1-v1_5, so the disc viewer needs OAEP); False writes rsaEncryption.
    escrow_oaep : bool
        The same for the escrow recipients (default rsaEncryption: `media recover` opens both).
    viewer : bool
        Write the disc viewer (INDEX.HTM and VIEWER/) beside the file-set
        (:mod:`securepacs.media.viewer`; raises MediaError when it is not built).
    at : datetime
        Now, for certificate validity and the README date.
    iterations : int
        PBKDF2 iterations (default 600,000; tests pass fewer, the CLI never does).
    fileset_id : str
        The DICOMDIR's File-set ID.
    progress : Progress
        Receives progress of reading and sealing.
    deidentify : Deidentifier, optional
        De-identify every instance on its way onto the disc (PS3.15 Annex E, one UID map
        for the disc); instances it leaves out (burned-in annotation) are reported in
        ``left_out``.

    Returns
    -------
    CreateReport

    Raises
    ------
    PasswordRefusedError
        The password breaks the rules (the message says why).
    MediaError
        Bad arguments, unreadable or unusable certificates, no DICOM input, write failures.
    """
    if (out_dir is None) == (iso is None):
        raise MediaError("give exactly one of an output folder or an ISO image file")
    if password is None and not recipients:
        raise MediaError("give a password or at least one --recipient certificate "
                         "(an escrow key alone would leave only emergency access)")
    if studies and archive is None:
        raise MediaError("--study needs the archive (its data folder)")
    target = Path(out_dir if out_dir is not None else iso)  # type: ignore[arg-type]
    check_target(target, folder=out_dir is not None)
    for uid in studies:
        if not _UID.fullmatch(uid) or len(uid) > 64:
            raise MediaError(f"{uid!r} is not a Study Instance UID")

    viewer_files = media_viewer.viewer_files() if viewer else []
    sealed_for: list[cms.Recipient] = []
    kinds: list[str] = []
    kdf_label = None
    certs = [_certificate(p, at=at, oaep=oaep, what="recipient certificate") for p in recipients]
    escrows = [_certificate(p, at=at, oaep=escrow_oaep, what="escrow certificate")
               for p in escrow]
    if password is not None:
        octets = passwords.check_new_password(password)
        progress.begin("Deriving the password key (PBKDF2, once per disc)", None)
        pw = cms.PasswordRecipient.derive(octets, iterations=iterations)
        progress.end()
        sealed_for.append(pw)
        kinds.append("password")
        kdf_label = pw.kdf.label
    sealed_for += certs + escrows
    kinds += ["certificate"] * len(certs) + ["escrow"] * len(escrows)

    sources: list[Source] = []
    for folder in folders:
        sources += _folder_sources(Path(folder))
    for uid in studies:
        assert archive is not None
        found = archive.study_instances(uid)
        if not found:
            raise MediaError(f"study {uid} is not in the archive")
        sources += found
    if not sources:
        raise MediaError("nothing to write: no files in the given folders and no --study")
    dropped: tuple[tuple[str, str], ...] = ()
    if deidentify is not None:
        sources, dropped = deidentified_sources(sources, deidentify)
        if not sources:
            raise MediaError("nothing to write: every instance carries burned-in annotation "
                             "(--include-burned-in exports them anyway)")

    progress.begin("Reading headers", len(sources))
    plan = fileset.plan_fileset(sources, fileset_id=fileset_id, progress=progress.advance)
    progress.end()
    for label, reason in plan.skipped:
        log.info("skipped %s: %s", label, reason)
    for label, reason in plan.left_out:
        log.warning("left out %s: %s", label, reason)

    total = 0
    readme = fileset.readme_text(instances=plan.instances, studies=plan.studies,
                                 recipient_kinds=kinds, kdf_label=kdf_label, at=at,
                                 version=__version__, viewer=bool(viewer_files))
    folder_target = target if out_dir is not None else target.with_name(target.name + ".d")
    with staging(folder_target) as temp:
        progress.begin("Encrypting", plan.instances + 1)
        for rel, data in fileset.seal_fileset(plan, sealed_for):
            write_file(temp, rel, data)
            total += len(data)
            progress.advance()
        progress.end()
        write_file(temp, fileset.README, readme.encode("ascii"))
        total += len(readme)
        for rel, data in viewer_files:
            write_file(temp, rel, data)
            total += len(data)
        fits = ""
        if out_dir is not None:
            publish(temp, target, mode=0o755)
        else:
            partial_iso = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}"
            try:
                progress.begin("Writing the ISO 9660 image", None)
                total = image.write_iso(temp, partial_iso)
                progress.end()
                os.replace(partial_iso, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    partial_iso.unlink()
                raise
            finally:
                shutil.rmtree(temp, ignore_errors=True)
            fits = image.fits(total)
    patient_ids, study_uids = _identities(plan.dicomdir)
    return CreateReport(target, iso is not None, plan.instances, plan.patients, plan.studies,
                        plan.series, total, tuple(kinds), plan.skipped, fits, patient_ids,
                        study_uids, left_out=plan.left_out, invented=plan.invented, burned_in=dropped,
                        viewer=bool(viewer_files))


def _identities(dicomdir: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Patient IDs and Study Instance UIDs named by a DICOMDIR's records (for the audit)."""
    from io import BytesIO

    from pydicom import dcmread

    try:
        records = dcmread(BytesIO(dicomdir)).get("DirectoryRecordSequence", [])
    except Exception:  # noqa: BLE001 - the audit falls back to "unknown"
        return (), ()
    patients = tuple(dict.fromkeys(str(r.get("PatientID", "")) for r in records
                                   if r.get("DirectoryRecordType") == "PATIENT"))
    studies = tuple(dict.fromkeys(str(r.get("StudyInstanceUID", "")) for r in records
                                  if r.get("DirectoryRecordType") == "STUDY"))
    return tuple(p for p in patients if p), tuple(u for u in studies if u)
