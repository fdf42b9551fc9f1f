"""Organisations as tenants (issue 15), end to end on one ``securepacs serve``.

Three organisations on the data folder's CA: clinics A and B (store, find, get) and a
teleradiology reading group R with ``cross_org``. A and B store their own patients with
DCMTK ``storescu`` over TLS; then each one's DCMTK ``findscu``, ``securepacs get`` and the
HTTPS archive viewer see exactly their own studies, R sees all; ``securepacs share`` makes
one of A's studies visible to B while the server runs, and its revocation hides it again.
The same SOP Instance UID stored by B: identical bytes are accepted (B gains its copy),
other bytes are refused with a status that says nothing of A. Every wait is bounded.
"""

from __future__ import annotations

import http.client
import os
import re
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from catools import data_server
from harness import HOST, ROOT, SECUREPACS, Server, dcmtk, free_port, needs_dcmtk, tls_args

from factories import write_study

pytestmark = [pytest.mark.integration, needs_dcmtk]


def cli(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SECUREPACS, *(str(a) for a in args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def ca(data: Path, *args: str) -> None:
    from typer.testing import CliRunner

    from securepacs.cli.main import app

    result = CliRunner().invoke(app, ["ca", "--data-dir", str(data), *args])
    assert result.exit_code == 0, f"ca {' '.join(args)}: {result.output}"


@dataclass
class Tenants:
    server: Server
    data: Path
    clients: Path
    viewer_port: int
    studies: dict[str, str]  # patient id -> study UID
    files: dict[str, list[Path]]
    tmp: Path
    dicomweb_port: int = 0

    def tls(self, name: str) -> list[str]:
        return tls_args(self.clients / f"{name}.key", self.clients / f"{name}.pem",
                        self.clients / "ca.pem")

    def find(self, name: str, *keys: str, level: str = "STUDY") -> list[pydicom.Dataset]:
        out = Path(tempfile.mkdtemp(prefix=f"find-{name}-", dir=self.tmp))
        root = "-P" if level == "PATIENT" else "-S"
        args = ["findscu", *self.tls(name), root, "-aec", "SECUREPACS",
                "-k", f"QueryRetrieveLevel={level}"]
        for k in keys:
            args += ["-k", k]
        result = dcmtk(*args, "-X", "-od", str(out), HOST, str(self.server.port), timeout=60)
        assert result.returncode == 0, result.stderr
        return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]

    def patients(self, name: str) -> set[str]:
        return {str(ds.PatientID) for ds in self.find(name, "PatientID")}

    def store(self, name: str, *files: Path) -> subprocess.CompletedProcess[str]:
        return dcmtk("storescu", *self.tls(name), "-aec", "SECUREPACS", HOST,
                     str(self.server.port), *[str(f) for f in files], timeout=60)

    def get(self, name: str, study: str) -> subprocess.CompletedProcess[str]:
        c = ["--server", f"{HOST}:{self.server.port}", "--aec", "SECUREPACS",
             "--cert", str(self.clients / f"{name}.pem"),
             "--key", str(self.clients / f"{name}.key"), "--ca", str(self.clients / "ca.pem")]
        return cli("get", "--study", study, "--to", self.tmp / f"get-{name}-{free_port()}", *c)

    def move(self, name: str, study: str) -> subprocess.CompletedProcess[str]:
        """``securepacs move`` to DEST (configured on the server; nothing listens there)."""
        c = ["--server", f"{HOST}:{self.server.port}", "--aec", "SECUREPACS",
             "--cert", str(self.clients / f"{name}.pem"),
             "--key", str(self.clients / f"{name}.key"), "--ca", str(self.clients / "ca.pem")]
        return cli("move", "--study", study, "--dest", "DEST", *c)

    def qido(self, name: str) -> set[str]:
        """PatientIDs of the studies a dicomweb-client QIDO-RS search finds."""
        requests = pytest.importorskip("requests")
        api = pytest.importorskip("dicomweb_client.api")
        session = requests.Session()
        session.trust_env = False
        session.cert = (str(self.clients / f"{name}.pem"), str(self.clients / f"{name}.key"))
        session.verify = str(self.clients / "ca.pem")
        client = api.DICOMwebClient(f"https://{HOST}:{self.dicomweb_port}/dicomweb",
                                    session=session)
        found = client.search_for_studies()
        return {str(m["00100020"]["Value"][0]) for m in found}

    def wado_status(self, name: str, path: str) -> int:
        """HTTP status of a WADO-RS GET of `path` (under /dicomweb) with `name`'s certificate."""
        context = ssl.create_default_context(cafile=str(self.clients / "ca.pem"))
        context.check_hostname = False
        context.load_cert_chain(self.clients / f"{name}.pem", self.clients / f"{name}.key")
        conn = http.client.HTTPSConnection(HOST, self.dicomweb_port, context=context, timeout=20)
        try:
            conn.request("GET", f"/dicomweb{path}",
                         headers={"Accept": 'multipart/related; type="application/dicom"'})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def viewer(self, name: str, path: str = "/") -> tuple[int, str]:
        context = ssl.create_default_context(cafile=str(self.clients / "ca.pem"))
        context.check_hostname = False
        context.load_cert_chain(self.clients / f"{name}.pem", self.clients / f"{name}.key")
        conn = http.client.HTTPSConnection(HOST, self.viewer_port, context=context, timeout=20)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    tmp = tmp_path_factory.mktemp("tenants")
    data, out = tmp / "data", tmp / "clients"
    ca(data, "init")
    ca(data, "group", "create", "clinic", "--allow", "echo,store,find,move,get")
    ca(data, "group", "create", "reading", "--allow", "echo,find,get,cross_org")
    for name, org, group in (("a1", "Clinic A", "clinic"), ("b1", "Clinic B", "clinic"),
                             ("r1", "Teleradiology", "reading")):
        ca(data, "issue", "client", "--name", name, "--org", org, "--group", group,
           "--out", str(out))
    viewer_port, dicomweb_port = free_port(), free_port()
    server = data_server(tmp, data, "serve", viewer_port=viewer_port,
                         dicomweb_port=dicomweb_port, move_destinations=[
                             {"ae_title": "DEST", "host": HOST, "port": free_port(),
                              "tls": True}]).start()
    try:
        files = {
            "PAT-A1": write_study(tmp / "a1", 2, patient_id="PAT-A1", patient_name="Alpha^Ann"),
            "PAT-A2": write_study(tmp / "a2", 2, patient_id="PAT-A2", patient_name="Alpha^Bea",
                                  modality="MR"),
            "PAT-B1": write_study(tmp / "b1", 2, patient_id="PAT-B1", patient_name="Beta^Carl"),
        }
        found = Tenants(server, data, out, viewer_port,
                        {p: str(pydicom.dcmread(f[0]).StudyInstanceUID) for p, f in files.items()},
                        files, tmp, dicomweb_port)
        for name, patients in (("a1", ("PAT-A1", "PAT-A2")), ("b1", ("PAT-B1",))):
            sent = found.store(name, *[f for p in patients for f in files[p]])
            assert sent.returncode == 0, sent.stderr
        yield found
    finally:
        server.stop()


def test_each_organisation_finds_only_its_own(tenants: Tenants) -> None:
    assert tenants.patients("a1") == {"PAT-A1", "PAT-A2"}
    assert tenants.patients("b1") == {"PAT-B1"}
    assert tenants.patients("r1") == {"PAT-A1", "PAT-A2", "PAT-B1"}
    # every level, computed attributes included: A's study is absent for B, as an unknown UID
    a_study = tenants.studies["PAT-A1"]
    for level, keys in (("PATIENT", ("PatientID=PAT-A1", "NumberOfPatientRelatedInstances")),
                        ("STUDY", (f"StudyInstanceUID={a_study}", "ModalitiesInStudy")),
                        ("STUDY", ("ModalitiesInStudy=MR", "StudyInstanceUID")),
                        ("SERIES", (f"StudyInstanceUID={a_study}", "SeriesInstanceUID")),
                        ("STUDY", ("StudyInstanceUID=1.2.3.999",))):
        assert tenants.find("b1", *keys, level=level) == [], (level, keys)
    counts = tenants.find("a1", "PatientID=PAT-A1", "NumberOfPatientRelatedInstances",
                          level="PATIENT")
    assert [str(ds.NumberOfPatientRelatedInstances) for ds in counts] == ["2"]


def test_get_retrieves_only_what_the_caller_sees(tenants: Tenants) -> None:
    a_study = tenants.studies["PAT-A1"]
    own = tenants.get("a1", a_study)
    assert own.returncode == 0 and "retrieved 2 instance(s)" in own.stdout, own.stderr
    theirs = tenants.get("b1", a_study)
    unknown = tenants.get("b1", "1.2.3.999")
    # answered exactly as a study that does not exist
    assert theirs.returncode == unknown.returncode == 1
    assert theirs.stderr.replace(a_study, "UID") == unknown.stderr.replace("1.2.3.999", "UID")
    reader = tenants.get("r1", a_study)
    assert reader.returncode == 0 and "retrieved 2 instance(s)" in reader.stdout, reader.stderr
    # the reading group's use of cross_org is audited, naming both organisations
    for org in ("Clinic A", "Teleradiology"):
        listed = cli("audit", "--data-dir", tenants.data, "list", "--org", org,
                     "--type", "security-alert")
        assert listed.returncode == 0, listed.stderr
        line = f"Teleradiology read studies of another organisation by cross_org (Clinic A: {a_study})"
        assert line in listed.stdout, listed.stdout
    # Clinic B's records name the reading group's C-FIND of its studies, not this retrieve
    assert "read studies of another organisation by cross_org" not in cli(
        "audit", "--data-dir", tenants.data, "list", "--org", "Clinic B").stdout


def test_qido_rs_finds_only_what_the_caller_sees(tenants: Tenants) -> None:
    assert tenants.qido("a1") == {"PAT-A1", "PAT-A2"}
    assert tenants.qido("b1") == {"PAT-B1"}
    assert tenants.qido("r1") == {"PAT-A1", "PAT-A2", "PAT-B1"}


def test_wado_rs_answers_another_organisations_study_as_absent(tenants: Tenants) -> None:
    """Issue 16: a client of another organisation gets 404, exactly as for an unknown UID."""
    study = tenants.studies["PAT-A1"]
    assert tenants.wado_status("a1", f"/studies/{study}") == 200
    assert tenants.wado_status("b1", f"/studies/{study}") == 404
    assert tenants.wado_status("b1", "/studies/1.2.826.0.1.3680043.10.1234.404") == 404
    assert tenants.wado_status("r1", f"/studies/{study}") == 200


def test_archive_viewer_lists_only_what_the_caller_sees(tenants: Tenants) -> None:
    status, page = tenants.viewer("a1")
    assert status == 200 and "PAT-A1" in page and "PAT-A2" in page and "PAT-B1" not in page
    status, page = tenants.viewer("b1")
    assert status == 200 and "PAT-B1" in page and "PAT-A1" not in page
    status, _page = tenants.viewer("b1", f"/study/{tenants.studies['PAT-A1']}")
    assert status == 404
    status, page = tenants.viewer("r1")
    assert status == 200 and all(p in page for p in ("PAT-A1", "PAT-A2", "PAT-B1"))


def test_a_share_shows_a_study_while_the_server_runs_and_revoking_hides_it(
        tenants: Tenants) -> None:
    study = tenants.studies["PAT-A2"]
    granted = cli("share", "--data-dir", tenants.data, "study", study, "--with", "Clinic B",
                  "--read-only")
    assert granted.returncode == 0, granted.stderr
    share_id = re.search(r"share ([0-9a-f]+):", granted.stdout)
    assert share_id and "of Clinic A with Clinic B (read-only)" in granted.stdout
    assert tenants.patients("b1") == {"PAT-B1", "PAT-A2"}
    # read-only: found, never retrieved (the C-GET answers as for an unknown study: no
    # instance); the CLI says so in one line and fails, as for an unknown study
    nothing = tenants.get("b1", study)
    assert nothing.returncode == tenants.get("b1", "1.2.3.999").returncode == 1
    assert nothing.stderr.strip().splitlines()[-1] == (
        f"securepacs get: the server lists 2 instance(s) under --study {study} but sends "
        "none: you may find and view them, not retrieve them (a study shared with your "
        "organisation read-only); ask its owner for a full share"), nothing.stderr
    assert "retrieved" not in nothing.stdout and "Traceback" not in nothing.stderr
    assert not list(tenants.tmp.glob("get-b1-*/**/*.dcm"))
    # a C-MOVE of it says the same, in one line, and fails (was: "completed 0", exit 0)
    moved = tenants.move("b1", study)
    assert moved.returncode == tenants.move("b1", "1.2.3.999").returncode == 1
    assert moved.stderr.strip().splitlines()[-1:] == [
        f"securepacs move: the server lists 2 instance(s) under --study {study} but sends "
        "none: you may find and view them, not retrieve them (a study shared with your "
        "organisation read-only); ask its owner for a full share"], moved.stderr
    assert "completed" not in moved.stdout
    listed = cli("share", "--data-dir", tenants.data, "list")
    assert f"{share_id.group(1)}  {study}  Clinic A -> Clinic B  read-only" in listed.stdout
    revoked = cli("share", "--data-dir", tenants.data, "revoke", share_id.group(1))
    assert revoked.returncode == 0, revoked.stderr
    assert tenants.patients("b1") == {"PAT-B1"}
    assert "active" not in cli("share", "--data-dir", tenants.data, "list").stdout
    # a full share: retrieved too; unknown studies and organisations are clear errors
    full = cli("share", "--data-dir", tenants.data, "study", study, "--with", "Clinic B")
    assert full.returncode == 0, full.stderr
    got = tenants.get("b1", study)
    assert got.returncode == 0 and "retrieved 2 instance(s)" in got.stdout, got.stderr
    bad = cli("share", "--data-dir", tenants.data, "study", "1.2.3.999", "--with", "Clinic B")
    assert bad.returncode != 0 and "no study 1.2.3.999" in bad.stderr
    for line in cli("share", "--data-dir", tenants.data, "list").stdout.splitlines():
        if line.endswith("active"):
            assert cli("share", "--data-dir", tenants.data, "revoke",
                       line.split()[0]).returncode == 0
    assert tenants.patients("b1") == {"PAT-B1"}


def test_the_same_sop_instance_uid_from_another_organisation(tenants: Tenants) -> None:
    first, second = tenants.files["PAT-A1"]
    # identical bytes: B gains its own copy, A's stays as it was
    same = tenants.store("b1", first)
    assert same.returncode == 0 and "Status" not in same.stderr, same.stderr
    assert "PAT-A1" in tenants.patients("b1")
    # other bytes under the same UID: refused, with nothing about A in the answer
    other = pydicom.dcmread(second)
    other.PatientName = "Changed^Name"
    changed = tenants.tmp / "changed.dcm"
    other.save_as(changed, enforce_file_format=True)
    refused = dcmtk("storescu", "-v", *tenants.tls("b1"), "-aec", "SECUREPACS", HOST,
                    str(tenants.server.port), str(changed), timeout=60)
    text = refused.stdout + refused.stderr
    assert "Clinic" not in text
    assert re.search(r"Processing Failure|0x0?110", text), text
    a = tenants.find("a1", "PatientID=PAT-A1", "NumberOfPatientRelatedInstances",
                     level="PATIENT")
    assert [str(ds.NumberOfPatientRelatedInstances) for ds in a] == ["2"]
    b = tenants.find("b1", "PatientID=PAT-A1", "NumberOfPatientRelatedInstances",
                     level="PATIENT")
    assert [str(ds.NumberOfPatientRelatedInstances) for ds in b] == ["1"]
    tenants.server.wait_for_log("cannot be stored for your organisation")


def crossings(tenants: Tenants, org: str) -> list[str]:
    """The cross-organisation Security Alerts naming `org`, oldest first."""
    listed = cli("audit", "--data-dir", tenants.data, "list", "--org", org,
                 "--type", "security-alert")
    assert listed.returncode == 0, listed.stderr
    return [line for line in listed.stdout.splitlines() if "another organisation" in line]


def new_crossings(tenants: Tenants, org: str, before: int, want: int = 1) -> list[str]:
    """The alerts added after the first `before`, once `want` of them arrived (the server's
    audit writer batches; bounded wait)."""
    deadline = time.monotonic() + 15
    while True:
        added = crossings(tenants, org)[before:]
        if len(added) >= want or time.monotonic() > deadline:
            return added
        time.sleep(0.2)


def _series_of(tenants: Tenants, patient: str) -> str:
    return str(pydicom.dcmread(tenants.files[patient][0]).SeriesInstanceUID)


#: each way in that shows another organisation's study, and the audit's words for it
#: (``securepacs get`` queries with C-FIND before its C-GET: two uses, two events)
EDGES = {
    "findscu": (("found",), lambda t, study: t.find("b1", f"StudyInstanceUID={study}")),
    "qido-rs": (("found",), lambda t, study: t.qido("b1")),
    "wado-rs": (("read",), lambda t, study: t.wado_status("b1", f"/studies/{study}")),
    "get": (("found", "read"), lambda t, study: t.get("b1", study)),
    "viewer-list": (("found",), lambda t, study: t.viewer("b1")),
    "viewer-study": (("viewed",), lambda t, study: t.viewer("b1", f"/study/{study}")),
    "viewer-series": (("viewed",), lambda t, study: t.viewer(
        "b1", f"/series/{_series_of(t, 'PAT-A2')}")),
}


@pytest.mark.parametrize("edge", list(EDGES))
def test_each_use_of_a_share_is_one_audit_event_naming_both_organisations(
        tenants: Tenants, edge: str) -> None:
    """Issue 15 item 5: C-FIND and QIDO-RS matches, WADO-RS and C-GET retrieves and the
    archive viewer's list and pages: one Security Alert per query or page, naming the
    reader and the owner with the study; none for the caller's own studies."""
    words, act = EDGES[edge]
    study = tenants.studies["PAT-A2"]
    granted = cli("share", "--data-dir", tenants.data, "study", study, "--with", "Clinic B")
    assert granted.returncode == 0, granted.stderr
    share_id = granted.stdout.split()[1].rstrip(":")
    try:
        before = len(crossings(tenants, "Clinic B"))
        act(tenants, study)
        added = new_crossings(tenants, "Clinic B", before, len(words))
        assert len(added) == len(words), added
        for word, text in zip(words, added, strict=True):
            assert (f"Clinic B {word} studies of another organisation by share "
                    f"(Clinic A: {study})") in text, added
        # the same way in on the caller's own study alone: nothing crosses, nothing recorded
        before = len(crossings(tenants, "Clinic B"))
        own = tenants.studies["PAT-B1"]
        if edge == "findscu":
            tenants.find("b1", f"StudyInstanceUID={own}")
        elif edge == "viewer-study":
            tenants.viewer("b1", f"/study/{own}")
        else:
            return
        time.sleep(0.5)
        assert crossings(tenants, "Clinic B")[before:] == []
    finally:
        assert cli("share", "--data-dir", tenants.data, "revoke", share_id).returncode == 0


def test_a_cross_org_query_is_one_event_naming_every_owner(tenants: Tenants) -> None:
    """One C-FIND of the reading group matching several organisations' studies: one event
    (not one per match) naming each owner with its studies."""
    before = len(crossings(tenants, "Teleradiology"))
    found = tenants.find("r1", "StudyInstanceUID", "PatientID")
    assert len(found) >= 3
    added = new_crossings(tenants, "Teleradiology", before)
    assert len(added) == 1, added
    assert "Teleradiology found studies of another organisation by cross_org (" in added[0]
    for patient in ("PAT-A1", "PAT-A2", "PAT-B1"):
        assert tenants.studies[patient] in added[0]
    assert "Clinic A: " in added[0] and "Clinic B: " in added[0]
    time.sleep(0.5)
    assert len(crossings(tenants, "Teleradiology")) == before + 1


def test_share_on_two_instances_sharing_one_postgresql(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two servers on one PostgreSQL (and one blob folder): a study stored through one is
    invisible to another organisation on both, a share granted while they run shows it on
    both, and its revocation hides it again on both."""
    monkeypatch.setenv("SECUREPACS_DATABASE_URL", pg_url)
    data, out = tmp_path / "data", tmp_path / "clients"
    ca(data, "init")
    ca(data, "group", "create", "clinic", "--allow", "echo,store,find,get")
    for name, org in (("a1", "Clinic A"), ("b1", "Clinic B")):
        ca(data, "issue", "client", "--name", name, "--org", org, "--group", "clinic",
           "--out", str(out))
    servers = [data_server(tmp_path, data, name, viewer_port=0, dicomweb_port=0)
               for name in ("one", "two")]
    try:
        for server in servers:  # one that fails to start is stopped too (finally)
            server.start(timeout=60)
        views = [Tenants(s, data, out, 0, {}, {}, tmp_path) for s in servers]
        files = write_study(tmp_path / "a", 2, patient_id="PG-A", patient_name="Alpha^Pg")
        assert views[0].store("a1", *files).returncode == 0
        study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
        for view in views:
            assert view.patients("a1") == {"PG-A"} and view.patients("b1") == set()
        granted = cli("share", "--data-dir", data, "study", study, "--with", "Clinic B")
        assert granted.returncode == 0, granted.stderr
        assert not (data / "index.sqlite").exists(), "shares went to SQLite, not PostgreSQL"
        for view in views:
            assert view.patients("b1") == {"PG-A"}
        share_id = granted.stdout.split()[1].rstrip(":")
        assert cli("share", "--data-dir", data, "revoke", share_id).returncode == 0
        for view in views:
            assert view.patients("b1") == set()
    finally:
        for server in servers:
            server.stop()


RACE_IMAGES = 30


def _storescu(view: Tenants, name: str, files: list[Path]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["storescu", "-v", "--no-halt", *view.tls(name), "-aec", "SECUREPACS", HOST,
         str(view.server.port), *[str(f) for f in files]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TCP_NODELAY": "1"})


def _image_uids(view: Tenants, name: str, study: str) -> dict[str, str]:
    """SOP Instance UID -> Patient's Name of the images `name` finds in `study`."""
    found = view.find(name, f"StudyInstanceUID={study}", "SOPInstanceUID", "PatientName",
                      level="IMAGE")
    return {str(ds.SOPInstanceUID): str(ds.PatientName) for ds in found}


@pytest.mark.parametrize("identical", [True, False], ids=["identical-bytes", "other-bytes"])
def test_the_same_uid_from_two_organisations_at_once_on_two_instances(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, identical: bool) -> None:
    """Issue 15 item 4 under the race docs/tenants.md names: two servers on one PostgreSQL,
    clinic A storing through one and clinic B through the other, the same SOP Instance
    UIDs at the same moment. Identical bytes: both accepted, each organisation holds its
    own copy. Other bytes: for each UID exactly one organisation's data set is kept, the
    other store is refused with 0x0110 naming nobody; nothing overwritten or lost."""
    monkeypatch.setenv("SECUREPACS_DATABASE_URL", pg_url)
    data, out = tmp_path / "data", tmp_path / "clients"
    ca(data, "init")
    ca(data, "group", "create", "clinic", "--allow", "echo,store,find,get")
    for name, org in (("a1", "Clinic A"), ("b1", "Clinic B")):
        ca(data, "issue", "client", "--name", name, "--org", org, "--group", "clinic",
           "--out", str(out))
    a_files = write_study(tmp_path / "a", RACE_IMAGES, patient_id="RACE",
                          patient_name="Alpha^Race")
    study = str(pydicom.dcmread(a_files[0]).StudyInstanceUID)
    if identical:
        b_files = a_files
    else:
        (tmp_path / "b").mkdir()
        b_files = []
        for f in a_files:
            ds = pydicom.dcmread(f)
            ds.PatientName = "Beta^Race"
            b_files.append(tmp_path / "b" / f.name)
            ds.save_as(b_files[-1], enforce_file_format=True)
    servers = [data_server(tmp_path, data, name, viewer_port=0, dicomweb_port=0)
               for name in ("one", "two")]
    try:
        for server in servers:  # one that fails to start is stopped too (finally)
            server.start(timeout=60)
        views = [Tenants(s, data, out, 0, {}, {}, tmp_path) for s in servers]
        senders = [_storescu(views[0], "a1", a_files), _storescu(views[1], "b1", b_files)]
        texts = [p.communicate(timeout=120)[0] for p in senders]
        uids = {str(pydicom.dcmread(f).SOPInstanceUID) for f in a_files}
        held = {name: _image_uids(views[n], name, study) for n, name in enumerate(("a1", "b1"))}
        # both instances answer alike (one database)
        assert _image_uids(views[1], "a1", study) == held["a1"]
        assert _image_uids(views[0], "b1", study) == held["b1"]
        refused = [len(re.findall(r"Store Response \([^)]*(?:Processing Failure|0x0?110)", t))
                   for t in texts]
        # what went wrong, if anything does: every answer that is not Success
        odd = [line for t in texts for line in t.splitlines()
               if ("Response" in line and "Success" not in line) or line.startswith("E:")]
        for text in texts:
            assert "Clinic" not in text
        if identical:
            assert held["a1"] == dict.fromkeys(uids, "Alpha^Race"), odd
            assert held["b1"] == dict.fromkeys(uids, "Alpha^Race"), odd
            assert refused == [0, 0], texts
            return
        # each UID kept once, by one organisation, with that organisation's own data set
        assert set(held["a1"]) | set(held["b1"]) == uids, odd
        assert not set(held["a1"]) & set(held["b1"]), ("a UID accepted from both", odd)
        assert set(held["a1"].values()) <= {"Alpha^Race"}
        assert set(held["b1"].values()) <= {"Beta^Race"}
        # every store that was not kept was refused: A's refusals are B's UIDs and back
        assert refused == [len(held["b1"]), len(held["a1"])], (refused, odd)
    finally:
        for server in servers:
            server.stop()


def test_media_create_for_an_organisation_writes_only_what_it_may_retrieve(
        tenants: Tenants) -> None:
    """Issue 15 item 2 for ``media create --study``: with ``--org`` the operator writes an
    organisation's view; another organisation's study is refused exactly as an unknown
    one, a read-only share does not make it retrievable, a full share does (audited)."""
    study = tenants.studies["PAT-A2"]
    pw = tenants.tmp / "media-pw.txt"
    pw.write_text("correct horse battery staple 42\n")

    def create(uid: str, org: str, name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        out = tenants.tmp / f"media-{name}-{free_port()}"
        return cli("media", "create", "--study", uid, "--org", org, "--out", out,
                   "--password-file", pw, "--no-viewer", "--data-dir", tenants.data,
                   timeout=120), out

    theirs, out = create(study, "Clinic B", "theirs")
    unknown, _ = create("1.2.3.999", "Clinic B", "unknown")
    assert theirs.returncode == unknown.returncode != 0
    assert f"study {study} is not in the archive" in theirs.stderr, theirs.stderr
    assert theirs.stderr.replace(study, "UID") == unknown.stderr.replace("1.2.3.999", "UID")
    assert not out.exists() or not any(out.iterdir())
    own, out = create(study, "Clinic A", "own")
    assert own.returncode == 0 and "Wrote 2 instance(s) of 1 study" in own.stdout, own.stderr
    usage = cli("media", "create", tenants.tmp / "a2", "--org", "Clinic A", "--out",
                tenants.tmp / "media-usage", "--password-file", pw)
    assert usage.returncode == 2 and "--org" in usage.stderr
    # a read-only share: found, not written to media; a full share: written, and audited
    shares = []
    try:
        for flags in (["--read-only"], []):
            granted = cli("share", "--data-dir", tenants.data, "study", study, "--with",
                          "Clinic B", *flags)
            assert granted.returncode == 0, granted.stderr
            shares.append(granted.stdout.split()[1].rstrip(":"))
            if flags:
                still, _ = create(study, "Clinic B", "read-only")
                assert still.returncode != 0 and "not in the archive" in still.stderr
                assert cli("share", "--data-dir", tenants.data, "revoke",
                           shares.pop()).returncode == 0
        before = len(crossings(tenants, "Clinic B"))
        shared, out = create(study, "Clinic B", "shared")
        assert shared.returncode == 0 and "Wrote 2 instance(s)" in shared.stdout, shared.stderr
        added = new_crossings(tenants, "Clinic B", before)
        assert len(added) == 1 and (f"Clinic B exported studies of another organisation by "
                                    f"share (Clinic A: {study})") in added[0], added
    finally:
        for share_id in shares:
            cli("share", "--data-dir", tenants.data, "revoke", share_id)
