"""The archive and CA integration tests a second time, on PostgreSQL + Azurite (issue 9).

The existing tests are reused as they are: ``SECUREPACS_DATABASE_URL`` and the
``SECUREPACS_*AZURE*`` variables are set for the test, and every ``securepacs serve`` and
``securepacs ca`` process the test starts inherits them, so the same assertions now run
against a private PostgreSQL cluster and Azurite (see ``tests/pgfixtures.py``). Then what
only shared engines can show: two instances storing the same SOP Instance at once, and
the operator commands ``db migrate`` and ``check``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import test_archive_dcmtk as archive
import test_ca_trust as trust
from catools import ca
from harness import HOST, SECUREPACS, dcmtk, make_server, needs_dcmtk, tls_args, write_config
from pydicom import dcmread
from pynetdicom import evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)
from scu import associate
from test_retrieve import dataset_bytes, store_files, study_identifier

from factories import write_study
from securepacs.blobs.azure import AzureBlobStore
from securepacs.index.migrate import head
from securepacs.index.repository import SqlIndex

HEAD = head()  # the newest migration revision

pytestmark = [pytest.mark.integration]


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch, pg_url: str, azurite, azure_container: str) -> dict:  # noqa: ANN001
    """PostgreSQL + Azurite for every securepacs process this test starts."""
    env = {
        "SECUREPACS_DATABASE_URL": pg_url,
        "SECUREPACS_BLOB_BACKEND": "azure",
        "SECUREPACS_AZURE_CONNECTION_STRING": azurite.connection_string,
        "SECUREPACS_AZURE_CONTAINER": azure_container,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {"url": pg_url, "azure": azurite.connection_string, "container": azure_container}


def stored_everywhere(engines: dict, count: int) -> None:
    """`count` rows in PostgreSQL, `count` blobs in Azurite, each row's blob present."""
    index = SqlIndex(engines["url"])
    try:
        assert index.count_instances() == count
        keys = list(AzureBlobStore(engines["azure"], engines["container"]).keys())
        assert len(keys) == count
        assert index.referenced_blob_keys(keys) == set(keys), "a blob without a row"
    finally:
        index.close()


@needs_dcmtk
def test_store_100_then_find_by_patient_and_date_range(engines: dict, pki, tmp_path: Path) -> None:  # noqa: ANN001
    srv = make_server(tmp_path, pki).start()
    try:
        archive.test_store_then_find_by_patient_and_date_range(srv, pki, tmp_path)
    finally:
        srv.stop()
    stored_everywhere(engines, 100)
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file() and "blobs" in p.parts]
    assert not (tmp_path / "data" / "index.sqlite").exists()


@needs_dcmtk
def test_storescu_50_then_get_is_byte_identical(engines: dict, pki, tmp_path: Path) -> None:  # noqa: ANN001
    files = write_study(tmp_path / "src", 50, rows=32, columns=32)
    srv = make_server(tmp_path, pki).start()
    try:
        sent = dcmtk("storescu", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert),
                     "-aec", srv.ae_title, HOST, str(srv.port), *files, timeout=120)
        assert sent.returncode == 0, sent.stderr + sent.stdout
        assert store_files(srv.port, pki, files[:1]) == [0xB006]  # duplicate: kept, Warning
        received: dict[str, bytes] = {}

        def on_store(event) -> int:  # noqa: ANN001
            received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
            return 0x0000

        assoc = associate(srv.port, pki.client.key, pki.client.cert, pki.ca_cert,
                          get_classes=(CTImageStorage,), handlers=[(evt.EVT_C_STORE, on_store)])
        statuses = [int(s.Status) for s, _ in assoc.send_c_get(
            study_identifier(dcmread(files[0]).StudyInstanceUID),
            StudyRootQueryRetrieveInformationModelGet) if s]
        assoc.release()
    finally:
        srv.stop()
    assert statuses[-1] == 0x0000
    assert len(received) == 50
    for f in files:
        assert received[dcmread(f).SOPInstanceUID] == dataset_bytes(f.read_bytes())
    stored_everywhere(engines, 50)


