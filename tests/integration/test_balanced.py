"""Two `securepacs serve` instances sharing PostgreSQL and one blob folder, behind HAProxy
in TCP mode (TLS passes through to the instances), driven by DCMTK (issue 9).

Four ``storescu +tls`` processes send 500 images of one study through the balancer
(round robin: two associations per instance). Instance A is killed (SIGKILL) in the middle;
each sender's unacknowledged files are sent again through the balancer, which now leads to
B (the client's retry). Then: every acknowledged image is indexed, each of the 500 exactly
once and byte-identical; C-FIND through A (restarted), B and the balancer sees all 500; the
restart's start-up check removed what the kill left half-written, so exactly 500 blobs remain.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from harness import HOST, dcmtk, free_port, make_server, needs_dcmtk, tls_args, wait_for_port
from pydicom import dcmread
from test_retrieve import dataset_bytes

from factories import write_study
from securepacs.index.repository import SqlIndex

pytestmark = [
    pytest.mark.integration,
    needs_dcmtk,
    pytest.mark.skipif(shutil.which("haproxy") is None,
                       reason="HAProxy is not installed (Debian package haproxy; scripts/install)"),
]

IMAGES = 500
SENDERS = 4
_SUCCESS = "Received Store Response (Success)"


def haproxy_config(path: Path, port: int, backends: dict[str, int]) -> Path:
    """TCP mode: HAProxy never terminates TLS, each instance verifies the client itself."""
    servers = "\n".join(f"    server {name} {HOST}:{p} check inter 1s fall 1 rise 2"
                        for name, p in backends.items())
    path.write_text(f"""global
    maxconn 256
defaults
    mode tcp
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 3
    option redispatch 1
frontend dicom_tls
    bind {HOST}:{port}
    default_backend securepacs
