"""The CA, identities and permissions, and trust that changes while servers run (issue 3)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from catools import ca, data_server
from harness import HOST, SECUREPACS, dcmtk, needs_dcmtk, tls_args
from pydicom import Dataset, dcmread
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from factories import write_study

pytestmark = [pytest.mark.integration]


def client_files(folder: Path, name: str) -> tuple[Path, Path, Path]:
    return folder / f"{name}.key", folder / f"{name}.pem", folder / "ca.pem"


def open_association(port: int, files: tuple[Path, Path, Path], aet: str = "HOLDER"):  # noqa: ANN201
    key, cert, ca_pem = files
    context = ssl.create_default_context(cafile=str(ca_pem))
    context.check_hostname = False
    context.load_cert_chain(cert, key)
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    return ae.associate(HOST, port, ae_title="SECUREPACS", tls_args=(context, None))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    ca(data, "init")
    ca(data, "group", "create", "radiology", "--allow", "echo,store,find,move,get")
    ca(data, "group", "create", "readers", "--allow", "echo,find")
    return data


@needs_dcmtk
def test_revocation_reaches_two_running_servers_within_5s(tmp_path: Path, folder: Path) -> None:
    out = tmp_path / "clients"
    ca(folder, "issue", "client", "--name", "ws1", "--org", "St Elsewhere", "--group",
       "radiology", "--out", str(out))
    a = data_server(tmp_path, folder, "a").start()
    b = data_server(tmp_path, folder, "b").start()
    try:
        files = client_files(out, "ws1")
        images = write_study(tmp_path / "img", 2)
        for srv in (a, b):
            sent = dcmtk("storescu", *tls_args(*files), "-aec", "SECUREPACS", HOST,
                         str(srv.port), *images, timeout=60)
            assert sent.returncode == 0, sent.stderr
        held = open_association(a.port, files)
        assert held.is_established
        assert held.send_c_echo().Status == 0

        ca(folder, "revoke", "ws1", "--reason", "key_compromise")
        revoked_at = time.monotonic()
        refusal = (r"refused: certificate 'ws1' \(serial [0-9a-f]+\) was revoked on "
                   r"[-0-9]+ \(key_compromise\)")
        for srv in (a, b):
            # a send caught by the change may also be cut off mid-association (closed as
            # revoked); what must happen within 5 s is a new connection refused as revoked
            while not re.search(refusal, srv.log()):
                result = dcmtk("storescu", *tls_args(*files), "-aec", "SECUREPACS", HOST,
                               str(srv.port), images[0], timeout=30)
                assert time.monotonic() - revoked_at < 5, "revocation not enforced within 5 s"
                if result.returncode == 0:
                    time.sleep(0.2)
        assert time.monotonic() - revoked_at < 5
        # the association held open on A was closed by the server
        deadline = time.monotonic() + 5
        while held.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not held.is_established, "the revoked client's live association is still open"
        a.wait_for_log(r"closing the association of ws1 .*: certificate revoked")
    finally:
        a.stop()
        b.stop()


@needs_dcmtk
def test_permission_matrix_and_ae_binding(tmp_path: Path, folder: Path) -> None:
    out = tmp_path / "clients"
    ca(folder, "issue", "client", "--name", "reader", "--org", "Clinic", "--group", "readers",
       "--ae", "READER1", "--out", str(out))
    srv = data_server(tmp_path, folder, "srv").start()
    try:
        files = client_files(out, "reader")
        image = write_study(tmp_path / "img", 1)[0]
        stored = dcmtk("storescu", "-v", *tls_args(*files), "-aet", "READER1", "-aec",
                       "SECUREPACS", HOST, str(srv.port), image, timeout=30)
        assert "Store Response (Unknown Status: 0x124)" in stored.stdout + stored.stderr, (
            stored.stdout + stored.stderr)  # DCMTK 3.6.7 has no name for 0124 Not Authorized
        srv.wait_for_log(r"C-STORE refused: reader \(Clinic/readers, serial [0-9a-f]+\) lacks "
                         r"the 'store' permission")
        found = dcmtk("findscu", *tls_args(*files), "-S", "-aet", "READER1", "-aec", "SECUREPACS",
                      "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID", HOST, str(srv.port),
                      timeout=30)
        assert found.returncode == 0, found.stderr
        mismatch = dcmtk("echoscu", *tls_args(*files), "-aet", "SOMEONE", "-aec", "SECUREPACS",
                         HOST, str(srv.port), timeout=30)
        assert mismatch.returncode != 0
        assert "Calling AE Title Not Recognized" in mismatch.stdout + mismatch.stderr
        assert not list((folder / "blobs").rglob("*.dcm"))
    finally:
        srv.stop()


def test_tls12_session_resumption_does_not_bring_a_revoked_client_back(
        tmp_path: Path, folder: Path) -> None:
    out = tmp_path / "clients"
    ca(folder, "issue", "client", "--name", "resumer", "--org", "Clinic", "--group",
       "radiology", "--out", str(out))
    srv = data_server(tmp_path, folder, "srv").start()
    try:
        key, cert, ca_pem = client_files(out, "resumer")
        context = ssl.create_default_context(cafile=str(ca_pem))
        context.check_hostname = False
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        with socket.create_connection((HOST, srv.port), timeout=5) as raw:
            with context.wrap_socket(raw) as first:
                session = first.session
                with contextlib.suppress(ssl.SSLError, OSError):
                    first.unwrap()
        ca(folder, "revoke", "resumer")
        time.sleep(1.5)  # two trust polls
        # Whether OpenSSL resumes the session or not (here it usually does not, because the
        # server never closes the first session cleanly), the certificate of every
        # connection is checked against the trust store: the revoked client is refused.
        data = b""
        with socket.create_connection((HOST, srv.port), timeout=5) as raw:
            try:
                with context.wrap_socket(raw, session=session) as again:
                    again.settimeout(5)
                    data = again.recv(1)
            except (ssl.SSLError, OSError):
                pass  # closed during or right after the handshake: refused
        assert data == b"", "the server kept a revoked client's connection open"
        found = srv.wait_for_log(r"TLS connection from [^\n]* refused: certificate 'resumer'")
        assert "was revoked" in found.group(0) or "revoked" in srv.log()
        assert session is not None
    finally:
        srv.stop()


def test_enrolment_end_to_end_reuse_and_expiry(tmp_path: Path, folder: Path) -> None:
    srv = data_server(tmp_path, folder, "srv").start()
    try:
        token = ca(folder, "invite", "--org", "Imaging Centre", "--group", "radiology",
                   "--ae", "US01").stdout.strip()
        profile = tmp_path / "client" / "client.toml"
        enrol = [*SECUREPACS, "enroll", "--server", f"{HOST}:{srv.port}", "--token", token,
                 "--name", "us01", "--profile", str(profile), "--enroll-port",
                 str(_enroll_port(srv))]
        done = subprocess.run(enrol, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "enrolled as us01 (Imaging Centre/radiology)" in done.stdout
        key = tmp_path / "client" / "us01.key"
        assert key.stat().st_mode & 0o777 == 0o600
        text = profile.read_text()
        assert 'calling_ae = "US01"' in text and f"{HOST}:{srv.port}" in text
        echo = dcmtk("echoscu", *tls_args(key, tmp_path / "client" / "us01.pem",
                                          tmp_path / "client" / "ca.pem"),
                     "-aet", "US01", "-aec", "SECUREPACS", HOST, str(srv.port), timeout=30)
        assert echo.returncode == 0, echo.stderr
        # the enrolment is in the audit trail, with the enrolling identity (issue 18)
        enrolled: list[dict] = []
        deadline = time.monotonic() + 10
        while not enrolled and time.monotonic() < deadline:
            listed = subprocess.run([*SECUREPACS, "audit", "--data-dir", str(folder), "list",
                                     "--type", "security-alert", "--json"],
                                    capture_output=True, text=True, timeout=60)
            enrolled = [r for r in map(json.loads, listed.stdout.splitlines())
                        if "client-enrolled" in json.dumps(r)]
            time.sleep(0.2 if not enrolled else 0)
        assert enrolled, listed.stdout
        assert "CN=us01" in json.dumps(enrolled[-1]) and HOST in json.dumps(enrolled[-1])

        again = subprocess.run([*enrol[:-4], "--profile", str(tmp_path / "other.toml"),
                                "--enroll-port", str(_enroll_port(srv))],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and "enrolment token already used" in again.stderr
        assert not (tmp_path / "other.toml").exists()

        short = ca(folder, "invite", "--org", "X", "--group", "readers", "--expires", "1s"
                   ).stdout.strip()
        time.sleep(1.2)
        expired = subprocess.run([*SECUREPACS, "enroll", "--server", f"{HOST}:{srv.port}",
                                  "--token", short, "--profile", str(tmp_path / "x.toml"),
                                  "--enroll-port", str(_enroll_port(srv))],
                                 capture_output=True, text=True, timeout=60)
        assert expired.returncode == 2 and "enrolment token expired" in expired.stderr
        bad_pin = token.rsplit(".", 1)[0] + "." + "00" * 32
        pinned = subprocess.run([*SECUREPACS, "enroll", "--server", f"{HOST}:{srv.port}",
                                 "--token", bad_pin, "--profile", str(tmp_path / "y.toml"),
                                 "--enroll-port", str(_enroll_port(srv))],
                                capture_output=True, text=True, timeout=60)
        assert pinned.returncode == 2 and "does not match the fingerprint" in pinned.stderr
    finally:
        srv.stop()


def _enroll_port(srv) -> int:  # noqa: ANN001
    import tomllib

    return int(tomllib.loads(srv.config.read_text())["enroll_port"])


def test_exports_and_crl_open_with_openssl(tmp_path: Path, folder: Path) -> None:
    out = tmp_path / "clients"
    ca(folder, "issue", "client", "--name", "win1", "--org", "Clinic", "--group", "readers",
       "--out", str(out))
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    ca(folder, "export", "win1", "--p12", str(tmp_path / "w.p12"), "--password-file", str(pw))
    ca(folder, "export", "win1", "--p12", str(tmp_path / "wl.p12"), "--password-file", str(pw),
       "--legacy")
    for name, extra in (("w.p12", []), ("wl.p12", ["-legacy"])):
        info = subprocess.run(["openssl", "pkcs12", *extra, "-info", "-noout", "-in",
                               str(tmp_path / name), "-passin", "pass:correct horse battery staple"],
                              capture_output=True, text=True, timeout=30)
        assert info.returncode == 0, info.stderr
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in subprocess.run(
        ["openssl", "pkcs12", "-legacy", "-info", "-noout", "-in", str(tmp_path / "wl.p12"),
         "-passin", "pass:correct horse battery staple"], capture_output=True, text=True).stderr
    wrong = subprocess.run(["openssl", "pkcs12", "-info", "-noout", "-in", str(tmp_path / "w.p12"),
                            "-passin", "pass:nope"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode != 0
    ca(folder, "revoke", "win1", "--reason", "superseded")
    ca(folder, "crl", "--out", str(tmp_path / "crl.pem"))
    text = subprocess.run(["openssl", "crl", "-in", str(tmp_path / "crl.pem"), "-noout", "-text",
                           "-CAfile", str(folder / "pki" / "ca.pem")],
                          capture_output=True, text=True, timeout=30)
    assert text.returncode == 0 and "Superseded" in text.stdout
    listed = json.loads(ca(folder, "list", "--json").stdout)
    assert {r["name"]: r["status"] for r in listed}["win1"] == "revoked"


@needs_dcmtk
def test_dcmtk_checks_the_server_against_our_crl(tmp_path: Path, folder: Path) -> None:
    out = tmp_path / "clients"
    ca(folder, "issue", "client", "--name", "ws", "--org", "C", "--group", "radiology",
       "--out", str(out))
    srv = data_server(tmp_path, folder, "srv").start()
    try:
        files = client_files(out, "ws")
        ca(folder, "crl", "--out", str(tmp_path / "crl0.pem"))
        ok = dcmtk("echoscu", *tls_args(*files), "+crl", tmp_path / "crl0.pem", "-aec",
                   "SECUREPACS", HOST, str(srv.port), timeout=30)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        ca(folder, "revoke", "securepacs-server", "--reason", "key_compromise")
        ca(folder, "crl", "--out", str(tmp_path / "crl1.pem"))
        refused = dcmtk("echoscu", *tls_args(*files), "+crl", tmp_path / "crl1.pem", "-aec",
                        "SECUREPACS", HOST, str(srv.port), timeout=30)
        assert refused.returncode != 0
        assert "certificate verify failed" in refused.stdout + refused.stderr
        # the same CRL tells openssl why: the server certificate is revoked
        why = subprocess.run(["openssl", "verify", "-crl_check", "-CAfile",
                              str(folder / "pki" / "ca.pem"), "-CRLfile", str(tmp_path / "crl1.pem"),
                              str(folder / "pki" / "server.pem")], capture_output=True, text=True)
        assert why.returncode != 0 and "certificate revoked" in why.stdout + why.stderr
    finally:
        srv.stop()


@needs_dcmtk
def test_server_certificate_rotation_during_a_send(tmp_path: Path, folder: Path) -> None:
    out = tmp_path / "clients"
    ca(folder, "issue", "client", "--name", "sender", "--org", "C", "--group", "radiology",
       "--out", str(out))
    srv = data_server(tmp_path, folder, "srv").start()
    try:
        from securepacs.pki.tlspolicy import fetch_server_certificate

        before = fetch_server_certificate(HOST, srv.port, 5)
        files = client_files(out, "sender")
        images = write_study(tmp_path / "img", 100, rows=128, columns=128)
        send = subprocess.Popen(["storescu", *tls_args(*files), "-aec", "SECUREPACS", HOST,
                                 str(srv.port), *map(str, images)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"})
        renewed = ca(folder, "renew", "securepacs-server")
        assert "issued server certificate securepacs-server" in renewed.stdout
        srv.wait_for_log(r"TLS files reloaded", timeout=10)
        output, _ = send.communicate(timeout=120)
        assert send.returncode == 0, output
        after = fetch_server_certificate(HOST, srv.port, 5)
        assert after != before
        listed = {r["fingerprint"]: r for r in json.loads(ca(folder, "list", "--json").stdout)}
        assert listed[after]["name"] == "securepacs-server"
        found = [dcmread(p, stop_before_pixels=True) for p in images[:1]]
        assert found
    finally:
        srv.stop()


def test_expiring_certificates_are_listed_and_logged(tmp_path: Path, folder: Path) -> None:
    out = tmp_path / "clients"
    ca(folder, "issue", "client", "--name", "shortlived", "--org", "C", "--group", "readers",
       "--days", "10", "--out", str(out))
    listed = json.loads(ca(folder, "list", "--expiring", "30d", "--json").stdout)
    assert [r["name"] for r in listed] == ["shortlived"]
    srv = data_server(tmp_path, folder, "srv").start()
    try:
        srv.wait_for_log(r"certificate shortlived \(serial [0-9a-f]+, client\) expires on")
    finally:
        srv.stop()


def test_unknown_group_and_bad_permission_are_clear(tmp_path: Path, folder: Path) -> None:
    bad = ca(folder, "issue", "client", "--name", "x", "--org", "C", "--group", "nope",
             "--out", str(tmp_path), check=False)
    assert bad.returncode == 2 and "no group 'nope'" in bad.stderr
    perm = ca(folder, "group", "create", "g", "--allow", "echo,fly", check=False)
    assert perm.returncode == 2 and "unknown permission 'fly'" in perm.stderr
    again = ca(folder, "init", check=False)
    assert again.returncode == 2 and "a CA already exists" in again.stderr


__all__ = ["Dataset"]


def test_ca_changes_are_in_the_audit_trail_with_who(tmp_path: Path) -> None:
    """Issue 18: ca init/issue/revoke/renew/invite and group changes in ``audit list``."""
    import getpass

    data = tmp_path / "data"
    ca(data, "init")
    ca(data, "group", "create", "rad", "--allow", "echo,find")
    ca(data, "issue", "client", "--name", "ws9", "--org", "Clinic", "--group", "rad",
       "--out", str(tmp_path / "c"))
    ca(data, "issue", "server", "--name", "pacs9", "--out", str(tmp_path / "s"))
    ca(data, "renew", "pacs9")
    ca(data, "revoke", "ws9", "--reason", "key_compromise")
    ca(data, "invite", "--org", "Clinic", "--group", "rad")
    listed = subprocess.run([*SECUREPACS, "audit", "--data-dir", str(data), "list"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if "security-alert" in line]
    expected = ["root CA created", "group rad allows echo, find",
                "client certificate issued for Clinic/rad", "server certificate issued",
                "certificate renewed", "certificate revoked, reason key_compromise",
                "one-time enrolment token for Clinic/rad"]
    assert len(lines) == len(expected), listed.stdout
    for line, what in zip(lines, expected, strict=True):
        assert what in line and getpass.getuser() in line, (what, line)
    assert "[CN=ws9 serial" in lines[5] and "Node Authentication" in lines[5]
    assert "Security Roles Changed [group rad]" in lines[1]


def test_ca_list_shows_whole_fingerprints(tmp_path: Path) -> None:
    """Issue 18: error messages ask to compare a SHA-256 fingerprint with ``ca list``."""
    import os

    data = tmp_path / "data"
    ca(data, "init")
    ca(data, "issue", "server", "--name", "pacs8", "--out", str(tmp_path / "s"))
    records = json.loads(ca(data, "list", "--json").stdout)
    for columns in ("100", "200"):
        shown = subprocess.run([*SECUREPACS, "ca", "--data-dir", str(data), "list"],
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, "COLUMNS": columns})
        assert shown.returncode == 0, shown.stderr
        for record in records:
            assert len(record["fingerprint"]) == 95
            row = [line for line in shown.stdout.splitlines() if record["fingerprint"] in line]
            assert len(row) == 1 and row[0].startswith(record["name"]), shown.stdout
