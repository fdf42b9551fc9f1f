"""``securepacs media``: encrypted DICOM media (PS3.10 7.4 secure file-sets, PS3.15 D.1).

Scripts and docs rely on these names::

    securepacs media create SRC... [--study UID]... (--out DIR | --iso FILE)
        (--password-file F | --password-stdin | --password | --generate-passphrase)
        [--recipient CERT]... [--pkcs1] [--escrow CERT]... [--no-viewer]
        [--data-dir DIR] [--config FILE]
    securepacs media info MEDIA [--json]
    securepacs media extract MEDIA --to DIR
        (--password-file F | --password-stdin | --password | --media-key PEM)
        [--key-passphrase-file F] [--keep-going]
    securepacs media verify MEDIA
        (--password-file F | --password-stdin | --password | --media-key PEM)
        [--key-passphrase-file F] [--data-dir DIR] [--config FILE]
    securepacs media recover MEDIA --escrow-key KEY.pem --to DIR [--escrow-cert CERT]
        [--key-passphrase-file F] [--reason TEXT] [--data-dir DIR] [--config FILE]
        [--keep-going]

Exit codes: 0 done; 1 failed (the file or reason is named on one line); 2 the password or key
does not open the media (nothing written), or bad usage. Passwords are never logged or echoed;
``--password`` prompts (twice when creating) without echo. Long work shows a progress bar on a
terminal, and otherwise a plain line every few seconds on stderr.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from securepacs.cli.deid_options import (
    CleanAllowlist,
    Deidentify,
    DeidOption,
    IncludeBurnedIn,
    MappingKey,
    deidentifier,
)
from securepacs.cli.media_import import import_media
from securepacs.cli.options import fail
from securepacs.errors import MediaUsageError, PacsError, PasswordRefusedError, WrongKeyError
from securepacs.services import media as service
from securepacs.settings import load

if TYPE_CHECKING:
    from rich.progress import Progress

app = typer.Typer(help="Encrypted DICOM media (CD/DVD/USB): create, info, extract, verify, "
                       "recover.", no_args_is_help=True)

_PLAIN_EVERY = 3.0  # seconds between plain progress lines when stderr is not a terminal


class _CliProgress:
    """A rich progress bar on a terminal, plain lines on stderr otherwise (only when slow)."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._bar: Progress | None = None
        self._task: Any = None
        self._name = ""
        self._total: int | None = None
        self._done = 0
        self._last = 0.0
        self._printed = False

    def begin(self, task: str, total: int | None) -> None:
        self._name, self._total, self._done = task, total, 0
        self._last, self._printed = time.monotonic(), False
        if self._tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(task, total=total)

    def advance(self, n: int = 1) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)
            return
        now = time.monotonic()
        if now - self._last >= _PLAIN_EVERY:
            self._last, self._printed = now, True
            of = f"/{self._total}" if self._total else ""
            typer.echo(f"{self._name}: {self._done}{of}", err=True)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._printed:
            typer.echo(f"{self._name}: done", err=True)


def _run(action: Any) -> Any:
    """Run a service call; map errors to one line and the exit code."""
    try:
        return action()
    except (WrongKeyError, PasswordRefusedError, MediaUsageError) as exc:  # usage: exit 2
        raise fail(str(exc), 2) from None
    except (PacsError, OSError) as exc:
        raise fail(str(exc), 1) from None


def _read_password_file(path: Path) -> str:
    if str(path) == "-":
        raw = sys.stdin.buffer.read()
    else:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise fail(f"cannot read the password file {path}: {exc.strerror}", 2) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("the password is not text: media passwords are printable US-ASCII "
                   "(PS3.15 D.1.1)", 1) from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise fail(f"the password file {path} is empty", 2)
    return lines[0]


def _password(file: Path | None, stdin: bool, prompt: bool, *, confirm: bool) -> str | None:
    given = sum([file is not None, stdin, prompt])
    if given > 1:
        raise fail("give only one of --password-file, --password-stdin, --password", 2)
    if file is not None:
        return _read_password_file(file)
    if stdin:
        return _read_password_file(Path("-"))
    if prompt:
        text: str = typer.prompt("Media password", hide_input=True, confirmation_prompt=confirm)
        return text
    return None


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- create


