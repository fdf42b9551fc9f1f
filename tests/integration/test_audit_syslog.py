"""Audit messages to a real syslog collector: Debian's rsyslog with rsyslog-gnutls (RFC 5425).

The test starts its own ``rsyslogd -n`` (own config, work folder and pid file) with an imtcp
listener using the gtls driver on a free loopback port, a server certificate from the test CA
and ``x509/certvalid`` (our client certificate must chain to the CA). rsyslog writes each
message as one JSON line (structured data and MSG); every MSG must be a valid PS3.15 A.5.1
audit message. Then the collector is stopped while 100 transfer events are recorded and
started again: all 100 must arrive, none twice (by the recordId of the structured data).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from auditschema import assert_valid
from securepacs.audit import messages as m
from securepacs.audit.record import AuditSource, MediaType
from securepacs.audit.syslog import DirectorySpool, SyslogSink
from securepacs.audit.trail import AuditTrail
from securepacs.pki import tlspolicy

pytestmark = pytest.mark.integration

RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists()
                                        else None)
GTLS = any(Path(d, "lmnsd_gtls.so").exists() for d in
           ("/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog",
            "/usr/lib/rsyslog"))

CONFIG = """
global(
  workDirectory="{work}"
  maxMessageSize="64k"
  parser.escapeControlCharactersOnReceive="off"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"
       streamDriver.authMode="x509/certvalid")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="auditjson" type="list") {{
  constant(value="{{\\"sd\\":\\"") property(name="structured-data" format="json")
  constant(value="\\",\\"msgid\\":\\"") property(name="msgid" format="json")
  constant(value="\\",\\"msg\\":\\"") property(name="msg" format="json")
  constant(value="\\"}}\\n")
}}
action(type="omfile" file="{out}" template="auditjson")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector:
    """One rsyslogd in the foreground, started and stopped by the test."""

    def __init__(self, folder: Path, pki) -> None:  # noqa: ANN001
        self.folder = folder
        self.port = _free_port()
        self.out = folder / "received.jsonl"
        self.conf = folder / "rsyslog.conf"
        self.conf.write_text(CONFIG.format(work=folder, ca=pki.ca_cert, cert=pki.server.cert,
                                           key=pki.server.key, port=self.port, out=self.out))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert RSYSLOGD is not None
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.folder / "rsyslogd.pid")],
            stdout=open(self.folder / "rsyslogd.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {(self.folder / 'rsyslogd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("rsyslogd did not listen within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def messages(self) -> list[dict[str, str]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line]

    def wait_for(self, count: int, timeout: float = 20) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages()
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.02)


def record_id(message: dict[str, str]) -> str:
    return message["sd"].split('recordId="', 1)[1].split('"', 1)[0]


@pytest.fixture
def collector(tmp_path: Path, pki) -> Iterator[Collector]:  # noqa: ANN001
    if RSYSLOGD is None or not GTLS:
        pytest.skip("needs Debian packages rsyslog and rsyslog-gnutls (scripts/install)")
    (tmp_path / "collector").mkdir()
    c = Collector(tmp_path / "collector", pki)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def trail(tmp_path: Path, pki, collector: Collector) -> Iterator[tuple[AuditTrail, SyslogSink]]:  # noqa: ANN001
    context = tlspolicy.client_context(pki.ca_cert, pki.client.cert, pki.client.key)
    sink = SyslogSink(lambda: tlspolicy.connect_tls("127.0.0.1", collector.port, context,
                                                    timeout=5),
                      DirectorySpool(tmp_path / "spool"), hostname="pacs.test",
                      min_backoff=0.05, max_backoff=0.2)
    audit = AuditTrail([sink], audit_source=AuditSource("SECUREPACS"))
    try:
        yield audit, sink
    finally:
        audit.close(5)


PACS = m.Peer.application("SECUREPACS", address="127.0.0.1")
WS1 = m.Peer("CN=ws1,O=Test Hospital", ae_title="WS1", address="127.0.0.1")


def _store(i: int) -> m.AuditRecord:
    return m.instances_transferred(action="C", outcome=0, source=WS1, destination=PACS,
                                   patient_id=f"PAT-{i}", study_uids=[f"1.2.826.0.1.{i}"],
                                   at=datetime.now(UTC))


