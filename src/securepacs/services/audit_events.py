"""What the archive tells the audit trail, in its own words (PS3.15 A.5.3, IHE ATNA).

The edges (DICOM server, enrolment, media commands) say what happened with plain values;
this module builds the audit messages (:mod:`securepacs.audit.messages`) and hands them to
the trail, whose ``record`` never blocks. Every method is safe to call on the per-request
path: it does no I/O and swallows nothing but its own argument errors, which are logged.
:class:`NoAudit` stands in where no trail is configured (tests, tools).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol

from securepacs.audit import backup_messages as bm
from securepacs.audit import messages as m
from securepacs.audit.record import AuditRecord
from securepacs.errors import AccessRefused, CertificateRevoked
from securepacs.model.identity import Identity

log = logging.getLogger(__name__)

Alert = m.Alert  # re-exported: the edges name alerts without importing the audit package

#: The longest a successful C-STORE waits to be audited (:class:`StoredInstances`): after a
#: crash, at most this much of the acknowledged stores can be missing from the trail.
AGGREGATE_SECONDS = 1.0
#: The most instances one association holds unaudited; also the most one message lists.
AGGREGATE_LIMIT = 500


class TrailPort(Protocol):
    def record(self, record: AuditRecord) -> None: ...
    def record_durable(self, record: AuditRecord) -> bool: ...
    def check_writable(self) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


class AuditEvents:
    """The archive's audit events for one server (or one command).

    Parameters
    ----------
    trail : TrailPort
        Where records go (:class:`securepacs.audit.trail.AuditTrail`).
    ae_title : str
        This application's AE title (the audit source and the local participant).
    address : str
        This host's name or address.
    clock : callable
        Returns the current time (timezone-aware); a parameter for tests.
    """

    def __init__(self, trail: TrailPort, *, ae_title: str, address: str,
                 clock: Callable[[], datetime] = _now) -> None:
        self.trail = trail
        self.local = m.Peer.application(ae_title, address=address)
        self._clock = clock
        self._open: set[StoredInstances] = set()
        self._open_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._closing = threading.Event()

    def _emit(self, build: Callable[[], AuditRecord], *, durable: bool = False) -> None:
        try:
            if durable:  # written before returning (one transaction), see record_durable
                self.trail.record_durable(build())
            else:
                self.trail.record(build())
        except (TypeError, ValueError) as exc:  # a bad value must not break DICOM work
            log.error("audit record not built: %s", exc)

    def close(self, timeout: float = 10.0) -> None:
        """Audit the stores still held (:class:`StoredInstances`), deliver what is queued
        (within `timeout`) and stop the trail's workers."""
        self._closing.set()
        self.flush_stored()
        close = getattr(self.trail, "close", None)
        if close is not None:
            close(timeout=timeout)

    def check_writable(self) -> None:
        """Raise :class:`~securepacs.errors.AuditError` when new work must be refused."""
        self.trail.check_writable()

    @staticmethod
    def peer(identity: Identity | None, *, ae_title: str | None, address: str) -> m.Peer:
        if identity is not None and (identity.serial or identity.group != "plain"):
            # a certificate, or an identity without one (a DICOMweb import token)
            return m.Peer.from_identity(identity, ae_title=ae_title, address=address)
        return m.Peer(ae_title or "unknown", ae_title=ae_title or None, address=address)

    # -- application and authentication -------------------------------------------------
    def application(self, *, started: bool) -> None:
        self._emit(lambda: m.application_activity(started=started, application=self.local,
                                                  at=self._clock()))

    def authenticated(self, identity: Identity, *, address: str) -> None:
        peer = self.peer(identity, ae_title=None, address=address)
        self._emit(lambda: m.user_authentication(user=peer, node=self.local, accepted=True,
                                                 at=self._clock()))

    def refused(self, *, address: str, reason: str, name: str | None = None,
                alert: m.Alert | None = None) -> None:
        """A TLS connection or association refused; with `alert` also a Security Alert."""
        peer = m.Peer(name or address, address=address)
        self._emit(lambda: m.user_authentication(user=peer, node=self.local, accepted=False,
                                                 at=self._clock(), reason=reason))
        if alert is not None:
            self._emit(lambda: m.security_alert(alert=alert, reporter=self.local,
                                                subject=name or address, at=self._clock(),
                                                reason=reason, performer=peer))

    def certificate_refused(self, exc: AccessRefused, *, address: str, name: str) -> None:
        """A verified certificate the trust store refused: login failure + Security Alert."""
        alert = (m.Alert.REVOKED_CERTIFICATE if isinstance(exc, CertificateRevoked)
                 else m.Alert.UNKNOWN_CERTIFICATE)
        self.refused(address=address, reason=str(exc), alert=alert, name=f"CN={name}")

    def permission_refused(self, identity: Identity, *, address: str, ae_title: str,
                           permission: str) -> None:
        peer = self.peer(identity, ae_title=ae_title, address=address)
        self._emit(lambda: m.security_alert(
            alert=m.Alert.PERMISSION_REFUSED, reporter=self.local, subject=peer.user_id,
            at=self._clock(), reason=f"{permission} permission missing", performer=peer))

    def token_refused(self, *, address: str, reason: str) -> None:
        peer = m.Peer(address, address=address)
        self._emit(lambda: m.security_alert(alert=m.Alert.TOKEN_REUSE, reporter=self.local,
                                            subject=address, at=self._clock(), reason=reason,
                                            performer=peer))

    def configuration_changed(self, alert: m.Alert, *, subject: str, detail: str,
                              performer: m.Peer) -> None:
        """A change of who may connect, made on purpose: the CA created, a certificate issued,
        renewed or revoked, an invitation, a group's permissions, a client enrolled.

        Security Alert (PS3.15 A.5.3.11) with CID 403 Security Configuration (110129), Node
        Authentication (110126) or Security Roles Changed (110136), outcome Success, and the
        person or identity that made it as the requestor.
        """
        self._emit(lambda: m.security_alert(
            alert=alert, reporter=self.local, subject=subject, at=self._clock(), reason=detail,
            performer=performer, outcome=m.Outcome.SUCCESS))

    def enrolled(self, *, subject: str, address: str, detail: str) -> None:
        """A client enrolled with a token: the enrolling identity is the requestor."""
        self.configuration_changed(m.Alert.CLIENT_ENROLLED, subject=subject, detail=detail,
                                   performer=m.Peer(subject, address=address))

    # -- DICOM work -------------------------------------------------------------------
    def stored_instances(self, identity: Identity | None, *, ae_title: str,
                         address: str) -> StoredInstances:
        """The successful C-STOREs of one association, audited together (one DICOM
        Instances Transferred message per study, listing every instance); the caller
        closes it when the association ends, however it ends."""
        stores = StoredInstances(self, self.peer(identity, ae_title=ae_title, address=address))
        with self._open_lock:
            self._open.add(stores)
            if self._flusher is None and not self._closing.is_set():
                self._flusher = threading.Thread(target=self._flush_old, daemon=True,
                                                 name="audit-stores")
                self._flusher.start()
        return stores

    def _forget(self, stores: StoredInstances) -> None:
        with self._open_lock:
            self._open.discard(stores)

    def flush_stored(self, older_than: float | None = None) -> None:
        """Audit what every open :class:`StoredInstances` holds (only those whose oldest
        store is at least `older_than` seconds old, when given)."""
        with self._open_lock:
            stores = list(self._open)
        for each in stores:
            each.flush(older_than)

    def _flush_old(self) -> None:
        """Keep the window of :data:`AGGREGATE_SECONDS`, whatever the associations do."""
        while not self._closing.wait(AGGREGATE_SECONDS / 4):
            try:
                self.flush_stored(AGGREGATE_SECONDS)
            except Exception as exc:  # noqa: BLE001 - the thread must keep the window
                log.error("audit of stored instances: %s", exc)

    def stored(self, identity: Identity | None, *, ae_title: str, address: str,
               patient_id: str, study_uid: str, sop_class_uid: str, success: bool,
               description: str | None = None) -> None:
        """One C-STORE received (DICOM Instances Transferred, action Create)."""
        peer = self.peer(identity, ae_title=ae_title, address=address)
        study = m.Study.of(study_uid, {sop_class_uid: 1}) if study_uid else None
        self._emit(lambda: m.instances_transferred(
            action="C", outcome=0 if success else 4, source=peer, destination=self.local,
            patient_id=patient_id or "unknown", study_uids=[study] if study else [],
            at=self._clock(), requestor=peer, description=description))

    def retrieved(self, identity: Identity | None, *, ae_title: str, address: str,
                  destination: str, patient_ids: Sequence[str], study_uids: Sequence[str],
                  success: bool) -> None:
        """A C-MOVE or C-GET served (DICOM Instances Transferred, action Read)."""
        peer = self.peer(identity, ae_title=ae_title, address=address)
        target = peer if destination == ae_title else m.Peer(destination, ae_title=destination)
        patient = ",".join(sorted(set(patient_ids))) or "unknown"
        self._emit(lambda: m.instances_transferred(
            action="R", outcome=0 if success else 4, source=self.local, destination=target,
            patient_id=patient, study_uids=list(dict.fromkeys(study_uids)), at=self._clock(),
            requestor=peer))

    def crossed(self, identity: Identity | None, *, ae_title: str, address: str,
                caller_org: str, owners: Mapping[str, Sequence[str]], how: str,
                action: str = "read") -> None:
        """A read of another organisation's studies (a share, or the ``cross_org``
        permission): a Security Alert (Use of Restricted Function, outcome Success) naming
        the reading organisation and each owner with its studies (docs/tenants.md).
        `action`: ``read`` (retrieved), ``found`` (C-FIND / QIDO-RS matches), ``viewed``
        (the archive viewer)."""
        peer = self.peer(identity, ae_title=ae_title, address=address)
        detail = crossing(caller_org, owners, how=how, action=action)
        self._emit(lambda: m.security_alert(
            alert=m.Alert.CROSS_ORG_ACCESS, reporter=self.local, subject=peer.user_id,
            at=self._clock(), reason=detail, performer=peer, outcome=m.Outcome.SUCCESS))

    def deleted(self, performer: m.Peer, *, patient_id: str, patient_name: str | None,
                study_uid: str | None, sop_classes: Mapping[str, int] | None, success: bool,
                description: str, kept: bool = False, action: str = "D") -> None:
        """A study, series or instance deleted (DICOM Instances Accessed, action Delete,
        PS3.15 A.5.3.2; `kept`: into the trash, life cycle Logical Deletion), a deletion
        that failed or named nothing (outcome 4), or (action ``C``) restored from the trash.

        Durable: the record is in the audit store when this returns (a deletion cannot be
        undone, so a process killed right after it must not lose its record)."""
        study = m.Study.of(study_uid, sop_classes) if study_uid else None
        self._emit(lambda: m.instances_accessed(
            action=action, outcome=0 if success else 4, user=performer, archive=self.local,
            patient_id=patient_id or "unknown", patient_name=patient_name or None,
            study_uids=[study] if study else [], at=self._clock(), description=description,
            life_cycle=14 if kept else None), durable=True)

    def queried(self, identity: Identity | None, *, ae_title: str, address: str,
                sop_class_uid: str, identifier: bytes, success: bool) -> None:
        peer = self.peer(identity, ae_title=ae_title, address=address)
        self._emit(lambda: m.query(requestor=peer, responder=self.local,
                                   sop_class_uid=sop_class_uid, query=identifier,
                                   at=self._clock(), outcome=0 if success else 4))


