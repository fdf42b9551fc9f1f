"""An online copy of the SQLite index with SQLite's own backup API, and what it holds.

One responsibility: :func:`snapshot_sqlite` copies a live SQLite index (WAL mode, writers
busy) into one standalone file with ``sqlite3_backup`` (https://sqlite.org/backup.html) in a
single step, so the copy is one committed state of the database: in WAL mode the step is a
read transaction and does not block the server's writers (a stepwise backup would restart
each time another connection writes, and might never end under load). The copy is switched
to ``journal_mode=DELETE`` (one file, no ``-wal``) and checked with ``PRAGMA
integrity_check``. :func:`blob_keys` lists the blobs the copy refers to: those, and only
those, a backup must hold.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from securepacs.errors import StorageError

__all__ = ["blob_keys", "check_sqlite", "instance_count", "snapshot_sqlite"]

_BUSY_MS = 30000


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=_BUSY_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
    return conn


def snapshot_sqlite(source: Path, target: Path) -> None:
    """Copy the live database `source` into the new file `target` (one consistent state).

    Raises
    ------
    StorageError
        `source` is not an SQLite database or cannot be read, `target` cannot be written,
        or the copy fails its integrity check; `target` is removed.
    """
    if not source.is_file():
        raise StorageError(f"no SQLite index at {source}")
    try:
        with contextlib.closing(_connect(source)) as src, \
                contextlib.closing(_connect(target)) as dst:
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
        check_sqlite(target)
    except (sqlite3.Error, OSError) as exc:
        target.unlink(missing_ok=True)
        raise StorageError(f"cannot copy the index {source}: {exc}") from exc
    except StorageError:
        target.unlink(missing_ok=True)
        raise


def check_sqlite(path: Path) -> None:
    """Raise :class:`StorageError` unless `path` passes ``PRAGMA integrity_check``."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            result = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"{path} is not a readable SQLite database: {exc}") from exc
    if result != [("ok",)]:
        raise StorageError(f"{path} fails its integrity check: {result[0][0]}")


def blob_keys(path: Path) -> Iterator[str]:
    """The blob key of every instance indexed in the (copied, not live) database `path`."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            for (key,) in conn.execute("SELECT blob_key FROM instance ORDER BY blob_key"):
                yield str(key)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot list the blobs of {path}: {exc}") from exc


def trashed_blob_keys(path: Path) -> Iterator[str]:
    """The blob key of every deleted instance kept in the trash (``blob_trash``, the
    ``trash_days`` setting) of the (copied, not live) database `path`; none in an index
    without that table."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                            "AND name = 'blob_trash'").fetchone() is None:
                return
            for (key,) in conn.execute("SELECT blob_key FROM blob_trash ORDER BY blob_key"):
                yield str(key)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot list the trashed blobs of {path}: {exc}") from exc


def instance_count(path: Path) -> int:
    """How many instances the (copied) database `path` indexes."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM instance").fetchone()[0])
    except sqlite3.Error as exc:
        raise StorageError(f"cannot count the instances of {path}: {exc}") from exc
