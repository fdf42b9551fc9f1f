"""``securepacs media`` end to end: create -> info -> extract -> verify, failures, ISO, escrow.

The CLI runs in-process (typer's CliRunner) with its real defaults, 600,000 PBKDF2 iterations
included; one test runs the installed ``securepacs`` program to check the exit code and the
one-line error as a shell sees them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import pycdlib
import pytest
from asn1crypto import cms as asn1cms
from pydicom import dcmread
from pydicom.fileset import FileSet
from typer.testing import CliRunner

from mediafixtures import PASSWORD, RsaHolder, make_studies, rsa_holder
from securepacs.cli.main import app
from securepacs.media import cms
from securepacs.pki import authority

pytestmark = [pytest.mark.integration]

runner = CliRunner()
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


def media(*args: str | Path, stdin: str | None = None):  # noqa: ANN201 - click Result
    return runner.invoke(app, ["media", *map(str, args)], input=stdin)


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    folder = tmp_path_factory.mktemp("src")
    studies = make_studies(folder)
    (folder / "notes.txt").write_text("not DICOM")
    return folder, studies


@pytest.fixture(scope="module")
def pwfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pw") / "password.txt"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, pki) -> dict[str, RsaHolder]:  # noqa: ANN001
    folder = tmp_path_factory.mktemp("keys")
    return {name: rsa_holder(folder, name, pki) for name in ("doctor", "escrow", "stranger")}


@pytest.fixture(scope="module")
def disc(tmp_path_factory: pytest.TempPathFactory, src, pwfile, keys) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("disc") / "out"
    result = media("create", src[0], "--out", out, "--password-file", pwfile,
                   "--escrow", keys["escrow"].cert_path)
    assert result.exit_code == 0, result.stderr
    assert "Wrote 7 instance(s) of 3 study(ies), 2 patient(s)" in result.stdout
    assert "Skipped 1 file(s)" in result.stdout
    return out


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def check_plain_fileset(root: Path, studies: dict[str, bytes]) -> None:
    """Every instance byte-identical; every DICOMDIR record matches the file it references."""
    fs = FileSet(root / "DICOMDIR")
    assert len(fs) == len(studies) == 7
    assert {str(i.SOPInstanceUID) for i in fs} == set(studies)
    for instance in fs:
        path = Path(instance.path)
        data = path.read_bytes()
        assert data == studies[str(instance.SOPInstanceUID)]
        ds = dcmread(path)
        assert instance.PatientID == ds.PatientID
        assert instance.StudyInstanceUID == ds.StudyInstanceUID
        assert instance.SeriesInstanceUID == ds.SeriesInstanceUID
        assert instance.ReferencedSOPClassUIDInFile == ds.SOPClassUID
        assert instance.ReferencedTransferSyntaxUIDInFile == ds.file_meta.TransferSyntaxUID
    assert sorted({str(i.PatientID) for i in fs}) == ["PAT001", "PAT002"]
    assert len({str(i.StudyInstanceUID) for i in fs}) == 3


# --------------------------------------------------------------------------- the round trip


def test_create_info_extract_verify_round_trip(disc: Path, src, pwfile, tmp_path: Path) -> None:  # noqa: ANN001
    layout = files_under(disc)
    viewer = {rel for rel in layout if rel == "INDEX.HTM" or rel.startswith("VIEWER/")}
    assert {"INDEX.HTM", "VIEWER/VIEWER.JS", "VIEWER/LICENSES.TXT"} <= viewer  # the disc viewer
    assert "README.TXT" in layout and "DICOMDIR" in layout and len(layout) - len(viewer) == 9
    for rel, data in layout.items():
        assert all(len(part) <= 12 and part == part.upper() for part in rel.split("/"))
        if rel != "README.TXT" and rel not in viewer:
            assert data[:1] == b"\x30" and data[128:132] != b"DICM"  # Secure DICOM Files only
            assert all(len(part) <= 8 and part == part.upper() for part in rel.split("/"))
    readme = layout["README.TXT"].decode("ascii")
    assert "Doe" not in readme and "PAT001" not in readme
    assert "open INDEX.HTM (on this disc) in a web browser" in readme

    info = media("info", disc)
    assert info.exit_code == 0, info.stderr
    assert "Secure DICOM Files: 8 of 8" in info.stdout
    assert "one for the whole media" in info.stdout and "600000 iterations" in info.stdout
    assert "DigestedData" in info.stdout and "AES-256-CBC" in info.stdout
    as_json = json.loads(media("info", disc, "--json").stdout)
    assert {tuple(f["recipients"]) for f in as_json["files"]} == {("certificate", "password")}

    out = tmp_path / "plain"
    extracted = media("extract", disc, "--to", out, "--password-file", pwfile)
    assert extracted.exit_code == 0, extracted.stderr
    assert "Extracted 8 file(s)" in extracted.stdout
    check_plain_fileset(out, src[1])

    verified = media("verify", disc, "--password-stdin", stdin=PASSWORD + "\n")
    assert verified.exit_code == 0, verified.stderr
    assert "Verified 8 of 8 file(s); 0 failed; DICOMDIR consistent." in verified.stdout


def test_wrong_password_exits_2_with_one_line_and_writes_nothing(disc: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("not the password\n")
    out = tmp_path / "out"
    for command in (["extract", disc, "--to", out], ["verify", disc]):
        result = media(*command, "--password-file", bad)
        assert result.exit_code == 2
        assert result.stderr == "securepacs: the password does not open this media\n"
    assert not out.exists() and leftovers(tmp_path) == []


def test_installed_program_exit_code_and_stderr(disc: Path, tmp_path: Path) -> None:
    program = Path(sys.executable).with_name("securepacs")
    if not program.exists():
        pytest.skip("securepacs entry point not installed in this environment")
    result = subprocess.run([str(program), "media", "extract", str(disc), "--to",
                             str(tmp_path / "o"), "--password-stdin"], input=b"wrong-password\n",
                            capture_output=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == ["securepacs: the password does not open this media"]
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- damage


def tampered_copy(disc: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    copy = tmp_path / "copy"
    shutil.copytree(disc, copy)
    images = [rel for rel in files_under(copy) if rel.startswith("PT")]
    return copy, images


def test_altered_ciphertext_is_named_and_nothing_written(disc: Path, pwfile, tmp_path: Path) -> None:  # noqa: ANN001
    copy, images = tampered_copy(disc, tmp_path)
    victim = copy / images[3]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = media("extract", copy, "--to", out, "--password-file", pwfile)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"securepacs: {images[3]}: ")
    assert len(result.stderr.splitlines()) == 1
    assert not out.exists() and leftovers(tmp_path) == []
    verified = media("verify", copy, "--password-file", pwfile)
    assert verified.exit_code == 1
    assert f"FAILED {images[3]}: " in verified.stderr
    assert "Verified 7 of 8 file(s); 1 failed" in verified.stdout


def test_altered_digest_is_named(disc: Path, pwfile, tmp_path: Path) -> None:  # noqa: ANN001
    """A well-encrypted file whose DigestedData digest does not match its content."""
    copy, images = tampered_copy(disc, tmp_path)
    victim = copy / images[0]
    content = cms.open_file(victim.read_bytes(), cms.Keyring(password=PASSWORD.encode())).content
    digested = asn1cms.DigestedData({
        "version": "v0", "digest_algorithm": {"algorithm": "sha256"},
        "encap_content_info": {"content_type": "data", "content": content},
        "digest": b"\x00" * 32}).dump()
    writer = cms.PasswordRecipient.derive(PASSWORD.encode(), iterations=1000)
    info = asn1cms.ContentInfo.load(cms.seal(digested, [writer], inner="data"))
    info["content"]["encrypted_content_info"]["content_type"] = "digested_data"
    victim.write_bytes(info.dump(force=True))
    result = media("verify", copy, "--password-file", pwfile)
    assert result.exit_code == 1
    assert f"FAILED {images[0]}: SHA-256 digest does not match the content" in result.stderr


def test_truncated_file_is_named_and_keep_going_extracts_the_rest(disc: Path, src, pwfile,  # noqa: ANN001
                                                                  tmp_path: Path) -> None:
    copy, images = tampered_copy(disc, tmp_path)
    victim = copy / images[5]
    victim.write_bytes(victim.read_bytes()[:700])
    out = tmp_path / "out"
    stopped = media("extract", copy, "--to", out, "--password-file", pwfile)
    assert stopped.exit_code == 1 and images[5] in stopped.stderr and "truncated" in stopped.stderr
    assert not out.exists()
    going = media("extract", copy, "--to", out, "--password-file", pwfile, "--keep-going")
    assert going.exit_code == 1
    assert f"FAILED {images[5]}: truncated or damaged CMS structure" in going.stderr
    assert "Extracted 7 file(s)" in going.stdout
    written = files_under(out)
    assert images[5] not in written and len(written) == 7
    by_uid = {str(dcmread(BytesIO(d)).SOPInstanceUID): d for r, d in written.items() if r != "DICOMDIR"}
    assert all(src[1][uid] == data for uid, data in by_uid.items()) and len(by_uid) == 6


# --------------------------------------------------------------------------- ISO, keys, escrow


def test_iso_image_reads_back_and_extracts(src, pwfile, tmp_path: Path) -> None:  # noqa: ANN001
    iso = tmp_path / "disc.iso"
    result = media("create", src[0], "--iso", iso, "--password-file", pwfile)
    assert result.exit_code == 0, result.stderr
    assert "fits a CD" in result.stdout and leftovers(tmp_path) == []
    reader = pycdlib.PyCdlib()
    reader.open(str(iso))
    names = {dirpath + "/" + f for dirpath, _d, files in reader.walk(iso_path="/") for f in files}
    reader.close()
    assert "//DICOMDIR.;1" in names and "//README.TXT;1" in names
    assert "//INDEX.HTM;1" in names and "/VIEWER/VIEWER.JS;1" in names  # the disc viewer
    assert len([n for n in names if "/IM0000" in n]) == 7
    assert media("info", iso).exit_code == 0
    out = tmp_path / "plain"
    extracted = media("extract", iso, "--to", out, "--password-file", pwfile)
    assert extracted.exit_code == 0, extracted.stderr
    check_plain_fileset(out, src[1])


def test_recipient_certificate_and_oaep(src, keys, tmp_path: Path) -> None:  # noqa: ANN001
    doctor = keys["doctor"]
    out = tmp_path / "doc"
    made = media("create", src[0], "--out", out, "--recipient", doctor.cert_path)
    assert made.exit_code == 0, made.stderr and "Recipients: certificate." in made.stdout
    info = media("info", out).stdout
    assert "RSAES-OAEP" in info and "rsaEncryption" not in info  # OAEP is the default
    plain = tmp_path / "plain"
    extracted = media("extract", out, "--to", plain, "--media-key", doctor.key_path)
    assert extracted.exit_code == 0, extracted.stderr
    check_plain_fileset(plain, src[1])
    refused = media("extract", out, "--to", tmp_path / "x", "--media-key",
                    keys["stranger"].key_path)
    assert refused.exit_code == 2
    assert refused.stderr == "securepacs: the key does not open this media\n"


def test_escrow_recovery_is_audited(disc: Path, src, keys, tmp_path: Path) -> None:  # noqa: ANN001
    escrow = keys["escrow"]
    data_dir = tmp_path / "data"
    out = tmp_path / "recovered"
    result = media("recover", disc, "--escrow-key", escrow.combined_path, "--to", out,
                   "--data-dir", data_dir, "--reason", "patient lost the password")
    assert result.exit_code == 0, result.stderr
    assert "interim audit log" in result.stdout
    check_plain_fileset(out, src[1])
    records = [json.loads(line) for line in
               (data_dir / "audit-interim.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in records] == ["access-granted", "extracted"]
    first = records[0]
    assert first["interim"] is True and first["event"] == "media-emergency-recovery"
    assert first["who"]["user"] and first["when"].startswith(str(datetime.now(UTC).year))
    assert first["media"]["path"] == str(disc.resolve())
    assert len(first["media"]["dicomdir_sha256"]) == 64
    assert first["escrow_certificate_sha256"] == authority.fingerprint_sha256(escrow.cert)
    assert first["reason"] == "patient lost the password"
    assert PASSWORD not in (data_dir / "audit-interim.jsonl").read_text()
    assert oct(os.stat(data_dir / "audit-interim.jsonl").st_mode & 0o777) == "0o600"

    refused = media("recover", disc, "--escrow-key", keys["stranger"].key_path, "--to",
                    tmp_path / "nope", "--data-dir", data_dir)
    assert refused.exit_code == 2 and not (tmp_path / "nope").exists()
    last = json.loads((data_dir / "audit-interim.jsonl").read_text().splitlines()[-1])
    assert last["outcome"] == "key-refused" and last["escrow_certificate_sha256"] is None
    # the same steps are Emergency Override events in the data folder's audit trail
    from securepacs.settings import load
    from securepacs.wiring import audit_log

    trail = audit_log(load(overrides={"data_dir": data_dir}, environ={}))
    overrides = [r for r in trail.records() if r.kind == "emergency-override"]
    trail.close()
    assert len(overrides) == 3, [r.kind for r in trail.records()]


def test_recovery_with_an_encrypted_escrow_key(disc: Path, src, keys, tmp_path: Path) -> None:  # noqa: ANN001
    escrow = keys["escrow"]
    encrypted = tmp_path / "escrow-encrypted.key"
    authority.write_private_key(encrypted, escrow.key, passphrase=b"key passphrase 123")
    passphrase = tmp_path / "passphrase.txt"
    passphrase.write_text("key passphrase 123\n")
    data_dir = tmp_path / "data"
    without = media("recover", disc, "--escrow-key", encrypted, "--to", tmp_path / "a",
                    "--data-dir", data_dir)
    # a key file that cannot be used as given is a usage error (README, exit codes: 2)
    assert without.exit_code == 2 and "passphrase is needed" in without.stderr
    assert not (tmp_path / "a").exists()
    done = media("recover", disc, "--escrow-key", encrypted, "--escrow-cert", escrow.cert_path,
                 "--key-passphrase-file", passphrase, "--to", tmp_path / "b",
                 "--data-dir", data_dir)
    assert done.exit_code == 0, done.stderr
    check_plain_fileset(tmp_path / "b", src[1])
    record = json.loads((data_dir / "audit-interim.jsonl").read_text().splitlines()[0])
    assert record["escrow_certificate_sha256"] == authority.fingerprint_sha256(escrow.cert)
    assert "key passphrase" not in (data_dir / "audit-interim.jsonl").read_text()


def test_generated_passphrase_opens_the_media(src, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "gen"
    made = media("create", src[0], "--out", out, "--generate-passphrase")
    assert made.exit_code == 0, made.stderr
    line = next(x for x in made.stdout.splitlines() if x.startswith("Passphrase ("))
    passphrase = line.split(": ", 1)[1]
    assert passphrase.isascii() and len(passphrase.split("-")) == 6
    verified = media("verify", out, "--password-stdin", stdin=passphrase + "\n")
    assert verified.exit_code == 0, verified.stderr


@pytest.mark.parametrize(("password", "reason"), [
    ("café au lait, s'il vous plaît", "printable US-ASCII"),
    ("Xy7!pw", "too short"),
])
def test_refused_passwords_say_why_and_write_nothing(src, tmp_path: Path, password: str,  # noqa: ANN001
                                                      reason: str) -> None:
    pw = tmp_path / "pw.txt"
    pw.write_text(password + "\n", encoding="utf-8")
    result = media("create", src[0], "--out", tmp_path / "out", "--password-file", pw)
    assert result.exit_code == 2 and reason in result.stderr  # usage (README, exit codes)
    assert len(result.stderr.splitlines()) == 1 and password not in result.stderr
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_password_prompt_asks_twice(src, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    mismatch = media("create", src[0], "--out", out, "--password",
                     stdin=f"{PASSWORD}\nsomething else\n{PASSWORD}\n{PASSWORD}\n")
    assert mismatch.exit_code == 0, mismatch.stderr
    assert PASSWORD not in mismatch.stdout + mismatch.stderr


def test_ec_certificate_is_refused(src, pki, tmp_path: Path) -> None:  # noqa: ANN001
    _key, cert = authority.issue_certificate(pki.ca_key_obj, pki.ca_cert_obj, common_name="ec",
                                             role="client", at=datetime.now(UTC))
    authority.write_certificates(tmp_path / "ec.pem", [cert])
    result = media("create", src[0], "--out", tmp_path / "out", "--recipient", tmp_path / "ec.pem")
    assert result.exit_code == 1 and "RSA" in result.stderr
    assert not (tmp_path / "out").exists()


def test_usage_errors(src, pwfile, tmp_path: Path) -> None:  # noqa: ANN001
    both = media("create", src[0], "--out", tmp_path / "a", "--iso", tmp_path / "b.iso",
                 "--password-file", pwfile)
    assert both.exit_code == 2
    nothing = media("create", src[0], "--out", tmp_path / "a")
    assert nothing.exit_code == 2 and "password" in nothing.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    occupied = media("create", src[0], "--out", tmp_path / "full", "--password-file", pwfile)
    assert occupied.exit_code == 1 and "not empty" in occupied.stderr


# --------------------------------------------------------------------------- from the archive


def test_create_from_archive_studies(tmp_path: Path, src, pwfile) -> None:  # noqa: ANN001
    from securepacs.blobs.filesystem import FileBlobStore
    from securepacs.index.repository import SqlIndex
    from securepacs.services.ingest import IngestService, Received

    data_dir = tmp_path / "archive"
    data_dir.mkdir()
    index = SqlIndex(f"sqlite:///{data_dir / 'index.sqlite'}")
    index.create_schema()
    ingest = IngestService(index, FileBlobStore(data_dir / "blobs"))
    study_uids: dict[str, set[str]] = {}
    for uid, data in src[1].items():
        ds = dcmread(BytesIO(data))
        group_length = int.from_bytes(data[140:144], "little")
        ingest.store(Received(data[144 + group_length:], ds.SOPClassUID, uid,
                              ds.file_meta.TransferSyntaxUID, "TEST"))
        study_uids.setdefault(str(ds.StudyInstanceUID), set()).add(uid)
    index.close()
    wanted = sorted(study_uids)[:2]
    out = tmp_path / "out"
    args: list[str | Path] = ["create", "--out", out, "--password-file", pwfile,
                              "--data-dir", data_dir]
    for uid in wanted:
        args += ["--study", uid]
    made = media(*args)
    assert made.exit_code == 0, made.stderr
    plain = tmp_path / "plain"
    assert media("extract", out, "--to", plain, "--password-file", pwfile).exit_code == 0
    fs = FileSet(plain / "DICOMDIR")
    assert {str(i.SOPInstanceUID) for i in fs} == study_uids[wanted[0]] | study_uids[wanted[1]]
    missing = media("create", "--study", "1.2.3.4", "--out", tmp_path / "o2",
                    "--password-file", pwfile, "--data-dir", data_dir)
    assert missing.exit_code == 1 and "not in the archive" in missing.stderr
    no_archive = media("create", "--study", "1.2.3", "--out", tmp_path / "o3",
                       "--password-file", pwfile, "--data-dir", tmp_path / "empty")
    assert no_archive.exit_code == 1 and "no archive" in no_archive.stderr


def test_create_fills_or_leaves_out_instances_the_dicomdir_cannot_take(tmp_path: Path, pwfile) -> None:  # noqa: ANN001
    """Issue 17 item 6: one file without Study Time is filled in for the DICOMDIR (the file is
    unchanged), one without a Series Instance UID is left out: exit 1, never an empty disc."""
    from factories import make_dataset

    folder = tmp_path / "in"
    folder.mkdir()
    fine = make_dataset()
    no_time = make_dataset(patient_id="")
    no_time.StudyTime = ""
    no_series = make_dataset()
    del no_series.SeriesInstanceUID
    for name, ds in (("fine.dcm", fine), ("notime.dcm", no_time), ("noseries.dcm", no_series)):
        ds.save_as(folder / name, enforce_file_format=True)
    out = tmp_path / "out"
    result = media("create", folder, "--out", out, "--password-file", pwfile)
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "Wrote 2 instance(s)" in result.stdout
    assert "notime.dcm: PatientID=NOID0001, StudyTime=000000" in result.stdout
    assert "Left out 1 instance(s)" in result.stdout and "noseries.dcm" in result.stdout
    extracted = tmp_path / "x"
    result = media("extract", out, "--to", extracted, "--password-file", pwfile)
    assert result.exit_code == 0, result.stdout + result.stderr
    plain = sorted(p for p in extracted.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    assert sorted(p.read_bytes() for p in plain) == sorted(
        (folder / n).read_bytes() for n in ("fine.dcm", "notime.dcm"))
