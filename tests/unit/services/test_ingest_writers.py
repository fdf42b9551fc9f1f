"""The hand-off of blob writes to writer threads (ingest) and the filesystem store's
write (one ``writev``): every write runs once, its waiter learns its size or its error,
no thread idles while a write waits, nothing is left behind on failure."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from securepacs.blobs.filesystem import FileBlobStore
from securepacs.errors import StorageError
from securepacs.services.ingest import _Writers


def test_every_write_runs_once_and_its_waiter_gets_its_own_result() -> None:
    writers = _Writers(limit=3)
    ran: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> int:
        time.sleep(0.002 * (n % 4))
        with lock:
            ran.append(n)
        if n % 5 == 0:
            raise OSError(f"write {n} failed")
        return n * 10

    writes = [writers.submit(lambda n=n: work(n)) for n in range(1, 31)]  # type: ignore[misc]
    for n, write in enumerate(writes, start=1):
        if n % 5 == 0:
            with pytest.raises(OSError, match=f"write {n} failed"):
                write.result()
            with pytest.raises(OSError):  # asked again (a failed add's clean-up): the same
                write.result()
        else:
            assert write.result() == n * 10
            assert write.result() == n * 10
    assert sorted(ran) == list(range(1, 31))
    assert writers._threads <= 3  # noqa: SLF001 - the limit holds with 30 writes queued
    deadline = time.monotonic() + 5
    while writers._idle != writers._threads and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.01)
    assert writers._idle == writers._threads  # noqa: SLF001 - all back, none counted twice


def test_a_write_never_waits_while_a_thread_is_free() -> None:
    """One long write holds a thread: the next write gets a thread of its own at once
    rather than queueing behind it; once both are back, a third reuses one of them."""
    writers = _Writers(limit=4)
    release = threading.Event()
    slow = writers.submit(lambda: 1 if release.wait(10) else 0)
    fast = writers.submit(lambda: 2)
    assert fast.result() == 2  # did not wait for `slow`
    release.set()
    assert slow.result() == 1
    deadline = time.monotonic() + 5
    while writers._idle < 2 and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.01)
    assert writers.submit(lambda: 3).result() == 3
    assert writers._threads == 2  # noqa: SLF001


def test_waiters_in_several_threads_all_wake() -> None:
    writers = _Writers()
    gate = threading.Event()
    write = writers.submit(lambda: 7 if gate.wait(10) else 0)
    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(write.result())) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    assert got == []
    gate.set()
    for t in threads:
        t.join(timeout=10)
    assert got == [7, 7, 7, 7]


def test_failed_blob_write_leaves_nothing(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileBlobStore(tmp_path)

    def chunks():  # noqa: ANN202
        yield b"partial"
        raise OSError(5, "Input/output error")

    with pytest.raises(StorageError, match="Input/output error"):
        store.put(store.new_key(), chunks())
    assert not list((tmp_path / "tmp").iterdir()) and list(store.keys()) == []

    import os

    def no_sync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", no_sync)
    with pytest.raises(StorageError, match="Input/output error"):
        store.put(store.new_key(), [b"head", bytearray(b"data")])
    assert not list((tmp_path / "tmp").iterdir()) and list(store.keys()) == []


def test_writev_of_many_parts_keeps_their_order(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    key = store.new_key()
    parts = [bytes([n % 256]) * (n + 1) for n in range(200)]  # more than one writev's worth
    assert store.put(key, parts) == sum(len(p) for p in parts)
    assert store.read(key) == b"".join(parts)
    empty = store.new_key()
    assert store.put(empty, []) == 0 and store.read(empty) == b""
