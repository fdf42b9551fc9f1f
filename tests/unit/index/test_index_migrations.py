"""Alembic migrations: revision 0001 is exactly the schema create_schema makes, on SQLite
and on a real PostgreSQL; an existing schema is stamped, not re-created."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import securepacs.index.trust  # noqa: F401 - the trust tables belong to the same metadata
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


def differences(url: str) -> list[object]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def test_migrate_an_empty_database_matches_the_tables(url: str) -> None:
    assert not status(url).ok
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
    again = upgrade(url)
    assert (again.before, again.after, again.stamped) == (head(), head(), False)


def test_migrate_stamps_a_schema_made_by_serve(url: str) -> None:
    index = SqlIndex(url)
    index.create_schema()
    index.close()
    trust = SqlTrustStore(url)
    trust.create_schema()
    trust.close()
    state = status(url)
    assert state.ok and "not yet stamped" in state.message
    done = upgrade(url)
    assert done.stamped and done.before is None and done.after == head()
    assert differences(url) == []
    assert status(url).message == f"revision {head()} (newest)"
