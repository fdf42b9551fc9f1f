"""The DICOM server: listeners that do the TLS handshake per connection, in its own thread.

Each accepted connection gets a thread that performs the TLS handshake with a deadline
(one slow or hostile client never stalls the others), logs every refusal with the peer
address and a reason a person can act on (PS3.15 B.12: TLS 1.2+, client certificate
required), admits the certificate through the trust store, and then serves the
association (:mod:`securepacs.dimse.association`). The TLS context may be replaced while
running: new connections use the new one.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from securepacs.dimse.association import AcceptorSettings, Registry, serve_connection
from securepacs.dimse.channel import BUDGET_STEP, Budget
from securepacs.dimse.contexts import supported_contexts
from securepacs.dimse.handlers import Handlers
from securepacs.dimse.negotiation import supported
from securepacs.dimse.slots import SharedRegistry, Slots
from securepacs.errors import AccessRefused, HandshakeRefused
from securepacs.model.identity import Identity
from securepacs.pki.tlspolicy import cipher_description, peer_certificate, server_handshake
from securepacs.services.audit_events import AuditEvents, NoAudit
from securepacs.services.trust import FileTrust, Gatekeeper

if TYPE_CHECKING:  # ssl itself is used only by securepacs.pki.tlspolicy
    import ssl

log = logging.getLogger(__name__)


class _Handler(socketserver.BaseRequestHandler):
    server: AssociationListener

    def handle(self) -> None:
        self.server.serve(self.request, self.client_address)


class AssociationListener(socketserver.ThreadingTCPServer):
    """One listening port (TLS when `ssl_context` is set, else plain TCP).

    The listening socket may be shared with other worker processes (``workers`` setting):
    it is non-blocking, so that a process that lost the race for a connection goes back
    to waiting, and a process already serving associations waits a little before each
    accept, so that an idler one takes the next connection.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], *, ssl_context: ssl.SSLContext | None,
                 owner: DicomServer, inherited: socket.socket | None = None):
        self.ssl_context = ssl_context
        self.owner = owner
        self.shared = False
        super().__init__(address, _Handler, bind_and_activate=inherited is None)
        if inherited is not None:
            self.socket.close()
            self.socket = inherited
            self.server_address = inherited.getsockname()
            self.shared = True
        self.socket.setblocking(False)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        if self.shared:
            # connections accepted, not only associations registered: a burst of
            # connections arriving together is spread over the processes too
            busy = self.owner.connections
            if busy:
                time.sleep(min(0.002 * busy, 0.02))
        client, address = self.socket.accept()  # BlockingIOError: another process took it
        self.owner.connected(+1)
        try:
            client.setblocking(True)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            self.owner.connected(-1)
            client.close()
            raise
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.owner.connected(-1)  # no thread, so serve() will not count it out
            raise

    def serve(self, sock: socket.socket, address: tuple[str, int]) -> None:
        owner = self.owner
        try:
            identity: Identity | None = None
            context = self.ssl_context
            if context is not None:
                admitted = owner.admit(context, sock, address)
                if admitted is None:
                    return
                sock, identity = admitted
            serve_connection(sock, identity=identity, address=address,
                             settings=owner.settings, audit=owner.audit,
                             registry=owner.registry, dispatch=owner.handlers.dispatch,
                             spill=owner.handlers.spill_prefix)
        finally:
            owner.connected(-1)


@dataclass(frozen=True)
class Limits:
    """What one client, and all of them together, can make the server hold (the
    settings of the same names; ``docs/security.md``)."""

    max_associations: int = 64
    max_associations_per_identity: int = 16
    max_association_request: int = 64 * 1024
    max_command_set: int = 64 * 1024
    max_identifier: int = 1024 * 1024
    inflight_memory: int = 512 * 1024 * 1024
    accept_any_called_ae: bool = False


