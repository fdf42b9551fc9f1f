"""Bad input gets the right DIMSE status, a log line that says why, and nothing half-written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from harness import Server, make_server
from pydicom import dcmread
from pynetdicom import _config
from scu import associate

from factories import make_dataset, write_study

pytestmark = [pytest.mark.integration]


def send_file_as_is(server: Server, pki, path: Path) -> int:  # noqa: ANN001
    """Send a Part 10 file's data set bytes without decoding them (pynetdicom chunked mode):
    the command's UIDs come from the file meta, the data set is whatever the file holds."""
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = associate(server.port, pki.client.key, pki.client.cert, pki.ca_cert)
        try:
            return int(assoc.send_c_store(path).Status)
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


def stored_files(server: Server) -> list[Path]:
    blobs = server.data_dir / "blobs"
    return [p for p in blobs.rglob("*") if p.is_file()]


def test_mismatched_uids_and_malformed_data(server: Server, pki, tmp_path: Path) -> None:  # noqa: ANN001
    good = make_dataset()
    # the file meta (hence the command) names another SOP Instance UID than the data set
    wrong_instance = tmp_path / "wrong_instance.dcm"
    good.save_as(wrong_instance, enforce_file_format=True)
    ds = dcmread(wrong_instance)
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6"
    ds.save_as(wrong_instance, enforce_file_format=False)
    status = send_file_as_is(server, pki, wrong_instance)
    assert status & 0xF000 in (0xC000, 0xA000) or status == 0x0117, hex(status)
    server.wait_for_log(r"does not match the command's 1\.2\.3\.4\.5\.6")

    # a data set whose SOP Class disagrees with the command
    wrong_class = tmp_path / "wrong_class.dcm"
    ds = make_dataset()
    ds.save_as(wrong_class, enforce_file_format=True)
    ds = dcmread(wrong_class)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR in the data set, CT in the meta
    ds.save_as(wrong_class, enforce_file_format=False)
    assert send_file_as_is(server, pki, wrong_class) == 0xA900
    server.wait_for_log(r"SOP Class UID 1\.2\.840\.10008\.5\.1\.4\.1\.1\.4 does not match")

    # a data set that is not DICOM at all after a valid file meta
    malformed = tmp_path / "malformed.dcm"
    good.save_as(malformed, enforce_file_format=True)
    raw = malformed.read_bytes()
    group_length = int.from_bytes(raw[140:144], "little")
    malformed.write_bytes(raw[: 144 + group_length] + b"\x08\x00\x18\x00UI\xff\x7fgarbage")
    status = send_file_as_is(server, pki, malformed)
    assert status & 0xF000 in (0xC000, 0xA000), hex(status)
    server.wait_for_log(r"malformed data set|does not match|has no")

    assert stored_files(server) == []
    # the server keeps serving
    files = write_study(tmp_path / "ok", 2)
    assoc = associate(server.port, pki.client.key, pki.client.cert, pki.ca_cert)
    assert [int(assoc.send_c_store(dcmread(f)).Status) for f in files] == [0, 0]
    assoc.release()
    assert len(stored_files(server)) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_answers_out_of_resources_and_leaves_nothing(tmp_path: Path, pki) -> None:  # noqa: ANN001
    blob_dir = tmp_path / "smallfs"
    blob_dir.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(blob_dir)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    server = make_server(tmp_path, pki, blob_dir=str(blob_dir)).start()
    try:
        files = write_study(tmp_path / "big", 20, rows=128, columns=128)  # ~32 KB each
        assoc = associate(server.port, pki.client.key, pki.client.cert, pki.ca_cert)
        statuses = [int(assoc.send_c_store(dcmread(f)).Status) for f in files]
        # a large object (over the 8 MB the server keeps in memory) goes to a temp file
        # in the full store: refused the same way, on the same association
        large = write_study(tmp_path / "large", 1, rows=2048, columns=2304)[0]  # ~9.4 MB
        assert int(assoc.send_c_store(dcmread(large)).Status) == 0xA700
        assoc.release()
        assert 0xA700 in statuses, [hex(s) for s in statuses]
        stored = statuses.count(0)
        assert stored > 0
        server.wait_for_log(r"no space left")
        blobs = [p for p in blob_dir.rglob("*") if p.is_file()]
        assert len(blobs) == stored, "a blob without an index row, or a temp file, remains"
        # the index agrees: exactly the successful ones are there
        assoc = associate(server.port, pki.client.key, pki.client.cert, pki.ca_cert)
        from pydicom import Dataset
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID = dcmread(files[0]).StudyInstanceUID
        q.SeriesInstanceUID = dcmread(files[0]).SeriesInstanceUID
        q.SOPInstanceUID = ""
        found = [ident for status, ident in assoc.send_c_find(
            q, StudyRootQueryRetrieveInformationModelFind) if status and status.Status == 0xFF00]
        assoc.release()
        assert len(found) == stored
    finally:
        server.stop()
        subprocess.run(["umount", "-l", str(blob_dir)], check=False)


def test_protocol_garbage_is_aborted_and_the_server_goes_on(tmp_path: Path, pki) -> None:  # noqa: ANN001
    """Upper-layer garbage (PS3.8 9.3): no A-ASSOCIATE-RQ first, an oversized PDU, a P-DATA
    before any association: each connection gets an A-ABORT and is closed, with a log line."""
    import socket

    from harness import HOST, free_port

    plain = free_port()
    server = make_server(tmp_path, pki, plain_port=plain).start()
    try:
        for garbage in (b"GET / HTTP/1.1\r\n\r\n",
                        bytes((0x01, 0)) + (64 << 20).to_bytes(4, "big"),
                        bytes((0x04, 0, 0, 0, 0, 8, 0, 0, 0, 4, 1, 3, 0, 0))):
            with socket.create_connection((HOST, plain), timeout=10) as sock:
                sock.sendall(garbage)
                answer = sock.recv(64)
                assert answer[:1] == b"\x07", answer  # A-ABORT
                try:  # then closed (reset when unread garbage was left behind)
                    assert sock.recv(64) == b""
                except ConnectionResetError:
                    pass
        server.wait_for_log(r"connection from 127\.0\.0\.1:\d+ aborted: [^\n]*(PDU|larger)")
        assoc = associate(server.port, pki.client.key, pki.client.cert, pki.ca_cert)
        assert int(assoc.send_c_echo().Status) == 0
        assoc.release()
    finally:
        server.stop()
