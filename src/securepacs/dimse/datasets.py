"""Identifiers and other small data sets of DIMSE messages, encoded in a context's
transfer syntax (pynetdicom's encoder and decoder), for both ends of an association."""

from __future__ import annotations

from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import decode, encode


def encode_dataset(ds: Dataset, transfer_syntax: str) -> bytes:
    """`ds` in `transfer_syntax` (File Meta, if any, is not part of it); ValueError if it
    cannot be encoded."""
    ts = UID(transfer_syntax)
    raw = encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    if raw is None:
        raise ValueError("the data set cannot be encoded")
    return raw


def decode_dataset(raw: bytes | bytearray | None, transfer_syntax: str) -> Dataset:
    """The data set in `raw` (empty for None); ValueError if it cannot be decoded."""
    if not raw:
        return Dataset()
    ts = UID(transfer_syntax)
    ds = decode(BytesIO(raw), ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    if ds is None:
        raise ValueError("the data set cannot be decoded")
    return ds
