"""DICOM Part 10 files (PS3.10 7.1): build one around received data set bytes, read its
header, and turn a data set into an index record.

The bytes a peer sent are kept as they are; only the File Meta Information is added.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from securepacs import IMPLEMENTATION_VERSION
from securepacs.errors import InvalidInstanceError
from securepacs.model.encoding import RawElements, check_structure
from securepacs.model.levels import Level
from securepacs.model.record import LEVEL_ATTRIBUTES

PREAMBLE = b"\x00" * 128 + b"DICM"


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
              source_ae: str = "") -> FileMetaDataset:
    """File Meta Information for an instance received over the network (PS3.10 7.1)."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae[:16]
    return meta


def part10_header(meta: FileMetaDataset) -> bytes:
    """Preamble, ``DICM`` and the encoded File Meta Information group."""
    buf = BytesIO()
    buf.write(PREAMBLE)
    write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buf.getvalue()


@lru_cache(maxsize=64)
def _syntax(transfer_syntax_uid: str) -> tuple[bool, bool, bool, bool]:
    """(known transfer syntax, implicit VR, little endian, deflated): pydicom's ``UID``
    validates its value with a regular expression, too slow to build three times per
    received image; the syntaxes an association accepts are few."""
    ts = UID(transfer_syntax_uid)
    if not ts.is_transfer_syntax:
        return False, False, True, False
    return True, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated


_UID_DIGITS = "0123456789."  # u.strip(_UID_DIGITS) == "": u has no other character
_IMPLEMENTATION_UID = str(PYDICOM_IMPLEMENTATION_UID).encode("ascii")


def _element(elem: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", 0x0002, elem, vr, len(value)) + value


def header_for(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
               source_ae: str = "") -> bytes:
    """``part10_header(file_meta(...))``, byte for byte, encoded directly.

    The per-image path of ingest calls this for every instance; pydicom's writer takes
    ~0.5 ms, this a few microseconds (the elements other than the SOP Instance UID are
    encoded once per SOP class, transfer syntax and AE title). Anything out of the
    ordinary (a UID that is not digits and dots, a non-ASCII AE title) goes through
    pydicom as before.
    """
    fixed = _fixed_elements(sop_class_uid, transfer_syntax_uid, source_ae[:16])
    if fixed is None or not sop_instance_uid or sop_instance_uid.strip(_UID_DIGITS):
        return part10_header(file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid,
                                       source_ae))
    body = b"".join((fixed[0], _element(0x0003, b"UI", sop_instance_uid.encode("ascii"),
                                        b"\x00"), fixed[1]))
    return PREAMBLE + struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


@lru_cache(maxsize=256)
def _fixed_elements(sop_class_uid: str, transfer_syntax_uid: str, ae: str
                    ) -> tuple[bytes, bytes] | None:
    """The File Meta elements before and after (0002,0003) for :func:`header_for`, or
    None when one of the values needs pydicom's encoder."""
    if (not all(u and not u.strip(_UID_DIGITS) for u in (sop_class_uid, transfer_syntax_uid))
            or not ae.isascii() or ae != ae.strip() or "\\" in ae
            or not _syntax(transfer_syntax_uid)[0]):
        return None
    before = (b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"
              + _element(0x0002, b"UI", sop_class_uid.encode("ascii"), b"\x00"))
    after = [
        _element(0x0010, b"UI", transfer_syntax_uid.encode("ascii"), b"\x00"),
        _element(0x0012, b"UI", _IMPLEMENTATION_UID, b"\x00"),
        _element(0x0013, b"SH", IMPLEMENTATION_VERSION.encode("ascii"), b" "),
    ]
    if ae:
        after.append(_element(0x0016, b"AE", ae.encode("ascii"), b" "))
    return before, b"".join(after)


def check_encoding(dataset: bytes | memoryview, transfer_syntax_uid: str) -> None:
    """Raise InvalidInstanceError unless `dataset` is a whole data set in that syntax."""
    _walk(dataset, transfer_syntax_uid, frozenset())


def _walk(dataset: bytes | memoryview, transfer_syntax_uid: str,
          collect: frozenset[int]) -> RawElements:
    known, implicit, little, deflated = _syntax(transfer_syntax_uid)
    if not known:
        raise InvalidInstanceError(f"unknown transfer syntax {transfer_syntax_uid}")
    try:
        return check_structure(dataset, implicit=implicit, little=little,
                               deflated=deflated, collect=collect)
    except ValueError as exc:
        raise InvalidInstanceError(f"malformed data set: {exc}") from None


