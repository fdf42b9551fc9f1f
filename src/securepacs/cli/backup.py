"""``securepacs backup`` and ``securepacs restore``: copies of the embedded archive.

One responsibility: the command lines of :mod:`securepacs.services.backup` (an online
backup of the SQLite index with SQLite's backup API, then the blobs, with a SHA-256
manifest; its verification; a restore into an empty data folder).

Every backup (taken or failed), verification and restore is recorded in the data folder's
audit trail (:mod:`securepacs.audit.backup_messages`): a restore in the trail of the restored
folder, whose chain and checkpoints came with the backup, so ``audit verify`` still passes.

Exit codes: 0 done / backup intact; 1 the backup failed or fails verification, or its audit
record could not be written; 2 bad usage (non-empty target, PostgreSQL or Azure settings,
unreadable config).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from securepacs.cli.options import fail
from securepacs.errors import ConfigError, PacsError
from securepacs.settings import Settings, load

if TYPE_CHECKING:
    from securepacs.services.audit_events import BackupAudit

_CONFIG = typer.Option(None, "--config", help="TOML config file (as for serve).")
_DATA_DIR = typer.Option(None, "--data-dir", help="Data folder (as for serve).")


def _settings(config: Path | None, data_dir: Path | None) -> Settings:
    try:
        return load(config, overrides={"data_dir": data_dir})
    except PacsError as exc:
        raise fail(str(exc)) from None


def _audit(settings: Settings, what: str, record: Callable[[BackupAudit], None]) -> None:
    """Record one event in the data folder's audit trail; exit 1 when it cannot be."""
    from securepacs.wiring import backup_audit

    try:
        with backup_audit(settings) as audit:
            record(audit)
    except (PacsError, OSError) as exc:
        raise fail(f"{what}, but it could not be recorded in the audit trail of "
                   f"{settings.data_dir}: {exc}", 1) from None


def backup(
    to: Path | None = typer.Option(None, "--to", help="New (or empty) folder to write the "
                                   "backup into.", show_default=False),
    verify_dir: Path | None = typer.Option(None, "--verify", help="Check an existing backup "
                                           "folder instead (hashes, index, blobs).",
                                           show_default=False),
    config: Path | None = _CONFIG,
    data_dir: Path | None = _DATA_DIR,
) -> None:
    """Back up the archive while it serves (index, blobs, keys), or verify a backup.

    The index is copied in one consistent step with SQLite's backup API, then every blob it
    refers to; MANIFEST.sha256 lists the SHA-256 of every file (sha256sum -c reads it).
    """
    from securepacs.services import backup as service
    from securepacs.wiring import backup_tools, now

    if (to is None) == (verify_dir is None):
        raise fail("give either --to DIR (make a backup) or --verify DIR (check one)")
    settings = _settings(config, data_dir)
    try:
        tools = backup_tools(settings)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if verify_dir is not None:
        report = service.verify(verify_dir, tools)
        if (settings.data_dir / service.INDEX).is_file():  # an archive here: it records it
            _audit(settings, "the backup was verified", lambda a: a.verified(
                verify_dir, problems=report.problems, instances=report.instances,
                files=report.files))
        for problem in report.problems:
            typer.echo(f"BACKUP {problem}", err=True)
        if not report.ok:
            typer.echo(f"backup {verify_dir} is NOT intact ({len(report.problems)} problem(s))",
                       err=True)
            raise typer.Exit(1)
        typer.echo(f"backup {verify_dir} intact: {report.files} files, {report.instances} "
                   f"instances, taken {report.created}")
        return
    assert to is not None
    try:
        done = service.backup(data_dir=settings.data_dir, blob_root=settings.blob_root,
                              to=to, tools=tools, at=now())
    except ConfigError as exc:
        raise fail(str(exc)) from None
    except PacsError as exc:
        failed = str(exc)
        _audit(settings, "the backup failed", lambda a: a.taken(to, success=False,
                                                                detail=failed))
        raise fail(f"backup failed, nothing written: {exc}", 1) from None
    _audit(settings, f"the backup was written to {done.folder}", lambda a: a.taken(
        done.folder, success=True, instances=done.instances, files=done.files, size=done.size,
        manifest_sha256=done.manifest_sha256))
    typer.echo(f"backup written to {done.folder}: {done.instances} instances, {done.files} "
               f"files, {done.size} bytes"
               + (f" ({done.trashed} deleted instance(s) kept in the trash included)"
                  if done.trashed else ""))
    if done.missing_blobs:
        typer.echo(f"note: {len(done.missing_blobs)} instance(s) were replaced or deleted "
                   "while the backup ran; their old blobs are not in it", err=True)


def restore(
    source: Path = typer.Option(..., "--from", help="The backup folder.", show_default=False),
    config: Path | None = _CONFIG,
    data_dir: Path | None = _DATA_DIR,
) -> None:
    """Restore a backup into a new, empty data folder (every hash is checked first)."""
    from securepacs.services import backup as service
    from securepacs.wiring import backup_tools

    settings = _settings(config, data_dir)
    try:
        report = service.restore(folder=source, data_dir=settings.data_dir,
                                 blob_root=settings.blob_root, tools=backup_tools(settings))
    except ConfigError as exc:
        raise fail(str(exc)) from None
    except PacsError as exc:
        raise fail(f"restore failed, nothing written: {exc}", 1) from None
    _audit(settings, f"the archive was restored into {settings.data_dir}", lambda a: a.restored(
        source, instances=report.instances, files=report.files, created=report.created))
    typer.echo(f"restored {report.instances} instances ({report.files} files, backup taken "
               f"{report.created}) into {settings.data_dir}")
