"""Orthanc as a DICOM node with one `securepacs ca issue node` certificate (issue 17 item 2).

Orthanc 1.10 (Debian) presents the same certificate when it calls us (C-ECHO, C-FIND,
C-MOVE requests, C-STORE) and when we call it for the C-STORE sub-operations of a C-MOVE,
so the certificate must carry serverAuth and clientAuth, a group (for our permissions) and
its AE title. The move destination names Orthanc's identity: a destination pinned to
another identity is refused although Orthanc's certificate comes from the same CA.
Orthanc is started here on free loopback ports with a generated configuration; its REST
API drives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from catools import ca, data_server
from harness import HOST, Server, free_port, wait_for_port

from factories import write_study

ORTHANC = shutil.which("Orthanc")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(ORTHANC is None, reason="Orthanc is not installed "
                                 "(Debian package orthanc)")]


@dataclass
class Orthanc:
    http_port: int
    dicom_port: int
    log_path: Path

    def call(self, method: str, path: str, body: object = None, *,
             timeout: float = 60.0) -> object:
        data = None
        if isinstance(body, bytes):
            data = body
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(f"http://{HOST}:{self.http_port}{path}", data=data,
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
                text = answer.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Orthanc {method} {path}: {exc.code} {exc.read()[:2000]!r}\n"
                                 f"{self.log_path.read_text(errors='replace')[-3000:]}") from None
        return json.loads(text) if text else None


@contextlib.contextmanager
def running_orthanc(tmp: Path, *, node: Path, key: Path, ca_pem: Path, archive_port: int,
                    dicom_port: int) -> Iterator[Orthanc]:
    """Orthanc with DICOM TLS from one node certificate, its REST API on loopback."""
    http_port = free_port()
    root = tmp / "orthanc"
    (root / "storage").mkdir(parents=True)
    config = {
        "Name": "securepacs-test", "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"), "Plugins": [],
        "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomAet": "ORTHANC", "DicomPort": dicom_port, "DicomCheckCalledAet": False,
        "DicomTlsEnabled": True, "DicomTlsCertificate": str(node),
        "DicomTlsPrivateKey": str(key), "DicomTlsTrustedCertificates": str(ca_pem),
        "DicomTlsRemoteCertificateRequired": True,
        "DicomModalities": {"securepacs": {"AET": "SECUREPACS", "Host": HOST,
                                           "Port": archive_port, "UseDicomTls": True}},
        "DicomScuTimeout": 20, "DicomAssociationCloseDelay": 0, "SaveJobs": False,
    }
    cfg = root / "orthanc.json"
    cfg.write_text(json.dumps(config))
    log_path = tmp / "orthanc.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(ORTHANC), str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, TCP_NODELAY="1"), cwd=root)
    try:
        wait_for_port(http_port, proc, timeout=60)
        wait_for_port(dicom_port, proc, timeout=30)
        yield Orthanc(http_port, dicom_port, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _stored_uids(server: Server) -> set[str]:
    uids = set()
    for path in server.data_dir.rglob("*"):
        if path.is_file() and "pki" not in path.parts and path.suffix == "":
            with open(path, "rb") as f:
                if f.read(132)[128:] != b"DICM":
                    continue
            uids.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return uids


def test_orthanc_queries_moves_to_itself_and_stores_with_one_node_certificate(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    ca(data, "init")
    ca(data, "group", "create", "nodes", "--allow", "echo,store,find,move")
    out = tmp_path / "certs"
    issued = ca(data, "issue", "node", "--name", "orthanc1", "--org", "Peer Hospital",
                "--group", "nodes", "--ae", "ORTHANC", "--san", HOST, "--out", str(out))
    assert "issued node certificate orthanc1" in issued.stdout
    # a second identity from the same CA, to show that pinning is more than "from our CA"
    ca(data, "issue", "node", "--name", "other-node", "--org", "Peer Hospital",
       "--group", "nodes", "--out", str(out))
    orthanc_port = free_port()  # Orthanc's DICOM port, known before the archive's config
    server = data_server(
        tmp_path, data, "archive",
        move_destinations=[{"ae_title": "ORTHANC", "host": HOST, "port": orthanc_port,
                            "tls": True, "identity": "orthanc1"},
                           {"ae_title": "ORTHANC2", "host": HOST, "port": orthanc_port,
                            "tls": True, "identity": "other-node"}])
    server.start()
    try:
        with running_orthanc(tmp_path, node=out / "orthanc1.pem", key=out / "orthanc1.key",
                             ca_pem=out / "ca.pem", archive_port=server.port,
                             dicom_port=orthanc_port) as orthanc:
            _exercise(orthanc, server, tmp_path)
    finally:
        server.stop()


def _exercise(orthanc: Orthanc, server: Server, tmp: Path) -> None:
    study = write_study(tmp / "study", 3, patient_id="ORTHANC-PAT", patient_name="Node^Test")
    sop_uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in study}
    study_uid = str(pydicom.dcmread(study[0]).StudyInstanceUID)
    for path in study:
        orthanc.call("POST", "/instances", path.read_bytes())
    [orthanc_study] = orthanc.call("GET", "/studies")  # type: ignore[misc]

    # Orthanc stores to us (C-STORE over TLS, its node certificate as client certificate)
    orthanc.call("POST", "/modalities/securepacs/store",
                 {"Resources": [orthanc_study], "Synchronous": True})
    assert _stored_uids(server) == sop_uids
    server.wait_for_log(r"TLS connection from 127\.0\.0\.1:\d+: CN=orthanc1 O=Peer Hospital")
    orthanc.call("DELETE", f"/studies/{orthanc_study}")
    assert orthanc.call("GET", "/instances") == []

    # Orthanc's C-ECHO and C-FIND to us
    orthanc.call("POST", "/modalities/securepacs/echo", {})
    query = orthanc.call("POST", "/modalities/securepacs/query",
                         {"Level": "Study", "Query": {"PatientID": "ORTHANC-PAT",
                                                      "StudyInstanceUID": ""}})
    assert isinstance(query, dict)
    answers = orthanc.call("GET", f"/queries/{query['ID']}/answers?expand&simplify")
    assert [a["StudyInstanceUID"] for a in answers] == [study_uid]  # type: ignore[union-attr]

    # C-MOVE from us to Orthanc itself: our C-STORE sub-operations connect to Orthanc over
    # TLS and accept it only because it presents the pinned identity orthanc1
    orthanc.call("POST", f"/queries/{query['ID']}/retrieve",
                 {"TargetAet": "ORTHANC", "Synchronous": True})
    held = orthanc.call("GET", "/instances?expand")
    assert {i["MainDicomTags"]["SOPInstanceUID"] for i in held} == sop_uids  # type: ignore[union-attr]

    # the same peer as destination ORTHANC2, pinned to another identity of the same CA:
    # refused, nothing sent
    orthanc.call("DELETE", f"/studies/{orthanc_study}")
    with pytest.raises(AssertionError):
        orthanc.call("POST", f"/queries/{query['ID']}/retrieve",
                     {"TargetAet": "ORTHANC2", "Synchronous": True})
    server.wait_for_log(r"not the pinned identity 'other-node'")
    assert orthanc.call("GET", "/instances") == []
