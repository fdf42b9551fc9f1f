"""Deletion (issue 20) end to end on a real ``securepacs serve``.

Clinic A has an administrator d1 (group ``admins``: find, get, store, delete) and a user a1
(group ``clinic``: no delete); Clinic B a user b1. Studies go in with DCMTK ``storescu``
over TLS; ``securepacs delete`` deletes on the server through its DICOMweb ``DELETE``
with d1's certificate; afterwards DCMTK ``findscu`` and ``securepacs get`` find nothing,
no blob is left without its row nor a row without its blob, and the audit trail holds
the deletion. Refusals: no ``delete`` permission (403, exit 3), another organisation's
study (answered exactly as an unknown one), another origin. A study deleted while
another association stores into it and a third retrieves it; a server killed (SIGKILL)
between the index and the blob step, whose restart finishes the deletion. Two instances
sharing PostgreSQL + Azurite: deleted on one, gone from both. Every wait is bounded.
"""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from catools import ca, data_server
from harness import (
    HOST,
    ROOT,
    SECUREPACS,
    Server,
    dcmtk,
    free_port,
    needs_dcmtk,
    tls_args,
    wait_for_port,
)

from factories import write_study
from securepacs.index.deletion import SqlDeletion
from securepacs.index.repository import SqlIndex
from securepacs.model.deletion import DeletionTarget

pytestmark = [pytest.mark.integration, needs_dcmtk]


