"""``securepacs delete --study UID | --series UID | --instance UID``: delete from the archive;
``securepacs restore-deleted --study UID``: restore one from the trash (``trash_days``).

Two forms (docs/deletion.md):

- as a client (the default): the deletion runs on the server under the identity of the
  client certificate, through the server's DICOMweb ``DELETE``
  (:mod:`securepacs.services.deletion_client`); the connection options are those of the
  other client commands (profile, ``--server``, ``--cert``/``--key``/``--ca``), plus
  ``--dicomweb URL`` when the listener is not on the DICOM port + 3;
- as the operator (``--data-dir`` or ``--config`` given, as for ``share`` and ``audit``):
  on the data folder's own index and blobs, any organisation (``--org`` chooses one when
  several hold the UID), audited as the local user.

Before deleting, the command names the patient and study and asks for confirmation,
unless ``--yes``. Exit codes (those of the client commands): 0 deleted, 1 nothing deleted
(no such entity, or declined), 2 bad arguments or configuration, 3 no connection or no
permission, 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from securepacs.errors import AccessRefused, ConfigError, PacsError, PkiError

if TYPE_CHECKING:
    from securepacs.settings import Settings

EXIT_FAILED, EXIT_USAGE, EXIT_CONNECTION, EXIT_INTERRUPTED = 1, 2, 3, 130


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"securepacs delete: {message}", err=True)
    raise typer.Exit(code)


def _archive_settings(config: Path | None, data_dir: Path | None) -> Settings:
    """The operator's settings, refused (exit 2) where the folder holds no archive."""
    from securepacs.settings import load

    settings = load(config, overrides={"data_dir": data_dir})
    if settings.database_url is None and not (settings.data_dir / "index.sqlite").exists():
        _fail(f"no archive in {settings.data_dir} (no index database)", EXIT_USAGE)
    return settings


@contextmanager
def _outcomes(close: Callable[[], object]) -> Iterator[None]:
    """The operator form's errors as exit codes (1 nothing done, 2 usage); `close` after."""
    from securepacs.services.deletion import NothingToDelete

    try:
        yield
    except NothingToDelete as exc:
        _fail(str(exc), EXIT_FAILED)
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    except PacsError as exc:
        _fail(str(exc), EXIT_FAILED)
    finally:
        close()


def _confirm(text: str) -> None:
    if not sys.stdin.isatty():
        _fail(f"{text} - not deleted: confirm on a terminal, or pass --yes", EXIT_FAILED)
    try:
        answer = typer.confirm(f"{text}?", default=False)
    except typer.Abort:
        answer = False
    if not answer:
        _fail("not deleted", EXIT_FAILED)


def _what(level: str, uid: str, patient_name: str, patient_id: str, study_uid: str,
          count: int | None, org: str | None = None) -> str:
    patient = f"{patient_name or '(no name)'} (ID {patient_id or '-'})"
    where = "" if level == "study" else f" in study {study_uid}"
    many = "" if count is None else f", {count} instance(s)"
    owner = f", organisation {org}" if org else ""
    return f"delete {level} {uid}{where} of patient {patient}{many}{owner}"


def delete(
    study: str | None = typer.Option(None, "--study", help="Study Instance UID to delete."),
    series: str | None = typer.Option(None, "--series", help="Series Instance UID to delete."),
    instance: str | None = typer.Option(None, "--instance", help="SOP Instance UID to delete."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    server: str | None = typer.Option(None, "--server", help="HOST:PORT of the DICOM server "
                                      "[profile]; DICOMweb is on PORT + 3 unless --dicomweb."),
    dicomweb: str | None = typer.Option(None, "--dicomweb",
                                        help="The server's DICOMweb base URL, "
                                             "https://HOST:PORT/dicomweb."),
    cert: Path | None = typer.Option(None, "--cert", help="Our certificate, PEM [profile]."),
    key: Path | None = typer.Option(None, "--key", help="Its private key, PEM [profile]."),
    ca: Path | None = typer.Option(None, "--ca", help="CA certificate(s) that issued the "
                                   "server's certificate, PEM [profile]."),
    profile: Path | None = typer.Option(None, "--profile", help="Client profile (TOML)."),
    timeout: float = typer.Option(30.0, "--timeout", min=1.0, help="Seconds to wait for "
                                  "the server."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Operator form: delete in "
                                         "this data folder (as for serve)."),
    config: Path | None = typer.Option(None, "--config", help="Operator form: TOML config "
                                       "file (as for serve)."),
    org: str | None = typer.Option(None, "--org", help="Operator form: the organisation "
                                   "whose entity to delete, when several hold the UID."),
) -> None:
    """Delete a study, series or instance from the archive (asks first; audited)."""
    from securepacs.model.deletion import DeletionTarget

    given = [(n, v) for n, v in (("study", study), ("series", series), ("instance", instance))
             if v is not None]
    if len(given) != 1:
        _fail("name exactly one of --study, --series, --instance", EXIT_USAGE)
    level, uid = given[0]
    try:
        target = {"study": DeletionTarget.study, "series": DeletionTarget.series,
                  "instance": DeletionTarget.instance}[level](uid)
    except ValueError as exc:
        _fail(f"--{level}: {exc}", EXIT_USAGE)
    try:
        if data_dir is not None or config is not None:
            _operator(target, level, data_dir, config, org, reason, yes)
        else:
            if org is not None:
                _fail("--org belongs to the operator form (with --data-dir or --config)",
                      EXIT_USAGE)
            _client(target, level, reason, yes, server=server, dicomweb=dicomweb, cert=cert,
                    key=key, ca=ca, profile=profile, timeout=timeout)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)


