"""Audit messages to a real syslog collector: Debian's rsyslog with rsyslog-gnutls (RFC 5425).

The test starts its own ``rsyslogd -n`` (own config, work folder and pid file) with an imtcp
listener using the gtls driver on a free loopback port, a server certificate from the test CA
and ``x509/certvalid`` (our client certificate must chain to the CA). rsyslog writes each
message as one JSON line (structured data and MSG); every MSG must be a valid PS3.15 A.5.1
audit message. Then the collector is stopped while 100 transfer events are recorded and
started again: all 100 must arrive, none twice (by the recordId of the structured data) when
it is stopped at a quiet moment; all 100, some perhaps twice, when it is stopped while
messages are on the wire (at-least-once, see securepacs.audit.syslog).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom import dcmread

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


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the test process dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Collector:
    """One rsyslogd in the foreground, started and stopped by the test."""

    def __init__(self, folder: Path, pki) -> None:  # noqa: ANN001
        self.folder = folder
        self.pki = pki
        self.out = folder / "received.jsonl"
        self.conf = folder / "rsyslog.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self._configure(_free_port())

    def _configure(self, port: int) -> None:
        self.port = port
        self.conf.write_text(CONFIG.format(
            work=self.folder, ca=self.pki.ca_cert, cert=self.pki.server.cert,
            key=self.pki.server.key, port=port, out=self.out))

    def start(self) -> None:
        """Start rsyslogd; if it cannot listen (port taken meanwhile), retry on another port."""
        for _attempt in range(3):
            if self._start_once():
                return
            self._configure(_free_port())  # the sink dials collector.port at each connect
        raise RuntimeError(f"rsyslogd did not listen: {(self.folder / 'rsyslogd.log').read_text()}")

    def _start_once(self) -> bool:
        assert RSYSLOGD is not None
        with open(self.folder / "rsyslogd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.folder / "rsyslogd.pid")],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
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
                      min_backoff=0.05, max_backoff=0.2, confirm_after=CONFIRM_AFTER)
    audit = AuditTrail([sink], audit_source=AuditSource("SECUREPACS"))
    try:
        yield audit, sink
    finally:
        audit.close(5)


CONFIRM_AFTER = 0.3
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
        assert len(collector.wait_for(30)) == 30
        time.sleep(CONFIRM_AFTER + 0.3)  # stop at a quiet moment: nothing in flight
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
        collector: Collector, trail: tuple[AuditTrail, SyslogSink]) -> None:
    """At-least-once: what was in flight when rsyslog went is sent again (maybe twice)."""
    audit, sink = trail
    ids = _restart_during(collector, audit, sink, quiet_stop=False)
    duplicates = len(ids) - len(set(ids))
    # only messages in flight at the stop can repeat (0 to 10 of 30 seen in 10 runs)
    assert duplicates <= 30, duplicates


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


def test_the_running_server_audits_stores_and_refusals_to_the_collector(
        tmp_path: Path, pki, collector: Collector) -> None:  # noqa: ANN001
    """serve itself: a store and a refused handshake reach rsyslog as valid audit XML, and
    the database chain holds the same events."""
    import subprocess as sp

    from harness import HOST, dcmtk, make_server, tls_args

    from factories import write_study

    if shutil.which("storescu") is None:
        pytest.skip("needs DCMTK")
    server = make_server(tmp_path, pki, audit_syslog=f"127.0.0.1:{collector.port}").start()
    try:
        files = write_study(tmp_path / "img", 3)
        sent = dcmtk("storescu", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert),
                     "-aec", "SECUREPACS", HOST, str(server.port), *files, timeout=60)
        assert sent.returncode == 0, sent.stderr
        assert dcmtk("echoscu", "-aec", "SECUREPACS", HOST, str(server.port),
                     timeout=30).returncode != 0
        # start, login, one message for the association's 3 stores of one study, refused
        got = collector.wait_for(4, timeout=20)
    finally:
        server.stop()
    texts = [g["msg"] for g in got]
    for text in texts:
        assert_valid(text.encode("utf-8"))
    transfers = [t for t in texts if 'csd-code="110104"' in t]  # DICOM Instances Transferred
    assert len(transfers) == 1, texts  # one per study per association (issue 19)
    sent = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert set(re.findall(r'<Instance UID="([0-9.]+)"', transfers[0])) == sent
    assert 'NumberOfInstances="3"' in transfers[0]
    assert any('csd-code="110114"' in t and 'EventOutcomeIndicator="4"' in t for t in texts), \
        "no refused User Authentication"
    verify = sp.run([sys.executable, "-m", "securepacs.cli", "audit", "--config",
                     str(server.config), "verify"], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    anchored = sp.run([sys.executable, "-m", "securepacs.cli", "audit", "--config",
                       str(server.config), "verify", "--checkpoints"], capture_output=True,
                      text=True, timeout=60)  # serve's last checkpoint, written as it stopped
    assert anchored.returncode == 0 and "newer record(s) are not anchored" in anchored.stdout, \
        anchored.stderr


def test_signed_checkpoints_reach_the_collector_and_verify_from_its_copy(
        tmp_path: Path, pki, collector: Collector) -> None:  # noqa: ANN001
    """Issue 14 item 11: the collector's copy of the checkpoints anchors the chain even when
    the data folder's checkpoint file and every database row are gone."""
    import sqlite3

    from typer.testing import CliRunner

    from securepacs.cli.main import app
    from securepacs.settings import load
    from securepacs.wiring import build_audit_trail

    data = tmp_path / "data"
    settings = load(overrides={
        "data_dir": data, "tls_cert": pki.server.cert, "tls_key": pki.server.key,
        "tls_ca": pki.ca_cert, "audit_syslog": f"127.0.0.1:{collector.port}"}, environ={})
    audit = build_audit_trail(settings, hostname="pacs.test")
    for i in range(3):
        audit.record(_store(i))
    audit.close(5)
    got = collector.wait_for(4)
    checkpoints = [g for g in got if g["msgid"] == "AUDIT-CHECKPOINT"]
    assert len(checkpoints) == 1 and '"seq":3' in checkpoints[0]["msg"], got
    runner = CliRunner()
    verify = ["audit", "--data-dir", str(data), "verify", "--checkpoints", str(collector.out)]
    ok = runner.invoke(app, verify)
    assert ok.exit_code == 0 and "1 signed checkpoint(s) agree" in ok.stdout, ok.output
    settings.checkpoint_file_path.unlink()
    conn = sqlite3.connect(data / "index.sqlite")
    with conn:
        conn.execute("DELETE FROM audit_event")
        conn.execute("UPDATE audit_head SET last_seq = 0, last_hash = ?", ("0" * 64,))
    conn.close()
    gone = runner.invoke(app, verify)
    assert gone.exit_code == 1 and "everything was deleted" in gone.stderr
