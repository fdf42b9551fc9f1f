"""Fuzz the structural walker of received data sets (PS3.5 7.1-7.5, A.5) and the Part 10
header reader (PS3.10 7.1).

Property: :func:`securepacs.services.part10.check_encoding` / ``check_and_index`` /
``dataset_offset`` raise nothing but :class:`securepacs.errors.InvalidInstanceError` on
any bytes, and a deflated data set cannot inflate without bound. A longer run:
``SECUREPACS_FUZZ_EXAMPLES=20000 pytest tests/fuzz``.
"""

from __future__ import annotations

import os
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securepacs.errors import InvalidInstanceError
from securepacs.model import encoding
from securepacs.services import part10

FUZZ = settings(max_examples=int(os.environ.get("SECUREPACS_FUZZ_EXAMPLES", "200")),
                deadline=None)

SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
            "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.50", "1.2.3.4"]
UNDEFINED = 0xFFFFFFFF


def _explicit(group: int, element: int, vr: bytes, value: bytes, length: int | None) -> bytes:
    n = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC"):
        return struct.pack("<HH2sHI", group, element, vr, 0, n & 0xFFFFFFFF) + value
    return struct.pack("<HH2sH", group, element, vr, n & 0xFFFF) + value


elements = st.one_of(
    st.builds(_explicit, st.sampled_from([0x0008, 0x0010, 0x0020, 0x7FE0, 0xFFFE]),
              st.sampled_from([0x0016, 0x0018, 0x0010, 0x0020, 0xE000, 0xE00D, 0xE0DD]),
              st.sampled_from([b"UI", b"LO", b"SQ", b"OB", b"US", b"PN", b"\x00\x01"]),
              st.binary(max_size=40), st.one_of(st.none(), st.integers(0, 100),
                                                st.just(UNDEFINED))),
    st.builds(lambda tag, length: struct.pack("<II", tag, length),
              st.sampled_from([0xE000FFFE, 0xE00DFFFE, 0xE0DDFFFE, 0x00100010]),
              st.sampled_from([0, 4, UNDEFINED, 0x7FFFFFFF])),
)
datasets = st.builds(lambda parts, tail: b"".join(parts) + tail,
                     st.lists(elements, max_size=12), st.binary(max_size=8))


@FUZZ
@given(datasets, st.sampled_from(SYNTAXES))
def test_walker_raises_only_invalid_instance(data: bytes, ts: str) -> None:
    try:
        part10.check_and_index(data, ts)
    except InvalidInstanceError:
        pass
    try:
        part10.check_encoding(memoryview(data), ts)
    except InvalidInstanceError:
        pass


@FUZZ
@given(st.binary(max_size=3000))
def test_walker_on_raw_and_deflated_bytes(data: bytes) -> None:
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    for raw, ts in ((data, "1.2.840.10008.1.2"), (data, "1.2.840.10008.1.2.1.99"),
                    (deflater.compress(data) + deflater.flush(), "1.2.840.10008.1.2.1.99")):
        try:
            part10.check_encoding(raw, ts)
        except InvalidInstanceError:
            pass


@FUZZ
@given(st.binary(max_size=200))
def test_dataset_offset_raises_only_invalid_instance(head: bytes) -> None:
    for candidate in (head, part10.PREAMBLE + b"\x02\x00\x00\x00UL\x04\x00" + head):
        try:
            offset = part10.dataset_offset(candidate[:144])
        except InvalidInstanceError:
            continue
        assert offset >= 144


def test_a_deflate_bomb_is_refused_without_inflating_it() -> None:
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    bomb = deflater.compress(bytes(64 << 20)) + deflater.flush()  # 64 KB -> 64 MiB
    with pytest.raises(ValueError, match="inflates to more than 1048576 bytes"):
        encoding.check_structure(bomb, implicit=False, deflated=True, max_inflated=1 << 20)
