"""The enrolment endpoint: HTTPS with server authentication only (the client has no
certificate yet), JSON in and out, one use per token.

``GET /ca.pem`` returns the CA certificate (public); ``POST /enroll`` takes
``{"secret": ..., "csr": PEM, "name": requested name}`` and returns the signed client
certificate with the identity bound to it (the CA names the certificate: the CSR's subject
is never used). Failures answer 4xx with ``{"error": one line}``; the detail and the peer
address go to the log.

The endpoint faces unauthenticated clients, so every resource it gives one is bounded:

- at most `max_connections` connections at once (`max_per_source` from one address); beyond
  that a connection is closed at once, before the TLS handshake, so threads are bounded too;
- the TLS handshake has `handshake_timeout`, and the whole request (head and body) must
  arrive within `request_timeout` of the handshake's end: a client sending slowly is cut at
  that deadline (answer 408), whatever its pace;
- a request head of at most 8 KiB, a body of at most 64 KiB, one request per connection,
  parsed strictly by :mod:`securepacs.web.enrolment_http` (``Content-Length: abc`` is a 400);
- a token bucket per source address (:class:`~securepacs.web.throttle.RateLimiter`, answer
  429), and the refusals of one source are audited as ONE security alert per minute
  (:class:`~securepacs.web.throttle.FailureAggregator`), not one row per attempt;
- no server banner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from securepacs.errors import HandshakeRefused, PacsError
from securepacs.model.printable import one_line
from securepacs.pki.csr import load_csr
from securepacs.pki.pemfiles import certificate_pem
from securepacs.pki.tlspolicy import server_handshake
from securepacs.services.audit_events import AuditEvents, NoAudit
from securepacs.services.authority import CertificateAuthority
from securepacs.web.enrolment_http import (
    HttpError,
    RequestHead,
    body_length,
    find_head_end,
    parse_head,
    response,
)
from securepacs.web.throttle import FailureAggregator, FailureReport, RateLimiter

__all__ = ["EnrolmentServer", "MAX_BODY"]

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


class _Gone(Exception):
    """The client closed the connection before its request was complete."""


def _json(status: int, payload: dict[str, Any], extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    return response(status, json.dumps(payload).encode(), extra=extra)


class EnrolmentServer(socketserver.ThreadingTCPServer):
    """HTTPS enrolment service; the TLS context can be swapped like the DICOM listener's.

    Parameters
    ----------
    address : (str, int)
        Where to listen.
    ca : CertificateAuthority
        The CA that redeems tokens.
    tls_context : ssl.SSLContext
        Server context (no client certificate required); ``tls_context`` may be replaced.
    ae_title : str
        The DICOM server's AE title, told to the client for its profile.
    clock : callable
        The time for token validity and certificates.
    handshake_timeout, request_timeout : float
        Seconds for the TLS handshake, then for the whole request.
    max_connections, max_per_source : int
        Connections served at once, in all and from one address.
    limiter : RateLimiter, optional
        Requests per source address (default: 20 at once, then one per 2 s).
    failures : FailureAggregator, optional
        How refusals are grouped into audit events (default: one per source per minute).
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], ca: CertificateAuthority, tls_context: Any, *,
                 ae_title: str, clock: Callable[[], datetime], handshake_timeout: float = 10.0,
                 audit: AuditEvents | None = None, request_timeout: float = 10.0,
                 max_connections: int = 64, max_per_source: int = 8,
                 limiter: RateLimiter | None = None, failures: FailureAggregator | None = None):
        self.ca = ca
        self.audit = audit or NoAudit()
        self.tls_context = tls_context
        self.ae_title = ae_title
        self.clock = clock
        self.handshake_timeout = handshake_timeout
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.limiter = limiter or RateLimiter()
        self.failures = failures or FailureAggregator()
        self._lock = threading.Lock()
        self._active: Counter[str] = Counter()
        self._closed_busy = 0
        super().__init__(address, socketserver.BaseRequestHandler)

    # -- connection accounting (accept thread) ---------------------------------------------
    @property
    def active_connections(self) -> int:
        """Connections being served now."""
        with self._lock:
            return sum(self._active.values())

    def verify_request(self, request: Any, client_address: Any) -> bool:
        source = str(client_address[0])
        with self._lock:
            if (sum(self._active.values()) >= self.max_connections
                    or self._active[source] >= self.max_per_source):
                self._closed_busy += 1
                if self._closed_busy in (1, 10, 100) or self._closed_busy % 1000 == 0:
                    log.warning("enrolment: connection limit reached, %d connection(s) closed "
                                "unanswered so far (latest from %s)", self._closed_busy, source)
                return False
            self._active[source] += 1
        return True

    def _release(self, source: str) -> None:
        with self._lock:
            self._active[source] -= 1
            if self._active[source] <= 0:
                del self._active[source]

    def service_actions(self) -> None:
        """Called by ``serve_forever`` between polls: audit the refusal windows that closed."""
        with self._lock:
            due = self.failures.due(time.monotonic())
        self._report(due)

    # -- one connection (its own thread) ---------------------------------------------------
    def process_request_thread(self, request: Any, client_address: Any) -> None:
        source, port = str(client_address[0]), client_address[1]
        try:
            try:
                tls = server_handshake(self.tls_context, request, timeout=self.handshake_timeout)
            except HandshakeRefused as exc:
                log.info("enrolment TLS handshake with %s refused: %s", source, exc)
                return
            try:
                reply = self._answer(tls, source, port)
                if reply:
                    tls.settimeout(self.request_timeout)
                    tls.sendall(reply)
            except (OSError, _Gone):
                pass
            finally:
                with contextlib.suppress(OSError):
                    tls.close()
        except Exception as exc:  # noqa: BLE001 - a connection's failure is one log line
            log.error("enrolment connection from %s failed: %s", source,
                      one_line(f"{type(exc).__name__}: {exc}"))
        finally:
            self._release(source)
            with contextlib.suppress(OSError):
                request.close()

    def _answer(self, sock: Any, source: str, port: int) -> bytes:
        if not self._allow(source):
            self._refused(source, "rate limited")
            wait = self.limiter.retry_after(source)
            return _json(429, {"error": f"too many requests: try again in {wait} s"},
                         (("Retry-After", str(wait)),))
        deadline = time.monotonic() + self.request_timeout
        try:
            head, rest = self._read_head(sock, deadline)
            return self._dispatch(head, rest, sock, deadline, source, port)
        except HttpError as exc:
            self._refused(source, exc.message)
            log.info("enrolment request from %s refused: %s", source, exc.message)
            return _json(exc.status, {"error": exc.message})

    def _allow(self, source: str) -> bool:
        with self._lock:
            return self.limiter.allow(source, time.monotonic())

    @staticmethod
    def _recv(sock: Any, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HttpError(408, "request not received in time")
        sock.settimeout(remaining)
        try:
            chunk = bytes(sock.recv(16384))
        except TimeoutError:
            raise HttpError(408, "request not received in time") from None
        if not chunk:
            raise _Gone
        return chunk

    def _read_head(self, sock: Any, deadline: float) -> tuple[RequestHead, bytes]:
        buffer = b""
        while (end := find_head_end(buffer)) < 0:
            buffer += self._recv(sock, deadline)
        return parse_head(buffer[:end]), buffer[end:]

    def _read_body(self, sock: Any, head: RequestHead, rest: bytes, deadline: float) -> bytes:
        length = body_length(head, limit=MAX_BODY)
        if length == 0:
            raise HttpError(400, "an enrolment request needs a body")
        body = rest
        while len(body) < length:
            body += self._recv(sock, deadline)
        return body[:length]

    def _dispatch(self, head: RequestHead, rest: bytes, sock: Any, deadline: float,
                  source: str, port: int) -> bytes:
        path = head.target.split("?", 1)[0]
        if path == "/ca.pem":
            if head.method != "GET":
                raise HttpError(405, "method not allowed")
            return response(200, certificate_pem(self.ca.ca_certificate()).encode(),
                            "application/x-pem-file")
        if path != "/enroll":
            raise HttpError(404, "not found")
        if head.method != "POST":
            raise HttpError(405, "method not allowed")
        body = self._read_body(sock, head, rest, deadline)
        where = f"{source}:{port}"
        try:
            request = json.loads(body)
            secret, csr_pem = str(request["secret"]), str(request["csr"]).encode()
            name = request.get("name")
            csr = load_csr(csr_pem)
            if name is not None and not isinstance(name, str):
                raise TypeError("name")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise HttpError(400, "malformed enrolment request") from None
        try:
            cert, ca_cert, token = self.ca.enrol(secret, csr, name=name, at=self.clock())
        except ValueError as exc:
            raise HttpError(400, one_line(exc)) from None
        except PacsError as exc:
            self._refused(source, str(exc))
            log.warning("enrolment from %s refused: %s", where, one_line(exc))
            return _json(403, {"error": one_line(exc)})
        issued_name = cert.subject.rfc4514_string().removeprefix("CN=").split(",")[0]
        log.warning("enrolled %s from %s: organisation %s, group %s, serial %x",
                    one_line(issued_name), where, one_line(token.organization),
                    one_line(token.group), cert.serial_number)
        self.audit.enrolled(
            subject=f"CN={one_line(issued_name)} serial {cert.serial_number:x}",
            address=source,
            detail=f"client enrolled with a one-time token: {one_line(token.organization)}/"
                   f"{one_line(token.group)}")
        return _json(200, {
            "certificate": certificate_pem(cert), "ca": certificate_pem(ca_cert),
            "name": issued_name, "organization": token.organization, "group": token.group,
            "ae_titles": list(token.ae_titles), "ae_title": self.ae_title})

    # -- refusals -> audit -----------------------------------------------------------------
    def _refused(self, source: str, reason: str) -> None:
        with self._lock:
            due = self.failures.note(source, one_line(reason, 120), time.monotonic())
        self._report(due)

    def _report(self, reports: list[FailureReport]) -> None:
        for report in reports:
            self.audit.token_refused(address=report.source, reason=report.summary())

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="enrolment", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        with self._lock:
            due = self.failures.flush(time.monotonic())
        self._report(due)
