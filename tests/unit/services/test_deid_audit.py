"""The audit events of de-identified exports and of backups (services.audit_events), built
from a real Deidentifier and checked against the PS3.15 A.5.1 schema."""

from __future__ import annotations

from pathlib import Path

from auditschema import assert_valid
from audittrails import RecordingTrail
from deidfixtures import study as _study
from securepacs.audit.record import EventId, Outcome
from securepacs.audit.serialize import to_xml
from securepacs.services.audit_events import AuditEvents, BackupAudit, MediaAudit
from securepacs.services.deidentify import Deidentifier, Option


def _events() -> tuple[RecordingTrail, AuditEvents]:
    trail = RecordingTrail(audit_source="SECUREPACS")
    return trail, AuditEvents(trail, ae_title="SECUREPACS", address="pacs.example.org")


def test_one_message_per_original_patient_naming_no_new_uid() -> None:
    first, second = _study(2), _study(1)
    for ds in second:
        ds.PatientID, ds.PatientName = "PAT002", "Roe^Richard"
    deid = Deidentifier(frozenset({Option.RETAIN_PATIENT_CHARACTERISTICS}))
    out = [deid.apply(ds) for ds in [*first, *second, first[0]]]  # a file read twice
    trail, events = _events()
    MediaAudit(events, user="alice").deidentified(
        "/media/usb", deid.originals(), method=deid.method_codes(), success=True)
    assert [r.event_id for r in trail.records] == [EventId.EXPORT] * 2
    new = {str(ds.StudyInstanceUID) for ds in out if ds is not None} | \
        {str(ds.SOPInstanceUID) for ds in out if ds is not None}
    for record, original in zip(trail.records, (first, second), strict=True):
        xml = to_xml(record)
        assert_valid(xml)
        assert not [uid for uid in new if uid.encode() in xml]
        assert b"Doe^Jane" not in xml and b"Roe^Richard" not in xml and b"ANON-" not in xml
        study = next(o for o in record.objects if o.type_role == 3)
        assert study.object_id == original[0].StudyInstanceUID and study.anonymized is True
        assert study.sop_classes == ((original[0].SOPClassUID, len(original)),)
        assert next(o for o in record.objects if o.type_role == 1).object_id == \
            original[0].PatientID
        assert "113108 Retain Patient Characteristics Option" in (
            record.outcome_description or "")


def test_send_and_get_are_instances_transferred_between_the_right_parties() -> None:
    deid = Deidentifier()
    deid.apply(_study(1)[0])
    trail, events = _events()
    audit = MediaAudit(events, user="alice")
    audit.deidentified("./study", deid.originals(), method=deid.method_codes(), success=True,
                       peer_ae="PACS", peer_address="10.0.0.1")
    audit.deidentified("/tmp/copy", deid.originals(), method=deid.method_codes(),
                       success=False, peer_ae="PACS", peer_address="10.0.0.1", received=True)
    sent, got = trail.records
    for record in (sent, got):
        assert record.event_id == EventId.INSTANCES_TRANSFERRED
        assert_valid(to_xml(record))
    assert [p.user_id for p in sent.participants if p.requestor] == ["alice"]
    assert sent.participants[1].user_id == "PACS" and got.participants[0].user_id == "PACS"
    assert got.participants[1].user_id == "/tmp/copy"
    assert got.outcome == Outcome.MINOR_FAILURE


def test_backup_events(tmp_path: Path) -> None:
    trail, events = _events()
    audit = BackupAudit(events, user="root")
    audit.taken(tmp_path / "bk", success=True, instances=3, files=5, size=100,
                manifest_sha256="0" * 64)
    audit.taken(tmp_path / "bk2", success=False, detail="disk full")
    audit.verified(tmp_path / "bk", problems=["blobs/x: missing"], instances=3, files=5)
    audit.restored(tmp_path / "bk", instances=3, files=5, created="2026-12-03T10:00:00+00:00")
    kinds = [(r.event_id, r.outcome) for r in trail.records]
    assert kinds == [(EventId.EXPORT, Outcome.SUCCESS), (EventId.EXPORT, Outcome.SERIOUS_FAILURE),
                     (EventId.INSTANCES_ACCESSED, Outcome.SERIOUS_FAILURE),
                     (EventId.IMPORT, Outcome.SUCCESS)]
    for record in trail.records:
        assert_valid(to_xml(record))
    assert trail.records[0].objects[0].object_id == (tmp_path / "bk").as_uri()
    assert "blobs/x: missing" in (trail.records[2].outcome_description or "")
