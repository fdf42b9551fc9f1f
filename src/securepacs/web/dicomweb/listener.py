"""The DICOMweb HTTPS listener: the archive viewer's listener, streaming both ways.

One responsibility: serve the DICOMweb app (PS3.18) of ``securepacs serve`` over HTTPS,
with the admission of :mod:`securepacs.web.archive` (the DICOM gatekeeper, before every
request, so that a revocation also ends a kept-alive connection) and two differences:

- request and response bodies stream (RFC 9112 7.1 chunked transfer coding both ways, or
  Content-Length): a STOW-RS upload or a WADO-RS study never sits whole in memory. Each
  connection runs the ASGI app on an event loop of its own, in the connection's thread,
  so that reading and writing the socket may block;
- the TLS handshake accepts a client without a certificate (``CERT_OPTIONAL``; a
  certificate that is sent is still verified in the handshake) because the disc viewer,
  a ``file://`` page, may hold only an import token. Such a request reaches the app only
  for the routes :meth:`DicomwebServer.token_route` names (STOW-RS and its CORS
  preflight), where the app checks the token; every other one is refused here with 403
  and the connection closed. Certificate-less connections get a short idle timeout and
  at most :data:`MAX_ANONYMOUS` of them are served at once (no thread exhaustion by
  clients that proved nothing).

A chunked response body goes out in few, large writes (:class:`ChunkedWriter`): under TLS
every write is at least one record and one system call, so a large piece (a blob's read)
is written as it is, never copied into its chunk's framing, and the small pieces around
it (chunk size lines, multipart part heads and boundaries) travel together.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

# Starlette runs the routes through anyio, which imports its asyncio backend on first use:
# at start-up here, not in the first request a client makes.
import anyio._backends._asyncio  # noqa: F401

from securepacs.model.identity import Identity
from securepacs.web.archive import _PEER_ATTR, IDENTITY_KEY, ArchiveViewerServer, _Handler
from securepacs.web.dicomweb.responses import StreamAborted

__all__ = ["ChunkedWriter", "DicomwebServer"]

log = logging.getLogger(__name__)

#: Connections without a client certificate served at once, and their idle timeout (s).
MAX_ANONYMOUS = 32
ANONYMOUS_IDLE = 15.0
_CHUNK_LINE = 1024
_READ = 256 * 1024
#: Body pieces shorter than this (part heads, boundaries) wait for the piece after them;
#: pieces from this size on go out at once; from :data:`_DIRECT` on, without a copy.
_TINY = 1024
_DIRECT = 64 * 1024
_RECORD = 16 * 1024  # a TLS record's largest plaintext (RFC 8446 5.1)
_REFUSED = (b'{"error": "a client certificate admitted by this archive is required '
            b'(unknown, revoked or none was sent)"}')


class BadRequestBody(Exception):
    """The request body's framing is broken (a bad chunk size line)."""