class StoredInstances:
    """Successful C-STOREs of one association, audited together.

    PS3.15 A.5.3.5 lets one DICOM Instances Transferred message report several instances;
    each message here names one study (and its patient) with, per SOP class, the number
    of instances and every SOP Instance UID (``SOPClass/Instance``). A message is written
    when the association ends (release, abort, dropped connection, shutdown), when
    :data:`AGGREGATE_LIMIT` stores are held, and for stores held
    :data:`AGGREGATE_SECONDS` (a thread of :class:`AuditEvents` sees to that while the
    association runs): an association shorter than that gets one message per study.
    Refused stores are audited at once, one message each, as before.
    """

    def __init__(self, events: AuditEvents, peer: m.Peer) -> None:
        self._events = events
        self._peer = peer
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], dict[str, list[str]]] = {}
        self._count = 0
        self._since = 0.0

    def add(self, *, patient_id: str, study_uid: str, sop_class_uid: str,
            sop_instance_uid: str) -> None:
        """One instance stored (or kept as a duplicate) and about to be acknowledged."""
        with self._lock:
            if not self._count:
                self._since = time.monotonic()
            study = self._held.setdefault((patient_id, study_uid), {})
            study.setdefault(sop_class_uid, []).append(sop_instance_uid)
            self._count += 1
            full = self._count >= AGGREGATE_LIMIT
        if full:
            self.flush()

    def flush(self, older_than: float | None = None) -> int:
        """Write what is held (if its oldest store is `older_than` seconds old, when
        given): one message per study; how many."""
        with self._lock:
            if not self._count or (older_than is not None
                                   and time.monotonic() - self._since < older_than):
                return 0
            held, self._held, self._count = self._held, {}, 0
        events, peer = self._events, self._peer
        for (patient_id, study_uid), classes in held.items():
            events._emit(partial(m.instances_transferred, action="C", outcome=0, source=peer,
                                 destination=events.local, patient_id=patient_id or "unknown",
                                 study_uids=[m.Study.listing(study_uid, classes)],
                                 at=events._clock(), requestor=peer))
        return len(held)

    def close(self) -> None:
        """The association ended: audit what is held."""
        self._events._forget(self)
        self.flush()


