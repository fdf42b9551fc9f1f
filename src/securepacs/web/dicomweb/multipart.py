"""multipart/related bodies for DICOMweb (RFC 2387, RFC 2046 5.1; PS3.18 8.6.1.2).

One responsibility: read a multipart body incrementally (:class:`MultipartReader`: bytes
in, events out, memory bounded by the header and look-behind limits whatever the part
sizes), write one (:func:`part_head`, :func:`closing`), and parse the media-type
parameters of Content-Type and Accept header values (RFC 9110 5.6.6).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

__all__ = ["MalformedMultipart", "MultipartReader", "Part", "closing", "media_ranges",
           "new_boundary", "parse_media_type", "part_head"]

MAX_HEADERS = 16 * 1024
MAX_PREAMBLE = 64 * 1024
_TOKEN = re.compile(r'\s*([^\s=;,]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;,]*))?\s*')
#: RFC 2046 5.1.1 allows 70 characters; Orthanc's DICOMweb plugin sends 73: accept 200.
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,200}$")


class MalformedMultipart(ValueError):
    """The body is not well-formed multipart (the message says where)."""


def _params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for piece in _split(text, ";"):
        match = _TOKEN.fullmatch(piece)
        if not match or match.group(2) is None:
            continue
        value = match.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[match.group(1).lower()] = value
    return out


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``'multipart/related; type="application/dicom"'`` -> ("multipart/related", {...})."""
    kind, _, rest = value.partition(";")
    return kind.strip().lower(), _params(rest)


def media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """The media ranges of an Accept header, in the order given (q=0 ones dropped)."""
    out = []
    for item in _split(accept, ","):
        if not item.strip():
            continue
        kind, params = parse_media_type(item)
        if params.get("q", "1").strip() in ("0", "0.0", "0.00", "0.000"):
            continue
        out.append((kind, params))
    return out


def new_boundary() -> str:
    return f"securepacs-{secrets.token_hex(16)}"


def part_head(content_type: str, boundary: str, *, first: bool,
              extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The delimiter and headers before a part's content."""
    lines = [f"Content-Type: {content_type}", *(f"{k}: {v}" for k, v in extra)]
    lead = "" if first else "\r\n"
    return (lead + f"--{boundary}\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str, *, empty: bool = False) -> bytes:
    """The close delimiter after the last part."""
    return (("" if empty else "\r\n") + f"--{boundary}--\r\n").encode("latin-1")


@dataclass
class Part:
    """The headers of one part (names lower-cased)."""

    headers: dict[str, str]

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


#: Events :meth:`MultipartReader.feed` returns: a new part, a piece of its content, its end.
Event = tuple[str, object]


class MultipartReader:
    """An incremental multipart reader.

    Parameters
    ----------
    boundary : str
        The boundary parameter of the body's Content-Type.

    :meth:`feed` takes the body's bytes in any pieces and returns events:
    ``("part", Part)`` when a part's headers are complete, ``("data", bytes)`` for its
    content, ``("end", None)`` when the part is over. :meth:`close` checks that the
    close delimiter was seen.
    """

    def __init__(self, boundary: str) -> None:
        if not _BOUNDARY.match(boundary) or boundary.endswith(" "):
            raise MalformedMultipart("the boundary parameter is missing or invalid")
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._buffer = b"\r\n"  # the first delimiter may open the body without a CRLF
        self._state = "preamble"
        self._seen = 0
        self.parts = 0

    @property
    def finished(self) -> bool:
        return self._state == "done"

    def feed(self, data: bytes) -> list[Event]:
        """Events for the next piece of the body.

        Raises
        ------
        MalformedMultipart
            Over-long preamble or headers, a bad header line, data after the close.
        """
        events: list[Event] = []
        if self._state == "done":
            return events  # the epilogue is ignored (RFC 2046 5.1.1)
        self._buffer += data
        while True:
            before = (self._state, len(self._buffer))
            getattr(self, f"_{self._state}")(events)
            if self._state == "done" or (self._state, len(self._buffer)) == before:
                return events

    def _preamble(self, events: list[Event]) -> None:
        at = self._buffer.find(self._delimiter)
        if at < 0:
            keep = len(self._delimiter)
            self._seen += max(0, len(self._buffer) - keep)
            if self._seen > MAX_PREAMBLE:
                raise MalformedMultipart("no multipart boundary found at the start of the body")
            self._buffer = self._buffer[-keep:]
            return
        self._buffer = self._buffer[at + len(self._delimiter):]
        self._state = "after_delimiter"

    def _after_delimiter(self, events: list[Event]) -> None:
        if len(self._buffer) < 2:
            return
        if self._buffer.startswith(b"--"):
            self._state = "done"
            self._buffer = b""
            return
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > 1024:
                raise MalformedMultipart("garbage after a multipart boundary")
            return
        if self._buffer[:end].strip(b" \t"):
            raise MalformedMultipart("garbage after a multipart boundary")
        self._buffer = self._buffer[end + 2:]
        self._state = "headers"

    def _headers(self, events: list[Event]) -> None:
        if self._buffer.startswith(b"\r\n"):
            block, self._buffer = b"", self._buffer[2:]
        else:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEADERS:
                    raise MalformedMultipart("part headers too long")
                return
            block, self._buffer = self._buffer[:end], self._buffer[end + 4:]
        headers: dict[str, str] = {}
        for line in block.split(b"\r\n") if block else []:
            name, colon, value = line.partition(b":")
            if not colon or not name.strip():
                raise MalformedMultipart("bad part header line")
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
        self.parts += 1
        events.append(("part", Part(headers)))
        self._state = "body"

    def _body(self, events: list[Event]) -> None:
        at = self._buffer.find(self._delimiter)
        if at >= 0:
            if at:
                events.append(("data", self._buffer[:at]))
            events.append(("end", None))
            self._buffer = self._buffer[at + len(self._delimiter):]
            self._state = "after_delimiter"
            return
        keep = len(self._delimiter) - 1
        if len(self._buffer) > keep:
            events.append(("data", self._buffer[:-keep]))
            self._buffer = self._buffer[-keep:]

    def close(self) -> None:
        """Raise :class:`MalformedMultipart` when the body ended before its close delimiter."""
        if self._state != "done":
            raise MalformedMultipart("the body ended before the closing multipart boundary")
