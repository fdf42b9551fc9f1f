"""The enrolment endpoint's HTTP/1.1 request parser: bytes in, a request head out.

One responsibility: read one request of the small subset of HTTP/1.1 (RFC 9112) the
enrolment endpoint needs, strictly, with bounded sizes, and without I/O (a pure core in the
manner of h11): the request line (RFC 9112 3), header fields (RFC 9112 5; no obsolete line
folding, 5.2), and the message body length from ``Content-Length`` only (RFC 9112 6.3: a
``Transfer-Encoding`` is refused, a length that is not a single run of digits is a 400).
Anything else is an :class:`HttpError` with the status to answer; nothing here can raise
anything else on any input (the fuzz target in ``tests/fuzz`` holds that).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["HEAD_LIMIT", "HttpError", "RequestHead", "body_length", "find_head_end",
           "parse_head", "response"]

HEAD_LIMIT = 8 * 1024
"""The longest request line plus header fields accepted (bytes)."""
MAX_FIELDS = 50
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 5.6.2 token
_TARGET = re.compile(rb"^/[\x21-\x7e]*$")  # origin-form, visible ASCII only
_VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")  # RFC 9110 5.5 field-value, no controls
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
            411: "Length Required", 413: "Content Too Large", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 501: "Not Implemented",
            503: "Service Unavailable", 505: "HTTP Version Not Supported"}


class HttpError(Exception):
    """A request that gets an error status and no further reading.

    Parameters
    ----------
    status : int
        The HTTP status to answer.
    message : str
        One line for the client (``{"error": message}``).
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RequestHead:
    """Request line and header fields (names lower-cased; values as Latin-1 text)."""

    method: str
    target: str
    version: str
    fields: tuple[tuple[str, str], ...]

    def get(self, name: str) -> list[str]:
        """Every value of header field `name` (case-insensitive), in order."""
        name = name.lower()
        return [value for key, value in self.fields if key == name]


def find_head_end(buffer: bytes) -> int:
    """The index just past the blank line ending the head, or -1 if not received yet.

    Raises
    ------
    HttpError
        431 when no end was found within :data:`HEAD_LIMIT` bytes.
    """
    end = buffer.find(b"\r\n\r\n", 0, HEAD_LIMIT + 4)
    if end >= 0:
        return end + 4
    if len(buffer) > HEAD_LIMIT:
        raise HttpError(431, "request head too large")
    return -1


def parse_head(head: bytes) -> RequestHead:
    """Parse a request head (request line and fields, with or without the final CRLF CRLF).

    Raises
    ------
    HttpError
        400 for anything malformed, 431 when too large, 505 for a version other than 1.x.
    """
    if len(head) > HEAD_LIMIT + 4:
        raise HttpError(431, "request head too large")
    lines = head.removesuffix(b"\r\n\r\n").split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not re.fullmatch(rb"HTTP/\d\.\d", version):
        raise HttpError(400, "malformed request line")
    if not version.startswith(b"HTTP/1."):
        raise HttpError(505, "only HTTP/1.x is spoken here")
    if not _TARGET.match(target):
        raise HttpError(400, "malformed request target")
    if len(lines) - 1 > MAX_FIELDS:
        raise HttpError(431, "too many header fields")
    fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):  # also refuses obs-fold (leading space)
            raise HttpError(400, "malformed header field")
        value = value.strip(b" \t")
        if not _VALUE.match(value):
            raise HttpError(400, "malformed header field")
        fields.append((name.decode("ascii").lower(), value.decode("latin-1")))
    return RequestHead(method.decode("ascii"), target.decode("ascii"),
                       version.decode("ascii"), tuple(fields))


def body_length(head: RequestHead, *, limit: int) -> int:
    """The body length announced by `head` (0 without a body), at most `limit`.

    Raises
    ------
    HttpError
        501 for a ``Transfer-Encoding``; 400 for several or non-numeric ``Content-Length``
        values; 413 above `limit`.
    """
    if head.get("transfer-encoding"):
        raise HttpError(501, "transfer codings are not supported: send Content-Length")
    values = head.get("content-length")
    if not values:
        return 0
    if len(values) > 1 or not re.fullmatch(r"[0-9]{1,19}", values[0]):
        raise HttpError(400, "malformed Content-Length")
    length = int(values[0])
    if length > limit:
        raise HttpError(413, "request too large")
    return length


def response(status: int, body: bytes, kind: str = "application/json",
             extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete HTTP/1.1 response that closes the connection (no server banner)."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
             f"Content-Type: {kind}", f"Content-Length: {len(body)}", "Connection: close",
             "Cache-Control: no-store", "X-Content-Type-Options: nosniff",
             *(f"{name}: {value}" for name, value in extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
