"""The structural check catches truncation and garbage that pydicom reads leniently."""

from __future__ import annotations

import sys
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from factories import make_dataset  # noqa: E402
from securepacs.model.encoding import check_structure  # noqa: E402


def encoded(implicit: bool, undefined_sq: bool = False) -> bytes:
    ds = make_dataset(transfer_syntax=ImplicitVRLittleEndian if implicit else
                      "1.2.840.10008.1.2.1")
    a, b = Dataset(), Dataset()
    a.CodeValue = "T-D3000"
    b.CodeMeaning = "Chest"
    ds.ProcedureCodeSequence = Sequence([a, b])
    if undefined_sq:
        ds["ProcedureCodeSequence"].is_undefined_length = True
        for item in ds.ProcedureCodeSequence:
            item.is_undefined_length_sequence_item = True
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    return raw[144 + int.from_bytes(raw[140:144], "little"):]


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("undefined_sq", [False, True])
def test_whole_data_sets_pass_and_every_truncation_fails(implicit: bool, undefined_sq: bool) -> None:
    body = encoded(implicit, undefined_sq)
    check_structure(body, implicit=implicit)
    # a cut exactly between two top-level elements is a (shorter) valid data set; a cut
    # anywhere else must fail: at most one passing cut per top-level element
    passing = []
    for cut in range(1, len(body) - 512):
        try:
            check_structure(body[:cut], implicit=implicit)
            passing.append(cut)
        except ValueError:
            pass
    assert 0 < len(passing) <= 26, passing
    with pytest.raises(ValueError, match="runs past the end"):
        check_structure(body[:-1], implicit=implicit)


def test_garbage_and_bad_vr() -> None:
    with pytest.raises(ValueError):
        check_structure(b"\x08\x00\x18\x00UI\xff\x7fgarbage", implicit=False)
    with pytest.raises(ValueError, match="invalid VR") as caught:
        check_structure(b"\x08\x00\x18\x00\x00\x00\x02\x001.", implicit=False)
    # issue 18: words and the element, not a Python bytes repr such as b'\x18\x00'
    assert "(bytes 00 00) in element (0008,0018) at byte 0" in str(caught.value)
    assert "b'" not in str(caught.value)


def test_deflated_must_inflate() -> None:
    with pytest.raises(ValueError, match="inflate"):
        check_structure(b"not deflate data", implicit=False, deflated=True)


def test_element_headers_read_in_one_piece_keep_every_check() -> None:
    """Issue 19: the walk reads tag, VR and length together; the same checks hold."""
    for vr in (b"ui", b"U1", b"\xc3\x9c", b"U "):  # not two upper-case ASCII letters
        with pytest.raises(ValueError, match="invalid VR"):
            check_structure(b"\x08\x00\x18\x00" + vr + b"\x02\x001.", implicit=False)
    with pytest.raises(ValueError, match="truncated at byte 0"):  # long VR, no length
        check_structure(b"\xe0\x7f\x10\x00OW\x00\x00", implicit=False)
    with pytest.raises(ValueError, match="truncated at byte 10"):  # header cut short
        check_structure(b"\x08\x00\x18\x00UI\x02\x001.\x08\x00\x20", implicit=False)
    with pytest.raises(ValueError, match=r"unexpected delimiter \(FFFE,E0DD\) at byte 0"):
        check_structure(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", implicit=True)
    little = b"\x08\x00\x18\x00UI\x04\x001.2\x00\x28\x00\x10\x00US\x02\x00\x00\x02"
    big = b"\x00\x08\x00\x18UI\x00\x041.2\x00\x00\x28\x00\x10US\x00\x02\x02\x00"
    wanted = frozenset({0x00080018, 0x00280010})
    assert check_structure(little, implicit=False, collect=wanted) == {
        0x00080018: (b"UI", b"1.2\x00"), 0x00280010: (b"US", b"\x00\x02")}
    assert check_structure(big, implicit=False, little=False, collect=wanted) == {
        0x00080018: (b"UI", b"1.2\x00"), 0x00280010: (b"US", b"\x02\x00")}
    implicit = b"\x08\x00\x18\x00\x04\x00\x00\x001.2\x00"
    assert check_structure(implicit, implicit=True, collect=wanted) == {
        0x00080018: (b"", b"1.2\x00")}
