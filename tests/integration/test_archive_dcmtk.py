"""The archive driven by DCMTK over mutual TLS on loopback (issue: secure DICOM archive)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from harness import HOST, Server, dcmtk, make_server, needs_dcmtk, tls_args
from tunnel import tls_tunnel

from factories import make_dataset, write_study

pytestmark = [pytest.mark.integration, needs_dcmtk]


def echo(server: Server, key: Path, cert: Path, ca: Path) -> object:
    return dcmtk("echoscu", *tls_args(key, cert, ca), "-aec", server.ae_title,
                 HOST, str(server.port), timeout=30)


def findscu(server: Server, pki, out: Path, *keys: str, level: str = "STUDY") -> list:  # noqa: ANN001
    out.mkdir(parents=True, exist_ok=True)
    args = ["findscu", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert), "-S",
            "-aec", server.ae_title, "-k", f"QueryRetrieveLevel={level}"]
    for k in keys:
        args += ["-k", k]
    result = dcmtk(*args, "-X", "-od", str(out), HOST, str(server.port), timeout=60)
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_echo_over_tls(server: Server, pki) -> None:  # noqa: ANN001
    result = echo(server, pki.client.key, pki.client.cert, pki.ca_cert)
    assert result.returncode == 0, result.stderr
    server.wait_for_log(r"TLS connection from 127\.0\.0\.1:\d+: CN=client O=Test Hospital")


def test_store_then_find_by_patient_and_date_range(server: Server, pki, tmp_path: Path) -> None:  # noqa: ANN001
    a = write_study(tmp_path / "a", 60, patient_id="PAT-A", study_date="20240110")
    b = write_study(tmp_path / "b", 40, patient_id="PAT-B", study_date="20240320",
                    patient_name="Roe^Richard")
    result = dcmtk("storescu", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert),
                   "-aec", server.ae_title, HOST, str(server.port), *a, *b, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Store Failed" not in result.stderr + result.stdout

    by_patient = findscu(server, pki, tmp_path / "q1", "PatientID=PAT-A", "StudyInstanceUID",
                         "NumberOfStudyRelatedInstances")
    assert len(by_patient) == 1
    assert by_patient[0].StudyInstanceUID == pydicom.dcmread(a[0]).StudyInstanceUID
    assert int(by_patient[0].NumberOfStudyRelatedInstances) == 60

    in_range = findscu(server, pki, tmp_path / "q2", "StudyDate=20240301-20240331", "PatientID")
    assert [r.PatientID for r in in_range] == ["PAT-B"]
    open_range = findscu(server, pki, tmp_path / "q3", "StudyDate=20240101-", "PatientID")
    assert sorted(r.PatientID for r in open_range) == ["PAT-A", "PAT-B"]
    wildcard = findscu(server, pki, tmp_path / "q4", "PatientName=roe*", "PatientID")
    assert [r.PatientID for r in wildcard] == ["PAT-B"]
    images = findscu(server, pki, tmp_path / "q5", "PatientID=PAT-B",
                     f"StudyInstanceUID={pydicom.dcmread(b[0]).StudyInstanceUID}",
                     f"SeriesInstanceUID={pydicom.dcmread(b[0]).SeriesInstanceUID}",
                     "SOPInstanceUID", level="IMAGE")
    assert len(images) == 40


def test_refusals_are_logged_with_reason_and_peer(server: Server, pki, tmp_path: Path) -> None:  # noqa: ANN001
    from pkifixtures import TestPki

    other = TestPki.create(tmp_path / "other", name="Other CA")
    cases = {
        "another CA": (other.client, pki.ca_cert, "not issued by a trusted CA"),
        "expired": (pki.issue_expired("expired"), pki.ca_cert, "expired"),
        "not yet valid": (pki.issue_future("future"), pki.ca_cert, "not yet valid"),
    }
    for name, (pair, ca, reason) in cases.items():
        result = echo(server, pair.key, pair.cert, ca)
        assert result.returncode != 0, f"{name}: echo should have been refused"
        server.wait_for_log(rf"TLS handshake with 127\.0\.0\.1:\d+ refused: [^\n]*{reason}")
    # no client certificate at all (anonymous TLS)
    result = dcmtk("echoscu", "+tla", "+cf", pki.ca_cert, "-aec", server.ae_title,
                   HOST, str(server.port), timeout=30)
    assert result.returncode != 0
    server.wait_for_log(r"refused: [^\n]*no certificate")
    # plain TCP on the TLS port
    result = dcmtk("echoscu", "-aec", server.ae_title, HOST, str(server.port), timeout=30)
    assert result.returncode != 0
    server.wait_for_log(r"refused: [^\n]*not a TLS connection")
    # the server still serves a good client afterwards
    assert echo(server, pki.client.key, pki.client.cert, pki.ca_cert).returncode == 0


def test_tls11_client_refused(server: Server, pki) -> None:  # noqa: ANN001
    import socket
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even build a TLS 1.1 client")
    ctx.load_cert_chain(pki.client.cert, pki.client.key)
    with socket.create_connection((HOST, server.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            with ctx.wrap_socket(raw) as tls:
                tls.recv(1)
    server.wait_for_log(r"TLS handshake with 127\.0\.0\.1:\d+ refused")


PRIVATE_CLASS = "1.2.826.0.1.3680043.10.1234.99.1"


def _dcmsend(server: Server, pki, path: Path) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    with tls_tunnel(server.port, pki.client.key, pki.client.cert, pki.ca_cert) as port:
        return dcmtk("dcmsend", "-nuc", "-aec", server.ae_title, "-aet", "DCMSEND", HOST,
                     str(port), path, timeout=30)


def test_unknown_sop_class_is_stored_and_found(server: Server, pki, tmp_path: Path) -> None:  # noqa: ANN001
    """Issue 17 item 3: a private storage SOP class (dcmsend proposes the file's own class;
    storescu refuses unknown classes) is accepted by default, stored as received and indexed
    by its common attributes."""
    ds = make_dataset(sop_class=PRIVATE_CLASS, patient_id="PRIVATE-1")
    path = tmp_path / "private.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = _dcmsend(server, pki, path)
    output = result.stderr + result.stdout
    assert result.returncode == 0 and "Store Failed" not in output, output
    found = findscu(server, pki, tmp_path / "q", "PatientID=PRIVATE-1", "SOPInstanceUID",
                    "SOPClassUID", f"StudyInstanceUID={ds.StudyInstanceUID}",
                    f"SeriesInstanceUID={ds.SeriesInstanceUID}", level="IMAGE")
    assert [(r.SOPInstanceUID, r.SOPClassUID) for r in found] == [(ds.SOPInstanceUID,
                                                                    PRIVATE_CLASS)]
    stored = [p for p in server.data_dir.rglob("*") if p.is_file() and p.suffix == ""
              and "pki" not in p.parts]
    held = [pydicom.dcmread(p) for p in stored if p.read_bytes()[128:132] == b"DICM"]
    assert [h.SOPClassUID for h in held] == [PRIVATE_CLASS]
    assert held[0].PixelData == ds.PixelData


def test_unknown_sop_class_is_refused_with_the_option_off(tmp_path: Path, pki) -> None:  # noqa: ANN001
    srv = make_server(tmp_path, pki, accept_unknown_storage=False).start()
    try:
        ds = make_dataset(sop_class=PRIVATE_CLASS)
        path = tmp_path / "private.dcm"
        ds.save_as(path, enforce_file_format=True)
        result = _dcmsend(srv, pki, path)
        output = (result.stderr + result.stdout).lower()
        assert "no acceptable presentation contexts" in output, output  # dcmsend exits 0
        assert echo(srv, pki.client.key, pki.client.cert, pki.ca_cert).returncode == 0
    finally:
        srv.stop()


def test_retired_storage_class_is_stored_and_found(server: Server, pki, tmp_path: Path) -> None:  # noqa: ANN001
    """Issue 17 item 3: the retired Ultrasound Image Storage class that older modalities
    still send is accepted, stored and found (DCMTK storescu -R proposes the class of the file)."""
    ds = make_dataset(sop_class="1.2.840.10008.5.1.4.1.1.6", modality="US", patient_id="RETIRED-US")
    path = tmp_path / "us.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = dcmtk("storescu", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert),
                   "-R", "-aec", server.ae_title, HOST, str(server.port), path, timeout=30)
    output = result.stderr + result.stdout
    assert result.returncode == 0 and "Store Failed" not in output, output
    found = findscu(server, pki, tmp_path / "q", "PatientID=RETIRED-US", "SOPInstanceUID",
                    f"StudyInstanceUID={ds.StudyInstanceUID}",
                    f"SeriesInstanceUID={ds.SeriesInstanceUID}", level="IMAGE")
    assert [r.SOPInstanceUID for r in found] == [ds.SOPInstanceUID]
