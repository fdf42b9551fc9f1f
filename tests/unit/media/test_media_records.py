"""Directory records for instances that lack their Type 1 keys (issue 17 item 6)."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from factories import make_dataset
from securepacs.errors import MediaError
from securepacs.media import fileset


@dataclass(frozen=True)
class Src:
    label: str
    data: bytes

    def read(self) -> bytes:
        return self.data


def _bytes(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _records(plan: fileset.FileSetPlan, kind: str) -> list[Dataset]:
    ds = dcmread(BytesIO(plan.dicomdir))
    return [r for r in ds.DirectoryRecordSequence if r.DirectoryRecordType == kind]


def test_missing_study_time_and_patient_id_are_filled_for_the_record_only() -> None:
    good = make_dataset(patient_id="P1")
    bad = make_dataset(patient_id="")
    bad.StudyTime = ""
    bad.SeriesTime = "093000"
    bad.InstanceNumber = None
    sources = [Src("good.dcm", _bytes(good)), Src("bad.dcm", _bytes(bad))]
    plan = fileset.plan_fileset(sources)
    assert plan.instances == 2 and not plan.left_out
    assert [label for label, _ in plan.invented] == ["bad.dcm"]
    assert "StudyTime=093000" in plan.invented[0][1]
    assert "PatientID=NOID0001" in plan.invented[0][1]
    assert sorted(r.PatientID for r in _records(plan, "PATIENT")) == ["NOID0001", "P1"]
    # the instance itself goes onto the media unchanged
    entry = next(src for _, src in plan.entries if src.label == "bad.dcm")
    assert entry.read() == sources[1].data


def test_two_studies_without_patient_id_stay_two_patients() -> None:
    a = make_dataset(patient_id="", patient_name="A^A")
    b = make_dataset(patient_id="", patient_name="B^B")
    a2 = make_dataset(patient_id="", patient_name="A^A", study_uid=a.StudyInstanceUID,
                      series_uid=a.SeriesInstanceUID, instance_number=2)
    plan = fileset.plan_fileset([Src("a", _bytes(a)), Src("b", _bytes(b)), Src("a2", _bytes(a2))])
    patients = _records(plan, "PATIENT")
    assert len(patients) == 2
    assert sorted(str(p.PatientName) for p in patients) == ["A^A", "B^B"]


def test_an_instance_without_series_uid_is_left_out_not_the_disc() -> None:
    good = make_dataset()
    bad = make_dataset()
    del bad.SeriesInstanceUID
    plan = fileset.plan_fileset([Src("good", _bytes(good)), Src("bad", _bytes(bad))])
    assert plan.instances == 1
    assert [label for label, _ in plan.left_out] == ["bad"]
    assert "directory record" in plan.left_out[0][1]


def test_nothing_recordable_is_one_clear_error() -> None:
    bad = make_dataset()
    del bad.SeriesInstanceUID
    with pytest.raises(MediaError, match="no instance could be put on the media: bad"):
        fileset.plan_fileset([Src("bad", _bytes(bad))])
