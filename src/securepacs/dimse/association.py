"""One accepted association, synchronous, in the connection's own thread (PS3.8 9, PS3.7).

After the TLS handshake (:mod:`securepacs.dimse.server`), :func:`serve_connection` reads
the A-ASSOCIATE-RQ, rejects or accepts it (:mod:`securepacs.dimse.negotiation`,
:mod:`securepacs.dimse.guard`), then reads one DIMSE message after another and hands
each to the service handlers until the peer releases or aborts.

Why not pynetdicom's acceptor: its DUL and association reactors are two threads per
association that move every PDU through queues and poll with 1 ms sleeps; measured behind
DCMTK ``storescu`` (0.5 MB images, TLS, loopback) that capped the server near 80-90
images/s, where ``storescp`` takes 400-1,000. An acceptor only ever waits for the next
request, so here the bytes go from the socket to the handler in the calling thread.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from securepacs.dimse import commands as cmd
from securepacs.dimse.acceptance import Offer
from securepacs.dimse.channel import (
    ASSOCIATE_RQ,
    DROP,
    KEEP,
    MAX_COMMAND,
    MAX_CONTROL,
    Budget,
    Intake,
    Message,
    PduChannel,
    PduTooLarge,
    PeerAborted,
    PeerClosed,
    PeerReleased,
    SpillPrefix,
    UnexpectedPdu,
    abort_pdu,
)
from securepacs.dimse.guard import REQUIRED, check_calling_ae, refusal
from securepacs.dimse.negotiation import (
    LOCAL_LIMIT_EXCEEDED,
    AcceptedContext,
    Negotiated,
    Rejection,
    check_called_ae,
    check_context_name,
    printable,
)
from securepacs.model.identity import Identity
from securepacs.services.audit_events import AuditEvents, StoredInstances

log = logging.getLogger(__name__)


class ProtocolError(Exception):
    """The peer broke the protocol; the association is aborted."""


@dataclass(frozen=True)
class AcceptorSettings:
    """What every association of one server shares."""

    ae_title: str
    max_pdu: int
    contexts: Offer  # what we accept (negotiation.supported)
    acse_timeout: float
    network_timeout: float
    dimse_timeout: float
    max_associations: int = 64
    #: associations one certificate may hold at once (0: no cap of its own)
    max_associations_per_identity: int = 16
    #: longest A-ASSOCIATE-RQ (and other non-data PDU), command set and identifier read
    max_association_request: int = MAX_CONTROL
    max_command_set: int = MAX_COMMAND
    max_identifier: int = 1024 * 1024
    #: memory all associations' received data sets may hold (:class:`Budget`)
    budget: Budget = field(default_factory=lambda: Budget(512 * 1024 * 1024))
    #: accept any called AE title (else only `ae_title`)
    accept_any_called_ae: bool = False
    transfer_syntax_policy: str = "as-proposed"  # contexts.TRANSFER_SYNTAX_POLICIES
    #: accept storage SOP classes we do not know (private ones, newer ones)
    accept_unknown_storage: bool = True
    #: the answers to association requests seen before (:class:`Negotiated`)
    negotiated: Negotiated = field(default_factory=Negotiated)


class AcceptedAssociation:
    """An established association as the handlers see it."""

    def __init__(self, channel: PduChannel, contexts: dict[int, AcceptedContext], *,
                 identity: Identity | None, address: str, port: int, calling_ae: str,
                 settings: AcceptorSettings, audit: AuditEvents):
        self.channel = channel
        self.contexts = contexts
        self.identity = identity
        self.address = address
        self.port = port
        self.calling_ae = calling_ae
        self.settings = settings
        self.audit = audit
        self._next_id = 0
        self._killed = False
        self._identifier = Intake(limit=settings.max_identifier)
        self._stores: StoredInstances | None = None

    @property
    def stores(self) -> StoredInstances:
        """This association's successful C-STOREs, audited together when it ends
        (:class:`~securepacs.services.audit_events.StoredInstances`)."""
        if self._stores is None:
            self._stores = self.audit.stored_instances(self.identity, ae_title=self.calling_ae,
                                                       address=self.address)
        return self._stores

    def end_audit(self) -> None:
        """The association is over, however it ended: audit the stores it holds."""
        if self._stores is not None:
            self._stores.close()

    def admit(self, command: cmd.Command, context_id: int) -> Intake:
        """How to receive the data set of `command` (its command set is complete): a
        request this identity may not make is refused now and its data set dropped
        unread, before it costs memory or disk (:func:`securepacs.dimse.guard.refusal`);
        an identifier is kept up to ``max_identifier`` bytes; a C-STORE data set is kept
        (spilled to a temp file when large)."""
        field_ = command.get(cmd.COMMAND_FIELD)
        if context_id not in self.contexts or field_ not in REQUIRED:
            return DROP  # answered with an A-ABORT once complete
        assert isinstance(field_, int)
        refused = refusal(self.identity, field_, address=self.address,
                          ae_title=self.calling_ae, audit=self.audit)
        if refused is not None:  # an identifier stays bounded even when dropped
            return Intake(keep=False, refused=refused,
                          limit=None if field_ == cmd.C_STORE_RQ else self._identifier.limit)
        return KEEP if field_ == cmd.C_STORE_RQ else self._identifier

    @property
    def peer(self) -> str:
        """``AE@host:port`` for log lines."""
        return f"{self.calling_ae or '?'}@{self.address}:{self.port}"

    def next_message_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def send(self, context_id: int, command: bytes, dataset: BinaryIO | bytes | None = None,
             length: int | None = None) -> None:
        """One message, within the DIMSE timeout (see :meth:`PduChannel.send`)."""
        _timeout(self.channel.sock, self.settings.dimse_timeout)
        self.channel.send(context_id, command, dataset, length)

    def respond(self, message: Message, status: int, *, comment: str = "",
                counts: dict[str, int | None] | None = None) -> None:
        """Send the response to `message`, without a data set
        (:func:`securepacs.dimse.commands.response`)."""
        self.send(message.context_id,
                  cmd.response(message.command, status, comment=comment, counts=counts))

    def receive(self, spill: SpillPrefix | None = None) -> Message:
        """The next message within the DIMSE timeout (ProtocolError on anything else)."""
        _timeout(self.channel.sock, self.settings.dimse_timeout)
        return self.channel.receive(spill, self.admit)

    def cancel_requested(self, message_id: int) -> bool:
        """Whether a C-CANCEL-RQ for `message_id` has arrived (never waits if nothing has)."""
        while self.channel.readable():
            message = self.receive()
            message.discard()
            if (message.field == cmd.C_CANCEL_RQ
                    and message.command.get(cmd.MESSAGE_ID_RESPONDED) == message_id):
                return True
            raise ProtocolError(f"unexpected command 0x{message.field & 0xFFFF:04X} during an "
                                "operation (one outstanding operation is negotiated)")
        return False

    def kill(self) -> None:
        """End the association from another thread: the connection is shut down, the
        association's own thread then finds it closed and ends."""
        self._killed = True
        with contextlib.suppress(OSError):
            self.channel.sock.shutdown(socket.SHUT_RDWR)

    @property
    def killed(self) -> bool:
        return self._killed


