"""The archive viewer of ``securepacs serve`` (issue 6): HTTPS with client certificates.

A real ``securepacs serve`` on a data folder with its own CA stores two studies sent with
DCMTK ``storescu`` over TLS; the viewer listener (``viewer_port``) is then driven with the
standard library's HTTPS client and a client certificate (study list, search, a study's
series, an image PNG that is not blank), refused without a certificate, with a revoked one,
and for a group without the find and get permissions; finally Debian chromium (Playwright's
``client_certificates``) opens the list, a study and an image. Every wait is bounded.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import shutil
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from catools import data_server
from harness import HOST, Server, dcmtk, free_port, needs_dcmtk, tls_args

from factories import write_study

pytestmark = [pytest.mark.integration, needs_dcmtk]

CHROMIUM = "/usr/bin/chromium"
Image = pytest.importorskip("PIL.Image")
ImageStat = pytest.importorskip("PIL.ImageStat")


class Archive:
    def __init__(self, server: Server, viewer_port: int, clients: Path, study_uids: list[str],
                 series_uids: list[str]):
        self.server = server
        self.viewer_port = viewer_port
        self.clients = clients
        self.study_uids = study_uids
        self.series_uids = series_uids
        self.data = Path()

    def files(self, name: str) -> tuple[Path, Path, Path]:
        return self.clients / f"{name}.key", self.clients / f"{name}.pem", self.clients / "ca.pem"

    def context(self, name: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.clients / "ca.pem"))
        context.check_hostname = False
        if name is not None:
            key, cert, _ = self.files(name)
            context.load_cert_chain(cert, key)
        return context

    def get(self, path: str, name: str | None = "ws1") -> tuple[int, bytes, str]:
        conn = http.client.HTTPSConnection(HOST, self.viewer_port, context=self.context(name),
                                           timeout=20)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read(), response.getheader("Content-Type") or ""
        finally:
            conn.close()


def ca(data: Path, *args: str) -> None:
    """``securepacs ca`` in this process (seven runs cost 2 s instead of 17 s as programs)."""
    from typer.testing import CliRunner

    from securepacs.cli.main import app

    result = CliRunner().invoke(app, ["ca", "--data-dir", str(data), *args])
    assert result.exit_code == 0, f"ca {' '.join(args)}: {result.output}"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    tmp = tmp_path_factory.mktemp("archive-viewer")
    data, out = tmp / "data", tmp / "clients"
    ca(data, "init")
    ca(data, "group", "create", "radiology", "--allow", "echo,store,find,move,get")
    ca(data, "group", "create", "senders", "--allow", "echo,store")
    for name, group in (("ws1", "radiology"), ("modality", "senders"), ("gone", "radiology"),
                        ("later", "radiology")):
        ca(data, "issue", "client", "--name", name, "--org", "St Elsewhere", "--group", group,
           "--out", str(out))
    ca(data, "revoke", "gone")
    viewer_port = free_port()
    server = data_server(tmp, data, "serve", viewer_port=viewer_port).start()
    try:
        first = write_study(tmp / "a", 3, patient_id="PAT001", patient_name="Doe^Jane",
                            study_date="20240115", rows=64, columns=64)
        second = write_study(tmp / "b", 2, patient_id="PAT002", patient_name="Roe^Richard",
                             study_date="20250301", modality="MR", study_description="Knee")
        key, cert, ca_pem = out / "modality.key", out / "modality.pem", out / "ca.pem"
        sent = dcmtk("storescu", *tls_args(key, cert, ca_pem), "-aec", "SECUREPACS", HOST,
                     str(server.port), *first, *second, timeout=60)
        assert sent.returncode == 0, sent.stderr
        from pydicom import dcmread

        heads = [dcmread(p, stop_before_pixels=True) for p in (first[0], second[0])]
        found = Archive(server, viewer_port, out, [str(h.StudyInstanceUID) for h in heads],
                        [str(h.SeriesInstanceUID) for h in heads])
        found.data = data
        yield found
    finally:
        server.stop()


def not_blank(png: bytes) -> tuple[float, int]:
    picture = Image.open(io.BytesIO(png)).convert("L")
    return ImageStat.Stat(picture).stddev[0], picture.getextrema()[1]


def test_serve_prints_the_viewer_url(archive: Archive) -> None:
    archive.server.wait_for_log(rf"archive viewer \(HTTPS.*\): https://127\.0\.0\.1:{archive.viewer_port}/")


def test_study_list_search_series_and_an_image(archive: Archive) -> None:
    status, body, kind = archive.get("/")
    page = body.decode()
    assert status == 200 and kind.startswith("text/html"), page
    assert "Doe Jane" in page and "PAT001" in page and "Roe Richard" in page and "PAT002" in page
    # newest first: the 2025 study above the 2024 one
    assert page.index("PAT002") < page.index("PAT001")
    assert "2 of 2 studies" in page

    status, body, _ = archive.get("/?q=roe")
    assert status == 200 and "PAT002" in body.decode() and "PAT001" not in body.decode()
    status, body, _ = archive.get("/?q=PAT00*1")  # wildcards typed are ignored, not matched
    assert status == 200 and "PAT002" not in body.decode()

    study_uid, series_uid = archive.study_uids[0], archive.series_uids[0]
    status, body, _ = archive.get(f"/study/{quote(study_uid)}")
    assert status == 200 and f'href="series/{series_uid}"' in body.decode()
    assert "3 image(s)" in body.decode()
    status, body, _ = archive.get(f"/api/series/{quote(series_uid)}")
    listing = json.loads(body)
    assert status == 200 and len(listing["slices"]) == 3
    assert listing["instances"][0]["tags"]["PatientID"] == "PAT001"

    status, png, kind = archive.get(f"/render/{quote(series_uid)}/1/0")
    assert status == 200 and kind == "image/png"
    std, brightest = not_blank(png)
    assert std > 10 and brightest > 100, (std, brightest)
    status, thumb, kind = archive.get(f"/thumb/{quote(series_uid)}")
    assert status == 200 and kind == "image/png"
    # the media viewer's forms do not exist on the archive
    assert archive.get("/import")[0] == 404
    assert archive.get("/study/1.2.3.4")[0] == 404


def test_no_certificate_is_refused_in_the_handshake(archive: Archive) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        archive.get("/", name=None)
    archive.server.wait_for_log("viewer TLS handshake with 127.0.0.1 refused")


def test_revoked_certificate_and_a_group_without_find_get_are_refused(archive: Archive) -> None:
    status, body, _ = archive.get("/", name="gone")
    assert status == 403 and "not admitted" in body.decode()
    assert "PAT001" not in body.decode()
    archive.server.wait_for_log(r"viewer connection from .* refused: certificate 'gone' .* revoked")
    for path in ("/", f"/render/{quote(archive.series_uids[0])}/0/0"):
        status, body, _ = archive.get(path, name="modality")
        assert status == 403, path
        assert "FIND and GET" in body.decode() and "PAT001" not in body.decode()


def test_a_revocation_ends_a_kept_alive_connection(archive: Archive) -> None:
    conn = http.client.HTTPSConnection(HOST, archive.viewer_port,
                                       context=archive.context("later"), timeout=20)
    try:
        conn.request("GET", "/")
        first = conn.getresponse()
        assert first.status == 200 and b"PAT001" in first.read()
        ca(archive.data, "revoke", "later")
        deadline = time.monotonic() + 10
        while True:  # the same TLS connection: admitted again before every request
            conn.request("GET", "/")
            response = conn.getresponse()
            body = response.read()
            if response.status == 403:
                break
            assert time.monotonic() < deadline, "revocation not enforced within 10 s"
            time.sleep(0.2)
        assert b"PAT001" not in body and b"not admitted" in body
    finally:
        conn.close()


def _playwright_client_certificates() -> object:
    api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from importlib.metadata import version

    major, minor = (int(p) for p in version("playwright").split(".")[:2])
    if (major, minor) < (1, 46):
        pytest.skip("this Playwright has no client_certificates (needs 1.46)")
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed")
    return api


def test_chromium_with_a_client_certificate(archive: Archive, tmp_path: Path) -> None:
    api = _playwright_client_certificates()
    key, cert, _ = archive.files("ws1")
    origin = f"https://{HOST}:{archive.viewer_port}"
    with api.sync_playwright() as p:  # type: ignore[attr-defined]
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=30_000,
                                        args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        except api.Error as exc:  # type: ignore[attr-defined]
            pytest.skip(f"chromium cannot start here: {str(exc).splitlines()[0]}")
        try:
            context = browser.new_context(
                ignore_https_errors=True, viewport={"width": 1400, "height": 900},
                client_certificates=[{"origin": origin, "certPath": str(cert),
                                      "keyPath": str(key)}])
            context.set_default_timeout(15_000)
            page = context.new_page()
            page.goto(origin + "/")
            assert "Doe Jane" in page.inner_text("#studies")
            page.fill("#q", "doe")
            page.click("#search button")
            page.wait_for_url(re.compile(r".*\?q=doe$"))
            assert page.locator("tr.archive-study").count() == 1
            page.locator("a.open-study").first.click()
            page.locator("a.open-series").first.click()
            page.locator('#image[data-index="0"]').wait_for(state="attached")
            page.wait_for_function("document.getElementById('image').complete && "
                                   "document.getElementById('image').naturalWidth > 0")
            std, brightest = not_blank(page.locator("#stage").screenshot())
            assert std > 10 and brightest > 100, (std, brightest)
            assert "PAT001" in page.inner_text("#tags")
            box = page.locator("#stage").bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.wheel(0, 120)
            page.wait_for_function(
                "document.getElementById('instance-number').textContent === '2'")
            page.locator('#image[data-index="1"]').wait_for(state="attached")
            context.close()

            # the same browser without a certificate for this origin gets nothing
            bare = browser.new_context(ignore_https_errors=True)
            with pytest.raises(api.Error):  # type: ignore[attr-defined]
                bare.new_page().goto(origin + "/", timeout=10_000)
            bare.close()
        finally:
            browser.close()


def _audit(data: Path, *args: str) -> str:
    from typer.testing import CliRunner

    from securepacs.cli.main import app

    result = CliRunner().invoke(app, ["audit", "--data-dir", str(data), "list", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_viewing_and_refusals_are_audited(archive: Archive) -> None:
    archive.get(f"/series/{quote(archive.series_uids[0])}")
    deadline = time.monotonic() + 10
    while True:  # the trail writes in the background
        viewed = _audit(archive.data, "--identity", "CN=ws1", "--type", "instances-transferred",
                        "--patient", "PAT001")
        alerts = _audit(archive.data, "--type", "security-alert")
        if "PAT001" in viewed and "gone" in alerts and "modality" in alerts:
            break
        assert time.monotonic() < deadline, (viewed, alerts)
        time.sleep(0.2)
    logins = _audit(archive.data, "--identity", "CN=ws1", "--type", "user-authentication")
    assert "ws1" in logins


def test_malformed_length_cross_origin_post_and_no_version_banner(archive: Archive) -> None:
    """Issue 14 (7) and 17 (7): the listener answers 400 to ``Content-Length: abc`` (no
    traceback, no empty reply), refuses a POST from another origin, names no versions."""
    import socket

    def raw(request: bytes) -> bytes:
        with socket.create_connection((HOST, archive.viewer_port), timeout=20) as plain, \
                archive.context("ws1").wrap_socket(plain) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data

    bad = raw(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n"
              b"Connection: close\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400 "), bad[:200]
    forged = raw(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://127.0.0.1:1\r\n"
                 b"Sec-Fetch-Site: same-site\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert forged.startswith(b"HTTP/1.1 403 "), forged[:200]
    page = raw(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    head = page.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    assert page.startswith(b"HTTP/1.1 200 ") and "\r\nserver: securepacs\r\n" in head, head
    assert "python" not in head and "basehttp" not in head
    assert "referrer-policy: same-origin" in head and "x-frame-options: deny" in head
