"""Alembic migrations: revision 0001 is exactly the schema create_schema makes, on SQLite
and on a real PostgreSQL; an existing schema is stamped, not re-created."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import securepacs.index.audit  # noqa: F401 - the audit and trust tables belong to the same metadata
import securepacs.index.trust  # noqa: F401
from securepacs.index.audit import SqlAuditLog
from securepacs.index.migrate import head, status, upgrade
from securepacs.index.repository import SqlIndex
from securepacs.index.schema import metadata
from securepacs.index.trust import SqlTrustStore
from securepacs.model.trust import Group


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


#: The tables of revisions 0001 (index, trust), 0002 (audit) and 0003 (import tokens). A
#: table that a module registers on the same metadata later needs its own revision before
#: it is compared here.
REVISED = {"patient", "study", "series", "instance", "schema_version", "trust_group",
           "trust_certificate", "trust_token", "trust_state", "audit_event", "audit_head",
           "trust_import_token", "trust_share", "blob_pending_delete",
           "blob_trash"}


def differences(url: str) -> list[object]:
    def ours(_obj: object, name: str | None, kind: str, _reflected: bool, _other: object) -> bool:
        return kind != "table" or name in REVISED

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_object": ours})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_migrate_an_empty_database_matches_the_tables(url: str) -> None:
    from securepacs.errors import StorageError

    try:
        assert not status(url).ok
    except StorageError as exc:  # SQLite: no file yet, and status never makes one
        assert "no index database" in str(exc)
    done = upgrade(url)
    assert (done.before, done.after, done.stamped) == (None, head(), False)
    assert differences(url) == []
    assert status(url).ok
    # serve's create_schema finds everything in place, with the rows it expects
    index = SqlIndex(url)
    index.create_schema()
    assert index.count_instances() == 0
    index.close()
    trust = SqlTrustStore(url)
    trust.create_schema()
    trust.put_group(Group("radiology", frozenset()))
    assert trust.version() == 2
    trust.close()
    audit = SqlAuditLog(url)
    audit.create_schema()
    audit.close()
    assert audit_head_rows(url) == [(1, 0, "0" * 64)]
    again = upgrade(url)
    assert (again.before, again.after, again.stamped) == (head(), head(), False)


def audit_head_rows(url: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT id, last_seq, last_hash FROM audit_head"))]
    finally:
        engine.dispose()


@pytest.mark.parametrize("with_audit", [True, False], ids=["audit-tables", "no-audit-tables"])
def test_migrate_stamps_a_schema_made_by_serve(url: str, with_audit: bool) -> None:
    index = SqlIndex(url)
    index.create_schema()
    index.close()
    trust = SqlTrustStore(url)
    trust.create_schema()
    trust.close()
    if with_audit:  # the audit store made its tables itself: revision 0002 leaves them
        audit = SqlAuditLog(url)
        audit.create_schema()
        audit.close()
    state = status(url)
    assert state.ok and "not yet stamped" in state.message
    assert "nothing to do now" in state.message and "before upgrading" in state.message
    done = upgrade(url)
    assert done.stamped and done.before is None and done.after == head()
    assert differences(url) == []
    assert status(url).message == f"revision {head()} (newest)"
    assert audit_head_rows(url) == [(1, 0, "0" * 64)]


def test_concurrent_migrations_queue(url: str) -> None:
    """Several hosts running `db migrate` at once: one creates, the others find it done."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _n: upgrade(url), range(3)))
    assert sorted(r.before is None for r in results) == [False, False, True]
    assert {r.after for r in results} == {head()}
    assert differences(url) == []


def test_status_of_a_missing_sqlite_file_creates_nothing(tmp_path) -> None:  # noqa: ANN001
    """Issue 18: ``securepacs check`` on a client machine made an empty index.sqlite."""
    from securepacs.errors import StorageError

    target = tmp_path / "data" / "index.sqlite"
    target.parent.mkdir()
    with pytest.raises(StorageError, match="no index database at .*index.sqlite .nothing created"):
        status(f"sqlite:///{target}")
    assert list(target.parent.iterdir()) == []


def test_0004_gives_old_rows_the_default_organisation(url: str) -> None:
    """Issue 15: rows indexed before organisations were tenants belong to the default
    organisation; the patients of an empty Patient ID (17.4) no longer attract new ones."""
    from alembic import command

    from securepacs.index import migrate as m
    from securepacs.model.levels import Level, Root
    from securepacs.model.query import Key, Query
    from securepacs.model.record import InstanceRecord
    from securepacs.model.tenancy import Visibility

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = m._config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.execute(sa.text("INSERT INTO patient (id, patient_id, issuer, attrs) "
                             "VALUES (1, '', '', '{\"PatientName\": \"Old^Merged\"}')"))
        conn.execute(sa.text("INSERT INTO study (id, study_uid, patient_pk, modalities, attrs) "
                             "VALUES (1, '1.1', 1, 'CT', '{\"StudyInstanceUID\": \"1.1\"}')"))
    engine.dispose()
    done = upgrade(url, default_organisation="clinic-a")
    assert done.after == head() and done.before == "0003"
    index = SqlIndex(url)
    index.create_schema()  # schema version 2 now
    index.add(InstanceRecord(
        values={Level.PATIENT: {"PatientID": "", "PatientName": "New^One"},
                Level.STUDY: {"StudyInstanceUID": "1.2"},
                Level.SERIES: {"SeriesInstanceUID": "1.2.1", "Modality": "MR"},
                Level.IMAGE: {"SOPInstanceUID": "1.2.1.1", "SOPClassUID": "1.2.3"}},
        transfer_syntax_uid="1.2.840.10008.1.2.1", blob_key="b/1", size=1,
        organization="clinic-a"))
    query = Query(Root.STUDY, Level.STUDY, (Key("StudyInstanceUID", "UI", ""),
                                            Key("PatientName", "PN", "")))
    rows = index.find(query, visibility=Visibility("clinic-a"))
    assert sorted((r["StudyInstanceUID"], r["PatientName"]) for r in rows) == [
        ("1.1", "Old^Merged"), ("1.2", "New^One")]
    assert index.find(query, visibility=Visibility("other")) == []
    index.close()
    assert differences(url) == []