@app.command("create")
def create(
    sources: list[Path] = typer.Argument(None, help="Folders of DICOM Part 10 files.",
                                         show_default=False),
    study: list[str] = typer.Option([], "--study", help="A Study Instance UID from the archive "
                                    "(repeatable; reads --data-dir)."),
    out: Path | None = typer.Option(None, "--out", help="Folder to create (absent or empty)."),
    iso: Path | None = typer.Option(None, "--iso", help="ISO 9660 image file to create."),
    password_file: Path | None = typer.Option(None, "--password-file",
                                              help="File whose first line is the password."),
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="Read the password from stdin."),
    password: bool = typer.Option(False, "--password", help="Prompt for the password (twice)."),
    generate_passphrase: bool = typer.Option(
        False, "--generate-passphrase", help="Make a strong random passphrase and print it."),
    recipient: list[Path] = typer.Option([], "--recipient", help="RSA certificate of a "
                                         "recipient (repeatable)."),
    escrow: list[Path] = typer.Option([], "--escrow", help="RSA certificate of the escrow key "
                                      "for emergency recovery (repeatable)."),
    pkcs1: bool = typer.Option(False, "--pkcs1", help="rsaEncryption (PKCS #1 v1.5) instead "
                               "of RSAES-OAEP for --recipient certificates, for old readers "
                               "(the disc viewer in a browser cannot open those)."),
    oaep: bool = typer.Option(False, "--oaep", hidden=True,
                              help="RSAES-OAEP for certificate recipients (the default now)."),
    no_viewer: bool = typer.Option(False, "--no-viewer", help="Leave out the disc viewer "
                                   "(INDEX.HTM and VIEWER/, ~2 MB)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Archive data folder "
                                         "(for --study)."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file (for --study)."),
    deidentify: Deidentify = False, option: DeidOption = None,
    include_burned_in: IncludeBurnedIn = False, mapping_key: MappingKey = None,
    clean_allowlist: CleanAllowlist = None,
    org: str | None = typer.Option(None, "--org", help="Write only what this organisation "
                                   "may retrieve: its own studies and those fully shared "
                                   "with it (default: every organisation's; for --study)."),
) -> None:
    """Encrypt DICOM files into a secure file-set (folder or ISO image) for CD/DVD/USB."""
    if generate_passphrase and (password_file or password_stdin or password):
        raise fail("--generate-passphrase replaces --password-file/--password-stdin/--password", 2)
    if not sources and not study:
        raise fail("give folders of DICOM files and/or --study UID", 2)
    if org is not None and (not study or not org.strip()):
        raise fail("--org names the organisation whose --study UIDs to read: give both", 2)
    if (out is None) == (iso is None):
        raise fail("give exactly one of --out DIR or --iso FILE", 2)
    if pkcs1 and oaep:
        raise fail("give only one of --pkcs1 and --oaep", 2)
    deid = deidentifier(deidentify, option, include_burned_in, mapping_key,
                            clean_allowlist)
    generated = service.generate_passphrase() if generate_passphrase else None
    text = generated.text if generated else _password(password_file, password_stdin, password,
                                                      confirm=True)
    if text is None and not recipient:
        raise fail("give a password option or at least one --recipient certificate", 2)
    archive = None
    if study:
        def _archive() -> Any:
            from securepacs.wiring import study_archive

            return study_archive(load(config, overrides={"data_dir": data_dir}), org)

        archive = _run(_archive)
    try:
        report = _run(lambda: service.create_media(
            folders=sources or [], studies=study, archive=archive, out_dir=out, iso=iso,
            password=text, recipients=recipient, escrow=escrow, oaep=not pkcs1,
            viewer=not no_viewer, at=_now(),
            progress=_CliProgress(), deidentify=deid))
    finally:
        if archive is not None:
            archive.close()
    _audit_export(config, data_dir, report, deid, archive)
    where = f"ISO image {report.target} (fits a {report.fits})" if report.iso else \
        f"folder {report.target}"
    typer.echo(f"Wrote {report.instances} instance(s) of {report.studies} study(ies), "
               f"{report.patients} patient(s) to {where}: {report.bytes_written:,} bytes.")
    typer.echo(f"Recipients: {', '.join(report.recipients)}.")
    if report.viewer:
        typer.echo("Viewer: INDEX.HTM opens the disc in a web browser (see README.TXT).")
    if report.skipped:
        typer.echo(f"Skipped {len(report.skipped)} file(s) (not DICOM, DICOMDIR or duplicate):")
        for label, reason in report.skipped[:20]:
            typer.echo(f"  {label}: {reason}")
    if report.invented:
        typer.echo(f"Filled in for the disc's index (DICOMDIR) {len(report.invented)} instance(s) "
                   "lacked (the images are unchanged):")
        for label, values in report.invented[:20]:
            typer.echo(f"  {label}: {values}")
    if report.left_out:
        typer.echo(f"Left out {len(report.left_out)} instance(s) (no directory record possible):")
        for label, reason in report.left_out[:20]:
            typer.echo(f"  {label}: {reason}")
    if report.burned_in:
        typer.echo(f"Left out {len(report.burned_in)} instance(s) with burned-in annotation "
                   "(de-identification does not clean pixels; --include-burned-in writes them).")
    if generated is not None:
        typer.echo(f"Passphrase ({generated.bits:.0f} bits): {generated.text}")
        typer.echo("Send it to the recipient by a different route than the media.")
    if report.left_out:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- info


