"""Reconciliation (PS3.3 C.12.1.1.9, Other Patient IDs), rendering (PS3.3 C.11) and the media
catalog of the viewer, without sockets or a browser."""

from __future__ import annotations

from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread

from factories import make_dataset, write_study
from mediafixtures import FAST_ITERATIONS, PASSWORD
from securepacs.errors import MediaError, WrongKeyError
from securepacs.services.media import create_media, keyring_from
from securepacs.services.media_import import Reconciliation, reconcile, source_label
from securepacs.services.media_view import needs_key, open_catalog
from securepacs.services.rendering import Window, render_png

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_reconcile_keeps_the_original_identity() -> None:
    ds = make_dataset(patient_id="OLD1", patient_name="Doe^Jane")
    ds.IssuerOfPatientID = "SITE-A"
    uid = ds.SOPInstanceUID
    changed = reconcile(ds, Reconciliation("NEW9", "SITE-B", "Doe^Janet", "19710202", "disc"),
                        at=AT)
    assert set(changed) == {"PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate",
                            "OtherPatientIDsSequence"}
    assert (ds.PatientID, ds.IssuerOfPatientID, ds.PatientName) == ("NEW9", "SITE-B", "Doe^Janet")
    assert ds.SOPInstanceUID == uid
    other = ds.OtherPatientIDsSequence[0]
    assert (other.PatientID, other.IssuerOfPatientID, other.TypeOfPatientID) == ("OLD1", "SITE-A", "TEXT")
    record = ds.OriginalAttributesSequence[-1]
    assert record.ReasonForTheAttributeModification == "COERCE"
    assert record.SourceOfPreviousValues == "disc"
    previous = record.ModifiedAttributesSequence[0]
    assert (previous.PatientID, previous.IssuerOfPatientID) == ("OLD1", "SITE-A")
    assert previous.PatientBirthDate == "19700101"
    assert "OtherPatientIDsSequence" in previous and previous.OtherPatientIDsSequence in (None, [])
    # round trip through bytes
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    again = dcmread(BytesIO(out.getvalue()))
    assert again.OtherPatientIDsSequence[0].PatientID == "OLD1"


def test_reconcile_keeps_an_existing_other_patient_ids_sequence() -> None:
    """pydicom's CT_small.dcm already carries Other Patient IDs Sequence (issue 18 item 2)."""
    from pydicom.data import get_testdata_file

    ds = dcmread(get_testdata_file("CT_small.dcm"))
    before = [str(i.PatientID) for i in ds.OtherPatientIDsSequence]
    assert before and ds.PatientID == "1CT1"
    changed = reconcile(ds, Reconciliation("NEWID1", "HOSP"), at=AT)
    assert "OtherPatientIDsSequence" in changed
    assert [str(i.PatientID) for i in ds.OtherPatientIDsSequence] == [*before, "1CT1"]
    previous = ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
    assert [str(i.PatientID) for i in previous.OtherPatientIDsSequence] == before
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    again = dcmread(BytesIO(out.getvalue()))
    assert (again.PatientID, again.IssuerOfPatientID) == ("NEWID1", "HOSP")


def test_source_label_is_a_short_lo() -> None:
    assert source_label("/mnt/cdrom/") == "media cdrom"
    assert source_label("D:\\") == "media D:"
    assert len(source_label("x" * 100)) == 64


def test_reconcile_twice_adds_no_duplicate_and_empty_changes_nothing() -> None:
    ds = make_dataset(patient_id="OLD1")
    reconcile(ds, Reconciliation("NEW9"), at=AT)
    assert reconcile(ds, Reconciliation("NEW9"), at=AT) == []
    assert len(ds.OtherPatientIDsSequence) == 1
    plain = make_dataset(patient_id="OLD1")
    assert reconcile(plain, Reconciliation(), at=AT) == []
    assert "OriginalAttributesSequence" not in plain


@pytest.mark.parametrize("kwargs, message", [
    ({"issuer": "X"}, "--issuer needs --patient-id"),
    ({"patient_id": "A\\B"}, "no backslash"),
    ({"patient_id": "x" * 65}, "at most 64"),
    ({"birth_date": "1970-01-01"}, "YYYYMMDD"),
])
def test_reconciliation_validates_at_the_edge(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Reconciliation(**kwargs)


def _png(picture: bytes) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(picture)))


def test_render_window_rescale_and_monochrome1() -> None:
    ds = make_dataset(rows=4, columns=4)
    ds.PixelData = np.arange(16, dtype=np.uint16).reshape(4, 4).tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = 1, -8  # values -8..7
    picture = render_png(ds, window=Window(0.0, 8.0))
    pixels = _png(picture.png)
    assert pixels.shape == (4, 4) and pixels[0, 0] == 0 and pixels[3, 3] == 255
    assert 100 < pixels[2, 0] < 160  # value 0: the middle of the window
    auto = render_png(ds)
    assert auto.window is not None and _png(auto.png).std() > 50
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert _png(render_png(ds, window=Window(0.0, 8.0)).png)[0, 0] == 255


def test_render_multiframe_and_errors() -> None:
    ds = make_dataset(rows=2, columns=2)
    ds.NumberOfFrames = 3
    ds.PixelData = np.array([0, 0, 0, 0, 1, 1, 1, 1, 9, 9, 9, 9], dtype=np.uint16).tobytes()
    assert _png(render_png(ds, 2, Window(5.0, 4.0)).png).min() == 255
    with pytest.raises(MediaError, match="frame 4 does not exist"):
        render_png(ds, 3)
    del ds.PixelData
    with pytest.raises(MediaError, match="no Pixel Data"):
        render_png(ds)


def test_catalog_of_encrypted_and_plain_media(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = write_study(src, 3, patient_id="P1")
    disc = tmp_path / "disc"
    create_media(folders=[src], out_dir=disc, password=PASSWORD, at=datetime.now(UTC),
                 iterations=FAST_ITERATIONS)
    assert needs_key(disc) and not needs_key(src)
    with pytest.raises(WrongKeyError):
        open_catalog(disc, keyring_from(password="wrong but long enough"))
    with pytest.raises(MediaError, match="encrypted"):
        open_catalog(disc)
    victim = sorted(p for p in disc.rglob("IM*"))[1]
    victim.write_bytes(victim.read_bytes()[:-40])
    with open_catalog(disc, keyring_from(password=PASSWORD)) as catalog:
        assert len(catalog.errors) == 1 and victim.name in catalog.errors[0]
        (study,) = catalog.studies
        assert study.patient_id == "P1" and study.images == 2
        entry = next(catalog.instances())
        assert dcmread(BytesIO(catalog.part10(entry.path))).PatientID == "P1"
    assert list(disc.parent.glob("**/*.dcm")) == sorted(src.glob("*.dcm"))  # nothing written
    (src / "AUTORUN.INF").write_text("[autorun]\n")  # a plain disc's other files are no error
    with open_catalog(src) as plain:
        assert plain.count == 3 and not plain.encrypted and not plain.errors
        assert [i.instance_number for i in plain.instances()] == [1, 2, 3]
        assert {str(dcmread(f).SOPInstanceUID) for f in files} == {
            i.sop_instance_uid for i in plain.instances()}


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_rle.dcm"])
def test_render_compressed_syntaxes(name: str) -> None:
    """JPEG 2000, JPEG baseline, JPEG-LS (pylibjpeg plugins) and RLE, from pydicom's test data."""
    pytest.importorskip("libjpeg")
    pytest.importorskip("openjpeg")
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in pydicom's bundled test data")
    pixels = _png(render_png(dcmread(path)).png)
    assert pixels.std() > 5
