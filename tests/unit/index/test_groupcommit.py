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


def test_ready_hook_gates_the_commit(tmp_path) -> None:  # noqa: ANN001
    """A row is committed only if its `ready` returns; a failing one aborts that add alone,
    also inside a batch shared with other threads."""
    from test_index_concurrency import make_record

    from securepacs.index.repository import SqlIndex

    index = SqlIndex(f"sqlite:///{tmp_path / 'i.db'}")
    index.create_schema()

    def fail() -> None:
        raise OSError("blob write failed")

    with pytest.raises(OSError, match="blob write failed"):
        index.add(make_record(0), ready=fail)
    assert index.count_instances() == 0
    barrier = threading.Barrier(8)
    errors: dict[int, str] = {}

    def work(n: int) -> None:
        barrier.wait()
        try:
            index.add(make_record(n), ready=fail if n % 3 == 0 else (lambda: None))
        except OSError as exc:
            errors[n] = str(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(errors) == [3, 6]
    assert index.count_instances() == 6
    assert index.get("1.4.3") is None and index.get("1.4.4") is not None
    index.close()


def _submit_all(group: GroupCommit, payloads: list[int]) -> list[threading.Thread]:
    threads = [threading.Thread(target=group.submit, args=(n,), daemon=True) for n in payloads]
    for t in threads:
        t.start()
    return threads


def _wait_pending(group: GroupCommit, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(group._pending) < count and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.01)
    assert len(group._pending) == count  # noqa: SLF001


def test_processes_take_turns_and_what_queued_meanwhile_joins_one_batch(tmp_path) -> None:  # noqa: ANN001
    """Another process holds the writer lock (a second open file stands for it): our jobs
    queue, no batch runs; once it lets go, everything queued runs as ONE batch (taken after
    the turn, not before)."""
    from securepacs.index.groupcommit import ProcessLock, lock_beside

    path = tmp_path / "i.db-writer.lock"
    assert lock_beside(str(tmp_path / "i.db")).path == path  # type: ignore[union-attr]
    assert lock_beside(":memory:") is None and lock_beside(None) is None
    other = ProcessLock(path)
    assert other.acquire()
    batches: list[list[int]] = []
    group = GroupCommit(lambda batch: batches.append([j.payload for j in batch]) or [
        setattr(j, "result", "ok") for j in batch], across=ProcessLock(path))
    try:
        threads = _submit_all(group, [1, 2, 3])
        _wait_pending(group, 3)
        time.sleep(0.1)
        assert batches == []  # the other process's turn
    finally:
        other.release()
    for t in threads:
        t.join(timeout=10)
    assert len(batches) == 1 and sorted(batches[0]) == [1, 2, 3]


def test_a_killed_process_does_not_keep_the_turn(tmp_path) -> None:  # noqa: ANN001
    import os
    import signal

    from securepacs.index.groupcommit import ProcessLock

    path = tmp_path / "i.db-writer.lock"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a process that takes the turn and dies holding it
        try:
            ProcessLock(path).acquire()
            os.write(write, b"1")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    group = GroupCommit(lambda batch: [setattr(j, "result", "ok") for j in batch],
                        across=ProcessLock(path))
    threads = _submit_all(group, [1])
    _wait_pending(group, 1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive()
    # an unusable lock file: the batch runs without it (SQLite's own lock still holds)
    lost = GroupCommit(lambda batch: [setattr(j, "result", "ok") for j in batch],
                       across=ProcessLock(tmp_path / "missing" / "x.lock"))
    assert lost.submit(2) == "ok"
