"""``securepacs media import`` (issue 6): encrypted media -> our own server, Patient ID reconciled.

The media is made at test time; the CLI runs as a program (exit codes and one-line errors as a
shell sees them) against a real ``securepacs serve`` over TLS; what the server holds is read
back with C-GET. Also: a wrong password, a wrong called AE title, a stopped server, several
patients without a choice.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from harness import HOST, ROOT, SECUREPACS, free_port, make_server
from importcheck import check_reconciled, held, make_disc
from pydicom import dcmread

from mediafixtures import PASSWORD
from pkifixtures import TestPki

pytestmark = [pytest.mark.integration]


def run(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SECUREPACS, "media", "import", *(str(a) for a in args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def conn(port: int, pki, aec: str = "SECUREPACS") -> list[object]:  # noqa: ANN001
    return ["--server", f"{HOST}:{port}", "--aec", aec, "--cert", pki.client.cert,
            "--key", pki.client.key, "--ca", pki.ca_cert]


@pytest.fixture(scope="module")
def disc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    folder = tmp_path_factory.mktemp("media")
    media, uids = make_disc(folder)
    pw = folder / "password.txt"
    pw.write_text(PASSWORD + "\n")
    return media, uids, pw


def test_import_reconciles_and_the_server_holds_it(disc, pki, tmp_path: Path) -> None:  # noqa: ANN001
    media, uids, pw = disc
    server = make_server(tmp_path, pki).start()
    try:
        result = run(media, "--password-file", pw, "--patient-id", "MRN-77", "--issuer", "HOSP-B",
                     "--media-patient-id", "PAT001", *conn(server.port, pki))
        assert result.returncode == 0, result.stderr
        assert "patient on the media: Doe^Jane, ID PAT001 (issuer OLDSITE" in result.stdout
        assert "-> ID MRN-77 (issuer HOSP-B)" in result.stdout
        assert "4 image(s): sent 4, already present 0, failed 0, not sent 0" in result.stdout
        assert "import: 4/4 images" in result.stderr
        mine = {uid for uid, pid in uids.items() if pid == "PAT001"}
        study_uid = _study_uid(media, pw, mine)
        got = held(server.port, pki, study_uid)
        assert set(got) == mine  # UIDs unchanged, PAT002 not sent
        for ds in got.values():
            check_reconciled(ds, new_id="MRN-77", issuer="HOSP-B", old_id="PAT001",
                             old_issuer="OLDSITE")
            assert ds.PatientName == "Doe^Jane"
        # again: the server already holds them, and says so
        again = run(media, "--password-file", pw, "--patient-id", "MRN-77", "--issuer", "HOSP-B",
                    "--media-patient-id", "PAT001", *conn(server.port, pki))
        assert again.returncode == 0, again.stderr
        assert "sent 0, already present 4" in again.stdout
        assert "the 4 image(s) already present are held under Patient ID MRN-77" in again.stdout
        # with another Patient ID: the archive keeps its copy, which is said, and exit 1
        other = run(media, "--password-file", pw, "--patient-id", "MRN-99", "--issuer", "HOSP-B",
                    "--media-patient-id", "PAT001", *conn(server.port, pki))
        assert other.returncode == 1, other.stdout + other.stderr
        held_lines = [line for line in other.stderr.splitlines()
                      if line.startswith("already held: ")]
        assert len(held_lines) == 4 and all("under Patient ID MRN-77" in line for line in held_lines)
        assert {line.split("SOP Instance UID ")[1].split(")")[0] for line in held_lines} == mine
        assert "MRN-99 was NOT applied" in other.stderr
        assert {ds.PatientID for ds in held(server.port, pki, study_uid).values()} == {"MRN-77"}
    finally:
        server.stop()


def _study_uid(media: Path, pw: Path, mine: set[str]) -> str:
    """The Study Instance UID of PAT001, read from the media in memory."""
    from securepacs.services.media import keyring_from
    from securepacs.services.media_view import open_catalog

    with open_catalog(media, keyring_from(password=pw.read_text().strip())) as catalog:
        for study in catalog.studies:
            if study.patient_id == "PAT001":
                assert {i.sop_instance_uid for s in study.series for i in s.instances} == mine
                return study.uid
    raise AssertionError("PAT001 not on the media")


def test_wrong_password_exits_2_and_sends_nothing(disc, tmp_path: Path, pki) -> None:  # noqa: ANN001
    media, _uids, _pw = disc
    bad = tmp_path / "bad.txt"
    bad.write_text("not the password at all\n")
    result = run(media, "--password-file", bad, *conn(free_port(), pki))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "securepacs: the password does not open this media"]


def test_several_patients_need_a_choice(disc, pki) -> None:  # noqa: ANN001
    media, _uids, pw = disc
    result = run(media, "--password-file", pw, "--patient-id", "X1", *conn(free_port(), pki))
    assert result.returncode == 2
    assert "the media holds 2 patients (PAT001, PAT002): choose one with --media-patient-id" \
        in result.stderr


def test_stopped_server_is_one_line_and_exit_3(disc, pki) -> None:  # noqa: ANN001
    media, _uids, pw = disc
    result = run(media, "--password-file", pw, "--patient-id", "X1", "--media-patient-id",
                 "PAT002", *conn(free_port(), pki), "--timeout", "5")
    assert result.returncode == 3, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("securepacs")]
    assert len(errors) == 1 and str(HOST) in errors[0], result.stderr
    assert "sent 0" in result.stdout and "not sent 2" in result.stdout


def test_refused_client_certificate_is_one_line_and_exit_3(disc, pki, tmp_path: Path) -> None:  # noqa: ANN001
    """A destination that refuses us: our certificate comes from a CA the server does not trust."""
    media, _uids, pw = disc
    stranger = TestPki.create(tmp_path / "other", "Other CA").client
    server = make_server(tmp_path, pki).start()
    try:
        result = run(media, "--password-file", pw, "--media-patient-id", "PAT002",
                     "--server", f"{HOST}:{server.port}", "--cert", stranger.cert,
                     "--key", stranger.key, "--ca", pki.ca_cert, "--timeout", "10")
    finally:
        server.stop()
    assert result.returncode == 3, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("securepacs")]
    assert len(errors) == 1, result.stderr
    assert "certificate" in errors[0], errors[0]
    assert "sent 0" in result.stdout and "not sent 2" in result.stdout


def test_plain_folder_imports_without_a_key(pki, tmp_path: Path) -> None:  # noqa: ANN001
    from factories import write_study

    files = write_study(tmp_path / "plain", 2, patient_id="P9")
    server = make_server(tmp_path, pki).start()
    try:
        result = run(tmp_path / "plain", "--patient-id", "NEW9", *conn(server.port, pki))
        assert result.returncode == 0, result.stderr
        got = held(server.port, pki, str(dcmread(files[0]).StudyInstanceUID))
    finally:
        server.stop()
    assert {ds.PatientID for ds in got.values()} == {"NEW9"}
    assert all(ds.OtherPatientIDsSequence[0].PatientID == "P9" for ds in got.values())


def test_media_key_opens_certificate_media(pki, tmp_path: Path) -> None:  # noqa: ANN001
    from datetime import UTC, datetime

    from factories import write_study
    from mediafixtures import rsa_holder
    from securepacs.services.media import create_media

    doctor = rsa_holder(tmp_path / "keys", "doctor", pki)
    files = write_study(tmp_path / "src", 2, patient_id="K1")
    create_media(folders=[tmp_path / "src"], out_dir=tmp_path / "disc",
                 recipients=[doctor.cert_path], at=datetime.now(UTC))
    server = make_server(tmp_path, pki).start()
    try:
        result = run(tmp_path / "disc", "--media-key", doctor.key_path, "--patient-id", "K1-NEW",
                     "--issuer", "HOSP-B", *conn(server.port, pki))
        assert result.returncode == 0, result.stderr
        got = held(server.port, pki, str(dcmread(files[0]).StudyInstanceUID))
    finally:
        server.stop()
    assert len(got) == 2
    for ds in got.values():
        check_reconciled(ds, new_id="K1-NEW", issuer="HOSP-B", old_id="K1", old_issuer="")


def test_ct_small_with_other_patient_ids_imports(pki, tmp_path: Path) -> None:  # noqa: ANN001
    """Issue 18 item 2: pydicom's CT_small.dcm already carries Other Patient IDs Sequence."""
    import shutil
    from datetime import UTC, datetime

    from pydicom.data import get_testdata_file

    from mediafixtures import FAST_ITERATIONS
    from securepacs.services.media import create_media

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "CT_small.dcm")
    original = dcmread(src / "CT_small.dcm")
    iso = tmp_path / "disc.iso"
    create_media(folders=[src], iso=iso, password=PASSWORD, at=datetime.now(UTC),
                 iterations=FAST_ITERATIONS)
    pw = tmp_path / "pw.txt"
    pw.write_text(PASSWORD + "\n")
    server = make_server(tmp_path, pki).start()
    try:
        result = run(iso, "--password-file", pw, "--media-patient-id", "1CT1", "--patient-id",
                     "NEWID1", "--issuer", "HOSP", *conn(server.port, pki))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "sent 1, already present 0, failed 0" in result.stdout
        got = held(server.port, pki, str(original.StudyInstanceUID))
    finally:
        server.stop()
    (ds,) = got.values()
    assert (ds.PatientID, ds.IssuerOfPatientID) == ("NEWID1", "HOSP")
    others = [str(i.PatientID) for i in ds.OtherPatientIDsSequence]
    assert others == [*(str(i.PatientID) for i in original.OtherPatientIDsSequence), "1CT1"]
