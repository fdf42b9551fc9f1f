"""AuditTrail fan-out (never blocks, failure policy), the JSON-lines sink, the syslog sink's
spool and RFC 5424 / RFC 5425 formatting (with a fake stream; the real collector is in
tests/integration/test_audit_syslog.py)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from securepacs.audit import messages as m
from securepacs.audit.record import AuditRecord, AuditSource
from securepacs.audit.serialize import from_json
from securepacs.audit.sinks import JsonLinesSink
from securepacs.audit.syslog import DirectorySpool, SyslogSink, format_message, frame
from securepacs.audit.trail import AuditTrail
from securepacs.errors import AuditError

AT = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SRC = AuditSource("SECUREPACS")
PACS = m.Peer.application("SECUREPACS")


def _event(i: int = 0) -> AuditRecord:
    return m.instances_transferred(action="C", outcome=0, source=m.Peer("CN=ws1,O=Clinic"),
                                   destination=PACS, patient_id="P1", study_uids=[f"1.2.{i}"],
                                   at=AT)


class ListSink:
    name = "list"

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def emit(self, record: AuditRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


class BlockedSink(ListSink):
    """A sink stuck until released (a hung collector, a locked database)."""

    name = "blocked"

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def emit(self, record: AuditRecord) -> None:
        self.release.wait(10)
        super().emit(record)


class FailingSink(ListSink):
    name = "failing"

    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    def emit(self, record: AuditRecord) -> None:
        if self.fail:
            raise OSError("disk full")
        super().emit(record)


def test_record_never_blocks_on_a_stuck_sink() -> None:
    stuck, fast = BlockedSink(), ListSink()
    trail = AuditTrail([stuck, fast], audit_source=SRC, queue_size=50)
    # The stuck sink never returns until released: if record() waited for it, the
    # producer would still be blocked when the (generous) join times out.
    producer = threading.Thread(target=lambda: [trail.record(_event(i)) for i in range(1000)])
    producer.start()
    producer.join(20)
    assert not producer.is_alive(), "record() blocked on a stuck sink"
    assert trail.flush(0.1) is False  # the stuck sink still holds records
    deadline = time.monotonic() + 5
    while len(fast.records) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = trail.stats()
    assert stats["blocked"]["dropped"] >= 1000 - 51
    stuck.release.set()
    trail.close(5)
    assert fast.records[0].audit_source == SRC  # the trail filled in the audit source


def test_records_reach_every_sink_in_order() -> None:
    a, b = ListSink(), ListSink()
    b.name = "other"
    trail = AuditTrail([a, b], audit_source=SRC)
    events = [_event(i) for i in range(200)]
    for e in events:
        trail.record(e)
    assert trail.flush(5)
    trail.close()
    assert [r.record_id for r in a.records] == [e.record_id for e in events]
    assert [r.record_id for r in b.records] == [e.record_id for e in events]


def test_failing_required_store_refuses_new_work_then_recovers() -> None:
    store = FailingSink()
    trail = AuditTrail([], required=store, audit_source=SRC, max_backoff=0.05)
    trail.check_writable()  # healthy before anything failed
    trail.record(_event())
    deadline = time.monotonic() + 5
    while trail.healthy and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not trail.healthy
    with pytest.raises(AuditError, match="disk full"):
        trail.check_writable()
    store.fail = False  # the disk has room again: the retried record goes through
    assert trail.flush(5)
    assert trail.healthy and len(store.records) == 1
    trail.check_writable()
    trail.close()


class BatchSink(ListSink):
    """A sink the trail batches (as the database): its worker lingers before writing."""

    name = "batch"

    def emit_batch(self, records: list[AuditRecord]) -> None:
        self.records.extend(records)


def test_record_durable_is_written_before_it_returns() -> None:
    store, other = BatchSink(), ListSink()
    trail = AuditTrail([other], required=store, audit_source=SRC)
    queued = _event(1)
    trail.record(queued)  # queued: the batching worker lingers before writing it
    durable = _event(2)
    assert trail.record_durable(durable)
    # in the store now, without a flush (a kill here would not lose it)
    assert [r.record_id for r in store.records] == [durable.record_id]
    assert store.records[0].audit_source == SRC
    assert trail.flush(5)
    trail.close()
    # once in each sink: the store is not handed it again by its worker
    assert sorted(r.record_id for r in store.records) == sorted(
        r.record_id for r in other.records) == sorted([durable.record_id, queued.record_id])


def test_record_durable_falls_back_to_the_retrying_queue() -> None:
    store = FailingSink()
    trail = AuditTrail([], required=store, audit_source=SRC, max_backoff=0.05)
    assert not trail.record_durable(_event())
    with pytest.raises(AuditError, match="disk full"):
        trail.check_writable()  # no new work while the deletion's record is not stored
    store.fail = False
    assert trail.flush(5)
    assert trail.healthy and len(store.records) == 1
    trail.close()


def test_audit_not_required_only_reports() -> None:
    store = FailingSink()
    trail = AuditTrail([], required=store, audit_source=SRC, audit_required=False,
                       max_backoff=0.05)
    trail.record(_event())
    time.sleep(0.1)
    assert not trail.healthy
    trail.check_writable()  # does not raise
    trail.close(0.5)


def test_full_queue_of_the_required_store_is_unhealthy() -> None:
    store = BlockedSink()
    trail = AuditTrail([], required=store, audit_source=SRC, queue_size=3)
    for i in range(10):
        trail.record(_event(i))
    with pytest.raises(AuditError, match="waiting"):
        trail.check_writable()
    store.release.set()
    assert trail.flush(5) and trail.healthy
    trail.close()


def test_jsonl_sink(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    sink = JsonLinesSink(path)
    trail = AuditTrail([sink], audit_source=SRC)
    events = [_event(i) for i in range(20)]
    for e in events:
        trail.record(e)
    trail.close()
    lines = path.read_text().splitlines()
    assert [json.loads(x)["record_id"] for x in lines] == [e.record_id for e in events]
    assert from_json(lines[0]).audit_source == SRC
    assert path.stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- syslog, offline

def test_rfc5424_message_and_rfc5425_frame() -> None:
    record = replace(_event(), audit_source=SRC, record_id='id-"]\\')
    message = format_message(record, hostname="pacs.example.org", procid="42")
    head, _, xml = message.partition(b"] ")
    assert head.decode() == ('<85>1 2026-11-21T12:00:00.000Z pacs.example.org securepacs 42 '
                             'IHE+RFC-3881 [securepacs@32473 recordId="id-\\"\\]\\\\"')
    assert xml.startswith(b"<?xml")
    framed = frame(message)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(message)


class FakeStream:
    def __init__(self, log: list[bytes], *, closed_after: int | None = None,
                 state_when_closed: str = "closed") -> None:
        self.log = log
        self.state_when_closed = state_when_closed
        self.closed_after = closed_after
        self.closed = False

    def sendall(self, data: bytes) -> None:
        self.log.append(data)

    def peer_state(self) -> str:
        if self.closed_after is not None and len(self.log) >= self.closed_after:
            return self.state_when_closed
        return "open"

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("ending", ["closed", "reset"])
def test_syslog_sink_spools_while_the_collector_is_away(tmp_path: Path, ending: str) -> None:
    """The collector goes after 3 messages: those 3 (in flight) are sent again."""
    received: list[bytes] = []
    up = threading.Event()
    streams: list[FakeStream] = []

    def connect() -> FakeStream:
        if not up.is_set():
            raise ConnectionRefusedError("collector down")
        # the first connection is closed by the collector after 3 messages
        stream = FakeStream(received, closed_after=3 if not streams else None,
                            state_when_closed=ending)
        streams.append(stream)
        return stream

    spool = DirectorySpool(tmp_path / "spool")
    sink = SyslogSink(connect, spool, hostname="pacs", min_backoff=0.01, max_backoff=0.05,
                      confirm_after=0.2)
    events = [replace_source(_event(i)) for i in range(10)]
    for e in events:
        sink.emit(e)
    time.sleep(0.1)
    assert received == [] and sink.backlog == 10  # nothing lost, nothing sent
    up.set()
    deadline = time.monotonic() + 5
    while sink.backlog and time.monotonic() < deadline:
        time.sleep(0.01)
    sink.close()
    ids = [_record_id(x) for x in received]
    expected = [e.record_id for e in events]
    assert ids == expected[:3] + expected  # at-least-once: the 3 in flight again
    assert len(streams) == 2 and streams[0].closed
    assert sink.backlog == 0


def test_syslog_sink_keeps_messages_until_confirmed(tmp_path: Path) -> None:
    received: list[bytes] = []
    spool = DirectorySpool(tmp_path / "spool")
    sink = SyslogSink(lambda: FakeStream(received), spool, hostname="pacs", confirm_after=0.3)
    sink.emit(replace_source(_event()))
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(received) == 1 and sink.backlog == 1  # sent, in flight, still spooled
    while sink.backlog and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.backlog == 0
    sink.close()


def test_spool_survives_a_restart(tmp_path: Path) -> None:
    spool = DirectorySpool(tmp_path)
    first = spool.put(b"one")
    (tmp_path / "0000000000000099.tmp").write_bytes(b"half written")
    again = DirectorySpool(tmp_path)
    second = again.put(b"two")
    assert again.pending() == [first, second]
    assert not list(tmp_path.glob("*.tmp"))


def replace_source(record: AuditRecord) -> AuditRecord:
    return replace(record, audit_source=SRC)


def _record_id(framed: bytes) -> str:
    text = framed.decode()
    return text.split('recordId="', 1)[1].split('"', 1)[0]
