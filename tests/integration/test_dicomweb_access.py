"""Who may use DICOMweb (issue 16): refusals, revocation, CORS and import tokens.

Against the same kind of served archive as ``test_dicomweb.py``: no certificate, another
CA, a revoked one (also on a kept-alive connection), a missing permission (403 saying
which), malformed multipart (400), the archive viewer still refusing certificate-less
clients in the handshake, the cap on certificate-less connections, the disc viewer's CORS
preflight from origin ``null`` (STOW-RS only) and STOW-RS with an import token, and the
audit trail of DICOMweb work. Every wait is bounded.
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import HOST, needs_dcmtk

pytestmark = [pytest.mark.integration, needs_dcmtk]

pytest.importorskip("dicomweb_client.api")
requests = pytest.importorskip("requests")

from dicomwebarchive import Archive, ca, running_archive  # noqa: E402

from factories import write_study  # noqa: E402


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    yield from running_archive(tmp_path_factory)


def _uids(archive: Archive) -> tuple[str, str]:
    return tuple(archive.studies)  # type: ignore[return-value]


# -- refusals -----------------------------------------------------------------------------
def _status(archive: Archive, path: str, name: str | None, **kw: object) -> tuple[int, str]:
    got = archive.session(name).get(f"{archive.url}{path}", timeout=20, **kw)
    return got.status_code, got.text


def test_refusals_no_certificate_revoked_and_missing_permission(archive: Archive) -> None:
    first, _ = _uids(archive)
    for path in ("/studies", f"/studies/{first}", f"/studies/{first}/metadata"):
        status, text = _status(archive, path, None)
        assert status == 403 and "PAT001" not in text, path
        status, text = _status(archive, path, "gone")
        assert status == 403 and "PAT001" not in text, path
    archive.server.wait_for_log(r"dicomweb connection from .* refused: certificate 'gone'")
    status, text = _status(archive, "/studies", "modality")
    assert status == 403 and "'find' permission" in text and "PAT001" not in text
    status, text = _status(archive, f"/studies/{first}", "looker")
    assert status == 403 and "'get' permission" in text
    files = write_study(archive.data.parent / "nope", 1)
    got = archive.session("looker").post(
        f"{archive.url}/studies", timeout=20,
        data=b"--B\r\nContent-Type: application/dicom\r\n\r\n" + files[0].read_bytes()
        + b"\r\n--B--\r\n",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=B'})
    assert got.status_code == 403 and "'store' permission" in got.text


def test_another_ca_is_refused_in_the_handshake(archive: Archive, tmp_path: Path) -> None:
    other = tmp_path / "other"
    ca(other, "init")
    ca(other, "group", "create", "g", "--allow", "all")
    ca(other, "issue", "client", "--name", "ws1", "--org", "Elsewhere", "--group", "g",
       "--out", str(other / "out"))
    session = archive.session(None)
    session.cert = (str(other / "out" / "ws1.pem"), str(other / "out" / "ws1.key"))
    with pytest.raises(requests.exceptions.RequestException):
        session.get(f"{archive.url}/studies", timeout=20)


def test_malformed_multipart_is_a_400(archive: Archive) -> None:
    session = archive.session()
    kind = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=B'}
    for body in (b"no boundary anywhere" * 10000, b"--B\r\nContent-Type application/dicom\r\n\r\nx",
                 b"--B\r\nContent-Type: application/dicom\r\n\r\nunterminated"):
        got = session.post(f"{archive.url}/studies", data=body, headers=kind, timeout=20)
        assert got.status_code == 400 and "multipart" in got.json()["error"], body[:40]
    got = session.post(f"{archive.url}/studies", data=b"x", timeout=20,
                       headers={"Content-Type": "application/json"})
    assert got.status_code == 415


def test_a_revocation_ends_a_kept_alive_connection(archive: Archive) -> None:
    session = archive.session("later")
    assert session.get(f"{archive.url}/studies", timeout=20).status_code == 200
    ca(archive.data, "revoke", "later")
    deadline = time.monotonic() + 10
    while True:
        got = session.get(f"{archive.url}/studies", timeout=20)
        if got.status_code == 403:
            break
        assert time.monotonic() < deadline, "revocation not enforced within 10 s"
        time.sleep(0.2)
    assert "PAT001" not in got.text


def test_the_archive_viewer_still_refuses_a_client_without_certificate(
        archive: Archive) -> None:
    context = ssl.create_default_context(cafile=str(archive.clients / "ca.pem"))
    context.check_hostname = False
    conn = http.client.HTTPSConnection(HOST, archive.viewer_port, context=context, timeout=20)
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            conn.request("GET", "/")
            conn.getresponse().read()
    finally:
        conn.close()
    # while the DICOMweb listener lets it finish the handshake, then refuses it per request
    assert _status(archive, "/studies", None)[0] == 403


def test_connections_without_a_certificate_are_capped(archive: Archive) -> None:
    import socket

    from securepacs.web.dicomweb.listener import MAX_ANONYMOUS

    context = ssl.create_default_context(cafile=str(archive.clients / "ca.pem"))
    context.check_hostname = False

    def connect() -> ssl.SSLSocket:
        raw = socket.create_connection((HOST, archive.port), timeout=20)
        return context.wrap_socket(raw)

    def answer(sock: ssl.SSLSocket) -> bytes:
        sock.sendall(b"GET /dicomweb/studies HTTP/1.1\r\nHost: x\r\n\r\n")
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out

    held = [connect() for _ in range(MAX_ANONYMOUS)]
    try:
        time.sleep(0.5)  # every held connection has its handler (and its slot)
        extra = connect()
        assert answer(extra) == b""  # closed without an answer
        extra.close()
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the slots come back once those connections end
        sock = connect()
        got = answer(sock)
        sock.close()
        if got.startswith(b"HTTP/1.1 403"):
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.2)


# -- the disc viewer's import: CORS and import tokens -------------------------------------
def _token(archive: Archive, group: str = "radiology") -> str:
    out = ca(archive.data, "import-token", "--org", "St Elsewhere", "--group", group,
             "--expires", "1h")
    return out.strip().splitlines()[0]


def test_cors_preflight_only_for_stow_from_origin_null(archive: Archive) -> None:
    session = archive.session(None)
    ask = {"Origin": "null", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    ok = session.options(f"{archive.url}/studies", headers=ask, timeout=20)
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == "null"
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "Transfer-Encoding" not in ok.headers  # a 204 has no body (RFC 9112 6.1)
    other = dict(ask, Origin="https://evil.example")
    assert session.options(f"{archive.url}/studies", headers=other, timeout=20
                           ).status_code == 403
    get = dict(ask, **{"Access-Control-Request-Method": "GET"})
    assert session.options(f"{archive.url}/studies", headers=get, timeout=20).status_code == 403
    assert session.options(f"{archive.url}/studies/1.2/series", headers=ask, timeout=20
                           ).status_code == 403
    # QIDO and WADO from another origin, even with a certificate: refused, no CORS header
    first, _ = _uids(archive)
    for path in ("/studies", f"/studies/{first}/metadata"):
        got = archive.session().get(f"{archive.url}{path}", headers={"Origin": "null"},
                                    timeout=20)
        assert got.status_code == 403 and "Access-Control-Allow-Origin" not in got.headers
        assert "PAT001" not in got.text
    same = archive.session().get(f"{archive.url}/studies", timeout=20, headers={
        "Origin": f"https://{HOST}:{archive.port}", "Host": f"{HOST}:{archive.port}"})
    assert same.status_code == 200


def test_stow_with_an_import_token_from_origin_null(archive: Archive, tmp_path: Path) -> None:
    token = _token(archive)
    files = write_study(tmp_path / "t", 2, patient_id="PATTOKEN")
    body = b"".join(b"--B\r\nContent-Type: application/dicom\r\n\r\n" + p.read_bytes() + b"\r\n"
                    for p in files) + b"--B--\r\n"
    kind = 'multipart/related; type="application/dicom"; boundary=B'
    session = archive.session(None)
    got = session.post(f"{archive.url}/studies", data=body, timeout=20, headers={
        "Content-Type": kind, "Origin": "null", "Authorization": f"Bearer {token}"})
    assert got.status_code == 200, got.text
    assert got.headers["Access-Control-Allow-Origin"] == "null"
    assert len(got.json()["00081199"]["Value"]) == 2
    # the token reads nothing
    for path in ("/studies", "/studies?PatientID=PATTOKEN"):
        refused = session.get(f"{archive.url}{path}", timeout=20,
                              headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 403 and "PATTOKEN" not in refused.text
    # a wrong token, another origin, and a revoked token are refused
    bad = session.post(f"{archive.url}/studies", data=body, timeout=20, headers={
        "Content-Type": kind, "Origin": "null", "Authorization": "Bearer SPI1.x.y"})
    assert bad.status_code == 401
    # readable by the disc viewer (origin null), so it can say the token is wrong
    assert bad.headers.get("Access-Control-Allow-Origin") == "null"
    assert "import token is not valid" in bad.json()["error"]
    evil = session.post(f"{archive.url}/studies", data=body, timeout=20, headers={
        "Content-Type": kind, "Origin": "https://evil.example",
        "Authorization": f"Bearer {token}"})
    assert evil.status_code == 403 and "Access-Control-Allow-Origin" not in evil.headers
    ca(archive.data, "import-token", "--revoke", token.split(".")[1])
    revoked = session.post(f"{archive.url}/studies", data=body, timeout=20, headers={
        "Content-Type": kind, "Origin": "null", "Authorization": f"Bearer {token}"})
    assert revoked.status_code == 401
    listed = ca(archive.data, "import-token", "--list")
    assert f"{token.split('.')[1]}  St Elsewhere/radiology" in listed and "revoked" in listed


def test_a_preflight_leaves_its_kept_alive_connection_clean(archive: Archive,
                                                            tmp_path: Path) -> None:
    """Chromium sends the disc viewer's POST on the connection of its preflight: the 204
    must end exactly at its headers (a stray chunked terminator broke the next answer)."""
    token = _token(archive)
    files = write_study(tmp_path / "k", 1, patient_id="PATKEEP")
    body = (b"--B\r\nContent-Type: application/dicom\r\n\r\n" + files[0].read_bytes()
            + b"\r\n--B--\r\n")
    context = ssl.create_default_context(cafile=str(archive.clients / "ca.pem"))
    conn = http.client.HTTPSConnection(HOST, archive.port, context=context, timeout=20)
    try:
        conn.request("OPTIONS", "/dicomweb/studies", headers={
            "Origin": "null", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        pre = conn.getresponse()
        assert pre.status == 204 and pre.read() == b""
        assert pre.getheader("Transfer-Encoding") is None
        conn.request("POST", "/dicomweb/studies", body=body, headers={
            "Origin": "null", "Authorization": f"Bearer {token}",
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=B'})
        got = conn.getresponse()
        assert got.status == 200, got.read()
        assert b"00081199" in got.read()
    finally:
        conn.close()


def test_an_import_token_needs_a_group_that_stores(archive: Archive) -> None:
    from typer.testing import CliRunner

    from securepacs.cli.main import app

    result = CliRunner().invoke(app, ["ca", "--data-dir", str(archive.data), "import-token",
                                      "--org", "X", "--group", "lookers"])
    assert result.exit_code == 2 and "no store permission" in result.output


def test_dicomweb_work_is_audited(archive: Archive) -> None:
    from typer.testing import CliRunner

    from securepacs.cli.main import app

    first, _ = _uids(archive)
    archive.client().retrieve_study_metadata(first)

    def audit(*args: str) -> str:
        result = CliRunner().invoke(app, ["audit", "--data-dir", str(archive.data), "list",
                                          *args])
        assert result.exit_code == 0, result.output
        return result.output

    deadline = time.monotonic() + 10
    while True:
        read = audit("--identity", "CN=ws1", "--type", "instances-transferred",
                     "--patient", "PAT001")
        query = audit("--identity", "CN=ws1", "--type", "query")
        logins = audit("--type", "user-authentication")
        alerts = audit("--type", "security-alert")
        stored = audit("--type", "instances-transferred", "--patient", "PATTOKEN")
        if ("PAT001" in read and query.strip() and "import-token" in logins
                and "PATTOKEN" in stored and "looker" in alerts):
            break
        assert time.monotonic() < deadline, (read, query, logins, stored, alerts)
        time.sleep(0.2)
