"""The disc viewer in Chromium (issue 13): time from the password to the first image of a
500-image disc, and the scroll rate through its series, from file:// as a user opens it.

The disc is made by ``securepacs media create --password-file`` (PBKDF2-SHA256, 600,000
iterations); Debian chromium is driven by Playwright; the folder is chosen through the page's
``<input webkitdirectory>`` (Chromium cannot read file:// siblings by itself). Times are the
page's own ``performance.now()`` (test hook): submit of the password -> first image drawn;
then the time until the page has checked every file in the background (it names damaged
ones); then scroll = images shown one after the other (each: read, decrypt, parse, decode,
render, draw), first pass and second pass (decrypted files kept in memory when they fit).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT, write_images

Log = Callable[[str], None]
PASSWORD = "Bench-viewer-passphrase: walnut harbour 9 violet"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


def _disc(work: Path, count: int, log: Log) -> Path:
    disc = work / f"viewer-disc-{count}"
    if (disc / "INDEX.HTM").exists():
        return disc
    shutil.rmtree(disc, ignore_errors=True)
    src = work / f"viewer-src-{count}"
    if not src.exists():
        write_images(src, count, rows=512, cols=512)
    pw = work / "viewer-pw.txt"
    pw.write_text(PASSWORD + "\n")
    log(f"media-viewer: making a {count}-image disc (512x512x16 bit)")
    done = subprocess.run([sys.executable, "-m", "securepacs.cli", "media", "create", str(src),
                           "--out", str(disc), "--password-file", str(pw)],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"media create failed: {done.stderr[-800:]}")
    return disc


def _wait(page: Any, test: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(test)
        if value:
            return value
        page.wait_for_timeout(20)
    raise RuntimeError(f"timed out waiting for {test}")


def _round(context: Any, disc: Path, count: int) -> dict[str, Any]:
    page = context.new_page()
    try:
        page.goto((disc / "INDEX.HTM").as_uri())
        page.evaluate("window.__discviewerTest.ready")
        page.set_input_files("#folder-input", str(disc))
        page.wait_for_selector("#password", state="visible", timeout=60_000)
        page.fill("#password", PASSWORD)
        page.click("#unlock")
        state = _wait(page, "(() => { const s = window.__discviewerTest.state(); "
                            "return (s.shown || s.message) ? s : null; })()")
        if state["message"]:
            raise RuntimeError(state["message"])
        first_ms = state["shown"]["at"] - state["unlockStarted"]
        checked = _wait(page, "(() => { const s = window.__discviewerTest.state(); "
                              "return s.checkedAll ? s : null; })()", timeout=600)
        checked_ms = checked["checkedAt"] - state["unlockStarted"]
        key = page.evaluate("document.querySelector('.series-button').dataset.key")
        passes = []
        for _ in range(2):
            ms = page.evaluate("""async ([key, n]) => {
                const t0 = performance.now();
                for (let i = 0; i < n; i++) await window.__discviewerTest.show(key, i, 0);
                return performance.now() - t0; }""", [key, count])
            passes.append(count / (ms / 1000))
        return {"kind": "media-viewer", "images": count, "first_image_s": first_ms / 1000,
                "unlock_s": state.get("unlockMs", 0) / 1000, "checked_all_s": checked_ms / 1000,
                "scroll_cold_img_s": passes[0],
                "scroll_warm_img_s": passes[1]}
    finally:
        page.close()


def media_viewer(work: Path, count: int, rounds: int, log: Log) -> list[dict[str, Any]]:
    """`rounds` fresh page loads of one disc in one Chromium; one result row per round."""
    from playwright.sync_api import sync_playwright

    disc = _disc(work, count, log)
    rows = []
    profile = Path(tempfile.mkdtemp(prefix="bench-chromium-"))
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(profile), executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                for n in range(rounds):
                    row = _round(context, disc, count)
                    log(f"media-viewer round {n + 1}: first image {row['first_image_s']:.2f} s, "
                        f"scroll {row['scroll_cold_img_s']:.0f} img/s cold, "
                        f"{row['scroll_warm_img_s']:.0f} warm")
                    rows.append(row)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return rows
