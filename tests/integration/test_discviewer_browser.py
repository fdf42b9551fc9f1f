"""The disc viewer (INDEX.HTM on the disc) in real browsers, opened from file:// (issue 13).

Debian ``chromium`` through Playwright, and Debian ``firefox-esr`` through puppeteer-core over
WebDriver BiDi (``discviewer/drivers/firefox.mjs``; no browser download). One browser start per
browser. Chromium cannot read the disc by itself (fetch of file:// is refused): the test
chooses the disc folder as a user would; Firefox opens the DICOMDIR by itself. Decoded pixel
values (the page's test hook) are compared with pydicom's. Every wait is bounded.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from discviewer_discs import MARKER, damage, media_create, openssl_disc, sources, uid_of
from importcheck import check_reconciled
from pydicom import dcmread
from stowserver import stow_server

from mediafixtures import PASSWORD, rsa_holder
from securepacs.media import viewer
from securepacs.services.media_import import Reconciliation, reconcile

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
FIREFOX = "/usr/bin/firefox-esr"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
OPENSSL_PASSWORD = "open sesame \\ with spaces"
WAIT_S = 30

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def _need_viewer() -> None:
    try:
        viewer.viewer_files()
    except Exception as exc:  # noqa: BLE001 - the message says how to build it
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def discs(tmp_path_factory: pytest.TempPathFactory, pki) -> dict[str, Any]:  # noqa: ANN001
    _need_viewer()
    root = tmp_path_factory.mktemp("discviewer")
    src = sources(root / "src")
    pw = root / "pw.txt"
    pw.write_text(PASSWORD + "\n")
    ours = root / "ours"
    media_create(root / "src", ours, pw)
    images = sorted(p.relative_to(ours).as_posix() for p in ours.rglob("IM*") if p.is_file())
    damaged = root / "damaged"
    damage(ours, damaged, tampered=images[0], truncated=images[-1])
    doctor = rsa_holder(root / "doctor", "doctor", pki)
    pkcs1 = root / "pkcs1"
    made = subprocess.run([*_securepacs(), "media", "create", str(root / "src" / "other"), "--out",
                           str(pkcs1), "--recipient", str(doctor.cert_path), "--pkcs1"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    oaep = root / "oaep"  # made for the doctor's certificate: RSA-OAEP by default
    made = subprocess.run([*_securepacs(), "media", "create", str(root / "src" / "ct"), "--out",
                           str(oaep), "--recipient", str(doctor.cert_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    ossl = root / "openssl"
    openssl_disc([src["ct0"], src["ct1"], src["ct2"], src["j2k"]], ossl, OPENSSL_PASSWORD)
    for rel, data in viewer.viewer_files():  # the viewer, copied onto the disc by hand
        (ossl / rel).parent.mkdir(parents=True, exist_ok=True)
        (ossl / rel).write_bytes(data)
    lower = root / "lower"  # as an ISO 9660 image without Rock Ridge/Joliet mounts on Linux
    for path in sorted(ours.rglob("*")):
        if path.is_file():
            target = lower / path.relative_to(ours).as_posix().lower()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    uids = {role: uid_of(path) for role, path in src.items()}
    return {"lower": lower, "root": root, "src": src, "uids": uids, "ours": ours, "damaged": damaged,
            "tampered": images[0], "truncated": images[-1], "pkcs1": pkcs1, "openssl": ossl,
            "oaep": oaep, "doctor_key": doctor.key_path}


def _securepacs() -> list[str]:
    from discviewer_discs import SECUREPACS

    return SECUREPACS


def expected(path: Path, frame: int = 0) -> list[int]:
    """pydicom's pixel_array for one frame (pydicom 3 defaults), as a flat list."""
    ds = dcmread(path)
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[frame]
    return np.asarray(arr).ravel().tolist()


def url(disc: Path) -> str:
    page = disc / "INDEX.HTM"
    return (page if page.exists() else disc / "index.htm").as_uri()


# --------------------------------------------------------------------------- Chromium


