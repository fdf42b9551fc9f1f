"""Deletion (issue 20): the order (index rows, then blobs, then the pending list), the
tenant and permission rules, the start-up sweep, and the audit message; on the real
SQLite index and filesystem blob store."""

from __future__ import annotations

import sys
from dataclasses import replace
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from auditschema import assert_valid  # noqa: E402
from audittrails import RecordingTrail  # noqa: E402
from factories import make_dataset  # noqa: E402
from securepacs.audit.record import Action, AuditSource, EventId  # noqa: E402
from securepacs.audit.serialize import to_xml  # noqa: E402
from securepacs.blobs.filesystem import FileBlobStore  # noqa: E402
from securepacs.errors import NotPermitted, StorageError  # noqa: E402
from securepacs.index.deletion import AmbiguousOwner, SqlDeletion  # noqa: E402
from securepacs.index.repository import SqlIndex  # noqa: E402
from securepacs.model.deletion import DeletionTarget  # noqa: E402
from securepacs.model.identity import ALL_PERMISSIONS, Identity, Permission  # noqa: E402
from securepacs.model.levels import Level, Root  # noqa: E402
from securepacs.model.query import Key, Query  # noqa: E402
from securepacs.services.audit_events import AuditEvents  # noqa: E402
from securepacs.services.deletion import (  # noqa: E402
    DeletionService,
    NothingToDelete,
    sweep_deleted,
)
from securepacs.services.ingest import IngestService, Received  # noqa: E402
from securepacs.services.tenancy import Tenancy  # noqa: E402

STUDY, SERIES_CT, SERIES_MR = "1.2.826.0.1.3680043.10.1234.7", "1.2.826.0.1.3680043.10.1234.7.1", \
    "1.2.826.0.1.3680043.10.1234.7.2"
DELETER = Identity("del1", 0x11, organization="Clinic A", group="admins",
                   permissions=ALL_PERMISSIONS | {Permission.DELETE})


class Recorder:
    """Wraps a real object and records the order of the calls that matter."""

    def __init__(self, inner: Any, log: list[str], name: str, fail: bool = False) -> None:
        self._inner, self._log, self._name, self._fail = inner, log, name, fail

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._inner, attr)
        if attr not in ("remove", "delete", "forget"):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self._log.append(f"{self._name}.{attr}")
            if self._fail:
                raise StorageError("injected failure")
            return target(*args, **kwargs)
        return call


def received(org: str, **kwargs: Any) -> Received:
    ds = make_dataset(**kwargs)
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    length = int.from_bytes(raw[140:144], "little")
    return Received(raw[144 + length:], ds.SOPClassUID, ds.SOPInstanceUID,
                    ds.file_meta.TransferSyntaxUID, "SCU", organization=org)


class Archive:
    def __init__(self, tmp: Path) -> None:
        url = f"sqlite:///{tmp / 'index.sqlite'}"
        self.index = SqlIndex(url)
        self.index.create_schema()
        self.deletion = SqlDeletion(url)
        self.blobs = FileBlobStore(tmp / "blobs")
        self.ingest = IngestService(self.index, self.blobs)
        self.trail = RecordingTrail()
        self.audit = AuditEvents(self.trail, ae_title="SECUREPACS", address="pacs.test")
        self.sops: dict[str, list[str]] = {}

    def store(self, org: str, series: str, count: int, modality: str = "CT",
              study: str = STUDY, patient: str = "PAT-A") -> None:
        for n in range(count):
            item = received(org, study_uid=study, series_uid=series, modality=modality,
                            patient_id=patient, patient_name="Alpha^Ann", instance_number=n + 1)
            self.ingest.store(item)
            self.sops.setdefault(series, []).append(item.sop_instance_uid)

    def service(self, index: Any = None, blobs: Any = None) -> DeletionService:
        return DeletionService(index or self.deletion, blobs or self.blobs, Tenancy(),
                               self.audit)

    def blob_count(self) -> int:
        return len(list(self.blobs.keys()))

    def studies(self) -> list[dict[str, str]]:
        return self.index.find(Query(Root.STUDY, Level.STUDY, (
            Key("StudyInstanceUID", "UI", ""), Key("ModalitiesInStudy", "CS", ""),
            Key("NumberOfStudyRelatedInstances", "IS", ""))))


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    return Archive(tmp_path)


