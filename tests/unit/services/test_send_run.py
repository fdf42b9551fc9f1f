"""Planning associations and running a send against a fake StoreConnector: statuses,
retries after a lost association, fatal errors, resume, parallel workers (no sockets)."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from factories import make_dataset, write_study  # noqa: E402
from securepacs.model.levels import Level  # noqa: E402
from securepacs.services.discovery import Discovery, discover  # noqa: E402
from securepacs.services.scuport import (  # noqa: E402
    AssociationLost,
    AssociationRejected,
    CertificateRejected,
    DimseStatus,
    StoreRequest,
)
from securepacs.services.send import SendOptions, plan, send, status_text  # noqa: E402


def test_plan_groups_at_most_128_contexts() -> None:
    pairs = [(f"1.2.840.10008.5.1.4.1.1.{i}", ts) for i in range(150)
             for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)]
    groups = plan(pairs + pairs[:10])
    assert [len(g) for g in groups] == [128, 128, 44]
    assert sorted(p for g in groups for p in g) == sorted(set(pairs))
    assert plan([]) == []


def test_status_text() -> None:
    assert status_text(0xA700) == "0xA700 Refused: Out of Resources"
    assert status_text(0xC123) == "0xC123 Error: Cannot understand"
    assert status_text(0x0124) == "0x0124 Refused: Not Authorized"


class FakeSession:
    def __init__(self, server: FakeServer, pairs: list[tuple[str, str]]):
        self.server = server
        self.pairs = set(pairs)

    def refused(self, sop_class_uid: str, transfer_syntax_uid: str) -> str | None:
        if transfer_syntax_uid in self.server.refuse_ts:
            return "presentation context transfer syntax not accepted by the server"
        return None

    def store(self, request: StoreRequest) -> DimseStatus:
        assert (request.sop_class_uid, request.transfer_syntax_uid) in self.pairs
        with request.open() as stream:
            data = stream.read()
        assert len(data) == request.length
        with self.server.lock:
            self.server.calls += 1
            call = self.server.calls
        if call in self.server.lose_on:
            raise AssociationLost("the server aborted the association")
        uid = request.sop_instance_uid
        with self.server.lock:
            if uid in self.server.statuses:
                return self.server.statuses[uid]
            if uid in self.server.stored:
                return DimseStatus(0xB006, "Duplicate SOP Instance UID: first copy kept")
            self.server.stored[uid] += 1
        return DimseStatus(0x0000)

    def close(self) -> None:
        self.server.closed += 1

    def abort(self) -> None:
        self.server.aborted += 1


class FakeServer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored: Counter[str] = Counter()
        self.statuses: dict[str, DimseStatus] = {}
        self.lose_on: set[int] = set()
        self.refuse_ts: set[str] = set()
        self.open_error: Exception | None = None
        self.calls = 0
        self.opened = 0
        self.closed = 0
        self.aborted = 0
        self.barrier: threading.Barrier | None = None

    def open_store(self, pairs):  # noqa: ANN001, ANN201
        with self.lock:
            self.opened += 1
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        if self.open_error is not None:
            raise self.open_error
        return FakeSession(self, list(pairs))

    def find(self, ds: Dataset, level: Level):  # noqa: ANN201
        asked = ds.SOPInstanceUID
        for uid in [asked] if isinstance(asked, str) else list(asked):
            if uid in self.stored:
                match = Dataset()
                match.SOPInstanceUID = uid
                yield match


@pytest.fixture
def found(tmp_path: Path) -> Discovery:
    write_study(tmp_path / "ex", 6)
    write_study(tmp_path / "im", 4, transfer_syntax=ImplicitVRLittleEndian)
    return discover([tmp_path])


def uids(found: Discovery) -> set[str]:
    return {i.sop_instance_uid for i in found.instances}


def test_send_all_then_duplicates(found: Discovery) -> None:
    server = FakeServer()
    first = send(found, server)
    assert (first.sent, first.already_present, first.failed, first.not_sent) == (10, 0, [], 0)
    assert first.ok and first.bytes_sent == found.total_bytes
    assert set(server.stored) == uids(found)
    again = send(found, server)
    assert (again.sent, again.already_present) == (0, 10)
    assert again.ok


def test_failure_and_warning_statuses_are_reported_per_file(found: Discovery) -> None:
    server = FakeServer()
    bad, odd = found.instances[0], found.instances[1]
    server.statuses[bad.sop_instance_uid] = DimseStatus(0xA700, "disk full")
    server.statuses[odd.sop_instance_uid] = DimseStatus(0xB000)
    summary = send(found, server)
    assert summary.sent == 9 and not summary.ok
    (failed,) = summary.failed
    assert failed.label == bad.label and failed.status == 0xA700
    assert failed.reason == "0xA700 Refused: Out of Resources: disk full"
    (warned,) = summary.warnings
    assert warned.reason.startswith("0xB000 Coercion of data elements")


def test_lost_association_is_retried_on_a_new_one(found: Discovery) -> None:
    server = FakeServer()
    server.lose_on = {3, 7}
    notices: list[str] = []
    summary = send(found, server, options=SendOptions(retry_delay=0.0), notice=notices.append)
    assert summary.ok and summary.sent == 10
    assert summary.reconnects == 2 and server.aborted == 2 and server.opened == 3
    assert set(server.stored) == uids(found)
    assert any("new association, try 2 of 4" in n for n in notices)


def test_a_file_that_keeps_losing_the_association_fails_alone(found: Discovery) -> None:
    server = FakeServer()
    server.lose_on = {2, 3, 4}
    summary = send(found, server, options=SendOptions(retries=2, retry_delay=0.0))
    assert summary.sent == 9
    (failed,) = summary.failed
    assert "gave up after 2 retries" in failed.reason and failed.status is None


def test_a_permanent_failure_stops_everything(found: Discovery) -> None:
    server = FakeServer()
    server.open_error = CertificateRejected("the server rejected our TLS certificate")
    summary = send(found, server, options=SendOptions(parallel=3))
    assert summary.stopped == "the server rejected our TLS certificate"
    assert summary.not_sent == 10 and summary.sent == 0 and not summary.ok


def test_a_transient_rejection_that_persists_stops_after_the_retries(found: Discovery) -> None:
    server = FakeServer()
    server.open_error = AssociationRejected("busy", transient=True)
    summary = send(found, server, options=SendOptions(retries=1, retry_delay=0.0))
    assert summary.stopped == "busy" and summary.not_sent == 10
    assert server.opened == 2


def test_not_authorized_stops_the_send(found: Discovery) -> None:
    server = FakeServer()
    first = found.instances[0]
    server.statuses[first.sop_instance_uid] = DimseStatus(0x0124, "not authorised")
    summary = send(found, server)
    assert summary.stopped is not None and "permission refused" in summary.stopped
    assert len(summary.failed) == 1 and summary.not_sent == 9


def write_jpeg_labelled(folder: Path, count: int) -> None:
    """Files that claim JPEG Baseline (encapsulated bytes; nobody decodes them here)."""
    folder.mkdir(parents=True)
    for i in range(count):
        ds = make_dataset(instance_number=i + 1, transfer_syntax=JPEGBaseline8Bit)
        ds.PixelData = encapsulate([b"\xff\xd8 not really a JPEG \xff\xd9"])
        ds.save_as(folder / f"j{i}.dcm", enforce_file_format=True)


def test_refused_context_fails_those_files_with_the_reason(tmp_path: Path) -> None:
    write_study(tmp_path / "a", 2)
    write_jpeg_labelled(tmp_path / "b", 2)
    found = discover([tmp_path])
    server = FakeServer()
    server.refuse_ts = {JPEGBaseline8Bit}
    summary = send(found, server)
    assert summary.sent == 2 and len(summary.failed) == 2
    assert all("JPEG Baseline" in f.reason and "not accepted" in f.reason for f in summary.failed)


def test_resume_skips_what_the_server_holds(found: Discovery) -> None:
    server = FakeServer()
    for instance in found.instances[:4]:
        server.stored[instance.sop_instance_uid] += 1
    summary = send(found, server, options=SendOptions(resume=True), finder=server)
    assert summary.on_server == 4 and summary.sent == 6 and summary.already_present == 0
    assert all(n == 1 for n in server.stored.values())


def test_parallel_workers_send_each_file_once(tmp_path: Path) -> None:
    write_study(tmp_path, 40)
    found = discover([tmp_path])
    server = FakeServer()
    server.barrier = threading.Barrier(4)  # every worker holds its own association
    seen: list[int] = []
    summary = send(found, server, options=SendOptions(parallel=4),
                   on_progress=lambda p: seen.append(p.done))
    assert summary.sent == 40 and server.opened == 4 and server.closed == 4
    assert sorted(seen) == list(range(1, 41)) and all(n == 1 for n in server.stored.values())
