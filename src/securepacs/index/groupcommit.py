"""Group commit: concurrent writers share one transaction and one commit (one fsync).

Leader/follower, no extra thread: the first writer to find the database idle becomes the
leader and runs every job queued so far in one batch; writers arriving meanwhile queue up,
and when the leader is done one of them leads the next batch. A job is answered only
after the batch holding it has committed, so nothing is acknowledged before it is durable;
a lone writer runs its batch of one at once, with no added wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """One unit of work; the batch runner sets `result` or `error`."""

    payload: Any
    result: Any = None
    error: BaseException | None = None
    done: bool = field(default=False, repr=False)


class GroupCommit:
    """Runs submitted jobs in batches of at most `limit` through `run_batch`.

    Parameters
    ----------
    run_batch : callable
        Given a list of jobs, sets each job's ``result`` or ``error`` (one transaction
        for all of them where it can).
    limit : int
        The largest batch.
    """

    def __init__(self, run_batch: Callable[[list[Job]], None], *, limit: int = 64):
        self._run_batch = run_batch
        self._limit = limit
        self._cond = threading.Condition()
        self._pending: list[Job] = []
        self._busy = False

    def submit(self, payload: Any) -> Any:
        """Run `payload` in some batch; its result, or raise its error."""
        job = Job(payload)
        with self._cond:
            self._pending.append(job)
        while True:
            with self._cond:
                while not job.done and self._busy:
                    self._cond.wait()
                if job.done:
                    break
                self._busy = True
                batch = self._pending[:self._limit]
                del self._pending[:self._limit]
            try:
                self._run_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - every job of the batch learns it
                for other in batch:
                    if other.error is None and other.result is None:
                        other.error = exc
            finally:
                with self._cond:
                    for other in batch:
                        other.done = True
                    self._busy = False
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error
        return job.result
