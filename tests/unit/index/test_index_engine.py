"""make_engine: SQLite pragmas, BEGIN IMMEDIATE for writers, deferred BEGIN for readers."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from securepacs.index.engine import READ_ONLY, make_engine
from securepacs.index.schema import metadata, study


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "deep" / "er" / "index.db"


@pytest.fixture
def engine(db_path: Path) -> sa.Engine:
    eng = make_engine(f"sqlite:///{db_path}")
    with eng.begin() as conn:
        metadata.create_all(conn)
    return eng


def test_creates_the_folder_and_sets_pragmas(engine: sa.Engine, db_path: Path) -> None:
    assert db_path.exists()
    with engine.connect() as conn:
        pragma = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
        assert pragma == {
            "journal_mode": "wal",
            "synchronous": 2,  # FULL
            "foreign_keys": 1,
            "busy_timeout": 30000,
        }
        # case_sensitive_like cannot be read back: observe it
        assert conn.exec_driver_sql("SELECT 'abc' LIKE 'ABC'").scalar() == 0


def test_foreign_keys_are_enforced(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.insert(study).values(study_uid="1.2", patient_pk=42, attrs={}))


def _write_lock_free(db_path: Path) -> bool:
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        other.close()


def test_writers_take_the_write_lock_at_begin(engine: sa.Engine, db_path: Path) -> None:
    with engine.begin() as conn:
        conn.execute(sa.select(study.c.id)).all()  # only a read so far
        assert not _write_lock_free(db_path)
    assert _write_lock_free(db_path)


def test_readers_do_not_take_the_write_lock(engine: sa.Engine, db_path: Path) -> None:
    with engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: True})
        with conn.begin():
            conn.execute(sa.select(study.c.id)).all()
            assert _write_lock_free(db_path)


def test_rollback_discards_writes(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        with conn.begin() as tx:
            conn.exec_driver_sql("INSERT INTO schema_version (version) VALUES (7)")
            tx.rollback()
        assert conn.exec_driver_sql("SELECT count(*) FROM schema_version").scalar() == 0


def test_memory_database_needs_no_folder() -> None:
    eng = make_engine("sqlite://")
    with eng.begin() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_several_engines_opening_a_new_database_at_once(tmp_path: Path) -> None:
    """Switching a new file to WAL fails at once with "database is locked" when another
    connection does it at the same moment; make_engine retries instead of failing."""
    errors: list[BaseException] = []
    for attempt in range(20):
        url = f"sqlite:///{tmp_path / str(attempt) / 'index.db'}"
        engines = [make_engine(url) for _ in range(6)]
        barrier = threading.Barrier(len(engines))

        def open_and_write(eng: sa.Engine, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                with eng.begin() as conn:
                    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
                    conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_and_write, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with engines[0].connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == len(engines)
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        for eng in engines:
            eng.dispose()
    assert errors == []