def crossing(caller_org: str, owners: Mapping[str, Sequence[str]], *, how: str,
             action: str) -> str:
    """The description of a cross-organisation access (docs/tenants.md)."""
    parts = "; ".join(f"{owner}: {', '.join(sorted(set(uids)))}"
                      for owner, uids in sorted(owners.items()))
    return f"{caller_org} {action} studies of another organisation by {how} ({parts})"


class NoAudit(AuditEvents):
    """Audit events that go nowhere (no trail configured)."""

    def __init__(self) -> None:
        class _Drop:
            def record(self, record: AuditRecord) -> None:
                return None

            def record_durable(self, record: AuditRecord) -> bool:
                return False

            def check_writable(self) -> None:
                return None

        super().__init__(_Drop(), ae_title="SECUREPACS", address="localhost")


class MediaAudit:
    """Audit events of the media commands (Export, Import, Emergency Override, tampering)."""

    def __init__(self, events: AuditEvents, *, user: str) -> None:
        self.events = events
        self.user = m.Peer(user, address=events.local.address)

    def __enter__(self) -> MediaAudit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.events.close()  # deliver what was recorded before the command ends

    def exported(self, media_id: str, *, patient_ids: Sequence[str], study_uids: Sequence[str],
                 success: bool, encrypted: bool = True) -> None:
        patient = ",".join(sorted(set(patient_ids))) or "unknown"
        self.events._emit(lambda: m.export_media(
            user=self.user, media=m.Media(media_id), patient_id=patient,
            study_uids=list(dict.fromkeys(study_uids)), at=self.events._clock(),
            outcome=0 if success else 4, encrypted=encrypted))

    def deidentified(self, target: str, originals: Mapping[str, Mapping[str, Mapping[str, int]]],
                     *, method: Sequence[tuple[str, str]], success: bool,
                     peer_ae: str | None = None, peer_address: str | None = None,
                     received: bool = False, encrypted: bool = True) -> None:
        """A de-identified export (PS3.15 Annex E): one message per original patient.

        Without `peer_ae`: an Export (A.5.3.7) to the media `target`. With it: DICOM
        Instances Transferred (A.5.3.5, action C: the copies are new instances) sent to
        that AE at `peer_address` (``send``) or, `received`, retrieved from it and written
        de-identified to the folder `target` (``get``). Each message names the original patient and
        studies (`originals`: Patient ID -> Study UID -> SOP Class -> count, from
        :meth:`Deidentifier.originals`), marks each study ``Anonymized``, and says which
        CID 7050 codes were applied (EventOutcomeDescription). It carries neither the
        patient's name (only the ID, where A.5.3 puts it) nor the new UIDs or pseudonyms:
        the trail may go to a collector, and it must not become the key that links the
        de-identified copies back to the patient.
        """
        codes = ", ".join(f"{value} {meaning}" for value, meaning in method)
        description = f"de-identified (PS3.15 Annex E: {codes})"
        outcome = 0 if success else 4
        peer = m.Peer.application(peer_ae, address=peer_address) if peer_ae else None

        def build(patient: str, studies: list[m.Study]) -> AuditRecord:
            if peer is None:
                return m.export_media(
                    user=self.user, media=m.Media(target), patient_id=patient or "unknown",
                    study_uids=studies, at=self.events._clock(), outcome=outcome,
                    encrypted=encrypted, anonymized=True, description=description)
            # send: this user sends (and asks); get: the server sends to the folder, this
            # user asks
            folder = m.Peer(target, address=self.user.address)
            return m.instances_transferred(
                action="C", outcome=outcome, source=peer if received else self.user,
                destination=folder if received else peer,
                requestor=self.user if received else None, patient_id=patient or "unknown",
                study_uids=studies, at=self.events._clock(), description=description,
                anonymized=True)

        for patient, by_study in sorted(originals.items()):
            studies = [m.Study.of(uid, classes) for uid, classes in sorted(by_study.items())
                       if uid]
            self.events._emit(partial(build, patient, studies))

    def crossed(self, caller_org: str, owners: Mapping[str, Sequence[str]]) -> None:
        """Studies of other organisations shared with `caller_org` written to media by
        the local operator for it (``media create --study --org``): a Security Alert."""
        detail = crossing(caller_org, owners, how="share", action="exported")
        self.events._emit(lambda: m.security_alert(
            alert=m.Alert.CROSS_ORG_ACCESS, reporter=self.events.local,
            subject=self.user.user_id, at=self.events._clock(), reason=detail,
            performer=self.user, outcome=m.Outcome.SUCCESS))

    def imported(self, media_id: str, *, patient_id: str, study_uids: Sequence[str],
                 original_patient_id: str | None, success: bool) -> None:
        self.events._emit(lambda: m.import_media(
            user=self.user, media=m.Media(media_id), patient_id=patient_id or "unknown",
            study_uids=list(dict.fromkeys(study_uids)), at=self.events._clock(),
            outcome=0 if success else 4, original_patient_id=original_patient_id))

    def override(self, entry: dict[str, object]) -> None:
        """One step of an escrow recovery (the recovery log's entry) as Emergency Override."""
        outcome = str(entry.get("outcome", ""))
        media = entry.get("media")
        media_id = str(media.get("path", "media")) if isinstance(media, dict) else "media"
        reason = (f"escrow recovery: {outcome}; escrow certificate "
                  f"{entry.get('escrow_certificate_sha256') or 'unknown'}"
                  + (f"; reason: {entry['reason']}" if entry.get("reason") else ""))
        self.events._emit(lambda: m.emergency_override(
            user=self.user, started=outcome == "access-granted", at=self.events._clock(),
            reason=reason, media=m.Media(media_id),
            outcome=0 if outcome in ("access-granted", "extracted") else 4))

    def tampered(self, media_id: str, detail: str) -> None:
        self.events._emit(lambda: m.security_alert(
            alert=m.Alert.TAMPERED_MEDIA, reporter=self.events.local, subject=media_id,
            at=self.events._clock(), reason=detail, performer=self.user))


