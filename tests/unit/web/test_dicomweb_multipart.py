"""The incremental multipart/related reader and the media-type parsing of DICOMweb."""

from __future__ import annotations

import random

import pytest

from securepacs.web.dicomweb.multipart import (
    MAX_HEADERS,
    MalformedMultipart,
    MultipartReader,
    closing,
    media_ranges,
    parse_media_type,
    part_head,
)


def _body(parts: list[bytes], boundary: str = "b0und") -> bytes:
    out = b""
    for number, data in enumerate(parts):
        out += part_head("application/dicom", boundary, first=number == 0) + data
    return out + closing(boundary, empty=not parts)


def _read(body: bytes, pieces: list[int], boundary: str = "b0und") -> list[tuple[dict, bytes]]:
    reader = MultipartReader(boundary)
    got: list[tuple[dict, bytes]] = []
    at = 0
    for size in [*pieces, len(body)]:
        for event, value in reader.feed(body[at:at + size]):
            if event == "part":
                got.append((value.headers, b""))  # type: ignore[union-attr]
            elif event == "data":
                got[-1] = (got[-1][0], got[-1][1] + value)  # type: ignore[operator]
        at += size
        if at >= len(body):
            break
    reader.close()
    return got


@pytest.mark.parametrize("seed", range(20))
def test_parts_come_out_whole_whatever_the_pieces(seed: int) -> None:
    rng = random.Random(seed)
    parts = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000)))
             + b"\r\n--b0un" for _ in range(rng.randrange(1, 5))]  # a near-boundary inside
    body = _body(parts)
    pieces = [rng.randrange(1, 200) for _ in range(len(body))]
    got = _read(body, pieces)
    assert [data for _, data in got] == parts
    assert all(h["content-type"] == "application/dicom" for h, _ in got)


def test_preamble_epilogue_and_transport_padding_are_ignored() -> None:
    body = (b"preamble text\r\n--b0und  \r\nContent-Type: application/dicom\r\n\r\nABC"
            b"\r\n--b0und--\r\nepilogue")
    assert _read(body, [5]) == [({"content-type": "application/dicom"}, b"ABC")]


@pytest.mark.parametrize("body, why", [
    (b"x" * 70_000, "no multipart boundary"),
    (b"--b0und\r\nbad header line\r\n\r\nx\r\n--b0und--", "bad part header"),
    (b"--b0und\r\nA: " + b"x" * (MAX_HEADERS + 10), "headers too long"),
    (b"--b0und\r\nContent-Type: a/b\r\n\r\nunterminated", "ended before"),
])
def test_malformed_bodies_are_refused_with_a_reason(body: bytes, why: str) -> None:
    with pytest.raises(MalformedMultipart, match=why):
        _read(body, [1000])


def test_memory_stays_bounded_for_a_long_part() -> None:
    reader = MultipartReader("b0und")
    reader.feed(b"--b0und\r\n\r\n")
    for _ in range(100):
        out = reader.feed(b"y" * 100_000)
        assert sum(len(v) for e, v in out if e == "data") >= 99_000  # type: ignore[arg-type]
        assert len(reader._buffer) < 100  # only the look-behind for a split delimiter


def test_a_bad_boundary_is_refused() -> None:
    for bad in ("", "x" * 201, "has\"quote"):
        with pytest.raises(MalformedMultipart):
            MultipartReader(bad)


def test_media_types_and_accept_ranges() -> None:
    kind, params = parse_media_type(
        'Multipart/Related; type="application/dicom"; boundary="a;b"; transfer-syntax=*')
    assert kind == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "a;b", "transfer-syntax": "*"}
    ranges = media_ranges('multipart/related; type="application/dicom"; '
                          'transfer-syntax=1.2.840.10008.1.2.1, image/png;q=0, */*;q=0.5')
    assert [k for k, _ in ranges] == ["multipart/related", "*/*"]
    assert ranges[0][1]["transfer-syntax"] == "1.2.840.10008.1.2.1"
