"""Deleting a study, series or instance: the one service every edge uses (DICOMweb
``DELETE``, the archive viewer, ``securepacs delete``).

Who may delete (docs/deletion.md): an identity whose group carries the ``delete``
permission (never part of ``all``), and only its own organisation's entities. A study of
another organisation is answered exactly as an unknown one, even for a group that sees it
through a share or ``cross_org`` (those are read rights). With trust from files there
are no organisations, and no certificate carries ``delete``: only the operator form
(:meth:`DeletionService.delete_as_operator`, the local data folder) deletes there. Every
deletion, and every refused or failed one, is audited (PS3.15 A.5.3.2 DICOM Instances
Accessed, action Delete; a missing permission as a Security Alert, as for DIMSE).

The order that loses nothing it should keep:

1. the index rows go in one transaction, which also lists the removed blobs in
   ``blob_pending_delete`` (:mod:`securepacs.index.deletion`): once it commits nothing is
   findable or retrievable;
2. then the blobs are deleted, and their keys dropped from the list.

A crash between 1 and 2 leaves listed blobs; :func:`sweep_deleted` (run at start-up,
under the start-up lock) deletes exactly those. A retrieve that listed the instances
before step 1 fails cleanly on a missing blob after step 2 (a failed sub-operation).

When the study itself goes, step 1 also revokes its shares (a study stored again under
the same UID is not shared by them); the audit record says how many.

With the ``trash_days`` setting above 0, step 2 is postponed: the blobs go to the trash
(:mod:`securepacs.services.trash`), restorable until then, and are deleted by the purge.

Test hook: with the environment variable ``SECUREPACS_TEST_CRASH_AFTER=index`` the process
kills itself (SIGKILL) between steps 1 and 2; it exists only for the crash test.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from securepacs.audit import messages as m
from securepacs.errors import NotPermitted, PacsError, StorageError
from securepacs.model.deletion import DeletionTarget, Removal
from securepacs.model.identity import Identity, Permission
from securepacs.model.levels import Level
from securepacs.services.audit_events import AuditEvents
from securepacs.services.tenancy import Tenancy

__all__ = ["DeletionIndex", "DeletionService", "NothingToDelete", "SweepDeleted",
           "sweep_deleted"]

log = logging.getLogger(__name__)

#: The fault-injection point of the crash test (see the module docstring).
CRASH_ENV = "SECUREPACS_TEST_CRASH_AFTER"
#: Most blob keys one start-up sweep handles (the rest wait for the next start).
SWEEP_LIMIT = 100_000
_BATCH = 500
_MAX_REASON = 200


class NothingToDelete(PacsError):
    """No such study, series or instance among those the caller may delete (HTTP 404)."""


class DeletionIndex(Protocol):
    """The index's deletion side (:class:`securepacs.index.deletion.SqlDeletion`)."""

    def find(self, target: DeletionTarget, *,
             organizations: Collection[str] | None) -> list[Removal]: ...
    def remove(self, target: DeletionTarget, *, organizations: Collection[str] | None,
               keep_until: datetime | None = None) -> Removal | None: ...
    def pending(self, limit: int = ...) -> list[str]: ...
    def forget(self, keys: Iterable[str]) -> None: ...


class PendingList(Protocol):
    """The blob keys of deletions not yet finished (the index's pending list)."""

    def pending(self, limit: int = ...) -> list[str]: ...
    def forget(self, keys: Iterable[str]) -> None: ...


class BlobDeleter(Protocol):
    def delete(self, key: str) -> None: ...


def _reason(text: str | None) -> str:
    clean = " ".join((text or "").split())
    return clean[:_MAX_REASON]


