"""C-MOVE (to a DCMTK storescp over TLS) and C-GET (pynetdicom client), byte for byte."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from harness import free_port, make_server, needs_dcmtk, tls_args, wait_for_port
from pydicom import Dataset, dcmread
from pynetdicom import evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from scu import associate

from factories import write_study

pytestmark = [pytest.mark.integration]


def dataset_bytes(part10: bytes) -> bytes:
    """The data set of a Part 10 file, after its File Meta Information group."""
    assert part10[128:132] == b"DICM"
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length:]


def store_files(port: int, pki, paths: list[Path]) -> list[int]:  # noqa: ANN001
    assoc = associate(port, pki.client.key, pki.client.cert, pki.ca_cert)
    try:
        return [int(assoc.send_c_store(dcmread(p)).Status) for p in paths]
    finally:
        assoc.release()


def study_identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


@needs_dcmtk
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_move_to_storescp(tmp_path: Path, pki, tls: bool) -> None:  # noqa: ANN001
    dest_port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    server = make_server(tmp_path, pki, move_destinations=[
        {"ae_title": "DEST", "host": "127.0.0.1", "port": dest_port, "tls": tls}]).start()
    security = tls_args(pki.server.key, pki.server.cert, pki.ca_cert) if tls else []
    storescp = subprocess.Popen(
        ["storescp", *security, "-aet", "DEST", "-od", str(out), str(dest_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"})
    try:
        wait_for_port(dest_port, None, 15)
        files = write_study(tmp_path / "src", 5)
        assert store_files(server.port, pki, files) == [0] * 5
        study_uid = dcmread(files[0]).StudyInstanceUID
        assoc = associate(server.port, pki.client.key, pki.client.cert, pki.ca_cert)
        statuses = [int(s.Status) for s, _ in assoc.send_c_move(
            study_identifier(study_uid), "DEST", StudyRootQueryRetrieveInformationModelMove) if s]
        unknown = [int(s.Status) for s, _ in assoc.send_c_move(
            study_identifier(study_uid), "NOWHERE", StudyRootQueryRetrieveInformationModelMove) if s]
        assoc.release()
        assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
        assert unknown[-1] == 0xA801
        deadline = time.monotonic() + 10
        while len(list(out.iterdir())) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        received = {dcmread(p).SOPInstanceUID: p.read_bytes() for p in out.iterdir()}
        for f in files:
            original = f.read_bytes()
            assert dataset_bytes(received[dcmread(f).SOPInstanceUID]) == dataset_bytes(original)
    finally:
        storescp.terminate()
        storescp.wait(timeout=10)
        server.stop()


def test_get_returns_identical_bytes_and_duplicates_warn(server, pki, tmp_path: Path) -> None:  # noqa: ANN001
    files = write_study(tmp_path / "src", 4)
    assert store_files(server.port, pki, files) == [0] * 4
    # the same SOP Instance again: kept, answered with a Warning
    assert store_files(server.port, pki, files[:1]) == [0xB006]
    received: dict[str, bytes] = {}

    def on_store(event) -> int:  # noqa: ANN001
        received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    assoc = associate(server.port, pki.client.key, pki.client.cert, pki.ca_cert,
                      get_classes=(CTImageStorage,), handlers=[(evt.EVT_C_STORE, on_store)])
    study_uid = dcmread(files[0]).StudyInstanceUID
    statuses = [int(s.Status) for s, _ in assoc.send_c_get(
        study_identifier(study_uid), StudyRootQueryRetrieveInformationModelGet) if s]
    assoc.release()
    assert statuses[-1] == 0x0000
    assert len(received) == 4
    for f in files:
        assert received[dcmread(f).SOPInstanceUID] == dataset_bytes(f.read_bytes())


def test_get_converts_between_uncompressed_syntaxes_or_reports_failure(server, pki,  # noqa: ANN001
                                                                        tmp_path: Path) -> None:
    """Stored Explicit VR LE; a C-GET requestor that accepts only Implicit VR LE gets the same
    data set re-encoded; one that accepts only JPEG Baseline gets nothing and a Failure
    final status (0xA702) naming every instance in Failed SOP Instance UID List."""
    from io import BytesIO

    from pydicom.uid import ImplicitVRLittleEndian, JPEGBaseline8Bit
    from pynetdicom.dsutils import decode

    files = write_study(tmp_path / "src", 3)
    assert store_files(server.port, pki, files) == [0] * 3
    study_uid = dcmread(files[0]).StudyInstanceUID
    received: dict[str, bytes] = {}

    def on_store(event) -> int:  # noqa: ANN001
        received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    assoc = associate(server.port, pki.client.key, pki.client.cert, pki.ca_cert,
                      get_classes=(CTImageStorage,), handlers=[(evt.EVT_C_STORE, on_store)],
                      get_syntaxes=(ImplicitVRLittleEndian,))
    statuses = [int(s.Status) for s, _ in assoc.send_c_get(
        study_identifier(study_uid), StudyRootQueryRetrieveInformationModelGet) if s]
    assoc.release()
    assert statuses[-1] == 0x0000 and len(received) == 3
    for f in files:
        original = dcmread(f)
        got = decode(BytesIO(received[original.SOPInstanceUID]), True, True)
        assert got.PatientID == original.PatientID
        assert got.PixelData == original.PixelData
        assert len(got) == len(original)

    received.clear()
    assoc = associate(server.port, pki.client.key, pki.client.cert, pki.ca_cert,
                      get_classes=(CTImageStorage,), handlers=[(evt.EVT_C_STORE, on_store)],
                      get_syntaxes=(JPEGBaseline8Bit,))
    answers = list(assoc.send_c_get(study_identifier(study_uid),
                                    StudyRootQueryRetrieveInformationModelGet))
    assoc.release()
    final, identifier = answers[-1]
    assert int(final.Status) == 0xA702 and not received
    assert int(final.NumberOfFailedSuboperations) == 3
    assert sorted(identifier.FailedSOPInstanceUIDList) == sorted(
        dcmread(f).SOPInstanceUID for f in files)