def test_store_refused_handshake_and_export_arrive_as_valid_xml(
        collector: Collector, trail: tuple[AuditTrail, SyslogSink]) -> None:
    audit, _sink = trail
    sent = [
        _store(0),
        m.user_authentication(user=m.Peer("unknown", address="127.0.0.1"), node=PACS,
                              accepted=False, reason="client certificate revoked",
                              at=datetime.now(UTC)),
        m.export_media(user=m.Peer("alice"), media=m.Media("DISC-1", MediaType.DVD),
                       patient_id="PAT-0", study_uids=["1.2.826.0.1.0"], at=datetime.now(UTC)),
    ]
    for record in sent:
        audit.record(record)
    got = collector.wait_for(3)
    assert [record_id(x) for x in got] == [r.record_id for r in sent]
    for message in got:
        assert message["msgid"] == "IHE+RFC-3881"
        assert_valid(message["msg"].lstrip("\ufeff ").encode("utf-8"))
    assert "client certificate revoked" in got[1]["msg"]
    assert "110106" in got[2]["msg"]  # Export


def _restart_during(collector: Collector, audit: AuditTrail, sink: SyslogSink, *,
                    quiet_stop: bool) -> list[str]:
    """Record 100 transfer events, stopping the collector after 30 and starting it after 70."""
    events = [_store(i) for i in range(100)]
    for record in events[:30]:
        audit.record(record)
    if quiet_stop:
        assert len(collector.wait_for(30)) == 30  # stop at a quiet moment
    else:
        time.sleep(0.02)  # stop while messages are on the wire
    collector.stop()
    for record in events[30:70]:
        audit.record(record)
    assert audit.flush(10)  # spooled
    time.sleep(0.3)
    assert sink.backlog >= 40  # the collector is away: they wait in the spool
    collector.start()
    for record in events[70:]:
        audit.record(record)
    deadline = time.monotonic() + 20
    while sink.backlog and time.monotonic() < deadline:  # sent and confirmed
        time.sleep(0.05)
    assert sink.backlog == 0
    ids = [record_id(x) for x in collector.wait_for(100)]
    assert set(ids) == {e.record_id for e in events}, f"only {len(set(ids))} of 100 arrived"
    return ids


def test_collector_restart_loses_nothing_and_duplicates_nothing(
        collector: Collector, trail: tuple[AuditTrail, SyslogSink]) -> None:
    audit, sink = trail
    ids = _restart_during(collector, audit, sink, quiet_stop=True)
    assert len(ids) == 100, f"{len(ids) - len(set(ids))} arrived twice"


def test_collector_stopped_mid_stream_loses_nothing(
        collector: Collector, trail: tuple[AuditTrail, SyslogSink],
        record_property) -> None:  # noqa: ANN001
    """At-least-once: what was in flight when rsyslog went is sent again (maybe twice)."""
    audit, sink = trail
    ids = _restart_during(collector, audit, sink, quiet_stop=False)
    duplicates = len(ids) - len(set(ids))
    record_property("duplicates", duplicates)
    assert duplicates <= 30, duplicates  # only messages in flight at the stop can repeat


def test_trail_built_from_settings_reaches_the_collector(tmp_path: Path, pki,  # noqa: ANN001
                                                         collector: Collector) -> None:
    from securepacs.settings import load
    from securepacs.wiring import audit_log, build_audit_trail

    settings = load(overrides={
        "data_dir": tmp_path / "data", "tls_cert": pki.server.cert, "tls_key": pki.server.key,
        "tls_ca": pki.ca_cert, "audit_syslog": f"127.0.0.1:{collector.port}"}, environ={})
    audit = build_audit_trail(settings, hostname="pacs.test")
    record = _store(7)
    audit.record(record)
    got = collector.wait_for(1)
    audit.close(5)
    assert [record_id(x) for x in got] == [record.record_id]
    assert_valid(got[0]["msg"].encode("utf-8"))
    log = audit_log(settings)
    assert [r.record_id for r in log.records()] == [record.record_id]
    log.close()
    assert not list((tmp_path / "data" / "audit-spool").glob("*.msg"))