def test_rows_go_first_then_blobs_then_the_pending_list(archive: Archive) -> None:
    archive.store("Clinic A", SERIES_CT, 3)
    calls: list[str] = []
    service = archive.service(Recorder(archive.deletion, calls, "index"),
                              Recorder(archive.blobs, calls, "blobs"))
    removal = service.delete(DELETER, DeletionTarget.study(STUDY), address="192.0.2.1",
                             reason="wrong patient")
    assert calls == ["index.remove", "blobs.delete", "blobs.delete", "blobs.delete",
                     "index.forget"]
    assert (removal.instances, removal.patient_id, removal.study_gone) == (3, "PAT-A", True)
    assert removal.patient_name == "Alpha^Ann"  # as stored, not the index's match form
    assert archive.studies() == []
    assert archive.index.count_instances() == 0
    assert archive.blob_count() == 0
    assert archive.deletion.pending() == []


def test_a_series_leaves_its_study_with_the_other_modalities(archive: Archive) -> None:
    archive.store("Clinic A", SERIES_CT, 2, "CT")
    archive.store("Clinic A", SERIES_MR, 1, "MR")
    removal = archive.service().delete(DELETER, DeletionTarget.series(SERIES_CT),
                                       address="192.0.2.1")
    assert (removal.instances, removal.study_gone) == (2, False)
    [study] = archive.studies()
    assert study["ModalitiesInStudy"] == "MR"
    assert study["NumberOfStudyRelatedInstances"] == "1"
    assert archive.blob_count() == 1
    # the last instance takes series, study and patient with it
    last = archive.sops[SERIES_MR][0]
    gone = archive.service().delete(DELETER, DeletionTarget.instance(last), address="x")
    assert gone.study_gone and archive.studies() == []
    assert archive.index.find(Query(Root.PATIENT, Level.PATIENT,
                                    (Key("PatientID", "LO", ""),))) == []


def test_a_url_naming_another_study_finds_nothing(archive: Archive) -> None:
    archive.store("Clinic A", SERIES_CT, 1)
    wrong = DeletionTarget.series(SERIES_CT, study_uid="1.2.3.4")
    with pytest.raises(NothingToDelete):
        archive.service().delete(DELETER, wrong, address="x")
    assert archive.index.count_instances() == 1


def test_another_organisations_study_is_unknown_and_permission_is_needed(archive: Archive) -> None:
    archive.store("Clinic B", SERIES_CT, 2)
    service = archive.service()
    with pytest.raises(NothingToDelete) as theirs:
        service.delete(DELETER, DeletionTarget.study(STUDY), address="x")
    with pytest.raises(NothingToDelete) as unknown:
        service.delete(DELETER, DeletionTarget.study("1.2.3.999"), address="x")
    assert str(theirs.value).replace(STUDY, "U") == str(unknown.value).replace("1.2.3.999", "U")
    # cross_org reads every organisation but deletes only its own
    reader = replace(DELETER, permissions=DELETER.permissions | {Permission.CROSS_ORG})
    with pytest.raises(NothingToDelete):
        service.delete(reader, DeletionTarget.study(STUDY), address="x")
    # ``all`` does not include delete
    plain = Identity("a1", 0x12, organization="Clinic B", group="clinic",
                     permissions=Permission.parse_list("all"))
    with pytest.raises(NotPermitted, match="'delete' permission"):
        service.delete(plain, DeletionTarget.study(STUDY), address="192.0.2.7")
    assert archive.index.count_instances() == 2 and archive.blob_count() == 2
    kinds = [(r.event_id, r.action, int(r.outcome)) for r in archive.trail.records]
    assert kinds.count((EventId.INSTANCES_ACCESSED, Action.DELETE, 4)) == 3
    assert kinds[-1][0] == EventId.SECURITY_ALERT
    assert not service.may_delete(DELETER, STUDY) and not service.may_delete(plain, STUDY)
    # the owner deletes it
    owner = replace(DELETER, organization="Clinic B")
    assert service.may_delete(owner, STUDY)
    assert service.delete(owner, DeletionTarget.study(STUDY), address="x").instances == 2