class DeletionService:
    """Delete studies, series and instances (see the module docstring).

    Parameters
    ----------
    index : DeletionIndex
    blobs : BlobDeleter
    tenancy : Tenancy
        The tenant boundary (what organisation a caller deletes in).
    audit : AuditEvents
    trash_days : float
        0: blobs are deleted at once; more: kept restorable that many days
        (:mod:`securepacs.services.trash`).
    purge : callable, optional
        Run after each deletion (the trash's purge of expired entries).
    """

    def __init__(self, index: DeletionIndex, blobs: BlobDeleter, tenancy: Tenancy,
                 audit: AuditEvents, *, trash_days: float = 0.0,
                 purge: Callable[[], object] | None = None) -> None:
        self.index = index
        self.blobs = blobs
        self.tenancy = tenancy
        self.audit = audit
        self.trash_days = trash_days
        self._purge = purge

    # -- who ---------------------------------------------------------------------------
    def scope(self, identity: Identity | None) -> frozenset[str] | None:
        """The organisations whose entities `identity` may delete (None: any, when trust
        comes from files and there are no organisations)."""
        if not self.tenancy.enforced:
            return None
        return frozenset({self.tenancy.owner(identity)})

    def require(self, identity: Identity, *, address: str) -> None:
        """Allow `identity` to delete, or raise.

        Raises
        ------
        NotPermitted
            Its group lacks ``delete`` (audited as a Security Alert).
        AuditError
            The audit trail cannot record and the policy requires it.
        """
        self.audit.check_writable()
        if identity.allows(Permission.DELETE):
            return
        log.warning("deletion refused: %s lacks the 'delete' permission", identity.describe())
        self.audit.permission_refused(identity, address=address, ae_title="",
                                      permission=Permission.DELETE.value)
        raise NotPermitted(f"deleting needs the 'delete' permission, which the group "
                           f"{identity.group or '(none)'} of {identity.name!r} does not have; "
                           "ask the archive's administrator")

    def may_delete(self, identity: Identity, study_uid: str) -> bool:
        """Whether `identity` may delete the study `study_uid` (its permission and its own
        organisation's study): what the viewer asks before offering the deletion."""
        if not identity.allows(Permission.DELETE):
            return False
        try:
            target = DeletionTarget.study(study_uid)
        except ValueError:
            return False
        return bool(self.index.find(target, organizations=self.scope(identity)))

    # -- what ---------------------------------------------------------------------------
    def lookup(self, identity: Identity, target: DeletionTarget, *, address: str) -> Removal:
        """What deleting `target` would remove (patient, study, counts), for a confirmation.

        Raises
        ------
        NotPermitted, AuditError
            As :meth:`require`.
        NothingToDelete
            Not held by the caller's organisation (another's is answered the same way).
        """
        self.require(identity, address=address)
        found = self.index.find(target, organizations=self.scope(identity))
        if len(found) != 1:
            raise NothingToDelete(f"no {target.describe()} in the archive")
        return found[0]

    def delete(self, identity: Identity, target: DeletionTarget, *, address: str,
               reason: str | None = None) -> Removal:
        """Delete `target` for the caller `identity` (a certificate identity).

        Raises
        ------
        NotPermitted, AuditError
            As :meth:`require`.
        NothingToDelete
            Not held by the caller's organisation (audited as a failed deletion).
        StorageError
            The index failed: nothing was deleted.
        """
        self.require(identity, address=address)
        performer = self.audit.peer(identity, ae_title=None, address=address)
        scope = self.scope(identity)
        if scope is None and len(self.index.find(target, organizations=None)) > 1:
            raise NothingToDelete(f"{target.describe()} is held by several organisations: "
                                  "the operator deletes it (securepacs delete --data-dir)")
        return self._delete(performer, target, scope, reason,
                            who=identity.describe())

    def delete_as_operator(self, user: str, target: DeletionTarget, *,
                           organization: str | None = None,
                           reason: str | None = None) -> Removal:
        """Delete `target` on the local data folder, as the operator `user` (any
        organisation; `organization` chooses one when several hold the UID).

        Raises
        ------
        ValueError
            Several organisations hold it and none was named
            (:class:`securepacs.index.deletion.AmbiguousOwner`).
        NothingToDelete, StorageError, AuditError
        """
        self.audit.check_writable()
        performer = m.Peer(user, address=self.audit.local.address)
        scope = frozenset({organization}) if organization else None
        return self._delete(performer, target, scope, reason, who=f"operator {user}")

    def find_as_operator(self, target: DeletionTarget, *,
                         organization: str | None = None) -> list[Removal]:
        """What the operator form would delete: one summary per holding organisation."""
        return self.index.find(target, organizations={organization} if organization else None)

    # -- how ----------------------------------------------------------------------------
    def _delete(self, performer: m.Peer, target: DeletionTarget,
                scope: frozenset[str] | None, reason: str | None, *, who: str) -> Removal:
        why = _reason(reason)
        keep = (datetime.now(UTC) + timedelta(days=self.trash_days)
                if self.trash_days > 0 else None)
        try:
            removal = self.index.remove(target, organizations=scope, keep_until=keep)
        except StorageError as exc:
            study = target.uid if target.level is Level.STUDY else target.study_uid
            self.audit.deleted(performer, patient_id="", patient_name=None, study_uid=study,
                               sop_classes=None, success=False,
                               description=f"{target.describe()} not deleted: {exc}")
            raise
        if removal is None:
            self.audit.deleted(performer, patient_id="", patient_name=None,
                               study_uid=None, sop_classes=None, success=False,
                               description=f"{target.describe()} not deleted: not held by "
                                           "the caller's organisation")
            raise NothingToDelete(f"no {target.describe()} in the archive")
        detail = f"{target.describe()} deleted ({removal.instances} instance(s)" + (
            ", the study is gone" if removal.study_gone and target.level is not Level.STUDY
            else "") + ")" + (f"; {removal.shares_revoked} share(s) of the study revoked"
                              if removal.shares_revoked else "") + (
            f"; reason: {why}" if why else "") + (
            f"; restorable until {removal.kept_until.isoformat(timespec='seconds')}"
            if removal.kept_until is not None else "")
        self.audit.deleted(performer, patient_id=removal.patient_id,
                           patient_name=removal.patient_name, study_uid=removal.study_uid,
                           sop_classes=dict(removal.sop_classes), success=True,
                           description=detail, kept=removal.kept_until is not None)
        log.info("%s by %s (organisation %s, study %s)", detail, who,
                    removal.organization or "-", removal.study_uid)
        if os.environ.get(CRASH_ENV) == "index":  # the crash test's fault-injection point
            os.kill(os.getpid(), signal.SIGKILL)
        if removal.kept_until is None:
            self._delete_blobs(removal.blob_keys)
        if self._purge is not None:
            try:
                self._purge()
            except PacsError as exc:  # the deletion is done; the purge runs again later
                log.warning("trash purge failed: %s", exc)
        return removal

    def _delete_blobs(self, keys: Iterable[str]) -> None:
        """Delete the blobs of committed removals, then forget their keys; a blob that
        cannot be deleted now stays listed for the next sweep."""
        done: list[str] = []
        for key in keys:
            try:
                self.blobs.delete(key)
            except (StorageError, OSError) as exc:
                log.warning("blob %s stays listed for deletion at the next start: %s", key, exc)
                continue
            done.append(key)
            if len(done) >= _BATCH:
                self.index.forget(done)
                done = []
        if done:
            self.index.forget(done)


@dataclass(frozen=True)
class SweepDeleted:
    """What :func:`sweep_deleted` did: blobs deleted, and whether keys were left over."""

    blobs: int
    more: bool = False


def sweep_deleted(index: PendingList, blobs: BlobDeleter, *,
                  limit: int = SWEEP_LIMIT) -> SweepDeleted:
    """Finish deletions a crash interrupted: delete the blobs listed in the index's pending
    list (only those: a blob being written by an ingest is never listed), at most `limit`.

    Safe with several instances on one database (run under the start-up lock; deleting a
    missing blob and forgetting a forgotten key are no-ops)."""
    done = 0
    while done < limit:
        keys = index.pending(min(_BATCH, limit - done))
        if not keys:
            break
        gone: list[str] = []
        for key in keys:
            try:
                blobs.delete(key)
            except (StorageError, OSError) as exc:
                log.error("start-up: cannot delete the blob %s of a deletion: %s", key, exc)
                index.forget(gone)
                return SweepDeleted(done + len(gone), more=True)
            gone.append(key)
        index.forget(gone)
        done += len(gone)
    more = done >= limit and bool(index.pending(1))
    if done:
        log.warning("start-up check finished %d blob deletion(s) a stop interrupted", done)
    return SweepDeleted(done, more)
