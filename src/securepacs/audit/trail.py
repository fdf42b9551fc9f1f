"""The audit trail: fan audit records out to several sinks without ever blocking the caller.

One responsibility: accept records from the DICOM, CA and media code in O(1) and deliver them
to every configured sink (PS3.15 A.5 messages; IHE ATNA "Record Audit Event"). Each sink has
its own bounded queue and worker thread, so that a slow or absent sink (a syslog collector,
a full disk) delays only itself; a sink with ``emit_batch`` (the database) gets what is
queued in one call, one transaction, so it keeps up with bursts of C-STORE events.
:meth:`AuditTrail.record` never blocks: when a sink's queue is full the record is dropped
*for that sink* and counted. :meth:`AuditTrail.record_durable` is the one exception: it
writes the required store in the caller's thread, for events that must survive a kill.

Failure policy (issue 7): one sink is the *required* local store (the database). While its last
write failed, or its queue is full, :attr:`AuditTrail.healthy` is False and, when the trail is
``required`` (the default, setting ``audit_required``), :meth:`AuditTrail.check_writable`
raises :class:`~securepacs.errors.AuditError` so that the server refuses new work rather than
running unaudited. The worker retries the failed record with backoff and becomes healthy
again at the first successful write. Records dropped because the queue overflowed are lost
for that sink (counted in :meth:`AuditTrail.stats`, logged) — the price of never blocking.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from securepacs.audit.record import AuditRecord, AuditSource
from securepacs.audit.sinks import Sink
from securepacs.errors import AuditError

__all__ = ["AuditTrail"]

log = logging.getLogger("securepacs.audit")

_STOP = object()
_BATCH = 256  # records a batching sink (the database) writes in one transaction
#: How long a batching sink waits for more records after the first: a burst of C-STOREs
#: then costs a few transactions a second, not one per image (records are in memory
#: until written either way).
_LINGER = 0.05


class _Worker:
    """One sink, its bounded queue and the thread that drains it."""

    def __init__(self, sink: Sink, *, size: int, retry: bool, max_backoff: float) -> None:
        self.sink = sink
        self.queue: queue.Queue[object] = queue.Queue(maxsize=size)
        self.retry = retry
        self.max_backoff = max_backoff
        self.dropped = 0
        self.failures = 0
        self.written = 0
        self.failing: str | None = None
        self.overflowed = False  # a record was dropped since the last successful write
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"audit-{sink.name}", daemon=True)
        self.thread.start()

    def offer(self, record: AuditRecord) -> bool:
        try:
            self.queue.put_nowait(record)
            return True
        except queue.Full:
            self.dropped += 1
            self.overflowed = True
            return False

    def _run(self) -> None:
        batching = callable(getattr(self.sink, "emit_batch", None))
        while True:
            items = [self.queue.get()]
            if batching and items[-1] is not _STOP:
                # sleep rather than wait on the queue: a waiting consumer would be woken
                # (and take the GIL from the DICOM threads) by every record put
                self._stopping.wait(_LINGER)
            while batching and len(items) < _BATCH and items[-1] is not _STOP:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                records = [i for i in items if isinstance(i, AuditRecord)]
                if records:
                    self._deliver(records)
                if items[-1] is _STOP:
                    return
            finally:
                for _ in items:
                    self.queue.task_done()

    def _deliver(self, records: list[AuditRecord]) -> None:
        delay = 0.05
        while True:
            try:
                if len(records) == 1:
                    self.sink.emit(records[0])
                else:
                    self.sink.emit_batch(records)  # type: ignore[attr-defined]
                self.written += len(records)
                if self.queue.empty():
                    self.overflowed = False
                if self.failing:
                    log.warning("audit sink %s writes again", self.sink.name)
                self.failing = None
                return
            except Exception as exc:  # a sink may fail in any way; the trail must go on
                self.failures += 1
                reason = f"{type(exc).__name__}: {exc}"
                if self.failing != reason:
                    log.error("audit sink %s cannot write: %s", self.sink.name, reason)
                self.failing = reason
                if not self.retry or self._stopping.is_set():
                    return
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, self.max_backoff)

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.queue.put(_STOP, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self.thread.join(max(0.0, deadline - time.monotonic()))


class AuditTrail:
    """Deliver audit records to several sinks from background threads.

    Parameters
    ----------
    sinks : sequence of Sink
        Every destination; the `required` one among them or not.
    required : Sink, optional
        The durable local store (the database sink) whose health decides
        :meth:`check_writable`. It is added to `sinks` if missing.
    audit_source : AuditSource
        Set on records that were built without one (AuditSourceIdentification).
    audit_required : bool
        When True (default), :meth:`check_writable` raises while the required store fails.
    queue_size : int
        Records waiting per sink before new ones are dropped for that sink.
    max_backoff : float
        Longest wait, in seconds, between retries of a failed write.
    """

    def __init__(self, sinks: Sequence[Sink], *, audit_source: AuditSource,
                 required: Sink | None = None, audit_required: bool = True,
                 queue_size: int = 10000, max_backoff: float = 5.0) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if not isinstance(audit_source, AuditSource):
            raise TypeError("audit_source must be an AuditSource")
        all_sinks = list(sinks)
        if required is not None and required not in all_sinks:
            all_sinks.insert(0, required)
        self.audit_source = audit_source
        self.audit_required = audit_required
        self._workers = [_Worker(s, size=queue_size, retry=True, max_backoff=max_backoff)
                         for s in all_sinks]
        self._required = next((w for w in self._workers if w.sink is required), None)
        self._closed = False

    def record(self, record: AuditRecord) -> None:
        """Queue `record` for every sink; returns at once and never blocks.

        A record without an audit source gets this trail's. When a sink's queue is full the
        record is dropped for that sink (see :meth:`stats`).
        """
        if not isinstance(record, AuditRecord):
            raise TypeError("record must be an AuditRecord")
        if self._closed:
            log.error("audit record %s after the trail was closed: dropped", record.record_id)
            return
        if record.audit_source is None:
            record = replace(record, audit_source=self.audit_source)
        self._offer(record, self._workers)

    def _offer(self, record: AuditRecord, workers: list[_Worker]) -> None:
        """Queue `record` for `workers`; a full queue drops it there, logged."""
        for worker in workers:
            if not worker.offer(record):
                level = logging.ERROR if worker is self._required else logging.WARNING
                log.log(level, "audit sink %s is %d records behind: record %s dropped",
                        worker.sink.name, worker.queue.maxsize, record.record_id)

    def record_durable(self, record: AuditRecord) -> bool:
        """Write `record` to the required store before returning; queue it for the others.

        For events that cannot be undone and must never go unaudited (a deletion): the
        record is appended in the caller's thread, so that a process killed right after
        this call still has it. Blocks for one database transaction.

        Returns
        -------
        bool
            True when the required store holds the record. False when its write failed (or
            there is no required store): the record is then queued like any other, the
            worker retries it, and the trail is unhealthy until a write succeeds.
        """
        if not isinstance(record, AuditRecord):
            raise TypeError("record must be an AuditRecord")
        worker = self._required
        if worker is None or self._closed:
            self.record(record)
            return False
        if record.audit_source is None:
            record = replace(record, audit_source=self.audit_source)
        try:
            worker.sink.emit(record)
        except Exception as exc:  # any sink failure: fall back to the retrying queue
            worker.failing = f"{type(exc).__name__}: {exc}"
            log.error("audit sink %s cannot write record %s now (%s): queued for retry",
                      worker.sink.name, record.record_id, worker.failing)
            self.record(record)
            return False
        worker.written += 1
        self._offer(record, [other for other in self._workers if other is not worker])
        return True

    @property
    def healthy(self) -> bool:
        """False while the required store's last write failed, its queue is full, or it
        dropped a record since its queue last drained."""
        worker = self._required
        if worker is None:
            return True
        return worker.failing is None and not worker.queue.full() and not worker.overflowed

    def check_writable(self) -> None:
        """Raise when new work must be refused: required store failing and audit required.

        Cheap (no I/O): call it before accepting an association or a command.

        Raises
        ------
        AuditError
            The local audit store cannot write and ``audit_required`` is set.
        """
        if self.audit_required and not self.healthy:
            worker = self._required
            assert worker is not None
            why = worker.failing or f"{worker.queue.maxsize} records waiting"
            raise AuditError(f"audit store cannot write ({why})")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record has been handled; False on timeout."""
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            while worker.queue.unfinished_tasks:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.005)
        return True

    def stats(self) -> dict[str, dict[str, int | str | None]]:
        """Per sink: ``queued``, ``written``, ``dropped``, ``failures``, ``failing`` (reason)."""
        return {w.sink.name: {"queued": w.queue.qsize(), "written": w.written,
                              "dropped": w.dropped, "failures": w.failures,
                              "failing": w.failing} for w in self._workers}

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (within `timeout`), stop the threads, close the sinks."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        for worker in self._workers:
            worker.stop(max(0.1, timeout / 4))
        for worker in self._workers:
            try:
                worker.sink.close()
            except Exception as exc:  # closing must not hide the other sinks
                log.warning("closing audit sink %s: %s", worker.sink.name, exc)
