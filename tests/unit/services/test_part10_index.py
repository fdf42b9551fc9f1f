"""The indexed values read from the raw bytes agree with pydicom's reading, or defer to it."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from factories import make_dataset
from securepacs.errors import InvalidInstanceError
from securepacs.services import part10

SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
            "1.2.840.10008.1.2.1.99")


def encode(ds: Dataset, ts: str) -> bytes:
    uid = UID(ts)
    fp = DicomBytesIO()
    fp.is_little_endian = uid.is_little_endian
    fp.is_implicit_VR = uid.is_implicit_VR
    write_dataset(fp, ds)
    raw = fp.getvalue()
    if uid.is_deflated:
        import zlib
        co = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        raw = co.compress(raw) + co.flush()
    return raw


def pydicom_values(raw: bytes, ts: str) -> dict:
    header = part10.header_for("1.2.840.10008.5.1.4.1.1.2", "1.2.3", ts, "")
    return part10.level_values(part10.read_header(header + raw))


def awkward(ds: Dataset) -> Dataset:
    ds.PatientName = "Doe^Jane^^Dr\\Roe^Richard"      # two values
    ds.OtherPatientIDs = ["A1", "", " B2 "]           # an empty value, padding
    ds.SeriesNumber = "  7"                           # IS with leading spaces
    ds.InstanceNumber = None                          # present, empty
    ds.NumberOfFrames = "3"
    ds.StudyTime = "101500.123456"
    ds.SeriesDescription = "x" * 63                   # odd length: padded
    ds.IssuerOfPatientID = "HOSP"
    ds.Columns = 512
    return ds


@pytest.mark.parametrize("ts", SYNTAXES)
@pytest.mark.parametrize("shape", ["plain", "awkward"])
def test_raw_values_equal_pydicom(ts: str, shape: str) -> None:
    ds = make_dataset(transfer_syntax=ts)
    if shape == "awkward":
        ds = awkward(ds)
    raw = encode(ds, ts)
    fast = part10.check_and_index(raw, ts)
    assert fast is not None
    assert fast == pydicom_values(raw, ts)


@pytest.mark.parametrize("charset, name", [("ISO_IR 100", "Müller^Anna"),
                                           ("ISO_IR 192", "Müller^Anna"),
                                           ("ISO 2022 IR 87", "Yamada^Tarou")])
def test_other_character_sets_defer_to_pydicom(charset: str, name: str) -> None:
    ds = make_dataset()
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    raw = encode(ds, "1.2.840.10008.1.2.1")
    fast = part10.check_and_index(raw, "1.2.840.10008.1.2.1")
    ascii_only = name.isascii() and charset != "ISO 2022 IR 87"
    assert (fast is not None) == ascii_only
    if fast is not None:
        assert fast == pydicom_values(raw, "1.2.840.10008.1.2.1")


def test_unexpected_vr_defers_to_pydicom() -> None:
    raw = encode(make_dataset(instance_number=12), "1.2.840.10008.1.2.1")
    is_element = b"\x20\x00\x13\x00IS\x02\x0012"
    assert is_element in raw
    un_element = b"\x20\x00\x13\x00UN\x00\x00\x02\x00\x00\x0012"  # InstanceNumber sent as UN
    assert part10.check_and_index(raw.replace(is_element, un_element),
                                  "1.2.840.10008.1.2.1") is None


def test_truncated_data_set_is_refused() -> None:
    raw = encode(make_dataset(), "1.2.840.10008.1.2.1")
    with pytest.raises(InvalidInstanceError, match="malformed"):
        part10.check_and_index(raw[:-5], "1.2.840.10008.1.2.1")
