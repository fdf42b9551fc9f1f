"""SqlIndex writes: add / get, duplicates, replace, hierarchy, delete, errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from securepacs.errors import (
    ConfigError,
    InvalidInstanceError,
    StorageError,
    StorageFullError,
)
from securepacs.index.repository import AddResult, SqlIndex
from securepacs.index.schema import (
    SCHEMA_VERSION,
    instance,
    patient,
    schema_version,
    series,
    study,
)
from securepacs.model.levels import Level, Root
from securepacs.model.query import Key, Query
from securepacs.model.record import InstanceRecord, StoredInstance

Factory = Callable[..., InstanceRecord]


def rows(index: SqlIndex, table: sa.Table) -> list[Any]:
    with index._engine.connect() as conn:
        order = table.c.id if "id" in table.c else table.c.version
        return list(conn.execute(sa.select(table).order_by(order)).mappings())


def studies(index: SqlIndex) -> list[dict[str, str]]:
    return index.find(Query(Root.STUDY, Level.STUDY, ()))


def test_add_then_get(index: SqlIndex, record: Factory) -> None:
    assert index.add(record("1.2.3.1.1")) == AddResult("added")
    assert index.get("1.2.3.1.1") == StoredInstance(
        sop_instance_uid="1.2.3.1.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        blob_key="blobs/1.2.3.1.1",
        size=1234,
        study_uid="1.2.3",
        series_uid="1.2.3.1",
        patient_id="P1",
    )
    assert index.get("9.9.9") is None
    assert index.count_instances() == 1
    (row,) = rows(index, instance)
    assert row["source_ae"] == "MODALITY"
    assert row["attrs"]["SOPInstanceUID"] == "1.2.3.1.1"
    assert row["stored_at"] is not None


def test_duplicate_changes_nothing(index: SqlIndex, record: Factory) -> None:
    index.add(record("1.2.3.1.1"))
    again = record("1.2.3.1.1", blob_key="blobs/other", patient={"PatientName": "Other^Name"})
    assert index.add(again) == AddResult("duplicate")
    stored = index.get("1.2.3.1.1")
    assert stored is not None and stored.blob_key == "blobs/1.2.3.1.1"
    assert index.count_instances() == 1


def test_replace_points_at_new_blob(index: SqlIndex, record: Factory) -> None:
    index.add(record("1.2.3.1.1"))
    new = record("1.2.3.1.1", blob_key="blobs/new", image_values={"InstanceNumber": "7"})
    assert index.add(new, replace=True) == AddResult("replaced", "blobs/1.2.3.1.1")
    stored = index.get("1.2.3.1.1")
    assert stored is not None and stored.blob_key == "blobs/new"
    (row,) = rows(index, instance)
    assert row["instance_number"] == 7 and row["attrs"]["InstanceNumber"] == "7"
    assert index.count_instances() == 1
    assert index.referenced_blob_keys(["blobs/1.2.3.1.1", "blobs/new"]) == {"blobs/new"}


def test_replace_with_replace_flag_of_new_uid_adds(index: SqlIndex, record: Factory) -> None:
    assert index.add(record("1.2.3.1.1"), replace=True) == AddResult("added")


def test_replace_into_another_series_prunes_the_old_one(index: SqlIndex, record: Factory) -> None:
    index.add(record("1.2.3.1.1", series="1.2.3.1"))
    index.add(record("1.2.3.2.1", series="1.2.3.2", series_values={"Modality": "MR"}))
    moved = record("1.2.3.1.1", series="1.2.3.2", series_values={"Modality": "MR"})
    index.add(moved, replace=True)
    assert [r["series_uid"] for r in rows(index, series)] == ["1.2.3.2"]
    assert studies(index)[0]["ModalitiesInStudy"] == "MR"


def test_hierarchy_rows_are_reused(index: SqlIndex, record: Factory) -> None:
    index.add(record("1.2.3.1.1"))
    index.add(record("1.2.3.1.2"))
    index.add(record("1.2.3.2.1", series="1.2.3.2", series_values={"Modality": "MR"}))
    index.add(record("1.2.4.1.1", series="1.2.4.1", study="1.2.4"))
    assert len(rows(index, patient)) == 1
    assert len(rows(index, study)) == 2
    assert len(rows(index, series)) == 3
    assert len(rows(index, instance)) == 4
    assert rows(index, study)[0]["modalities"] == "CT\\MR"


def test_patient_identity_is_id_plus_issuer(index: SqlIndex, record: Factory) -> None:
    index.add(record("1.1.1.1", series="1.1.1", study="1.1", patient={"PatientID": "X"}))
    index.add(
        record(
            "1.2.1.1",
            series="1.2.1",
            study="1.2",
            patient={"PatientID": "X", "IssuerOfPatientID": "HOSP"},
        )
    )
    index.add(record("1.3.1.1", series="1.3.1", study="1.3", patient={"PatientID": " X "}))
    assert [(r["patient_id"], r["issuer"]) for r in rows(index, patient)] == [
        ("X", ""),
        ("X", "HOSP"),
    ]


def test_missing_values_are_filled_but_never_overwritten(index: SqlIndex, record: Factory) -> None:
    index.add(record("1.2.3.1.1", study_values={"StudyDescription": "Chest"}))
    index.add(
        record(
            "1.2.3.1.2",
            patient={"PatientName": "Changed^Name", "PatientSex": "M"},
            study_values={"StudyDescription": "Other", "AccessionNumber": "A77"},
            series_values={"SeriesDescription": "Axial"},
        )
    )
    (st,) = studies(index)
    assert st["PatientName"] == "Doe^John"
    assert st["PatientSex"] == "M"
    assert st["StudyDescription"] == "Chest"
    assert st["AccessionNumber"] == "A77"
    assert rows(index, study)[0]["accession_number"] == "A77"
    assert rows(index, series)[0]["description"] == "Axial"


def test_modality_filled_later_updates_modalities_in_study(index: SqlIndex, record: Factory) -> None:
    index.add(record("1.2.3.1.1", series_values={"Modality": ""}))
    assert studies(index)[0]["ModalitiesInStudy"] == ""
    index.add(record("1.2.3.1.2", series_values={"Modality": "US"}))
    assert studies(index)[0]["ModalitiesInStudy"] == "US"


def test_study_stays_under_its_first_patient(
    index: SqlIndex, record: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    index.add(record("1.2.3.1.1", patient={"PatientID": "P1"}))
    with caplog.at_level(logging.WARNING, logger="securepacs.index.repository"):
        index.add(record("1.2.3.2.1", series="1.2.3.2", patient={"PatientID": "P2"}))
    assert [r["patient_id"] for r in rows(index, patient)] == ["P1"]
    assert len(rows(index, series)) == 2
    assert "1.2.3" in caplog.text and "first patient" in caplog.text
    assert "P2" not in caplog.text  # patient data stays out of the log


def test_series_stays_under_its_first_study(
    index: SqlIndex, record: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    index.add(record("1.2.3.1.1", study="1.2.3"))
    with caplog.at_level(logging.WARNING, logger="securepacs.index.repository"):
        index.add(record("1.2.3.1.2", study="9.9"))
    assert [r["study_uid"] for r in rows(index, study)] == ["1.2.3"]
    assert "kept there" in caplog.text


@pytest.mark.parametrize(
    ("level", "keyword", "value"),
    [
        (Level.IMAGE, "SOPInstanceUID", ""),
        (Level.SERIES, "SeriesInstanceUID", "  "),
        (Level.STUDY, "StudyInstanceUID", "1.2\\1.3"),
        (Level.PATIENT, "PatientID", "A\\B"),
        (Level.IMAGE, "SOPClassUID", "1.2\x00"),
    ],
)
def test_invalid_identity_is_refused(
    index: SqlIndex, record: Factory, level: Level, keyword: str, value: str
) -> None:
    rec = record("1.2.3.1.1")
    rec.values[level][keyword] = value
    with pytest.raises(InvalidInstanceError, match=keyword):
        index.add(rec)
    assert index.count_instances() == 0


def test_uids_are_stripped(index: SqlIndex, record: Factory) -> None:
    index.add(record(" 1.2.3.1.1 "))
    assert index.get("1.2.3.1.1") is not None
    assert index.add(record("1.2.3.1.1")).outcome == "duplicate"


def test_reused_blob_key_is_a_storage_error(index: SqlIndex, record: Factory) -> None:
    index.add(record("1.2.3.1.1", blob_key="same"))
    with pytest.raises(StorageError, match="blob_key") as info:
        index.add(record("1.2.3.1.2", blob_key="same"))
    assert "\n" not in str(info.value)
    assert index.count_instances() == 1


def test_referenced_blob_keys_batches(index: SqlIndex, record: Factory) -> None:
    for n in range(3):
        index.add(record(f"1.2.3.1.{n}"))
    asked = [f"blobs/1.2.3.1.{n}" for n in range(3)] + [f"orphan/{n}" for n in range(1200)]
    assert index.referenced_blob_keys(reversed(asked)) == {
        "blobs/1.2.3.1.0",
        "blobs/1.2.3.1.1",
        "blobs/1.2.3.1.2",
    }
    assert index.referenced_blob_keys([]) == set()


def test_delete_instance_cleans_empty_parents(index: SqlIndex, record: Factory) -> None:
    index.add(record("1.2.3.1.1"))
    index.add(record("1.2.3.2.1", series="1.2.3.2", series_values={"Modality": "MR"}))
    index.add(record("1.2.4.1.1", series="1.2.4.1", study="1.2.4"))

    assert index.delete_instance("1.2.3.2.1") == "blobs/1.2.3.2.1"
    assert [r["series_uid"] for r in rows(index, series)] == ["1.2.3.1", "1.2.4.1"]
    assert rows(index, study)[0]["modalities"] == "CT"

    assert index.delete_instance("1.2.3.1.1") == "blobs/1.2.3.1.1"
    assert [r["study_uid"] for r in rows(index, study)] == ["1.2.4"]
    assert len(rows(index, patient)) == 1

    assert index.delete_instance("1.2.4.1.1") == "blobs/1.2.4.1.1"
    assert rows(index, patient) == [] and rows(index, study) == [] and rows(index, series) == []
    assert index.delete_instance("1.2.4.1.1") is None
    assert index.count_instances() == 0


def test_create_schema_is_idempotent(index_url: str, record: Factory) -> None:
    first = SqlIndex(index_url)
    first.create_schema()
    first.add(record("1.2.3.1.1"))
    second = SqlIndex(index_url)
    second.create_schema()
    second.create_schema()
    assert second.count_instances() == 1
    assert [r["version"] for r in rows(second, schema_version)] == [SCHEMA_VERSION]
    first.close()
    second.close()


def test_other_schema_version_is_refused(index: SqlIndex, index_url: str) -> None:
    with index._engine.begin() as conn:
        conn.execute(sa.update(schema_version).values(version=99))
    other = SqlIndex(index_url)
    with pytest.raises(StorageError, match="version 99"):
        other.create_schema()
    other.close()


def test_full_database_raises_storage_full(index: SqlIndex, record: Factory) -> None:
    index.add(record("1.2.3.1.1"))
    with index._engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    index.close()

    def cap(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

    sa.event.listen(index._engine, "connect", cap)
    big = {"StudyDescription": "x" * 200_000}
    with pytest.raises(StorageFullError):
        index.add(record("1.2.9.1.1", series="1.2.9.1", study="1.2.9", study_values=big))
    assert index.count_instances() == 1


def test_bad_urls(tmp_path: Any) -> None:
    with pytest.raises(ConfigError):
        SqlIndex("no-such-dialect://x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError):
        SqlIndex(f"sqlite:///{blocker / 'sub' / 'index.db'}")


def test_unreachable_database_is_a_storage_error(tmp_path: Any) -> None:
    folder = tmp_path / "dir.db"
    folder.mkdir()
    idx = SqlIndex(f"sqlite:///{folder}")  # a folder, not a database file
    with pytest.raises(StorageError) as info:
        idx.create_schema()
    assert "\n" not in str(info.value)
    with pytest.raises(StorageError):
        idx.get("1.2")


def test_find_with_unknown_key_value_raises_query_error(index: SqlIndex) -> None:
    from securepacs.errors import QueryError

    query = Query(Root.STUDY, Level.STUDY, (Key("StudyDate", "DA", "2020-2021\\2022"),))
    with pytest.raises(QueryError):
        index.find(query)
