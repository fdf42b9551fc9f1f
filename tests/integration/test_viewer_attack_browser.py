"""A page on another loopback port against ``securepacs view`` (issue 14, item 7), in a real
browser (Debian chromium driven by Playwright).

The attack as reported: the user opens the viewer, then (in the same browser) a page served
by another program on 127.0.0.1. Cookies ignore the port, so that page's server received
``securepacs_view=...`` and replayed it; and the page auto-submitted a form to ``/import``.
Here the attacker's server records every Cookie header it gets, its page tries to read the
viewer with ``fetch`` and posts a forged import, even knowing the viewer's secret path (the
worst case: defence in depth behind the path-scoped cookie).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_viewer_browser import Viewer, browser  # noqa: F401 - the module's browser fixture

from factories import write_study

pytestmark = [pytest.mark.integration]


class Attacker(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, viewer_base: str):
        self.viewer_base = viewer_base
        self.cookies: list[str] = []
        super().__init__(("127.0.0.1", 0), _AttackerPage)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _AttackerPage(BaseHTTPRequestHandler):
    server: Attacker

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.server.cookies.append(self.headers.get("Cookie") or "")
        base = self.server.viewer_base
        if self.path.startswith("/read"):
            body = f"""<!doctype html><title>reading</title><script>
fetch("{base}/", {{credentials: "include"}}).then(r => r.text())
  .then(t => {{ document.title = t.includes("Plain") ? "READ" : "other"; }})
  .catch(() => {{ document.title = "blocked"; }});
</script>"""
        else:
            body = f"""<!doctype html><title>forging</title>
<form id="f" method="post" action="{base}/import">
<input name="from" value="P1"><input name="patient_id" value="FORGED"></form>
<img src="{self.server.url}/pixel.png"><script>document.getElementById("f").submit()</script>"""
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def attacked(tmp_path: Path) -> Iterator[tuple[Viewer, Attacker]]:
    folder = tmp_path / "plain"
    write_study(folder, 1, patient_id="P1", patient_name="Plain^Pat")
    viewer = Viewer(folder)
    attacker = Attacker(viewer.base)
    thread = threading.Thread(target=attacker.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield viewer, attacker
    finally:
        attacker.shutdown()
        attacker.server_close()
        viewer.stop()


def test_a_page_on_another_loopback_port_gets_no_cookie_cannot_read_or_import(
        browser, attacked) -> None:  # noqa: ANN001, F811
    viewer, attacker = attacked
    page = browser.new_page()
    try:
        page.goto(viewer.url)  # the user opens the viewer: the session cookie is set
        assert "Plain Pat" in page.inner_text("main")

        evil = browser.new_page()
        evil.goto(attacker.url + "/read")
        evil.wait_for_function("document.title !== 'reading'")
        assert evil.title() == "blocked"  # no CORS: the study list cannot be read
        evil.goto(attacker.url + "/forge")
        evil.wait_for_load_state()
        evil.wait_for_url(viewer.base + "/import")
        assert "Refused" in evil.inner_text("main")
        evil.close()

        assert attacker.cookies and not any("securepacs" in c for c in attacker.cookies), \
            attacker.cookies
        # no import was started: the status page sends the user back to the form
        page.goto(viewer.base + "/import/status")
        assert page.url == viewer.base + "/import"
        assert page.locator("#import-form").count() == 1
        # the user's own form still works (same origin, CSRF token in the form): the import
        # starts, and fails only because this viewer has no destination to send to
        page.fill("#patient_id", "N1")
        page.click("#send")
        page.wait_for_url(viewer.base + "/import/status")
        page.locator("#error").wait_for()
        assert "Import failed" in page.inner_text("main")
    finally:
        page.close()