def test_get_and_duplicate_warning_rerun(engines: dict, pki, tmp_path: Path) -> None:  # noqa: ANN001
    import test_retrieve

    srv = make_server(tmp_path, pki).start()
    try:
        test_retrieve.test_get_returns_identical_bytes_and_duplicates_warn(srv, pki, tmp_path)
    finally:
        srv.stop()
    stored_everywhere(engines, 4)


@needs_dcmtk
def test_kill_during_storescu_then_restart(engines: dict, pki, tmp_path: Path) -> None:  # noqa: ANN001
    """test_crash on PostgreSQL + Azurite: SIGKILL after 60 acknowledged images of 200;
    after the restart every acknowledged image is indexed and intact in Azure, and the
    start-up check left no blob without a row."""
    files = write_study(tmp_path / "src", 200, rows=64, columns=64)
    by_uid = {dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in files}
    srv = make_server(tmp_path, pki).start()
    sender = subprocess.Popen(
        ["storescu", "-v", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert),
         "-aec", srv.ae_title, HOST, str(srv.port), *map(str, files)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"})
    assert sender.stdout is not None
    successes = 0
    for line in sender.stdout:
        if "Received Store Response (Success)" in line:
            successes += 1
            if successes == 60:
                srv.kill()  # SIGKILL: no clean-up of any kind
    sender.wait(timeout=60)
    assert 60 <= successes < 200
    acknowledged = [dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files[:successes]]
    restarted = make_server(tmp_path, pki)
    restarted.log_path = tmp_path / "server2.log"
    restarted.start()
    restarted.stop()
    index = SqlIndex(engines["url"])
    store = AzureBlobStore(engines["azure"], engines["container"])
    try:
        for uid in acknowledged:
            assert index.get(uid) is not None, f"acknowledged instance {uid} was lost"
        keys = set(store.keys())
        assert index.referenced_blob_keys(keys) == keys, "an orphan blob survived the restart"
        assert len(keys) == index.count_instances()
        for uid, f in by_uid.items():
            stored = index.get(uid)
            if stored is not None:
                assert dataset_bytes(store.read(stored.blob_key)) == dataset_bytes(f.read_bytes())
    finally:
        index.close()


_RESPONSE = re.compile(r"Received Store Response \(([^)]*)\)")


@needs_dcmtk
def test_two_instances_store_the_same_instances_at_once(engines: dict, pki, tmp_path: Path) -> None:  # noqa: ANN001
    """Both clients send the same 40 SOP Instances at the same moment, one to each instance:
    one row and one blob per instance, and every C-STORE answered Success or the duplicate
    Warning, exactly one Success per instance."""
    files = write_study(tmp_path / "src", 40)
    servers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        servers.append(make_server(tmp_path / name, pki).start())
    try:
        senders = [subprocess.Popen(
            ["storescu", "-v", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert),
             "-aec", srv.ae_title, HOST, str(srv.port), *map(str, files)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}) for srv in servers]
        outputs = [s.communicate(timeout=120)[0] for s in senders]
    finally:
        for srv in servers:
            srv.stop()
    answers = [_RESPONSE.findall(out) for out in outputs]
    for out, got in zip(outputs, answers, strict=True):
        assert len(got) == 40, out[-2000:]
        assert all(a == "Success" or a.startswith("Warning") for a in got), sorted(set(got))
    successes = sum(a == "Success" for got in answers for a in got)
    assert successes == 40, f"{successes} Success answers for 40 instances"
    stored_everywhere(engines, 40)


@pytest.fixture
def pg_folder(engines: dict, tmp_path: Path) -> Path:
    """test_ca_trust's `folder` (CA and two groups), its trust tables in PostgreSQL."""
    data = tmp_path / "data"
    ca(data, "init")
    ca(data, "group", "create", "radiology", "--allow", "echo,store,find,move,get")
    ca(data, "group", "create", "readers", "--allow", "echo,find")
    return data


@needs_dcmtk
def test_revocation_on_a_enforced_by_b_within_5s(tmp_path: Path, pg_folder: Path) -> None:
    trust.test_revocation_reaches_two_running_servers_within_5s(tmp_path, pg_folder)
    assert not (pg_folder / "index.sqlite").exists(), "trust went to SQLite, not PostgreSQL"


