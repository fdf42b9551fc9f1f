"""Group commit: concurrent jobs share batches, each learns its own result or error."""

from __future__ import annotations

import threading
import time

import pytest

from securepacs.index.groupcommit import GroupCommit, Job


def test_concurrent_jobs_share_batches_and_get_their_own_results() -> None:
    batches: list[int] = []

    def run(batch: list[Job]) -> None:
        batches.append(len(batch))
        time.sleep(0.02)  # a commit: others queue meanwhile
        for job in batch:
            if job.payload % 7 == 0:
                job.error = ValueError(f"bad {job.payload}")
            else:
                job.result = job.payload * 2

    group = GroupCommit(run, limit=8)
    results: dict[int, object] = {}

    def work(n: int) -> None:
        try:
            results[n] = group.submit(n)
        except ValueError as exc:
            results[n] = str(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 41)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == {n: (f"bad {n}" if n % 7 == 0 else n * 2) for n in range(1, 41)}
    assert sum(batches) == 40
    assert max(batches) <= 8
    assert len(batches) < 40  # some jobs did share a commit


def test_a_lone_job_runs_at_once_and_a_crashing_batch_fails_its_jobs() -> None:
    group = GroupCommit(lambda batch: [setattr(j, "result", "ok") for j in batch])
    assert group.submit(1) == "ok"

    def crash(batch: list[Job]) -> None:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        GroupCommit(crash).submit(2)
