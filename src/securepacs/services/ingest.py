"""Ingest: store one received instance so that nothing is ever half-written.

Write order (the archive's durability contract):

1. validate the data set (readable, UIDs agree with the DIMSE command, hierarchy UIDs
   present), before anything touches storage;
2. blob: temp file, fsync, rename (:mod:`securepacs.blobs.filesystem`);
3. index row in one transaction (committed with ``synchronous=FULL`` on SQLite);
4. only then the caller answers Success.

Steps 2 and 3 overlap in time (the blob is written and fsynced by a writer thread while
the index transaction runs) but not in effect: the transaction commits only once the
blob is durable.

A failure after step 2 removes the blob again; a crash between 2 and 3 leaves an
unreferenced blob that :func:`sweep_orphans` removes at the next start.
Duplicates (PS3.4 B.2.3 leaves the policy to the SCP): keep the first copy and report
:attr:`Outcome.DUPLICATE`, or replace it when the settings say so.

Organisations (docs/tenants.md): an instance belongs to :attr:`Received.organization`.
When another organisation already holds its SOP Instance UID, the data sets are compared:
the same bytes are stored for this organisation too (it gains its own copy); other bytes
are refused with :class:`UidConflictError`, whose message says nothing of the other holder.
"""

from __future__ import annotations

import enum
import logging
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from securepacs.errors import InvalidInstanceError, SopClassMismatchError, UidConflictError
from securepacs.model.levels import Level
from securepacs.model.record import UNIQUE_KEY, InstanceRecord
from securepacs.services import part10
from securepacs.services.ports import BlobPort, IndexPort

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    REPLACED = "replaced"


@dataclass(frozen=True)
class StoreResult:
    """What :meth:`IngestService.store_instance` did, and where the instance belongs."""

    outcome: Outcome
    patient_id: str
    study_uid: str


@dataclass(frozen=True)
class Received:
    """One C-STORE as the network delivered it: the data set bytes, or (large objects
    never held in memory) `dataset_file`, a Part 10 file the network layer wrote whose
    data set follows its own File Meta Information; `dataset` is then unused. A file that
    starts with exactly the header ingest writes (:func:`part10.header_for`) becomes the
    blob itself (moved in when it lies in :attr:`IngestService.spool_folder`) and is gone
    once stored."""

    dataset: bytes | bytearray
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str = ""
    dataset_file: Path | None = None
    organization: str = ""


def _check_file(path: Path, transfer_syntax_uid: str
                ) -> tuple[int, dict[Level, dict[str, str]] | None]:
    """Check the data set of a received Part 10 file in place (mmap, element headers
    only); where the data set starts, and its indexed values (see
    :func:`part10.check_and_index`)."""
    try:
        with open(path, "rb") as fh:
            offset = part10.dataset_offset(fh.read(144))
            if os.fstat(fh.fileno()).st_size <= offset:
                return offset, part10.check_and_index(b"", transfer_syntax_uid)
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                whole = memoryview(mm)
                view = whole[offset:]
                try:
                    values = part10.check_and_index(view, transfer_syntax_uid)
                finally:
                    view.release()
                    whole.release()
            finally:
                mm.close()
    except OSError as exc:
        raise InvalidInstanceError(f"received data set unreadable: {exc.strerror}") from None
    return offset, values


def _starts_with(path: Path, prefix: bytes) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(prefix)) == prefix
    except OSError:
        return False