class Registry:
    """The running associations of a server, for limits, revocation and shutdown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[AcceptedAssociation] = set()

    def add(self, assoc: AcceptedAssociation, limit: int, per_identity: int = 0) -> str | None:
        """Register `assoc`; None, or why not (a limit reached)."""
        with self._lock:
            if len(self._live) >= limit:
                return f"{limit} associations already running"
            identity = assoc.identity
            if per_identity and identity is not None:
                same = sum(1 for a in self._live
                           if a.identity is not None and a.identity.serial == identity.serial)
                if same >= per_identity:
                    return f"{identity.describe()} already holds {same} associations"
            self._live.add(assoc)
            return None

    def remove(self, assoc: AcceptedAssociation) -> None:
        with self._lock:
            self._live.discard(assoc)

    def live(self) -> list[AcceptedAssociation]:
        with self._lock:
            return list(self._live)


#: (association, message, its context) -> None; sends the response(s) itself
Dispatch = Callable[[AcceptedAssociation, Message, AcceptedContext], None]


def serve_connection(sock: socket.socket, *, identity: Identity | None,
                     address: tuple[str, int], settings: AcceptorSettings,
                     audit: AuditEvents, registry: Registry, dispatch: Dispatch,
                     spill: Callable[[AcceptedAssociation], SpillPrefix]) -> None:
    """Negotiate an association on `sock` and serve it until it ends; closes `sock`."""
    channel = PduChannel(sock, settings.max_pdu, strict=True,
                         max_control=settings.max_association_request,
                         max_command=settings.max_command_set, budget=settings.budget)
    where = f"{address[0]}:{address[1]}"
    try:
        assoc = _negotiate(channel, identity, address, settings, audit, registry)
        if assoc is None:
            return
        try:
            _run(assoc, dispatch, spill(assoc))
        finally:
            registry.remove(assoc)
            assoc.end_audit()
    except (PeerClosed, PeerAborted, PeerReleased):
        pass
    except TimeoutError:
        log.warning("association with %s: no association request within %g s", where,
                    settings.acse_timeout)
    except OSError as exc:
        log.info("connection with %s ended: %s", where, exc.strerror or exc)
    except Exception as exc:  # noqa: BLE001 - a bug must not leave a traceback per peer
        log.error("association with %s ended by an internal error: %s", where,
                  printable(f"{type(exc).__name__}: {exc}", 200))
        log.debug("internal error with %s", where, exc_info=True)  # for a bug report
        with contextlib.suppress(OSError):
            sock.sendall(abort_pdu(2, 0))
    finally:
        channel.close()


def _negotiate(channel: PduChannel, identity: Identity | None, address: tuple[str, int],
               settings: AcceptorSettings, audit: AuditEvents,
               registry: Registry) -> AcceptedAssociation | None:
    where = f"{address[0]}:{address[1]}"
    channel.sock.settimeout(settings.acse_timeout)
    try:
        kind, body = channel.read_pdu()
        if kind != ASSOCIATE_RQ:
            raise ValueError(f"expected an A-ASSOCIATE-RQ, got PDU type 0x{kind:02X}")
        request = settings.negotiated.request(body)
    except (ValueError, PduTooLarge) as exc:
        log.warning("connection from %s aborted: %s", where, printable(str(exc), 200))
        with contextlib.suppress(OSError):
            channel.sock.sendall(abort_pdu(2, 0))
        return None
    rejection = (check_context_name(request)
                 or (None if settings.accept_any_called_ae
                     else check_called_ae(request, settings.ae_title))
                 or check_calling_ae(identity, request.calling_ae, address=address[0],
                                     audit=audit))
    if rejection is None and settings.budget.exhausted:
        rejection = Rejection(*LOCAL_LIMIT_EXCEEDED,
                              why="the memory budget for received data sets is exhausted")
    if rejection is None:
        pdu, contexts = settings.negotiated.accept(
            body, request, settings.contexts, ae_title=settings.ae_title,
            max_pdu=settings.max_pdu, policy=settings.transfer_syntax_policy,
            accept_unknown_storage=settings.accept_unknown_storage)
        assoc = AcceptedAssociation(channel, contexts, identity=identity, address=address[0],
                                    port=address[1], calling_ae=request.calling_ae,
                                    settings=settings, audit=audit)
        full = registry.add(assoc, settings.max_associations,
                            settings.max_associations_per_identity)
        if full is None:
            channel.set_peer_max(request.max_pdu)
            try:
                channel.sock.sendall(pdu)
            except BaseException:
                registry.remove(assoc)
                raise
            return assoc
        rejection = Rejection(*LOCAL_LIMIT_EXCEEDED, why=full)
    if rejection.source != 1 or rejection.reason != 3:  # the guard logged its own
        log.warning("association from %s (%s) rejected: %s",
                    printable(request.calling_ae) or "?", where, rejection.why)
    channel.sock.sendall(rejection.pdu())
    return None


def _run(assoc: AcceptedAssociation, dispatch: Dispatch, spill: SpillPrefix) -> None:
    """Serve requests until the peer releases or aborts, or the association is killed."""
    channel = assoc.channel
    while True:
        _timeout(channel.sock, assoc.settings.network_timeout)
        try:
            message = channel.receive(spill, assoc.admit)
        except TimeoutError:
            log.warning("association with %s idle for %g s: aborted", assoc.peer,
                        assoc.settings.network_timeout)
            _abort(assoc)
            return
        except (UnexpectedPdu, PduTooLarge, ValueError) as exc:
            log.warning("association with %s aborted: %s", assoc.peer, exc)
            _abort(assoc)
            return
        except OSError:
            if not assoc.killed:
                raise
            return
        try:
            _serve(assoc, message, dispatch)
        except ProtocolError as exc:
            log.warning("association with %s aborted: %s", assoc.peer, exc)
            _abort(assoc)
            return
        finally:
            message.discard()


def _timeout(sock: socket.socket, seconds: float) -> None:
    """`sock`'s timeout set to `seconds` (a system call each time, so only when it
    changes: the DIMSE and network timeouts are often the same)."""
    if sock.gettimeout() != seconds:
        sock.settimeout(seconds)


def _serve(assoc: AcceptedAssociation, message: Message, dispatch: Dispatch) -> None:
    field = message.field
    if field == cmd.C_CANCEL_RQ:
        return  # the operation it cancels is over already
    context = assoc.contexts.get(message.context_id)
    if context is None:
        raise ProtocolError(f"message on presentation context {message.context_id}, "
                            "which was not accepted")
    if field not in REQUIRED:
        raise ProtocolError(f"command 0x{field & 0xFFFF:04X} is not a service this server "
                            "provides")
    if message.intake is not None:  # the guard saw its command set before its data set
        refused = message.intake.refused
    else:
        refused = refusal(assoc.identity, field, address=assoc.address,
                          ae_title=assoc.calling_ae, audit=assoc.audit)
    if refused is not None:
        assoc.respond(message, refused[0], comment=refused[1])
        return
    dispatch(assoc, message, context)


def _abort(assoc: AcceptedAssociation) -> None:
    with contextlib.suppress(OSError):
        assoc.channel.sock.settimeout(1.0)
        assoc.channel.sock.sendall(abort_pdu(2, 0))