backend securepacs
    balance roundrobin
{servers}
""")
    return path


def storescu(port: int, pki, files: list[Path]) -> subprocess.Popen[str]:  # noqa: ANN001
    return subprocess.Popen(
        ["storescu", "-v", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert),
         "-aec", "SECUREPACS", HOST, str(port), *map(str, files)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"})


def study_count(port: int, pki, study_uid: str, out: Path) -> int:  # noqa: ANN001
    out.mkdir(parents=True)
    found = dcmtk("findscu", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert), "-S",
                  "-aec", "SECUREPACS", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={study_uid}", "-k", "NumberOfStudyRelatedInstances",
                  "-X", "-od", str(out), HOST, str(port), timeout=60)
    assert found.returncode == 0, found.stderr
    responses = [dcmread(p) for p in out.glob("rsp*.dcm")]
    assert len(responses) == 1
    return int(responses[0].NumberOfStudyRelatedInstances)


def test_two_instances_behind_haproxy(tmp_path: Path, pki, pg_url: str) -> None:  # noqa: ANN001
    files = write_study(tmp_path / "src", IMAGES)
    study_uid = dcmread(files[0]).StudyInstanceUID
    blobs = tmp_path / "shared-blobs"
    servers = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        srv = make_server(tmp_path / name, pki, blob_dir=str(blobs))
        srv.extra_args = ["--database-url", pg_url]  # serve's flag, over the config file
        servers[name] = srv.start()
    lb_port = free_port()
    cfg = haproxy_config(tmp_path / "haproxy.cfg", lb_port,
                         {n: s.port for n, s in servers.items()})
    lb_log = open(tmp_path / "haproxy.log", "wb")
    haproxy = subprocess.Popen(["haproxy", "-f", str(cfg), "-db"], stdout=lb_log,
                               stderr=subprocess.STDOUT)
    lb_log.close()
    senders: list[subprocess.Popen[str]] = []
    try:
        wait_for_port(lb_port, None, 15)
        time.sleep(1.0)  # first health checks done: both servers up
        slices = [files[i::SENDERS] for i in range(SENDERS)]
        started = time.monotonic()
        # one association each, started apart so that round robin alternates a, b, a, b
        # (0.1 s apart: the output is read only once all are started, and 500 images now
        # take about a second in all)
        for part in slices:
            senders.append(storescu(lb_port, pki, part))
            time.sleep(0.1)
        successes = [0] * SENDERS
        outputs: list[list[str]] = [[] for _ in range(SENDERS)]
        killed = False
        deadline = time.monotonic() + 180
        import selectors

        sel = selectors.DefaultSelector()
        for i, proc in enumerate(senders):
            assert proc.stdout is not None
            sel.register(proc.stdout, selectors.EVENT_READ, i)
        open_streams = SENDERS
        while open_streams and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                i = key.data
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if not line:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                outputs[i].append(line)
                if _SUCCESS in line:
                    successes[i] += 1
                    # every association answered (so each is under way on its instance):
                    # a fixed total (150) let the senders finish before the kill once
                    if min(successes) >= 5 and not killed:
                        servers["a"].kill()  # SIGKILL in the middle of the send
                        killed = True
        for proc in senders:
            proc.wait(timeout=30)
        first_pass = time.monotonic() - started
        assert killed, "the send finished before instance A could be killed"
        interrupted = [i for i in range(SENDERS) if successes[i] < len(slices[i])]
        assert interrupted, "no sender was cut off by the kill"
        assert all(senders[i].returncode != 0 for i in interrupted)
        acknowledged = [f for i in range(SENDERS) for f in slices[i][:successes[i]]]

        # the clients' retries: what was not acknowledged goes again through the balancer
        for i in interrupted:
            retry = storescu(lb_port, pki, slices[i][successes[i]:])
            out, _ = retry.communicate(timeout=120)
            answers = re.findall(r"Received Store Response \(([^)]*)\)", out)
            assert len(answers) == len(slices[i]) - successes[i], out[-2000:]
            # the one in flight when A died may already be stored: the duplicate Warning
            assert all(a == "Success" or a.startswith("Warning") for a in answers), set(answers)

        index = SqlIndex(pg_url)
        try:
            assert index.count_instances() == IMAGES
            for f in acknowledged:  # no acknowledged image was lost
                assert index.get(dcmread(f, stop_before_pixels=True).SOPInstanceUID) is not None
            for f in files:  # each stored once, intact
                stored = index.get(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                assert stored is not None
                blob = blobs / stored.blob_key[:2] / stored.blob_key[2:4] / stored.blob_key
                assert dataset_bytes(blob.read_bytes()) == dataset_bytes(f.read_bytes())
        finally:
            index.close()

        # TLS passed through: both instances saw and verified the client certificate
        for name in ("a", "b"):
            text = (tmp_path / name / "server.log").read_text(errors="replace")
            assert re.search(r"TLS connection from 127\.0\.0\.1:\d+: CN=client", text), name
        # C-FIND through B, through the balancer, and through A once restarted
        assert study_count(servers["b"].port, pki, study_uid, tmp_path / "qb") == IMAGES
        assert study_count(lb_port, pki, study_uid, tmp_path / "qlb") == IMAGES
        servers["a"].log_path = tmp_path / "a" / "server-restarted.log"
        servers["a"].start()
        assert study_count(servers["a"].port, pki, study_uid, tmp_path / "qa") == IMAGES
        # A's start-up check removed the blob (or temp file) the kill left behind
        left = [p for p in blobs.rglob("*") if p.is_file()]
        assert len(left) == IMAGES, f"{len(left)} blob files for {IMAGES} images"
        print(f"\n500 images through HAProxy: first pass {first_pass:.1f} s, "
              f"{sum(successes)} acknowledged before the retries, A killed when every sender had >= 5")
    finally:
        for proc in senders:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        haproxy.terminate()
        try:
            haproxy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            haproxy.kill()
            haproxy.wait(timeout=5)
        for srv in servers.values():
            srv.stop()