class _Body:
    """The request body, read as it arrives: Content-Length or chunked (RFC 9112 7.1)."""

    def __init__(self, rfile: Any, headers: Any) -> None:
        self._rfile = rfile
        self.chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        try:
            self._left = 0 if self.chunked else int(headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequestBody("bad Content-Length") from None
        if self._left < 0:
            raise BadRequestBody("bad Content-Length")
        self._chunk_left = 0
        self.done = not self.chunked and self._left == 0

    def read(self) -> bytes:
        """The next piece of the body (b"" once it is over)."""
        if self.done:
            return b""
        if not self.chunked:
            data = self._rfile.read(min(self._left, _READ))
            if not data:
                raise BadRequestBody("the body ended before its Content-Length")
            self._left -= len(data)
            self.done = self._left == 0
            return data
        if self._chunk_left == 0:
            line = self._rfile.readline(_CHUNK_LINE)
            size_text = line.split(b";", 1)[0].strip()
            try:
                self._chunk_left = int(size_text, 16)
            except ValueError:
                raise BadRequestBody("bad chunk size line") from None
            if self._chunk_left == 0:  # the last chunk: skip trailers up to the empty line
                for _ in range(64):
                    if self._rfile.readline(_CHUNK_LINE) in (b"\r\n", b"\n", b""):
                        break
                self.done = True
                return b""
        data = self._rfile.read(min(self._chunk_left, _READ))
        if not data:
            raise BadRequestBody("the body ended inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(_CHUNK_LINE)  # the CRLF after the chunk data
        return data


class ChunkedWriter:
    """A response body in the chunked transfer coding (RFC 9112 7.1), in few writes.

    A piece of :data:`_DIRECT` bytes or more is handed to `write` as it is, not copied
    into its framing, but for its first bytes: they fill one TLS record with everything
    pending before them (the previous chunk's CRLF, the piece's chunk size line). Smaller
    pieces are framed into the pending buffer, which goes out at once unless the piece is
    tiny (under :data:`_TINY` bytes: a part head or a boundary, always followed by its
    content or the body's end). What is pending is bounded: it is written once it
    reaches :data:`_DIRECT` bytes.

    Parameters
    ----------
    write : callable
        Writes all the bytes it is given (the connection's ``wfile.write``); the buffer
        it gets is not reused after it returns.
    """

    def __init__(self, write: Callable[[Any], object]) -> None:
        self._write = write
        self._pending = bytearray()

    def piece(self, data: bytes | bytearray | memoryview) -> None:
        """One piece of the body, as one chunk (nothing for an empty piece)."""
        size = len(data)
        if not size:
            return
        self._pending += b"%x\r\n" % size
        if size >= _DIRECT:  # what is pending fills one TLS record with the piece's start
            view = memoryview(data)
            cut = max(0, _RECORD - len(self._pending))
            self._pending += view[:cut]
            self._flush()
            self._write(view[cut:])
            self._pending += b"\r\n"
            return
        self._pending += data
        self._pending += b"\r\n"
        if size >= _TINY or len(self._pending) >= _DIRECT:
            self._flush()

    def end(self) -> None:
        """The last chunk: the body is complete."""
        self._pending += b"0\r\n\r\n"
        self._flush()

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, bytearray()
            self._write(pending)


class _StreamHandler(_Handler):
    server: DicomwebServer

    def setup(self) -> None:
        anonymous = getattr(self.request, _PEER_ATTR, None) is None
        super().setup()
        if anonymous:  # no certificate: a short idle time, and few such connections at once
            self.connection.settimeout(ANONYMOUS_IDLE)
        self._loop = asyncio.new_event_loop()
        self._slot = anonymous and self.server.anonymous.acquire(blocking=False)
        if anonymous and not self._slot:
            log.warning("dicomweb connection from %s without a certificate closed: already "
                        "%d such connections", self.client_address[0], MAX_ANONYMOUS)
            self.close_connection = True
            self.handle = lambda: None  # type: ignore[method-assign]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._loop.close()
            if self._slot:
                self.server.anonymous.release()

    def do_PUT(self) -> None:  # noqa: N802 - stdlib name
        self._handle()

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib name
        self._handle()

    def do_OPTIONS(self) -> None:  # noqa: N802 - stdlib name
        self._handle()

    def _refuse(self, status: int, body: bytes) -> None:
        self.close_connection = True
        self._send(status, body, [("Content-Type", "application/json"),
                                  ("Cache-Control", "no-store"), ("Connection", "close")])

    def _handle(self) -> None:
        cert = getattr(self.request, _PEER_ATTR, None)
        identity = self._admit()
        path = self.path.partition("?")[0]
        if identity is None and (cert is not None
                                 or not self.server.token_route(self.command, unquote(path))):
            if cert is None:
                log.warning("dicomweb %s %s from %s refused: no client certificate",
                            self.command, path, self.client_address[0])
                self.server.audit.refused(address=self.client_address[0],
                                          reason="DICOMweb request without a client certificate")
            self._refuse(403, _REFUSED)
            return
        try:
            body = _Body(self.rfile, self.headers)
        except BadRequestBody as exc:
            log.warning("dicomweb %s %s from %s: %s", self.command, path,
                        self.client_address[0], exc)
            self._refuse(400, f'{{"error": "{exc}"}}'.encode())
            return
        self._run(self._scope(identity, "2.4"), body)

    def _run(self, scope: dict[str, Any], body: _Body) -> None:
        started = False
        chunked: ChunkedWriter | None = None
        head = self.command == "HEAD"  # no body sent (set again for 1xx, 204, 304)

        async def receive() -> dict[str, Any]:
            if body.done:
                return {"type": "http.disconnect"}
            data = body.read()
            return {"type": "http.request", "body": data, "more_body": not body.done}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal started, chunked, head
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # RFC 9110 6.4.1, 15.3.5: 1xx, 204 and 304 have no body, and a 204 carries no
                # Transfer-Encoding (9112 6.1). A chunked terminator after a 204 (the CORS
                # preflight) stays in a kept-alive connection, where Chromium reads it as the
                # start of the next answer: ERR_INVALID_HTTP_RESPONSE for the disc viewer's POST.
                head = head or status < 200 or status in (204, 304)
                self.send_response(status)
                names = set()
                for key, value in message.get("headers", []):
                    name = bytes(key).decode("latin-1")
                    names.add(name.lower())
                    self.send_header(name, bytes(value).decode("latin-1"))
                if "content-length" not in names and not head:
                    chunked = ChunkedWriter(self.wfile.write)
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                started = True
                return
            if message["type"] != "http.response.body" or head:
                return
            data = message.get("body", b"")
            if not isinstance(data, bytes | bytearray | memoryview):
                data = bytes(data)
            if chunked is not None:
                chunked.piece(data)
                if not message.get("more_body", False):
                    chunked.end()
            elif data:
                self.wfile.write(data)

        try:
            self._loop.run_until_complete(self.server.app(scope, receive, send))
        except BadRequestBody as exc:
            log.warning("dicomweb %s %s: %s", scope["method"], scope["path"], exc)
            if not started:
                self._refuse(400, f'{{"error": "{exc}"}}'.encode())
            self.close_connection = True
            return
        except StreamAborted:  # logged where it happened; the body must stay unended
            self.close_connection = True
            return
        except (OSError, asyncio.CancelledError) as exc:
            log.warning("dicomweb %s %s: connection lost: %s", scope["method"], scope["path"],
                        exc)
            self.close_connection = True
            return
        except Exception as exc:  # noqa: BLE001 - one failed request must not end the server
            log.error("dicomweb request %s %s failed: %r", scope["method"], scope["path"], exc,
                      exc_info=True)
            if not started:
                self._refuse(500, b'{"error": "internal error"}')
            self.close_connection = True
            return
        if not started:
            self._refuse(500, b'{"error": "no response"}')
        if not body.done:  # the app answered without reading the whole body
            self.close_connection = True


class DicomwebServer(ArchiveViewerServer):
    """HTTPS for the DICOMweb app: the archive viewer's admission, streamed bodies.

    Parameters are those of :class:`~securepacs.web.archive.ArchiveViewerServer`; the TLS
    context should request an optional client certificate
    (``tlspolicy.server_context(..., require_client_cert=False, optional_client_cert=True)``).
    `token_paths` matches (whole) the paths where a request without a certificate may go
    on to the app (POST and OPTIONS only); None: nowhere.
    """

    connect_permissions = ()  # find/get/store are checked per request by the app
    label = "dicomweb"
    handler_class = _StreamHandler

    def __init__(self, *args: Any, token_paths: re.Pattern[str] | None = None,
                 **kwargs: Any) -> None:
        self.token_paths = token_paths
        self.anonymous = threading.BoundedSemaphore(MAX_ANONYMOUS)
        super().__init__(*args, **kwargs)

    def token_route(self, method: str, path: str) -> bool:
        """Whether a request without a client certificate may reach the app here."""
        if method not in ("POST", "OPTIONS") or self.token_paths is None:
            return False
        return self.token_paths.fullmatch(path) is not None


def identity_of(scope: MutableMapping[str, Any]) -> Identity | None:
    """The identity the listener admitted for this request (None: no certificate)."""
    found = scope.get(IDENTITY_KEY)
    return found if isinstance(found, Identity) else None
