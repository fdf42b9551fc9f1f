"""The trash: deleted studies kept restorable for ``trash_days`` (docs/deletion.md).

With ``trash_days`` above 0 a deletion removes the index rows as always (nothing is
findable afterwards) but keeps the blobs, listed in the index's trash with the time they
are purged. ``securepacs restore-deleted --study UID`` files them again: each blob is read
and indexed as it was received (:func:`restore_study`); :func:`purge_expired` moves the
entries whose time is over to the pending-deletion list and deletes their blobs (at
start-up, after each deletion, and every :data:`PURGE_EVERY` seconds from the server's
trust-poll loop through :class:`PeriodicPurge`). While a blob is in the trash no row refers to it, so
the start-up sweep of orphan blobs must count it as referenced: :class:`KeepTrash`.
Restores are audited as DICOM Instances Accessed, action Create; purges as action Delete
(life cycle Permanent Erasure), performed by the archive itself (PS3.15 A.5.3.2).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from securepacs.audit import messages as m
from securepacs.errors import InvalidInstanceError, PacsError, StorageError
from securepacs.model.deletion import Trashed
from securepacs.model.record import InstanceRecord
from securepacs.services import part10
from securepacs.services.audit_events import AuditEvents
from securepacs.services.deletion import BlobDeleter, NothingToDelete, sweep_deleted

__all__ = ["PURGE_EVERY", "KeepTrash", "PeriodicPurge", "Restored", "TrashIndex",
           "purge_expired", "restore_study"]

log = logging.getLogger(__name__)

#: Seconds between two purges of a serving server that deletes nothing (the trash is kept
#: for days: an expired entry lingers at most this long).
PURGE_EVERY = 600.0


class TrashIndex(Protocol):
    """The index's trash (:class:`securepacs.index.deletion.SqlDeletion`)."""

    def trashed(self, study_uid: str, *,
                organizations: Collection[str] | None) -> list[Trashed]: ...
    def trashed_keys(self, keys: Iterable[str]) -> set[str]: ...
    def untrash(self, keys: Iterable[str]) -> None: ...
    def expire(self, now: datetime, *, limit: int = ...) -> list[Trashed]: ...
    def pending(self, limit: int = ...) -> list[str]: ...
    def forget(self, keys: Iterable[str]) -> None: ...


class Adder(Protocol):
    def add(self, record: InstanceRecord, *, replace: bool = False,
            ready: Any = None, foreign: str = "") -> Any: ...
    def referenced_blob_keys(self, keys: Iterable[str]) -> set[str]: ...


class BlobReader(BlobDeleter, Protocol):
    def read(self, key: str) -> bytes: ...


class KeepTrash:
    """The index as the orphan sweep sees it: a trashed blob counts as referenced."""

    def __init__(self, index: Adder, trash: TrashIndex) -> None:
        self._index, self._trash = index, trash

    def referenced_blob_keys(self, keys: Iterable[str]) -> set[str]:
        wanted = list(keys)
        return self._index.referenced_blob_keys(wanted) | self._trash.trashed_keys(wanted)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


@dataclass(frozen=True)
class Restored:
    """What :func:`restore_study` did."""

    study_uid: str
    organization: str
    patient_id: str
    instances: int
    already_present: int


