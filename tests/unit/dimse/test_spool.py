"""Spool: a large received data set's temp file, flushed to disk while it still arrives;
a failed early flush is reported, never swallowed; nothing is left behind on failure."""

from __future__ import annotations

import errno
import io
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from securepacs.dimse import channel as ch
from securepacs.dimse import commands as cmd
from securepacs.dimse import spool as sp


class Flushes:
    """Counts the real ``fdatasync`` calls of the spool module (optionally failing)."""

    def __init__(self, fail_from: int = 0) -> None:
        self.calls = 0
        self.fail_from = fail_from
        self.real = os.fdatasync
        self.failed = threading.Event()
        self.done = threading.Event()

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.fail_from and self.calls >= self.fail_from:
            self.failed.set()
            raise OSError(errno.EIO, "Input/output error")
        self.real(fd)
        self.done.set()


class HeldStream(io.BytesIO):
    """A data set to send that pauses after `hold` bytes until `resume` is set (bounded
    wait); by then the sender has written more than a spilled data set in memory holds
    before it goes to a temp file (1 MiB) to the socket."""

    def __init__(self, data: bytes, hold: int, resume: threading.Event) -> None:
        super().__init__(data)
        self.hold, self.resume = hold, resume

    def readinto(self, buffer) -> int:  # noqa: ANN001
        if self.tell() >= self.hold:
            self.resume.wait(10)
        return super().readinto(buffer)


def flusher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "spool-flush"]


def wait_for(condition, seconds: float = 10.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def test_file_holds_prefix_data_and_fragments(tmp_path: Path) -> None:
    spool = sp.Spool(b"HEAD", tmp_path, bytearray(b"first"), sync_every=0)
    spool.write(memoryview(b"xxsecondxx")[2:-2])
    spool.write(b"")
    assert spool.written == 4 + 5 + 6
    path = spool.close()
    assert path.read_bytes() == b"HEADfirstsecond"
    assert path.parent == tmp_path and path.name.startswith("rx")
    assert path.name.endswith(f".{os.getpid()}.tmp")  # a start-up sweep knows whose it is
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert flusher_threads() == []  # no early flush asked: no thread started


def test_write_out_starts_while_the_data_set_still_arrives(tmp_path: Path, monkeypatch) -> None:
    flushes = Flushes()
    monkeypatch.setattr(sp.os, "fdatasync", flushes)
    piece = os.urandom(64 * 1024)
    spool = sp.Spool(b"", tmp_path, b"", sync_every=256 * 1024)
    for _ in range(8):  # 512 KiB: two steps of 256 KiB
        spool.write(piece)
    # the flusher has synced the file before the last fragment came
    assert wait_for(lambda: flushes.calls >= 1)
    for _ in range(8):
        spool.write(piece)
    path = spool.close()
    assert 1 <= flushes.calls <= 4  # one per step at most, skipped ones coalesced
    assert path.read_bytes() == piece * 16
    assert flusher_threads() == []  # close() ended it
    path.unlink()


def test_a_failed_early_flush_is_raised_by_write_or_close(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sp.os, "fdatasync", Flushes(fail_from=1))
    spool = sp.Spool(b"", tmp_path, b"", sync_every=1024)
    spool.write(b"x" * 2048)  # asks for the flush that fails
    assert wait_for(lambda: spool._error is not None)
    with pytest.raises(OSError, match="Input/output"):
        spool.write(b"more")
    with pytest.raises(OSError, match="Input/output"):
        spool.close()
    assert spool.path.exists()  # close() leaves the removal to drop()
    spool.drop()
    spool.drop()  # twice: still quiet
    assert list(tmp_path.iterdir()) == []
    assert flusher_threads() == []


def test_a_spool_that_cannot_be_made_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        sp.Spool(b"", tmp_path / "missing", b"data")
    assert list(tmp_path.iterdir()) == []


def test_channel_reports_a_failed_flush_as_spill_error_and_stays_in_step(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ch, "SPILL_AT", 50_000)
    monkeypatch.setattr(sp, "SYNC_EVERY", 64 * 1024)
    flushes = Flushes(fail_from=1)
    monkeypatch.setattr(sp.os, "fdatasync", flushes)
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    sender, receiver = ch.PduChannel(a, 16384), ch.PduChannel(b, 16384)
    sender.set_peer_max(16384)  # many PDUs, written to the socket 512 KiB at a time
    try:
        store = cmd.request(cmd.C_STORE_RQ, 1, "1.2.840.10008.5.1.4.1.1.2", has_data_set=True,
                            sop_instance_uid="1.2.3.1")
        # the rest is sent once an early flush has failed
        data = HeldStream(os.urandom(3_000_000), 2_000_000, flushes.failed)
        t = threading.Thread(target=sender.send, args=(1, store, data), daemon=True)
        t.start()
        message = receiver.receive(lambda command, context_id: (b"HEAD", tmp_path))
        t.join(10)
        assert message.spill_error is not None and message.spill_error.errno == errno.EIO
        assert message.dataset_file is None
        assert list(tmp_path.iterdir()) == []  # the temp file is gone
        assert flusher_threads() == []
        t = threading.Thread(target=sender.send, args=(1, store, b"abcd"), daemon=True)
        t.start()
        assert receiver.receive().dataset == b"abcd"  # the next message arrives intact
        t.join(10)
    finally:
        a.close()
        b.close()


def test_channel_spools_a_large_data_set_with_early_flushes(tmp_path: Path,
                                                            monkeypatch) -> None:
    monkeypatch.setattr(ch, "SPILL_AT", 50_000)
    monkeypatch.setattr(sp, "SYNC_EVERY", 128 * 1024)
    flushes = Flushes()
    monkeypatch.setattr(sp.os, "fdatasync", flushes)
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    sender, receiver = ch.PduChannel(a, 16384), ch.PduChannel(b, 16384)
    sender.set_peer_max(16384)
    data = os.urandom(3_000_003)
    try:
        store = cmd.request(cmd.C_STORE_RQ, 1, "1.2.840.10008.5.1.4.1.1.2", has_data_set=True,
                            sop_instance_uid="1.2.3.1")
        # the rest is sent once the file was flushed once: the write-out began mid-receipt
        stream = HeldStream(data, 2_000_000, flushes.done)
        t = threading.Thread(target=sender.send, args=(1, store, stream), daemon=True)
        t.start()
        message = receiver.receive(lambda command, context_id: (b"HEAD", tmp_path))
        t.join(10)
    finally:
        a.close()
        b.close()
    assert message.dataset_file is not None and message.spill_error is None
    assert message.dataset_file.read_bytes() == b"HEAD" + data
    assert flushes.calls >= 1
    assert flusher_threads() == []
    message.discard()
    assert list(tmp_path.iterdir()) == []
