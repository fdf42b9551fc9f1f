"""Audit records: the pure values of a DICOM audit message (PS3.15 A.5.1, RFC 3881).

One responsibility: hold what an audit message says, as frozen values, with the coded values
of PS3.15 A.5.1.2 and PS3.16 (CID 400 Audit Event ID, CID 401 Audit Event Type Code, CID 402
Audit Active Participant Role ID Code, CID 403 Security Alert Type Code, CID 404 Audit
Participant Object ID Type Code, CID 405 Media Type Code). Builders live in
:mod:`securepacs.audit.messages`, serialisation in :mod:`securepacs.audit.serialize`.

A record's ``record_id`` (a UUID) is not part of the PS3.15 XML; it travels with the record in
JSON, in the database and in the RFC 5424 structured data, so that a collector can tell a
duplicate from a new event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from securepacs.model.identity import Identity


@dataclass(frozen=True)
class Code:
    """A coded value (``csd-code``, ``codeSystemName``, ``originalText``, PS3.15 A.5.1)."""

    code: str
    system: str
    meaning: str


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


class EventId:
    """CID 400 Audit Event ID (PS3.16)."""

    APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
    BEGIN_TRANSFERRING = _dcm("110102", "Begin Transferring DICOM Instances")
    INSTANCES_ACCESSED = _dcm("110103", "DICOM Instances Accessed")
    INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
    EXPORT = _dcm("110106", "Export")
    IMPORT = _dcm("110107", "Import")
    QUERY = _dcm("110112", "Query")
    SECURITY_ALERT = _dcm("110113", "Security Alert")
    USER_AUTHENTICATION = _dcm("110114", "User Authentication")


class EventType:
    """CID 401 Audit Event Type Code and CID 403 Security Alert Type Code (PS3.16)."""

    APPLICATION_START = _dcm("110120", "Application Start")
    APPLICATION_STOP = _dcm("110121", "Application Stop")
    LOGIN = _dcm("110122", "Login")
    LOGOUT = _dcm("110123", "Logout")
    NODE_AUTHENTICATION = _dcm("110126", "Node Authentication")
    EMERGENCY_OVERRIDE_STARTED = _dcm("110127", "Emergency Override Started")
    SECURITY_CONFIGURATION = _dcm("110129", "Security Configuration")
    USE_OF_RESTRICTED_FUNCTION = _dcm("110132", "Use of Restricted Function")
    SECURITY_ROLES_CHANGED = _dcm("110136", "Security Roles Changed")
    EMERGENCY_OVERRIDE_STOPPED = _dcm("110138", "Emergency Override Stopped")
    #: Implementation-defined (PS3.15 A.5 allows extensions): no CID 403 code names a
    #: Secure DICOM File whose integrity check failed.
    MEDIA_INTEGRITY_FAILURE = Code("SPACS-001", "99SECUREPACS", "Media Integrity Failure")


class RoleId:
    """CID 402 Audit Active Participant Role ID Code (PS3.16)."""

    APPLICATION = _dcm("110150", "Application")
    APPLICATION_LAUNCHER = _dcm("110151", "Application Launcher")
    DESTINATION = _dcm("110152", "Destination Role ID")
    SOURCE = _dcm("110153", "Source Role ID")
    DESTINATION_MEDIA = _dcm("110154", "Destination Media")
    SOURCE_MEDIA = _dcm("110155", "Source Media")


class ObjectIdType:
    """CID 404 Audit Participant Object ID Type Code (RFC 3881 and DCM codes)."""

    PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
    USER_IDENTIFIER = Code("11", "RFC-3881", "User Identifier")
    URI = Code("12", "RFC-3881", "URI")
    STUDY_INSTANCE_UID = _dcm("110180", "Study Instance UID")
    SOP_CLASS_UID = _dcm("110181", "SOP Class UID")
    NODE_ID = _dcm("110182", "Node ID")


class MediaType:
    """CID 405 Media Type Code (PS3.16)."""

    USB = _dcm("110030", "USB Disk Emulation")
    EMAIL = _dcm("110031", "Email")
    CD = _dcm("110032", "CD")
    DVD = _dcm("110033", "DVD")
    URI = _dcm("110037", "URI")


class Action(str, enum.Enum):
    """EventActionCode (PS3.15 A.5.1)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(int, enum.Enum):
    """EventOutcomeIndicator (PS3.15 A.5.1)."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


@dataclass(frozen=True)
class Participant:
    """An ActiveParticipant: who took part, from where, in what role.

    Attributes
    ----------
    user_id : str
        ``CN=ws1,O=Clinic`` for a certificate identity, else the AE title or process name.
    requestor : bool
        UserIsRequestor.
    roles : tuple of Code
        RoleIDCode values (CID 402).
    alternative_user_id : str or None
        ``AETITLES=WS1`` for a DICOM application (PS3.15 A.5.2.1).
    user_name : str or None
    network_address : str or None
        NetworkAccessPointID: an IP address or host name.
    media_type : Code or None
        MediaIdentifier/MediaType for a media participant (CID 405).
    """

    user_id: str
    requestor: bool = False
    roles: tuple[Code, ...] = ()
    alternative_user_id: str | None = None
    user_name: str | None = None
    network_address: str | None = None
    media_type: Code | None = None

    @property
    def network_type(self) -> str | None:
        """NetworkAccessPointTypeCode: ``2`` for an IP address, ``1`` for a machine name."""
        if not self.network_address:
            return None
        host = self.network_address
        if ":" in host or host.replace(".", "").isdigit():
            return "2"
        return "1"


@dataclass(frozen=True)
class ParticipantObject:
    """A ParticipantObjectIdentification: a patient, a study, a query, an alert subject.

    Attributes
    ----------
    object_id : str
        ParticipantObjectID.
    id_type : Code
        ParticipantObjectIDTypeCode (CID 404).
    type_code, type_role, life_cycle : int or None
        ParticipantObjectTypeCode, ParticipantObjectTypeCodeRole, ParticipantObjectDataLifeCycle.
    name : str or None
        ParticipantObjectName; ``query`` is used instead when set.
    query : bytes or None
        ParticipantObjectQuery (the query identifier, base64 in XML).
    details : tuple of (str, bytes)
        ParticipantObjectDetail type/value pairs.
    sop_classes : tuple of (str, int)
        SOP Class UID and number of instances (ParticipantObjectDescription/SOPClass).
    instances : tuple of (str, tuple of str)
        SOP Class UID and the SOP Instance UIDs of that class (``SOPClass/Instance``), for
        a message that lists every instance it reports (PS3.15 A.5.3.5).
    accession_numbers : tuple of str
    encrypted : bool or None
        ParticipantObjectDescription/Encrypted (media).
    anonymized : bool or None
        ParticipantObjectDescription/Anonymized: the data that left was de-identified
        (PS3.15 Annex E); the object itself still names the original.
    """

    object_id: str
    id_type: Code
    type_code: int | None = None
    type_role: int | None = None
    life_cycle: int | None = None
    name: str | None = None
    query: bytes | None = None
    details: tuple[tuple[str, bytes], ...] = ()
    sop_classes: tuple[tuple[str, int], ...] = ()
    accession_numbers: tuple[str, ...] = ()
    encrypted: bool | None = None
    anonymized: bool | None = None
    instances: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class AuditSource:
    """AuditSourceIdentification: the system reporting the event.

    Attributes
    ----------
    source_id : str
        AuditSourceID, e.g. the archive's AE title or host name.
    site_id : str or None
        AuditEnterpriseSiteID.
    type_codes : tuple of str
        AuditSourceTypeCode values (A.5.1.2.1): ``4`` application server.
    """

    source_id: str
    site_id: str | None = None
    type_codes: tuple[str, ...] = ("4",)


@dataclass(frozen=True)
class AuditRecord:
    """One audit event, everything PS3.15 A.5.1 serialises, plus a unique ``record_id``.

    ``audit_source`` may be None when built; :class:`~securepacs.audit.trail.AuditTrail`
    fills in its own before any sink sees the record.
    """

    record_id: str
    event_id: Code
    action: Action
    outcome: Outcome
    at: datetime
    participants: tuple[Participant, ...]
    event_types: tuple[Code, ...] = ()
    outcome_description: str | None = None
    objects: tuple[ParticipantObject, ...] = ()
    audit_source: AuditSource | None = None
    kind: str = field(default="")

    @property
    def user_ids(self) -> tuple[str, ...]:
        """Every participant's UserID (for filters)."""
        return tuple(p.user_id for p in self.participants)

    @property
    def patient_ids(self) -> tuple[str, ...]:
        """Every Patient ID among the participant objects (for filters)."""
        return tuple(o.object_id for o in self.objects if o.id_type == ObjectIdType.PATIENT_NUMBER)


def identity_user_id(identity: Identity) -> str:
    """``CN=ws1,O=Clinic`` from a certificate identity (RFC 4514 order of our fields).

    Parameters
    ----------
    identity : Identity
        A verified peer.
    """
    parts = [f"CN={_rdn(identity.name)}"]
    if identity.organization:
        parts.append(f"O={_rdn(identity.organization)}")
    return ",".join(parts)


def _rdn(value: str) -> str:
    """Escape an attribute value as RFC 4514 2.4 asks."""
    out = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out