class BackupAudit:
    """Audit events of ``backup`` and ``restore`` (:mod:`securepacs.audit.backup_messages`)."""

    def __init__(self, events: AuditEvents, *, user: str) -> None:
        self.events = events
        self.user = m.Peer(user, address=events.local.address)

    def __enter__(self) -> BackupAudit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.events.close()  # deliver what was recorded before the command ends

    def taken(self, folder: Path, *, success: bool, instances: int | None = None,
              files: int | None = None, size: int | None = None,
              manifest_sha256: str | None = None, detail: str | None = None) -> None:
        self.events._emit(lambda: bm.backup_taken(
            user=self.user, uri=bm.folder_uri(folder), at=self.events._clock(),
            instances=instances, files=files, size=size, manifest_sha256=manifest_sha256,
            outcome=0 if success else 8, description=detail))

    def verified(self, folder: Path, *, problems: Sequence[str], instances: int,
                 files: int) -> None:
        detail = None if not problems else f"{len(problems)} problem(s): " + "; ".join(
            problems[:3])[:500]
        self.events._emit(lambda: bm.backup_verified(
            user=self.user, uri=bm.folder_uri(folder), at=self.events._clock(),
            intact=not problems, instances=instances, files=files, description=detail))

    def restored(self, folder: Path, *, instances: int, files: int, created: str) -> None:
        self.events._emit(lambda: bm.backup_restored(
            user=self.user, uri=bm.folder_uri(folder), at=self.events._clock(),
            instances=instances, files=files,
            description=f"restored from the backup taken {created}" if created else None))


class AdminAudit:
    """Audit events of the ``ca`` commands: who changed the trust, and how (Security Alert)."""

    def __init__(self, events: AuditEvents, *, user: str) -> None:
        self.events = events
        self.user = m.Peer(user, address=events.local.address)

    def __enter__(self) -> AdminAudit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.events.close()  # deliver what was recorded before the command ends

    def changed(self, alert: Alert, *, subject: str, detail: str) -> None:
        self.events.configuration_changed(alert, subject=subject, detail=detail,
                                          performer=self.user)
