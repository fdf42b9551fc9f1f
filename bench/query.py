"""C-FIND latency on a large index: synthetic rows bulk-inserted with SQLAlchemy core
into a fresh index, then study- and image-level queries over one persistent association
(TLS) to our server."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from bench.common import HOST, OurServer, Pki, median, percentile
from securepacs.dimse import commands as cmd
from securepacs.dimse.client import (
    UNCOMPRESSED,
    _decode_identifier,
    _encode_identifier,
    _status,
)
from securepacs.dimse.client_ul import Association, ContextRequest, Endpoint
from securepacs.index.repository import SqlIndex, _columns
from securepacs.index.schema import instance, patient, series, study
from securepacs.pki.tlspolicy import client_context

Log = Callable[[str], None]
PER_SERIES, SERIES_PER_STUDY, STUDIES_PER_PATIENT = 25, 2, 2
_ROOT = "1.2.826.0.1.3680043.10.543."


def _uid(kind: int, n: int) -> str:
    return f"{_ROOT}{kind}.{n}"


def build_index(url: str, instances: int, log: Log) -> dict[str, int]:
    """Fill a fresh index with `instances` synthetic instances (patients, studies, series)."""
    index = SqlIndex(url)
    index.create_schema()
    index.close()
    engine = sa.create_engine(url)
    n_series = instances // PER_SERIES
    n_studies = n_series // SERIES_PER_STUDY
    n_patients = n_studies // STUDIES_PER_PATIENT
    now = datetime.now(UTC)
    start = time.perf_counter()
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=OFF")

        def bulk(table: sa.Table, rows: Any) -> None:
            batch = []
            for row in rows:
                batch.append(row)
                if len(batch) == 20000:
                    conn.execute(sa.insert(table), batch)
                    batch = []
            if batch:
                conn.execute(sa.insert(table), batch)

        def patients() -> Any:
            for p in range(n_patients):
                attrs = {"PatientID": f"P{p:07d}", "PatientName": f"BENCH^PATIENT{p}",
                         "PatientBirthDate": f"19{p % 100:02d}0101", "PatientSex": "MF"[p % 2]}
                yield {"id": p + 1, "attrs": attrs, **_columns(patient, attrs)}

        def studies() -> Any:
            for s in range(n_studies):
                attrs = {"StudyInstanceUID": _uid(1, s), "StudyDate": f"20{s % 26:02d}0{1 + s % 9}15",
                         "StudyTime": "101500", "AccessionNumber": f"ACC{s:08d}",
                         "StudyID": str(s), "StudyDescription": "MR BRAIN"}
                yield {"id": s + 1, "patient_pk": s // STUDIES_PER_PATIENT + 1,
                       "modalities": "MR", "attrs": attrs, **_columns(study, attrs)}

        def all_series() -> Any:
            for e in range(n_series):
                attrs = {"SeriesInstanceUID": _uid(2, e), "Modality": "MR",
                         "SeriesNumber": str(e % SERIES_PER_STUDY + 1), "SeriesDescription": "T1"}
                yield {"id": e + 1, "study_pk": e // SERIES_PER_STUDY + 1, "attrs": attrs,
                       **_columns(series, attrs)}

        def instances_() -> Any:
            for i in range(n_series * PER_SERIES):
                attrs = {"SOPInstanceUID": _uid(3, i), "SOPClassUID": MRImageStorage,
                         "InstanceNumber": str(i % PER_SERIES + 1)}
                yield {"id": i + 1, "series_pk": i // PER_SERIES + 1,
                       "transfer_syntax_uid": "1.2.840.10008.1.2.1", "blob_key": f"b{i:012d}",
                       "size": 524_288, "stored_at": now, "source_ae": "BENCH", "attrs": attrs,
                       **_columns(instance, attrs)}

        bulk(patient, patients())
        bulk(study, studies())
        bulk(series, all_series())
        bulk(instance, instances_())
    engine.dispose()
    log(f"query: built an index of {instances:,} instances in {time.perf_counter() - start:.0f} s")
    return {"patients": n_patients, "studies": n_studies, "series": n_series,
            "instances": n_series * PER_SERIES}


def _find(assoc: Association, context_id: int, ts: str, query: Dataset) -> int:
    assoc.send(context_id, cmd.request(cmd.C_FIND_RQ, assoc.next_message_id(),
                                       StudyRootQueryRetrieveInformationModelFind,
                                       has_data_set=True), _encode_identifier(query, ts))
    matches = 0
    while True:
        answer = assoc.receive("C-FIND")
        status = _status(answer).status
        if status in (0xFF00, 0xFF01):
            _decode_identifier(answer.dataset, ts)
            matches += 1
            continue
        if status != 0:
            raise RuntimeError(f"C-FIND failed with 0x{status:04X}")
        return matches


def _study_query(counts: dict[str, int], rng: random.Random) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientID = f"P{rng.randrange(counts['patients']):07d}"
    for kw in ("PatientName", "StudyInstanceUID", "StudyDate", "StudyDescription",
               "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"):
        setattr(q, kw, "")
    return q


def _image_query(counts: dict[str, int], rng: random.Random) -> Dataset:
    e = rng.randrange(counts["series"])
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.StudyInstanceUID = _uid(1, e // SERIES_PER_STUDY)
    q.SeriesInstanceUID = _uid(2, e)
    q.SOPInstanceUID = ""
    q.SOPClassUID = ""
    q.InstanceNumber = ""
    return q


def query(work: Path, pki: Pki, sizes: list[int], repeats: int, log: Log,
          src: Path | None = None) -> list[dict[str, Any]]:
    results = []
    for size in sizes:
        srv = OurServer(work / f"query-{size}", pki, src=src)
        srv.folder.mkdir(parents=True, exist_ok=True)
        data = work / f"query-index-{size}"
        data.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{data / 'index.sqlite'}"
        counts = build_index(url, size, log)
        srv.extra = {"database_url": url}
        srv.start()
        try:
            ep = Endpoint(HOST, srv.port, "SECUREPACS", "BENCH",
                          tls=client_context(pki.ca, pki.client_cert, pki.client_key))
            assoc = Association.open(ep, [ContextRequest(
                StudyRootQueryRetrieveInformationModelFind, UNCOMPRESSED)])
            ctx = assoc.context_for(StudyRootQueryRetrieveInformationModelFind)
            assert ctx is not None
            rng = random.Random(size)
            try:
                for level, make in (("STUDY", _study_query), ("IMAGE", _image_query)):
                    times, matched = [], []
                    for n in range(repeats + 5):
                        q = make(counts, rng)
                        t0 = time.perf_counter()
                        m = _find(assoc, ctx.context_id, ctx.transfer_syntax, q)
                        dt = time.perf_counter() - t0
                        if n >= 5:  # warm-up
                            times.append(dt * 1000)
                            matched.append(m)
                    r = {"kind": "query", "instances": counts["instances"], "level": level,
                         "ms": times, "p50_ms": median(times), "p95_ms": percentile(times, 95),
                         "matches_median": median([float(m) for m in matched])}
                    log(f"query {counts['instances']:>9,} {level:5s} p50 {r['p50_ms']:6.1f} ms "
                        f"p95 {r['p95_ms']:6.1f} ms ({r['matches_median']:.0f} matches)")
                    results.append(r)
            finally:
                assoc.release()
        finally:
            srv.stop()
    return results
