"""Standing protection (issue 14): a real TLS scanner, Debian's ``testssl.sh`` 3.0, against
the three TLS listeners of a running ``securepacs serve`` on loopback: the DICOM port (TLS
from the first byte, no STARTTLS), the enrolment port and the archive viewer port.

What must hold (PS3.15 B.12, RFC 9325, RFC 8996): no protocol below TLS 1.2; only AEAD suites
with ephemeral (EC)DH key exchange; no TLS compression; no client-initiated renegotiation.
The scan is limited to those checks (``-p -E -C``, and ``-R`` where it can run: 15 to 20 s a
port on an idle machine) and the three ports are scanned at once. testssl cannot try
client-initiated renegotiation where a client certificate is required, so for those ports
OpenSSL's ``s_client`` does it with a client certificate (``R`` on a TLS 1.2 connection) and
the server must refuse.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from catools import ca, data_server
from harness import HOST, Server, free_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("testssl") is None,
                                 reason="testssl.sh is not installed (scripts/install --test)")]

SCAN = ["--quiet", "--color", "0", "--warnings", "off", "--sneaky", "--connect-timeout", "5",
        "--openssl-timeout", "5", "-p", "-E", "-C"]
#: testssl's renegotiation check needs a handshake without client certificate: enrolment only.
RENEGOTIATION = {"enrolment": ["-R"]}
AEAD = ("GCM", "CHACHA20", "CCM")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, int],
                                                                       Path]]:
    tmp = tmp_path_factory.mktemp("tls-scan")
    data = tmp / "data"
    ca(data, "init")
    ca(data, "group", "create", "viewers", "--allow", "echo,find,get")
    ca(data, "issue", "client", "--name", "scanner", "--org", "Test", "--group", "viewers",
       "--out", str(tmp / "client"))
    viewer_port = free_port()
    server = data_server(tmp, data, "scan", viewer_port=viewer_port).start()
    import tomllib

    enroll_port = int(tomllib.loads(server.config.read_text())["enroll_port"])
    try:
        yield server, {"dicom": server.port, "enrolment": enroll_port,
                       "viewer": viewer_port}, tmp / "client"
    finally:
        server.stop()


def findings(path: Path) -> dict[str, str]:
    """testssl's flat JSON: id -> finding (cipher lines keep their own ids)."""
    return {item["id"]: item["finding"] for item in json.loads(path.read_text())}


def test_testssl_finds_only_tls12_plus_aead_ecdhe_no_compression_no_renegotiation(
        served: tuple[Server, dict[str, int], Path], tmp_path: Path) -> None:
    _, ports, _ = served
    scans = {}
    for name, port in ports.items():
        out = tmp_path / f"{name}.json"
        scans[name] = (out, subprocess.Popen(
            ["testssl", *SCAN, *RENEGOTIATION.get(name, []), "--jsonfile", str(out),
             f"{HOST}:{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    problems = []
    for name, (out, proc) in scans.items():
        try:
            text, _ = proc.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
            raise AssertionError(f"testssl did not finish on the {name} port") from None
        found = findings(out)
        where = f"{name} port ({ports[name]})"
        for protocol in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
            if found.get(protocol) != "not offered":
                problems.append(f"{where}: {protocol} {found.get(protocol)!r}")
        if found.get("TLS1_2") != "offered" or not str(found.get("TLS1_3")).startswith("offered"):
            problems.append(f"{where}: TLS 1.2/1.3 {found.get('TLS1_2')!r} {found.get('TLS1_3')!r}")
        suites = [finding for key, finding in found.items() if key.startswith("cipher-tls")]
        if not suites:
            problems.append(f"{where}: no cipher suite listed:\n{text[-2000:]}")
        for suite in suites:
            fields = suite.split()
            openssl_name, kex = fields[3], fields[4]
            tls13 = openssl_name.startswith("TLS_")
            if not any(a in openssl_name for a in AEAD):
                problems.append(f"{where}: non-AEAD suite {suite}")
            if not tls13 and not openssl_name.startswith("ECDHE-"):
                problems.append(f"{where}: TLS 1.2 suite without ECDHE {suite}")
            if kex not in ("ECDH", "DH"):
                problems.append(f"{where}: key exchange {kex} in {suite}")
        if not str(found.get("CRIME_TLS")).startswith("not vulnerable"):
            problems.append(f"{where}: compression {found.get('CRIME_TLS')!r}")
        if name in RENEGOTIATION and found.get("secure_client_renego") != "not vulnerable":
            problems.append(f"{where}: client-initiated renegotiation "
                            f"{found.get('secure_client_renego')!r}")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("listener", ["dicom", "viewer"])
def test_client_initiated_renegotiation_is_refused_with_a_client_certificate(
        served: tuple[Server, dict[str, int], Path], listener: str) -> None:
    _, ports, client = served
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"{HOST}:{ports[listener]}", "-tls1_2",
         "-cert", str(client / "scanner.pem"), "-key", str(client / "scanner.key"),
         "-CAfile", str(client / "ca.pem")],
        input="R\n", capture_output=True, text=True, timeout=30)
    out = done.stdout + done.stderr
    assert "Verify return code: 0 (ok)" in out, out[-2000:]  # the handshake itself succeeded
    assert "RENEGOTIATING" in out and "no renegotiation" in out, out[-2000:]
