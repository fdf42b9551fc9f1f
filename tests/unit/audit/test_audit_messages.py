"""PS3.15 A.5.3 audit messages: every builder's output validates against the A.5.1 schema."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from lxml import etree

from auditschema import assert_valid, relaxng
from securepacs.audit import backup_messages as bm
from securepacs.audit import messages as m
from securepacs.audit.record import Action, AuditSource, EventId, MediaType, Outcome
from securepacs.audit.serialize import canonical, from_json, to_json, to_xml
from securepacs.model.identity import Identity

AT = datetime(2026, 11, 21, 23, 50, 16, 123456, tzinfo=UTC)
SRC = AuditSource("SECUREPACS", site_id="Clinic")
WS1 = m.Peer.from_identity(Identity("ws1", 0x1A2B, organization="Clinic", group="radiology"),
                           ae_title="WS1", address="192.0.2.10")
PACS = m.Peer.application("SECUREPACS", address="pacs.example.org")
CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY = m.Study.of("1.2.826.0.1.3680043.2.1125.1", {CT: 3}, accession_number="A1")
MEDIA = m.Media("DISC-0001", MediaType.DVD)


def every_message() -> dict[str, m.AuditRecord]:
    return {
        "start": m.application_activity(started=True, application=PACS, at=AT,
                                        launcher=m.Peer("root", user_name="root")),
        "stop": m.application_activity(started=False, application=PACS, at=AT),
        "login-ok": m.user_authentication(user=WS1, node=PACS, accepted=True, at=AT),
        "login-refused": m.user_authentication(
            user=m.Peer("unknown", address="192.0.2.66"), node=PACS, accepted=False, at=AT,
            reason="client certificate not issued by a trusted CA"),
        "revoked": m.security_alert(alert=m.Alert.REVOKED_CERTIFICATE, reporter=PACS,
                                    performer=WS1, subject="CN=ws1,O=Clinic serial 1a2b",
                                    reason="client certificate revoked", at=AT),
        "unknown": m.security_alert(alert=m.Alert.UNKNOWN_CERTIFICATE, reporter=PACS,
                                    subject="CN=ghost serial ff", at=AT),
        "permission": m.security_alert(alert=m.Alert.PERMISSION_REFUSED, reporter=PACS,
                                       performer=WS1, subject="CN=ws1,O=Clinic",
                                       reason="C-MOVE not allowed for group radiology", at=AT),
        "token": m.security_alert(alert=m.Alert.TOKEN_REUSE, reporter=PACS,
                                  subject="token 3f2a...", reason="enrolment token already used",
                                  at=AT),
        "tampered": m.security_alert(alert=m.Alert.TAMPERED_MEDIA, reporter=m.Peer("operator"),
                                     subject="file:///media/cdrom/DICOM/IM0001", at=AT,
                                     reason="digest mismatch"),
        **{f"change-{alert.value}": m.security_alert(
            alert=alert, reporter=PACS, performer=m.Peer("alice", address="pacs.example.org"),
            subject="CN=ws1 serial 1a2b", reason=f"{alert.value} by the local user", at=AT,
            outcome=Outcome.SUCCESS) for alert in sorted(m.CHANGES, key=lambda a: a.value)},
        "store": m.instances_transferred(action=Action.CREATE, outcome=Outcome.SUCCESS,
                                         source=WS1, destination=PACS, patient_id="PAT-1",
                                         study_uids=[STUDY], at=AT, patient_name="Doe^Jane"),
        "move": m.instances_transferred(action="R", outcome=4, source=PACS,
                                        destination=m.Peer.application("VIEWER", address="10.0.0.2"),
                                        requestor=WS1, patient_id="PAT-1",
                                        study_uids=[STUDY.uid], at=AT,
                                        description="1 of 3 sub-operations failed"),
        "get": m.instances_transferred(action="R", outcome=0, source=PACS, destination=WS1,
                                       patient_id="PAT-1", study_uids=STUDY.uid, at=AT),
        "begin": m.begin_transferring(source=PACS, destination=WS1, patient_id="PAT-1",
                                      study_uids=[STUDY], at=AT),
        "query": m.query(requestor=WS1, responder=PACS, sop_class_uid="1.2.840.10008.5.1.4.1.2.2.1",
                         query=b"\x08\x00\x52\x00\x06\x00STUDY <&>", at=AT,
                         transfer_syntax="1.2.840.10008.1.2.1"),
        "export": m.export_media(user=m.Peer("alice", address="10.0.0.5"), media=MEDIA,
                                 patient_id="PAT-1", study_uids=[STUDY], at=AT),
        "import": m.import_media(user=m.Peer("bob"), media=m.Media("/media/usb", MediaType.USB),
                                 patient_id="SITE-9", original_patient_id="PAT-1",
                                 study_uids=[STUDY], at=AT),
        "override-start": m.emergency_override(user=m.Peer("dr.who"), started=True, at=AT,
                                               reason="password lost, patient in ER",
                                               media=MEDIA, patient_id="PAT-1",
                                               study_uids=[STUDY]),
        "override-stop": m.emergency_override(user=m.Peer("dr.who"), started=False, at=AT),
        "export-deidentified": m.export_media(
            user=m.Peer("alice"), media=MEDIA, patient_id="PAT-1", study_uids=[STUDY], at=AT,
            anonymized=True, description="de-identified (PS3.15 Annex E: 113100 ...)"),
        "send-deidentified": m.instances_transferred(
            action="C", outcome=0, source=m.Peer("alice"), destination=PACS,
            patient_id="PAT-1", study_uids=[STUDY], at=AT, anonymized=True),
        "backup": bm.backup_taken(user=m.Peer("root"), uri="file:///srv/backup/2026-12-03",
                                  at=AT, instances=120, files=130, size=10 ** 9,
                                  manifest_sha256="ab" * 32),
        "backup-failed": bm.backup_taken(user=m.Peer("root"), uri="file:///srv/b", at=AT,
                                         outcome=8, description="disk full"),
        "backup-verified": bm.backup_verified(user=m.Peer("root"), uri="file:///srv/b", at=AT,
                                              intact=True, instances=120, files=130),
        "backup-broken": bm.backup_verified(user=m.Peer("root"), uri="file:///srv/b", at=AT,
                                            intact=False, description="1 problem(s): x"),
        "restore": bm.backup_restored(user=m.Peer("root"), uri="file:///srv/b", at=AT,
                                      instances=120, files=130),
    }


@pytest.mark.parametrize("name", list(every_message()))
def test_every_message_validates_against_the_ps3_15_schema(name: str) -> None:
    record = every_message()[name]
    document = to_xml(replace(record, audit_source=SRC))
    assert_valid(document)


@pytest.mark.parametrize("name", list(every_message()))
def test_json_round_trip(name: str) -> None:
    record = replace(every_message()[name], audit_source=SRC)
    again = from_json(to_json(record))
    assert again == record
    assert canonical(again) == canonical(record)


def test_schema_rejects_a_broken_message() -> None:
    good = to_xml(replace(every_message()["store"], audit_source=SRC))
    doc = etree.fromstring(good)
    doc.find("EventIdentification").set("EventOutcomeIndicator", "3")
    assert not relaxng().validate(doc)


def test_store_message_fields() -> None:
    record = replace(every_message()["store"], audit_source=SRC)
    doc = etree.fromstring(to_xml(record))
    event = doc.find("EventIdentification")
    assert event.get("EventActionCode") == "C"
    assert event.get("EventDateTime") == "2026-11-21T23:50:16.123Z"
    assert event.find("EventID").get("csd-code") == "110104"
    sender, receiver = doc.findall("ActiveParticipant")
    assert sender.get("UserID") == "CN=ws1,O=Clinic"
    assert sender.get("AlternativeUserID") == "AETITLES=WS1"
    assert sender.get("NetworkAccessPointID") == "192.0.2.10"
    assert sender.get("NetworkAccessPointTypeCode") == "2"
    assert sender.get("UserIsRequestor") == "true"
    assert sender.find("RoleIDCode").get("csd-code") == "110153"
    assert receiver.get("NetworkAccessPointTypeCode") == "1"
    assert receiver.find("RoleIDCode").get("csd-code") == "110152"
    study, patient = doc.findall("ParticipantObjectIdentification")
    assert study.get("ParticipantObjectID") == STUDY.uid
    assert study.find("ParticipantObjectIDTypeCode").get("csd-code") == "110180"
    sop = study.find("ParticipantObjectDescription/SOPClass")
    assert (sop.get("UID"), sop.get("NumberOfInstances")) == (CT, "3")
    assert patient.get("ParticipantObjectID") == "PAT-1"
    assert patient.find("ParticipantObjectName").text == "Doe^Jane"
    assert doc.find("AuditSourceIdentification").get("AuditSourceID") == "SECUREPACS"
    assert record.user_ids == ("CN=ws1,O=Clinic", "SECUREPACS")
    assert record.patient_ids == ("PAT-1",)


def test_refused_handshake_carries_the_reason() -> None:
    record = every_message()["login-refused"]
    assert record.event_id == EventId.USER_AUTHENTICATION
    assert record.outcome == Outcome.MINOR_FAILURE
    assert record.outcome_description == "client certificate not issued by a trusted CA"


def test_import_records_reconciliation() -> None:
    doc = etree.fromstring(to_xml(replace(every_message()["import"], audit_source=SRC)))
    patient = doc.findall("ParticipantObjectIdentification")[-1]
    assert patient.get("ParticipantObjectID") == "SITE-9"
    assert patient.get("ParticipantObjectDataLifeCycle") == "3"
    detail = patient.find("ParticipantObjectDetail")
    assert detail.get("type") == "OriginalPatientID"
    assert detail.get("value") == "UEFULTE="  # base64 of PAT-1
    media = doc.findall("ActiveParticipant")[1]
    assert media.find("MediaIdentifier/MediaType").get("csd-code") == "110030"


def test_identity_user_id_escapes_rfc4514() -> None:
    peer = m.Peer.from_identity(Identity("a,b", 1, organization="X=Y"))
    assert peer.user_id == "CN=a\\,b,O=X\\=Y"


def test_builders_validate_at_the_edge() -> None:
    with pytest.raises(ValueError, match="timezone"):
        m.application_activity(started=True, application=PACS, at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="outcome"):
        m.application_activity(started=True, application=PACS, at=AT, outcome=3)
    with pytest.raises(ValueError, match="action"):
        m.instances_transferred(action="X", outcome=0, source=WS1, destination=PACS,
                                patient_id="P", study_uids=["1.2"], at=AT)
    with pytest.raises(TypeError):
        m.instances_transferred(action="C", outcome=0, source="WS1", destination=PACS,  # type: ignore[arg-type]
                                patient_id="P", study_uids=["1.2"], at=AT)
    with pytest.raises(ValueError):
        m.Peer("  ")
    with pytest.raises(ValueError, match="audit source"):
        to_xml(every_message()["stop"])


def test_times_are_written_in_utc() -> None:
    local = AT.astimezone(timezone(timedelta(hours=2)))
    record = m.application_activity(started=True, application=PACS, at=local)
    doc = etree.fromstring(to_xml(replace(record, audit_source=SRC)))
    assert doc.find("EventIdentification").get("EventDateTime") == "2026-11-21T23:50:16.123Z"


def test_record_ids_are_unique_unless_given() -> None:
    a = m.application_activity(started=True, application=PACS, at=AT)
    b = m.application_activity(started=True, application=PACS, at=AT)
    c = m.application_activity(started=True, application=PACS, at=AT, record_id="fixed")
    assert a.record_id != b.record_id and c.record_id == "fixed"


def test_trust_changes_are_successful_security_alerts_with_who() -> None:
    """Issue 18: ca issue/revoke/renew/invite, groups and enrolments (PS3.15 A.5.3.11)."""
    codes = {a: m.security_alert(alert=a, reporter=PACS, performer=m.Peer("alice"),
                                 subject="group radiology", at=AT, outcome=Outcome.SUCCESS)
             for a in m.CHANGES}
    for alert, record in codes.items():
        assert record.event_id == EventId.SECURITY_ALERT
        assert record.outcome == Outcome.SUCCESS
        assert "alice" in record.user_ids
        requestors = [p.user_id for p in record.participants if p.requestor]
        assert requestors == ["alice"], alert
    assert codes[m.Alert.GROUP_CHANGED].event_types[0].code == "110136"
    assert codes[m.Alert.CERTIFICATE_ISSUED].event_types[0].code == "110129"
    assert codes[m.Alert.CERTIFICATE_REVOKED].event_types[0].code == "110126"


def test_deidentified_export_names_the_originals_marked_anonymized() -> None:
    record = replace(every_message()["export-deidentified"], audit_source=SRC)
    doc = etree.fromstring(to_xml(record))
    study = doc.find(f"ParticipantObjectIdentification[@ParticipantObjectID='{STUDY.uid}']")
    assert study is not None
    assert study.findtext("ParticipantObjectDescription/Anonymized") == "true"
    assert study.findtext("ParticipantObjectDescription/Encrypted") == "true"
    patient = doc.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
    assert patient is not None and patient.get("ParticipantObjectID") == "PAT-1"
    # records without the flag serialise as before (their chain hashes stay the same)
    assert "anonymized" not in to_json(every_message()["export"])


def test_backup_messages_name_the_folder_and_no_patient() -> None:
    record = replace(every_message()["backup"], audit_source=SRC)
    doc = etree.fromstring(to_xml(record))
    assert doc.find("EventIdentification/EventID").get("csd-code") == "110106"
    objects = doc.findall("ParticipantObjectIdentification")
    assert [o.get("ParticipantObjectTypeCodeRole") for o in objects] == ["17"]
    assert objects[0].get("ParticipantObjectDataLifeCycle") == "13"
    details = {d.get("type") for d in objects[0].findall("ParticipantObjectDetail")}
    assert details == {"Instances", "Files", "Bytes", "ManifestSHA256"}
    broken = every_message()["backup-broken"]
    assert broken.outcome == Outcome.SERIOUS_FAILURE
    assert every_message()["restore"].event_id == EventId.IMPORT
    with pytest.raises(ValueError, match="file: URI"):
        bm.backup_taken(user=m.Peer("root"), uri="/srv/b", at=AT)
