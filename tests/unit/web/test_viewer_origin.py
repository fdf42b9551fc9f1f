"""The local viewer against another web server on loopback (issue 14, item 7): cookies
ignore the port, so the session cookie must be scoped to the session's secret path, and
every state-changing request must come from the viewer's own origin with the form's CSRF
token. The archive viewer gets the same origin check."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from factories import write_study  # noqa: E402
from securepacs.web.viewer import ViewerConfig, create_app  # noqa: E402

BASE = "http://127.0.0.1:8123"
OWN = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    src = tmp_path / "src"  # a plain folder of DICOM files: opens without a key
    write_study(src, 1, patient_id="P1", patient_name="Plain^Pat")
    return src


def test_the_session_cookie_is_named_and_scoped_per_session(plain: Path) -> None:
    one, two = ViewerConfig(plain), ViewerConfig(plain)
    assert one.prefix != two.prefix and one.cookie != two.cookie
    with TestClient(create_app(one), base_url=BASE) as client:
        first = client.get(f"{one.prefix}/?token={one.token}", follow_redirects=False)
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"{one.cookie}=") and f"Path={one.prefix}/" in cookie
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        # what a page on another port of 127.0.0.1 would see: nothing under its own paths
        assert client.get("/").status_code == 404
        assert client.get("/?token=" + one.token).status_code == 404
        home = client.get(f"{one.prefix}/")
        assert home.status_code == 200 and "Plain Pat" in home.text
        assert home.headers["referrer-policy"] == "same-origin"
        assert home.headers["cross-origin-resource-policy"] == "same-origin"
        assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
        assert f'<base href="{one.prefix}/">' in home.text


@pytest.mark.parametrize(("headers", "why"), [
    ({"Origin": "http://127.0.0.1:9999", "Sec-Fetch-Site": "same-site"}, "same-site"),
    ({"Origin": "http://127.0.0.1:9999"}, "another origin"),
    ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, "cross-site"),
    ({}, "without an Origin"),
])
def test_a_forged_import_from_another_origin_is_refused(plain: Path, headers: dict[str, str],
                                                        why: str) -> None:
    config = ViewerConfig(plain)
    with TestClient(create_app(config), base_url=BASE + config.prefix) as client:
        client.get(f"/?token={config.token}")
        forged = client.post("/import", data={"csrf": config.csrf, "from": "P1",
                                              "patient_id": "FORGED"}, headers=headers)
        assert forged.status_code == 403 and why in forged.text
        assert client.app.state.viewer.job is None  # type: ignore[attr-defined]


def test_the_import_form_needs_its_csrf_token(plain: Path) -> None:
    config = ViewerConfig(plain)
    with TestClient(create_app(config), base_url=BASE + config.prefix, headers=OWN) as client:
        client.get(f"/?token={config.token}")
        form = client.get("/import")
        assert f'name="csrf" value="{config.csrf}"' in form.text
        for token in ("", "0" * 64):
            refused = client.post("/import", data={"csrf": token, "from": "P1",
                                                   "patient_id": "N1"})
            assert refused.status_code == 403
        assert client.app.state.viewer.job is None  # type: ignore[attr-defined]
        started = client.post("/import", data={"csrf": config.csrf, "from": "P1",
                                               "patient_id": "N1"}, follow_redirects=False)
        assert started.status_code == 303
        assert started.headers["location"] == f"{config.prefix}/import/status"
        assert client.app.state.viewer.job is not None  # type: ignore[attr-defined]


def test_archive_viewer_refuses_cross_origin_state_changes() -> None:
    from securepacs.model.identity import ALL_PERMISSIONS, Identity
    from securepacs.services.archive_view import ArchiveCatalog

    class NoStudies(ArchiveCatalog):
        def __init__(self) -> None:
            self.name = "test archive"

        def close(self) -> None:
            pass

    app = create_app(ViewerConfig.for_archive(NoStudies()))
    identity = Identity(name="ws1", organization="C", group="g", permissions=ALL_PERMISSIONS,
                        serial=1)

    async def with_identity(scope, receive, send):  # noqa: ANN001, ANN202
        scope["securepacs.identity"] = identity
        await app(scope, receive, send)

    with TestClient(with_identity, base_url="https://127.0.0.1:8443") as client:
        refused = client.post("/", headers={"Origin": "https://127.0.0.1:1234",
                                            "Sec-Fetch-Site": "same-site"})
        assert refused.status_code == 403 and "same-site" in refused.text