def test_the_operator_chooses_among_several_holders(archive: Archive) -> None:
    archive.store("Clinic A", SERIES_CT, 1)
    archive.store("Clinic B", SERIES_CT, 1)
    service = archive.service()
    assert len(service.find_as_operator(DeletionTarget.study(STUDY))) == 2
    with pytest.raises(AmbiguousOwner):
        service.delete_as_operator("root", DeletionTarget.study(STUDY))
    done = service.delete_as_operator("root", DeletionTarget.study(STUDY),
                                      organization="Clinic B")
    assert done.organization == "Clinic B"
    assert [r.organization for r in service.find_as_operator(DeletionTarget.study(STUDY))] == \
        ["Clinic A"]


def test_blobs_left_by_a_crash_are_swept_and_only_those(archive: Archive) -> None:
    archive.store("Clinic A", SERIES_CT, 3)
    calls: list[str] = []
    failing = Recorder(archive.blobs, calls, "blobs", fail=True)  # the process "dies" here
    archive.service(blobs=failing).delete(DELETER, DeletionTarget.study(STUDY), address="x")
    assert archive.studies() == [] and archive.blob_count() == 3
    assert len(archive.deletion.pending()) == 3
    # a blob an ingest is writing right now: no row yet, and never listed
    fresh = archive.blobs.new_key()
    archive.blobs.put(fresh, b"being indexed")
    report = sweep_deleted(archive.deletion, archive.blobs)
    assert (report.blobs, report.more) == (3, False)
    assert list(archive.blobs.keys()) == [fresh]
    assert archive.deletion.pending() == []
    assert sweep_deleted(archive.deletion, archive.blobs).blobs == 0


def test_sweep_is_bounded(archive: Archive) -> None:
    archive.store("Clinic A", SERIES_CT, 3)
    failing = Recorder(archive.blobs, [], "blobs", fail=True)
    archive.service(blobs=failing).delete(DELETER, DeletionTarget.study(STUDY), address="x")
    first = sweep_deleted(archive.deletion, archive.blobs, limit=2)
    assert (first.blobs, first.more) == (2, True)
    assert sweep_deleted(archive.deletion, archive.blobs).blobs == 1


def test_store_after_deletion_makes_a_fresh_study(archive: Archive) -> None:
    archive.store("Clinic A", SERIES_CT, 2)
    archive.service().delete(DELETER, DeletionTarget.study(STUDY), address="x")
    archive.store("Clinic A", SERIES_CT, 1)
    [study] = archive.studies()
    assert study["NumberOfStudyRelatedInstances"] == "1"


def test_the_deletion_audit_message_is_a_valid_instances_accessed(archive: Archive) -> None:
    archive.store("Clinic A", SERIES_CT, 2)
    archive.service().delete(DELETER, DeletionTarget.study(STUDY), address="192.0.2.1",
                             reason="test data")
    [record] = archive.trail.records
    assert (record.event_id, record.action, int(record.outcome)) == (
        EventId.INSTANCES_ACCESSED, Action.DELETE, 0)
    assert archive.trail.durable == [record.record_id]  # stored before the answer
    objects = {o.id_type.code: o for o in record.objects}
    assert objects["2"].object_id == "PAT-A" and objects["2"].life_cycle == 15
    assert objects["110180"].object_id == STUDY
    assert "reason: test data" in (record.outcome_description or "")
    assert any(p.requestor and "del1" in p.user_id for p in record.participants)
    assert_valid(to_xml(replace(record, audit_source=AuditSource("SECUREPACS"))))


def test_a_target_names_a_uid() -> None:
    with pytest.raises(ValueError, match="not a DICOM UID"):
        DeletionTarget.study("1.2.3; DROP TABLE")
    with pytest.raises(ValueError):
        DeletionTarget(Level.PATIENT, "1.2.3")