@needs_dcmtk
def test_permission_matrix_rerun(tmp_path: Path, pg_folder: Path) -> None:
    trust.test_permission_matrix_and_ae_binding(tmp_path, pg_folder)


@needs_dcmtk
def test_move_to_storescp_over_tls_rerun(engines: dict, pki, tmp_path: Path) -> None:  # noqa: ANN001
    import test_retrieve

    test_retrieve.test_move_to_storescp(tmp_path, pki, True)
    stored_everywhere(engines, 5)


def test_get_conversion_and_failure_rerun(engines: dict, pki, tmp_path: Path) -> None:  # noqa: ANN001
    import test_retrieve

    srv = make_server(tmp_path, pki).start()
    try:
        test_retrieve.test_get_converts_between_uncompressed_syntaxes_or_reports_failure(
            srv, pki, tmp_path)
    finally:
        srv.stop()
    stored_everywhere(engines, 3)


def test_enrolment_rerun(tmp_path: Path, pg_folder: Path) -> None:
    trust.test_enrolment_end_to_end_reuse_and_expiry(tmp_path, pg_folder)
    assert not (pg_folder / "index.sqlite").exists(), "tokens went to SQLite, not PostgreSQL"


@needs_dcmtk
def test_crl_and_rotation_rerun(tmp_path: Path, pg_folder: Path) -> None:
    trust.test_dcmtk_checks_the_server_against_our_crl(tmp_path / "crl", pg_folder)
    trust.test_server_certificate_rotation_during_a_send(tmp_path / "rotation", pg_folder)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SECUREPACS, *args], capture_output=True, text=True, timeout=60,
                          env=None if env is None else {**os.environ, **env})


def test_db_migrate_and_check(pg_url: str, pki, tmp_path: Path, postgres, azurite,  # noqa: ANN001
                              azure_container: str) -> None:
    first = run("db", "migrate", "--database-url", pg_url)
    assert first.returncode == 0, first.stderr
    assert f"upgraded from empty to revision {HEAD}" in first.stdout
    again = run("db", "migrate", "--database-url", pg_url)
    assert f"already at revision {HEAD}" in again.stdout
    (tmp_path / "blobs").mkdir(mode=0o700)
    tmp_path.chmod(0o700)  # a data folder is private (check fails on a looser one)
    cfg = write_config(tmp_path / "check.toml", data_dir=str(tmp_path), database_url=pg_url,
                       tls_cert=str(pki.server.cert), tls_key=str(pki.server.key),
                       tls_ca=str(pki.ca_cert), expiry_warning_days=7)
    cfg.chmod(0o600)
    good = run("check", "--config", str(cfg))
    assert good.returncode == 0, good.stderr
    assert [line.split(":")[0] for line in good.stdout.splitlines()] == [
        "ok    database", "ok    schema", "ok    blob store", "ok    server certificate",
        "ok    CA bundle", "ok    data folder modes"]
    assert f"revision {HEAD} (newest)" in good.stdout and "***" not in good.stdout
    on_azure = run("check", "--config", str(cfg), env={
        "SECUREPACS_BLOB_BACKEND": "azure", "SECUREPACS_AZURE_CONTAINER": azure_container,
        "SECUREPACS_AZURE_CONNECTION_STRING": azurite.connection_string})
    assert on_azure.returncode == 0, on_azure.stderr
    assert f"ok    blob store: Azure container '{azure_container}' at http://127.0.0.1" in on_azure.stdout
    assert "AccountKey" not in on_azure.stdout + on_azure.stderr
    # the test server certificate lives 30 days: a 60-day warning makes it fail
    dead = postgres.url("nosuchdb").replace(f":{postgres.port}/", ":1/")
    cfg.write_text(cfg.read_text().replace("expiry_warning_days = 7", "expiry_warning_days = 60"))
    bad = run("check", "--config", str(cfg), "--database-url", dead)
    assert bad.returncode == 1
    failing = [line.split(":")[0] for line in bad.stderr.splitlines()]
    assert failing == ["FAIL  database", "FAIL  schema", "FAIL  server certificate"], bad.stderr
    assert "within 60 days" in bad.stderr
    assert "ok    blob store" in bad.stdout and "ok    CA bundle" in bad.stdout