def cli(*args: object, timeout: float = 60, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SECUREPACS, *(str(a) for a in args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, input=stdin,
                          env=env if env is not None else None)


@dataclass
class Site:
    server: Server
    data: Path
    clients: Path
    dicomweb_port: int
    tmp: Path
    viewer_port: int = 0

    # -- peers -------------------------------------------------------------------------
    def tls(self, name: str) -> list[str]:
        return tls_args(self.clients / f"{name}.key", self.clients / f"{name}.pem",
                        self.clients / "ca.pem")

    def store(self, name: str, *files: Path, port: int | None = None) -> None:
        sent = dcmtk("storescu", *self.tls(name), "-aec", "SECUREPACS", HOST,
                     str(port or self.server.port), *files, timeout=120)
        assert sent.returncode == 0, sent.stderr

    def find(self, name: str, study: str, port: int | None = None) -> list[pydicom.Dataset]:
        out = self.tmp / f"find-{name}-{free_port()}"
        out.mkdir()
        result = dcmtk("findscu", *self.tls(name), "-S", "-aec", "SECUREPACS",
                       "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                       "-k", "NumberOfStudyRelatedInstances", "-k", "PatientID",
                       "-X", "-od", str(out), HOST, str(port or self.server.port), timeout=60)
        assert result.returncode == 0, result.stderr
        return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]

    def client_args(self, name: str) -> list[str]:
        return ["--server", f"{HOST}:{self.server.port}", "--aec", "SECUREPACS",
                "--cert", str(self.clients / f"{name}.pem"),
                "--key", str(self.clients / f"{name}.key"), "--ca", str(self.clients / "ca.pem")]

    def get(self, name: str, study: str) -> subprocess.CompletedProcess[str]:
        return cli("get", "--study", study, "--to", self.tmp / f"get-{name}-{free_port()}",
                   *self.client_args(name))

    def delete(self, name: str, *args: str, port: int | None = None,
               stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return cli("delete", *args, "--dicomweb",
                   f"https://{HOST}:{port or self.dicomweb_port}/dicomweb",
                   "--cert", self.clients / f"{name}.pem", "--key", self.clients / f"{name}.key",
                   "--ca", self.clients / "ca.pem", stdin=stdin)

    def http(self, name: str | None, method: str, path: str,
             headers: dict[str, str] | None = None) -> tuple[int, str]:
        context = ssl.create_default_context(cafile=str(self.clients / "ca.pem"))
        context.check_hostname = False
        if name is not None:
            context.load_cert_chain(self.clients / f"{name}.pem", self.clients / f"{name}.key")
        conn = http.client.HTTPSConnection(HOST, self.dicomweb_port, context=context,
                                           timeout=30)
        try:
            conn.request(method, f"/dicomweb{path}", headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def viewer(self, name: str, method: str, path: str, body: str | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, str]:
        context = ssl.create_default_context(cafile=str(self.clients / "ca.pem"))
        context.check_hostname = False
        context.load_cert_chain(self.clients / f"{name}.pem", self.clients / f"{name}.key")
        conn = http.client.HTTPSConnection(HOST, self.viewer_port, context=context, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def audit(self, kind: str) -> str:
        listed = cli("audit", "--data-dir", self.data, "list", "--type", kind)
        assert listed.returncode == 0, listed.stderr
        return listed.stdout

    # -- the stores, read directly -------------------------------------------------------
    def consistent(self) -> int:
        """Every blob has its row and every row its blob, nothing pending: the count."""
        from securepacs.blobs.filesystem import FileBlobStore

        url = f"sqlite:///{self.data / 'index.sqlite'}"
        index, deletion = SqlIndex(url), SqlDeletion(url)
        try:
            keys = set(FileBlobStore(self.data / "blobs").keys())
            assert index.referenced_blob_keys(keys) == keys, "a blob without its row"
            assert index.count_instances() == len(keys), "a row without its blob"
            assert deletion.pending() == []
            return len(keys)
        finally:
            index.close()
            deletion.close()

    def indexed(self, study: str) -> int:
        url = f"sqlite:///{self.data / 'index.sqlite'}"
        deletion = SqlDeletion(url)
        try:
            return sum(r.instances for r in deletion.find(DeletionTarget.study(study),
                                                          organizations=None))
        finally:
            deletion.close()


def study_of(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0]).StudyInstanceUID)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("delete")
    data, out = tmp / "data", tmp / "clients"
    ca(data, "init")
    ca(data, "group", "create", "admins", "--allow", "echo,store,find,get,delete")
    ca(data, "group", "create", "clinic", "--allow", "echo,store,find,move,get")
    for name, org, group in (("d1", "Clinic A", "admins"), ("a1", "Clinic A", "clinic"),
                             ("b1", "Clinic B", "clinic")):
        ca(data, "issue", "client", "--name", name, "--org", org, "--group", group,
           "--out", str(out))
    dicomweb_port, viewer_port = free_port(), free_port()
    server = data_server(tmp, data, "serve", viewer_port=viewer_port,
                         dicomweb_port=dicomweb_port).start()
    try:
        yield Site(server, data, out, dicomweb_port, tmp, viewer_port)
    finally:
        server.stop()


def test_group_list_shows_delete_and_all_leaves_it_out(site: Site) -> None:
    listed = ca(site.data, "group", "list").stdout
    assert "admins: delete, echo, find, get, store  (deletes its organisation's studies)" \
        in listed, listed
    made = ca(site.data, "group", "create", "everything", "--allow", "all").stdout
    assert "delete" not in made


def test_delete_by_cli_then_gone_from_findscu_and_get(site: Site) -> None:
    files = write_study(site.tmp / "s1", 3, patient_id="PAT-DEL1", patient_name="Wrong^Patient")
    study = study_of(files)
    site.store("a1", *files)
    assert [str(ds.NumberOfStudyRelatedInstances) for ds in site.find("a1", study)] == ["3"]
    # without --yes (and no terminal to ask on): nothing deleted, patient and study named
    asked = site.delete("d1", "--study", study, stdin="y\n")
    assert asked.returncode == 1, asked.stderr
    assert "Wrong^Patient" in asked.stderr and "PAT-DEL1" in asked.stderr, asked.stderr
    assert study in asked.stderr and "not deleted" in asked.stderr
    assert len(site.find("a1", study)) == 1

    done = site.delete("d1", "--study", study, "--reason", "sent to the wrong patient", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"deleted study {study}" in done.stdout
    assert site.find("a1", study) == []
    gone, unknown = site.get("a1", study), site.get("a1", "1.2.3.999")
    assert gone.returncode == unknown.returncode == 1
    assert gone.stderr.replace(study, "UID") == unknown.stderr.replace("1.2.3.999", "UID")
    assert site.indexed(study) == 0
    site.consistent()
    # again: now unknown
    again = site.delete("d1", "--study", study, "--yes")
    assert again.returncode == 1 and "no study" in again.stderr, again.stderr
    audit = site.audit("instances-accessed")
    line = next(x for x in audit.splitlines() if f"study {study} deleted" in x)
    assert "ok" in line and "PAT-DEL1" in line and "CN=d1" in line
    assert "3 instance(s)" in line and "reason: sent to the wrong patient" in line


def test_series_and_instance_by_cli(site: Site) -> None:
    first = write_study(site.tmp / "s2a", 2, patient_id="PAT-DEL2")
    study = study_of(first)
    second = write_study(site.tmp / "s2b", 2, patient_id="PAT-DEL2", study_uid=study,
                         modality="MR")
    site.store("a1", *first, *second)
    series = str(pydicom.dcmread(second[0]).SeriesInstanceUID)
    sop = str(pydicom.dcmread(first[0]).SOPInstanceUID)
    assert site.delete("d1", "--series", series, "--yes").returncode == 0
    assert site.delete("d1", "--instance", sop, "--yes").returncode == 0
    assert [str(ds.NumberOfStudyRelatedInstances) for ds in site.find("a1", study)] == ["1"]
    site.consistent()
    usage = site.delete("d1", "--series", series, "--study", study)
    assert usage.returncode == 2 and "exactly one" in usage.stderr
    nowhere = site.delete("d1", "--study", study, "--yes", port=free_port())
    assert nowhere.returncode == 3 and "cannot reach" in nowhere.stderr, nowhere.stderr


def test_refusals(site: Site) -> None:
    mine = write_study(site.tmp / "r-a", 1, patient_id="PAT-RA")
    theirs = write_study(site.tmp / "r-b", 1, patient_id="PAT-RB")
    site.store("a1", *mine)
    site.store("b1", *theirs)
    a_study, b_study = study_of(mine), study_of(theirs)
    # no delete permission: refused (exit 3), audited, nothing deleted
    refused = site.delete("a1", "--study", a_study, "--yes")
    assert refused.returncode == 3, refused.stderr
    assert "'delete' permission" in refused.stderr and "Traceback" not in refused.stderr
    assert "delete permission missing" in site.audit("security-alert")
    # another organisation's study: answered exactly as an unknown one
    other = site.delete("d1", "--study", b_study, "--yes")
    unknown = site.delete("d1", "--study", "1.2.3.999", "--yes")
    assert other.returncode == unknown.returncode == 1
    assert other.stderr.replace(b_study, "UID") == unknown.stderr.replace("1.2.3.999", "UID")
    status, body = site.http("d1", "DELETE", f"/studies/{b_study}")
    status2, body2 = site.http("d1", "DELETE", "/studies/1.2.3.999")
    assert status == status2 == 404 and body.replace(b_study, "U") == body2.replace("1.2.3.999", "U")
    assert site.http("a1", "DELETE", f"/studies/{a_study}")[0] == 403
    assert site.http(None, "DELETE", f"/studies/{a_study}")[0] == 403
    # a state-changing request from another origin
    assert site.http("d1", "DELETE", f"/studies/{a_study}",
                     {"Origin": "https://evil.example"})[0] == 403
    # a series under another study in the URL is unknown
    series = str(pydicom.dcmread(mine[0]).SeriesInstanceUID)
    assert site.http("d1", "DELETE", f"/studies/{b_study}/series/{series}")[0] == 404
    assert site.http("d1", "DELETE", "/studies/1.2.x")[0] in (400, 404)
    assert len(site.find("a1", a_study)) == 1 and len(site.find("b1", b_study)) == 1
    assert site.indexed(b_study) == 1
    # the owner's administrator deletes by DICOMweb: 204
    assert site.http("d1", "DELETE", f"/studies/{a_study}")[0] == 204
    assert site.find("a1", a_study) == []


def test_delete_from_the_archive_viewer(site: Site) -> None:
    import re
    from urllib.parse import urlencode

    files = write_study(site.tmp / "v", 2, patient_id="PAT-VIEW", patient_name="Viewer^Vic")
    study = study_of(files)
    site.store("a1", *files)
    status, page = site.viewer("d1", "GET", f"/study/{study}")
    assert status == 200 and 'id="delete-study"' in page
    status, page = site.viewer("a1", "GET", f"/study/{study}")
    assert status == 200 and 'id="delete-study"' not in page
    assert site.viewer("a1", "GET", f"/study/{study}/delete")[0] == 403
    status, page = site.viewer("d1", "GET", f"/study/{study}/delete")
    assert status == 200, page
    assert "Viewer Vic" in page and "PAT-VIEW" in page and study in page and "2 image(s)" in page
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None
    own = {"Origin": f"https://{HOST}:{site.viewer_port}",
           "Content-Type": "application/x-www-form-urlencoded"}
    form = urlencode({"csrf": found.group(1), "reason": "test of the viewer"})
    # another origin, no origin, no token: refused, nothing deleted
    evil = dict(own, Origin="https://evil.example")
    assert site.viewer("d1", "POST", f"/study/{study}/delete", form, evil)[0] == 403
    assert site.viewer("d1", "POST", f"/study/{study}/delete", form,
                       {"Content-Type": own["Content-Type"]})[0] == 403
    assert site.viewer("d1", "POST", f"/study/{study}/delete", "reason=x", own)[0] == 403
    assert site.viewer("a1", "POST", f"/study/{study}/delete", form, own)[0] == 403
    assert len(site.find("a1", study)) == 1
    status, page = site.viewer("d1", "POST", f"/study/{study}/delete", form, own)
    assert status == 200 and 'id="deleted"' in page and "PAT-VIEW" in page, page
    assert site.find("a1", study) == []
    assert site.viewer("d1", "GET", f"/study/{study}/delete")[0] == 404
    assert "reason: test of the viewer" in site.audit("instances-accessed")
    site.consistent()


def test_operator_delete_into_the_trash_then_restore(site: Site) -> None:
    """The operator form with trash_days: gone from findscu at once, back after
    ``restore-deleted``, retrievable again with every image."""
    from harness import write_config

    files = write_study(site.tmp / "t", 3, patient_id="PAT-TRASH")
    study = study_of(files)
    site.store("a1", *files)
    config = write_config(site.tmp / "trash.toml", data_dir=str(site.data), trash_days=2)
    done = cli("delete", "--config", config, "--study", study, "--yes", "--reason", "oops")
    assert done.returncode == 0, done.stderr
    assert "3 instance(s)" in done.stdout and "restorable until" in done.stdout
    assert site.find("a1", study) == []
    assert len(list((site.data / "blobs").rglob("*"))) > 0
    again = cli("restore-deleted", "--config", config, "--study", study)
    assert again.returncode == 0, again.stderr
    assert f"restored study {study}: 3 instance(s)" in again.stdout
    assert [str(ds.NumberOfStudyRelatedInstances) for ds in site.find("a1", study)] == ["3"]
    got = site.get("a1", study)
    assert got.returncode == 0 and "retrieved 3 instance(s)" in got.stdout, got.stderr
    nothing = cli("restore-deleted", "--config", config, "--study", study)
    assert nothing.returncode == 1 and "no deleted study" in nothing.stderr
    site.consistent()
    audit = site.audit("instances-accessed")
    assert f"study {study} restored from the trash" in audit
    assert "restorable until" in audit


def test_a_trashed_study_survives_backup_and_restore(site: Site) -> None:
    """``securepacs backup`` copies the trash: ``restore-deleted`` works on the restored
    data folder as on the original."""
    from harness import write_config

    files = write_study(site.tmp / "tb", 2, patient_id="PAT-TRASH-BK")
    study = study_of(files)
    site.store("a1", *files)
    config = write_config(site.tmp / "trash-bk.toml", data_dir=str(site.data), trash_days=2)
    done = cli("delete", "--config", config, "--study", study, "--yes")
    assert done.returncode == 0, done.stderr
    taken = cli("backup", "--config", config, "--to", site.tmp / "bk-trash")
    assert taken.returncode == 0, taken.stderr
    assert "2 deleted instance(s) kept in the trash included" in taken.stdout
    assert cli("backup", "--config", config, "--verify", site.tmp / "bk-trash").returncode == 0
    new = write_config(site.tmp / "restored.toml", data_dir=str(site.tmp / "restored"),
                       trash_days=2)
    back = cli("restore", "--config", new, "--from", site.tmp / "bk-trash")
    assert back.returncode == 0, back.stderr
    again = cli("restore-deleted", "--config", new, "--study", study)
    assert again.returncode == 0, again.stderr
    assert f"restored study {study}: 2 instance(s)" in again.stdout
    # the original still has it in its trash: put it back there too (the module's state)
    assert cli("restore-deleted", "--config", config, "--study", study).returncode == 0


def test_deleted_while_one_stores_into_it_and_another_retrieves_it(site: Site) -> None:
    """Outcome defined: every C-STORE succeeds (one that lands after the deletion files
    a fresh study of the same UID); the C-GET completes or fails with a one-line error;
    none of the instances present at the deletion stays; no orphan blob, no row without
    its blob; a store after it all makes a fresh study."""
    base = write_study(site.tmp / "c-base", 30, patient_id="PAT-RACE")
    study = study_of(base)
    late = write_study(site.tmp / "c-late", 200, patient_id="PAT-RACE", study_uid=study)
    site.store("a1", *base)
    env = dict(os.environ, TCP_NODELAY="1")
    sender = subprocess.Popen(["storescu", *site.tls("a1"), "-aec", "SECUREPACS", HOST,
                               str(site.server.port), *map(str, late)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env)
    getter = subprocess.Popen([*SECUREPACS, "get", "--study", study, "--to",
                               str(site.tmp / "c-got"), *site.client_args("a1")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while site.indexed(study) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, body = site.http("d1", "DELETE", f"/studies/{study}")
        assert status == 204, body
        sent = sender.communicate(timeout=120)[0]
        got_out, got_err = getter.communicate(timeout=120)
    finally:
        for proc in (sender, getter):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert sender.returncode == 0, sent[-2000:]
    assert getter.returncode in (0, 1), got_err
    assert "Traceback" not in got_err + got_out
    if getter.returncode == 1:
        assert got_err.strip() and len(got_err.strip().splitlines()) <= 3, got_err
    # nothing of what was there at the deletion remains; what came after is whole
    url = f"sqlite:///{site.data / 'index.sqlite'}"
    index = SqlIndex(url)
    try:
        base_uids = {str(pydicom.dcmread(f).SOPInstanceUID) for f in base}
        assert not [u for u in base_uids if index.get(u) is not None]
    finally:
        index.close()
    remaining = site.indexed(study)
    assert remaining < len(late)
    site.consistent()
    extra = write_study(site.tmp / "c-after", 1, patient_id="PAT-RACE", study_uid=study)
    site.store("a1", *extra)
    [found] = site.find("a1", study)
    assert str(found.NumberOfStudyRelatedInstances) == str(remaining + 1)


def test_wado_rs_study_retrieve_cut_by_a_deletion_is_aborted_not_ended(site: Site) -> None:
    """A WADO-RS study retrieve streaming while the study is deleted: the instances not yet
    read are gone, so the response must end as a broken transfer (no final chunk, no closing
    boundary), never as a complete multipart with fewer parts; the server logs one line."""
    import re

    count = 20  # 2 MB each: far more than the socket buffers hold, so the stream waits
    files = write_study(site.tmp / "w", count, patient_id="PAT-WADO", rows=1024,
                        columns=1024)
    study = study_of(files)
    site.store("a1", *files)
    context = ssl.create_default_context(cafile=str(site.clients / "ca.pem"))
    context.check_hostname = False
    context.load_cert_chain(site.clients / "a1.pem", site.clients / "a1.key")
    conn = http.client.HTTPSConnection(HOST, site.dicomweb_port, context=context, timeout=60)
    log_start = len(site.server.log())
    try:
        conn.request("GET", f"/dicomweb/studies/{study}",
                     headers={"Accept": 'multipart/related; type="application/dicom"'})
        response = conn.getresponse()
        assert response.status == 200
        found = re.search(r"boundary=([^;\s]+)", response.getheader("Content-Type") or "")
        assert found is not None
        boundary = found.group(1).strip('"').encode()
        body = response.read(1 << 20)  # the stream has started
        status, text = site.http("d1", "DELETE", f"/studies/{study}")
        assert status == 204, text
        try:
            body += response.read()
            complete = True
        except (http.client.IncompleteRead, OSError) as exc:
            body += getattr(exc, "partial", b"")
            complete = False
    finally:
        conn.close()
    parts = body.count(b"--" + boundary + b"\r\n")
    closed = body.rstrip().endswith(b"--" + boundary + b"--")
    assert not (closed and parts < count), f"a multipart of {parts} parts ended normally"
    assert not complete and not closed, "the retrieve should have been cut by the deletion"
    assert 0 < parts < count
    logged = site.server.wait_for_log(r"WADO-RS .* aborted", timeout=10)
    assert "Traceback" not in site.server.log()[log_start:], site.server.log()[log_start:]
    assert study in logged.string[logged.start():].splitlines()[0]


def test_sigkill_between_index_and_blobs_then_restart_sweeps(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_study(site.tmp / "k", 3, patient_id="PAT-KILL")
    study = study_of(files)
    site.store("a1", *files)
    site.server.stop()
    monkeypatch.setenv("SECUREPACS_TEST_CRASH_AFTER", "index")
    site.server.start()
    wait_for_port(site.dicomweb_port, site.server.proc)
    monkeypatch.delenv("SECUREPACS_TEST_CRASH_AFTER")
    try:
        answer = site.http("d1", "DELETE", f"/studies/{study}")
    except (OSError, http.client.HTTPException):
        answer = None  # the server died answering
    assert answer is None, answer
    assert site.server.proc is not None
    assert site.server.proc.wait(timeout=30) == -9
    url = f"sqlite:///{site.data / 'index.sqlite'}"
    deletion = SqlDeletion(url)
    try:
        pending = deletion.pending()
    finally:
        deletion.close()
    assert len(pending) == 3 and site.indexed(study) == 0
    from securepacs.blobs.filesystem import FileBlobStore
    blobs = FileBlobStore(site.data / "blobs")
    assert all(blobs.path(k).exists() for k in pending)
    site.server.start()
    wait_for_port(site.dicomweb_port, site.server.proc)
    site.server.wait_for_log(r"finished 3 blob deletion\(s\)")
    assert not any(blobs.path(k).exists() for k in pending)
    site.consistent()
    assert site.find("a1", study) == []
    # the deletion's audit record was stored before the kill, and the chain is whole
    assert f"study {study} deleted (3 instance(s))" in site.audit("instances-accessed")
    verified = cli("audit", "--data-dir", site.data, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.fixture
def shared_engines(monkeypatch: pytest.MonkeyPatch, pg_url: str, azurite,  # noqa: ANN001
                   azure_container: str) -> dict[str, str]:
    """PostgreSQL + Azurite for every securepacs process this test starts."""
    env = {"SECUREPACS_DATABASE_URL": pg_url, "SECUREPACS_BLOB_BACKEND": "azure",
           "SECUREPACS_AZURE_CONNECTION_STRING": azurite.connection_string,
           "SECUREPACS_AZURE_CONTAINER": azure_container}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {"url": pg_url, "azure": azurite.connection_string, "container": azure_container}


def test_two_instances_on_postgresql_and_azurite(tmp_path: Path,
                                                  shared_engines: dict[str, str]) -> None:
    from securepacs.blobs.azure import AzureBlobStore

    data, out = tmp_path / "data", tmp_path / "clients"
    ca(data, "init")
    ca(data, "group", "create", "admins", "--allow", "echo,store,find,get,delete")
    ca(data, "issue", "client", "--name", "d1", "--org", "Clinic A", "--group", "admins",
       "--out", str(out))
    ports = [free_port(), free_port()]
    servers = [data_server(tmp_path, data, name, viewer_port=0, dicomweb_port=port).start()
               for name, port in zip("ab", ports, strict=True)]
    try:
        site = Site(servers[0], data, out, ports[0], tmp_path)
        files = write_study(tmp_path / "pg", 4, patient_id="PAT-PG")
        keep = write_study(tmp_path / "pg-keep", 1, patient_id="PAT-PG2")
        study = study_of(files)
        site.store("d1", *files, *keep)
        for srv in servers:
            assert len(site.find("d1", study, port=srv.port)) == 1
        done = site.delete("d1", "--study", study, "--yes", port=ports[1])  # on instance b
        assert done.returncode == 0, done.stderr
        for srv in servers:
            assert site.find("d1", study, port=srv.port) == []
            assert len(site.find("d1", study_of(keep), port=srv.port)) == 1
    finally:
        for srv in servers:
            srv.stop()
    index = SqlIndex(shared_engines["url"])
    deletion = SqlDeletion(shared_engines["url"])
    try:
        keys = set(AzureBlobStore(shared_engines["azure"], shared_engines["container"]).keys())
        assert len(keys) == index.count_instances() == 1
        assert index.referenced_blob_keys(keys) == keys
        assert deletion.pending() == []
    finally:
        index.close()
        deletion.close()
    assert not (data / "index.sqlite").exists()
