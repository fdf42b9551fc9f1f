"""``securepacs media import``: send a disc's images to a PACS with the Patient ID reconciled.

One responsibility: the command line of the IHE Import Reconciliation Workflow for media:
unlock the disc (password file or private key; PS3.15 D.1), decrypt in memory, replace
Patient ID / Issuer (optionally name and birth date) keeping the originals in Original
Attributes Sequence (PS3.3 C.12.1) and Other Patient IDs Sequence, send over TLS with the
client profile defaults (as ``securepacs send``), show progress and a summary.

Exit codes: 0 all images on the server; 1 some failed; 2 the key does not open the media or
bad usage; 3 no connection / association / permission.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from securepacs.cli.client import Aec, Aet, Ca, Cert, Key, NoTls, ProfileOpt, Server, Timeout, endpoint
from securepacs.cli.options import fail
from securepacs.errors import ConfigError, MediaUsageError, PacsError, PkiError, WrongKeyError

if TYPE_CHECKING:  # imported when the command runs (start-up time: securepacs.cli.main)
    from securepacs.services import media_import

EXIT_FAILED, EXIT_USAGE, EXIT_CONNECTION = 1, 2, 3


def _password(path: Path) -> str:
    try:
        raw = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read the password file {path}: {exc}", EXIT_USAGE) from None
    line = raw.splitlines()[0] if raw else ""
    if not line:
        raise fail(f"the password file {path} is empty", EXIT_USAGE)
    return line


def _progress(total: int) -> Callable[[media_import.ImportProgress], None]:
    tty = sys.stderr.isatty()
    last = [0.0]

    def show(p: media_import.ImportProgress) -> None:
        now = time.monotonic()
        if tty:
            typer.echo(f"\rimport: {p.done}/{p.total} images", err=True, nl=p.done == p.total)
        elif p.done == p.total or now - last[0] >= 2.0:
            last[0] = now
            typer.echo(f"import: {p.done}/{p.total} images", err=True)
    return show


def import_media(
    media: Annotated[Path, typer.Argument(help="Media folder, ISO image, or folder of DICOM files.")],
    password_file: Annotated[Path | None, typer.Option(
        "--password-file", help="File whose first line is the media password ('-': stdin).")] = None,
    media_key: Annotated[Path | None, typer.Option(
        "--media-key", help="Private key (PEM) of a certificate the media was encrypted for.")] = None,
    patient_id: Annotated[str, typer.Option("--patient-id", help="Patient ID at the receiving site.")] = "",
    issuer: Annotated[str, typer.Option("--issuer", help="Issuer of Patient ID at the receiving site.")] = "",
    patient_name: Annotated[str, typer.Option("--patient-name", help="New Patient's Name (A^B).")] = "",
    birth_date: Annotated[str, typer.Option("--birth-date", help="New birth date, YYYYMMDD.")] = "",
    media_patient_id: Annotated[str, typer.Option(
        "--media-patient-id", help="Import only this patient of the media (needed with --patient-id "
        "when the media holds several patients).")] = "",
    server: Server = None, aec: Aec = None, aet: Aet = None, cert: Cert = None, key: Key = None,
    ca: Ca = None, no_tls: NoTls = False, profile: ProfileOpt = None, timeout: Timeout = 30.0,
) -> None:
    """Decrypt media in memory and send its images to a PACS with a reconciled Patient ID."""
    from securepacs.services import media_import, media_view
    from securepacs.services.media_read import keyring_from

    try:
        rec = media_import.Reconciliation(patient_id, issuer, patient_name, birth_date,
                                          source=media_import.source_label(str(media)))
        ep = endpoint(profile=profile, server=server, aec=aec, aet=aet, cert=cert, key=key,
                      ca=ca, no_tls=no_tls, timeout=timeout)
    except (ValueError, ConfigError, PkiError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    try:
        keyring = None
        if media_view.needs_key(media):
            if password_file is None and media_key is None:
                raise fail("the media is encrypted: give --password-file or --media-key", EXIT_USAGE)
            keyring = keyring_from(password=_password(password_file) if password_file else None,
                                   keys=[media_key] if media_key else [])
        catalog = media_view.open_catalog(media, keyring)
    except (WrongKeyError, MediaUsageError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except (PacsError, OSError) as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    with catalog:
        for problem in catalog.errors:
            typer.echo(f"warning: {problem}", err=True)
        if catalog.encrypted and catalog.unprotected:
            typer.echo(f"warning: integrity not protected for {len(catalog.unprotected)} "
                       "file(s) of the media (plain content without a digest, written by another "
                       "program): an alteration would go unnoticed", err=True)
        people = media_import.identities(catalog)
        ids = sorted({pid for _n, pid, _i, _b in people})
        if media_patient_id and media_patient_id not in ids:
            raise fail(f"--media-patient-id {media_patient_id!r} is not on the media "
                       f"(it holds {', '.join(ids)})", EXIT_USAGE)
        if not rec.empty and len(ids) > 1 and not media_patient_id:
            raise fail(f"the media holds {len(ids)} patients ({', '.join(ids)}): choose one "
                       "with --media-patient-id", EXIT_USAGE)
        entries = [inst for study in catalog.studies
                   if not media_patient_id or study.patient_id == media_patient_id
                   for s in study.series for inst in s.instances]
        if not entries:
            raise fail(f"no readable DICOM image on {media}"
                       + (f" ({len(catalog.errors)} file(s) could not be read)"
                          if catalog.errors else ""), EXIT_USAGE)
        for name, pid, old_issuer, birth in people:
            if media_patient_id and pid != media_patient_id:
                continue
            new = (f" -> ID {rec.patient_id} (issuer {rec.issuer or '-'})" if rec.patient_id
                   else " (unchanged)")
            typer.echo(f"patient on the media: {name or '-'}, ID {pid or '-'} "
                       f"(issuer {old_issuer or '-'}, born {birth or '-'}){new}")
        typer.echo(f"importing {len(entries)} image(s) to {ep.endpoint.where}")
        summary = media_import.import_catalog(catalog, rec, ep, at=datetime.now(UTC),
                                              entries=entries, on_progress=_progress(len(entries)))
        studies = [st for st in catalog.studies
                   if not media_patient_id or st.patient_id == media_patient_id]
        _audit_import(media, studies, rec.patient_id, ok=summary.ok)
    for path, reason in summary.failed:
        typer.echo(f"failed: {path}: {reason}", err=True)
    typer.echo(f"imported to {ep.endpoint.where}: {summary.total} image(s): sent {summary.sent}, already "
               f"present {summary.already_present}, failed {len(summary.failed)}, not sent "
               f"{summary.not_sent}")
    if summary.stopped is not None:
        raise fail(summary.stopped, EXIT_CONNECTION)
    if summary.duplicates and rec.patient_id and not _report_held(ep, summary, rec.patient_id):
        raise typer.Exit(EXIT_FAILED)
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED)


def _report_held(finder: Any, summary: media_import.ImportSummary, new_id: str) -> bool:
    """Say under which Patient ID the server holds the instances it already had.

    The archive keeps its first copy of a SOP Instance UID, so the new Patient ID was not
    applied to those: True only when every one is already held under `new_id`.
    """
    from securepacs.services import media_import
    from securepacs.services.scuport import ConnectionFailed

    try:
        held = media_import.held_under(finder, summary.duplicates)
    except ConnectionFailed as exc:
        typer.echo(f"securepacs: the server already held {len(summary.duplicates)} image(s) and "
                   f"could not be asked under which Patient ID ({exc}); the new Patient ID "
                   f"{new_id} was not applied to them", err=True)
        return False
    other = [h for h in held if h.patient_id != new_id]
    for h in other:
        typer.echo(f"already held: {h.path} (SOP Instance UID {h.sop_instance_uid}) under "
                   f"Patient ID {h.patient_id if h.patient_id is not None else '(not told)'}",
                   err=True)
    if not other:
        typer.echo(f"the {len(held)} image(s) already present are held under Patient ID {new_id}")
        return True
    typer.echo(f"securepacs: {len(other)} image(s) were already in the archive under another "
               f"Patient ID; the archive kept them as they were, so {new_id} was NOT applied to "
               "them (correct the Patient ID in the archive, or remove those instances there "
               "and import again: see README, media import)", err=True)
    return False


def _audit_import(media: Path, studies: list[Any], new_id: str | None, *, ok: bool) -> None:
    """Record the Import event (PS3.15 A.5.3.8), with the reconciliation, locally."""
    from securepacs.settings import load
    from securepacs.wiring import media_audit

    try:
        audit = media_audit(load())
    except PacsError as exc:
        typer.echo(f"warning: the import could not be audited locally: {exc}", err=True)
        return
    with audit:
        originals = sorted({st.patient_id for st in studies if st.patient_id})
        audit.imported(str(media), patient_id=new_id or ",".join(originals),
                       study_uids=[st.uid for st in studies],
                       original_patient_id=",".join(originals) if new_id else None, success=ok)