def restore_study(trash: TrashIndex, index: Adder, blobs: BlobReader, audit: AuditEvents,
                  *, user: str, study_uid: str, organization: str | None = None) -> Restored:
    """File the trashed instances of `study_uid` again (operator form), from their blobs.

    An instance stored again since the deletion (same SOP Instance UID) keeps the newer
    copy; the trashed blob is then deleted.

    Raises
    ------
    NothingToDelete
        No such study in the trash (of `organization`).
    ValueError
        Several organisations have it in the trash and none was named.
    StorageError
        The index or blob store failed (what was restored so far stays restored).
    """
    entries = trash.trashed(study_uid, organizations={organization} if organization else None)
    if not entries:
        raise NothingToDelete(f"no deleted study {study_uid.strip()} in the trash"
                              + (f" of organisation {organization}" if organization else ""))
    owners = sorted({e.organization for e in entries})
    if len(owners) > 1:
        raise ValueError(f"study {study_uid.strip()} is in the trash of several "
                         f"organisations ({', '.join(owners)}): name one with --org")
    added = present = 0
    counts: dict[str, int] = {}
    for entry in entries:
        data = blobs.read(entry.blob_key)
        try:
            ds = part10.read_header(data)
        except InvalidInstanceError as exc:
            raise StorageError(f"trashed blob {entry.blob_key} is not readable: {exc}") from None
        record = InstanceRecord(values=part10.level_values(ds),
                                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                                blob_key=entry.blob_key, size=len(data),
                                source_ae="restore-deleted", organization=entry.organization)
        result = index.add(record)
        trash.untrash([entry.blob_key])
        if getattr(result, "outcome", "added") == "added":
            added += 1
            counts[entry.sop_class_uid] = counts.get(entry.sop_class_uid, 0) + 1
        else:  # stored again since: the newer copy stays, this one goes
            present += 1
            blobs.delete(entry.blob_key)
    first = entries[0]
    performer = m.Peer(user, address=audit.local.address)
    audit.deleted(performer, patient_id=first.patient_id, patient_name=None,
                  study_uid=first.study_uid, sop_classes=counts, success=True,
                  description=f"study {first.study_uid} restored from the trash "
                              f"({added} instance(s), {present} already present again)",
                  action="C")
    return Restored(first.study_uid, first.organization, first.patient_id, added, present)


def purge_expired(trash: TrashIndex, blobs: BlobDeleter, audit: AuditEvents | None, *,
                  now: datetime, limit: int = 10_000) -> int:
    """Delete for good the trashed blobs whose time is over (at most `limit`); each purged
    study is audited (Delete, Permanent Erasure, by the archive). Returns how many."""
    expired = trash.expire(now, limit=limit)
    if not expired:
        return 0
    studies: dict[tuple[str, str, str], dict[str, int]] = {}
    for e in expired:
        classes = studies.setdefault((e.organization, e.study_uid, e.patient_id), {})
        classes[e.sop_class_uid] = classes.get(e.sop_class_uid, 0) + 1
    if audit is not None:
        for (org, uid, patient_id), classes in studies.items():
            audit.deleted(audit.local, patient_id=patient_id, patient_name=None, study_uid=uid,
                          sop_classes=classes, success=True,
                          description=f"study {uid} of {org or '-'}: {sum(classes.values())} "
                                      "trashed instance(s) purged (trash_days over)")
    sweep_deleted(trash, blobs)
    log.warning("trash: %d instance(s) of %d stud(ies) purged", len(expired), len(studies))
    return len(expired)


class PeriodicPurge:
    """Run `purge` at most once every `every` seconds, when called from a poll loop (the
    server's trust poll, every second): a server that deletes nothing still purges.

    Parameters
    ----------
    purge : callable
        The purge (:func:`purge_expired` bound to the index, blobs and audit).
    every : float
        Seconds between two runs; the first run is `every` after construction (the
        start-up has just purged).
    clock : callable
        Monotonic seconds; a parameter for tests.
    """

    def __init__(self, purge: Callable[[], object], *, every: float = PURGE_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if every <= 0:
            raise ValueError("every must be positive")
        self._purge, self._every, self._clock = purge, every, clock
        self._due = clock() + every

    def __call__(self) -> bool:
        """Purge if it is time; True when a purge ran (failed or not)."""
        at = self._clock()
        if at < self._due:
            return False
        self._due = at + self._every
        try:
            self._purge()
        except PacsError as exc:  # the poll loop goes on; the next run tries again
            log.warning("trash purge failed: %s", exc)
        return True