@app.command("info")
def info(
    media: Path = typer.Argument(..., help="Media folder or ISO image."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Describe the media without any key: files, algorithms and recipient types."""
    summary = _run(lambda: service.media_info(media))
    if as_json:
        typer.echo(json.dumps({
            "media": summary.name, "readme": summary.readme, "dicomdir": summary.dicomdir,
            "bytes": summary.total_bytes, "password_kdfs": list(summary.kdfs),
            "files": [{
                "path": f.path, "size": f.size, "error": f.error,
                "content": f.envelope.content_type if f.envelope else None,
                "integrity": _declared(f.envelope.content_type) if f.envelope else None,
                "cipher": f.envelope.cipher if f.envelope else None,
                "recipients": [r.kind for r in f.envelope.recipients] if f.envelope else [],
            } for f in summary.files],
        }, indent=2))
        _not_secure(summary)
        return
    secure = [f for f in summary.files if f.envelope is not None]
    typer.echo(f"Media: {summary.name}")
    typer.echo(f"README.TXT: {'yes' if summary.readme else 'no'}; "
               f"DICOMDIR: {'yes' if summary.dicomdir else 'no'}")
    typer.echo(f"Secure DICOM Files: {len(secure)} of {len(summary.files)}, "
               f"{summary.total_bytes:,} bytes")
    if summary.kdfs:
        shared = "one for the whole media" if len(summary.kdfs) == 1 else \
            f"{len(summary.kdfs)} different ones"
        typer.echo(f"Password key derivation ({shared}): {'; '.join(summary.kdfs)}")
    kinds = sorted({r.detail for f in secure for r in f.envelope.recipients  # type: ignore[union-attr]
                    if r.kind != "password"})
    for detail in kinds:
        typer.echo(f"Recipient: {detail}")
    for f in summary.files:
        if f.envelope is None:
            typer.echo(f"  {f.path}  {f.size:,} bytes  NOT A SECURE DICOM FILE: {f.error}")
            continue
        who = ", ".join(r.kind for r in f.envelope.recipients)
        typer.echo(f"  {f.path}  {f.size:,} bytes  {f.envelope.content_type}  "
                   f"{f.envelope.cipher}  [{who}]  integrity {_declared_text(f.envelope.content_type)}")
    unprotected = [f.path for f in secure if _declared(f.envelope.content_type) == "unprotected"]  # type: ignore[union-attr]
    if unprotected:
        typer.echo(f"Warning: {len(unprotected)} file(s) declare no integrity protection (plain "
                   "id-data, as other writers make): an alteration of them would go unnoticed; "
                   "securepacs media verify fails on them.", err=True)
    _not_secure(summary)


def _declared(content_type: str) -> str:
    """What a file's declared content type promises, before any key (PS3.15 D.1.1)."""
    return {"DigestedData": "protected", "id-data": "unprotected"}.get(content_type, "unknown")


def _declared_text(content_type: str) -> str:
    return {"protected": "protected (digest checked when opened)",
            "unprotected": "NOT PROTECTED (no digest)"}.get(_declared(content_type),
                                                           "unknown")


def _not_secure(summary: Any) -> None:
    """Exit 1 unless every file is a Secure DICOM File (PS3.10 7.4): not secure media."""
    plain = sum(1 for f in summary.files if f.envelope is None)
    if plain or not summary.files:
        raise fail(f"{plain} of {len(summary.files)} file(s) are not Secure DICOM Files: "
                   "this is not (wholly) secure media", 1)


# --------------------------------------------------------------------------- reading


def _key_passphrase(path: Path | None) -> bytes | None:
    return None if path is None else _read_password_file(path).encode("utf-8")


def _keyring(password_file: Path | None, password_stdin: bool, password: bool,
             media_key: list[Path], key_passphrase_file: Path | None) -> Any:
    text = _password(password_file, password_stdin, password, confirm=False)
    if text is None and not media_key:
        raise fail("give --password-file, --password-stdin, --password or --media-key", 2)
    passphrase = _key_passphrase(key_passphrase_file)
    return _run(lambda: service.keyring_from(password=text, keys=media_key,
                                             key_passphrase=passphrase))


_KEY_PASSPHRASE_HELP = "File whose first line is the passphrase of an encrypted key file."


def _report_failures(failures: list[str], problems: list[str]) -> None:
    for line in failures:
        typer.echo(f"FAILED {line}", err=True)
    for line in problems:
        typer.echo(f"DICOMDIR {line}", err=True)


@app.command("extract")
def extract(
    media: Path = typer.Argument(..., help="Media folder or ISO image."),
    to: Path = typer.Option(..., "--to", help="Folder to create for the plain files."),
    password_file: Path | None = typer.Option(None, "--password-file",
                                              help="File whose first line is the password."),
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="Read the password from stdin."),
    password: bool = typer.Option(False, "--password", help="Prompt for the password."),
    media_key: list[Path] = typer.Option([], "--media-key", help="RSA private key (PEM, may "
                                         "include its certificate) of a recipient."),
    key_passphrase_file: Path | None = typer.Option(None, "--key-passphrase-file",
                                                    help=_KEY_PASSPHRASE_HELP),
    keep_going: bool = typer.Option(False, "--keep-going", help="Skip damaged files (named) "
                                    "and extract the rest."),
) -> None:
    """Decrypt the media into plain DICOM files and a plain DICOMDIR."""
    keyring = _keyring(password_file, password_stdin, password, media_key, key_passphrase_file)
    report = _run(lambda: service.extract_media(media, to, keyring, keep_going=keep_going,
                                                progress=_CliProgress()))
    typer.echo(f"Extracted {report.written} file(s) to {report.target}.")
    _report_integrity(report)
    _report_failures(report.failures, report.dicomdir_problems)
    if report.failures:
        raise fail(f"{len(report.failures)} file(s) could not be extracted", 1)


def _report_integrity(report: Any) -> None:
    """Say for which files the integrity was verified and for which it is not protected."""
    typer.echo(f"Integrity verified (digest checked): {report.verified} of {report.written} "
               "file(s).")
    if report.unprotected:
        typer.echo(f"Integrity NOT protected: {len(report.unprotected)} file(s) hold plain "
                   "id-data without a digest (written by another program): an alteration "
                   "would go unnoticed.")
        for path in report.unprotected[:20]:
            typer.echo(f"WARNING {path}: integrity not protected", err=True)
        if len(report.unprotected) > 20:
            typer.echo(f"WARNING ... and {len(report.unprotected) - 20} more", err=True)


@app.command("verify")
def verify(
    media: Path = typer.Argument(..., help="Media folder or ISO image."),
    password_file: Path | None = typer.Option(None, "--password-file",
                                              help="File whose first line is the password."),
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="Read the password from stdin."),
    password: bool = typer.Option(False, "--password", help="Prompt for the password."),
    media_key: list[Path] = typer.Option([], "--media-key", help="RSA private key (PEM, may "
                                         "include its certificate) of a recipient."),
    key_passphrase_file: Path | None = typer.Option(None, "--key-passphrase-file",
                                                    help=_KEY_PASSPHRASE_HELP),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder whose audit "
                                         "trail records a failed verification."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file."),
) -> None:
    """Decrypt every file and check every digest and the DICOMDIR; write nothing.

    A file without a digest (integrity not protected) fails. A failed verification is
    recorded as a Security Alert in the audit trail of the data folder.
    """
    keyring = _keyring(password_file, password_stdin, password, media_key, key_passphrase_file)
    report = _run(lambda: service.verify_media(media, keyring, progress=_CliProgress()))
    _report_failures(report.failures, report.dicomdir_problems)
    typer.echo(f"Verified {report.ok} of {report.checked} file(s); "
               f"{len(report.failures)} failed; DICOMDIR "
               f"{'consistent' if not report.dicomdir_problems else 'has problems'}.")
    if not report.passed:
        _audit_tampered(media, report.failures, report.dicomdir_problems, config, data_dir)
        raise typer.Exit(1)


