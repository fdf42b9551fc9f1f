"""--set coercion with Original Attributes Sequence (PS3.3 C.12.1.1.9), TAG=VALUE parsing, identifiers."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import ImplicitVRLittleEndian

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from factories import make_dataset  # noqa: E402
from securepacs.errors import InvalidInstanceError  # noqa: E402
from securepacs.model.levels import Level  # noqa: E402
from securepacs.services import identifier  # noqa: E402
from securepacs.services.coerce import Coercion, apply, coerce_file  # noqa: E402
from securepacs.services.tagvalue import parse, parse_tag  # noqa: E402

AT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.mark.parametrize("text", ["PatientID", "0010,0020", "(0010,0020)", "00100020", "(0010,0020"])
def test_parse_tag_forms(text: str) -> None:
    assert parse_tag(text) == 0x00100020


@pytest.mark.parametrize("text, message", [
    ("PatientIdentity=1", "neither a DICOM keyword"),
    ("0009,0010=1", "not in the DICOM data dictionary"),
    ("=1", "expected TAG=VALUE"),
    ("Rows=abc", "not a valid US value"),
    ("ReferencedImageSequence=1", "cannot be given as text"),
])
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_parse_values_by_vr() -> None:
    assert parse("Rows=512").value == 512
    assert parse("PatientWeight=72.5").value == "72.5"
    assert parse("ImageType=ORIGINAL\\PRIMARY").value == ["ORIGINAL", "PRIMARY"]
    assert parse("PatientName").text is None


@pytest.mark.parametrize("arg", ["SOPInstanceUID=1.2.3", "SOPClassUID=1.2", "PixelData=x",
                                 "TransferSyntaxUID=1.2.840.10008.1.2", "PatientID"])
def test_coercion_refuses_identity_and_meta(arg: str) -> None:
    with pytest.raises(ValueError):
        Coercion.parse([arg])


def test_apply_records_previous_values_and_appends() -> None:
    ds = make_dataset(patient_id="OLD1")
    changed = apply(ds, Coercion.parse(["PatientID=NEW1", "IssuerOfPatientID=SITE-B"],
                                       source="Hospital A"), at=AT)
    assert changed == ["PatientID", "IssuerOfPatientID"]
    assert ds.PatientID == "NEW1" and ds.IssuerOfPatientID == "SITE-B"
    (item,) = ds.OriginalAttributesSequence
    assert item.ReasonForTheAttributeModification == "COERCE"
    assert item.SourceOfPreviousValues == "Hospital A"
    assert item.ModifyingSystem.startswith("securepacs")
    assert str(item.AttributeModificationDateTime).startswith("20250304050607")
    (previous,) = item.ModifiedAttributesSequence
    assert previous.PatientID == "OLD1"
    assert "IssuerOfPatientID" in previous and not previous.IssuerOfPatientID  # was absent

    again = apply(ds, Coercion.parse(["PatientID=NEW2"]), at=AT)
    assert again == ["PatientID"]
    assert len(ds.OriginalAttributesSequence) == 2
    assert ds.OriginalAttributesSequence[1].ModifiedAttributesSequence[0].PatientID == "NEW1"
    assert apply(ds, Coercion.parse(["PatientID=NEW2"]), at=AT) == []  # nothing changed
    assert len(ds.OriginalAttributesSequence) == 2


def test_coerce_file_keeps_transfer_syntax_and_pixels() -> None:
    original = make_dataset(transfer_syntax=ImplicitVRLittleEndian)
    buf = BytesIO()
    original.save_as(buf, enforce_file_format=True)
    data, changed = coerce_file(buf.getvalue(), Coercion.parse(["PatientID=X9"]), at=AT)
    assert changed == ["PatientID"]
    decoded = read_dataset(BytesIO(data), is_implicit_VR=True, is_little_endian=True)
    assert decoded.PatientID == "X9"
    assert decoded.PixelData == original.PixelData
    assert decoded.SOPInstanceUID == original.SOPInstanceUID


def test_coerce_file_rejects_garbage() -> None:
    with pytest.raises(InvalidInstanceError):
        coerce_file(b"\x00" * 200, Coercion.parse(["PatientID=X"]), at=AT)


def test_query_identifier_with_defaults_and_keys() -> None:
    ds = identifier.query(Level.STUDY, ["PatientID=12*", "0008,0020=20240101-", "StudyDescription",
                                        "ModalitiesInStudy=CT\\MR"])
    assert ds.QueryRetrieveLevel == "STUDY"
    assert ds.PatientID == "12*"
    assert ds.StudyDate == "20240101-"
    assert ds.StudyDescription in (None, "")
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"]
    assert "StudyInstanceUID" in ds and "NumberOfStudyRelatedInstances" in ds
    assert "QueryRetrieveLevel" not in identifier.columns(ds)
    bare = identifier.query(Level.IMAGE, ["SOPInstanceUID=1.2.3"], defaults=False)
    assert identifier.columns(bare) == ["SOPInstanceUID"]


def test_retrieve_identifier_levels() -> None:
    assert identifier.retrieve("1.2")[0] is Level.STUDY
    level, ds = identifier.retrieve("1.2", "1.2.3", "1.2.3.4")
    assert level is Level.IMAGE and ds.SOPInstanceUID == "1.2.3.4"
    with pytest.raises(ValueError, match="--image needs --series"):
        identifier.retrieve("1.2", None, "1.2.3.4")


class ListFinder:
    def __init__(self, held: set[str]):
        self.held = held
        self.queries: list[Dataset] = []

    def find(self, ds: Dataset, level: Level):  # noqa: ANN201
        self.queries.append(ds)
        asked = ds.SOPInstanceUID
        asked = [asked] if isinstance(asked, str) else list(asked)
        for uid in asked:
            if uid in self.held:
                match = Dataset()
                match.SOPInstanceUID = uid
                yield match


def test_existing_batches_uid_lists() -> None:
    uids = [f"1.2.3.{i}" for i in range(450)]
    finder = ListFinder({uids[0], uids[299], "9.9.9"})
    assert identifier.existing(finder, uids, batch=200) == {uids[0], uids[299]}
    assert len(finder.queries) == 3
    assert all(q.QueryRetrieveLevel == "IMAGE" for q in finder.queries)


def test_coerced_file_still_reads_as_part10() -> None:
    buf = BytesIO()
    make_dataset().save_as(buf, enforce_file_format=True)
    data, _ = coerce_file(buf.getvalue(), Coercion.parse(["PatientName=Müller^Anna"]), at=AT)
    ds = read_dataset(BytesIO(data), is_implicit_VR=False, is_little_endian=True)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Müller^Anna"
    assert dcmread(BytesIO(buf.getvalue())).PatientName == "Doe^Jane"  # the source is untouched
