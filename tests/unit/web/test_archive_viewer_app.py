"""The viewer app in archive mode, in process: the archive catalog over a real SQLite index
and blob folder (newest first, search, the list cap, series and images), and the identity
check that replaces the loopback token (FIND and GET needed)."""

from __future__ import annotations

import json
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from factories import make_dataset  # noqa: E402
from securepacs.blobs.filesystem import FileBlobStore  # noqa: E402
from securepacs.index.repository import SqlIndex  # noqa: E402
from securepacs.model.identity import Identity, Permission  # noqa: E402
from securepacs.services.archive_view import ArchiveCatalog  # noqa: E402
from securepacs.services.ingest import IngestService, Received  # noqa: E402
from securepacs.web.viewer import IDENTITY_KEY, ViewerConfig, create_app  # noqa: E402


def _store(service: IngestService, **kwargs: Any) -> None:
    ds = make_dataset(**kwargs)
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    group_length = int.from_bytes(raw[140:144], "little")
    service.store(Received(raw[144 + group_length:], ds.SOPClassUID, ds.SOPInstanceUID,
                           ds.file_meta.TransferSyntaxUID, "TESTSCU"))


@pytest.fixture
def catalog(tmp_path: Path) -> ArchiveCatalog:
    index = SqlIndex(f"sqlite:///{tmp_path / 'index.sqlite'}")
    index.create_schema()
    blobs = FileBlobStore(tmp_path / "blobs")
    service = IngestService(index, blobs)
    for n in (2, 1, 3):  # stored out of order: the viewer sorts by Instance Number
        _store(service, patient_id="P1", patient_name="Doe^Jane", study_uid="1.2.3.1",
               series_uid="1.2.3.1.1", instance_number=n, study_date="20240115", rows=32,
               columns=32)
    _store(service, patient_id="P2", patient_name="Roe^Richard", study_uid="1.2.3.2",
           series_uid="1.2.3.2.1", study_date="20250301")
    _store(service, patient_id="P3", patient_name="Poe^Edgar", study_uid="1.2.3.3",
           series_uid="1.2.3.3.1", study_date="20230601")
    return ArchiveCatalog(index, blobs, name="TEST archive", list_limit=2)


def test_catalog_lists_newest_first_searches_and_reads(catalog: ArchiveCatalog) -> None:
    listing = catalog.search()
    assert [s.patient_id for s in listing.studies] == ["P2", "P1"]  # limit 2, newest first
    assert listing.matched == 3 and not listing.capped
    assert listing.images["1.2.3.1"] == 3
    assert [s.patient_id for s in catalog.search("doe").studies] == ["P1"]
    assert [s.patient_id for s in catalog.search("P3").studies] == ["P3"]
    assert catalog.search("*").matched == 3  # wildcard characters typed are dropped
    series = catalog.series("1.2.3.1.1")
    assert [i.instance_number for i in series.instances] == [1, 2, 3]
    assert series.images == 3 and series.instances[0].tags["PatientID"] == "P1"
    assert catalog.study_of("1.2.3.1.1").patient_name == "Doe^Jane"
    ds = catalog.dataset(series.instances[0].path)
    assert ds.InstanceNumber == 1 and ds.pixel_array.shape == (32, 32)
    with pytest.raises(KeyError):
        catalog.series("9.9")
    with pytest.raises(KeyError):
        catalog.study("9.9")


def test_the_list_looks_at_recent_dates_first(catalog: ArchiveCatalog) -> None:
    recent = ArchiveCatalog(catalog._index, catalog._blobs, list_limit=1,
                            today=lambda: date(2025, 3, 10))
    listing = recent.search()
    assert [s.patient_id for s in listing.studies] == ["P2"]
    assert listing.matched == 1 and listing.since == "20250207"
    wider = ArchiveCatalog(catalog._index, catalog._blobs, list_limit=2,
                           today=lambda: date(2025, 3, 10))
    assert [s.patient_id for s in wider.search().studies] == ["P2", "P1"]
    assert wider.search().since == "20200306"  # 31 and 366 days held 1 study: 5 years


def _client(catalog: ArchiveCatalog, identity: Identity | None) -> TestClient:
    app = create_app(ViewerConfig.for_archive(catalog))

    async def with_identity(scope: Any, receive: Any, send: Any) -> None:
        if identity is not None:
            scope[IDENTITY_KEY] = identity
        await app(scope, receive, send)

    return TestClient(with_identity, base_url="https://archive.example:2764")


def test_archive_pages_need_an_identity_with_find_and_get(catalog: ArchiveCatalog) -> None:
    reader = Identity("ws1", 1, permissions=frozenset({Permission.FIND, Permission.GET}))
    with _client(catalog, reader) as client:
        home = client.get("/")
        assert home.status_code == 200 and home.headers["cache-control"] == "no-store"
        assert "Roe Richard" in home.text and "Poe Edgar" not in home.text
        assert "2 of 3 studies" in home.text
        assert "Poe Edgar" in client.get("/?q=poe").text
        study = client.get("/study/1.2.3.1")
        assert study.status_code == 200 and 'href="series/1.2.3.1.1"' in study.text
        data = json.loads(client.get("/api/series/1.2.3.1.1").text)
        assert len(data["slices"]) == 3
        png = client.get("/render/1.2.3.1.1/0/0")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        assert client.get("/unlock").status_code in (404, 405)
        assert client.get("/import").status_code == 404
        assert client.get("/study/9.9").status_code == 404
    finder = Identity("find-only", 2, permissions=frozenset({Permission.FIND}))
    with _client(catalog, finder) as client:
        refused = client.get("/")
        assert refused.status_code == 403 and "GET" in refused.text
        assert "Doe" not in refused.text
        assert client.get("/render/1.2.3.1.1/0/0").status_code == 403
        assert client.get("/static/viewer.js").status_code == 200
    with _client(catalog, None) as client:
        assert client.get("/").status_code == 403
