"""Structural check of an encoded data set (DICOM PS3.5 7.1 - 7.5), a pure core.

pydicom reads leniently: a value cut short or a length running past the end of the data
is read as whatever bytes are there. Before an archive acknowledges an instance it must
know that the bytes it keeps are a whole data set, so :func:`check_structure` walks every
element header, sequence item and delimiter, without decoding a single value, and raises
``ValueError`` naming the offset of the first element that does not fit. On the way it
can hand back the raw values of chosen top-level elements (what an index needs), so that
the data set is walked once, not parsed a second time.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR",
                       b"UT", b"SV", b"UV"})
#: What an explicit VR looks like: two upper-case ASCII letters (PS3.5 6.2).
_VR_FORM = frozenset(bytes((a, b)) for a in range(65, 91) for b in range(65, 91))
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_MAX_DEPTH = 64
#: A deflated data set (PS3.5 A.5) inflating to more than this is refused: a few
#: megabytes of deflated zeros would otherwise inflate to gigabytes in memory.
MAX_INFLATED = 512 * 1024 * 1024


#: tag -> (VR as in the data, b"" for implicit VR; the value bytes)
RawElements = dict[int, tuple[bytes, bytes]]


def _readers(order: str) -> tuple[Any, ...]:
    """The ``unpack_from`` of each header form in byte order `order` (``<`` or ``>``),
    built once per process: u16, u32, tag, (group, element, VR, short length) and
    (group, element, length)."""
    return tuple(struct.Struct(order + form).unpack_from
                 for form in ("H", "I", "HH", "HH2sH", "HHI"))


_READERS = {True: _readers("<"), False: _readers(">")}


class _Walker:
    def __init__(self, data: bytes | memoryview, *, implicit: bool, little: bool,
                 collect: frozenset[int] = frozenset()):
        self.data = data
        self.implicit = implicit
        self.collect = collect
        self.found: RawElements = {}
        (self.u16, self.u32, self.tag, self.explicit_head,
         self.implicit_head) = _READERS[bool(little)]

    def _read_tag(self, pos: int) -> int:
        if pos + 8 > len(self.data):
            raise ValueError(f"data set truncated at byte {pos}")
        group, elem = self.tag(self.data, pos)
        return int(group) << 16 | int(elem)

    def dataset(self, pos: int, end: int, depth: int, implicit: bool) -> int:
        """Walk elements from `pos`; stop at `end` or at an Item Delimitation Item.

        Each element header is read with one ``unpack_from`` (tag, VR and short length
        together), with no slice or copy of the data: this runs for every element of
        every received data set."""
        data = self.data
        size = len(data)
        explicit_head, implicit_head, u32 = self.explicit_head, self.implicit_head, self.u32
        while pos < end:
            if pos + 8 > size:
                raise ValueError(f"data set truncated at byte {pos}")
            if implicit:
                group, elem, length = implicit_head(data, pos)
                vr = b""
            else:
                group, elem, vr, length = explicit_head(data, pos)
            tag = group << 16 | elem
            if tag == _ITEM_END:
                return pos + 8
            if group == 0xFFFE:
                raise ValueError(f"unexpected delimiter ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
                                 f"at byte {pos}")
            if implicit:
                pos += 8
            else:
                if vr not in _VR_FORM:
                    shown = vr.hex(" ").upper() or "none"
                    raise ValueError(f"invalid VR (bytes {shown}) in element ({tag >> 16:04X},"
                                     f"{tag & 0xFFFF:04X}) at byte {pos}: not explicit VR as the "
                                     "transfer syntax says, or damaged")
                if vr in _LONG_VRS:
                    if pos + 12 > size:
                        raise ValueError(f"data set truncated at byte {pos}")
                    length = u32(data, pos + 8)[0]
                    pos += 12
                else:
                    pos += 8
            if length == _UNDEFINED:
                if depth >= _MAX_DEPTH:
                    raise ValueError(f"sequences nested deeper than {_MAX_DEPTH} at byte {pos}")
                # SQ, encapsulated pixel data, or UN holding an implicit-VR sequence
                pos = self.items(pos, depth + 1, implicit or vr == b"UN")
            else:
                if pos + length > end:
                    raise ValueError(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) of "
                                     f"{length} bytes at byte {pos} runs past the end")
                if depth == 0 and tag in self.collect:
                    self.found[tag] = (vr, bytes(data[pos:pos + length]))
                if vr == b"SQ":
                    self.dataset_items(pos, pos + length, depth + 1, implicit)
                pos += length
        if pos != end:
            raise ValueError(f"data set ends inside an element at byte {end}")
        return pos

    def dataset_items(self, pos: int, end: int, depth: int, implicit: bool) -> None:
        """Items of a defined-length sequence."""
        while pos < end:
            if self._read_tag(pos) != _ITEM:
                raise ValueError(f"expected a sequence item at byte {pos}")
            length = int(self.u32(self.data, pos + 4)[0])
            pos += 8
            if length == _UNDEFINED:
                pos = self.dataset(pos, end, depth, implicit)
            else:
                if pos + length > end:
                    raise ValueError(f"sequence item at byte {pos} runs past its sequence")
                self.dataset(pos, pos + length, depth, implicit)
                pos += length

    def items(self, pos: int, depth: int, implicit: bool) -> int:
        """Items up to a Sequence Delimitation Item; returns the position after it."""
        end = len(self.data)
        while True:
            tag = self._read_tag(pos)
            length = int(self.u32(self.data, pos + 4)[0])
            pos += 8
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM:
                raise ValueError(f"expected an item or sequence delimiter at byte {pos - 8}")
            if length == _UNDEFINED:
                pos = self.dataset(pos, end, depth, implicit)
            else:
                if pos + length > end:
                    raise ValueError(f"item of {length} bytes at byte {pos} runs past the end")
                pos += length  # item content (or a pixel data fragment) is not walked


def check_structure(data: bytes | memoryview, *, implicit: bool, little: bool = True,
                    deflated: bool = False, collect: frozenset[int] = frozenset(),
                    max_inflated: int = MAX_INFLATED) -> RawElements:
    """Raise ``ValueError`` unless `data` is a complete, well-delimited data set; return
    the raw values of the top-level elements whose tags are in `collect` (defined
    length only).

    Parameters
    ----------
    data : bytes or memoryview
        The encoded data set (no preamble, no File Meta Information); a memoryview (e.g.
        of an ``mmap`` of a received file) is walked in place, only element headers are
        touched.
    implicit, little, deflated : bool
        The transfer syntax's encoding.
    max_inflated : int
        Longest a deflated data set may inflate to (else ``ValueError``).
    """
    if deflated:
        try:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            data = inflater.decompress(bytes(data), max_inflated + 1)
            if len(data) > max_inflated or inflater.unconsumed_tail:
                raise ValueError(f"deflated data set inflates to more than {max_inflated} "
                                 "bytes")
            data += inflater.flush()
        except zlib.error as exc:
            raise ValueError(f"deflated data set does not inflate: {exc}") from None
    walker = _Walker(data, implicit=implicit, little=little, collect=collect)
    walker.dataset(0, len(data), 0, implicit)
    return walker.found
