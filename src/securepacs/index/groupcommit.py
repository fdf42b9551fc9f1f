"""Group commit: concurrent writers share one transaction and one commit (one fsync).

Leader/follower, no extra thread: the first writer to find the database idle becomes the
leader and runs every job queued so far in one batch; writers arriving meanwhile queue up,
and when the leader is done one of them leads the next batch. A job is answered only
after the batch holding it has committed, so nothing is acknowledged before it is durable;
a lone writer runs its batch of one at once, with no added wait.

Several processes writing one SQLite file (setting ``workers``) take turns through
`across`, an exclusive ``flock`` on a file beside the database: the leader waits for it
in the kernel (woken the moment the other process's batch has committed, no polling of
SQLite's write lock with failed ``BEGIN IMMEDIATE`` attempts) and only then takes the
jobs queued so far, so that what arrived while the other process was committing joins
this batch instead of waiting for a batch of its own. The kernel drops the lock of a
process that dies. SQLite's own locking still guarantees correctness; the file lock only
orders the processes' batches.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One unit of work; the batch runner sets `result` or `error`."""

    payload: Any
    result: Any = None
    error: BaseException | None = None
    done: bool = field(default=False, repr=False)


class ProcessLock:
    """An exclusive ``flock`` on `path` (created 0600 if missing), for taking turns with
    other processes; :meth:`acquire` is False (and logs once) when the file cannot be
    used, and the caller goes on without it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._failed = False

    def acquire(self) -> bool:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            return True
        except OSError as exc:
            if not self._failed:
                log.warning("writer lock %s unusable (%s): processes writing the index "
                            "wait on the database's own lock instead", self.path,
                            exc.strerror or exc)
                self._failed = True
            return False

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)


def lock_beside(database: str | None) -> ProcessLock | None:
    """The :class:`ProcessLock` for the SQLite file `database` (``PATH-writer.lock``), or
    None for an in-memory or unnamed database (nobody else can write it)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return ProcessLock(Path(database + "-writer.lock"))


class GroupCommit:
    """Runs submitted jobs in batches of at most `limit` through `run_batch`.

    Parameters
    ----------
    run_batch : callable
        Given a list of jobs, sets each job's ``result`` or ``error`` (one transaction
        for all of them where it can).
    limit : int
        The largest batch.
    across : ProcessLock, optional
        Held by the leader while it takes and runs a batch: batches of several processes
        writing one database take turns (see the module docstring).
    """

    def __init__(self, run_batch: Callable[[list[Job]], None], *, limit: int = 64,
                 across: ProcessLock | None = None):
        self._run_batch = run_batch
        self._limit = limit
        self._across = across
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[Job] = []
        self._busy = False
        self._waiting = 0  # callers asleep in the condition

    def submit(self, payload: Any) -> Any:
        """Run `payload` in some batch; its result, or raise its error."""
        job = Job(payload)
        cond = self._cond
        with cond:
            self._pending.append(job)
            lead = self._follow(job)
        while lead:
            held = self._across is not None and self._across.acquire()
            batch: list[Job] = []
            try:
                with cond:  # taken after the turn: what queued meanwhile comes too
                    batch = self._pending[:self._limit]
                    del self._pending[:self._limit]
                self._run_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - every job of the batch learns it
                for other in batch:
                    if other.error is None and other.result is None:
                        other.error = exc
            finally:
                if held:
                    self._across.release()  # type: ignore[union-attr]
                with cond:
                    for other in batch:
                        other.done = True
                    self._busy = False
                    if self._waiting:
                        cond.notify_all()
                    lead = self._follow(job)  # not done: it was beyond this batch's limit
        if job.error is not None:
            raise job.error
        return job.result

    def _follow(self, job: Job) -> bool:
        """Wait (holding the condition's lock) until `job` is done or nobody leads; True
        when this caller is to lead the next batch."""
        while not job.done and self._busy:
            self._waiting += 1
            try:
                self._cond.wait()
            finally:
                self._waiting -= 1
        if job.done:
            return False
        self._busy = True
        return True
