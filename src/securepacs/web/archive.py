"""The archive viewer's HTTPS listener: mutual TLS, admission per connection, then the ASGI app.

One responsibility: serve the viewer app (:mod:`securepacs.web.viewer` in archive mode) of
``securepacs serve`` over HTTPS with a client certificate required (the PS3.15 B.12 server
context of :mod:`securepacs.pki.tlspolicy`, as for DICOM). Each connection is accepted and
its handshake runs in the connection's own thread, with a deadline; the verified peer
certificate is then admitted by the same gatekeeper as DICOM associations (unknown or
revoked certificates are refused), again before every request, so that a revocation also
ends a kept-alive connection. The identity admitted is handed to the app in the ASGI scope
(``scope["securepacs.identity"]``), where the viewer checks its permissions. The audit
trail gets what the DICOM listener gives it (PS3.15 A.5.3.12 User Authentication, A.5.3.11
Security Alert for revoked or unknown certificates and missing permissions), once per
connection.

The HTTP/1.1 side is the standard library's (``http.server``); each request is run on one
asyncio event loop in a background thread (a small ASGI bridge: whole request bodies in,
whole responses out, which suits HTML pages and PNG images).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from securepacs.errors import AccessRefused, HandshakeRefused, PacsError
from securepacs.model.identity import Identity, Permission
from securepacs.model.printable import one_line
from securepacs.pki.tlspolicy import PeerCertificate, peer_certificate, server_handshake
from securepacs.services.audit_events import AuditEvents, NoAudit
from securepacs.services.trust import Gatekeeper

__all__ = ["IDENTITY_KEY", "ArchiveViewerServer"]

log = logging.getLogger(__name__)

#: The ASGI scope key holding the admitted :class:`~securepacs.model.identity.Identity`.
IDENTITY_KEY = "securepacs.identity"
MAX_BODY = 1024 * 1024
_PEER_ATTR = "securepacs_peer"
_AUDITED_ATTR = "securepacs_audited"
#: What viewing needs (the viewer app decides; the listener only audits a refusal).
_VIEW = (Permission.FIND, Permission.GET)
_REFUSED = (b'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Not allowed'
            b'</title></head><body><h1>Not allowed</h1><p id="refused">This certificate is not '
            b"admitted to this archive (unknown or revoked). Ask the archive's administrator."
            b"</p></body></html>")

Asgi = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]],
                 Callable[[MutableMapping[str, Any]], Awaitable[None]]], Awaitable[None]]


class _Handler(BaseHTTPRequestHandler):
    server: ArchiveViewerServer
    protocol_version = "HTTP/1.1"
    timeout = 60.0  # an idle kept-alive connection is closed after this

    def version_string(self) -> str:
        return "securepacs"  # no software version banner (issue 17)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        log.debug(self.server.label + " %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._handle()

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self._handle()

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._handle()

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        names = set()
        for name, value in headers:
            names.add(name.lower())
            self.send_header(name, value)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _admit(self) -> Identity | None:
        cert: PeerCertificate | None = getattr(self.request, _PEER_ATTR, None)
        address = self.client_address[0]
        where = f"{address}:{self.client_address[1]}"
        first = not getattr(self.request, _AUDITED_ATTR, False)
        setattr(self.request, _AUDITED_ATTR, True)
        audit = self.server.audit
        if cert is None:
            return None
        try:
            identity = self.server.gatekeeper.admit(
                serial=cert.serial, fingerprint=cert.fingerprint, name=cert.subject_cn,
                organization=cert.organization)
        except AccessRefused as exc:
            log.warning("%s connection from %s refused: %s", self.server.label, where, one_line(exc))
            audit.certificate_refused(exc, address=address, name=cert.subject_cn)
            return None
        except PacsError as exc:  # the trust store cannot answer: refuse, never guess
            log.error("%s connection from %s refused: trust store error: %s", self.server.label,
                      where, exc)
            return None
        if first:
            audit.authenticated(identity, address=address)
            missing = [p.value for p in self.server.connect_permissions
                       if not identity.allows(p)]
            if missing:
                log.warning("viewer: %s from %s lacks the %s permission(s)", identity.describe(),
                            where, "+".join(missing))
                audit.permission_refused(identity, address=address, ae_title="",
                                         permission="+".join(missing))
        return identity

    def _handle(self) -> None:
        identity = self._admit()
        if identity is None:
            self.close_connection = True
            self._send(403, _REFUSED, [("Content-Type", "text/html; charset=utf-8"),
                                       ("Cache-Control", "no-store"), ("Connection", "close")])
            return
        announced = self.headers.get("Content-Length") or "0"
        if not re.fullmatch(r"[0-9]{1,12}", announced):
            self.close_connection = True
            self._send(400, b"malformed Content-Length", [("Content-Type", "text/plain")])
            return
        length = int(announced)
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._send(413, b"request too large", [("Content-Type", "text/plain")])
            return
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.server.call(self._scope(identity, "2.3"), body)
        self._send(status, payload, headers)

    def _scope(self, identity: Identity | None, spec_version: str) -> dict[str, Any]:
        """The ASGI HTTP scope of this request, with the admitted identity under
        :data:`IDENTITY_KEY`."""
        path, _, query = self.path.partition("?")
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": spec_version},
            "http_version": "1.1", "method": self.command, "scheme": "https",
            "path": unquote(path), "raw_path": path.encode("latin-1"), "root_path": "",
            "query_string": query.encode("latin-1"),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                        for k, v in self.headers.items()],
            "client": (self.client_address[0], self.client_address[1]),
            "server": self.server.server_address[:2], IDENTITY_KEY: identity,
        }


class ArchiveViewerServer(ThreadingHTTPServer):
    """HTTPS with client certificates for the archive viewer app.

    Parameters
    ----------
    address : tuple
        (host, port) to listen on (port 0: any free port).
    app : ASGI callable
        The viewer app in archive mode.
    tls_context : ssl.SSLContext
        A server context requiring client certificates; may be replaced while serving (new
        connections get the new one), as for the DICOM and enrolment listeners.
    gatekeeper : Gatekeeper
        Admits a verified certificate (the DICOM server's).
    handshake_timeout, request_timeout : float
        Seconds for a TLS handshake, and for the app to answer one request.
    max_connections : int
        Connections served at once; beyond, a new connection is closed at once.
    audit : AuditEvents, optional
        The archive's audit events (none by default).
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64  # a browser opens several connections at once
    #: Permissions whose absence is audited once per connection (the app decides per request).
    connect_permissions: tuple[Permission, ...] = _VIEW
    handler_class: type[BaseHTTPRequestHandler] = _Handler
    #: How log lines name this listener.
    label = "viewer"

    def __init__(self, address: tuple[str, int], app: Asgi, tls_context: Any, *,
                 gatekeeper: Gatekeeper, handshake_timeout: float = 10.0,
                 request_timeout: float = 120.0, audit: AuditEvents | None = None,
                 max_connections: int = 128):
        self.app = app
        self.max_connections = max_connections
        self._active = 0
        self._count_lock = threading.Lock()
        self.tls_context = tls_context
        self.gatekeeper = gatekeeper
        self.handshake_timeout = handshake_timeout
        self.request_timeout = request_timeout
        self.audit = audit or NoAudit()
        self._loop = asyncio.new_event_loop()
        self._loop_thread: threading.Thread | None = None
        super().__init__(address, self.handler_class)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else str(host)
        return f"https://{shown}:{port}/"

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._count_lock:
            if self._active >= self.max_connections:
                log.warning("viewer: %d connections already, closing the one from %s",
                            self._active, client_address[0])
                return False
            self._active += 1
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self._serve_connection(request, client_address)
        finally:
            with self._count_lock:
                self._active -= 1

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            request = server_handshake(self.tls_context, request, timeout=self.handshake_timeout)
        except HandshakeRefused as exc:
            log.warning("%s TLS handshake with %s refused: %s", self.label, client_address[0],
                        exc)
            self.audit.refused(address=client_address[0], reason=str(exc))
            return
        cert = peer_certificate(request)
        if cert is not None:
            log.info("%s TLS connection from %s: CN=%s serial=%x", self.label,
                     client_address[0], one_line(cert.subject_cn), cert.serial)
        setattr(request, _PEER_ATTR, cert)
        super().process_request_thread(request, client_address)

    # -- the ASGI bridge -------------------------------------------------------------------
    async def _run(self, scope: dict[str, Any], body: bytes) -> tuple[int, list[tuple[str, str]],
                                                                         bytes]:
        sent = False
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client does not disconnect mid-request here
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        await self.app(scope, receive, send)
        headers = [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                   for k, v in start.get("headers", [])]
        return int(start.get("status", 500)), headers, b"".join(chunks)

    def call(self, scope: dict[str, Any], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run the app for one request on the event loop; a failure answers 500."""
        future = asyncio.run_coroutine_threadsafe(self._run(scope, body), self._loop)
        try:
            return future.result(timeout=self.request_timeout)
        except Exception as exc:  # noqa: BLE001 - one failed request must not end the server
            future.cancel()
            log.error("viewer request %s %s failed: %s", scope["method"], one_line(scope["path"]),
                      one_line(exc))
            return 500, [("Content-Type", "text/plain")], b"internal error"

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        """Serve in background threads (the event loop and the accepting loop)."""
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="viewer-loop",
                                             daemon=True)
        self._loop_thread.start()
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="viewer", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop accepting, close the socket and stop the event loop."""
        self.shutdown()
        self.server_close()
        if self._loop_thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()
