"""SqlIndex.find and SqlIndex.instances: C-FIND matching at every level of both models."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from securepacs.index.repository import SqlIndex
from securepacs.model.levels import Level, Root
from securepacs.model.query import Key, Query
from securepacs.model.record import InstanceRecord

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
US = "1.2.840.10008.5.1.4.1.1.6.1"

PATIENTS = {
    "P1": {
        "PatientID": "P1",
        "PatientName": "Doe^John",
        "PatientBirthDate": "19700101",
        "PatientSex": "M",
    },
    "P2": {
        "PatientID": "P2",
        "PatientName": "SMITH^Jane",
        "PatientBirthDate": "19851231",
        "PatientSex": "F",
    },
    "P3": {"PatientID": "P3", "PatientName": "Müller^Hans", "OtherPatientIDs": "X1"},
}
# study uid -> (patient, date, time, accession, description)
STUDIES = {
    "1.1": ("P1", "20200115", "101500", "A1", "CT Chest"),
    "1.2": ("P1", "20210301", "08:30:00", "A2", "Abdomen"),
    "2.1": ("P2", "20200601", "235959", "B_1", "CT Head"),
    "3.1": ("P3", "", "", "", ""),
}
# series uid -> (study, modality, number)
SERIES = {
    "1.1.1": ("1.1", "CT", "1"),
    "1.1.2": ("1.1", "MR", "2"),
    "1.2.1": ("1.2", "US", "1"),
    "2.1.1": ("2.1", "CT", "3"),
    "3.1.1": ("3.1", "MR", "1"),
}
# sop uid -> (series, sop class, instance number); added in this order
INSTANCES = [
    ("1.1.1.3", "1.1.1", CT, ""),
    ("1.1.1.1", "1.1.1", CT, "2"),
    ("1.1.1.2", "1.1.1", CT, "1"),
    ("1.1.2.1", "1.1.2", MR, "1"),
    ("1.2.1.1", "1.2.1", US, "1"),
    ("2.1.1.1", "2.1.1", CT, "1"),
    ("2.1.1.2", "2.1.1", CT, "2"),
    ("3.1.1.1", "3.1.1", MR, "1"),
]


def _record(sop: str, series_uid: str, sop_class: str, number: str) -> InstanceRecord:
    study_uid, modality, series_number = SERIES[series_uid]
    patient_id, date, time, accession, description = STUDIES[study_uid]
    return InstanceRecord(
        values={
            Level.PATIENT: dict(PATIENTS[patient_id]),
            Level.STUDY: {
                "StudyInstanceUID": study_uid,
                "StudyDate": date,
                "StudyTime": time,
                "AccessionNumber": accession,
                "StudyDescription": description,
                "ReferringPhysicianName": "House^Gregory",
            },
            Level.SERIES: {
                "SeriesInstanceUID": series_uid,
                "Modality": modality,
                "SeriesNumber": series_number,
            },
            Level.IMAGE: {
                "SOPInstanceUID": sop,
                "SOPClassUID": sop_class,
                "InstanceNumber": number,
            },
        },
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        blob_key=f"b/{sop}",
        size=100,
    )


@pytest.fixture
def filled(index: SqlIndex) -> SqlIndex:
    for sop, series_uid, sop_class, number in INSTANCES:
        index.add(_record(sop, series_uid, sop_class, number))
    return index


Find = Callable[..., list[str]]


@pytest.fixture
def find(filled: SqlIndex) -> Find:
    """find(level, keyword=(vr, value), ..., root=..., limit=...) -> unique keys found."""
    unique = {
        Level.PATIENT: "PatientID",
        Level.STUDY: "StudyInstanceUID",
        Level.SERIES: "SeriesInstanceUID",
        Level.IMAGE: "SOPInstanceUID",
    }

    def run(
        level: Level, root: Root | None = None, limit: int | None = None, **keys: tuple[str, str]
    ) -> list[str]:
        root = root or (Root.PATIENT if level is Level.PATIENT else Root.STUDY)
        query = Query(root, level, tuple(Key(k, vr, v) for k, (vr, v) in keys.items()))
        return [r[unique[level]] for r in filled.find(query, limit=limit)]

    return run


ROOTS_STUDY_AND_BELOW = [Root.PATIENT, Root.STUDY]


def test_universal_returns_everything_in_index_order(find: Find) -> None:
    assert find(Level.PATIENT) == ["P1", "P2", "P3"]
    assert find(Level.STUDY, PatientName=("PN", "")) == ["1.1", "1.2", "2.1", "3.1"]
    assert find(Level.SERIES, StudyDate=("DA", "*")) == list(SERIES)
    assert find(Level.IMAGE) == [i[0] for i in INSTANCES]


def test_patient_level(find: Find) -> None:
    assert find(Level.PATIENT, PatientID=("LO", "P2")) == ["P2"]
    assert find(Level.PATIENT, PatientSex=("CS", "M")) == ["P1"]
    assert find(Level.PATIENT, PatientBirthDate=("DA", "19800101-")) == ["P2"]
    assert find(Level.PATIENT, OtherPatientIDs=("LO", "X1")) == ["P3"]


@pytest.mark.parametrize("root", ROOTS_STUDY_AND_BELOW)
def test_single_value(find: Find, root: Root) -> None:
    assert find(Level.STUDY, root, AccessionNumber=("SH", "A2")) == ["1.2"]
    assert find(Level.STUDY, root, PatientID=("LO", "P1")) == ["1.1", "1.2"]
    assert find(Level.SERIES, root, Modality=("CS", "MR")) == ["1.1.2", "3.1.1"]
    assert find(Level.IMAGE, root, InstanceNumber=("IS", "2")) == ["1.1.1.1", "2.1.1.2"]
    assert find(Level.STUDY, root, AccessionNumber=("SH", "a2")) == []  # case matters


@pytest.mark.parametrize("root", ROOTS_STUDY_AND_BELOW)
def test_person_name_ignores_case(find: Find, root: Root) -> None:
    assert find(Level.STUDY, root, PatientName=("PN", "smith^jane")) == ["2.1"]
    assert find(Level.STUDY, root, PatientName=("PN", "MÜLLER^HANS")) == ["3.1"]
    assert find(Level.IMAGE, root, PatientName=("PN", "DOE^JOHN")) == [
        "1.1.1.3",
        "1.1.1.1",
        "1.1.1.2",
        "1.1.2.1",
        "1.2.1.1",
    ]
    assert find(Level.PATIENT, PatientName=("PN", "doe^JOHN")) == ["P1"]


@pytest.mark.parametrize("root", ROOTS_STUDY_AND_BELOW)
def test_wildcards(find: Find, root: Root) -> None:
    assert find(Level.STUDY, root, PatientName=("PN", "d*")) == ["1.1", "1.2"]
    assert find(Level.STUDY, root, PatientName=("PN", "*^j?n*")) == ["2.1"]
    assert find(Level.STUDY, root, PatientName=("PN", "m?ller*")) == ["3.1"]
    assert find(Level.STUDY, root, StudyDescription=("LO", "CT*")) == ["1.1", "2.1"]
    assert find(Level.STUDY, root, StudyDescription=("LO", "ct*")) == []
    assert find(Level.STUDY, root, AccessionNumber=("SH", "A?")) == ["1.1", "1.2"]
    # % and _ are literal characters in DICOM
    assert find(Level.STUDY, root, AccessionNumber=("SH", "B_*")) == ["2.1"]
    assert find(Level.STUDY, root, AccessionNumber=("SH", "A_*")) == []
    assert find(Level.STUDY, root, AccessionNumber=("SH", "%")) == []
    assert find(Level.SERIES, root, Modality=("CS", "?R")) == ["1.1.2", "3.1.1"]


@pytest.mark.parametrize("root", ROOTS_STUDY_AND_BELOW)
def test_date_ranges(find: Find, root: Root) -> None:
    assert find(Level.STUDY, root, StudyDate=("DA", "20200101-20201231")) == ["1.1", "2.1"]
    assert find(Level.STUDY, root, StudyDate=("DA", "-20200601")) == ["1.1", "2.1"]
    assert find(Level.STUDY, root, StudyDate=("DA", "20200601-")) == ["1.2", "2.1"]
    assert find(Level.STUDY, root, StudyDate=("DA", "20200115")) == ["1.1"]
    assert find(Level.SERIES, root, StudyDate=("DA", "20210101-")) == ["1.2.1"]


@pytest.mark.parametrize("root", ROOTS_STUDY_AND_BELOW)
def test_time_ranges(find: Find, root: Root) -> None:
    assert find(Level.STUDY, root, StudyTime=("TM", "0800-1100")) == ["1.1", "1.2"]
    assert find(Level.STUDY, root, StudyTime=("TM", "12-")) == ["2.1"]
    assert find(Level.STUDY, root, StudyTime=("TM", "-083000")) == ["1.2"]


@pytest.mark.parametrize("root", ROOTS_STUDY_AND_BELOW)
def test_uid_lists(find: Find, root: Root) -> None:
    assert find(Level.STUDY, root, StudyInstanceUID=("UI", "2.1\\1.1\\9.9")) == ["1.1", "2.1"]
    assert find(Level.IMAGE, root, SOPInstanceUID=("UI", "1.1.1.2\\3.1.1.1")) == [
        "1.1.1.2",
        "3.1.1.1",
    ]
    assert find(Level.IMAGE, root, SOPClassUID=("UI", US)) == ["1.2.1.1"]
    assert find(Level.IMAGE, root, StudyInstanceUID=("UI", "1.1"), SeriesInstanceUID=("UI", "1.1.2")) == [
        "1.1.2.1"
    ]


def test_keys_the_index_does_not_keep_are_ignored(find: Find) -> None:
    assert find(Level.STUDY, PatientComments=("LT", "nothing*"), StudyID=("SH", "")) == [
        "1.1",
        "1.2",
        "2.1",
        "3.1",
    ]
    # image-level keys do not constrain a study-level query
    assert find(Level.STUDY, SOPInstanceUID=("UI", "9.9")) == ["1.1", "1.2", "2.1", "3.1"]


def test_keys_combine(find: Find) -> None:
    assert find(Level.STUDY, PatientName=("PN", "doe*"), StudyDate=("DA", "20200101-20201231")) == ["1.1"]


def test_patient_root_keys_at_study_level_in_study_root(find: Find) -> None:
    assert find(Level.STUDY, Root.STUDY, PatientBirthDate=("DA", "-19751231")) == ["1.1", "1.2"]


def test_results_hold_every_level_above_and_computed_values(filled: SqlIndex) -> None:
    (pat,) = filled.find(Query(Root.PATIENT, Level.PATIENT, (Key("PatientID", "LO", "P1"),)))
    assert pat == {
        **{k: "" for k in ("IssuerOfPatientID", "OtherPatientIDs")},
        **PATIENTS["P1"],
        "NumberOfPatientRelatedStudies": "2",
        "NumberOfPatientRelatedSeries": "3",
        "NumberOfPatientRelatedInstances": "5",
    }
    (st,) = filled.find(Query(Root.STUDY, Level.STUDY, (Key("AccessionNumber", "SH", "A1"),)))
    assert st["PatientName"] == "Doe^John" and st["StudyDescription"] == "CT Chest"
    assert st["ModalitiesInStudy"] == "CT\\MR"
    assert st["SOPClassesInStudy"] == f"{CT}\\{MR}"
    assert st["NumberOfStudyRelatedSeries"] == "2"
    assert st["NumberOfStudyRelatedInstances"] == "4"
    assert "NumberOfPatientRelatedStudies" not in st
    (se,) = filled.find(Query(Root.STUDY, Level.SERIES, (Key("SeriesInstanceUID", "UI", "1.1.1"),)))
    assert se["NumberOfSeriesRelatedInstances"] == "3"
    assert se["StudyDate"] == "20200115" and se["PatientID"] == "P1"
    (im,) = filled.find(Query(Root.STUDY, Level.IMAGE, (Key("SOPInstanceUID", "UI", "3.1.1.1"),)))
    assert im["PatientName"] == "Müller^Hans" and im["Modality"] == "MR"
    assert im["SOPClassUID"] == MR and im["Rows"] == ""


def test_computed_attributes_match(find: Find) -> None:
    assert find(Level.STUDY, ModalitiesInStudy=("CS", "MR")) == ["1.1", "3.1"]
    assert find(Level.STUDY, ModalitiesInStudy=("CS", "US\\CT")) == ["1.1", "1.2", "2.1"]
    assert find(Level.STUDY, ModalitiesInStudy=("CS", "?S")) == ["1.2"]
    assert find(Level.STUDY, NumberOfStudyRelatedInstances=("IS", "2")) == ["2.1"]
    assert find(Level.PATIENT, NumberOfPatientRelatedStudies=("IS", "2")) == ["P1"]
    assert find(Level.SERIES, NumberOfSeriesRelatedInstances=("IS", "3")) == ["1.1.1"]
    assert find(Level.STUDY, SOPClassesInStudy=("UI", US)) == ["1.2"]
    # a study-level computed key also constrains the levels below
    assert find(Level.SERIES, ModalitiesInStudy=("CS", "US")) == ["1.2.1"]


def test_limit(find: Find, filled: SqlIndex) -> None:
    assert find(Level.IMAGE, limit=3) == ["1.1.1.3", "1.1.1.1", "1.1.1.2"]
    assert find(Level.IMAGE, limit=0) == []
    # the limit counts matches, after the Python filter
    assert find(Level.STUDY, limit=1, StudyTime=("TM", "12-")) == ["2.1"]
    with pytest.raises(ValueError):
        filled.find(Query(Root.STUDY, Level.STUDY, ()), limit=-1)


def test_instances_for_retrieve(filled: SqlIndex) -> None:
    def sops(level: Level, root: Root = Root.STUDY, **keys: tuple[str, str]) -> list[str]:
        query = Query(root, level, tuple(Key(k, vr, v) for k, (vr, v) in keys.items()))
        return [i.sop_instance_uid for i in filled.instances(query)]

    # ordered by study, series, instance number (absent last)
    assert sops(Level.STUDY, StudyInstanceUID=("UI", "1.1")) == [
        "1.1.1.2",
        "1.1.1.1",
        "1.1.1.3",
        "1.1.2.1",
    ]
    assert sops(Level.PATIENT, Root.PATIENT, PatientID=("LO", "P1")) == [
        "1.1.1.2",
        "1.1.1.1",
        "1.1.1.3",
        "1.1.2.1",
        "1.2.1.1",
    ]
    assert sops(Level.SERIES, SeriesInstanceUID=("UI", "2.1.1\\1.2.1")) == [
        "1.2.1.1",
        "2.1.1.1",
        "2.1.1.2",
    ]
    assert sops(Level.IMAGE, SOPInstanceUID=("UI", "3.1.1.1\\1.1.1.3")) == ["1.1.1.3", "3.1.1.1"]
    assert sops(Level.STUDY, ModalitiesInStudy=("CS", "US")) == ["1.2.1.1"]
    (one,) = filled.instances(Query(Root.STUDY, Level.IMAGE, (Key("SOPInstanceUID", "UI", "2.1.1.2"),)))
    assert (one.study_uid, one.series_uid, one.blob_key) == ("2.1", "2.1.1", "b/2.1.1.2")
    assert one.transfer_syntax_uid == "1.2.840.10008.1.2.1" and one.size == 100
