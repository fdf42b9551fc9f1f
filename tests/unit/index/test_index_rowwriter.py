"""The plain DB-API add (issue 19, :mod:`securepacs.index.rowwriter`) writes the rows the
SQLAlchemy path writes, on SQLite and PostgreSQL, and hands every uncommon add to it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from securepacs.index import rowwriter
from securepacs.index.repository import SqlIndex
from securepacs.index.schema import instance, patient, series, study
from securepacs.model.record import InstanceRecord

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def _records(build_record: Any) -> list[tuple[InstanceRecord, bool]]:
    """(record, replace): new rows, filled values, a modality added later, a series under
    another study, a patient without an ID, a duplicate, a replacement, another org."""
    out: list[tuple[InstanceRecord, bool]] = [
        (build_record("1.1", patient={"PatientBirthDate": ""}), False),
        (build_record("1.2", patient={"PatientBirthDate": "19700101", "PatientSex": "F"},
                      study_values={"AccessionNumber": "A1", "StudyDate": "20260101"},
                      image_values={"InstanceNumber": "7"}), False),
        (build_record("1.3", series="1.2.3.2", series_values={"Modality": "MR",
                                                             "SeriesNumber": "2"},
                      image_values={"SOPClassUID": MR_IMAGE}), False),
        (build_record("1.4", series="1.2.3.2", study="9.9.9"), False),
        (build_record("1.5", study="5.5", series="5.5.1", patient={"PatientID": ""}), False),
        (build_record("1.1", blob_key="blobs/dup"), False),
        (build_record("1.2", blob_key="blobs/new-1.2"), True),
        (build_record("1.6", series="1.2.3.9", series_values={"Modality": ""}), False),
        (build_record("1.7", series="1.2.3.9", series_values={"Modality": "SR"}), False),
    ]
    other = build_record("1.1", blob_key="blobs/other-1.1")
    out.append((InstanceRecord(values=other.values, transfer_syntax_uid=other.transfer_syntax_uid,
                               blob_key=other.blob_key, size=other.size,
                               source_ae=other.source_ae, organization="org2"), False))
    return out


def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(url)
    out = {}
    with engine.connect() as conn:
        for table in (patient, study, series, instance):
            cols = [c for c in table.c if c.name != "stored_at"]
            rows = conn.execute(sa.select(*cols).order_by(table.c.id)).all()
            out[table.name] = [tuple(r) for r in rows]
        stamps = conn.execute(sa.select(instance.c.stored_at)).scalars().all()
    engine.dispose()
    assert all(s is not None for s in stamps)
    return out


def _fill(url: str, build_record: Any) -> list[str]:
    index = SqlIndex(url)
    index.create_schema()
    outcomes = []
    for rec, replace in _records(build_record):
        result = index.add(rec, replace=replace)
        if result.outcome == "foreign":  # the caller found the bytes the same
            result = index.add(rec, replace=replace, foreign=str(result.previous_blob_key))
        outcomes.append(result.outcome)
    index.close()
    return outcomes


def _same_rows(fast_url: str, slow_url: str, monkeypatch: pytest.MonkeyPatch,
               build_record: Any) -> None:
    used = []
    original = rowwriter.RowWriter.add

    def counted(self: rowwriter.RowWriter, *args: Any, **kwargs: Any) -> str:
        used.append(args[2].sop)
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(rowwriter.RowWriter, "add", counted)
        fast = _fill(fast_url, build_record)
    assert len(used) >= 8  # the common adds went the fast way
    with monkeypatch.context() as patched:
        patched.setattr(SqlIndex, "_add_fast", lambda self, jobs: jobs)
        slow = _fill(slow_url, build_record)
    assert fast == slow == ["added", "added", "added", "added", "added", "duplicate",
                            "replaced", "added", "added", "added"]
    assert _dump(fast_url) == _dump(slow_url)


def test_same_rows_as_sqlalchemy_on_sqlite(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                           record: Any) -> None:
    _same_rows(f"sqlite:///{tmp_path / 'fast.db'}", f"sqlite:///{tmp_path / 'slow.db'}",
               monkeypatch, record)


def test_same_rows_as_sqlalchemy_on_postgresql(postgres: Any, monkeypatch: pytest.MonkeyPatch,
                                               record: Any) -> None:
    _same_rows(postgres.create_database(), postgres.create_database(), monkeypatch, record)


def test_concurrent_adds_share_batches_and_all_land(tmp_path: Any, record: Any) -> None:
    index = SqlIndex(f"sqlite:///{tmp_path / 'i.db'}")
    index.create_schema()
    errors: list[BaseException] = []

    def add(n: int) -> None:
        try:
            for k in range(20):
                rec = record(f"2.{n}.{k}", series=f"2.{n % 3}", study="2")
                assert index.add(rec, ready=lambda: None).outcome == "added"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert index.count_instances() == 120
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'i.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(series)).scalar() == 3
        assert conn.execute(sa.select(sa.func.count()).select_from(study)).scalar() == 1
    engine.dispose()
    index.close()


def test_a_failing_ready_aborts_only_its_add(tmp_path: Any, record: Any) -> None:
    index = SqlIndex(f"sqlite:///{tmp_path / 'i.db'}")
    index.create_schema()

    def fail() -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError):
        index.add(record("3.1"), ready=fail)
    assert index.get("3.1") is None
    assert index.add(record("3.2"), ready=lambda: None).outcome == "added"
    assert index.get("3.2") is not None
    index.close()


def test_same_uid_from_two_organisations_at_once_is_serialised_on_postgresql(
        postgres: Any, record: Any) -> None:
    """Two index instances on one PostgreSQL (two servers), the same SOP Instance UID from
    two organisations at the same moment: the second add must wait for the first one's
    commit and then see its row ("foreign"), never insert beside it. The first add holds
    its transaction open in `ready` until the second has had every chance to get there."""
    url = postgres.create_database()
    one, two = SqlIndex(url), SqlIndex(url)
    one.create_schema()
    base = record("4.1", blob_key="blobs/a-4.1")
    other = InstanceRecord(values=base.values, transfer_syntax_uid=base.transfer_syntax_uid,
                           blob_key="blobs/b-4.1", size=base.size, source_ae=base.source_ae,
                           organization="org2")
    first_in, second_in = threading.Event(), threading.Event()
    outcomes: dict[str, str] = {}

    def hold() -> None:  # inside the first add's transaction, before its commit
        first_in.set()
        second_in.wait(3)  # set only if the second add got past the check too

    def add_first() -> None:
        outcomes["first"] = one.add(base, ready=hold).outcome

    thread = threading.Thread(target=add_first)
    thread.start()
    assert first_in.wait(10)
    outcomes["second"] = two.add(other, ready=second_in.set).outcome
    thread.join(10)
    one.close()
    two.close()
    assert outcomes == {"first": "added", "second": "foreign"}


def test_common_adds_on_postgresql_never_fall_back(postgres: Any, record: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """New instances and duplicates, alone and in concurrent batches (savepoints), commit
    on the plain DB-API path: neither the SQLAlchemy batch nor the one-by-one add runs.
    (A statement that fails there is caught and run again the slow way, with the same
    rows: only this test sees the difference.)"""
    from securepacs.index import repository

    slow: list[str] = []
    add_one, add = SqlIndex._add_one, repository._add

    def counted_one(self: SqlIndex, rec: InstanceRecord, *args: Any) -> Any:
        slow.append(rec.blob_key)
        return add_one(self, rec, *args)

    def counted(conn: Any, rec: InstanceRecord, *args: Any) -> Any:
        slow.append(rec.blob_key)
        return add(conn, rec, *args)

    monkeypatch.setattr(SqlIndex, "_add_one", counted_one)
    monkeypatch.setattr(repository, "_add", counted)
    index = SqlIndex(postgres.create_database())
    index.create_schema()
    assert index.add(record("5.0", series="5.1")).outcome == "added"  # a new series
    assert index.add(record("5.00", series="5.1")).outcome == "added"  # a known one
    assert index.add(record("5.0", series="5.1")).outcome == "duplicate"
    assert index.add(record("5.0", series="5.2")).outcome == "duplicate"  # another series
    errors: list[BaseException] = []
    outcomes: list[str] = []

    def run(n: int) -> None:
        try:
            for k in range(15):
                rec = record(f"5.{n}.{k}", series=f"5.{n % 2 + 1}")
                outcomes.append(index.add(rec, ready=lambda: None).outcome)
                outcomes.append(index.add(rec).outcome)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sorted(set(outcomes)) == ["added", "duplicate"]
    assert outcomes.count("added") == outcomes.count("duplicate") == 60
    assert index.count_instances() == 62
    assert slow == []
    index.close()


def _batch_after(index: SqlIndex, record: Any, adds: list[tuple[InstanceRecord, Any]]
                 ) -> tuple[list[int], dict[int, Any]]:
    """Run `adds` ((record, ready) pairs) as one group-commit batch: a first add holds the
    leader's transaction until they are all queued behind it. The sizes of the fast
    batches, and each add's outcome or exception, by position."""
    sizes: list[int] = []
    fast = SqlIndex._add_fast_pg

    def sized(self: SqlIndex, jobs: list[Any], writer: Any) -> Any:
        sizes.append(len(jobs))
        return fast(self, jobs, writer)

    release = threading.Event()
    results: dict[int, Any] = {}

    def run(n: int, rec: InstanceRecord, ready: Any) -> None:
        try:
            results[n] = index.add(rec, ready=ready).outcome
        except Exception as exc:  # noqa: BLE001 - the outcome of this add
            results[n] = exc

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(SqlIndex, "_add_fast_pg", sized)
        first = threading.Thread(target=run, args=(-1, record("6.0", series="6.1"),
                                                   lambda: release.wait(10)))
        first.start()
        while not sizes:  # the first add leads, alone, and waits in its `ready`
            time.sleep(0.01)
        threads = [threading.Thread(target=run, args=(n, rec, ready))
                   for n, (rec, ready) in enumerate(adds)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(index._group._pending) < len(adds) and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        for t in [first, *threads]:
            t.join(timeout=30)
    assert results.pop(-1) == "added"
    return sizes, results


def test_a_failing_ready_in_a_postgresql_batch_aborts_only_its_add(postgres: Any,
                                                                   record: Any) -> None:
    index = SqlIndex(postgres.create_database())
    index.create_schema()

    def fail() -> None:
        raise OSError("blob store gone")

    sizes, results = _batch_after(index, record, [
        (record("6.1", series="6.1"), lambda: None), (record("6.2", series="6.1"), fail),
        (record("6.3", series="6.2"), lambda: None)])
    assert sizes == [1, 3]  # the three ran as one batch, rolled back when 6.2 failed
    assert results[0] == results[2] == "added"
    assert isinstance(results[1], OSError)
    assert index.get("6.1") is not None and index.get("6.3") is not None
    assert index.get("6.2") is None
    assert index.count_instances() == 3
    index.close()


def test_one_uid_twice_in_a_postgresql_batch(postgres: Any, record: Any) -> None:
    """Two associations send the same instance at once: one batch, one row, one
    duplicate (the UID's lock is taken once for both)."""
    index = SqlIndex(postgres.create_database())
    index.create_schema()
    sizes, results = _batch_after(index, record, [
        (record("7.1", series="6.1", blob_key="blobs/a"), lambda: None),
        (record("7.1", series="6.1", blob_key="blobs/b"), lambda: None),
        (record("7.2", series="7.9"), lambda: None)])
    assert sizes == [1, 3]
    assert sorted(results.values()) == ["added", "added", "duplicate"]
    assert index.count_instances() == 3
    index.close()
