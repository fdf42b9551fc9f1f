"""Emergency recovery of encrypted media with the escrow key, and its INTERIM audit log.

One responsibility: open media whose password is lost, with the escrow key, and record that
someone did so, the "auditable event" the emergency-access scenario demands
(:func:`recover_media`). The real audit trail (PS3.15 A.5
messages, database / syslog-TLS sinks) is a later issue; until then each recovery appends
JSON lines to ``<data folder>/audit-interim.jsonl`` (default data folder
``~/.local/share/securepacs``), created with mode 0600, each line written with ``O_APPEND``
and fsynced. Every record carries ``"interim": true`` and ``"schema":
"securepacs-interim-audit/1"`` so that the later importer can recognise and convert them.

Fields: ``event`` (``media-emergency-recovery``), ``outcome`` (``access-granted`` before the
first plaintext is written, ``key-refused``, ``failed``, ``extracted``), ``who`` (the operating
system user and uid), ``host``, ``when`` (ISO 8601, a parameter), ``media`` (its path and the
SHA-256 of its encrypted DICOMDIR, which identifies a disc without opening it),
``escrow_certificate_sha256`` (when the certificate is known), ``escrow_key_spki_sha256``,
``reason`` (optional, given by the person). Never a password or a key.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from securepacs.errors import MediaError, WrongKeyError
from securepacs.media import cms, fileset
from securepacs.media.fileset import MediaSource
from securepacs.pki import authority
from securepacs.services.media_output import NO_PROGRESS, Progress
from securepacs.services.media_read import (
    ExtractReport,
    extract_from,
    keyring_from,
    open_media,
)

__all__ = ["AUDIT_FILE", "SCHEMA", "append", "recover_media", "recovery_record"]

AUDIT_FILE = "audit-interim.jsonl"
SCHEMA = "securepacs-interim-audit/1"


def _who() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"user": user, "uid": os.getuid() if hasattr(os, "getuid") else None}


def _media_id(media: MediaSource) -> str | None:
    names = [p for p in media.files() if p.upper() == fileset.DICOMDIR]
    if not names:
        return None
    try:
        return hashlib.sha256(media.read(names[0])).hexdigest()
    except MediaError:
        return None


def recovery_record(media: MediaSource, path: Path, keyring: cms.Keyring, *, at: datetime,
                    reason: str | None = None) -> dict[str, Any]:
    """The fields of a recovery record (without its outcome).

    Parameters
    ----------
    media : MediaSource
        The disc being opened.
    path : Path
        Where it was opened from.
    keyring : cms.Keyring
        Holds the escrow key (and its certificate when known).
    at : datetime
        When (timezone-aware).
    reason : str, optional
        Why, in the operator's words.
    """
    key = keyring.keys[0] if keyring.keys else None
    cert = key.certificate if key is not None else None
    return {
        "schema": SCHEMA,
        "interim": True,
        "event": "media-emergency-recovery",
        "when": at.isoformat(),
        "who": _who(),
        "host": socket.gethostname(),
        "media": {"path": str(Path(path).resolve()), "dicomdir_sha256": _media_id(media)},
        "escrow_certificate_sha256": authority.fingerprint_sha256(cert) if cert else None,
        "escrow_key_spki_sha256": key.spki_sha256 if key is not None else None,
        "reason": reason,
    }


def append(audit_dir: Path, record: dict[str, Any]) -> Path:
    """Append `record` as one JSON line to ``audit_dir/audit-interim.jsonl`` and fsync it.

    Raises
    ------
    MediaError
        The record cannot be written (the caller must then not decrypt anything).
    """
    audit_dir = Path(audit_dir)
    target = audit_dir / AUDIT_FILE
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    try:
        audit_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise MediaError(f"cannot write the audit record to {target}: {exc.strerror or exc}"
                         " (nothing was decrypted)") from exc
    return target


def recover_media(path: Path, to: Path, escrow_key: Path, *, audit_dir: Path, at: datetime,
                  escrow_cert: Path | None = None, key_passphrase: bytes | None = None,
                  reason: str | None = None, keep_going: bool = False,
                  progress: Progress = NO_PROGRESS,
                  observe: Callable[[dict[str, Any]], None] | None = None) -> ExtractReport:
    """Emergency access: open media with the escrow key, recording the access first.

    The record (who, when, which media, which escrow certificate) goes to the INTERIM audit
    log ``audit_dir/audit-interim.jsonl`` before any plaintext is written; a refused key and a
    failure are recorded too. If the record cannot be written, nothing is written out.

    Parameters
    ----------
    path : Path
        The media (folder or ISO image).
    to : Path
        Folder to create for the plain files.
    escrow_key : Path
        The escrow RSA private key (PEM; may also hold the escrow certificate).
    audit_dir : Path
        The data folder that holds the interim audit log.
    at : datetime
        Now (timezone-aware), for the record.
    escrow_cert : Path, optional
        The escrow certificate, recorded by its SHA-256 fingerprint.
    key_passphrase : bytes, optional
        Decrypts an encrypted escrow key file.
    reason : str, optional
        Why, in the operator's words (recorded).
    keep_going : bool
        As for :func:`securepacs.services.media.extract_media`.

    Raises
    ------
    WrongKeyError
        The escrow key opens nothing (recorded as refused; nothing written).
    MediaError
        The audit record cannot be written, or as
        :func:`securepacs.services.media.extract_media`.
    """
    def note(entry: dict[str, Any]) -> None:
        append(audit_dir, entry)  # durable before any plaintext; raises if it cannot
        if observe is not None:
            observe(entry)  # the audit trail (Emergency Override)

    keyring = keyring_from(keys=[escrow_key], certificates=[escrow_cert] if escrow_cert else [],
                           key_passphrase=key_passphrase)
    with open_media(path) as media:
        record = recovery_record(media, path, keyring, at=at, reason=reason)

        def granted() -> None:
            note({**record, "outcome": "access-granted"})

        try:
            report = extract_from(media, Path(to), keyring, keep_going=keep_going,
                                  progress=progress, on_first=granted)
        except WrongKeyError:
            note({**record, "outcome": "key-refused"})
            raise
        except MediaError as exc:
            note({**record, "outcome": "failed", "error": str(exc)})
            raise
    note({**record, "outcome": "extracted", "files": report.written,
                       "failures": len(report.failures)})
    return report
