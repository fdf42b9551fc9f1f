"""Open the index database: SQLite (the default) or any SQLAlchemy URL such as PostgreSQL.

SQLite is set up for a server that answers C-STORE Success only once the row is committed
and that may run as several threads and processes on one file:

- ``journal_mode=WAL``: readers never block the writer nor the writer the readers (set
  once per file, retried while another process is doing the same);
- ``synchronous=FULL``: a committed transaction survives a power cut;
- ``foreign_keys=ON``, ``busy_timeout=30000``, ``case_sensitive_like=ON`` (so that ``LIKE``
  is exact and may use an index, see :mod:`securepacs.index.sqlfilter`);
- every transaction starts with ``BEGIN IMMEDIATE`` (the SQLAlchemy pysqlite recipe: the
  driver is put in autocommit mode and SQLAlchemy emits BEGIN itself), so concurrent writers
  queue on the write lock at BEGIN instead of failing with "database is locked" when a read
  transaction tries to become a write one. Connections carrying the execution option
  :data:`READ_ONLY` start with a plain deferred ``BEGIN`` and do not take the write lock.

Every engine hides bound parameters in error messages: they are patient data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

#: Execution option marking a connection whose transactions only read.
READ_ONLY = "securepacs_read_only"

_PRAGMAS = (
    "PRAGMA busy_timeout=30000",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA case_sensitive_like=ON",
)
_BUSY_SECONDS = 30.0


def make_engine(url: str) -> Engine:
    """Create the engine for an index database URL.

    Parameters
    ----------
    url : str
        An SQLAlchemy URL, e.g. ``sqlite:////var/lib/securepacs/index.db`` or
        ``postgresql+psycopg://pacs@db/pacs``.

    Returns
    -------
    sqlalchemy.engine.Engine
        For SQLite, with the pragmas and ``BEGIN IMMEDIATE`` behaviour described in the
        module docstring, the database's folder created if missing. For other databases,
        with ``pool_pre_ping`` so connections dropped by the server are replaced.

    Raises
    ------
    sqlalchemy.exc.ArgumentError
        The URL cannot be parsed or names an unknown dialect.
    ImportError
        The database driver the URL names is not installed.
    OSError
        The folder of an SQLite database cannot be created.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    return _sqlite_engine(parsed)


def _sqlite_engine(url: URL) -> Engine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).resolve().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": _BUSY_SECONDS},
        hide_parameters=True,
    )
    sa.event.listen(engine, "connect", _on_connect)
    sa.event.listen(engine, "begin", _on_begin)
    return engine


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver must not open transactions itself: _on_begin does.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _PRAGMAS:
            cursor.execute(pragma)
        _use_wal(cursor)
    finally:
        cursor.close()


def _use_wal(cursor: Any) -> None:
    """Switch the database file to WAL (a persistent setting) unless it already is.

    Switching needs an exclusive lock, and SQLite reports "database is locked" at once,
    without waiting, when two processes open a new database together: retry until the
    busy timeout.
    """
    def switch() -> None:
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")

    _while_locked(switch, delay=0.005, longest=0.2)


def _while_locked(attempt: Callable[[], object], *, delay: float, longest: float) -> None:
    """Run `attempt` until it does not fail with "database is locked", sleeping `delay`
    seconds between tries (growing 1.5x up to `longest`), for at most the busy timeout."""
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            attempt()
            return
        except Exception as exc:  # the driver's OperationalError
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 1.5, longest)


def _on_begin(connection: sa.Connection) -> None:
    if connection.get_execution_options().get(READ_ONLY, False):
        connection.exec_driver_sql("BEGIN DEFERRED")
        return
    _begin_immediate(connection.connection.dbapi_connection)


#: The busy timeout of a raw connection whose owner waits for the write lock itself
#: (:func:`begin_write_polled`), and the one to restore before it goes back to the pool.
BUSY_OFF = "PRAGMA busy_timeout=0"
BUSY_ON = _PRAGMAS[0]


def begin_write_polled(cursor: Any) -> None:
    """``BEGIN IMMEDIATE`` on a raw SQLite connection whose owner keeps its busy timeout
    at 0 (:data:`BUSY_OFF`) while it holds it, waiting for the write lock as
    :func:`_begin_immediate` does: one statement when the lock is free. Inside the
    transaction nothing waits (the write lock is held, and WAL readers never block it)."""
    try:
        cursor.execute("BEGIN IMMEDIATE")
    except Exception as exc:  # the driver's OperationalError
        if "locked" not in str(exc):
            raise
        _while_locked(lambda: cursor.execute("BEGIN IMMEDIATE"), delay=0.0001, longest=0.002)


def _begin_immediate(dbapi_connection: Any) -> None:
    """``BEGIN IMMEDIATE``, waiting for the write lock in steps of 0.1 to 2 ms.

    SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms between attempts: with several
    writers (server threads, the audit writer, worker processes) each holding the lock for
    about a millisecond, most of the time would be spent asleep. Here the busy timeout is
    off just for the BEGIN, and the wait is a short poll up to the same 30 s.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=0")
        try:
            _while_locked(lambda: cursor.execute("BEGIN IMMEDIATE"), delay=0.0001,
                          longest=0.002)
        finally:
            cursor.execute(_PRAGMAS[0])
    finally:
        cursor.close()
