"""Audit sinks: where audit records go (the index database table, a JSON-lines file).

One responsibility: write one record to one place, synchronously; the
:class:`~securepacs.audit.trail.AuditTrail` calls :meth:`Sink.emit` from its own threads, so
a slow sink never blocks DICOM traffic. The syslog-over-TLS sink (RFC 5424 / RFC 5425, PS3.15
A.6) is in :mod:`securepacs.audit.syslog`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from securepacs.audit.record import AuditRecord
from securepacs.audit.serialize import canonical, from_json, to_json

__all__ = ["AuditStore", "DatabaseSink", "JsonLinesSink", "Sink", "columns_of"]


class Sink(Protocol):
    """Something that stores or forwards audit records.

    ``emit`` may block (disk, network) and raise on failure; it is only called from an
    :class:`~securepacs.audit.trail.AuditTrail` worker thread, one record at a time.
    """

    name: str

    def emit(self, record: AuditRecord) -> None: ...

    def close(self) -> None: ...


class AuditStore(Protocol):
    """The append-only audit table (:class:`securepacs.index.audit.SqlAuditLog`)."""

    def append(self, *, record_id: str, at: datetime, kind: str, outcome: int,
               user_ids: tuple[str, ...], patient_ids: tuple[str, ...], body: bytes) -> int: ...

    def append_many(self, entries: Sequence[Mapping[str, Any]]) -> list[int]: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


def columns_of(body: bytes) -> Mapping[str, Any]:
    """The filter columns a stored body implies (for ``SqlAuditLog.verify(columns=...)``).

    Raises
    ------
    ValueError
        `body` is not a canonical audit record.
    """
    record = from_json(body)
    return {"record_id": record.record_id, "kind": record.kind, "outcome": int(record.outcome),
            "event_time": record.at, "user_ids": record.user_ids,
            "patient_ids": record.patient_ids}


class DatabaseSink:
    """Append each record, canonical JSON, to the hash-chained audit table.

    Parameters
    ----------
    store : AuditStore
        The audit table's repository.
    """

    name = "database"

    def __init__(self, store: AuditStore) -> None:
        self.store = store

    def emit(self, record: AuditRecord) -> None:
        self.emit_batch([record])

    def emit_batch(self, records: Sequence[AuditRecord]) -> None:
        """Append `records` in one transaction (the trail batches what is queued)."""
        self.store.append_many([{
            "record_id": r.record_id, "at": r.at, "kind": r.kind, "outcome": int(r.outcome),
            "user_ids": r.user_ids, "patient_ids": r.patient_ids, "body": canonical(r),
        } for r in records])

    def close(self) -> None:
        self.store.close()


class JsonLinesSink:
    """Append each record as one line of JSON to a file (mode 0600, ``O_APPEND``).

    Parameters
    ----------
    path : Path
        The file; its folder is created if missing.
    fsync : bool
        fsync after each line (default), so that a line written survives a power cut.
    """

    name = "jsonl"

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def emit(self, record: AuditRecord) -> None:
        line = (to_json(record) + "\n").encode("utf-8")
        with self._lock:
            fd = self._open()
            try:
                os.write(fd, line)  # one write with O_APPEND: lines never interleave
                if self._fsync:
                    os.fsync(fd)
            except OSError:
                self._close_fd()
                raise

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close_fd()
