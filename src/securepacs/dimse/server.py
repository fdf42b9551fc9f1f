"""The DICOM server: a pynetdicom AE whose listener does the TLS handshake per connection.

pynetdicom wraps accepted sockets in its accept loop, so one slow or hostile client
stalls every other and a failed handshake vanishes silently. :class:`TlsAssociationServer`
accepts plainly, then performs the handshake in the connection's own thread, with a
deadline, and logs every refusal with the peer address and a reason a person can act on
(PS3.15 B.12: TLS 1.2+, client certificate required). Its ``ssl_context`` may be replaced
while running: new connections use the new one.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pynetdicom import AE, _config, evt
from pynetdicom.transport import ThreadedAssociationServer

from securepacs.dimse.contexts import supported_contexts
from securepacs.dimse.guard import IDENTITY_ATTR, GuardedRequestHandler, identity_of
from securepacs.dimse.handlers import Handlers
from securepacs.errors import AccessRefused, HandshakeRefused
from securepacs.pki.tlspolicy import cipher_description, peer_certificate, server_handshake
from securepacs.services.audit_events import AuditEvents, NoAudit
from securepacs.services.trust import FileTrust, Gatekeeper

if TYPE_CHECKING:  # ssl itself is used only by securepacs.pki.tlspolicy
    import ssl

log = logging.getLogger(__name__)


class TlsAssociationServer(ThreadedAssociationServer):
    """An association server that handshakes TLS in the connection thread."""

    handshake_timeout: float = 10.0
    gatekeeper: Gatekeeper = FileTrust()
    audit: AuditEvents = NoAudit()
    daemon_threads = True
    block_on_close = False

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        context = self.ssl_context
        if context is not None:
            wrapped = self._handshake(context, request, client_address)
            if wrapped is None:
                return
            request = wrapped
        super().process_request_thread(request, client_address)

    def _handshake(self, context: ssl.SSLContext, sock: socket.socket,
                   address: tuple[str, int]) -> ssl.SSLSocket | None:
        where = f"{address[0]}:{address[1]}"
        try:
            tls = server_handshake(context, sock, timeout=self.handshake_timeout)
        except HandshakeRefused as exc:
            log.warning("TLS handshake with %s refused: %s", where, exc)
            self.audit.refused(address=address[0], reason=str(exc))
            return None
        cert = peer_certificate(tls)
        if cert is None:  # cannot happen with CERT_REQUIRED; never admit without one
            log.warning("TLS connection from %s refused: no client certificate", where)
            tls.close()
            return None
        try:
            identity = self.gatekeeper.admit(serial=cert.serial, fingerprint=cert.fingerprint,
                                             name=cert.subject_cn, organization=cert.organization)
        except AccessRefused as exc:
            log.warning("TLS connection from %s refused: %s", where, exc)
            self.audit.certificate_refused(exc, address=address[0], name=cert.subject_cn)
            tls.close()
            return None
        setattr(tls, IDENTITY_ATTR, identity)
        self.audit.authenticated(identity, address=address[0])
        log.info("TLS connection from %s: CN=%s O=%s serial=%x (%s)", where,
                 cert.subject_cn, cert.organization or "-", cert.serial, cipher_description(tls))
        return tls


@dataclass
class Listener:
    """One listening port (TLS or plain) and how to stop it."""

    server: ThreadedAssociationServer
    tls: bool
    thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


@dataclass
class DicomServer:
    """The AE with its listeners. Build with :func:`make_server`; then :meth:`serve`."""

    ae: AE
    listeners: list[Listener] = field(default_factory=list)

    def start(self) -> None:
        for listener in self.listeners:
            t = threading.Thread(target=listener.server.serve_forever, kwargs={"poll_interval": 0.2},
                                 name=f"listener-{listener.port}", daemon=True)
            t.start()
            listener.thread = t

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting; give running associations `grace` seconds, then abort them."""
        for listener in self.listeners:
            listener.server.shutdown()
        deadline = time.monotonic() + grace
        while self.ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in list(self.ae.active_associations):
            assoc.abort()

    def close_revoked(self, revoked: set[int]) -> int:
        """Abort running associations whose certificate is now revoked; how many."""
        closed = 0
        for assoc in list(self.ae.active_associations):
            identity = identity_of(assoc)
            if identity is not None and identity.serial in revoked:
                log.warning("closing the association of %s: certificate revoked",
                            identity.describe())
                assoc.abort()
                closed += 1
        return closed

    def set_tls_context(self, context: ssl.SSLContext) -> None:
        """New TLS connections use `context`; running associations continue unchanged."""
        for listener in self.listeners:
            if listener.tls:
                listener.server.ssl_context = context


def make_server(
    *,
    ae_title: str,
    handlers: Handlers,
    host: str,
    port: int,
    tls_context: ssl.SSLContext,
    plain_port: int | None = None,
    max_pdu: int = 131072,
    network_timeout: float = 60.0,
    acse_timeout: float = 30.0,
    dimse_timeout: float = 60.0,
    handshake_timeout: float = 10.0,
    gatekeeper: Gatekeeper | None = None,
    audit: AuditEvents | None = None,
    extra_handlers: list[tuple[Any, Callable[..., Any]]] | None = None,
) -> DicomServer:
    """Bind the listeners (TLS on `port`, plain TCP on `plain_port` only if given)."""
    # Received C-STORE data sets go to a temp file (the system temp folder), not memory:
    # a 1 GB object then costs the server no more memory than a small one. Ingest reads
    # only the header from it and streams the rest into the blob store.
    _config.STORE_RECV_CHUNKED_DATASET = True
    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = max_pdu
    ae.network_timeout = network_timeout
    ae.acse_timeout = acse_timeout
    ae.dimse_timeout = dimse_timeout
    ae.maximum_associations = 64
    for abstract, syntaxes, roles in supported_contexts():
        if roles:
            ae.add_supported_context(abstract, list(syntaxes), scu_role=True, scp_role=True)
        else:
            ae.add_supported_context(abstract, list(syntaxes))
    bindings: list[Any] = handlers.bindings() + list(extra_handlers or [])

    class _Server(TlsAssociationServer):
        pass

    _Server.handshake_timeout = handshake_timeout
    _Server.gatekeeper = gatekeeper or FileTrust()
    _Server.audit = audit or NoAudit()
    server = DicomServer(ae)
    tls_server = ae.make_server((host, port), ssl_context=tls_context, evt_handlers=bindings,
                                server_class=_Server, request_handler=GuardedRequestHandler)
    ae._servers.append(tls_server)
    server.listeners.append(Listener(tls_server, tls=True))
    if plain_port is not None:
        plain = ae.make_server((host, plain_port), evt_handlers=bindings, server_class=_Server,
                               request_handler=GuardedRequestHandler)
        ae._servers.append(plain)
        server.listeners.append(Listener(plain, tls=False))
    return server


__all__ = ["DicomServer", "Listener", "TlsAssociationServer", "make_server", "evt"]
