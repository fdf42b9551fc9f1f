"""The chunked transfer coding of streamed DICOMweb responses (RFC 9112 7.1), in few writes."""

from __future__ import annotations

import random

from securepacs.web.dicomweb.listener import _DIRECT, _RECORD, _TINY, ChunkedWriter
from securepacs.web.dicomweb.multipart import closing, part_head


class _Wire:
    """What the writer hands the connection, kept as copies (the buffer may be reused)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.objects: list[object] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.objects.append(data.obj if isinstance(data, memoryview) else data)
        self.writes.append(bytes(data))

    def chunks(self) -> list[bytes]:
        """The chunks of the body as a client decodes them; the body must be complete."""
        wire, out, at = b"".join(self.writes), [], 0
        while True:
            end = wire.index(b"\r\n", at)
            size = int(wire[at:end], 16)
            if size == 0:
                assert wire[end:] == b"\r\n\r\n", "the body ends right after the last chunk"
                return out
            out.append(wire[end + 2:end + 2 + size])
            assert wire[end + 2 + size:end + 4 + size] == b"\r\n"
            at = end + 4 + size


def test_every_piece_comes_out_as_one_chunk_byte_for_byte() -> None:
    rng = random.Random(19)
    sizes = [0, 1, _TINY - 1, _TINY, _RECORD - 5, _RECORD, _DIRECT - 1, _DIRECT, _DIRECT + 1,
             3 * 2**20 + 7] + [rng.randrange(1, 3 * _DIRECT) for _ in range(40)]
    pieces = [rng.randbytes(n) for n in sizes]
    wire = _Wire()
    writer = ChunkedWriter(wire.write)
    for piece in pieces:
        writer.piece(piece)
    writer.end()
    assert wire.chunks() == [p for p in pieces if p]


def test_a_study_goes_out_in_two_writes_per_instance_and_blobs_are_not_copied() -> None:
    blobs = [random.Random(n).randbytes(525_000 + n) for n in range(5)]
    wire = _Wire()
    writer = ChunkedWriter(wire.write)
    for number, blob in enumerate(blobs):
        writer.piece(part_head("application/dicom", "B", first=number == 0))
        writer.piece(blob)
    writer.piece(closing("B", empty=False))
    writer.end()
    assert len(wire.writes) == 2 * len(blobs) + 1
    # the part head, the size lines and the blob's first bytes fill one TLS record
    assert all(len(w) == _RECORD for w in wire.writes[0:-1:2])
    # the rest of each blob is handed over as it is, not copied into its framing
    assert [o is b for o, b in zip(wire.objects[1::2], blobs, strict=True)] == [True] * 5
    heads = [part_head("application/dicom", "B", first=n == 0) for n in range(5)]
    assert wire.chunks() == [x for pair in zip(heads, blobs, strict=True) for x in pair] + [
        closing("B", empty=False)]


def test_only_tiny_pieces_wait_and_what_waits_is_bounded() -> None:
    wire = _Wire()
    writer = ChunkedWriter(wire.write)
    writer.piece(b"--boundary\r\n\r\n")  # a part head waits for its content
    assert wire.writes == []
    writer.piece(b"j" * 5000)  # a thumbnail goes out at once, with the head before it
    assert len(wire.writes) == 1 and wire.writes[0].endswith(b"j" * 5000 + b"\r\n")
    for _ in range(10_000):  # many tiny pieces never pile up beyond one large write
        writer.piece(b"t" * 100)
    assert max(len(w) for w in wire.writes) < _DIRECT + _TINY
    writer.end()
    assert wire.chunks() == [b"--boundary\r\n\r\n", b"j" * 5000] + [b"t" * 100] * 10_000


def test_an_empty_body_is_just_the_last_chunk() -> None:
    wire = _Wire()
    writer = ChunkedWriter(wire.write)
    writer.piece(b"")
    writer.end()
    assert wire.writes == [b"0\r\n\r\n"]
