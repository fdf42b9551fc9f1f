"""``securepacs view`` in a real browser (issue 6): Debian chromium driven by Playwright.

Encrypted media is made at test time (one file damaged), the viewer runs as a program on
loopback with the test PKI's client certificate, and chromium (no browser download:
/usr/bin/chromium) types the password, browses, scrolls, changes the window, and imports into
our own ``securepacs serve``; the server's copy is read back with C-GET. Every wait is bounded.
"""

from __future__ import annotations

import io
import os
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import HOST, ROOT, SECUREPACS, make_server
from importcheck import check_reconciled, held, make_disc

from mediafixtures import PASSWORD

pytestmark = [pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 15_000

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                     "(pip install -e '.[test]')")
Image = pytest.importorskip("PIL.Image")
ImageStat = pytest.importorskip("PIL.ImageStat")


class Viewer:
    """``securepacs view MEDIA --no-browser`` as a child process; `url` carries the token."""

    def __init__(self, media: Path, *extra: object):
        self.proc = subprocess.Popen(
            [*SECUREPACS, "view", str(media), "--no-browser", *(str(e) for e in extra)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout],  # type: ignore[union-attr]
                         daemon=True).start()
        self.output: list[str] = []
        while True:
            try:
                line = lines.get(timeout=30)
            except queue.Empty:
                self.stop()
                raise AssertionError(f"the viewer did not start: {self.output}") from None
            self.output.append(line)
            found = re.match(r"Viewer: (http://127\.0\.0\.1:\d+/s/\w+/\?token=\S+)", line)
            if found:
                self.url = found.group(1)
                self.base = self.url.split("/?", 1)[0]
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed (scripts/install installs it)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as p:
        try:
            context = p.chromium.launch_persistent_context(
                str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 900}, timeout=30_000)
        except playwright_api.Error as exc:
            pytest.skip(f"chromium cannot start here: {str(exc).splitlines()[0]}")
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def disc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return make_disc(tmp_path_factory.mktemp("media"), corrupt=True)


def not_blank(png: bytes) -> tuple[float, int]:
    picture = Image.open(io.BytesIO(png)).convert("L")
    stat = ImageStat.Stat(picture)
    return stat.stddev[0], picture.getextrema()[1]


def test_wrong_password_shows_the_error_and_no_images(browser, disc) -> None:  # noqa: ANN001
    viewer = Viewer(disc[0])
    try:
        page = browser.new_page()
        page.goto(viewer.url)
        page.fill("#password", "certainly not the password")
        page.click("#open")
        error = page.locator("#error")
        error.wait_for()
        assert "the password does not open this media" in error.inner_text()
        assert page.locator("tr.series").count() == 0
        assert page.locator("img").count() == 0
        page.close()
    finally:
        viewer.stop()


def test_view_scroll_window_and_import(browser, disc, pki, tmp_path: Path) -> None:  # noqa: ANN001
    media, uids = disc
    server = make_server(tmp_path, pki).start()
    viewer = Viewer(media, "--server", f"{HOST}:{server.port}", "--aec", "SECUREPACS",
                    "--cert", pki.client.cert, "--key", pki.client.key, "--ca", pki.ca_cert)
    try:
        page = browser.new_page()
        page.goto(viewer.url)
        page.fill("#password", PASSWORD)
        page.click("#open")
        # the study list: both patients, the damaged file named, the rest viewable
        page.locator("section.study").first.wait_for()
        text = page.inner_text("main")
        assert "Doe Jane" in text and "ID PAT001" in text and "2024-01-15" in text
        assert "Roe Richard" in text and "ID PAT002" in text
        errors = page.locator("#media-errors")
        assert "1 file(s) could not be read" in errors.inner_text()
        assert page.locator("section.study").first.locator(".count").first.inner_text() == "7 image(s)"
        thumbs = page.locator("img.thumb")
        assert thumbs.count() == 3
        page.wait_for_function("Array.from(document.querySelectorAll('img.thumb'))"
                               ".every(i => i.complete && i.naturalWidth > 0)")

        # the first CT series: image, scroll, window presets and drag
        page.locator("a.open-series").first.click()
        page.locator('#image[data-index="0"]').wait_for(state="attached")
        assert page.inner_text("#instance-number") == "1"
        std, brightest = not_blank(page.locator("#stage").screenshot())
        assert std > 10 and brightest > 100, (std, brightest)
        assert "PatientID" in page.inner_text("#tags")
        box = page.locator("#stage").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, 120)
        page.wait_for_function("document.getElementById('instance-number').textContent === '2'")
        page.locator('#image[data-index="1"]').wait_for(state="attached")
        page.click("text=Lung")
        page.wait_for_function("document.getElementById('window').textContent === 'W 1500 L -600'")
        before = page.inner_text("#window")
        page.mouse.move(box["x"] + 200, box["y"] + 200)
        page.mouse.down()
        page.mouse.move(box["x"] + 300, box["y"] + 260, steps=5)
        page.mouse.up()
        page.wait_for_function(f"document.getElementById('window').textContent !== '{before}'")
        page.click("#zoom-in")
        assert "scale(1.25)" in (page.get_attribute("#image", "style") or "")

        # the multi-frame instance: its frames are slices of their own
        page.goto(viewer.base + "/")
        page.locator("a.open-series").nth(1).click()
        page.wait_for_function("document.getElementById('position').textContent.includes('frame 1 of 4')")
        page.locator("#slider").fill("3")
        page.wait_for_function("document.getElementById('position').textContent.includes('frame 4 of 4')")
        std, _ = not_blank(page.locator("#stage").screenshot())
        assert std > 5

        # import PAT001 with a new identity; the form shows the media's beside the new one
        page.goto(viewer.base + "/")
        page.click("#import-link")
        assert "OLDSITE" in page.inner_text("#import-form")
        assert f"SECUREPACS at {HOST}:{server.port}" in page.inner_text("#destination")
        page.select_option("#from", "PAT002")
        assert page.inner_text("#old-id") == "PAT002" and page.inner_text("#old-name") == "Roe Richard"
        page.select_option("#from", "PAT001")
        assert page.inner_text("#old-id") == "PAT001" and page.inner_text("#old-issuer") == "OLDSITE"
        page.fill("#patient_id", "MRN-1234")
        page.fill("#issuer", "HOSP-B")
        page.click("#send")
        page.locator("#import-result").wait_for(timeout=60_000)
        assert page.get_attribute("#import-result", "data-state") == "done", page.inner_text("main")
        assert "sent 4, already present 0, failed 0, not sent 0" in page.inner_text("#summary")
        page.close()
    finally:
        viewer.stop()
        try:
            mine = {uid for uid, pid in uids.items() if pid == "PAT001"}
            study_uid = _study_uid(server, pki, media)
            got = held(server.port, pki, study_uid)
        finally:
            server.stop()
    assert set(got) == mine
    for ds in got.values():
        check_reconciled(ds, new_id="MRN-1234", issuer="HOSP-B", old_id="PAT001",
                         old_issuer="OLDSITE")


def _study_uid(server, pki, media: Path) -> str:  # noqa: ANN001
    from securepacs.services.media import keyring_from
    from securepacs.services.media_view import open_catalog

    with open_catalog(media, keyring_from(password=PASSWORD)) as catalog:
        return next(s.uid for s in catalog.studies if s.patient_id == "PAT001")
