"""What the archive tells the audit trail, in its own words (PS3.15 A.5.3, IHE ATNA).

The edges (DICOM server, enrolment, media commands) say what happened with plain values;
this module builds the audit messages (:mod:`securepacs.audit.messages`) and hands them to
the trail, whose ``record`` never blocks. Every method is safe to call on the per-request
path: it does no I/O and swallows nothing but its own argument errors, which are logged.
:class:`NoAudit` stands in where no trail is configured (tests, tools).
"""

from __future__ import annotations

import logging
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

    def _emit(self, build: Callable[[], AuditRecord], *, durable: bool = False) -> None:
        try:
            if durable:  # written before returning (one transaction), see record_durable
                self.trail.record_durable(build())
            else:
                self.trail.record(build())
        except (TypeError, ValueError) as exc:  # a bad value must not break DICOM work
            log.error("audit record not built: %s", exc)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (within `timeout`) and stop the trail's workers."""
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
                caller_org: str, owners: Mapping[str, Sequence[str]], how: str) -> None:
        """A read of another organisation's studies (a share, or the ``cross_org``
        permission): a Security Alert (Use of Restricted Function, outcome Success) naming
        the reading organisation and each owner with its studies (docs/tenants.md)."""
        peer = self.peer(identity, ae_title=ae_title, address=address)
        parts = "; ".join(f"{owner}: {', '.join(sorted(set(uids)))}"
                          for owner, uids in sorted(owners.items()))
        detail = f"{caller_org} read studies of another organisation by {how} ({parts})"
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
