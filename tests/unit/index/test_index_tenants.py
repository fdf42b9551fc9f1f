"""Organisations as tenants in the index (issue 15): ownership, the SQL visibility filter,
shares, the same SOP Instance UID in two organisations; and issue 17.4 (an empty Patient ID
never merges two patients). The property test compares the SQL-filtered C-FIND with the
same query on an index holding only the caller's visible set."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securepacs.index.repository import SqlIndex
from securepacs.index.trust import SqlTrustStore
from securepacs.model.levels import Level, Root
from securepacs.model.query import Key, Query
from securepacs.model.record import InstanceRecord
from securepacs.model.tenancy import Share, Visibility

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def build_record(sop: str, *, series: str, study: str, patient: dict[str, str] | None = None,
                 series_values: dict[str, str] | None = None,
                 blob_key: str | None = None) -> InstanceRecord:
    return InstanceRecord(
        values={
            Level.PATIENT: {"PatientID": "P1", "PatientName": "Doe^John", **(patient or {})},
            Level.STUDY: {"StudyInstanceUID": study},
            Level.SERIES: {"SeriesInstanceUID": series, "Modality": "CT",
                           **(series_values or {})},
            Level.IMAGE: {"SOPInstanceUID": sop, "SOPClassUID": CT_IMAGE},
        },
        transfer_syntax_uid="1.2.840.10008.1.2.1", blob_key=blob_key or f"blobs/{sop}",
        size=1234)


def owned(record: InstanceRecord, org: str) -> InstanceRecord:
    return dataclasses.replace(record, organization=org)


def q(level: Level, **keys: str) -> Query:
    wanted = {"PatientID": "", "StudyInstanceUID": "", "NumberOfPatientRelatedStudies": "",
              "NumberOfPatientRelatedInstances": "", "NumberOfStudyRelatedInstances": "",
              "ModalitiesInStudy": ""}
    wanted.update(keys)
    vrs = {"StudyInstanceUID": "UI", "ModalitiesInStudy": "CS", "PatientID": "LO",
           "SeriesInstanceUID": "UI", "SOPInstanceUID": "UI", "PatientName": "PN"}
    return Query(Root.STUDY if level is not Level.PATIENT else Root.PATIENT, level,
                 tuple(Key(k, vrs.get(k, "IS"), v) for k, v in wanted.items()))


def view(org: str, **more: object) -> Visibility:
    return Visibility(org, at=NOW, **more)  # type: ignore[arg-type]


def share(store: SqlTrustStore, sid: str, study: str, owner: str, grantee: str,
          **more: object) -> None:
    store.add_share(Share(sid, study, owner, grantee, bool(more.get("read_only", False)),
                          more.get("until"), NOW - timedelta(hours=1)))  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The explicit cases on both engines (PostgreSQL: the "C" collation of the index
    columns meets the share table's in the visibility sub-query)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def index(db_url: str) -> Iterator[SqlIndex]:
    idx = SqlIndex(db_url)
    idx.create_schema()
    yield idx
    idx.close()


@pytest.fixture
def store(index: SqlIndex, db_url: str) -> Iterator[SqlTrustStore]:
    trust = SqlTrustStore(db_url)
    trust.create_schema()
    yield trust
    trust.close()


@pytest.fixture
def two_orgs(index: SqlIndex) -> SqlIndex:
    # the same Patient ID in two organisations is two patients
    index.add(owned(build_record("1.9.1", study="1.1", series="1.1.1",
                                 patient={"PatientID": "P1", "PatientName": "A^Alice"}), "A"))
    index.add(owned(build_record("1.9.2", study="1.2", series="1.2.1",
                                 series_values={"Modality": "MR"},
                                 patient={"PatientID": "P1", "PatientName": "A^Alice"}), "A"))
    index.add(owned(build_record("1.9.3", study="2.1", series="2.1.1",
                                 series_values={"Modality": "US"},
                                 patient={"PatientID": "P1", "PatientName": "B^Bob"}), "B"))
    return index


def test_each_organisation_sees_only_its_own(two_orgs: SqlIndex) -> None:
    a = two_orgs.find(q(Level.STUDY), visibility=view("A"))
    assert sorted(r["StudyInstanceUID"] for r in a) == ["1.1", "1.2"]
    b = two_orgs.find(q(Level.STUDY), visibility=view("B"))
    assert [(r["StudyInstanceUID"], r["ModalitiesInStudy"]) for r in b] == [("2.1", "US")]
    patients = two_orgs.find(q(Level.PATIENT), visibility=view("B"))
    assert [(r["PatientID"], r["NumberOfPatientRelatedStudies"]) for r in patients] == [("P1", "1")]
    assert two_orgs.find(q(Level.PATIENT, PatientName=""), visibility=view("B"))[0][
        "PatientName"] == "B^Bob"
    # absent, exactly as an unknown UID: no row, no count
    assert two_orgs.find(q(Level.STUDY, StudyInstanceUID="1.1"), visibility=view("B")) == []
    assert two_orgs.find(q(Level.STUDY, StudyInstanceUID="9.9"), visibility=view("B")) == []
    assert two_orgs.find(q(Level.STUDY, ModalitiesInStudy="MR"), visibility=view("B")) == []
    assert two_orgs.instances(q(Level.STUDY, StudyInstanceUID="1.1"),
                              visibility=view("B", retrieve=True)) == []
    assert two_orgs.get("1.9.1", visibility=view("B")) is None
    assert two_orgs.get("1.9.1", visibility=view("A")) is not None
    # nothing else sees anything; everything sees all
    assert two_orgs.find(q(Level.IMAGE, SOPInstanceUID=""), visibility=view("C")) == []
    assert len(two_orgs.find(q(Level.STUDY), visibility=Visibility.all())) == 3
    assert len(two_orgs.find(q(Level.PATIENT), visibility=Visibility.all())) == 2


def test_shares_open_one_study_until_they_end(two_orgs: SqlIndex, store: SqlTrustStore) -> None:
    share(store, "s1", "1.2", "A", "B")
    share(store, "s2", "1.1", "A", "B", read_only=True)
    share(store, "s3", "2.1", "B", "C", until=NOW)  # ended (until is exclusive)
    share(store, "s4", "2.1", "A", "C")  # names the wrong owner: A has no study 2.1
    b = two_orgs.find(q(Level.STUDY), visibility=view("B"))
    assert sorted(r["StudyInstanceUID"] for r in b) == ["1.1", "1.2", "2.1"]
    # A's patient, through its shared studies only; counts only what B sees
    pats = {r["PatientID"] + "/" + r["NumberOfPatientRelatedStudies"]
            for r in two_orgs.find(q(Level.PATIENT), visibility=view("B"))}
    assert pats == {"P1/1", "P1/2"}
    # read-only: found, never retrieved
    got = two_orgs.instances(q(Level.PATIENT, PatientID="P1"), visibility=view("B", retrieve=True))
    assert sorted(i.sop_instance_uid for i in got) == ["1.9.2", "1.9.3"]
    assert two_orgs.find(q(Level.STUDY), visibility=view("C")) == []
    store.revoke_share("s1", at=NOW)
    b = two_orgs.find(q(Level.STUDY), visibility=view("B"))
    assert sorted(r["StudyInstanceUID"] for r in b) == ["1.1", "2.1"]
    # A's patient now counts one study for B (its other one stays out of sight)
    pats = {(r["PatientName"], r["NumberOfPatientRelatedStudies"],
             r["NumberOfPatientRelatedInstances"])
            for r in two_orgs.find(q(Level.PATIENT, PatientName=""), visibility=view("B"))}
    assert pats == {("A^Alice", "1", "1"), ("B^Bob", "1", "1")}


def test_find_names_the_owner_of_each_match(two_orgs: SqlIndex, store: SqlTrustStore) -> None:
    """What the audit of cross-organisation reads is built from: the owner organisation of
    each returned match, in order, at every level (and only of the returned ones)."""
    share(store, "s1", "1.2", "A", "B")
    for level, keys in ((Level.STUDY, {}), (Level.SERIES, {}), (Level.IMAGE, {}),
                        (Level.PATIENT, {})):
        owners: list[str] = []
        rows = two_orgs.find(q(level, **keys), visibility=view("B"), owners=owners)
        mine = {"StudyInstanceUID": "2.1"} if level is not Level.PATIENT else {
            "PatientName": "B^Bob"}
        assert len(owners) == len(rows) == 2, level
        for row, owner in zip(rows, owners, strict=True):
            key, value = next(iter(mine.items()))
            assert owner == ("B" if row.get(key) == value else "A"), (level, row)
    owners = []
    assert len(two_orgs.find(q(Level.STUDY), visibility=Visibility.all(), limit=2,
                             owners=owners)) == 2
    assert owners == ["A", "A"]


def test_same_sop_uid_from_another_organisation(index: SqlIndex) -> None:
    index.add(owned(build_record("1.9.1", study="1.1", series="1.1.1"), "A"))
    theirs = owned(build_record("1.9.1", study="1.1", series="1.1.1", blob_key="b/B"), "B")
    first = index.add(theirs)
    assert (first.outcome, first.previous_blob_key) == ("foreign", "blobs/1.9.1")
    assert index.find(q(Level.STUDY), visibility=view("B")) == []  # nothing added
    again = index.add(theirs, foreign="blobs/1.9.1")
    assert again.outcome == "added"
    assert [i.blob_key for i in index.instances(q(Level.STUDY, StudyInstanceUID="1.1"),
                                                visibility=view("B"))] == ["b/B"]
    assert index.add(theirs).outcome == "duplicate"  # B's own copy now
    # a reader of everything receives the instance once
    assert len(index.instances(q(Level.STUDY, StudyInstanceUID="1.1"))) == 1
    assert index.count_instances() == 2


def test_empty_patient_ids_are_never_merged(index: SqlIndex) -> None:
    """Issue 17.4: every study without a Patient ID was one patient, named by another file."""
    index.add(build_record("1.9.1", study="1.1", series="1.1.1",
                           patient={"PatientID": "", "PatientName": "First^One"}))
    index.add(build_record("1.9.2", study="1.2", series="1.2.1",
                           patient={"PatientID": "", "PatientName": "Second^Two"}))
    index.add(build_record("1.9.3", study="1.1", series="1.1.2",
                           patient={"PatientID": "", "PatientName": "Other^Name"}))
    rows = index.find(q(Level.STUDY, PatientName=""))
    assert sorted((r["StudyInstanceUID"], r["PatientName"]) for r in rows) == [
        ("1.1", "First^One"), ("1.2", "Second^Two")]
    assert len(index.find(q(Level.PATIENT, PatientID=""))) == 2


# -- property: SQL-filtered C-FIND == the same query over the visible set only -----------

ORGS = ["A", "B", "C"]


@st.composite
def archives(draw: st.DrawFn) -> tuple[list[InstanceRecord], list[tuple[str, str, str, bool]]]:
    """Each organisation's patients with one to three studies each (some study UIDs held
    by two organisations), and one to four shares, mostly of existing studies."""
    records = []
    owners: list[tuple[str, str]] = []
    for org in ORGS:
        for pid in draw(st.lists(st.sampled_from(["P1", "P2", ""]), max_size=2, unique=True)):
            for s in range(draw(st.integers(1, 3))):
                study = draw(st.sampled_from([f"{pid or 'X'}.{s}", f"{org}.{pid or 'X'}.{s}"]))
                owners.append((study, org))
                for n in range(draw(st.integers(1, 2))):
                    modality = draw(st.sampled_from(["CT", "MR"]))
                    sop = f"{org}.{study}.{n}"
                    records.append(owned(build_record(
                        sop, study=study, series=f"{study}.{modality}",
                        series_values={"Modality": modality},
                        patient={"PatientID": pid, "PatientName": f"{org}^{pid}"},
                        blob_key=f"b/{sop}"), org))
    if not owners:
        return records, []
    picks = draw(st.lists(st.tuples(st.sampled_from(owners), st.sampled_from(ORGS),
                                    st.sampled_from(ORGS), st.booleans(),
                                    st.sampled_from([True, True, False])),
                          min_size=1, max_size=4))
    shares = [(study, owner if right else other, grantee, read_only)
              for (study, owner), other, grantee, read_only, right in picks]
    return records, shares


def _visible(record: InstanceRecord, caller: str, shares: list[tuple[str, str, str, bool]],
             retrieve: bool) -> bool:
    study = record.values[Level.STUDY]["StudyInstanceUID"]
    return record.organization == caller or any(
        uid == study and owner == record.organization and grantee == caller
        and not (retrieve and read_only) for uid, owner, grantee, read_only in shares)


def _norm(rows: list[dict[str, str]]) -> list[tuple[tuple[str, str], ...]]:
    return sorted(tuple(sorted(r.items())) for r in rows)


QUERIES = [q(Level.PATIENT), q(Level.STUDY), q(Level.STUDY, ModalitiesInStudy="MR"),
           q(Level.STUDY, PatientID="P1"), q(Level.SERIES, SeriesInstanceUID=""),
           q(Level.IMAGE, SOPInstanceUID=""), q(Level.PATIENT, PatientName="A*")]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(archives(), st.sampled_from(ORGS), st.booleans())
def test_sql_filter_equals_the_matcher_over_the_visible_set(
        data: tuple[list[InstanceRecord], list[tuple[str, str, str, bool]]], caller: str,
        retrieve: bool) -> None:
    records, shares = data
    with tempfile.TemporaryDirectory() as tmp:
        whole = SqlIndex(f"sqlite:///{Path(tmp) / 'whole.db'}")
        only = SqlIndex(f"sqlite:///{Path(tmp) / 'only.db'}")
        whole.create_schema()
        only.create_schema()
        trust = SqlTrustStore(f"sqlite:///{Path(tmp) / 'whole.db'}")
        trust.create_schema()
        try:
            for n, (uid, owner, grantee, read_only) in enumerate(shares):
                share(trust, f"s{n}", uid, owner, grantee, read_only=read_only)
            for record in records:
                whole.add(record)
                if _visible(record, caller, shares, retrieve):
                    only.add(record)
            seen = view(caller, retrieve=retrieve)
            for query in QUERIES:
                assert _norm(whole.find(query, visibility=seen)) == _norm(only.find(query))
                got = whole.instances(dataclasses.replace(query, keys=(Key("PatientID", "LO", "P*"),))
                                      if query.level is Level.PATIENT else query,
                                      visibility=seen)
                assert {i.blob_key for i in got} <= {r.blob_key for r in records
                                                     if _visible(r, caller, shares, retrieve)}
        finally:
            for closeable in (whole, only, trust):
                closeable.close()
