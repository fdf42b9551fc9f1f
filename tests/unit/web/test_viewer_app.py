"""The viewer app in process (Starlette's TestClient): the session key, the loopback Host
check, unlocking, series JSON, rendering errors shown per image, and an ISO image."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom import dcmread

pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from factories import make_dataset, write_study  # noqa: E402
from mediafixtures import FAST_ITERATIONS, PASSWORD  # noqa: E402
from securepacs.services.media import create_media  # noqa: E402
from securepacs.web.viewer import ViewerConfig, create_app  # noqa: E402

BASE = "http://127.0.0.1:8123"


def _client(media: Path) -> tuple[TestClient, ViewerConfig]:
    """A client of the session's own origin and path (as the browser the CLI opened)."""
    config = ViewerConfig(media)
    return TestClient(create_app(config), base_url=BASE + config.prefix,
                      headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"}), config


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    first = dcmread(write_study(src, 2, patient_id="P7", patient_name="Iso^Ivy")[0])
    broken = make_dataset(patient_id="P7", patient_name="Iso^Ivy", instance_number=3,
                          study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID)
    broken.PixelData = b"\x00\x01"  # far too short for 16 x 16 x 16 bits
    broken.save_as(src / "broken.dcm", enforce_file_format=True)
    target = tmp_path / "disc.iso"
    create_media(folders=[src], iso=target, password=PASSWORD, at=datetime.now(UTC),
                 iterations=FAST_ITERATIONS)
    return target


def test_session_key_and_host_are_required(iso: Path) -> None:
    client, config = _client(iso)
    with client:
        assert client.get("/").status_code == 403
        assert client.get(f"/?token={config.token}x", follow_redirects=False).status_code == 403
        client.cookies.set(config.cookie, config.token)
        evil = client.get("/", headers={"Host": "attacker.example:8123"})
        assert evil.status_code == 403
        client.cookies.clear()
        first = client.get(f"/?token={config.token}", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == config.prefix + "/"
        assert "samesite=strict" in first.headers["set-cookie"].lower()
        client.cookies.clear()
        client.cookies.set(config.cookie, "nope")
        assert client.post("/unlock", data={"csrf": config.csrf, "password": "x"}).status_code == 403
        assert client.get("/static/viewer.js").status_code == 200


def test_unlock_browse_and_a_broken_image(iso: Path) -> None:
    client, config = _client(iso)
    with client:
        client.get(f"/?token={config.token}")
        assert client.get("/api/series/1.2.3").status_code == 401
        wrong = client.post("/unlock", data={"csrf": config.csrf, "password": "wrong but long enough"})
        assert wrong.status_code == 401 and "does not open" in wrong.text
        assert client.post("/unlock", data={"csrf": config.csrf}).status_code == 400
        page = client.post("/unlock", data={"csrf": config.csrf, "password": PASSWORD})
        assert page.status_code == 200 and "Iso Ivy" in page.text and "ID P7" in page.text
        catalog = client.app.state.viewer.catalog  # type: ignore[attr-defined]
        (series,) = catalog.studies[0].series
        data = client.get(f"/api/series/{series.uid}").json()
        assert [s["i"] for s in data["slices"]] == [0, 1, 2]
        assert data["instances"][2]["tags"]["InstanceNumber"] == "3"
        good = client.get(f"/render/{series.uid}/0/0?wc=100&ww=200")
        assert good.headers["content-type"] == "image/png" and good.headers["x-window"] == "100,200"
        assert good.headers["cache-control"] == "no-store"
        bad = client.get(f"/render/{series.uid}/2/0")
        assert bad.status_code == 422 and "cannot decode the pixel data" in bad.text
        assert client.get(f"/render/{series.uid}/9/0").status_code == 404
        assert client.get(f"/thumb/{series.uid}").status_code == 200
        form = client.get("/import")
        assert "P7" in form.text and "not configured" in form.text
        started = client.post("/import", data={"csrf": config.csrf, "from": "P7", "patient_id": "N1"})
        assert started.status_code == 200  # the status page, after the redirect
        for _ in range(50):
            status = client.get("/import/status")
            if "Import failed" in status.text:
                break
        assert "no import destination is configured" in status.text
        bad_form = client.post("/import", data={"csrf": config.csrf, "issuer": "X"})
        assert bad_form.status_code == 400 and "--issuer needs --patient-id" in bad_form.text


def test_unlock_with_a_key_file(tmp_path: Path, pki) -> None:  # noqa: ANN001
    from mediafixtures import rsa_holder

    doctor = rsa_holder(tmp_path / "keys", "doctor", pki)
    src = tmp_path / "src"
    write_study(src, 1, patient_id="K1")
    disc = tmp_path / "disc"
    create_media(folders=[src], out_dir=disc, recipients=[doctor.cert_path], at=datetime.now(UTC))
    client, config = _client(disc)
    with client:
        client.get(f"/?token={config.token}")
        missing = client.post("/unlock", data={"csrf": config.csrf, "key_path": str(tmp_path / "nope.pem")})
        assert missing.status_code == 400 and "nope.pem" in missing.text
        page = client.post("/unlock", data={"csrf": config.csrf, "key_path": str(doctor.combined_path)})
        assert page.status_code == 200 and "ID K1" in page.text