def _audit_tampered(media: Path, failures: list[str], problems: list[str],
                    config: Path | None = None, data_dir: Path | None = None) -> None:
    """A Security Alert (PS3.15 A.5.3.11, media integrity failure) for media that does not
    verify, in the data folder's audit trail; if it cannot be written, say so on stderr."""
    from securepacs.wiring import media_audit

    lines = [*failures[:5], *(f"DICOMDIR {p}" for p in problems[:5])]
    more = len(failures) + len(problems) - len(lines)
    detail = "; ".join(lines) + (f"; and {more} more" if more > 0 else "")
    try:
        with media_audit(load(config, overrides={"data_dir": data_dir})) as audit:
            audit.tampered(str(media), detail or "verification failed")
    except (PacsError, OSError) as exc:
        typer.echo(f"securepacs: the Security Alert could not be recorded in the audit "
                   f"trail: {exc}", err=True)


@app.command("recover")
def recover(
    media: Path = typer.Argument(..., help="Media folder or ISO image."),
    escrow_key: Path = typer.Option(..., "--escrow-key", help="The escrow RSA private key (PEM)."),
    to: Path = typer.Option(..., "--to", help="Folder to create for the plain files."),
    escrow_cert: Path | None = typer.Option(None, "--escrow-cert", help="The escrow certificate "
                                            "(recorded by fingerprint; optional if in the key file)."),
    key_passphrase_file: Path | None = typer.Option(None, "--key-passphrase-file",
                                                    help=_KEY_PASSPHRASE_HELP),
    reason: str | None = typer.Option(None, "--reason", help="Why (recorded in the audit log)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder holding the "
                                         "interim audit log."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file."),
    keep_going: bool = typer.Option(False, "--keep-going", help="Skip damaged files (named) "
                                    "and extract the rest."),
) -> None:
    """Emergency access with the escrow key when the password is lost; the access is audited.

    Every attempt is recorded, before any plaintext is written, in the recovery log
    `<data folder>/audit-interim.jsonl` (who, when, which media, which escrow certificate,
    fsynced) and as an Emergency Override event in the audit trail of the data folder (the
    index database's hash-chained table, and the syslog collector when configured).
    """
    from securepacs.services import media_recovery
    from securepacs.wiring import media_audit

    settings = _run(lambda: load(config, overrides={"data_dir": data_dir}))
    passphrase = _key_passphrase(key_passphrase_file)
    with _run(lambda: media_audit(settings)) as audit:
        report = _run(lambda: media_recovery.recover_media(
            media, to, escrow_key, audit_dir=settings.data_dir, at=_now(), escrow_cert=escrow_cert,
            key_passphrase=passphrase, reason=reason, keep_going=keep_going,
            progress=_CliProgress(), observe=audit.override))
    typer.echo(f"Recovered {report.written} file(s) to {report.target}; the access is recorded "
               f"in {settings.data_dir / 'audit-interim.jsonl'} (interim audit log) and in the "
               "audit trail (Emergency Override).")
    _report_integrity(report)
    _report_failures(report.failures, report.dicomdir_problems)
    if report.failures:
        raise fail(f"{len(report.failures)} file(s) could not be extracted", 1)


def _audit_export(config: Path | None, data_dir: Path | None, report: Any,
                  deid: Any = None, archive: Any = None) -> None:
    """Record the Export event (PS3.15 A.5.3.7) in the data folder's audit trail; a
    de-identified disc names the original patients and studies, marked Anonymized (the disc
    itself holds only the new UIDs and pseudonyms); and the other organisations' studies
    read for ``--org`` (docs/tenants.md)."""
    from securepacs.wiring import media_audit

    with _run(lambda: media_audit(load(config, overrides={"data_dir": data_dir}))) as audit:
        if deid is not None:
            audit.deidentified(str(report.target), deid.originals(),
                               method=deid.method_codes(), success=True)
        else:
            audit.exported(str(report.target), patient_ids=report.patient_ids,
                           study_uids=report.study_uids, success=True)
        if archive is not None and archive.foreign:
            audit.crossed(archive.organization, archive.foreign)


app.command("import")(import_media)

__all__ = ["app"]
