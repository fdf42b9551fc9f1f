"""Audit messages of the archive's backups (PS3.15 A.5.3, with the A.5.1 schema's codes).

One responsibility: build the records of a backup taken, verified and restored. PS3.15 has
no event named "backup"; the nearest events are used, with the backup folder as both the
media (CID 405 URI, 110037) and the participant object (ID type URI, role 17 "Data
Archive", with the RFC 3881 data life cycle of the step):

- a backup taken is an **Export** (A.5.3.7, 110106, action R): every study left the archive
  for the backup folder (Destination Media); life cycle 13 Archiving;
- a backup verified is **DICOM Instances Accessed** (A.5.3.4, 110103, action R): every file
  of the backup was read and hashed (Source Media); life cycle 4 Verification; outcome 8
  (serious failure) when it is not intact;
- a restore is an **Import** (A.5.3.8, 110107, action C): the archive was made from the
  backup (Source Media); life cycle 2 Import.

A backup holds every patient, so no Patient or Study object is named (one message per
patient would make a backup of a large archive write thousands of them); the number of
instances, files and the manifest's SHA-256 are ParticipantObjectDetail values, which name
no patient.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from securepacs.audit.messages import Peer, _new_id, _outcome, _peer, _time
from securepacs.audit.record import (
    Action,
    AuditRecord,
    AuditSource,
    Code,
    EventId,
    MediaType,
    ObjectIdType,
    Outcome,
    Participant,
    ParticipantObject,
    RoleId,
)

__all__ = ["backup_restored", "backup_taken", "backup_verified", "folder_uri"]

_DATA_ARCHIVE = 17
_ARCHIVING, _VERIFICATION, _IMPORT = 13, 4, 2


def folder_uri(folder: Path) -> str:
    """The ``file://`` URI naming a backup folder in the messages."""
    return folder.absolute().as_uri()


def _details(instances: int | None, files: int | None, size: int | None,
             manifest_sha256: str | None) -> tuple[tuple[str, bytes], ...]:
    pairs = (("Instances", instances), ("Files", files), ("Bytes", size),
             ("ManifestSHA256", manifest_sha256))
    return tuple((k, str(v).encode()) for k, v in pairs if v is not None)


def _record(event: Code, action: Action, kind: str, *, user: Peer, uri: str, role: Code,
            life_cycle: int, at: datetime, outcome: Outcome | int, description: str | None,
            details: tuple[tuple[str, bytes], ...], record_id: str | None,
            audit_source: AuditSource | None) -> AuditRecord:
    if not isinstance(uri, str) or not uri.startswith("file:"):
        raise ValueError("a backup is named by its file: URI")
    user_role = RoleId.DESTINATION if action == Action.CREATE else RoleId.SOURCE
    media = Participant(uri, requestor=False, roles=(role,), media_type=MediaType.URI)
    archive = ParticipantObject(uri, ObjectIdType.URI, type_code=2, type_role=_DATA_ARCHIVE,
                                life_cycle=life_cycle, name="securepacs backup",
                                details=details)
    return AuditRecord(
        _new_id(record_id), event, action, _outcome(outcome), _time(at),
        (_peer(user, "user").participant(requestor=True, roles=(user_role,)), media),
        (), description, (archive,), audit_source, kind=kind)


def backup_taken(*, user: Peer, uri: str, at: datetime, instances: int | None = None,
                 files: int | None = None, size: int | None = None,
                 manifest_sha256: str | None = None, outcome: Outcome | int = Outcome.SUCCESS,
                 description: str | None = None, record_id: str | None = None,
                 audit_source: AuditSource | None = None) -> AuditRecord:
    """Export (A.5.3.7): a backup of the archive written to the folder `uri`.

    Parameters
    ----------
    user : Peer
        Who ran ``securepacs backup`` (requestor, role Source).
    uri : str
        The backup folder (:func:`folder_uri`): Destination Media and the object.
    instances, files, size, manifest_sha256 : optional
        What the backup holds (ParticipantObjectDetail).
    outcome : Outcome or int
        4 or 8 when the backup failed (`description` says why).
    """
    return _record(EventId.EXPORT, Action.READ, "backup", user=user, uri=uri,
                   role=RoleId.DESTINATION_MEDIA, life_cycle=_ARCHIVING, at=at,
                   outcome=outcome, description=description,
                   details=_details(instances, files, size, manifest_sha256),
                   record_id=record_id, audit_source=audit_source)


def backup_verified(*, user: Peer, uri: str, at: datetime, intact: bool,
                    instances: int | None = None, files: int | None = None,
                    description: str | None = None, record_id: str | None = None,
                    audit_source: AuditSource | None = None) -> AuditRecord:
    """DICOM Instances Accessed (A.5.3.4): every file of the backup `uri` read and checked.

    Outcome 0 when `intact`, else 8 (serious failure) with the first problems in
    `description`.
    """
    return _record(EventId.INSTANCES_ACCESSED, Action.READ, "backup-verified", user=user,
                   uri=uri, role=RoleId.SOURCE_MEDIA, life_cycle=_VERIFICATION, at=at,
                   outcome=Outcome.SUCCESS if intact else Outcome.SERIOUS_FAILURE,
                   description=description, details=_details(instances, files, None, None),
                   record_id=record_id, audit_source=audit_source)


def backup_restored(*, user: Peer, uri: str, at: datetime, instances: int | None = None,
                    files: int | None = None, outcome: Outcome | int = Outcome.SUCCESS,
                    description: str | None = None, record_id: str | None = None,
                    audit_source: AuditSource | None = None) -> AuditRecord:
    """Import (A.5.3.8): this archive restored from the backup `uri` (Source Media)."""
    return _record(EventId.IMPORT, Action.CREATE, "restore", user=user, uri=uri,
                   role=RoleId.SOURCE_MEDIA, life_cycle=_IMPORT, at=at, outcome=outcome,
                   description=description, details=_details(instances, files, None, None),
                   record_id=record_id, audit_source=audit_source)
