"""DICOMweb of ``securepacs serve`` (issue 16), driven by ``dicomweb-client`` with certificates.

A real ``securepacs serve`` on a data folder with its own CA receives two studies from
DCMTK ``storescu`` over TLS; its DICOMweb listener (``dicomweb_port``) is then used by
``dicomweb-client`` (a requests session holding a client certificate): QIDO-RS at each
level with the C-FIND matching cases, WADO-RS of a study compared byte for byte with the
stored blobs, metadata and bulk data, frames of a multi-frame JPEG 2000 instance, rendered
and thumbnail images decoded by Pillow, STOW-RS of a folder found afterwards by DCMTK
``findscu``, a 300 MB object up and down under 200 MB of server memory, and Orthanc's
DICOMweb plugin as a second client. Refusals, CORS and import tokens:
``test_dicomweb_access.py``. Every wait is bounded.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import HOST, dcmtk, free_port, needs_dcmtk, tls_args

pytestmark = [pytest.mark.integration, needs_dcmtk]

pytest.importorskip("dicomweb_client.api")
requests = pytest.importorskip("requests")
Image = pytest.importorskip("PIL.Image")
np = pytest.importorskip("numpy")

from dicomwebarchive import Archive, running_archive  # noqa: E402

from factories import make_dataset, write_study  # noqa: E402


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    yield from running_archive(tmp_path_factory)


def _uids(archive: Archive) -> tuple[str, str]:
    return tuple(archive.studies)  # type: ignore[return-value]


# -- QIDO-RS ------------------------------------------------------------------------------
def test_serve_prints_the_dicomweb_url(archive: Archive) -> None:
    archive.server.wait_for_log(rf"DICOMweb \(HTTPS.*\): https://127\.0\.0\.1:{archive.port}"
                                r"/dicomweb")


def test_qido_studies_series_instances_with_the_c_find_matching(archive: Archive) -> None:
    client = archive.client()
    first, second = _uids(archive)
    by_id = client.search_for_studies(search_filters={"PatientID": "PAT001"})
    assert [s["0020000D"]["Value"][0] for s in by_id] == [first]
    assert by_id[0]["00100010"]["Value"][0]["Alphabetic"] == "Doe^Jane"
    assert by_id[0]["00201208"]["Value"][0] == 3  # NumberOfStudyRelatedInstances
    assert by_id[0]["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{first}")
    in_range = client.search_for_studies(search_filters={"StudyDate": "20250101-20251231"})
    assert [s["0020000D"]["Value"][0] for s in in_range] == [second]
    wildcard = client.search_for_studies(search_filters={"PatientName": "doe*"})
    assert [s["0020000D"]["Value"][0] for s in wildcard] == [first]  # PN: case-insensitive
    by_tag = client.search_for_studies(search_filters={"00100020": "PAT00?"})
    assert {s["0020000D"]["Value"][0] for s in by_tag} == {first, second}
    assert client.search_for_studies(search_filters={"PatientID": "NOBODY"}) == []
    assert {s["00080060"]["Value"][0] for s in client.search_for_series()} >= {"MR"}
    series = client.search_for_series(study_instance_uid=second)
    assert len(series) == 1 and series[0]["00080060"]["Value"][0] == "MR"
    assert series[0]["00201209"]["Value"][0] == 2  # NumberOfSeriesRelatedInstances
    series_uid = series[0]["0020000E"]["Value"][0]
    instances = client.search_for_instances(study_instance_uid=second,
                                            series_instance_uid=series_uid)
    assert len(instances) == 2 and all("00080018" in i for i in instances)
    assert len(client.search_for_instances(study_instance_uid=first)) == 3
    assert len(client.search_for_instances(search_filters={"PatientID": "PAT001"})) == 3
    # limit / offset page through the same matches
    page1 = client.search_for_instances(study_instance_uid=first, limit=2)
    page2 = client.search_for_instances(study_instance_uid=first, limit=2, offset=2)
    assert len(page1) == 2 and len(page2) == 1
    assert {i["00080018"]["Value"][0] for i in page1 + page2} == {
        i["00080018"]["Value"][0] for i in client.search_for_instances(study_instance_uid=first)}
    # includefield
    plain = client.search_for_studies(search_filters={"PatientID": "PAT002"})
    assert "00081030" not in plain[0]
    more = client.search_for_studies(search_filters={"PatientID": "PAT002"},
                                     fields=["StudyDescription"])
    assert more[0]["00081030"]["Value"][0] == "Knee"
    every = client.search_for_studies(search_filters={"PatientID": "PAT002"}, fields=["all"])
    assert every[0]["00081030"]["Value"][0] == "Knee" and "00100040" in every[0]


def test_qido_warns_about_what_it_ignores_and_refuses_bad_parameters(archive: Archive) -> None:
    session = archive.session()
    got = session.get(f"{archive.url}/studies", params={"PatientID": "PAT001",
                                                        "fuzzymatching": "true",
                                                        "NoSuchKeyword": "x"}, timeout=20)
    assert got.status_code == 200 and len(got.json()) == 1
    warning = got.headers["Warning"]
    assert warning.startswith("299 ") and "fuzzymatching" in warning
    assert "NoSuchKeyword" in warning
    assert got.headers["Content-Type"].startswith("application/dicom+json")
    bad = session.get(f"{archive.url}/studies", params={"limit": "-1"}, timeout=20)
    assert bad.status_code == 400 and "limit" in bad.json()["error"]


# -- WADO-RS ------------------------------------------------------------------------------
def _blobs(archive: Archive) -> dict[bytes, Path]:
    root = archive.data / "blobs"
    return {p.read_bytes(): p for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != "tmp"}


def test_wado_study_is_byte_identical_to_what_c_store_stored(archive: Archive) -> None:
    client = archive.client()
    first, _ = _uids(archive)
    response = client._http_get(f"{archive.url}/studies/{first}",
                                headers={"Accept": 'multipart/related; type="application/dicom";'
                                                   ' transfer-syntax=*'})
    assert response.headers["Content-Type"].startswith("multipart/related")
    parts = [bytes(p) for p in client._decode_multipart_message(response, stream=False)]
    stored = _blobs(archive)
    assert len(parts) == 3 and all(p in stored for p in parts)
    datasets = client.retrieve_study(first)
    assert sorted(int(d.InstanceNumber) for d in datasets) == [1, 2, 3]
    from pydicom import dcmread

    sent = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in archive.studies[first]}
    for ds in datasets:
        assert ds.PixelData == sent[str(ds.SOPInstanceUID)].PixelData


def test_wado_of_instances_larger_than_every_buffer_is_byte_identical(archive: Archive,
                                                                       tmp_path: Path) -> None:
    """Instances above the 1 MiB blob read and the listener's direct-write size, between
    small ones: every part comes out as stored, in order, whole, nothing else around."""
    from pydicom import dcmread

    study = None
    sizes = [(16, 16, 1), (1024, 1024, 2), (16, 8, 1), (768, 640, 1), (512, 512, 3)]
    files = []
    for number, (rows, cols, frames) in enumerate(sizes, 1):
        ds = make_dataset(patient_id="PATWIDE", rows=rows, columns=cols, study_uid=study,
                          instance_number=number)
        study = str(ds.StudyInstanceUID)
        ds.NumberOfFrames = frames
        ds.PixelData = bytes(range(256)) * (rows * cols * 2 * frames // 256)
        files.append(tmp_path / f"{number}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    client = archive.client()
    client.store_instances([dcmread(f) for f in files])
    response = client._http_get(f"{archive.url}/studies/{study}",
                                headers={"Accept": 'multipart/related; type="application/dicom";'
                                                   ' transfer-syntax=*'})
    parts = [bytes(p) for p in client._decode_multipart_message(response, stream=False)]
    stored = _blobs(archive)
    assert len(parts) == len(sizes) and all(p in stored for p in parts)
    assert max(len(p) for p in parts) > 3 * 2**20
    by_number = {int(dcmread(io.BytesIO(p), stop_before_pixels=True).InstanceNumber): p
                 for p in parts}
    for number, path in enumerate(files, 1):
        assert dcmread(io.BytesIO(by_number[number])).PixelData == dcmread(path).PixelData


def test_wado_reencodes_only_between_uncompressed_syntaxes(archive: Archive) -> None:
    client = archive.client()
    first, _ = _uids(archive)
    series = client.search_for_series(study_instance_uid=first)[0]["0020000E"]["Value"][0]
    response = client._http_get(  # dicomweb-client itself offers no Implicit VR
        f"{archive.url}/studies/{first}/series/{series}",
        headers={"Accept": 'multipart/related; type="application/dicom"; '
                           'transfer-syntax=1.2.840.10008.1.2'})
    from pydicom import dcmread

    got = [dcmread(io.BytesIO(bytes(p)))
           for p in client._decode_multipart_message(response, stream=False)]
    assert len(got) == 3
    assert {str(d.file_meta.TransferSyntaxUID) for d in got} == {"1.2.840.10008.1.2"}
    assert all(d.is_implicit_VR for d in got)
    refused = archive.session().get(
        f"{archive.url}/studies/{first}",
        headers={"Accept": 'multipart/related; type="application/dicom"; '
                           'transfer-syntax=1.2.840.10008.1.2.4.90'}, timeout=20)
    assert refused.status_code == 406 and "cannot be converted" in refused.json()["error"]


def test_wado_metadata_and_bulk_data(archive: Archive) -> None:
    client = archive.client()
    _, second = _uids(archive)
    metadata = client.retrieve_study_metadata(second)
    assert len(metadata) == 2 and all(m["00100020"]["Value"] == ["PAT002"] for m in metadata)
    uri = metadata[0]["7FE00010"]["BulkDataURI"]
    assert "/bulkdata/7FE00010" in uri
    pixels = client.retrieve_bulkdata(uri)
    sop = metadata[0]["00080018"]["Value"][0]
    from pydicom import dcmread

    sent = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in archive.studies[second]}
    assert pixels[0] == sent[sop].PixelData


def _multiframe_j2k(folder: Path) -> tuple[Path, object]:
    from pydicom.uid import JPEG2000Lossless

    arr = ((np.arange(4 * 48 * 40) * 7) % 3000).astype("uint16").reshape(4, 48, 40)
    ds = make_dataset(patient_id="PATJ2K", rows=48, columns=40)
    ds.NumberOfFrames = 4
    ds.compress(JPEG2000Lossless, arr, encoding_plugin="pylibjpeg")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "j2k.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, arr


def test_stow_then_frames_of_a_multiframe_jpeg2000(archive: Archive, tmp_path: Path) -> None:
    from pydicom import dcmread
    from pydicom.encaps import generate_frames

    path, arr = _multiframe_j2k(tmp_path)
    ds = dcmread(path)
    client = archive.client()
    client.store_instances([ds])
    study, series, sop = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                          str(ds.SOPInstanceUID))
    stored = list(generate_frames(ds.PixelData, number_of_frames=4))
    as_stored = client.retrieve_instance_frames(study, series, sop, [2, 4], media_types=(
        ("image/jp2", "1.2.840.10008.1.2.4.90"),))
    assert as_stored == [stored[1], stored[3]]
    native = client.retrieve_instance_frames(study, series, sop, [3], media_types=(
        ("application/octet-stream", "1.2.840.10008.1.2.1"),))
    assert np.frombuffer(native[0], "<u2").reshape(48, 40).tolist() == arr[2].tolist()
    png = client.retrieve_instance_frames_rendered(study, series, sop, [2],
                                                   media_types=("image/png",))
    assert Image.open(io.BytesIO(png)).size == (40, 48)


def test_rendered_and_thumbnails_are_images(archive: Archive) -> None:
    client = archive.client()
    first, _ = _uids(archive)
    series = client.search_for_series(study_instance_uid=first)[0]["0020000E"]["Value"][0]
    sop = client.search_for_instances(study_instance_uid=first)[0]["00080018"]["Value"][0]
    jpeg = client.retrieve_instance_rendered(first, series, sop, media_types=("image/jpeg",),
                                             params={"quality": 80, "window": "100,300"})
    picture = Image.open(io.BytesIO(jpeg))
    assert picture.format == "JPEG" and picture.size == (64, 64)
    rendered = client.retrieve_series_rendered(first, series, media_types=("image/png",))
    parts = [bytes(p) for p in client._decode_multipart_message(
        archive.session().get(f"{archive.url}/studies/{first}/rendered", timeout=30,
                              headers={"Accept": "image/png"}), stream=False)]
    assert len(parts) == 3 and all(Image.open(io.BytesIO(p)).format == "PNG" for p in parts)
    assert bytes(rendered).count(b"\x89PNG\r\n") == 3  # the series' multipart body, whole
    session = archive.session()
    for where in (f"/studies/{first}", f"/studies/{first}/series/{series}",
                  f"/studies/{first}/series/{series}/instances/{sop}"):
        got = session.get(f"{archive.url}{where}/thumbnail", headers={"Accept": "image/png"},
                          params={"viewport": "32,32"}, timeout=20)
        assert got.status_code == 200 and got.headers["Content-Type"] == "image/png", where
        assert max(Image.open(io.BytesIO(got.content)).size) == 32


def test_stow_of_a_folder_is_found_by_dcmtk_findscu(archive: Archive, tmp_path: Path) -> None:
    from pydicom import dcmread

    files = write_study(tmp_path / "s", 4, patient_id="PATSTOW", study_date="20240601")
    client = archive.client()
    answer = client.store_instances([dcmread(p) for p in files])
    assert len(answer.ReferencedSOPSequence) == 4 and "FailedSOPSequence" not in answer
    key, cert, ca_pem = (archive.clients / "ws1.key", archive.clients / "ws1.pem",
                         archive.clients / "ca.pem")
    out = tmp_path / "found"
    out.mkdir()
    result = dcmtk("findscu", *tls_args(key, cert, ca_pem), "-S", "-aec", "SECUREPACS",
                   "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PATSTOW",
                   "-k", "NumberOfStudyRelatedInstances", "-X", "-od", str(out), HOST,
                   str(archive.server.port), timeout=60)
    assert result.returncode == 0, result.stderr
    found = [dcmread(p) for p in out.glob("rsp*.dcm")]
    assert len(found) == 1 and int(found[0].NumberOfStudyRelatedInstances) == 4
    # the same instances again: kept first copies, each with Warning Reason 0xB006
    again = client.store_instances([dcmread(p) for p in files])
    assert [int(i.WarningReason) for i in again.ReferencedSOPSequence] == [0xB006] * 4


def test_stow_failures_and_a_study_mismatch(archive: Archive, tmp_path: Path) -> None:
    files = write_study(tmp_path / "m", 1, patient_id="PATMIS")
    session = archive.session()
    body = (b"--XYZ\r\nContent-Type: application/dicom\r\n\r\n" + files[0].read_bytes()
            + b"\r\n--XYZ\r\nContent-Type: application/dicom\r\n\r\nnot dicom at all\r\n--XYZ--")
    got = session.post(f"{archive.url}/studies/1.2.3.4", data=body, timeout=20, headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=XYZ'})
    assert got.status_code == 409, got.text
    failed = got.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failed] == [0xA900, 0xC000]


def _rss(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    values = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
              if line.startswith(("VmRSS", "VmHWM"))}
    return values["VmRSS"] // 1024, values["VmHWM"] // 1024


def test_a_large_stow_and_wado_stay_under_200_mb(archive: Archive, tmp_path: Path) -> None:
    """~300 MB in one instance up and down; the server's peak RSS stays under 200 MB."""
    from pydicom import dcmread

    frames, rows, cols = 600, 512, 512  # 600 x 512 KB = 300 MB
    ds = make_dataset(patient_id="PATBIG", rows=rows, columns=cols)
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(range(256)) * (rows * cols * 2 * frames // 256)
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    del ds
    size = path.stat().st_size
    assert size > 300_000_000
    assert archive.server.proc is not None
    pid = archive.server.proc.pid

    def body() -> Iterator[bytes]:
        yield b"--B\r\nContent-Type: application/dicom\r\n\r\n"
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk
        yield b"\r\n--B--\r\n"

    session = archive.session()
    got = session.post(f"{archive.url}/studies", data=body(), timeout=300, headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=B'})
    assert got.status_code == 200, got.text
    head = dcmread(path, stop_before_pixels=True)
    url = (f"{archive.url}/studies/{head.StudyInstanceUID}/series/{head.SeriesInstanceUID}"
           f"/instances/{head.SOPInstanceUID}")
    received = 0
    with session.get(url, stream=True, timeout=300) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(1 << 20):
            received += len(chunk)
    assert received > size
    # one frame, a rendered frame and the whole pixel data as bulk data: read, not loaded
    client = archive.client()
    frame = client.retrieve_instance_frames(str(head.StudyInstanceUID),
                                            str(head.SeriesInstanceUID),
                                            str(head.SOPInstanceUID), [300])
    assert len(frame) == 1 and len(frame[0]) == rows * cols * 2
    with open(path, "rb") as fh:  # frame 300 sits at its offset from the end of the file
        fh.seek(size - (frames - 299) * rows * cols * 2)
        assert frame[0] == fh.read(rows * cols * 2)
    png = session.get(f"{url}/frames/10/rendered", headers={"Accept": "image/png"},
                      timeout=60)
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (cols, rows)
    bulk = 0
    with session.get(f"{url}/bulkdata/7FE00010", stream=True, timeout=300) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(1 << 20):
            bulk += len(chunk)
    assert bulk > rows * cols * 2 * frames
    rss, peak = _rss(pid)
    print(f"server RSS {rss} MB, peak {peak} MB, object {size >> 20} MB")
    assert peak < 200, f"server peak RSS {peak} MB (now {rss} MB) for a {size >> 20} MB object"
    path.unlink()


def test_nothing_is_left_in_the_spool_folder(archive: Archive) -> None:
    left = [p for p in (archive.data / "blobs" / "tmp").iterdir() if p.name.startswith("stow-")]
    assert left == []



# -- Orthanc and its DICOMweb plugin as a second client -----------------------------------
ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@pytest.fixture()
def orthanc(archive: Archive, tmp_path: Path) -> Iterator[str]:
    """Orthanc with securepacs configured as a DICOMweb server (client certificate)."""
    import json
    import subprocess

    if not ORTHANC.exists() or not DICOMWEB_PLUGIN.exists():
        pytest.skip("Debian orthanc and orthanc-dicomweb are not installed")
    http_port = free_port()
    cert, key = archive.files("orthanc")
    config = {
        "Name": "securepacs-test", "StorageDirectory": str(tmp_path / "storage"),
        "IndexDirectory": str(tmp_path / "storage"), "HttpPort": http_port,
        "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "HttpsCACertificates": str(archive.clients / "ca.pem"),
        "HttpTimeout": 60, "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": {"securepacs": {
            "Url": f"https://localhost:{archive.port}/dicomweb/",
            "CertificateFile": str(cert), "CertificateKeyFile": str(key)}}},
    }
    path = tmp_path / "orthanc.json"
    path.write_text(json.dumps(config))
    log = open(tmp_path / "orthanc.log", "wb")
    proc = subprocess.Popen([str(ORTHANC), str(path)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://{HOST}:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/system", timeout=2).status_code == 200:
                    break
            except requests.exceptions.ConnectionError:
                pass
            assert proc.poll() is None, (tmp_path / "orthanc.log").read_text()
            assert time.monotonic() < deadline, "Orthanc did not start within 30 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_orthanc_retrieves_a_study_and_sends_one_by_stow(archive: Archive, orthanc: str,
                                                          tmp_path: Path) -> None:
    first, _ = _uids(archive)
    plain = requests.Session()
    plain.trust_env = False
    got = plain.post(f"{orthanc}/dicom-web/servers/securepacs/retrieve", timeout=120,
                     json={"Resources": [{"Study": first}], "Synchronous": True})
    assert got.status_code == 200, got.text
    found = plain.post(f"{orthanc}/tools/find", timeout=20, json={
        "Level": "Instance", "Query": {"StudyInstanceUID": first}, "Expand": True}).json()
    assert len(found) == 3
    from pydicom import dcmread

    sent = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in archive.studies[first]}
    for item in found:
        data = plain.get(f"{orthanc}/instances/{item['ID']}/file", timeout=20).content
        ds = dcmread(io.BytesIO(data))
        assert ds.PixelData == sent[str(ds.SOPInstanceUID)].PixelData
    # a study uploaded into Orthanc goes to securepacs by STOW-RS
    files = write_study(tmp_path / "o", 2, patient_id="PATORTHANC")
    for p in files:
        assert plain.post(f"{orthanc}/instances", data=p.read_bytes(),
                          timeout=20).status_code == 200
    study = plain.post(f"{orthanc}/tools/lookup", data=str(dcmread(files[0]).StudyInstanceUID),
                       timeout=20).json()[0]["ID"]
    stow = plain.post(f"{orthanc}/dicom-web/servers/securepacs/stow", timeout=120,
                      json={"Resources": [study], "Synchronous": True})
    assert stow.status_code == 200, stow.text
    matches = archive.client().search_for_instances(search_filters={"PatientID": "PATORTHANC"})
    assert len(matches) == 2
