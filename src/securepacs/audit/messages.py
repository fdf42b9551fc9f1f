"""Builders of the DICOM audit messages of PS3.15 A.5.3 (and IHE ATNA), as pure records.

One responsibility: turn what happened (who, from where, which patient and studies, when, with
what outcome) into an :class:`~securepacs.audit.record.AuditRecord` shaped as PS3.15 A.5.3
asks for each event: Application Activity (A.5.3.1), DICOM Instances Accessed (A.5.3.2),
Begin Transferring DICOM Instances
(A.5.3.3), DICOM Instances Transferred (A.5.3.5), Export (A.5.3.7), Import (A.5.3.8), Query
(A.5.3.12), Security Alert (A.5.3.11, also for emergency override, CID 403 110127/110138) and
User Authentication (A.5.3.13). Every builder takes keyword arguments only and the time as a
parameter (``at=``, timezone-aware); bad arguments raise TypeError/ValueError here, never in a
sink. :func:`to_xml` and :func:`to_json` are re-exported from
:mod:`securepacs.audit.serialize`.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from securepacs.audit.record import (
    Action,
    AuditRecord,
    AuditSource,
    Code,
    EventId,
    EventType,
    MediaType,
    ObjectIdType,
    Outcome,
    Participant,
    ParticipantObject,
    RoleId,
    identity_user_id,
)
from securepacs.audit.serialize import from_json, to_json, to_xml
from securepacs.model.identity import Identity

__all__ = [
    "Alert", "Media", "Peer", "Study", "application_activity", "begin_transferring",
    "emergency_override", "export_media", "from_json", "import_media", "instances_accessed",
    "instances_transferred",
    "query", "security_alert", "to_json", "to_xml", "user_authentication",
]


@dataclass(frozen=True)
class Peer:
    """A participant before its role is known: a certificate identity, an AE, a person.

    Attributes
    ----------
    user_id : str
        ``CN=ws1,O=Clinic`` for a certificate, else an AE title or process/user name.
    ae_title : str or None
        Written as AlternativeUserID ``AETITLES=...`` (PS3.15 A.5.2.1).
    address : str or None
        NetworkAccessPointID (IP address or host name).
    user_name : str or None
    """

    user_id: str
    ae_title: str | None = None
    address: str | None = None
    user_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.user_id, str) or not self.user_id.strip():
            raise ValueError("a participant needs a non-empty user_id")

    @classmethod
    def from_identity(cls, identity: Identity, *, ae_title: str | None = None,
                      address: str | None = None) -> Peer:
        """A peer authenticated by certificate: UserID ``CN=..,O=..``, UserName its description."""
        return cls(identity_user_id(identity), ae_title=_ae(ae_title), address=address,
                   user_name=identity.describe())

    @classmethod
    def application(cls, ae_title: str, *, address: str | None = None) -> Peer:
        """A DICOM application known only by its AE title (e.g. a plain-TCP peer, ourselves)."""
        title = _ae(ae_title)
        if not title:
            raise ValueError("an application peer needs an AE title")
        return cls(title, ae_title=title, address=address)

    def participant(self, *, requestor: bool, roles: tuple[Code, ...] = ()) -> Participant:
        return Participant(
            user_id=self.user_id, requestor=requestor, roles=roles,
            alternative_user_id=f"AETITLES={self.ae_title}" if self.ae_title else None,
            user_name=self.user_name, network_address=self.address)


@dataclass(frozen=True)
class Study:
    """A study named in a message: its UID and, optionally, SOP classes with instance
    counts, and the SOP Instance UIDs of each class (``SOPClass/Instance``)."""

    uid: str
    sop_classes: tuple[tuple[str, int], ...] = ()
    accession_numbers: tuple[str, ...] = ()
    instances: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(cls, uid: str, sop_classes: Mapping[str, int] | None = None,
           accession_number: str | None = None) -> Study:
        return cls(uid, tuple(sorted((sop_classes or {}).items())),
                   (accession_number,) if accession_number else ())

    @classmethod
    def listing(cls, uid: str, instances: Mapping[str, Sequence[str]]) -> Study:
        """A study with every instance named: SOP Class UID -> its SOP Instance UIDs
        (the count of each class is the length of its list)."""
        classes = sorted(instances)
        return cls(uid, tuple((c, len(instances[c])) for c in classes),
                   instances=tuple((c, tuple(instances[c])) for c in classes))


@dataclass(frozen=True)
class Media:
    """Removable media: an identifier (label, path or URI) and its CID 405 type."""

    media_id: str
    media_type: Code = MediaType.CD


class Alert(enum.Enum):
    """The security alerts securepacs raises, with their CID 403 type and subject kind."""

    REVOKED_CERTIFICATE = "revoked-certificate"
    UNKNOWN_CERTIFICATE = "unknown-certificate"
    PERMISSION_REFUSED = "permission-refused"
    TOKEN_REUSE = "token-reuse"
    TAMPERED_MEDIA = "tampered-media"
    # changes to who may connect (node authentication / security configuration)
    CA_CREATED = "ca-created"
    CERTIFICATE_ISSUED = "certificate-issued"
    CERTIFICATE_RENEWED = "certificate-renewed"
    CERTIFICATE_REVOKED = "certificate-revoked"
    ENROLMENT_INVITED = "enrolment-invited"
    CLIENT_ENROLLED = "client-enrolled"
    GROUP_CHANGED = "group-changed"
    # organisations as tenants (docs/tenants.md): who may see another's study
    SHARE_GRANTED = "share-granted"
    SHARE_REVOKED = "share-revoked"
    CROSS_ORG_ACCESS = "cross-org-access"


_ALERTS: dict[Alert, tuple[Code, Code]] = {
    Alert.REVOKED_CERTIFICATE: (EventType.NODE_AUTHENTICATION, ObjectIdType.NODE_ID),
    Alert.UNKNOWN_CERTIFICATE: (EventType.NODE_AUTHENTICATION, ObjectIdType.NODE_ID),
    Alert.PERMISSION_REFUSED: (EventType.USE_OF_RESTRICTED_FUNCTION, ObjectIdType.USER_IDENTIFIER),
    Alert.TOKEN_REUSE: (EventType.NODE_AUTHENTICATION, ObjectIdType.USER_IDENTIFIER),
    Alert.TAMPERED_MEDIA: (EventType.MEDIA_INTEGRITY_FAILURE, ObjectIdType.URI),
    Alert.CA_CREATED: (EventType.SECURITY_CONFIGURATION, ObjectIdType.NODE_ID),
    Alert.CERTIFICATE_ISSUED: (EventType.SECURITY_CONFIGURATION, ObjectIdType.NODE_ID),
    Alert.CERTIFICATE_RENEWED: (EventType.SECURITY_CONFIGURATION, ObjectIdType.NODE_ID),
    Alert.CERTIFICATE_REVOKED: (EventType.NODE_AUTHENTICATION, ObjectIdType.NODE_ID),
    Alert.ENROLMENT_INVITED: (EventType.SECURITY_CONFIGURATION, ObjectIdType.USER_IDENTIFIER),
    Alert.CLIENT_ENROLLED: (EventType.NODE_AUTHENTICATION, ObjectIdType.NODE_ID),
    Alert.GROUP_CHANGED: (EventType.SECURITY_ROLES_CHANGED, ObjectIdType.USER_IDENTIFIER),
    Alert.SHARE_GRANTED: (EventType.SECURITY_ROLES_CHANGED, ObjectIdType.USER_IDENTIFIER),
    Alert.SHARE_REVOKED: (EventType.SECURITY_ROLES_CHANGED, ObjectIdType.USER_IDENTIFIER),
    Alert.CROSS_ORG_ACCESS: (EventType.USE_OF_RESTRICTED_FUNCTION, ObjectIdType.USER_IDENTIFIER),
}
#: The alerts that record a change made on purpose (outcome Success), not a refusal.
CHANGES = frozenset({Alert.CA_CREATED, Alert.CERTIFICATE_ISSUED, Alert.CERTIFICATE_RENEWED,
                     Alert.CERTIFICATE_REVOKED, Alert.ENROLMENT_INVITED, Alert.CLIENT_ENROLLED,
                     Alert.GROUP_CHANGED, Alert.SHARE_GRANTED, Alert.SHARE_REVOKED,
                     Alert.CROSS_ORG_ACCESS})


# --------------------------------------------------------------------------- validation

def _ae(title: str | None) -> str | None:
    return title.strip() or None if title is not None else None


def _time(at: datetime) -> datetime:
    if not isinstance(at, datetime):
        raise TypeError(f"at must be a datetime, not {type(at).__name__}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("at must be timezone-aware (use UTC)")
    return at.replace(microsecond=at.microsecond // 1000 * 1000)  # XML keeps milliseconds


def _outcome(outcome: Outcome | int) -> Outcome:
    try:
        return Outcome(int(outcome))
    except (TypeError, ValueError):
        raise ValueError(f"outcome must be 0, 4, 8 or 12, not {outcome!r}") from None


def _action(action: Action | str) -> Action:
    try:
        return Action(action)
    except ValueError:
        raise ValueError(f"action must be one of C, R, U, D, E, not {action!r}") from None


def _peer(value: Peer, what: str) -> Peer:
    if not isinstance(value, Peer):
        raise TypeError(f"{what} must be a Peer, not {type(value).__name__}")
    return value


def _text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    return value.strip()


def _studies(study_uids: Sequence[str | Study]) -> tuple[Study, ...]:
    if isinstance(study_uids, str | Study):
        study_uids = [study_uids]
    out = []
    for item in study_uids:
        study = Study(_text(item, "study UID")) if isinstance(item, str) else item
        if not isinstance(study, Study):
            raise TypeError("study_uids holds str or Study values")
        out.append(study)
    return tuple(out)


def _new_id(record_id: str | None) -> str:
    return record_id if record_id else str(uuid.uuid4())


# --------------------------------------------------------------------------- participant objects

def _patient(patient_id: str, patient_name: str | None, life_cycle: int | None = None,
             details: tuple[tuple[str, bytes], ...] = ()) -> ParticipantObject:
    pid = _text(patient_id, "patient_id")
    return ParticipantObject(pid, ObjectIdType.PATIENT_NUMBER, type_code=1, type_role=1,
                             life_cycle=life_cycle, name=patient_name or pid, details=details)


def _study(study: Study, *, encrypted: bool | None = None, life_cycle: int | None = None,
           anonymized: bool | None = None) -> ParticipantObject:
    return ParticipantObject(study.uid, ObjectIdType.STUDY_INSTANCE_UID, type_code=2, type_role=3,
                             life_cycle=life_cycle, name=study.uid, sop_classes=study.sop_classes,
                             accession_numbers=study.accession_numbers, encrypted=encrypted,
                             anonymized=anonymized, instances=study.instances)


def _patient_and_studies(patient_id: str | None, patient_name: str | None,
                         study_uids: Sequence[str | Study], *, encrypted: bool | None = None,
                         life_cycle: int | None = None,
                         details: tuple[tuple[str, bytes], ...] = (),
                         anonymized: bool | None = None) -> tuple[ParticipantObject, ...]:
    objects = [_study(s, encrypted=encrypted, life_cycle=life_cycle, anonymized=anonymized)
               for s in _studies(study_uids)]
    if patient_id is not None:
        objects.append(_patient(patient_id, patient_name, life_cycle, details))
    return tuple(objects)


# --------------------------------------------------------------------------- builders

def application_activity(*, started: bool, application: Peer, at: datetime,
                         outcome: Outcome | int = Outcome.SUCCESS, launcher: Peer | None = None,
                         description: str | None = None, record_id: str | None = None,
                         audit_source: AuditSource | None = None) -> AuditRecord:
    """Application Activity (PS3.15 A.5.3.1): the archive started or stopped.

    Parameters
    ----------
    started : bool
        True for Application Start (110120), False for Application Stop (110121).
    application : Peer
        The application itself (role Application 110150), e.g. ``Peer.application("PACS")``.
    launcher : Peer, optional
        Who started or stopped it (role Application Launcher 110151), the requestor.
    """
    participants = [_peer(application, "application").participant(
        requestor=False, roles=(RoleId.APPLICATION,))]
    if launcher is not None:
        participants.append(_peer(launcher, "launcher").participant(
            requestor=True, roles=(RoleId.APPLICATION_LAUNCHER,)))
    return AuditRecord(
        _new_id(record_id), EventId.APPLICATION_ACTIVITY, Action.EXECUTE, _outcome(outcome),
        _time(at), tuple(participants),
        (EventType.APPLICATION_START if started else EventType.APPLICATION_STOP,),
        description, audit_source=audit_source, kind="application-activity")


def user_authentication(*, user: Peer, node: Peer, accepted: bool, at: datetime,
                        reason: str | None = None, logout: bool = False,
                        record_id: str | None = None,
                        audit_source: AuditSource | None = None) -> AuditRecord:
    """User Authentication (A.5.3.13): a TLS handshake accepted or refused (Login, 110122).

    Parameters
    ----------
    user : Peer
        The connecting peer (requestor): ``Peer.from_identity(...)`` when its certificate
        verified, else ``Peer("unknown", address=...)``.
    node : Peer
        The authenticating node (this server).
    accepted : bool
        Outcome 0 when True, 4 (minor failure) when refused.
    reason : str, optional
        Why the handshake was refused (EventOutcomeDescription).
    logout : bool
        Logout (110123), e.g. the association or connection ended.
    """
    return AuditRecord(
        _new_id(record_id), EventId.USER_AUTHENTICATION, Action.EXECUTE,
        Outcome.SUCCESS if accepted else Outcome.MINOR_FAILURE, _time(at),
        (_peer(user, "user").participant(requestor=True),
         _peer(node, "node").participant(requestor=False)),
        (EventType.LOGOUT if logout else EventType.LOGIN,), reason,
        audit_source=audit_source, kind="user-authentication")


def security_alert(*, alert: Alert, reporter: Peer, subject: str, at: datetime,
                   reason: str | None = None, performer: Peer | None = None,
                   outcome: Outcome | int = Outcome.MINOR_FAILURE, record_id: str | None = None,
                   audit_source: AuditSource | None = None) -> AuditRecord:
    """Security Alert (A.5.3.11): revoked/unknown certificate, permission refused, token reuse,
    tampered media.

    Parameters
    ----------
    alert : Alert
        Which alert; sets the EventTypeCode (CID 403) and the subject's ID type.
    reporter : Peer
        The node that detected it (this server or tool).
    subject : str
        What the alert is about: a certificate (``CN=..,O=.. serial 1a2b``), an identity, a
        token hash prefix, a media file path or URI.
    performer : Peer, optional
        The peer whose action caused the alert (requestor), when known.
    reason : str, optional
        Detail, e.g. ``"client certificate revoked"`` (EventOutcomeDescription).
    """
    if not isinstance(alert, Alert):
        raise TypeError("alert must be an Alert")
    event_type, id_type = _ALERTS[alert]
    participants = [_peer(reporter, "reporter").participant(requestor=performer is None)]
    if performer is not None:
        participants.append(_peer(performer, "performer").participant(requestor=True))
    subject_obj = ParticipantObject(_text(subject, "subject"), id_type, type_code=2, type_role=13,
                                    name=alert.value)
    return AuditRecord(
        _new_id(record_id), EventId.SECURITY_ALERT, Action.EXECUTE, _outcome(outcome), _time(at),
        tuple(participants), (event_type,), reason, (subject_obj,), audit_source,
        kind="security-alert")


def _transfer(event: Code, kind: str, action: Action, outcome: Outcome | int, source: Peer,
              destination: Peer, patient_id: str, study_uids: Sequence[str | Study], at: datetime,
              requestor: Peer | None, patient_name: str | None, description: str | None,
              record_id: str | None, audit_source: AuditSource | None,
              anonymized: bool | None = None) -> AuditRecord:
    src = _peer(source, "source")
    dst = _peer(destination, "destination")
    # without a third party, the sender of a store and the receiver of a read asked for it
    src_asks = requestor is None and action != Action.READ
    dst_asks = requestor is None and action == Action.READ
    participants = [src.participant(requestor=src_asks, roles=(RoleId.SOURCE,)),
                    dst.participant(requestor=dst_asks, roles=(RoleId.DESTINATION,))]
    if requestor is not None:
        participants.append(_peer(requestor, "requestor").participant(requestor=True))
    return AuditRecord(
        _new_id(record_id), event, action, _outcome(outcome), _time(at), tuple(participants),
        (), description, _patient_and_studies(patient_id, patient_name, study_uids,
                                              anonymized=anonymized),
        audit_source, kind=kind)


def instances_transferred(*, action: Action | str, outcome: Outcome | int, source: Peer,
                          destination: Peer, patient_id: str, study_uids: Sequence[str | Study],
                          at: datetime, requestor: Peer | None = None,
                          patient_name: str | None = None, description: str | None = None,
                          record_id: str | None = None,
                          audit_source: AuditSource | None = None,
                          anonymized: bool | None = None) -> AuditRecord:
    """DICOM Instances Transferred (A.5.3.5): a C-STORE received, a C-MOVE or C-GET sent.

    Parameters
    ----------
    action : Action or str
        ``C`` (create: first store of the instances), ``U`` (replaced existing ones), ``R``
        (read: sent by C-MOVE / C-GET).
    outcome : Outcome or int
        0, 4, 8 or 12.
    source, destination : Peer
        The sending and receiving nodes (roles 110153 Source and 110152 Destination).
    patient_id : str
        The Patient ID (one patient per message, A.5.3.5).
    study_uids : sequence of str or Study
        Study Instance UIDs, optionally with SOP classes and instance counts.
    requestor : Peer, optional
        The C-MOVE requestor when it is neither source nor destination. Without it the
        sender of a store (``C``/``U``) and the receiver of a read (``R``, C-GET) requested.
    anonymized : bool, optional
        The instances were de-identified on the way (``Anonymized`` on each study, which
        names the original Study Instance UID; `patient_id` is the original Patient ID).
    """
    return _transfer(EventId.INSTANCES_TRANSFERRED, "instances-transferred", _action(action),
                     outcome, source, destination, patient_id, study_uids, at, requestor,
                     patient_name, description, record_id, audit_source, anonymized)


def instances_accessed(*, action: Action | str, outcome: Outcome | int, user: Peer,
                       archive: Peer, patient_id: str, study_uids: Sequence[str | Study],
                       at: datetime, patient_name: str | None = None,
                       description: str | None = None, record_id: str | None = None,
                       audit_source: AuditSource | None = None,
                       life_cycle: int | None = None) -> AuditRecord:
    """DICOM Instances Accessed (A.5.3.2): instances created, read, updated or deleted in
    place (securepacs records deletions, action ``D``, and restores from the trash, ``C``).

    Parameters
    ----------
    action : Action or str
        ``C``, ``R``, ``U`` or ``D``.
    user : Peer
        The manipulating person or process (the requestor).
    archive : Peer
        The archive that holds the instances (a second, non-requesting participant).
    patient_id : str
        The Patient ID (one patient per message).
    study_uids : sequence of str or Study
        The studies touched, optionally with SOP classes and instance counts.
    description : str, optional
        EventOutcomeDescription (e.g. the reason the user gave, or why it failed).
    life_cycle : int, optional
        ParticipantObjectDataLifeCycle of the patient and studies; default 15 (permanent
        erasure) for ``D``; 14 (logical deletion) for a deletion kept restorable.
    """
    act = _action(action)
    if life_cycle is None and act is Action.DELETE:
        life_cycle = 15
    if act is Action.EXECUTE:
        raise ValueError("DICOM Instances Accessed takes action C, R, U or D")
    return AuditRecord(
        _new_id(record_id), EventId.INSTANCES_ACCESSED, act, _outcome(outcome), _time(at),
        (_peer(user, "user").participant(requestor=True),
         _peer(archive, "archive").participant(requestor=False)),
        (), description,
        _patient_and_studies(patient_id, patient_name, study_uids, life_cycle=life_cycle),
        audit_source, kind="instances-accessed")


def begin_transferring(*, source: Peer, destination: Peer, patient_id: str,
                       study_uids: Sequence[str | Study], at: datetime,
                       outcome: Outcome | int = Outcome.SUCCESS, requestor: Peer | None = None,
                       patient_name: str | None = None, record_id: str | None = None,
                       audit_source: AuditSource | None = None) -> AuditRecord:
    """Begin Transferring DICOM Instances (A.5.3.3): a C-MOVE/C-GET sub-operation set starts."""
    return _transfer(EventId.BEGIN_TRANSFERRING, "begin-transferring", Action.EXECUTE, outcome,
                     source, destination, patient_id, study_uids, at, requestor, patient_name,
                     None, record_id, audit_source)


def query(*, requestor: Peer, responder: Peer, sop_class_uid: str, query: bytes, at: datetime,
          outcome: Outcome | int = Outcome.SUCCESS, transfer_syntax: str | None = None,
          description: str | None = None, record_id: str | None = None,
          audit_source: AuditSource | None = None) -> AuditRecord:
    """Query (A.5.3.12): a C-FIND received.

    Parameters
    ----------
    requestor, responder : Peer
        The querying peer (roles Source) and this archive (Destination).
    sop_class_uid : str
        The Query/Retrieve information model (ParticipantObjectID, ID type 110181).
    query : bytes
        The request identifier as encoded (ParticipantObjectQuery, base64 in XML).
    transfer_syntax : str, optional
        Its transfer syntax UID (ParticipantObjectDetail ``TransferSyntax``).
    """
    if not isinstance(query, bytes | bytearray):
        raise TypeError("query must be bytes (the encoded identifier)")
    details = (("TransferSyntax", transfer_syntax.encode()),) if transfer_syntax else ()
    obj = ParticipantObject(_text(sop_class_uid, "sop_class_uid"), ObjectIdType.SOP_CLASS_UID,
                            type_code=2, type_role=3, query=bytes(query), details=details)
    return AuditRecord(
        _new_id(record_id), EventId.QUERY, Action.EXECUTE, _outcome(outcome), _time(at),
        (_peer(requestor, "requestor").participant(requestor=True, roles=(RoleId.SOURCE,)),
         _peer(responder, "responder").participant(requestor=False, roles=(RoleId.DESTINATION,))),
        (), description, (obj,), audit_source, kind="query")


def _media_participant(media: Media, role: Code) -> Participant:
    if not isinstance(media, Media):
        raise TypeError("media must be a Media")
    return Participant(_text(media.media_id, "media id"), requestor=False, roles=(role,),
                       media_type=media.media_type)


def export_media(*, user: Peer, media: Media, patient_id: str, study_uids: Sequence[str | Study],
                 at: datetime, outcome: Outcome | int = Outcome.SUCCESS, encrypted: bool = True,
                 patient_name: str | None = None, description: str | None = None,
                 record_id: str | None = None,
                 audit_source: AuditSource | None = None,
                 anonymized: bool | None = None) -> AuditRecord:
    """Export (A.5.3.7): encrypted media created (action R, one message per patient).

    Parameters
    ----------
    user : Peer
        Who created the media (requestor, role Source 110153).
    media : Media
        The media written (role Destination Media 110154, MediaIdentifier/MediaType).
    encrypted : bool
        ParticipantObjectDescription/Encrypted of each study (Secure DICOM Media).
    anonymized : bool, optional
        The media holds de-identified copies (``Anonymized`` on each study; the objects
        still name the original patient and studies, whose copies left).
    """
    return AuditRecord(
        _new_id(record_id), EventId.EXPORT, Action.READ, _outcome(outcome), _time(at),
        (_peer(user, "user").participant(requestor=True, roles=(RoleId.SOURCE,)),
         _media_participant(media, RoleId.DESTINATION_MEDIA)),
        (), description,
        _patient_and_studies(patient_id, patient_name, study_uids, encrypted=encrypted,
                             life_cycle=10, anonymized=anonymized),
        audit_source, kind="export")


def import_media(*, user: Peer, media: Media, patient_id: str, study_uids: Sequence[str | Study],
                 at: datetime, outcome: Outcome | int = Outcome.SUCCESS,
                 original_patient_id: str | None = None, encrypted: bool = True,
                 patient_name: str | None = None, description: str | None = None,
                 record_id: str | None = None,
                 audit_source: AuditSource | None = None) -> AuditRecord:
    """Import (A.5.3.8): media imported into the archive (action C), with reconciliation.

    Parameters
    ----------
    user : Peer
        Who imported (requestor, role Destination 110152).
    media : Media
        The media read (role Source Media 110155).
    patient_id : str
        The Patient ID as stored here (after reconciliation).
    original_patient_id : str, optional
        The Patient ID on the media when it was edited for this site: recorded as the
        patient's ParticipantObjectDetail ``OriginalPatientID`` and life cycle Amendment (3).
    """
    details: tuple[tuple[str, bytes], ...] = ()
    life_cycle = 2
    if original_patient_id is not None and original_patient_id != patient_id:
        details = (("OriginalPatientID", _text(original_patient_id, "original_patient_id")
                    .encode()),)
        life_cycle = 3
    objects = _patient_and_studies(None, None, study_uids, encrypted=encrypted, life_cycle=2)
    objects += (_patient(patient_id, patient_name, life_cycle, details),)
    return AuditRecord(
        _new_id(record_id), EventId.IMPORT, Action.CREATE, _outcome(outcome), _time(at),
        (_peer(user, "user").participant(requestor=True, roles=(RoleId.DESTINATION,)),
         _media_participant(media, RoleId.SOURCE_MEDIA)),
        (), description, objects, audit_source, kind="import")


def emergency_override(*, user: Peer, started: bool, at: datetime, reason: str | None = None,
                       media: Media | None = None, patient_id: str | None = None,
                       study_uids: Sequence[str | Study] = (),
                       outcome: Outcome | int = Outcome.SUCCESS, record_id: str | None = None,
                       audit_source: AuditSource | None = None) -> AuditRecord:
    """Emergency Override (Security Alert A.5.3.11, 110127 started / 110138 stopped).

    Recorded when encrypted media is opened with the escrow key instead of its password.

    Parameters
    ----------
    user : Peer
        The person or process using the override (requestor).
    started : bool
        True when access is granted, False when the override ends (files extracted).
    reason : str, optional
        The reason the person gave (EventOutcomeDescription).
    media : Media, optional
        The media opened: the alert subject (ID type URI).
    outcome : Outcome or int
        4 when the escrow key was refused.
    """
    participants = [_peer(user, "user").participant(requestor=True)]
    objects: list[ParticipantObject] = []
    if media is not None:
        participants.append(_media_participant(media, RoleId.SOURCE_MEDIA))
        objects.append(ParticipantObject(media.media_id, ObjectIdType.URI, type_code=2,
                                         type_role=13, name="emergency-override"))
    objects.extend(_patient_and_studies(patient_id, None, study_uids))
    return AuditRecord(
        _new_id(record_id), EventId.SECURITY_ALERT, Action.EXECUTE, _outcome(outcome), _time(at),
        tuple(participants),
        (EventType.EMERGENCY_OVERRIDE_STARTED if started else EventType.EMERGENCY_OVERRIDE_STOPPED,),
        reason, tuple(objects), audit_source, kind="emergency-override")
