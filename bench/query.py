"""C-FIND latency on a large index: synthetic rows bulk-loaded into a fresh index, then
study- and image-level queries over one persistent association (TLS) to our server.

Two index backends: SQLite (a file in the run's folder; rows inserted with SQLAlchemy core
in batches of 20,000) and PostgreSQL (a private cluster, see :mod:`bench.engines`; rows
loaded with ``COPY ... FROM STDIN`` through psycopg, then ``VACUUM (ANALYZE)`` so that the
planner has statistics and autovacuum does not start in the middle of the measurement).

Organisations as tenants (docs/tenants.md): the rows belong to :data:`ORGS` organisations
(patient ``p`` to ``Org p % ORGS``, with its studies, series and instances); one study
in :data:`SHARE_EVERY` is shared with the caller, as many between other organisations. Two servers
answer the same queries on the same index, interleaved query by query: ``org``, with trust
from the index, where the bench client is an identity of :data:`CALLER` (the SQL
visibility condition is on the measured path), and ``none``, with trust from files (no
organisations, the query without that condition). Nine queries in ten ask for the
caller's own patients or series, one in ten for one of a study shared with it."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from bench import engines
from bench.common import HOST, OurServer, Pki, median, percentile
from securepacs.dimse import commands as cmd
from securepacs.dimse.client_ul import Association, ContextRequest, Endpoint
from securepacs.dimse.datasets import decode_dataset, encode_dataset
from securepacs.index.repository import SqlIndex, _columns
from securepacs.index.schema import instance, patient, series, study
from securepacs.index.trust import SqlTrustStore, trust_share
from securepacs.model.identity import Permission
from securepacs.model.trust import Group
from securepacs.pki.tlspolicy import client_context

Log = Callable[[str], None]
PER_SERIES, SERIES_PER_STUDY, STUDIES_PER_PATIENT = 25, 2, 2
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_ROOT = "1.2.826.0.1.3680043.10.543."
#: Organisations the synthetic rows belong to; the bench client is an identity of CALLER.
ORGS = 20
CALLER = "Org 00"
#: every SHARE_EVERY-th study (offset 1) is shared with the caller, offset 3 with another
SHARE_EVERY = 100
#: the two servers on one index: trust from the index (the tenant filter), and from files
VARIANTS = ("none", "org")


def _org(p: int) -> str:
    """The organisation of patient number `p` (and of its studies, series, instances)."""
    return f"Org {p % ORGS:02d}"


def _uid(kind: int, n: int) -> str:
    return f"{_ROOT}{kind}.{n}"


def _patients(n: int) -> Iterator[dict[str, Any]]:
    for p in range(n):
        attrs = {"PatientID": f"P{p:07d}", "PatientName": f"BENCH^PATIENT{p}",
                 "PatientBirthDate": f"19{p % 100:02d}0101", "PatientSex": "MF"[p % 2]}
        yield {"id": p + 1, "attrs": attrs, "organization": _org(p),
               **_columns(patient, attrs)}


def _studies(n: int) -> Iterator[dict[str, Any]]:
    for s in range(n):
        attrs = {"StudyInstanceUID": _uid(1, s), "StudyDate": f"20{s % 26:02d}0{1 + s % 9}15",
                 "StudyTime": "101500", "AccessionNumber": f"ACC{s:08d}",
                 "StudyID": str(s), "StudyDescription": "MR BRAIN"}
        yield {"id": s + 1, "patient_pk": s // STUDIES_PER_PATIENT + 1,
               "modalities": "MR", "attrs": attrs,
               "organization": _org(s // STUDIES_PER_PATIENT), **_columns(study, attrs)}


def _series(n: int) -> Iterator[dict[str, Any]]:
    for e in range(n):
        attrs = {"SeriesInstanceUID": _uid(2, e), "Modality": "MR",
                 "SeriesNumber": str(e % SERIES_PER_STUDY + 1), "SeriesDescription": "T1"}
        yield {"id": e + 1, "study_pk": e // SERIES_PER_STUDY + 1, "attrs": attrs,
               "organization": _org(e // SERIES_PER_STUDY // STUDIES_PER_PATIENT),
               **_columns(series, attrs)}


def _instances(n: int) -> Iterator[dict[str, Any]]:
    now = datetime.now(UTC)
    for i in range(n):
        attrs = {"SOPInstanceUID": _uid(3, i), "SOPClassUID": MRImageStorage,
                 "InstanceNumber": str(i % PER_SERIES + 1)}
        yield {"id": i + 1, "series_pk": i // PER_SERIES + 1,
               "transfer_syntax_uid": "1.2.840.10008.1.2.1", "blob_key": f"b{i:012d}",
               "size": 524_288, "stored_at": now, "source_ae": "BENCH", "attrs": attrs,
               "organization": _org(i // PER_SERIES // SERIES_PER_STUDY // STUDIES_PER_PATIENT),
               **_columns(instance, attrs)}


def _shared_studies(n_studies: int) -> list[int]:
    """Study numbers of other organisations shared with the caller."""
    return [s for s in range(1, n_studies, SHARE_EVERY)
            if _org(s // STUDIES_PER_PATIENT) != CALLER]


def _shares(n_studies: int) -> Iterator[dict[str, Any]]:
    """Active shares: with the caller (:func:`_shared_studies`), and as many between other
    organisations (the caller's query must skip those)."""
    now = datetime.now(UTC)
    for s in range(1, n_studies, SHARE_EVERY):
        owner = _org(s // STUDIES_PER_PATIENT)
        if owner != CALLER:
            yield {"share_id": f"c{s:08x}", "study_uid": _uid(1, s), "owner": owner,
                   "grantee": CALLER, "read_only": False, "until": None, "created_at": now,
                   "revoked_at": None}
        t = s + 2
        if t < n_studies:
            owner = _org(t // STUDIES_PER_PATIENT)
            grantee = _org(t // STUDIES_PER_PATIENT + 1)
            if CALLER not in (owner, grantee):
                yield {"share_id": f"o{t:08x}", "study_uid": _uid(1, t), "owner": owner,
                       "grantee": grantee, "read_only": False, "until": None,
                       "created_at": now, "revoked_at": None}


def _insert(conn: sa.Connection, table: sa.Table, rows: Iterator[dict[str, Any]]) -> None:
    """SQLAlchemy core executemany, 20,000 rows at a time."""
    while batch := list(itertools.islice(rows, 20_000)):
        conn.execute(sa.insert(table), batch)


def _copy(conn: sa.Connection, table: sa.Table, rows: Iterator[dict[str, Any]]) -> None:
    """PostgreSQL ``COPY FROM STDIN`` through the psycopg connection under `conn`."""
    first = next(rows, None)
    if first is None:
        return
    names = list(first)
    as_json = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
    serial = "id" in table.c
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    columns = ", ".join(f'"{n}"' for n in names)
    with cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
        for row in itertools.chain([first], rows):
            copy.write_row([json.dumps(row[n]) if n in as_json else row[n] for n in names])
    if not serial:
        return
    conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                         f'(SELECT max(id) FROM "{table.name}"))')


def _vacuum_analyze(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM (ANALYZE)")


def _enrol(url: str, pki: Pki) -> None:
    """The bench client as an identity of :data:`CALLER` in the index's trust store (what
    ``ca issue client --org`` records), with the find permission."""
    from cryptography import x509

    from securepacs.services.authority import record_for

    store = SqlTrustStore(url)
    try:
        store.create_schema()
        store.put_group(Group("bench", frozenset({Permission.ECHO, Permission.FIND})))
        cert = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
        store.add_certificate(record_for(cert, kind="client", organization=CALLER,
                                         group="bench"))
    finally:
        store.close()


def build_index(url: str, instances: int, log: Log, pki: Pki | None = None) -> dict[str, int]:
    """Fill a fresh index with `instances` synthetic instances (patients, studies, series)
    of :data:`ORGS` organisations, the shares, and (given `pki`) the bench client enrolled
    as an identity of :data:`CALLER`."""
    index = SqlIndex(url)
    index.create_schema()
    index.close()
    if pki is not None:
        _enrol(url, pki)
    engine = sa.create_engine(url)
    n_series = instances // PER_SERIES
    n_studies = n_series // SERIES_PER_STUDY
    n_patients = n_studies // STUDIES_PER_PATIENT
    start = time.perf_counter()
    with engine.begin() as conn:
        load = _copy if conn.dialect.name == "postgresql" else _insert
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
        load(conn, patient, _patients(n_patients))
        load(conn, study, _studies(n_studies))
        load(conn, series, _series(n_series))
        load(conn, instance, _instances(n_series * PER_SERIES))
        load(conn, trust_share, _shares(n_studies))
    note = (f"query: loaded {instances:,} instances into {engine.dialect.name} in "
            f"{time.perf_counter() - start:.0f} s")
    if engine.dialect.name == "postgresql":
        start = time.perf_counter()
        _vacuum_analyze(engine)
        note += f", VACUUM (ANALYZE) {time.perf_counter() - start:.0f} s"
    engine.dispose()
    log(note)
    return {"patients": n_patients, "studies": n_studies, "series": n_series,
            "instances": n_series * PER_SERIES}


def _find(assoc: Association, context_id: int, ts: str, query: Dataset) -> int:
    """One C-FIND on the open association: the number of matches (each decoded)."""
    assoc.send(context_id, cmd.request(cmd.C_FIND_RQ, assoc.next_message_id(),
                                       StudyRootQueryRetrieveInformationModelFind,
                                       has_data_set=True), encode_dataset(query, ts))
    matches = 0
    while True:
        answer = assoc.receive("C-FIND")
        status = answer.command.get(cmd.STATUS)
        if status in (0xFF00, 0xFF01):
            decode_dataset(answer.dataset, ts)
            matches += 1
            continue
        if status != 0:
            raise RuntimeError(f"C-FIND failed with status {status!r}")
        return matches


def _study_number(counts: dict[str, int], rng: random.Random) -> int:
    """A study the caller sees: nine in ten of its own, one in ten shared with it."""
    shared = _shared_studies(counts["studies"])
    if shared and rng.random() < 0.1:
        return rng.choice(shared)
    own = counts["patients"] // ORGS or 1  # patients 0, ORGS, 2*ORGS, ... are the caller's
    return rng.randrange(own) * ORGS * STUDIES_PER_PATIENT + rng.randrange(STUDIES_PER_PATIENT)


def _study_query(counts: dict[str, int], rng: random.Random) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientID = f"P{_study_number(counts, rng) // STUDIES_PER_PATIENT:07d}"
    for kw in ("PatientName", "StudyInstanceUID", "StudyDate", "StudyDescription",
               "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"):
        setattr(q, kw, "")
    return q


def _image_query(counts: dict[str, int], rng: random.Random) -> Dataset:
    e = _study_number(counts, rng) * SERIES_PER_STUDY + rng.randrange(SERIES_PER_STUDY)
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.StudyInstanceUID = _uid(1, e // SERIES_PER_STUDY)
    q.SeriesInstanceUID = _uid(2, e)
    q.SOPInstanceUID = ""
    q.SOPClassUID = ""
    q.InstanceNumber = ""
    return q


def _measure(ports: dict[str, int], pki: Pki, counts: dict[str, int], repeats: int,
             seed: int) -> Iterator[tuple[str, str, list[float], list[int]]]:
    """(variant, level, milliseconds, matches) of `repeats` queries per level and variant
    after 5 warm-ups: each query goes to every variant's server in turn (the order
    alternating), so that the variants share the machine's load."""
    assocs: dict[str, Association] = {}
    try:
        for variant, port in ports.items():
            ep = Endpoint(HOST, port, "SECUREPACS", "BENCH",
                          tls=client_context(pki.ca, pki.client_cert, pki.client_key))
            assocs[variant] = Association.open(ep, [ContextRequest(
                StudyRootQueryRetrieveInformationModelFind, UNCOMPRESSED)])
        rng = random.Random(seed)
        for level, make in (("STUDY", _study_query), ("IMAGE", _image_query)):
            times: dict[str, list[float]] = {v: [] for v in assocs}
            matched: dict[str, list[int]] = {v: [] for v in assocs}
            for n in range(repeats + 5):
                q = make(counts, rng)
                order = list(assocs) if n % 2 else list(reversed(assocs))
                for variant in order:
                    assoc = assocs[variant]
                    ctx = assoc.context_for(StudyRootQueryRetrieveInformationModelFind)
                    assert ctx is not None
                    t0 = time.perf_counter()
                    m = _find(assoc, ctx.context_id, ctx.transfer_syntax, q)
                    dt = time.perf_counter() - t0
                    if n >= 5:  # warm-up
                        times[variant].append(dt * 1000)
                        matched[variant].append(m)
            for variant in assocs:
                yield variant, level, times[variant], matched[variant]
    finally:
        for assoc in assocs.values():
            assoc.release()


def _one_index(work: Path, pki: Pki, url: str, backend: str, size: int, repeats: int,
               log: Log, src: Path | None) -> list[dict[str, Any]]:
    counts = build_index(url, size, log, pki)
    results = []
    with ExitStack() as stack:
        ports = {}
        for variant in VARIANTS:
            extra: dict[str, object] = {"database_url": url, "trust_source": (
                "index" if variant == "org" else "files")}
            srv = OurServer(work / f"query-{size}-{variant}", pki, src=src, extra=extra)
            stack.callback(srv.stop)
            ports[variant] = srv.start().port
        for variant, level, times, matched in _measure(ports, pki, counts, repeats, size):
            r = {"kind": "query", "backend": backend, "instances": counts["instances"],
                 "level": level, "tenancy": variant, "orgs": ORGS, "ms": times,
                 "p50_ms": median(times), "p95_ms": percentile(times, 95),
                 "matches_median": median([float(m) for m in matched]),
                 "matches_mean": sum(matched) / len(matched) if matched else 0.0}
            log(f"query {backend:10s} {counts['instances']:>9,} {level:5s} {variant:4s} p50 "
                f"{r['p50_ms']:6.1f} ms p95 {r['p95_ms']:6.1f} ms ({r['matches_median']:.0f} "
                f"matches, mean {r['matches_mean']:.2f})")
            results.append(r)
    return results


@contextmanager
def _fresh_index(work: Path, backend: str, size: int, pg: engines.Postgres | None) -> Iterator[str]:
    """The URL of an empty index on `backend`, removed afterwards."""
    if backend == "postgresql" and pg is not None:
        url = pg.create_database()
        try:
            yield url
        finally:
            pg.drop_database(url)
    elif backend == "sqlite":
        data = work / f"query-index-{size}"
        data.mkdir(parents=True, exist_ok=True)
        try:
            yield f"sqlite:///{data / 'index.sqlite'}"
        finally:
            shutil.rmtree(data, ignore_errors=True)
    else:
        raise ValueError(f"unknown query backend {backend!r} (sqlite, postgresql)")


def query(work: Path, pki: Pki, sizes: list[int], repeats: int, log: Log,
          src: Path | None = None, backends: tuple[str, ...] = ("sqlite",)) -> list[dict[str, Any]]:
    """Every size on every backend, each on a freshly loaded index."""
    results = []
    with ExitStack() as stack:
        pg = stack.enter_context(engines.postgres()) if "postgresql" in backends else None
        for backend in backends:
            for size in sizes:
                with _fresh_index(work, backend, size, pg) as url:
                    results += _one_index(work, pki, url, backend, size, repeats, log, src)
    return results