_CHARSET = 0x00080005
#: tag -> (level, keyword, VR) of every indexed attribute
_INDEXED = {int(tag_for_keyword(keyword) or 0): (level, keyword, dictionary_VR(keyword))
            for level, keywords in LEVEL_ATTRIBUTES.items() for keyword in keywords}
_COLLECT = frozenset({_CHARSET, *_INDEXED})

#: Character sets in which an ASCII byte string means those ASCII characters (PS3.3
#: C.12.1.1.2; ISO 2022 escapes excluded).
_ASCII_SAFE = {"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110",
               "ISO_IR 126", "ISO_IR 127", "ISO_IR 138", "ISO_IR 144", "ISO_IR 148",
               "ISO_IR 166", "ISO_IR 192", "GB18030", "GBK"}
_STRING_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UI", "UC"}
#: tag -> (level, keyword, VR as bytes, whether a string VR) of every indexed attribute
_INDEXED_RAW = {tag: (level, keyword, vr.encode("ascii"), vr in _STRING_VRS)
                for tag, (level, keyword, vr) in _INDEXED.items()}


def check_and_index(dataset: bytes | memoryview, transfer_syntax_uid: str
                    ) -> dict[Level, dict[str, str]] | None:
    """:func:`check_encoding`, and the indexed values read from the raw bytes in the same
    walk: what :func:`level_values` gives for the parsed data set, without parsing it.

    Returns None (after the check) when the values need pydicom to read them: a character
    set other than ASCII-compatible single-byte or UTF-8, a non-ASCII value, or a VR in
    the data other than the dictionary's.
    """
    found = _walk(dataset, transfer_syntax_uid, _COLLECT)
    little = _syntax(transfer_syntax_uid)[2]
    charset = found.pop(_CHARSET, (b"", b""))[1]
    if not charset.isascii() or charset.decode().strip(" \x00") not in _ASCII_SAFE:
        return None
    out: dict[Level, dict[str, str]] = {level: {} for level in LEVEL_ATTRIBUTES}
    for tag, (vr, raw) in found.items():
        level, keyword, dict_vr, string = _INDEXED_RAW[tag]
        if vr and vr != dict_vr:
            return None
        if string and raw.isascii():
            if b"\\" in raw:
                text = "\\".join(v.strip().strip("\x00").strip()
                                 for v in raw.decode().split("\\"))
            else:  # one value (the common case): the same text, without the split
                text = raw.decode().strip().strip("\x00").strip()
        elif dict_vr == b"US":
            fmt = ("<" if little else ">") + "H" * (len(raw) // 2)
            text = "\\".join(str(v) for v in struct.unpack(fmt, raw[:len(raw) // 2 * 2]))
        else:
            return None
        if text:
            out[level][keyword] = text
    return out


def read_header(part10: bytes | Path) -> Dataset:
    """Parse a Part 10 file (bytes, or a file's path) up to (not including) the pixel data.

    Raises
    ------
    InvalidInstanceError
        The bytes are not a readable DICOM data set.
    """
    try:
        ds = dcmread(part10 if isinstance(part10, Path) else BytesIO(part10),
                     stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError,
            IndexError, NotImplementedError) as exc:
        raise InvalidInstanceError(f"malformed data set: {exc}".splitlines()[0]) from None
    return ds


def dataset_offset(head: bytes) -> int:
    """Where the data set starts in a Part 10 file, from its first 144 bytes (preamble,
    ``DICM``, then the File Meta Information Group Length element, PS3.10 7.1).

    Raises
    ------
    InvalidInstanceError
        The bytes do not start a Part 10 file with a group length.
    """
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:140] != b"\x02\x00\x00\x00UL\x04\x00":
        raise InvalidInstanceError("received file has no File Meta Information Group Length")
    return 144 + int.from_bytes(head[140:144], "little")


def as_text(value: object) -> str:
    """A data element value in its DICOM string form (multi-valued joined by ``\\``)."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(as_text(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return str(value).strip()


def level_values(ds: Dataset) -> dict[Level, dict[str, str]]:
    """keyword -> string for every indexed attribute present in `ds`, per level."""
    out: dict[Level, dict[str, str]] = {}
    for level, keywords in LEVEL_ATTRIBUTES.items():
        values: dict[str, str] = {}
        for keyword in keywords:
            elem = ds.get(keyword)
            if elem is None:
                continue
            text = as_text(elem)
            if text:
                values[keyword] = text
        out[level] = values
    return out