# -- the trash (trash_days) ------------------------------------------------------------------

def test_trash_keeps_blobs_restorable_and_the_orphan_sweep_keeps_them(archive: Archive) -> None:
    from securepacs.services.ingest import sweep_orphans
    from securepacs.services.trash import KeepTrash, restore_study

    archive.store("Clinic A", SERIES_CT, 3)
    service = DeletionService(archive.deletion, archive.blobs, Tenancy(), archive.audit,
                              trash_days=7)
    removal = service.delete(DELETER, DeletionTarget.study(STUDY), address="x")
    assert removal.kept_until is not None and archive.studies() == []
    assert archive.blob_count() == 3 and archive.deletion.pending() == []
    assert len(archive.deletion.trashed(STUDY, organizations=None)) == 3
    # without KeepTrash the orphan sweep would take them; with it, nothing goes
    report = sweep_orphans(KeepTrash(archive.index, archive.deletion), archive.blobs,  # type: ignore[arg-type]
                           grace_seconds=0)
    assert report.orphan_blobs == 0 and archive.blob_count() == 3
    assert archive.trail.records[-1].objects[-1].life_cycle == 14  # logical deletion
    with pytest.raises(NothingToDelete):
        restore_study(archive.deletion, archive.index, archive.blobs, archive.audit,
                      user="root", study_uid=STUDY, organization="Clinic B")
    done = restore_study(archive.deletion, archive.index, archive.blobs, archive.audit,
                         user="root", study_uid=STUDY)
    assert (done.instances, done.already_present, done.organization) == (3, 0, "Clinic A")
    [study] = archive.studies()
    assert study["NumberOfStudyRelatedInstances"] == "3"
    assert archive.deletion.trashed(STUDY, organizations=None) == []
    assert archive.trail.records[-1].action == Action.CREATE
    assert_valid(to_xml(replace(archive.trail.records[-1], audit_source=AuditSource("S"))))
    # restored rows point at the kept blobs, which read back whole
    for sop in archive.sops[SERIES_CT]:
        stored = archive.index.get(sop)
        assert stored is not None and archive.blobs.read(stored.blob_key)[128:132] == b"DICM"


def test_trash_is_purged_when_its_time_is_over(archive: Archive) -> None:
    from datetime import UTC, datetime, timedelta

    from securepacs.services.trash import purge_expired, restore_study

    archive.store("Clinic A", SERIES_CT, 2)
    service = DeletionService(archive.deletion, archive.blobs, Tenancy(), archive.audit,
                              trash_days=1)
    service.delete(DELETER, DeletionTarget.study(STUDY), address="x")
    now = datetime.now(UTC)
    assert purge_expired(archive.deletion, archive.blobs, archive.audit, now=now) == 0
    assert archive.blob_count() == 2
    assert purge_expired(archive.deletion, archive.blobs, archive.audit,
                         now=now + timedelta(days=1, seconds=5)) == 2
    assert archive.blob_count() == 0 and archive.deletion.pending() == []
    purged = archive.trail.records[-1]
    assert (purged.action, purged.objects[-1].life_cycle) == (Action.DELETE, 15)
    with pytest.raises(NothingToDelete):
        restore_study(archive.deletion, archive.index, archive.blobs, archive.audit,
                      user="root", study_uid=STUDY)


def test_restore_keeps_what_was_stored_again(archive: Archive) -> None:
    from securepacs.services.trash import restore_study

    archive.store("Clinic A", SERIES_CT, 2)
    first = archive.sops[SERIES_CT][0]
    kept_blob = archive.index.get(first)
    assert kept_blob is not None
    DeletionService(archive.deletion, archive.blobs, Tenancy(), archive.audit,
                    trash_days=1).delete(DELETER, DeletionTarget.study(STUDY), address="x")
    # the same first instance arrives again (a new blob) before the restore
    again = archive.blobs.read(kept_blob.blob_key)
    archive.ingest.store(Received(again[144 + int.from_bytes(again[140:144], "little"):],
                                  kept_blob.sop_class_uid, first, kept_blob.transfer_syntax_uid,
                                  "SCU", organization="Clinic A"))
    done = restore_study(archive.deletion, archive.index, archive.blobs, archive.audit,
                         user="root", study_uid=STUDY)
    assert (done.instances, done.already_present) == (1, 1)
    assert archive.index.count_instances() == 2 and archive.blob_count() == 2