@dataclass
class DicomServer:
    """The listeners and what their associations share. Build with :func:`make_server`."""

    settings: AcceptorSettings
    handlers: Handlers
    gatekeeper: Gatekeeper
    audit: AuditEvents
    handshake_timeout: float = 10.0
    registry: Registry = field(default_factory=Registry)
    listeners: list[AssociationListener] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    #: connections accepted and not yet closed (the accept deferral of shared sockets)
    connections: int = 0
    _connections_lock: threading.Lock = field(default_factory=threading.Lock)

    def connected(self, delta: int) -> None:
        """Count a connection accepted (+1) or ended (-1)."""
        with self._connections_lock:
            self.connections = max(self.connections + delta, 0)

    # -- admission ------------------------------------------------------------------------
    def admit(self, context: ssl.SSLContext, sock: socket.socket,
              address: tuple[str, int]) -> tuple[ssl.SSLSocket, Identity] | None:
        """TLS handshake, then the trust store's verdict on the certificate; None if refused
        (logged, audited, connection closed)."""
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
        self.audit.authenticated(identity, address=address[0])
        log.info("TLS connection from %s: CN=%s O=%s serial=%x (%s)", where,
                 cert.subject_cn, cert.organization or "-", cert.serial, cipher_description(tls))
        return tls, identity

    # -- running ----------------------------------------------------------------------------
    def start(self) -> None:
        for listener in self.listeners:
            t = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.2},
                                 name=f"listener-{listener.port}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting; give running associations `grace` seconds, then abort them."""
        for listener in self.listeners:
            listener.shutdown()
            listener.server_close()
        deadline = time.monotonic() + grace
        while self.registry.live() and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self.registry.live():
            assoc.kill()

    def close_revoked(self, revoked: set[int]) -> int:
        """Abort running associations whose certificate is now revoked; how many."""
        closed = 0
        for assoc in self.registry.live():
            identity = assoc.identity
            if identity is not None and identity.serial in revoked:
                log.warning("closing the association of %s: certificate revoked",
                            identity.describe())
                assoc.kill()
                closed += 1
        return closed

    def share(self) -> list[socket.socket]:
        """The listening sockets, for worker processes to accept on too; from now on this
        process defers to idler workers as well."""
        for listener in self.listeners:
            listener.shared = True
        return [listener.socket for listener in self.listeners]

    def share_limits(self, folder: Path, processes: int) -> None:
        """Make the limits hold for all `processes` processes of the server together (call
        before :meth:`start`, in each of them): association caps through slots in
        `folder` (:mod:`securepacs.dimse.slots`), and this process's share of the memory
        budget."""
        self.registry = SharedRegistry(Slots(folder))
        budget = self.settings.budget
        if budget.limit and processes > 1:
            budget.limit = max(budget.limit // processes, BUDGET_STEP)

    def set_tls_context(self, context: ssl.SSLContext) -> None:
        """New TLS connections use `context`; running associations continue unchanged."""
        for listener in self.listeners:
            if listener.ssl_context is not None:
                listener.ssl_context = context


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
    inherited: Sequence[socket.socket] = (),
    limits: Limits | None = None,
    accept_compressed: str = "as-proposed",
    accept_unknown_storage: bool = True,
) -> DicomServer:
    """Bind the listeners (TLS on `port`, plain TCP on `plain_port` only if given), or
    serve on `inherited` listening sockets (TLS first, then plain) of a parent process."""
    lim = limits or Limits()
    settings = AcceptorSettings(
        ae_title=ae_title, max_pdu=max_pdu, contexts=supported(supported_contexts()),
        acse_timeout=acse_timeout, network_timeout=network_timeout,
        dimse_timeout=dimse_timeout, max_associations=lim.max_associations,
        max_associations_per_identity=lim.max_associations_per_identity,
        max_association_request=lim.max_association_request,
        max_command_set=lim.max_command_set, max_identifier=lim.max_identifier,
        budget=Budget(lim.inflight_memory), accept_any_called_ae=lim.accept_any_called_ae,
        transfer_syntax_policy=accept_compressed,
        accept_unknown_storage=accept_unknown_storage)
    server = DicomServer(settings, handlers, gatekeeper or FileTrust(), audit or NoAudit(),
                         handshake_timeout=handshake_timeout)
    shared = list(inherited) + [None, None]
    server.listeners.append(AssociationListener((host, port), ssl_context=tls_context,
                                                owner=server, inherited=shared[0]))
    if plain_port is not None:
        server.listeners.append(AssociationListener((host, plain_port), ssl_context=None,
                                                    owner=server, inherited=shared[1]))
    return server


__all__ = ["AssociationListener", "DicomServer", "Limits", "make_server"]
