"""One start-up at a time per database: the lock several instances take around the steps
that write shared state (schema creation, the CA's bootstrap records, the orphan sweep).

An orchestrator starting a scaled deployment starts N instances on one PostgreSQL at the
same moment; each start-up step is idempotent, and this lock makes them run one instance
after another, so that the second one finds what the first made (PostgreSQL session-level
advisory lock, https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS).
SQLite needs none: instances on one SQLite file are worker processes of one server, whose
parent alone runs the start-up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from securepacs.errors import StorageError
from securepacs.index.engine import make_engine

#: Key of the PostgreSQL advisory lock held during start-up ("spacsup"); the migration
#: lock (securepacs.index.migrate) is another key, taken inside this one.
_LOCK = 0x73706163737570


@contextlib.contextmanager
def startup_lock(url: str, *, timeout: float = 300.0) -> Iterator[None]:
    """Hold the database's start-up lock for the body (no-op for SQLite).

    Raises
    ------
    StorageError
        The database cannot be reached, or another instance held the lock longer than
        `timeout` seconds.
    """
    if not url.startswith("postgresql"):
        yield
        return
    engine = make_engine(url)
    try:
        try:
            conn = engine.connect()
        except sa_exc.SQLAlchemyError as exc:
            raise StorageError(f"start-up lock: cannot reach the database "
                               f"({type(exc).__name__})") from exc
        with conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            deadline = time.monotonic() + timeout
            delay = 0.01
            while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                   {"k": _LOCK}).scalar_one():
                if time.monotonic() > deadline:
                    raise StorageError(f"start-up lock: another instance has held it for "
                                       f"{timeout:g} s")
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            try:
                yield
            finally:
                with contextlib.suppress(sa_exc.SQLAlchemyError):
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK})
    finally:
        engine.dispose()