def _client(target, level: str, reason: str | None, yes: bool, **options: object) -> None:  # noqa: ANN001
    from securepacs.services.deletion import NothingToDelete
    from securepacs.services.scuport import ConnectionFailed
    from securepacs.wiring import remote_deletion

    try:
        remote = remote_deletion(**options)  # type: ignore[arg-type]
        found = remote.locate(target)
        t = found.target
        text = _what(level, t.uid, found.patient_name, found.patient_id,
                     t.study_uid or t.uid, found.instances)
        if not yes:
            _confirm(text)
        remote.delete(t, reason=reason)
    except (ConfigError, PkiError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc), EXIT_USAGE)
    except (ConnectionFailed, AccessRefused) as exc:
        _fail(str(exc), EXIT_CONNECTION)
    except NothingToDelete as exc:
        _fail(str(exc), EXIT_FAILED)
    except PacsError as exc:
        _fail(str(exc), EXIT_FAILED)
    typer.echo(f"deleted {level} {t.uid} (patient {found.patient_id or '-'}, study "
               f"{t.study_uid or t.uid})")


def _operator(target, level: str, data_dir: Path | None, config: Path | None,  # noqa: ANN001
              org: str | None, reason: str | None, yes: bool) -> None:
    from securepacs.wiring import operator_deletion

    try:
        service, user, close = operator_deletion(_archive_settings(config, data_dir))
    except PacsError as exc:
        _fail(str(exc), EXIT_USAGE)
    with _outcomes(close):
        found = service.find_as_operator(target, organization=org)
        if not found:
            _fail(f"no {target.describe()} in the archive"
                  + (f" of organisation {org}" if org else ""), EXIT_FAILED)
        if len(found) > 1:
            owners = ", ".join(sorted(r.organization for r in found))
            _fail(f"{target.describe()} is held by several organisations ({owners}): name one "
                  "with --org", EXIT_USAGE)
        r = found[0]
        if not yes:
            _confirm(_what(level, target.uid, r.patient_name, r.patient_id, r.study_uid,
                           r.instances, r.organization or None))
        done = service.delete_as_operator(user, target, organization=r.organization,
                                          reason=reason)
    kept = (f"; restorable until {done.kept_until.isoformat(timespec='minutes')} "
            "(securepacs restore-deleted)" if done.kept_until is not None else "")
    typer.echo(f"deleted {level} {target.uid}: {done.instances} instance(s) (patient "
               f"{done.patient_id or '-'}, study {done.study_uid}, organisation "
               f"{done.organization or '-'}){kept}")


def restore_deleted(
    study: str = typer.Option(..., "--study", help="Study Instance UID to restore."),
    org: str | None = typer.Option(None, "--org", help="The organisation whose deleted "
                                   "study to restore, when several deleted this UID."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder (as for serve)."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file (as for "
                                       "serve)."),
) -> None:
    """Restore a deleted study from the trash (the operator, on the server; needs trash_days)."""
    from securepacs.model.deletion import DeletionTarget
    from securepacs.wiring import trash_restorer

    try:
        uid = DeletionTarget.study(study).uid
    except ValueError as exc:
        _fail(f"--study: {exc}", EXIT_USAGE)
    try:
        restore, close = trash_restorer(_archive_settings(config, data_dir))
    except PacsError as exc:
        _fail(str(exc), EXIT_USAGE)
    with _outcomes(close):
        done = restore(uid, org)
    again = f" ({done.already_present} stored again since, kept)" if done.already_present else ""
    typer.echo(f"restored study {done.study_uid}: {done.instances} instance(s) (patient "
               f"{done.patient_id or '-'}, organisation {done.organization or '-'}){again}")
