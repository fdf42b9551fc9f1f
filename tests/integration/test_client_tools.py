"""The client tools (issue 4): echo, send, find, get, move over TLS, run as the CLI.

Peers: our own server (``securepacs serve``), DCMTK ``storescp +tls`` (send, and as the
C-MOVE destination), a CA-backed server for permissions and AE binding, and small
pynetdicom SCPs in this process for what a healthy server never does (abort in the middle,
stall, go slow enough to interrupt). Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from catools import ca, data_server
from harness import (
    HOST,
    ROOT,
    SECUREPACS,
    Server,
    free_port,
    make_server,
    needs_dcmtk,
    tls_args,
    wait_for_port,
)
from pydicom import Dataset, dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit
from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from factories import (
    ImplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    make_dataset,
    write_study,
)
from pkifixtures import TestPki
from securepacs.dimse.client import DicomClient, Endpoint
from securepacs.pki.authority import fingerprint_sha256, load_certificates
from securepacs.pki.tlspolicy import client_context, server_context
from securepacs.services.scuport import CertificateRejected, ServerNotTrusted

pytestmark = [pytest.mark.integration]


# ------------------------------------------------------------------------------ helpers


def cli(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SECUREPACS, *(str(a) for a in args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def conn(port: int, key: Path, cert: Path, ca_pem: Path, aec: str = "SECUREPACS") -> list[str]:
    return ["--server", f"{HOST}:{port}", "--aec", aec, "--cert", str(cert), "--key", str(key),
            "--ca", str(ca_pem)]


def counts(stdout: str) -> dict[str, int]:
    """The numbers of the send summary line."""
    found = re.search(r"sent (\d+), already present (\d+), failed (\d+), not sent (\d+)", stdout)
    assert found, stdout
    return dict(zip(("sent", "present", "failed", "not_sent"), map(int, found.groups()),
                    strict=True))


def dataset_bytes(part10: bytes) -> bytes:
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length:]


def mixed_folder(folder: Path, patient: str) -> list[Path]:
    """Several SOP classes and transfer syntaxes, nested folders, a zip, non-DICOM files."""
    files = write_study(folder / "ct", 3, patient_id=patient)
    files += write_study(folder / "mr" / "deeper", 3, patient_id=patient, sop_class=MRImageStorage,
                         modality="MR", transfer_syntax=ImplicitVRLittleEndian)
    files += write_study(folder / "sc", 2, patient_id=patient,
                         sop_class=SecondaryCaptureImageStorage, modality="OT")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "sc" / "thumbs.db").write_bytes(b"\x00" * 300)
    zipped = write_study(folder.parent / f"{folder.name}-zip", 3, patient_id=patient,
                         transfer_syntax=ImplicitVRLittleEndian)
    with zipfile.ZipFile(folder / "more.zip", "w") as archive:
        for path in zipped:
            archive.write(path, f"disc/{path.name}")
        archive.writestr("disc/README.TXT", "burnt by a modality")
    return files + zipped


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def write_jpeg_labelled(path: Path, patient: str) -> Path:
    ds = make_dataset(patient_id=patient, transfer_syntax=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([b"\xff\xd8 not really a JPEG \xff\xd9"])
    ds.save_as(path, enforce_file_format=True)
    return path


class Storescp:
    """DCMTK storescp +tls on a free port, writing into `out`."""

    def __init__(self, pki, out: Path, port: int | None = None, aet: str = "STORESCP",  # noqa: ANN001
                 options: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["storescp", *tls_args(pki.server.key, pki.server.cert, pki.ca_cert), "-aet", aet,
             *options, "-od", str(out), str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={"TCP_NODELAY": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        wait_for_port(self.port, None, 15)

    def files(self, expected: int, timeout: float = 10) -> list[Path]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [p for p in self.out.iterdir() if not p.name.startswith(".")]
            if len(found) >= expected:
                return found
            time.sleep(0.05)
        return [p for p in self.out.iterdir() if not p.name.startswith(".")]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, pki) -> Iterator[tuple[Server, int]]:  # noqa: ANN001
    """Our server, with DEST (a storescp started by the move test) as a C-MOVE destination."""
    dest_port = free_port()
    srv = make_server(tmp_path_factory.mktemp("archive"), pki, move_destinations=[
        {"ae_title": "DEST", "host": HOST, "port": dest_port, "tls": True}]).start()
    try:
        yield srv, dest_port
    finally:
        srv.stop()


# ------------------------------------------------------------------------------ our server


def test_echo_with_a_profile(archive, pki, tmp_path: Path) -> None:  # noqa: ANN001
    srv, _ = archive
    profile = tmp_path / "client.toml"
    profile.write_text(f'server = "{HOST}:{srv.port}"\ncalled_ae = "SECUREPACS"\n'
                       f'calling_ae = "CT01"\ncert = "{pki.client.cert}"\n'
                       f'key = "{pki.client.key}"\nca = "{pki.ca_cert}"\n')
    result = cli("echo", "--profile", profile)
    assert result.returncode == 0, result.stderr
    assert "C-ECHO to SECUREPACS at" in result.stdout and "TLSv1.3" in result.stdout
    assert "calling AE CT01" in result.stdout


def test_echo_imports_no_heavy_module(archive, pki) -> None:  # noqa: ANN001
    """Issue 18 item 13: a C-ECHO over TLS needs neither pydicom (nor numpy and its pixel
    decoders), pynetdicom, cryptography nor pydantic (Typer's coercion): start-up is what an
    echo costs. The time itself is measured in the bench's send section."""
    srv, _ = archive
    args = ["echo", *conn(srv.port, pki.client.key, pki.client.cert, pki.ca_cert)]
    code = (
        "import sys\n"
        f"sys.argv = ['securepacs', *{args!r}]\n"
        "from securepacs.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "heavy = ['pydicom', 'numpy', 'pynetdicom', 'cryptography', 'pydantic', 'sqlalchemy',\n"
        "         'rich', 'asn1crypto', 'securepacs.services.part10']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "C-ECHO to SECUREPACS at" in done.stdout and "TLSv1.3" in done.stdout
    assert done.stdout.splitlines()[-1] == "[]"


def test_send_imports_no_heavy_module(archive, pki, tmp_path: Path) -> None:  # noqa: ANN001
    """Issue 19 item 4: a whole send over TLS (several SOP classes and transfer syntaxes,
    a zip) stores every file without pydicom, numpy or pynetdicom in the client: its File
    Meta reader and the association are its own, the data sets go out as they are."""
    srv, _ = archive
    mixed_folder(tmp_path / "mixed", "LIGHT1")
    args = ["send", str(tmp_path / "mixed"), *conn(srv.port, pki.client.key, pki.client.cert,
                                                    pki.ca_cert)]
    code = (
        "import sys\n"
        f"sys.argv = ['securepacs', *{args!r}]\n"
        "from securepacs.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "heavy = ['pydicom', 'numpy', 'pynetdicom', 'pydantic', 'sqlalchemy', 'rich',\n"
        "         'asn1crypto', 'securepacs.services.part10', 'securepacs.services.coerce']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert counts(done.stdout) == {"sent": 11, "present": 0, "failed": 0, "not_sent": 0}
    assert done.stdout.splitlines()[-1] == "[]"


def test_send_mixed_folder_find_json_and_duplicates(archive, pki, tmp_path: Path) -> None:  # noqa: ANN001
    srv, _ = archive
    files = mixed_folder(tmp_path / "mixed", "MIX1")
    c = conn(srv.port, pki.client.key, pki.client.cert, pki.ca_cert)
    sent = cli("send", tmp_path / "mixed", "-j", "2", *c)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "found 11 instance(s); skipped 3 non-DICOM file(s)" in sent.stdout
    assert counts(sent.stdout) == {"sent": 11, "present": 0, "failed": 0, "not_sent": 0}
    assert "11/11 images" in sent.stderr  # plain progress lines when not on a terminal

    # what arrived: every instance, with the attributes of the source files
    found = cli("find", "--level", "IMAGE", "-k", "PatientID=MIX1", "-k", "SOPClassUID",
                "-k", "InstanceNumber", "--json", *c)
    assert found.returncode == 0, found.stderr
    matches = json.loads(found.stdout)
    by_uid = {m["00080018"]["Value"][0]: m for m in matches}
    sources = {uid_of(p): dcmread(p, stop_before_pixels=True) for p in files}
    assert set(by_uid) == set(sources)
    for uid, ds in sources.items():
        match = Dataset.from_json(by_uid[uid])
        assert match.SOPClassUID == ds.SOPClassUID
        assert match.StudyInstanceUID == ds.StudyInstanceUID
        assert match.SeriesInstanceUID == ds.SeriesInstanceUID
        assert match.PatientID == "MIX1" and match.InstanceNumber == ds.InstanceNumber

    table = cli("find", "-L", "STUDY", "-k", "PatientID=MIX1", *c)
    assert table.returncode == 0 and "4 match(es) at STUDY level" in table.stdout
    assert "MIX1" in table.stdout

    again = cli("send", tmp_path / "mixed" / "more.zip", *c)
    assert again.returncode == 0, again.stderr
    assert counts(again.stdout) == {"sent": 0, "present": 3, "failed": 0, "not_sent": 0}


def test_send_uses_the_data_sets_uids_when_the_meta_disagrees(archive, pki, tmp_path: Path) -> None:  # noqa: ANN001
    """Issue 18: storescu stores such a file; so do we, and the summary says the meta disagreed."""
    srv, _ = archive
    ds = make_dataset(patient_id="META1")
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7"
    ds.preamble = b"\0" * 128
    ds.save_as(tmp_path / "odd.dcm", enforce_file_format=False)
    c = conn(srv.port, pki.client.key, pki.client.cert, pki.ca_cert)
    sent = cli("send", tmp_path / "odd.dcm", *c)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert counts(sent.stdout) == {"sent": 1, "present": 0, "failed": 0, "not_sent": 0}
    assert "1 file(s) whose File Meta Information disagreed" in sent.stdout
    assert "SOP Instance UID 1.2.3.4.5.6.7 in the File Meta" in sent.stdout
    found = cli("find", "--level", "IMAGE", "-k", "PatientID=META1", "-k", "SOPInstanceUID",
                "--json", *c)
    assert [m["00080018"]["Value"][0] for m in json.loads(found.stdout)] == [ds.SOPInstanceUID]


@pytest.mark.parametrize("columns", [100, 160])
def test_find_never_wraps_a_uid_and_writes_csv(archive, pki, tmp_path: Path, columns: int) -> None:  # noqa: ANN001
    """Issue 18 item 4: at 100 and 160 columns every UID is whole on its row."""
    srv, _ = archive
    files = write_study(tmp_path / "s", 2, patient_id=f"WIDE{columns}")
    c = conn(srv.port, pki.client.key, pki.client.cert, pki.ca_cert)
    assert cli("send", tmp_path / "s", *c).returncode == 0
    ds = dcmread(files[0], stop_before_pixels=True)
    keys = ["-k", f"PatientID=WIDE{columns}", "-k", "PatientName", "-k", "StudyDescription",
            "-k", "StudyDate", "-k", "SeriesInstanceUID", "-k", "SOPInstanceUID"]
    result = subprocess.run([*SECUREPACS, "find", "-L", "IMAGE", *keys, *c], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env={**os.environ, "COLUMNS": str(columns)})
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if ds.StudyInstanceUID in line]
    assert len(rows) == 2, result.stdout
    for line in rows:
        assert ds.SeriesInstanceUID in line
        assert any(uid_of(p) in line for p in files)
    as_csv = cli("find", "-L", "IMAGE", *keys, "--csv", *c)
    assert as_csv.returncode == 0, as_csv.stderr
    import csv

    table = list(csv.DictReader(as_csv.stdout.splitlines()))
    assert {r["SOPInstanceUID"] for r in table} == {uid_of(p) for p in files}
    assert {r["PatientID"] for r in table} == {f"WIDE{columns}"}


def test_send_of_no_dicom_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "garbage.dcm").write_bytes(b"\x18\x00" * 300)
    result = cli("send", tmp_path / "garbage.dcm", "--server", f"{HOST}:{free_port()}", "--no-tls")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "securepacs send: no DICOM Part 10 file to send" in result.stderr
    assert "garbage.dcm" in result.stderr


def test_resume_after_a_partial_send(archive, pki, tmp_path: Path) -> None:  # noqa: ANN001
    srv, _ = archive
    files = write_study(tmp_path / "study", 12, patient_id="RES1")
    c = conn(srv.port, pki.client.key, pki.client.cert, pki.ca_cert)
    first = cli("send", *files[:5], *c)
    assert counts(first.stdout)["sent"] == 5
    rest = cli("send", "--resume", tmp_path / "study", *c)
    assert rest.returncode == 0, rest.stderr
    assert "resume: 5 already on the server, not sent again" in rest.stdout
    assert counts(rest.stdout) == {"sent": 7, "present": 0, "failed": 0, "not_sent": 0}


def test_get_writes_the_layout_and_set_coerces(archive, pki, tmp_path: Path) -> None:  # noqa: ANN001
    srv, _ = archive
    files = write_study(tmp_path / "src", 3, patient_id="OLD-PID")
    c = conn(srv.port, pki.client.key, pki.client.cert, pki.ca_cert)
    sent = cli("send", *files, "--set", "PatientID=NEW-PID", "--set", "IssuerOfPatientID=SITE-B", *c)
    assert counts(sent.stdout)["sent"] == 3, sent.stdout + sent.stderr
    first = dcmread(files[0])
    got = cli("get", "--study", first.StudyInstanceUID, "--to", tmp_path / "out", *c)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "retrieved 3 instance(s)" in got.stdout
    for path in files:
        ds = dcmread(path)
        target = (tmp_path / "out" / "NEW-PID" / ds.StudyInstanceUID / ds.SeriesInstanceUID
                  / f"{ds.SOPInstanceUID}.dcm")
        assert target.is_file(), sorted(str(p) for p in (tmp_path / "out").rglob("*"))
        back = dcmread(target)
        assert back.PatientID == "NEW-PID" and back.IssuerOfPatientID == "SITE-B"
        (record,) = back.OriginalAttributesSequence
        assert record.ReasonForTheAttributeModification == "COERCE"
        assert record.ModifiedAttributesSequence[0].PatientID == "OLD-PID"
        assert back.PixelData == ds.PixelData
    one = cli("get", "--study", first.StudyInstanceUID, "--series", first.SeriesInstanceUID,
              "--image", first.SOPInstanceUID, "--to", tmp_path / "one", *c)
    assert one.returncode == 0 and "retrieved 1 instance(s)" in one.stdout, one.stderr
    assert len(list((tmp_path / "one").rglob("*.dcm"))) == 1
    none = cli("get", "--study", "1.2.3.999", "--to", tmp_path / "none", *c)
    assert none.returncode == 1 and "nothing on the server matches" in none.stderr


@needs_dcmtk
def test_move_to_a_storescp_destination(archive, pki, tmp_path: Path) -> None:  # noqa: ANN001
    srv, dest_port = archive
    files = write_study(tmp_path / "src", 4, patient_id="MOVE1")
    c = conn(srv.port, pki.client.key, pki.client.cert, pki.ca_cert)
    assert counts(cli("send", *files, *c).stdout)["sent"] == 4
    dest = Storescp(pki, tmp_path / "dest", port=dest_port, aet="DEST")
    try:
        study = dcmread(files[0]).StudyInstanceUID
        moved = cli("move", "--study", study, "--dest", "DEST", *c)
        assert moved.returncode == 0, moved.stdout + moved.stderr
        assert "completed 4, failed 0" in moved.stdout
        arrived = {uid_of(p) for p in dest.files(4)}
        assert arrived == {uid_of(p) for p in files}
        unknown = cli("move", "--study", study, "--dest", "NOWHERE", *c)
        assert unknown.returncode == 1
        assert "does not know the move destination 'NOWHERE'" in unknown.stderr
        # an unknown study: one line and exit 1 (as get), not "completed 0" and exit 0
        none = cli("move", "--study", "1.2.3.999", "--dest", "DEST", *c)
        assert none.returncode == 1, none.stdout + none.stderr
        assert none.stderr.strip().splitlines()[-1:] == [
            "securepacs move: nothing on the server matches STUDY level --study 1.2.3.999"]
        assert "completed" not in none.stdout
    finally:
        dest.stop()


# ------------------------------------------------------------------------------ DCMTK storescp


@needs_dcmtk
def test_send_mixed_folder_to_storescp(pki, tmp_path: Path) -> None:  # noqa: ANN001
    files = mixed_folder(tmp_path / "mixed", "SCP1")
    jpeg = write_jpeg_labelled(tmp_path / "mixed" / "jpeg.dcm", "SCP1")
    scp = Storescp(pki, tmp_path / "received")
    try:
        c = conn(scp.port, pki.client.key, pki.client.cert, pki.ca_cert, aec="STORESCP")
        sent = cli("send", tmp_path / "mixed", *c)
        assert sent.returncode == 1, sent.stdout + sent.stderr  # the JPEG one was refused
        assert counts(sent.stdout) == {"sent": 11, "present": 0, "failed": 1, "not_sent": 0}
        assert re.search(rf"failed {re.escape(str(jpeg))} \(.*\): CT Image Storage in JPEG "
                         r"Baseline.*: presentation context transfer syntax not accepted",
                         sent.stdout), sent.stdout
        arrived = {}
        for path in scp.files(11):
            ds = dcmread(path)
            arrived[ds.SOPInstanceUID] = (ds.file_meta.TransferSyntaxUID, ds.SOPClassUID)
        expected = {}
        for path in files:
            ds = dcmread(path)
            expected[ds.SOPInstanceUID] = (ds.file_meta.TransferSyntaxUID, ds.SOPClassUID)
        assert arrived == expected  # each in the syntax it was sent in: nothing re-encoded
        refused = cli("find", *c)
        assert refused.returncode == 3
        assert "refused Study Root query (C-FIND): not supported by the server" in refused.stderr
    finally:
        scp.stop()


_PEAK = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(f"peak {usage.ru_maxrss} kB", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@needs_dcmtk
def test_send_of_a_large_object_arrives_byte_identical_in_bounded_memory(
        pki, tmp_path: Path) -> None:  # noqa: ANN001
    """A 32 MiB object goes to storescp (bit-preserving, 128 KiB PDUs) over TLS in many
    P-DATA-TF PDUs and record-aligned writes and arrives byte for byte; the client streams
    it from the file: its peak memory is that of sending a small image, give or take a few
    send buffers, not that plus the object."""
    small = tmp_path / "small" / "small.dcm"
    small.parent.mkdir()
    make_dataset(patient_id="SMALL1").save_as(small, enforce_file_format=True)
    ds = make_dataset(patient_id="LARGE1", rows=4096, columns=4096)
    ds.PixelData = os.urandom(4096 * 4096 * 2)
    source = tmp_path / "large" / "large.dcm"
    source.parent.mkdir()
    ds.save_as(source, enforce_file_format=True)
    scp = Storescp(pki, tmp_path / "received", options=("+B", "-pdu", "131072"))
    try:
        peaks = []
        for path in (small, source):
            args = [*SECUREPACS, "send", str(path),
                    *conn(scp.port, pki.client.key, pki.client.cert, pki.ca_cert, aec="STORESCP")]
            # A small parent forks the send: a child forked from this test process would
            # count the test's own memory in its peak (ru_maxrss survives exec).
            sent = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True,
                                  text=True, timeout=120, cwd=ROOT)
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert counts(sent.stdout)["sent"] == 1
            peak = re.search(r"peak (\d+) kB", sent.stderr)
            assert peak, sent.stderr
            peaks.append(int(peak.group(1)) * 1024)
        arrived = [p for p in scp.files(2) if uid_of(p) == ds.SOPInstanceUID]
        assert len(arrived) == 1
        assert dataset_bytes(arrived[0].read_bytes()) == dataset_bytes(source.read_bytes())
        assert peaks[1] - peaks[0] < 8 * 1024 * 1024, peaks  # the object: 32 MiB
    finally:
        scp.stop()


# ------------------------------------------------------------------------------ connection errors


def test_connection_errors_in_words(archive, pki, tmp_path: Path) -> None:  # noqa: ANN001
    srv, _ = archive
    nobody = cli("echo", "--server", f"{HOST}:{free_port()}", "--ca", pki.ca_cert)
    assert nobody.returncode == 3
    assert "connection refused - no server is listening there" in nobody.stderr

    (tmp_path / "other").mkdir()
    stranger = TestPki.create(tmp_path / "other", name="Other CA")
    untrusted = cli("echo", *conn(srv.port, pki.client.key, pki.client.cert, stranger.ca_cert))
    expected_fp = fingerprint_sha256(load_certificates(pki.server.cert)[0])
    assert untrusted.returncode == 3
    assert "is not trusted" in untrusted.stderr and expected_fp in untrusted.stderr

    def endpoint(key: Path | None, cert: Path | None, ca_pem: Path) -> Endpoint:
        return Endpoint(HOST, srv.port, "SECUREPACS", "ERRORS", client_context(ca_pem, cert, key),
                        connect_timeout=5, acse_timeout=5, dimse_timeout=5,
                        cert_file=cert, key_file=key)

    with pytest.raises(ServerNotTrusted) as not_trusted:
        DicomClient(endpoint(pki.client.key, pki.client.cert, stranger.ca_cert)).echo()
    assert not_trusted.value.fingerprint == expected_fp
    cases = [
        (stranger.client.key, stranger.client.cert, "does not trust the CA that issued our"),
        (None, None, "requires a client certificate and we sent none"),
    ]
    expired = pki.issue_expired("expired-client")
    cases.append((expired.key, expired.cert, "expired"))
    for key, cert, words in cases:
        with pytest.raises(CertificateRejected, match=words):
            DicomClient(endpoint(key, cert, pki.ca_cert)).echo()
    rejected = cli("echo", *conn(srv.port, expired.key, expired.cert, pki.ca_cert))
    assert rejected.returncode == 3 and "rejected our TLS certificate" in rejected.stderr


def test_permission_refused_and_association_rejected(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ca(data, "init")
    ca(data, "group", "create", "readers", "--allow", "echo,find")
    out = tmp_path / "clients"
    ca(data, "issue", "client", "--name", "reader", "--org", "Clinic", "--group", "readers",
       "--ae", "READER1", "--out", str(out))
    srv = data_server(tmp_path, data, "srv").start()
    try:
        c = conn(srv.port, out / "reader.key", out / "reader.pem", out / "ca.pem")
        image = write_study(tmp_path / "img", 2)
        refused = cli("send", *image, "--aet", "READER1", *c)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "permission refused" in refused.stderr and "store" in refused.stderr
        assert cli("echo", "--aet", "READER1", *c).returncode == 0  # what the group may do
        wrong_ae = cli("echo", "--aet", "SOMEONE", *c)
        assert wrong_ae.returncode == 3
        assert "rejected the association permanently: Calling AE title not recognised" \
            in wrong_ae.stderr
        assert "use --aet with the AE title your certificate is bound to" in wrong_ae.stderr
    finally:
        srv.stop()


# ------------------------------------------------------------------------------ misbehaving SCPs


class FlakyScp:
    """A pynetdicom Storage (and Study Root C-FIND) SCP over TLS that misbehaves on cue."""

    def __init__(self, pki, *, abort_on: set[int] = frozenset(), stall_on: set[int] = frozenset(),  # noqa: ANN001
                 delay: float = 0.0):
        self.stored: dict[str, int] = {}
        self.calls = 0
        self.abort_on, self.stall_on, self.delay = abort_on, stall_on, delay
        self.lock = threading.Lock()
        ae = AE(ae_title="FLAKY")
        ae.supported_contexts = StoragePresentationContexts
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        tls = server_context(pki.server.cert, pki.server.key, pki.ca_cert)
        self.port = free_port()
        self.server = ae.start_server((HOST, self.port), block=False, ssl_context=tls,
                                      evt_handlers=[(evt.EVT_C_STORE, self.on_store),
                                                    (evt.EVT_C_FIND, self.on_find)])

    def on_store(self, event) -> int:  # noqa: ANN001
        with self.lock:
            self.calls += 1
            call = self.calls
        if call in self.abort_on:
            event.assoc.abort()
            return 0xA700
        time.sleep(3.0 if call in self.stall_on else self.delay)
        uid = str(event.request.AffectedSOPInstanceUID)
        with self.lock:
            self.stored[uid] = self.stored.get(uid, 0) + 1
        return 0x0000

    def on_find(self, event):  # noqa: ANN001, ANN201
        asked = event.identifier.SOPInstanceUID
        for uid in [asked] if isinstance(asked, str) else list(asked):
            if uid in self.stored:
                match = Dataset()
                match.QueryRetrieveLevel = "IMAGE"
                match.SOPInstanceUID = uid
                yield 0xFF00, match

    def stop(self) -> None:
        self.server.shutdown()


def test_send_survives_an_abort_and_a_stall(pki, tmp_path: Path) -> None:  # noqa: ANN001
    files = write_study(tmp_path / "s", 8)
    scp = FlakyScp(pki, abort_on={3}, stall_on={6})
    try:
        c = conn(scp.port, pki.client.key, pki.client.cert, pki.ca_cert, aec="FLAKY")
        sent = cli("send", tmp_path / "s", "--timeout", "1", *c)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        summary = counts(sent.stdout)
        assert summary["sent"] + summary["present"] == 8 and summary["failed"] == 0
        assert "2 reconnect(s)" in sent.stdout
        assert "aborted the association" in sent.stderr
        assert "no answer from FLAKY" in sent.stderr
        assert set(scp.stored) == {uid_of(p) for p in files}
    finally:
        scp.stop()


def test_interrupted_send_then_resume_sends_only_the_rest(pki, tmp_path: Path) -> None:  # noqa: ANN001
    files = write_study(tmp_path / "s", 10)
    scp = FlakyScp(pki, delay=0.25)
    try:
        c = conn(scp.port, pki.client.key, pki.client.cert, pki.ca_cert, aec="FLAKY")
        proc = subprocess.Popen([*SECUREPACS, "send", str(tmp_path / "s"), *c], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while len(scp.stored) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, out + err
        first = counts(out)
        assert 3 <= first["sent"] < 10 and first["not_sent"] == 10 - first["sent"]
        # the file in flight at Ctrl-C was finished, not abandoned
        assert len(scp.stored) == first["sent"]
        scp.delay = 0.0
        rest = cli("send", "--resume", tmp_path / "s", *c)
        assert rest.returncode == 0, rest.stdout + rest.stderr
        assert f"resume: {first['sent']} already on the server" in rest.stdout
        assert counts(rest.stdout)["sent"] == 10 - first["sent"]
        assert set(scp.stored) == {uid_of(p) for p in files}
        assert all(n == 1 for n in scp.stored.values()), scp.stored  # nothing sent twice
    finally:
        scp.stop()
