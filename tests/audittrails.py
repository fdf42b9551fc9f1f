"""One test stand-in for the audit trail, with the whole interface services use
(services.audit_events.TrailPort: record, record_durable, check_writable), so that a unit
test of an event written durably (a deletion) cannot silently miss it. tests/unit/services/
test_trail_fakes.py holds it (and every class of the tests that fakes a trail) to that
Protocol.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from securepacs.audit.record import AuditRecord, AuditSource

if TYPE_CHECKING:
    from securepacs.services.audit_events import TrailPort


class RecordingTrail:
    """Keeps every record it is given, in order; `durable` lists the ids of those written
    with :meth:`record_durable`. With `audit_source`, records get it (as the real trail
    gives its own to records without one)."""

    def __init__(self, audit_source: str | None = None) -> None:
        self.records: list[AuditRecord] = []
        self.durable: list[str] = []
        self.lock = threading.Lock()
        self._source = AuditSource(audit_source) if audit_source else None

    def record(self, record: AuditRecord) -> None:
        if self._source is not None:
            record = replace(record, audit_source=self._source)
        with self.lock:
            self.records.append(record)

    def record_durable(self, record: AuditRecord) -> bool:
        self.record(record)
        with self.lock:
            self.durable.append(record.record_id)
        return True

    def check_writable(self) -> None:
        return None


if TYPE_CHECKING:  # mypy: the stand-in has the Protocol's every member
    _checked: TrailPort = RecordingTrail()
