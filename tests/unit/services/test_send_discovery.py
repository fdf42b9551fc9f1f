"""Discovery of instances to send: files, folders, zip archives, non-DICOM files (PS3.10 7.1)."""

from __future__ import annotations

import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from factories import make_dataset, write_study  # noqa: E402
from securepacs.services.discovery import (  # noqa: E402
    MEDIA_STORAGE_DIRECTORY,
    NotPart10Error,
    Sources,
    discover,
    read_meta,
)


def part10(**kwargs: object) -> bytes:
    buf = BytesIO()
    make_dataset(**kwargs).save_as(buf, enforce_file_format=True)  # type: ignore[arg-type]
    return buf.getvalue()


def dataset_start(raw: bytes) -> int:
    """Where pydicom says the data set starts: after the whole group 0002."""
    group_length = int.from_bytes(raw[140:144], "little")
    return 144 + group_length


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_read_meta_finds_the_data_set(ts: str) -> None:
    raw = part10(transfer_syntax=ts)
    meta = read_meta(BytesIO(raw))
    ds = dcmread(BytesIO(raw))
    assert meta.sop_instance_uid == ds.SOPInstanceUID
    assert meta.sop_class_uid == ds.SOPClassUID
    assert meta.transfer_syntax_uid == ts
    assert meta.dataset_offset == dataset_start(raw)


def test_read_meta_does_not_trust_a_wrong_group_length() -> None:
    raw = bytearray(part10())
    true_start = dataset_start(bytes(raw))
    raw[140:144] = (1234).to_bytes(4, "little")  # a writer that got (0002,0000) wrong
    assert read_meta(BytesIO(bytes(raw))).dataset_offset == true_start


@pytest.mark.parametrize("raw", [b"", b"hello world\n", b"\x00" * 128 + b"DICX" + b"\x00" * 20,
                                 b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x40\x00abc"])
def test_not_part10(raw: bytes) -> None:
    with pytest.raises(NotPart10Error):
        read_meta(BytesIO(raw))


def test_discover_walks_folders_zips_and_counts_the_rest(tmp_path: Path) -> None:
    top = tmp_path / "in"
    write_study(top / "a", 2)
    write_study(top / "a" / "deeper", 2, transfer_syntax=ImplicitVRLittleEndian,
                sop_class=MRImageStorage, modality="MR")
    (top / "notes.txt").write_text("not DICOM")
    (top / "empty.dcm").write_bytes(b"")
    dicomdir = make_dataset()
    dicomdir.SOPClassUID = dicomdir.file_meta.MediaStorageSOPClassUID = MEDIA_STORAGE_DIRECTORY
    dicomdir.save_as(top / "DICOMDIR", enforce_file_format=True)
    zipped = write_study(tmp_path / "forzip", 3)
    with zipfile.ZipFile(top / "more.zip", "w") as archive:
        for i, path in enumerate(zipped):
            archive.write(path, f"series/{i}.dcm")
        archive.writestr("README", "hello")
        archive.writestr("series/", "")  # a folder entry

    found = discover([top])
    assert len(found.instances) == 7
    skipped = {Path(label.split("!")[0]).name + ("!" + label.split("!")[1] if "!" in label else "")
               for label, _ in found.skipped}
    assert skipped == {"notes.txt", "empty.dcm", "DICOMDIR", "more.zip!README"}
    in_zip = [i for i in found.instances if i.member is not None]
    assert sorted(i.member for i in in_zip) == ["series/0.dcm", "series/1.dcm", "series/2.dcm"]
    pairs = {i.pair for i in found.instances}
    assert (MRImageStorage, ImplicitVRLittleEndian) in pairs
    assert found.total_bytes == sum(i.length for i in found.instances)

    sources = Sources()
    try:
        for instance in found.instances:
            with sources.open_dataset(instance) as stream:
                data = stream.read()
            whole = sources.read_file(instance)
            assert data == whole[dataset_start(whole):]
            assert len(data) == instance.length
    finally:
        sources.close()


def test_discover_names_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        discover([tmp_path / "nope"])


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"])
def test_meta_that_disagrees_with_the_data_set_yields_the_data_sets_uids(
        tmp_path: Path, ts: str) -> None:
    """As DCMTK's storescu: C-STORE names the data set's UIDs, not the File Meta's (issue 18)."""
    ds = make_dataset(transfer_syntax=ts)
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7"
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    path = tmp_path / "odd.dcm"
    ds.preamble = b"\0" * 128  # written as it is: the File Meta kept, not made to agree
    ds.save_as(path, enforce_file_format=False)
    found = discover([path]).instances
    assert len(found) == 1
    instance = found[0]
    assert (instance.sop_class_uid, instance.sop_instance_uid) == (ds.SOPClassUID, ds.SOPInstanceUID)
    assert "SOP Instance UID 1.2.3.4.5.6.7 in the File Meta" in instance.meta_disagrees
    assert f"SOP Class UID {MRImageStorage} in the File Meta" in instance.meta_disagrees


def test_meta_that_agrees_says_nothing(tmp_path: Path) -> None:
    files = write_study(tmp_path, 2)
    found = discover([tmp_path]).instances
    assert [i.meta_disagrees for i in found] == ["", ""]
    assert {i.sop_instance_uid for i in found} == {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}