def _file_chunks(header: bytes, path: Path, offset: int) -> Iterator[bytes]:
    """Our Part 10 header, then the received data set in 1 MiB pieces."""
    yield header
    with open(path, "rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(_CHUNK):
            yield chunk


class _Write:
    """A blob write handed to a writer thread; :meth:`result` waits for it.

    What :class:`concurrent.futures.Future` does for this one use, with one lock (held
    until the write is over) instead of a condition variable and its waiter list: a
    waiter sleeps in the lock's C code and wakes once, when the writer releases it.
    """

    __slots__ = ("_work", "_over", "_value", "_error")

    def __init__(self, work: Callable[[], int]) -> None:
        self._work: Callable[[], int] | None = work
        self._over = threading.Lock()
        self._over.acquire()
        self._value = 0
        self._error: BaseException | None = None

    def run(self) -> None:
        """Do the write (in a writer thread) and let every waiter go."""
        work, self._work = self._work, None
        try:
            assert work is not None
            self._value = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter
            self._error = exc
        finally:
            self._over.release()

    def result(self) -> int:
        """The write's size once it is over (at once afterwards); raise its error."""
        with self._over:
            pass
        if self._error is not None:
            raise self._error
        return self._value


class _Writers:
    """Threads that write blobs (at most `limit`, started when no idle one is left).

    The hand-off of every received image, so lean: a C queue, a lock, one counter.
    `_idle` is the number of threads waiting for work minus the writes queued (negative:
    writes wait for a busy thread to come back, once `limit` threads run); a thread is
    started only when it is not positive, so a write never waits while a thread idles.
    Daemon threads: each write has a caller waiting for it, so none is abandoned while
    the process goes on.
    """

    def __init__(self, limit: int = 16) -> None:
        self._queue: queue.SimpleQueue[_Write] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._limit = limit
        self._threads = 0
        self._idle = 0

    def submit(self, work: Callable[[], int]) -> _Write:
        write = _Write(work)
        with self._lock:
            start = self._idle <= 0 and self._threads < self._limit
            if start:
                self._threads += 1
                name = f"blob-writer_{self._threads - 1}"
            else:
                self._idle -= 1
        self._queue.put(write)
        if start:
            threading.Thread(target=self._run, name=name, daemon=True).start()
        return write

    def _run(self) -> None:
        get, lock = self._queue.get, self._lock
        while True:
            get().run()
            with lock:
                self._idle += 1


class IngestService:
    """Stores received instances in the blob store and the index (committed in that order)."""

    def __init__(self, index: IndexPort, blobs: BlobPort, *, replace_duplicates: bool = False,
                 default_organisation: str = "default"):
        self._index = index
        self._blobs = blobs
        self._replace = replace_duplicates
        self._default_org = default_organisation
        self._writers = _Writers()

    @property
    def spool_folder(self) -> Path | None:
        """Where the network layer best writes a large received object (see
        :attr:`Received.dataset_file`): the blob store can then move it in."""
        return self._blobs.spool_folder

    def store(self, item: Received) -> Outcome:
        """Store `item` durably (see :meth:`store_instance`); only the outcome."""
        return self.store_instance(item).outcome

    def store_instance(self, item: Received) -> StoreResult:
        """Store `item` durably; the outcome with the patient and study it was filed under.

        A duplicate (kept-first policy) is detected by the index transaction itself, so
        an ordinary new instance costs one index transaction, not two; the blob written
        for a duplicate is removed again.

        Raises
        ------
        InvalidInstanceError
            Malformed data set or UIDs that disagree (nothing written).
        StorageError
            The blob store or the index failed (nothing left behind).
        """
        header = part10.header_for(item.sop_class_uid, item.sop_instance_uid,
                                   item.transfer_syntax_uid, item.calling_ae)
        if item.dataset_file is None:
            values = part10.check_and_index(memoryview(item.dataset), item.transfer_syntax_uid)
            if values is None:  # values that need pydicom to read them
                values = part10.level_values(part10.read_header(header + item.dataset))
        else:
            offset, values = _check_file(item.dataset_file, item.transfer_syntax_uid)
            if values is None:
                values = part10.level_values(part10.read_header(item.dataset_file))
        self._validate(values, item)
        key = self._blobs.new_key()
        path = item.dataset_file
        write: Callable[[], int]
        if path is None:
            size = len(header) + len(item.dataset)
            write = partial(self._blobs.put, key, [header, item.dataset])
        elif offset == len(header) and _starts_with(path, header):
            size = path.stat().st_size
            write = partial(self._blobs.put_file, key, path)  # already the blob: moved in
        else:
            size = len(header) + path.stat().st_size - offset
            write = partial(self._blobs.put, key, _file_chunks(header, path, offset))
        record = InstanceRecord(values=values, transfer_syntax_uid=item.transfer_syntax_uid,
                                blob_key=key, size=size, source_ae=item.calling_ae,
                                organization=item.organization or self._default_org)
        # The blob is written (and fsynced) by another thread while the index transaction
        # runs; the transaction commits only once the blob is durable (`ready`).
        written = self._writers.submit(write)
        try:
            result = self._index.add(record, replace=self._replace, ready=written.result)
        except BaseException:
            self._discard(written, key)
            raise
        filed = (values[Level.PATIENT].get("PatientID", ""), values[Level.STUDY].get(
            "StudyInstanceUID", ""))
        if result.outcome == "foreign":
            result = self._foreign(record, str(result.previous_blob_key))
        if result.outcome == "duplicate":
            self._blobs.delete(key)
            return StoreResult(Outcome.DUPLICATE, *filed)
        if result.outcome == "replaced":
            if result.previous_blob_key:
                self._blobs.delete(result.previous_blob_key)
            return StoreResult(Outcome.REPLACED, *filed)
        return StoreResult(Outcome.STORED, *filed)

    def _foreign(self, record: InstanceRecord, theirs: str) -> Any:
        """Another organisation holds the SOP Instance UID (blob `theirs`): add this
        organisation's copy when the data sets are the same bytes, else refuse."""
        try:
            same = _dataset_bytes(self._blobs.read(theirs)) == _dataset_bytes(
                self._blobs.read(record.blob_key))
            if same:
                return self._index.add(record, replace=self._replace, foreign=theirs)
        except BaseException:
            self._blobs.delete(record.blob_key)
            raise
        self._blobs.delete(record.blob_key)
        raise UidConflictError("this SOP Instance UID cannot be stored for your organisation "
                               "(ask the archive's administrator)")

    def _discard(self, written: _Write, key: str) -> None:
        """Remove the blob of an add that failed, once its write is over (a write that
        failed left nothing); a failing removal is logged, the add's own error stands."""
        try:
            written.result()
        except Exception:  # noqa: BLE001 - the write's failure is the add's failure
            return
        try:
            self._blobs.delete(key)
        except Exception as exc:  # noqa: BLE001 - the start-up sweep removes it later
            log.error("blob %s of a failed store not removed: %s", key, exc)

    @staticmethod
    def _validate(values: dict[Level, dict[str, str]], item: Received) -> None:
        image = values[Level.IMAGE]
        ds_class = image.get("SOPClassUID", "")
        ds_instance = image.get("SOPInstanceUID", "")
        if ds_class != item.sop_class_uid:
            raise SopClassMismatchError(
                f"data set SOP Class UID {ds_class or '(missing)'} does not match "
                f"the command's {item.sop_class_uid}")
        if ds_instance != item.sop_instance_uid:
            raise InvalidInstanceError(
                f"data set SOP Instance UID {ds_instance or '(missing)'} does not match "
                f"the command's {item.sop_instance_uid}")
        for level in (Level.STUDY, Level.SERIES):
            if not values[level].get(UNIQUE_KEY[level]):
                raise InvalidInstanceError(f"data set has no {UNIQUE_KEY[level]}")


def _dataset_bytes(blob: bytes) -> bytes:
    """The data set of a stored Part 10 blob (its File Meta names the sender: not compared)."""
    return blob[part10.dataset_offset(blob[:144]):]


@dataclass(frozen=True)
class SweepReport:
    temp_files: int
    orphan_blobs: int


def sweep_orphans(index: IndexPort, blobs: BlobPort, *, grace_seconds: float) -> SweepReport:
    """Remove what a crash may have left: temp files of dead writers, and blobs older
    than `grace_seconds` that no index row references (written, never indexed).

    The grace period protects blobs another instance sharing the store is indexing
    right now.
    """
    temp = blobs.sweep_temp()
    orphans = 0
    batch: list[str] = []

    def flush() -> int:
        referenced = index.referenced_blob_keys(batch)
        gone = 0
        for key in batch:
            if key not in referenced:
                blobs.delete(key)
                gone += 1
        batch.clear()
        return gone

    for key in blobs.keys(older_than=grace_seconds):
        batch.append(key)
        if len(batch) >= 500:
            orphans += flush()
    if batch:
        orphans += flush()
    if temp or orphans:
        log.warning("start-up check removed %d temp file(s) and %d orphan blob(s)", temp, orphans)
    return SweepReport(temp, orphans)
