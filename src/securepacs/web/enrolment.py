"""The enrolment endpoint: HTTPS with server authentication only (the client has no
certificate yet), JSON in and out, one use per token.

``GET /ca.pem`` returns the CA certificate (public); ``POST /enroll`` takes
``{"secret": ..., "csr": PEM}`` and returns the signed client certificate with the
identity bound to it. Failures answer 4xx with ``{"error": one line}``; the detail and
the peer address go to the log. Handshakes run in the connection's thread, with a
deadline, as for the DICOM listener.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from securepacs.errors import HandshakeRefused, PacsError
from securepacs.pki.csr import load_csr
from securepacs.pki.pemfiles import certificate_pem
from securepacs.pki.tlspolicy import server_handshake
from securepacs.services.audit_events import AuditEvents, NoAudit
from securepacs.services.authority import CertificateAuthority

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: EnrolmentServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        log.debug("enrolment %s: " + format, self.client_address[0], *args)

    def _reply(self, status: int, payload: dict[str, Any] | bytes, kind: str = "application/json"
               ) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path != "/ca.pem":
            self._reply(404, {"error": "not found"})
            return
        self._reply(200, certificate_pem(self.server.ca.ca_certificate()).encode(),
                    "application/x-pem-file")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        where = f"{self.client_address[0]}:{self.client_address[1]}"
        if self.path != "/enroll":
            self._reply(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self._reply(413, {"error": "request too large or empty"})
            return
        try:
            request = json.loads(self.rfile.read(length))
            secret, csr_pem = str(request["secret"]), str(request["csr"]).encode()
            csr = load_csr(csr_pem)
            cert, ca_cert, token = self.server.ca.enrol(secret, csr, at=self.server.clock())
        except (ValueError, KeyError, TypeError):
            log.warning("enrolment from %s refused: malformed request", where)
            self._reply(400, {"error": "malformed enrolment request"})
            return
        except PacsError as exc:
            log.warning("enrolment from %s refused: %s", where, exc)
            self.server.audit.token_refused(address=self.client_address[0], reason=str(exc))
            self._reply(403, {"error": str(exc)})
            return
        log.warning("enrolled %s from %s: organisation %s, group %s, serial %x",
                    cert.subject.rfc4514_string(), where, token.organization, token.group, cert.serial_number)
        self.server.audit.enrolled(
            subject=f"{cert.subject.rfc4514_string()} serial {cert.serial_number:x}",
            address=self.client_address[0],
            detail=f"client enrolled with a one-time token: {token.organization}/{token.group}")
        self._reply(200, {
            "certificate": certificate_pem(cert), "ca": certificate_pem(ca_cert),
            "organization": token.organization, "group": token.group,
            "ae_titles": list(token.ae_titles), "ae_title": self.server.ae_title})


class EnrolmentServer(ThreadingHTTPServer):
    """HTTPS enrolment service; the TLS context can be swapped like the DICOM listener's."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], ca: CertificateAuthority, tls_context: Any, *,
                 ae_title: str, clock: Callable[[], datetime], handshake_timeout: float = 10.0,
                 audit: AuditEvents | None = None):
        self.ca = ca
        self.audit = audit or NoAudit()
        self.tls_context = tls_context
        self.ae_title = ae_title
        self.clock = clock
        self.handshake_timeout = handshake_timeout
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            request = server_handshake(self.tls_context, request, timeout=self.handshake_timeout)
        except HandshakeRefused as exc:
            log.warning("enrolment TLS handshake with %s refused: %s", client_address[0], exc)
            return
        super().process_request_thread(request, client_address)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="enrolment", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
