"""The rows of known series kept by the plain DB-API add (issue 19,
:mod:`securepacs.index.rowwriter`): consecutive images of one series skip the look-up of
their series, study and patient rows, yet every add files exactly as if it had looked them
up: after a deletion by another connection (whose freed row ids SQLite may hand out
again), for two organisations holding one Series Instance UID, and when another series of
the study fills in a study value."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from securepacs.index import rowwriter
from securepacs.index.deletion import SqlDeletion
from securepacs.index.repository import SqlIndex
from securepacs.index.schema import instance, patient, series, study
from securepacs.model.deletion import DeletionTarget
from securepacs.model.levels import Level
from securepacs.model.record import InstanceRecord


def _org(record: InstanceRecord, org: str) -> InstanceRecord:
    return dataclasses.replace(record, organization=org)


def _filed(url: str, sop: str) -> tuple[str, str, str, str]:
    """(series UID, its organisation, study UID, patient ID) the instance `sop` is filed
    under, read from the rows."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(series.c.series_uid, series.c.organization, study.c.study_uid,
                          patient.c.patient_id)
                .select_from(instance.join(series, series.c.id == instance.c.series_pk)
                             .join(study, study.c.id == series.c.study_pk)
                             .join(patient, patient.c.id == study.c.patient_pk))
                .where(instance.c.sop_instance_uid == sop)).one()
    finally:
        engine.dispose()
    return (str(row[0]), str(row[1]), str(row[2]), str(row[3]))


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The series UIDs the fast add looked up in the database (hierarchy statement)."""
    seen: list[str] = []
    original = rowwriter._Statement.one

    def one(self: rowwriter._Statement, cursor: Any, values: Any) -> Any:
        if "se_series_uid" in self.sql:
            seen.append(values["v"])
        return original(self, cursor, values)

    monkeypatch.setattr(rowwriter._Statement, "one", one)
    return seen


def test_consecutive_images_of_a_series_skip_the_lookup(tmp_path: Path, record: Any,
                                                        lookups: list[str]) -> None:
    index = SqlIndex(f"sqlite:///{tmp_path / 'i.db'}")
    index.create_schema()
    for n in range(5):
        assert index.add(record(f"1.{n}"), ready=lambda: None).outcome == "added"
    index.close()
    # the first looks (in vain) and creates the rows, the second reads them, the other
    # three find them kept
    assert lookups == ["1.2.3.1", "1.2.3.1"]


def test_a_deletion_by_another_connection_is_seen(tmp_path: Path, record: Any) -> None:
    """Org A's series is deleted elsewhere; org B's rows (another index: another server
    process) then take the freed row ids; A's next image must get rows of its own, not be
    filed under B's series that now has the id A's series had."""
    url = f"sqlite:///{tmp_path / 'i.db'}"
    one, two = SqlIndex(url), SqlIndex(url)
    one.create_schema()
    for n in range(3):
        assert one.add(_org(record(f"1.{n}"), "A")).outcome == "added"
    deletion = SqlDeletion(url)
    removal = deletion.remove(DeletionTarget(Level.STUDY, "1.2.3"), organizations=["A"])
    deletion.close()
    assert removal is not None
    assert two.add(_org(record("2.1", series="9.9.1", study="9.9",
                                patient={"PatientID": "P9"}), "B")).outcome == "added"
    assert _filed(url, "2.1") == ("9.9.1", "B", "9.9", "P9")
    assert one.add(_org(record("1.3"), "A")).outcome == "added"
    assert _filed(url, "1.3") == ("1.2.3.1", "A", "1.2.3", "P1")
    assert one.add(_org(record("1.4"), "A")).outcome == "added"
    assert _filed(url, "1.4") == ("1.2.3.1", "A", "1.2.3", "P1")
    one.close()
    two.close()


def test_store_delete_store_again_recreates_the_rows(tmp_path: Path, record: Any) -> None:
    url = f"sqlite:///{tmp_path / 'i.db'}"
    index = SqlIndex(url)
    index.create_schema()
    for n in range(3):
        index.add(record(f"1.{n}"), ready=lambda: None)
    assert index.delete_instance("1.0") is not None  # through another pooled connection
    assert index.delete_instance("1.1") is not None
    assert index.delete_instance("1.2") is not None  # the series, study and patient go too
    assert index.add(record("1.3"), ready=lambda: None).outcome == "added"
    assert _filed(url, "1.3") == ("1.2.3.1", "", "1.2.3", "P1")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        counts = [conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                  for t in (patient, study, series, instance)]
    engine.dispose()
    index.close()
    assert counts == [1, 1, 1, 1]


def test_two_organisations_with_one_series_uid_keep_apart(tmp_path: Path,
                                                          record: Any) -> None:
    url = f"sqlite:///{tmp_path / 'i.db'}"
    index = SqlIndex(url)
    index.create_schema()
    for n in range(3):
        assert index.add(_org(record(f"1.{n}"), "A")).outcome == "added"
    for n in range(3):
        assert index.add(_org(record(f"2.{n}"), "B")).outcome == "added"
    assert index.add(_org(record("1.9"), "A")).outcome == "added"
    index.close()
    assert _filed(url, "2.2") == ("1.2.3.1", "B", "1.2.3", "P1")
    assert _filed(url, "1.9") == ("1.2.3.1", "A", "1.2.3", "P1")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        owners = conn.execute(sa.select(series.c.organization).order_by(series.c.id)).scalars()
        assert list(owners) == ["A", "B"]
    engine.dispose()


def test_a_value_filled_in_by_another_series_is_not_overwritten(tmp_path: Path,
                                                                record: Any) -> None:
    """Series 1 is known; an image of series 2 gives the study its description; a later
    image of series 1 with another description must leave the first one (non-empty values
    are never overwritten), as the SQLAlchemy path does."""
    url = f"sqlite:///{tmp_path / 'i.db'}"
    index = SqlIndex(url)
    index.create_schema()
    for n in range(3):
        index.add(record(f"1.{n}"))
    index.add(record("2.1", series="1.2.3.2", study_values={"StudyDescription": "first"}))
    index.add(record("1.3", study_values={"StudyDescription": "second"}))
    index.add(record("1.4", series_values={"Modality": "CT", "SeriesDescription": "s1"}))
    index.add(record("1.5", series_values={"Modality": "CT", "SeriesDescription": "other"}))
    index.close()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(study.c.attrs)).scalar_one()["StudyDescription"] == "first"
        descriptions = conn.execute(
            sa.select(series.c.attrs).order_by(series.c.id)).scalars().all()
    engine.dispose()
    assert [d.get("SeriesDescription") for d in descriptions] == ["s1", None]


def test_a_failed_add_leaves_nothing_kept(tmp_path: Path, record: Any) -> None:
    """The rows an add created are gone after its ready() failed: the next image of that
    series must create them again, not use the rolled-back ids."""
    url = f"sqlite:///{tmp_path / 'i.db'}"
    index = SqlIndex(url)
    index.create_schema()

    def fail() -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError):
        index.add(record("1.0"), ready=fail)
    assert index.add(record("1.1")).outcome == "added"
    assert index.add(record("1.2")).outcome == "added"
    assert index.add(record("1.3")).outcome == "added"
    index.close()
    assert _filed(url, "1.3") == ("1.2.3.1", "", "1.2.3", "P1")


def test_the_fast_add_waits_for_the_write_lock_and_gives_back_the_busy_timeout(
        tmp_path: Path, record: Any) -> None:
    """The fast path's connection waits for the write lock itself (busy timeout 0 while
    it holds the connection): an add while another connection writes lands once that one
    commits; the connection goes back to the pool with the usual busy timeout."""
    import sqlite3
    import threading

    path = tmp_path / "i.db"
    index = SqlIndex(f"sqlite:///{path}")
    index.create_schema()
    assert index.add(record("1.0")).outcome == "added"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    outcome: list[str] = []
    adding = threading.Thread(target=lambda: outcome.append(index.add(record("1.1")).outcome))
    adding.start()
    adding.join(0.3)
    assert adding.is_alive()  # waiting for the lock, not failed
    other.execute("COMMIT")
    other.close()
    adding.join(10)
    assert outcome == ["added"]
    raw = index._raw.driver_connection
    assert raw.execute("PRAGMA busy_timeout").fetchone()[0] == 0
    index._drop_raw()
    assert raw.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    index.close()
