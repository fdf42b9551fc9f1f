"""The secure file-set: DICOMDIR records and file IDs, sealing, opening a disc, README, ISO."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import pytest
from asn1crypto import cms as asn1cms
from pydicom import dcmread

from mediafixtures import FAST_ITERATIONS, PASSWORD, make_studies
from securepacs.errors import IntegrityError, MalformedFileError, MediaError, WrongKeyError
from securepacs.media import cms, fileset, image
from securepacs.media.summary import summarize


@dataclass(frozen=True)
class Src:
    label: str
    data: bytes

    def read(self) -> bytes:
        return self.data


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return make_studies(tmp_path_factory.mktemp("studies"))


@pytest.fixture(scope="module")
def plan(studies: dict[str, bytes]) -> fileset.FileSetPlan:
    return fileset.plan_fileset([Src(uid, data) for uid, data in studies.items()],
                                fileset_id="TESTSET")


@pytest.fixture(scope="module")
def writer() -> cms.PasswordRecipient:
    return cms.PasswordRecipient.derive(PASSWORD.encode(), iterations=FAST_ITERATIONS)


def write_disc(folder: Path, plan: fileset.FileSetPlan, writer: cms.PasswordRecipient) -> Path:
    for rel, data in fileset.seal_fileset(plan, [writer]):
        path = folder.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (folder / fileset.README).write_text("readme")
    return folder


def test_dicomdir_records_reference_every_instance(plan: fileset.FileSetPlan,
                                                   studies: dict[str, bytes]) -> None:
    assert (plan.patients, plan.studies, plan.series, plan.instances) == (2, 3, 3, 7)
    ds = dcmread(BytesIO(plan.dicomdir))
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    assert ds.FileSetID == "TESTSET"
    records = ds.DirectoryRecordSequence
    kinds = [r.DirectoryRecordType for r in records]
    assert kinds.count("PATIENT") == 2 and kinds.count("STUDY") == 3
    assert kinds.count("SERIES") == 3 and kinds.count("IMAGE") == 7
    by_file = {tuple(r.ReferencedFileID): r for r in records if "ReferencedFileID" in r}
    planned = {parts: src for parts, src in plan.entries}
    assert set(by_file) == set(planned)
    for parts, record in by_file.items():
        assert fileset.is_valid_file_id(parts)
        assert all(len(p) <= 8 and p == p.upper() for p in parts)
        assert record.ReferencedSOPInstanceUIDInFile == planned[parts].label
    assert {src.label for src in planned.values()} == set(studies)


def test_is_valid_file_id() -> None:
    assert fileset.is_valid_file_id(["PT000000", "IM_1"])
    assert not fileset.is_valid_file_id(["pt000000"])
    assert not fileset.is_valid_file_id(["TOOLONGNAME"])
    assert not fileset.is_valid_file_id(["IM.DCM"])
    assert not fileset.is_valid_file_id(["A"] * 9)
    assert not fileset.is_valid_file_id([])


def test_plan_skips_what_is_not_an_instance(studies: dict[str, bytes], plan) -> None:  # noqa: ANN001
    first_uid, first = next(iter(studies.items()))
    sources = [Src("junk.txt", b"hello"), Src("dup", first), Src(first_uid, first),
               Src("old DICOMDIR", plan.dicomdir)]
    small = fileset.plan_fileset(sources)
    assert small.instances == 1
    assert sorted(reason for _label, reason in small.skipped) == [
        "a DICOMDIR (a new one is made)", "not a DICOM Part 10 file",
        "same SOP Instance UID as dup"]
    with pytest.raises(MediaError, match="no DICOM"):
        fileset.plan_fileset([Src("junk", b"x" * 200)])


def test_round_trip_is_byte_identical_with_one_pbkdf2(tmp_path: Path, plan, writer,  # noqa: ANN001
                                                      studies: dict[str, bytes]) -> None:
    disc = fileset.FolderMedia(write_disc(tmp_path, plan, writer))
    keyring = cms.Keyring(password=PASSWORD.encode())
    results = list(fileset.open_files(disc, keyring))
    assert results[0].path == fileset.DICOMDIR and len(results) == 8
    assert all(r.error is None and r.opened is not None for r in results)
    assert results[0].opened.content == plan.dicomdir  # type: ignore[union-attr]
    opened = {r.path: r.opened.content for r in results[1:]}  # type: ignore[union-attr]
    for parts, src in plan.entries:
        assert opened["/".join(parts)] == studies[src.label]
    assert keyring.derivations == 1
    uids = {path: str(dcmread(BytesIO(c)).SOPInstanceUID) for path, c in opened.items()}
    assert fileset.check_dicomdir(plan.dicomdir, uids) == []


def test_wrong_password_yields_nothing(tmp_path: Path, plan, writer) -> None:  # noqa: ANN001
    disc = fileset.FolderMedia(write_disc(tmp_path, plan, writer))
    keyring = cms.Keyring(password=b"wrong password")
    with pytest.raises(WrongKeyError, match="the password does not open this media"):
        for result in fileset.open_files(disc, keyring):
            assert result.opened is None


def test_damaged_files_are_named_once_the_key_is_proven(tmp_path: Path, plan, writer  # noqa: ANN001
                                                        ) -> None:
    root = write_disc(tmp_path, plan, writer)
    late_key = "/".join(plan.entries[4][0])
    for rel in (fileset.DICOMDIR, late_key):  # their wrapped content keys no longer unwrap
        info = asn1cms.ContentInfo.load((root / rel).read_bytes())
        pwri = info["content"]["recipient_infos"][0].chosen
        wrapped = bytearray(pwri["encrypted_key"].native)
        wrapped[5] ^= 0xFF
        pwri["encrypted_key"] = bytes(wrapped)
        (root / rel).write_bytes(info.dump(force=True))
    image_path = "/".join(plan.entries[2][0])
    (root / image_path).write_bytes((root / image_path).read_bytes()[:-100])
    results = list(fileset.open_files(fileset.FolderMedia(root),
                                      cms.Keyring(password=PASSWORD.encode())))
    errors = {r.path: r.error for r in results if r.error is not None}
    assert set(errors) == {fileset.DICOMDIR, image_path, late_key}
    for rel in (fileset.DICOMDIR, late_key):  # before and after the key proved itself
        assert isinstance(errors[rel], IntegrityError)
        assert str(errors[rel]).startswith(f"{rel}: ")
    assert isinstance(errors[image_path], MalformedFileError)
    assert str(errors[image_path]).startswith(image_path + ": ")
    assert sum(r.opened is not None for r in results) == 5


def test_check_dicomdir_finds_missing_extra_and_mismatched(plan) -> None:  # noqa: ANN001
    paths = ["/".join(parts) for parts, _src in plan.entries]
    uids = {p: src.label for p, (_parts, src) in zip(paths, plan.entries, strict=True)}
    missing = dict(uids)
    del missing[paths[0]]
    missing["PT000009/IM000000"] = "1.2.3"
    missing[paths[1]] = "9.9.9"
    problems = fileset.check_dicomdir(plan.dicomdir, missing)
    assert any(paths[0] in p and "missing" in p for p in problems)
    assert any("PT000009/IM000000" in p and "not referenced" in p for p in problems)
    assert any(paths[1] in p and "9.9.9" in p for p in problems)
    assert len(problems) == 3
    assert fileset.check_dicomdir(b"nonsense", {})[0].startswith("DICOMDIR: not a valid")


def test_readme_names_no_patient_data(plan, studies: dict[str, bytes]) -> None:  # noqa: ANN001
    text = fileset.readme_text(instances=plan.instances, studies=plan.studies,
                               recipient_kinds=["password", "escrow"],
                               kdf_label="PBKDF2-HMAC-SHA-256, 600000 iterations",
                               at=datetime(2024, 5, 6, tzinfo=UTC), version="0.1.0")
    text.encode("ascii")
    for data in studies.values():
        ds = dcmread(BytesIO(data))
        for value in (str(ds.PatientName), ds.PatientID, ds.StudyInstanceUID, ds.AccessionNumber,
                      ds.StudyDate, ds.PatientBirthDate, "Doe", "Roe"):
            assert value not in text
    assert "password" in text and "openssl cms -decrypt" in text and "escrow" in text
    assert "2024-05-06" in text


def test_summarize_reads_no_key(tmp_path: Path, plan, writer) -> None:  # noqa: ANN001
    root = write_disc(tmp_path, plan, writer)
    (root / "STRAY").write_bytes(b"not cms")
    summary = summarize(fileset.FolderMedia(root))
    assert summary.readme and summary.dicomdir and len(summary.kdfs) == 1
    assert len(summary.files) == 9 and summary.files[0].path == fileset.DICOMDIR
    stray = next(f for f in summary.files if f.path == "STRAY")
    assert stray.envelope is None and "not a CMS file" in (stray.error or "")


def test_iso_image_round_trip(tmp_path: Path, plan, writer) -> None:  # noqa: ANN001
    root = write_disc(tmp_path / "disc", plan, writer)
    target = tmp_path / "disc.iso"
    size = image.write_iso(root, target)
    assert size == target.stat().st_size and image.fits(size) == "CD"
    with image.IsoMedia(target) as iso:
        files = iso.files()
        assert fileset.DICOMDIR in files and fileset.README in files
        for rel in files:
            assert iso.read(rel) == (root / rel).read_bytes()
    with pytest.raises(MediaError):
        image.IsoMedia(tmp_path / "disc" / fileset.README)


def test_iso_refuses_names_that_do_not_fit(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "lower.dcm").write_bytes(b"x")
    with pytest.raises(MediaError, match="ISO 9660"):
        image.write_iso(tmp_path / "src", tmp_path / "x.iso")


def test_dicomdir_is_byte_for_byte_what_pydicom_writes(studies: dict[str, bytes], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """plan_fileset encodes the DICOMDIR in memory with pydicom's own records and encoder;
    the result is the file pydicom's FileSet.add/write would put on disc, File IDs included."""
    import pydicom.fileset
    from pydicom.uid import UID

    monkeypatch.setattr(pydicom.fileset, "generate_uid", lambda *a, **k: UID("1.2.3.4.5"))
    ours = fileset.plan_fileset([Src(uid, data) for uid, data in studies.items()],
                                fileset_id="TESTSET")
    fs = pydicom.fileset.FileSet()
    fs.ID = "TESTSET"
    for data in studies.values():
        fs.add(dcmread(BytesIO(data), stop_before_pixels=True))
    fs.write(tmp_path / "pydicom")
    assert ours.dicomdir == (tmp_path / "pydicom" / fileset.DICOMDIR).read_bytes()
    theirs = {str(inst.SOPInstanceUID): tuple(Path(inst.FileID).parts) for inst in fs}
    assert {src.label: parts for parts, src in ours.entries} == theirs
