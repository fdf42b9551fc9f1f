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
           "trust_import_token"}


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
