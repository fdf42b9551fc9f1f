"""A ``securepacs serve`` with DICOMweb on its own CA, shared by the DICOMweb tests.

Clients issued: ws1 (find, get, store), modality (store), gone (revoked), later (revoked
by a test), looker (find only), orthanc (find, get, store); two studies stored by DCMTK
``storescu`` over TLS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from catools import data_server
from dicomweb_client import api as dicomweb_api
from harness import HOST, Server, dcmtk, free_port, tls_args

from factories import write_study


def ca(data: Path, *args: str) -> str:
    from typer.testing import CliRunner

    from securepacs.cli.main import app

    result = CliRunner().invoke(app, ["ca", "--data-dir", str(data), *args])
    assert result.exit_code == 0, f"ca {' '.join(args)}: {result.output}"
    return result.stdout


class Archive:
    def __init__(self, server: Server, port: int, viewer_port: int, clients: Path, data: Path):
        self.server = server
        self.port = port
        self.viewer_port = viewer_port
        self.clients = clients
        self.data = data
        self.url = f"https://{HOST}:{port}/dicomweb"
        self.studies: dict[str, list[Path]] = {}

    def files(self, name: str) -> tuple[Path, Path]:
        return self.clients / f"{name}.pem", self.clients / f"{name}.key"

    def session(self, name: str | None = "ws1") -> requests.Session:
        session = requests.Session()
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override session.verify
        session.trust_env = False
        if name is not None:
            session.cert = tuple(str(p) for p in self.files(name))
        session.verify = str(self.clients / "ca.pem")
        return session

    def client(self, name: str = "ws1") -> object:
        return dicomweb_api.DICOMwebClient(self.url, session=self.session(name))


def running_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """A served archive holding two studies (PAT001: 3 CT images, PAT002: 2 MR)."""
    tmp = tmp_path_factory.mktemp("dicomweb")
    data, out = tmp / "data", tmp / "clients"
    ca(data, "init")
    ca(data, "group", "create", "radiology", "--allow", "echo,store,find,move,get")
    ca(data, "group", "create", "senders", "--allow", "echo,store")
    ca(data, "group", "create", "lookers", "--allow", "find")
    for name, group in (("ws1", "radiology"), ("modality", "senders"), ("gone", "radiology"),
                        ("later", "radiology"), ("looker", "lookers"),
                        ("orthanc", "radiology")):
        ca(data, "issue", "client", "--name", name, "--org", "St Elsewhere", "--group", group,
           "--out", str(out))
    ca(data, "revoke", "gone")
    port, viewer_port = free_port(), free_port()
    server = data_server(tmp, data, "serve", viewer_port=viewer_port,
                         dicomweb_port=port).start()
    try:
        found = Archive(server, port, viewer_port, out, data)
        first = write_study(tmp / "a", 3, patient_id="PAT001", patient_name="Doe^Jane",
                            study_date="20240115", rows=64, columns=64)
        second = write_study(tmp / "b", 2, patient_id="PAT002", patient_name="Roe^Richard",
                             study_date="20250301", modality="MR", study_description="Knee")
        key, cert, ca_pem = out / "modality.key", out / "modality.pem", out / "ca.pem"
        sent = dcmtk("storescu", *tls_args(key, cert, ca_pem), "-aec", "SECUREPACS", HOST,
                     str(server.port), *first, *second, timeout=60)
        assert sent.returncode == 0, sent.stderr
        from pydicom import dcmread

        for files in (first, second):
            found.studies[str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)] = files
        yield found
    finally:
        server.stop()


def _uids(archive: Archive) -> tuple[str, str]:
    return tuple(archive.studies)  # type: ignore[return-value]
