"""Concurrent adds of the same instances from several threads and processes (one SQLite file)."""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from securepacs.index.repository import SqlIndex
from securepacs.model.levels import Level, Root
from securepacs.model.query import Query
from securepacs.model.record import InstanceRecord


def make_record(n: int) -> InstanceRecord:
    """Instance n: 5 patients, 10 studies, 20 series."""
    return InstanceRecord(
        values={
            Level.PATIENT: {"PatientID": f"P{n % 5}", "PatientName": f"Name^{n % 5}"},
            Level.STUDY: {"StudyInstanceUID": f"1.2.{n % 10}", "StudyDate": "20200101"},
            Level.SERIES: {
                "SeriesInstanceUID": f"1.3.{n % 20}",
                "Modality": "CT" if n % 2 else "MR",
            },
            Level.IMAGE: {"SOPInstanceUID": f"1.4.{n}", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"},
        },
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        blob_key=f"b/{n}",
        size=10,
    )


def add_range(url: str, numbers: list[int], barrier: Any, results: Any) -> None:
    """Worker of the multi-process test: add records, report (uid, outcome) pairs or the error."""
    try:
        index = SqlIndex(url)
        barrier.wait(timeout=60)  # both processes create the schema and add at once
        index.create_schema()
        outcomes = [(f"1.4.{n}", index.add(make_record(n)).outcome) for n in numbers]
        index.close()
        results.put(("ok", outcomes))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", repr(exc)))


def assert_hierarchy(index: SqlIndex, instances: int, patients: int, studies: int, series: int) -> None:
    assert index.count_instances() == instances
    assert len(index.find(Query(Root.PATIENT, Level.PATIENT, ()))) == patients
    found = index.find(Query(Root.STUDY, Level.STUDY, ()))
    assert len(found) == studies
    assert sum(int(s["NumberOfStudyRelatedInstances"]) for s in found) == instances
    assert len(index.find(Query(Root.STUDY, Level.SERIES, ()))) == series


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, index_url: str) -> str:
    """The same test on SQLite and on PostgreSQL (group commits, row locks, retries)."""
    if request.param == "sqlite":
        return index_url
    return str(request.getfixturevalue("pg_url"))


def test_threads_adding_the_same_records(any_url: str) -> None:
    index = SqlIndex(any_url)
    index.create_schema()
    records = [make_record(n) for n in range(50)]
    barrier = threading.Barrier(8)
    outcomes: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(seed: int) -> None:
        order = records[:]
        random.Random(seed).shuffle(order)
        barrier.wait()
        try:
            for rec in order:
                result = index.add(rec)
                with lock:
                    outcomes.append((rec.sop_instance_uid, result.outcome))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    added = Counter(uid for uid, outcome in outcomes if outcome == "added")
    assert added == Counter({rec.sop_instance_uid: 1 for rec in records})
    assert Counter(outcome for _, outcome in outcomes) == {"added": 50, "duplicate": 350}
    assert_hierarchy(index, instances=50, patients=5, studies=10, series=20)
    index.close()


def test_processes_adding_overlapping_records(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared' / 'index.db'}"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    workers = [
        context.Process(target=add_range, args=(url, numbers, barrier, results))
        for numbers in (list(range(80)), list(range(79, 39, -1)) + list(range(80, 120)))
    ]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert [status for status, _ in reports] == ["ok", "ok"], reports
    outcomes = [pair for _, pairs in reports for pair in pairs]
    added = Counter(uid for uid, outcome in outcomes if outcome == "added")
    assert added == Counter({f"1.4.{n}": 1 for n in range(120)})
    assert sum(1 for _, outcome in outcomes if outcome == "duplicate") == 40
    index = SqlIndex(url)
    assert_hierarchy(index, instances=120, patients=5, studies=10, series=20)
    index.close()