def test_deleting_a_study_revokes_its_shares(archive: Archive, tmp_path: Path) -> None:
    """A share of a deleted study must not apply to a study stored again under its UID."""
    from datetime import UTC, datetime, timedelta

    from securepacs.index.trust import SqlTrustStore
    from securepacs.model.tenancy import Share, Visibility

    trust = SqlTrustStore(f"sqlite:///{tmp_path / 'index.sqlite'}")
    trust.create_schema()
    before = datetime.now(UTC) - timedelta(hours=1)
    trust.add_share(Share("s-study", STUDY, "Clinic A", "Clinic B", False, None, before))
    trust.add_share(Share("s-other", "1.2.3.9", "Clinic A", "Clinic B", False, None, before))
    trust.add_share(Share("s-theirs", STUDY, "Clinic C", "Clinic B", False, None, before))
    archive.store("Clinic A", SERIES_CT, 1, "CT")
    archive.store("Clinic A", SERIES_MR, 1, "MR")
    clinic_b = Visibility("Clinic B")

    def seen() -> list[dict[str, str]]:
        return archive.index.find(Query(Root.STUDY, Level.STUDY, (
            Key("StudyInstanceUID", "UI", STUDY),)), visibility=clinic_b)

    assert len(seen()) == 1
    service = archive.service()
    # a series deletion that leaves the study keeps its shares
    part = service.delete(DELETER, DeletionTarget.series(SERIES_CT), address="x")
    assert part.shares_revoked == 0 and len(seen()) == 1
    done = service.delete(DELETER, DeletionTarget.study(STUDY), address="x")
    assert done.shares_revoked == 1
    states = {s.share_id: s.revoked_at is not None for s in trust.shares()}
    assert states == {"s-study": True, "s-other": False, "s-theirs": False}
    assert "1 share(s) of the study revoked" in (
        archive.trail.records[-1].outcome_description or "")
    # the corrected study, stored again under the same UID, is not shared by the old share
    archive.store("Clinic A", SERIES_CT, 1, "CT")
    assert seen() == []
    trust.close()


def test_a_serving_server_purges_on_its_poll_loop_without_a_deletion(archive: Archive) -> None:
    """PeriodicPurge, called every poll, runs the real purge at most once per period."""
    from datetime import UTC, datetime, timedelta

    from securepacs.errors import StorageError
    from securepacs.services.trash import PeriodicPurge, purge_expired

    archive.store("Clinic A", SERIES_CT, 2)
    DeletionService(archive.deletion, archive.blobs, Tenancy(), archive.audit,
                    trash_days=1).delete(DELETER, DeletionTarget.study(STUDY), address="x")
    later = [datetime.now(UTC)]  # the wall clock the purge compares purge_at with
    ticks = [0.0]  # the poll loop's monotonic clock
    runs: list[int] = []

    def purge() -> None:
        runs.append(purge_expired(archive.deletion, archive.blobs, archive.audit,
                                  now=later[0]))

    periodic = PeriodicPurge(purge, every=600, clock=lambda: ticks[0])
    ticks[0] = 599.0
    assert not periodic() and runs == []  # the start-up has just purged
    ticks[0] = 600.0
    assert periodic() and runs == [0]  # due, nothing expired yet
    later[0] += timedelta(days=1, seconds=5)
    ticks[0] = 1000.0
    assert not periodic() and archive.blob_count() == 2  # not due again yet
    ticks[0] = 1200.0
    assert periodic() and runs == [0, 2] and archive.blob_count() == 0
    # a failing purge does not stop the poll loop
    def broken() -> None:
        raise StorageError("database gone")
    failing = PeriodicPurge(broken, every=1, clock=lambda: ticks[0])
    ticks[0] += 1
    assert failing()