class Chromium:
    def __init__(self, profile: Path):
        self.profile = profile
        self.requests: list[str] = []
        self.stow_bases: list[str] = []  # the addresses the user typed (import tests)
        self._pw = playwright_api.sync_playwright().start()
        self.context = self._pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            accept_downloads=True, ignore_https_errors=True)  # the test STOW server's certificate
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.context.close()
            self._pw.stop()

    def open(self, disc: Path, password: str | None, *, until: str = "thumbnails") -> Any:
        """The page with the disc chosen and (if given) the password typed; waits for `until`
        (a state key) or a message, bounded."""
        page = self.context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url(disc))
        page.evaluate("window.__discviewerTest.ready")
        assert page.is_visible("#step-folder"), "Chromium should ask for the disc folder"
        assert "Choose the disc folder" in page.inner_text("#step-folder")
        page.set_input_files("#folder-input", str(disc))
        if password is not None:
            page.wait_for_selector("#password", state="visible", timeout=WAIT_S * 1000)
            page.fill("#password", password)
            page.click("#unlock")
        state = wait_state(page, lambda s: s.get(until) or s["message"] or s["phase"] == "unsupported")
        assert not errors, errors
        return page, state


def wait_state(page: Any, done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        state = page.evaluate("window.__discviewerTest.state()")
        if done(state) or time.monotonic() > deadline:
            return state
        page.wait_for_timeout(100)


def wait_text(page: Any, selector: str, start: str) -> str:
    """The text of `selector` once it starts with `start` (polled: the page's CSP forbids
    the eval that wait_for_function uses), bounded."""
    deadline = time.monotonic() + WAIT_S
    text = page.inner_text(selector)
    while not text.startswith(start) and time.monotonic() < deadline:
        page.wait_for_timeout(100)
        text = page.inner_text(selector)
    return str(text)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (scripts/install --test installs it)")
    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.close()


def series_key(page: Any, text: str) -> str:
    key = page.evaluate("""(t) => [...document.querySelectorAll('.series-button')]
        .find((b) => b.closest('.study').textContent.includes(t))?.dataset.key""", text)
    assert key, f"no series under a study with {text!r}"
    return str(key)


def test_chromium_opens_our_disc_with_the_password(chromium: Chromium, discs: dict) -> None:
    page, state = chromium.open(discs["ours"], PASSWORD)
    assert state["phase"] == "open" and state["message"] == "" and state["problems"] == []
    listing = page.inner_text("#list")
    assert "ZEBULON" in listing.upper() and "DVTEST01" in listing and "12 images" in listing
    assert len(page.query_selector_all(".thumb canvas")) == state["series"] >= 4
    src, uids = discs["src"], discs["uids"]
    for role, frame in [("ct5", 0), ("j2k", 0), ("jls", 0), ("rle_rgb", 0), ("multiframe", 4)]:
        got = page.evaluate("([u, f]) => window.__discviewerTest.decoded(u, f)", [uids[role], frame])
        assert got["values"] == expected(src[role], frame), role
    # a CT series scrolled: arrow keys and the wheel
    ct = series_key(page, "Viewer test CT")
    page.click(f'.series-button[data-key="{ct}"]')
    wait_state(page, lambda s: s["shown"] and s["selected"] == ct and s["shown"]["index"] == 0)
    page.focus("#stage")
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    assert wait_state(page, lambda s: s["shown"]["index"] == 3)["shown"]["index"] == 3
    page.hover("#stage")
    page.mouse.wheel(0, 120)
    assert wait_state(page, lambda s: s["shown"]["index"] == 4)["shown"]["index"] == 4
    # a JPEG 2000 image and a multi-frame shown
    shown = page.evaluate("([k, i, f]) => window.__discviewerTest.show(k, i, f)",
                          [series_key(page, "Viewer test multi-frame"), 0, 3])
    assert shown["frames"] == 6 and shown["frame"] == 3 and shown["sopInstanceUid"] == uids["multiframe"]
    assert page.is_visible("#frame-row")
    state = wait_state(page, lambda s: s.get("checkedAll"))
    assert state["checkedAll"] and state["problems"] == []
    assert state["keyDerivations"] == 1  # one PBKDF2 for the whole disc (every file opened)
    page.close()


def test_chromium_refuses_the_wrong_password(chromium: Chromium, discs: dict) -> None:
    page, state = chromium.open(discs["ours"], "not the password")
    assert "password (or key) does not open this disc" in state["message"]
    assert page.is_hidden("#main") and state["series"] == 0
    assert "ZEBULON" not in page.inner_text("body").upper()
    page.close()


def test_chromium_names_tampered_and_truncated_files(chromium: Chromium, discs: dict) -> None:
    page, state = chromium.open(discs["damaged"], PASSWORD, until="checkedAll")
    problems = "\n".join(state["problems"])
    assert f"The file {discs['tampered']} was changed or damaged" in problems
    assert f"The file {discs['truncated']} is incomplete" in problems
    assert len(state["problems"]) == 2 and state["phase"] == "open"
    assert page.inner_text("#problems").count("The file") == 2
    got = page.evaluate("([u, f]) => window.__discviewerTest.decoded(u, f)",
                        [discs["uids"]["j2k"], 0])
    assert got["values"] == expected(discs["src"]["j2k"])  # the rest stays viewable
    page.close()


def test_chromium_says_when_the_recipient_cannot_be_used(chromium: Chromium, discs: dict) -> None:
    page, state = chromium.open(discs["pkcs1"], None)
    assert state["phase"] == "unsupported"
    assert "made for a certificate that a browser cannot use" in state["message"]
    assert "securepacs media extract" in state["message"]
    page.close()


def test_chromium_opens_a_certificate_disc_with_the_key_file(chromium: Chromium,
                                                            discs: dict) -> None:
    page = chromium.context.new_page()
    page.goto(url(discs["oaep"]))
    page.evaluate("window.__discviewerTest.ready")
    page.set_input_files("#folder-input", str(discs["oaep"]))
    page.wait_for_selector("#keyfile", state="visible", timeout=WAIT_S * 1000)
    assert page.is_hidden("#password")
    page.set_input_files("#keyfile", str(discs["doctor_key"]))
    page.click("#unlock")
    state = wait_state(page, lambda s: s.get("thumbnails") or s["message"])
    assert state["phase"] == "open" and state["message"] == "", state
    got = page.evaluate("([u, f]) => window.__discviewerTest.decoded(u, f)",
                        [discs["uids"]["ct7"], 0])
    assert got["values"] == expected(discs["src"]["ct7"])
    page.close()


def test_chromium_opens_a_disc_whose_names_show_in_lower_case(chromium: Chromium,
                                                             discs: dict) -> None:
    """index.htm loads viewer/viewer.js (its lower-case script reference) and the chosen
    folder's files are matched to the DICOMDIR's upper-case file IDs."""
    assert not (discs["lower"] / "VIEWER").exists()
    page, state = chromium.open(discs["lower"], PASSWORD, until="checkedAll")
    assert state["phase"] == "open" and state["problems"] == [], state
    assert page.evaluate("document.styleSheets.length") >= 1
    got = page.evaluate("([u, f]) => window.__discviewerTest.decoded(u, f)",
                        [discs["uids"]["jls"], 0])
    assert got["values"] == expected(discs["src"]["jls"])
    page.close()


def test_chromium_opens_a_disc_made_by_dcmtk_and_openssl(chromium: Chromium, discs: dict) -> None:
    page, state = chromium.open(discs["openssl"], OPENSSL_PASSWORD, until="checkedAll")
    assert state["phase"] == "open" and state["problems"] == [], state
    got = page.evaluate("([u, f]) => window.__discviewerTest.decoded(u, f)",
                        [discs["uids"]["ct2"], 0])
    assert got["values"] == expected(discs["src"]["ct2"])
    page.close()


NEW = {"patient_id": "NEWID77", "issuer": "OURSITE", "patient_name": "Newname^Zebulon",
       "birth_date": "19800202"}
_AUDIT_KEYS = {0x04000562, 0x04000563, 0x04000564}  # modification time, system, source


def _comparable(part10: bytes) -> dict[str, Any]:
    """The data set as DICOM JSON, without the audit fields that name the time and writer."""
    return _comparable_ds(dcmread(io.BytesIO(part10)))


def _comparable_ds(ds: Any) -> dict[str, Any]:
    """`_comparable` of a data set read already (its File Meta Information is not compared)."""
    for item in ds.get("OriginalAttributesSequence", []):
        for tag in _AUDIT_KEYS:
            if tag in item:
                del item[tag]
    return ds.to_json_dict(bulk_data_threshold=1 << 30)


def python_reconciled(path: Path) -> bytes:
    """What `securepacs media import` makes of the same image with the same new identity."""
    ds = dcmread(path)
    reconcile(ds, Reconciliation(**NEW, source="media"), at=datetime.now(UTC))
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def fill_import(page: Any) -> None:
    page.click("#import-button")
    page.wait_for_selector("#import-dialog[open]", timeout=WAIT_S * 1000)
    value = page.evaluate("""() => [...document.querySelectorAll('#import-patient option')]
        .find((o) => o.textContent.includes('DVTEST01')).value""")
    page.select_option("#import-patient", value)
    assert page.inner_text("#media-id") == "DVTEST01"
    page.fill("#new-id", NEW["patient_id"])
    page.fill("#new-issuer", NEW["issuer"])
    page.fill("#new-name", NEW["patient_name"])
    page.fill("#new-birth", NEW["birth_date"])


def test_chromium_import_saves_a_reconciled_zip_and_sends_by_stow(
        chromium: Chromium, discs: dict, pki) -> None:  # noqa: ANN001
    page, _state = chromium.open(discs["ours"], PASSWORD)
    fill_import(page)
    with page.expect_download(timeout=WAIT_S * 1000) as info:
        page.click("#save-zip")
    saved = Path(info.value.path())
    src, uids = discs["src"], discs["uids"]
    cts = {uids[f"ct{i}"]: src[f"ct{i}"] for i in range(12)}
    with zipfile.ZipFile(saved) as archive:
        assert archive.testzip() is None
        files = {n: archive.read(n) for n in archive.namelist()}
    assert sorted(files) == sorted(f"DICOM/{uid}.dcm" for uid in cts)
    for uid, path in cts.items():
        data = files[f"DICOM/{uid}.dcm"]
        ds = dcmread(io.BytesIO(data))
        check_reconciled(ds, new_id="NEWID77", issuer="OURSITE", old_id="DVTEST01", old_issuer="")
        assert ds.PixelData == dcmread(path).PixelData and ds.SOPInstanceUID == uid
        assert _comparable(data) == _comparable(python_reconciled(path))
    info.value.delete()

    present, refused = uids["ct0"], uids["ct1"]
    with stow_server(pki.server.cert, pki.server.key, token="tok-123", present={present},
                     refuse={refused}) as (base, server):
        chromium.stow_bases.append(base)
        page.fill("#stow-url", base)
        page.fill("#stow-token", "tok-123")
        page.click("#send-stow")
        summary = wait_text(page, "#import-status", "Sent:")
        assert summary == "Sent: 10. Already present: 1. Failed: 1.", summary
        assert refused in page.inner_text("#import-failed")
        assert all(r["authorization"] == "Bearer tok-123" and r["path"] == "/dicomweb/studies"
                   and r["content-type"].startswith("multipart/related")
                   and "application/dicom" in r["content-type"] for r in server.requests)
        assert set(server.stored) == set(cts) - {refused}
        for uid, data in server.stored.items():
            assert _comparable(data) == _comparable(files[f"DICOM/{uid}.dcm"])
    page.close()


# ------------------------------------------------- import into a real securepacs (DICOMweb)


@pytest.fixture(scope="module")
def receiving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real `securepacs serve` with DICOMweb on its own CA: an import token of a group that
    may only store, and a reader's certificate to look at what the server holds."""
    from catools import ca, data_server
    from harness import free_port

    tmp = tmp_path_factory.mktemp("receiving")
    data, clients = tmp / "data", tmp / "clients"
    ca(data, "init")
    ca(data, "group", "create", "imports", "--allow", "store")
    ca(data, "group", "create", "readers", "--allow", "find,get")
    ca(data, "issue", "client", "--name", "reader", "--org", "Receiving", "--group", "readers",
       "--out", str(clients))
    token = ca(data, "import-token", "--org", "Receiving", "--group", "imports",
               "--expires", "1h").stdout.strip().splitlines()[0]
    web = free_port()
    server = data_server(tmp, data, "serve", viewer_port=free_port(), dicomweb_port=web).start()
    try:
        yield {"server": server, "data": data, "token": token, "clients": clients,
               "base": f"https://127.0.0.1:{web}/dicomweb"}
    finally:
        server.stop()


def _held_by_dicomweb(receiving: dict[str, Any], study_uid: str) -> dict[str, Any]:
    """SOP Instance UID -> data set of the study as the server holds it (WADO-RS, reader)."""
    import requests
    from dicomweb_client import api as dicomweb_api

    session = requests.Session()
    session.trust_env = False
    clients = receiving["clients"]
    session.cert = (str(clients / "reader.pem"), str(clients / "reader.key"))
    session.verify = str(clients / "ca.pem")
    client = dicomweb_api.DICOMwebClient(receiving["base"], session=session)
    return {str(ds.SOPInstanceUID): ds for ds in client.retrieve_study(study_uid)}


def _media_import(disc: Path, tmp: Path, pki) -> dict[str, Any]:  # noqa: ANN001
    """`securepacs media import` of the disc's DVTEST01 with the NEW identity into another
    securepacs (DIMSE, the test PKI), read back with C-GET."""
    from harness import make_server
    from importcheck import held

    pw = tmp / "pw.txt"
    pw.write_text(PASSWORD + "\n")
    server = make_server(tmp, pki).start()
    try:
        done = subprocess.run(
            [*_securepacs(), "media", "import", str(disc), "--password-file", str(pw),
             "--patient-id", NEW["patient_id"], "--issuer", NEW["issuer"],
             "--patient-name", NEW["patient_name"], "--birth-date", NEW["birth_date"],
             "--media-patient-id", "DVTEST01", "--server", f"127.0.0.1:{server.port}",
             "--aec", "SECUREPACS", "--cert", str(pki.client.cert), "--key", str(pki.client.key),
             "--ca", str(pki.ca_cert)], capture_output=True, text=True, timeout=180, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        first = dcmread(next(iter(sorted((disc.parent / "src" / "ct").glob("*.dcm")))))
        return held(server.port, pki, str(first.StudyInstanceUID))
    finally:
        server.stop()


def test_chromium_imports_into_a_real_securepacs_by_stow_with_a_token(
        chromium: Chromium, discs: dict, receiving: dict, pki, tmp_path: Path) -> None:  # noqa: ANN001
    """Issue 13 end to end: the page sends the disc by STOW-RS to `securepacs serve`'s
    DICOMweb (origin null, CORS preflight, import token, TLS); what the server holds, the
    zip the page saves and what `securepacs media import` gives are the same data sets."""
    src, uids = discs["src"], discs["uids"]
    cts = {uids[f"ct{i}"]: src[f"ct{i}"] for i in range(12)}
    page, _state = chromium.open(discs["ours"], PASSWORD)
    fill_import(page)
    with page.expect_download(timeout=WAIT_S * 1000) as info:
        page.click("#save-zip")
    with zipfile.ZipFile(info.value.path()) as archive:
        saved = {n: archive.read(n) for n in archive.namelist()}
    info.value.delete()

    base, token = receiving["base"], receiving["token"]
    chromium.stow_bases.append(base)
    # Authorization and multipart/related make Chromium send a CORS preflight first (origin null)
    page.fill("#stow-url", base)
    page.fill("#stow-token", token[:-4] + "AAAA")  # a mistyped token: refused, and said so
    page.click("#send-stow")
    assert wait_text(page, "#import-status", "Sent:") == f"Sent: 0. Already present: 0. Failed: {len(cts)}."
    assert "HTTP 401 Unauthorized: the import token is not valid" in page.inner_text("#import-failed")
    page.evaluate("document.querySelector('#import-status').textContent = ''")
    page.fill("#stow-token", token)
    failures: list[str] = []  # why, when it does not work (e.g. ERR_INVALID_HTTP_RESPONSE)
    page.on("requestfailed", lambda r: failures.append(f"{r.method} {r.url} {r.failure}"))
    page.click("#send-stow")
    summary = wait_text(page, "#import-status", "Sent:")
    assert summary == f"Sent: {len(cts)}. Already present: 0. Failed: 0.", (
        summary, failures, page.inner_text("#import-failed"), receiving["server"].log()[-3000:])
    page.evaluate("document.querySelector('#import-status').textContent = ''")
    page.click("#send-stow")
    again = wait_text(page, "#import-status", "Sent:")
    assert again == f"Sent: 0. Already present: {len(cts)}. Failed: 0.", again
    assert page.inner_text("#import-failed").strip() == ""
    page.close()

    study_uid = str(dcmread(src["ct0"], stop_before_pixels=True).StudyInstanceUID)
    on_server = _held_by_dicomweb(receiving, study_uid)
    assert set(on_server) == set(cts)
    by_media_import = _media_import(discs["ours"], tmp_path, pki)
    assert set(by_media_import) == set(cts)
    for uid, path in cts.items():
        held = on_server[uid]
        check_reconciled(held, new_id="NEWID77", issuer="OURSITE", old_id="DVTEST01",
                         old_issuer="")
        assert held.PixelData == dcmread(path).PixelData
        reference = _comparable_ds(by_media_import[uid])
        assert _comparable_ds(held) == reference, uid
        assert _comparable(saved[f"DICOM/{uid}.dcm"]) == reference, uid

    # the audit trail of the receiving side: the token's login and the stored instances
    def audit(*args: str) -> str:
        done = subprocess.run([*_securepacs(), "audit", "--data-dir", str(receiving["data"]),
                               "list", *args], capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    token_id = token.split(".")[1]
    deadline = time.monotonic() + WAIT_S
    while True:
        logins = audit("--type", "user-authentication")
        stored = audit("--type", "instances-transferred", "--patient", "NEWID77")
        if f"import-token {token_id}" in logins and f"import-token {token_id}" in stored:
            break
        assert time.monotonic() < deadline, (logins, stored)
        time.sleep(0.2)


def test_chromium_kept_nothing_and_made_no_request(chromium: Chromium, discs: dict) -> None:
    chromium.close()
    assert chromium.requests
    others = [u for u in chromium.requests
              if not u.startswith(("file://", *chromium.stow_bases))]
    assert others == []  # only the disc, and the STOW-RS addresses typed in the import tests
    check_profile(chromium.profile, discs)


def check_profile(profile: Path, discs: dict) -> None:
    """No web storage entry for the disc's pages and no decrypted byte anywhere in the profile."""
    ct = dcmread(discs["src"]["ct5"])
    needles = [MARKER.encode(), MARKER.upper().encode(), ct.PixelData[1000:1064]]
    for path in profile.rglob("*"):
        rel = path.relative_to(profile).as_posix()
        assert not ("IndexedDB" in rel and "file_" in rel), rel
        assert not ("CacheStorage" in rel and path.is_file()), rel
        # Firefox: storage/default/file++++<path>/{idb,ls,cache}
        assert not ("storage/default/file+" in rel and any(f"/{kind}/" in rel + "/"
                    for kind in ("idb", "ls", "cache"))), rel
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert not any(n in data for n in needles), f"decrypted data in the profile: {rel}"
    for storage in [profile / "Default" / "Local Storage" / "leveldb"]:
        for path in storage.glob("*.log") if storage.exists() else []:
            assert b"file://" not in path.read_bytes(), path


# --------------------------------------------------------------------------- Firefox ESR


@pytest.fixture(scope="module")
def firefox(tmp_path_factory: pytest.TempPathFactory, discs: dict) -> dict[str, Any]:
    if not Path(FIREFOX).exists() or shutil.which("node") is None:
        pytest.skip("Debian firefox-esr or node is not installed (scripts/install --test)")
    driver = REPO / "discviewer" / "drivers" / "firefox.mjs"
    if not (REPO / "discviewer" / "node_modules" / "puppeteer-core").is_dir():
        pytest.skip("discviewer/node_modules is missing (discviewer/build.sh installs it)")
    profile = tmp_path_factory.mktemp("firefox-profile")
    uids = discs["uids"]
    cases = [
        {"url": url(discs["ours"]), "password": PASSWORD,
         "decoded": [[uids["j2k"], 0], [uids["multiframe"], 2], [uids["ct3"], 0]]},
        {"url": url(discs["ours"]), "password": "WRONG"},
        {"url": url(discs["openssl"]), "password": OPENSSL_PASSWORD, "decoded": [[uids["ct1"], 0]]},
        {"url": url(discs["damaged"]), "password": PASSWORD, "until": "checkedAll"},
        {"url": url(discs["pkcs1"])},
        {"url": url(discs["lower"]), "password": PASSWORD, "decoded": [[uids["ct4"], 0]]},
        {"url": url(discs["ours"]), "password": PASSWORD,
         "importZip": {"patient": "DVTEST01", "id": NEW["patient_id"], "issuer": NEW["issuer"],
                       "name": NEW["patient_name"], "birth": NEW["birth_date"]}},
        {"url": url(discs["oaep"]), "keyfile": str(discs["doctor_key"]),
         "decoded": [[uids["ct7"], 0]]},
    ]
    downloads = tmp_path_factory.mktemp("firefox-downloads")
    done = subprocess.run(["node", str(driver)], input=json.dumps({"profile": str(profile),
                          "executable": FIREFOX, "cases": cases,
                          "downloads": str(downloads)}), capture_output=True,
                          text=True, timeout=180, cwd=driver.parent, check=False,
                          env=dict(os.environ, MOZ_CRASHREPORTER_DISABLE="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    return {"results": json.loads(done.stdout), "profile": profile}


def test_firefox_opens_our_disc_by_itself(firefox: dict, discs: dict) -> None:
    ours = firefox["results"][0]
    assert ours["errors"] == [] and ours["state"]["phase"] == "open", ours
    assert ours["state"]["problems"] == [] and ours["state"]["series"] >= 4
    src = discs["src"]
    for got, (role, frame) in zip(ours["decoded"], [("j2k", 0), ("multiframe", 2), ("ct3", 0)],
                                  strict=True):
        assert got["values"] == expected(src[role], frame), role


def test_firefox_refuses_the_wrong_password(firefox: dict) -> None:
    wrong = firefox["results"][1]
    assert "password (or key) does not open this disc" in wrong["state"]["message"]
    assert wrong["state"]["series"] == 0


def test_firefox_opens_a_disc_made_by_dcmtk_and_openssl(firefox: dict, discs: dict) -> None:
    ossl = firefox["results"][2]
    assert ossl["state"]["phase"] == "open" and ossl["state"]["problems"] == [], ossl
    assert ossl["decoded"][0]["values"] == expected(discs["src"]["ct1"])


def test_firefox_names_damaged_files_and_refuses_pkcs1_discs(firefox: dict, discs: dict) -> None:
    damaged, pkcs1 = firefox["results"][3]["state"], firefox["results"][4]["state"]
    problems = "\n".join(damaged["problems"])
    assert f"The file {discs['tampered']} was changed or damaged" in problems
    assert f"The file {discs['truncated']} is incomplete" in problems
    assert damaged["phase"] == "open" and len(damaged["problems"]) == 2
    assert pkcs1["phase"] == "unsupported"
    assert "made for a certificate that a browser cannot use" in pkcs1["message"]


def test_firefox_opens_a_disc_whose_names_show_in_lower_case(firefox: dict,
                                                            discs: dict) -> None:
    lower = firefox["results"][5]
    assert lower["errors"] == [] and lower["state"]["phase"] == "open", lower
    assert lower["state"]["problems"] == []
    assert lower["decoded"][0]["values"] == expected(discs["src"]["ct4"])


def test_firefox_import_saves_a_reconciled_zip(firefox: dict, discs: dict) -> None:
    saved = firefox["results"][6]
    assert saved["errors"] == [] and saved["zip"], saved
    assert saved["importStatus"].startswith("Saved 12 image(s)"), saved["importStatus"]
    src, uids = discs["src"], discs["uids"]
    cts = {uids[f"ct{i}"]: src[f"ct{i}"] for i in range(12)}
    with zipfile.ZipFile(saved["zip"]) as archive:
        assert archive.testzip() is None
        files = {n: archive.read(n) for n in archive.namelist()}
    Path(saved["zip"]).unlink()  # decrypted: not left behind
    assert sorted(files) == sorted(f"DICOM/{uid}.dcm" for uid in cts)
    for uid, path in cts.items():
        data = files[f"DICOM/{uid}.dcm"]
        check_reconciled(dcmread(io.BytesIO(data)), new_id="NEWID77", issuer="OURSITE",
                         old_id="DVTEST01", old_issuer="")
        assert _comparable(data) == _comparable(python_reconciled(path))


def test_firefox_opens_a_certificate_disc_with_the_key_file(firefox: dict, discs: dict) -> None:
    keyed = firefox["results"][7]
    assert keyed["errors"] == [] and keyed["state"]["phase"] == "open", keyed
    assert keyed["state"]["message"] == ""
    assert keyed["decoded"][0]["values"] == expected(discs["src"]["ct7"])


def test_firefox_kept_nothing_and_made_no_request(firefox: dict, discs: dict) -> None:
    for result in firefox["results"]:  # data: URLs (a font Firefox itself loads) are no request
        others = [u for u in result["requests"] + result["resources"]
                  if not u.startswith(("file://", "data:"))]
        assert others == []
    check_profile(firefox["profile"], discs)
