"""Serialise audit records: the DICOM audit message XML (PS3.15 A.5.1) and JSON.

One responsibility: bytes in and out. :func:`to_xml` writes the ``AuditMessage`` document of
the PS3.15 A.5.1.1 schema (RELAX NG; elements in schema order, ``csd-code`` /
``codeSystemName`` / ``originalText`` coded values, base64 value pairs and queries).
:func:`to_json` writes a canonical JSON form (sorted keys, no spaces, UTF-8) that keeps the
``record_id`` and round-trips through :func:`from_json`; its bytes are what the database hash
chain covers (:func:`canonical`).

The XML carries no ``record_id`` (the schema has no place for it); syslog carries it in the
RFC 5424 structured data.
"""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from securepacs.audit.record import (
    Action,
    AuditRecord,
    AuditSource,
    Code,
    Outcome,
    Participant,
    ParticipantObject,
)

__all__ = ["canonical", "from_dict", "from_json", "to_dict", "to_json", "to_xml", "xml_time"]


def xml_time(at: datetime) -> str:
    """``xsd:dateTime`` in UTC with milliseconds, e.g. ``2026-11-21T23:50:16.123Z``."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _code(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.system,
                                       "originalText": code.meaning})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _participant(root: ET.Element, p: Participant) -> None:
    attrs = {"UserID": p.user_id, "UserIsRequestor": "true" if p.requestor else "false"}
    if p.alternative_user_id:
        attrs["AlternativeUserID"] = p.alternative_user_id
    if p.user_name:
        attrs["UserName"] = p.user_name
    if p.network_address:
        attrs["NetworkAccessPointID"] = p.network_address
        attrs["NetworkAccessPointTypeCode"] = p.network_type or "1"
    el = ET.SubElement(root, "ActiveParticipant", attrs)
    for role in p.roles:
        _code(el, "RoleIDCode", role)
    if p.media_type is not None:
        _code(ET.SubElement(el, "MediaIdentifier"), "MediaType", p.media_type)


def _object(root: ET.Element, o: ParticipantObject) -> None:
    attrs = {"ParticipantObjectID": o.object_id}
    if o.type_code is not None:
        attrs["ParticipantObjectTypeCode"] = str(o.type_code)
    if o.type_role is not None:
        attrs["ParticipantObjectTypeCodeRole"] = str(o.type_role)
    if o.life_cycle is not None:
        attrs["ParticipantObjectDataLifeCycle"] = str(o.life_cycle)
    el = ET.SubElement(root, "ParticipantObjectIdentification", attrs)
    _code(el, "ParticipantObjectIDTypeCode", o.id_type)
    if o.query is not None:
        ET.SubElement(el, "ParticipantObjectQuery").text = _b64(o.query)
    else:
        ET.SubElement(el, "ParticipantObjectName").text = o.name or o.object_id
    for kind, value in o.details:
        ET.SubElement(el, "ParticipantObjectDetail", {"type": kind, "value": _b64(value)})
    if o.sop_classes or o.accession_numbers or o.encrypted is not None \
            or o.anonymized is not None:
        desc = ET.SubElement(el, "ParticipantObjectDescription")
        for number in o.accession_numbers:
            ET.SubElement(desc, "Accession", {"Number": number})
        listed = dict(o.instances)
        for uid, count in o.sop_classes:
            sop_class = ET.SubElement(desc, "SOPClass", {"UID": uid, "NumberOfInstances": str(count)})
            for instance in listed.get(uid, ()):
                ET.SubElement(sop_class, "Instance", {"UID": instance})
        if o.encrypted is not None:
            ET.SubElement(desc, "Encrypted").text = "true" if o.encrypted else "false"
        if o.anonymized is not None:
            ET.SubElement(desc, "Anonymized").text = "true" if o.anonymized else "false"


def to_xml(record: AuditRecord) -> bytes:
    """The PS3.15 A.5.1 ``AuditMessage`` document, UTF-8, with an XML declaration.

    Raises
    ------
    ValueError
        The record has no audit source yet (an :class:`AuditTrail` sets it).
    """
    if record.audit_source is None:
        raise ValueError("the record has no audit source (AuditSourceIdentification)")
    root = ET.Element("AuditMessage")
    event = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": record.action.value, "EventDateTime": xml_time(record.at),
        "EventOutcomeIndicator": str(int(record.outcome))})
    _code(event, "EventID", record.event_id)
    for event_type in record.event_types:
        _code(event, "EventTypeCode", event_type)
    if record.outcome_description:
        ET.SubElement(event, "EventOutcomeDescription").text = record.outcome_description
    for participant in record.participants:
        _participant(root, participant)
    src = record.audit_source
    src_attrs = {"AuditSourceID": src.source_id}
    if src.site_id:
        src_attrs["AuditEnterpriseSiteID"] = src.site_id
    src_el = ET.SubElement(root, "AuditSourceIdentification", src_attrs)
    for type_code in src.type_codes:
        ET.SubElement(src_el, "AuditSourceTypeCode", {"csd-code": type_code})
    for obj in record.objects:
        _object(root, obj)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


# --------------------------------------------------------------------------- JSON

def _code_dict(code: Code) -> list[str]:
    return [code.code, code.system, code.meaning]


def _code_from(raw: list[str]) -> Code:
    return Code(*raw)


def to_dict(record: AuditRecord) -> dict[str, Any]:
    """A JSON-ready dict of every field (bytes as base64, time as ISO 8601 UTC)."""
    src = record.audit_source
    return {
        "record_id": record.record_id,
        "kind": record.kind,
        "event_id": _code_dict(record.event_id),
        "event_types": [_code_dict(c) for c in record.event_types],
        "action": record.action.value,
        "outcome": int(record.outcome),
        "outcome_description": record.outcome_description,
        "at": xml_time(record.at),
        "participants": [{
            "user_id": p.user_id, "requestor": p.requestor,
            "roles": [_code_dict(c) for c in p.roles],
            "alternative_user_id": p.alternative_user_id, "user_name": p.user_name,
            "network_address": p.network_address,
            "media_type": _code_dict(p.media_type) if p.media_type else None,
        } for p in record.participants],
        "audit_source": None if src is None else {
            "source_id": src.source_id, "site_id": src.site_id, "type_codes": list(src.type_codes)},
        "objects": [{
            "object_id": o.object_id, "id_type": _code_dict(o.id_type), "type_code": o.type_code,
            "type_role": o.type_role, "life_cycle": o.life_cycle, "name": o.name,
            "query": _b64(o.query) if o.query is not None else None,
            "details": [[k, _b64(v)] for k, v in o.details],
            "sop_classes": [[u, n] for u, n in o.sop_classes],
            "accession_numbers": list(o.accession_numbers), "encrypted": o.encrypted,
            # only when set: the canonical bytes (and hashes) of older records stay the same
            **({"anonymized": o.anonymized} if o.anonymized is not None else {}),
            # only when listed, so that the canonical bytes of older records stay the same
            **({"instances": [[u, list(i)] for u, i in o.instances]} if o.instances else {}),
        } for o in record.objects],
    }


def from_dict(data: dict[str, Any]) -> AuditRecord:
    """The inverse of :func:`to_dict`.

    Raises
    ------
    ValueError
        A field is missing or malformed.
    """
    try:
        src = data["audit_source"]
        return AuditRecord(
            record_id=data["record_id"], kind=data.get("kind", ""),
            event_id=_code_from(data["event_id"]), action=Action(data["action"]),
            outcome=Outcome(data["outcome"]),
            at=datetime.fromisoformat(data["at"].replace("Z", "+00:00")),
            event_types=tuple(_code_from(c) for c in data["event_types"]),
            outcome_description=data.get("outcome_description"),
            participants=tuple(Participant(
                user_id=p["user_id"], requestor=p["requestor"],
                roles=tuple(_code_from(c) for c in p["roles"]),
                alternative_user_id=p.get("alternative_user_id"), user_name=p.get("user_name"),
                network_address=p.get("network_address"),
                media_type=_code_from(p["media_type"]) if p.get("media_type") else None,
            ) for p in data["participants"]),
            audit_source=None if src is None else AuditSource(
                src["source_id"], src.get("site_id"), tuple(src.get("type_codes", ()))),
            objects=tuple(ParticipantObject(
                object_id=o["object_id"], id_type=_code_from(o["id_type"]),
                type_code=o.get("type_code"), type_role=o.get("type_role"),
                life_cycle=o.get("life_cycle"), name=o.get("name"),
                query=base64.b64decode(o["query"]) if o.get("query") is not None else None,
                details=tuple((k, base64.b64decode(v)) for k, v in o.get("details", ())),
                sop_classes=tuple((u, int(n)) for u, n in o.get("sop_classes", ())),
                accession_numbers=tuple(o.get("accession_numbers", ())),
                encrypted=o.get("encrypted"), anonymized=o.get("anonymized"),
                instances=tuple((u, tuple(i)) for u, i in o.get("instances", ())),
            ) for o in data["objects"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an audit record: {type(exc).__name__}: {exc}") from None


def canonical(record: AuditRecord) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8 (what the hash chain covers)."""
    return json.dumps(to_dict(record), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def to_json(record: AuditRecord) -> str:
    """The record as one line of canonical JSON text."""
    return canonical(record).decode("utf-8")


def from_json(text: str | bytes) -> AuditRecord:
    """Parse :func:`to_json` output.

    Raises
    ------
    ValueError
        Not JSON, or not an audit record.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not an audit record: not a JSON object")
    return from_dict(data)
