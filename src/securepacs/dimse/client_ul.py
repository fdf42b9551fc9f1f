"""The association requestor of the DICOM Upper Layer (PS3.8 9), synchronous, one thread.

One responsibility: open a TCP connection (wrapped in TLS per PS3.15 B.12 when a context is
given), negotiate an association (A-ASSOCIATE-RQ/AC/RJ, PS3.8 9.3.2-9.3.4), carry DIMSE
messages as P-DATA-TF fragments (PS3.8 9.3.5, E.2) and end it with A-RELEASE or A-ABORT;
and turn every way this can fail into a :class:`~securepacs.services.scuport.ConnectionFailed`
a person can act on.

Why not :class:`pynetdicom.association.Association` for the client: its reader thread and
state machine move every PDU through queues and poll with 1 ms sleeps, and ``send_c_store``
waits on those threads twice per message. Measured on loopback with TLS, 0.5 MB images:
about 180 images/s on one association however it is tuned (chunked sending, 128 KB PDUs,
TCP_NODELAY) and no gain from more associations in threads, where DCMTK's ``storescu``
reaches 450 to 700 on the same machine. A requestor only ever waits for the next answer, so the messages here
go straight from the file to the socket and the answers are read in the calling thread.
The association PDUs are :mod:`securepacs.dimse.associate`'s (standard library only, so a
client command starts without pynetdicom and pydicom).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from securepacs.dimse.associate import (
    ProposedContext,
    abort_reason,
    decode_associate_ac,
    decode_associate_rj,
    encode_associate_rq,
)
from securepacs.dimse.channel import (
    ABORT,
    ASSOCIATE_AC,
    ASSOCIATE_RJ,
    RELEASE_RP_TYPE,
    RELEASE_RQ,
    Message,
    PduChannel,
    PduTooLarge,
    PeerAborted,
    PeerClosed,
    PeerReleased,
    UnexpectedPdu,
    abort_pdu,
)
from securepacs.dimse.client_errors import check_peer, closed_early, tls_failure, unreachable
from securepacs.services.scuport import (
    AssociationLost,
    AssociationRejected,
    ConnectionFailed,
    ServerUnreachable,
)

if TYPE_CHECKING:  # ssl itself is used only by securepacs.pki.tlspolicy
    import ssl

DEFAULT_MAX_PDU = 262144
_ABORT = abort_pdu()


def _address(host: str) -> str | bytes:
    """`host` as ``getaddrinfo`` gets it: an ASCII name or address as bytes, any other name
    as it is. A str is IDNA-encoded there, which imports the IDNA codec (and stringprep,
    unicodedata: a few milliseconds of every client command's start-up) to change nothing
    in an ASCII name; a malformed ASCII name (``a..b``) is then a resolver error, reported
    as an unreachable server, instead of a UnicodeError."""
    try:
        return host.encode("ascii")
    except UnicodeEncodeError:
        return host


_CONTEXT_RESULTS = {
    1: "refused by the server (user rejection)",
    2: "refused by the server (no reason given)",
    3: "not supported by the server (abstract syntax not supported)",
    4: "transfer syntax not accepted by the server",
}


@dataclass(frozen=True)
class Endpoint:
    """Where to connect and how: the peer, the AE titles, TLS and the timeouts.

    Attributes
    ----------
    host, port : str, int
        The peer.
    called_ae, calling_ae : str
        Called and calling AE titles (PS3.8 9.3.2).
    tls : ssl.SSLContext or None
        From :func:`securepacs.pki.tlspolicy.client_context`; None for plain TCP.
    connect_timeout, acse_timeout, dimse_timeout : float
        Seconds for the TCP+TLS connection, for the association answer, for each DIMSE answer.
    max_pdu : int
        The largest P-DATA-TF we accept (Maximum Length Received, PS3.8 D.1).
    cert_file, key_file : pathlib.Path or None
        Our certificate files, only used to read the server's certificate over TLS 1.2 when
        it fails verification.
    peer_check : callable or None
        Called after the TLS handshake with the keyword arguments ``serial``, ``fingerprint``,
        ``name`` and ``organization`` of the server's verified certificate; a
        :class:`~securepacs.errors.PacsError` it raises refuses the server (identity
        pinning of a C-MOVE destination, :class:`~securepacs.services.trust.PeerPin`).
    """

    host: str
    port: int
    called_ae: str
    calling_ae: str
    tls: ssl.SSLContext | None = None
    connect_timeout: float = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    max_pdu: int = DEFAULT_MAX_PDU
    cert_file: Path | None = None
    key_file: Path | None = None
    peer_check: Callable[..., None] | None = None

    @property
    def where(self) -> str:
        return f"{self.called_ae} at {self.host}:{self.port}"


@dataclass(frozen=True)
class ContextRequest:
    """One presentation context to propose; ``scp_role`` asks to be its Storage SCP (C-GET)."""

    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]
    scp_role: bool = False


@dataclass(frozen=True)
class Accepted:
    """An accepted presentation context: its ID, abstract syntax and the transfer syntax."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str


class Association:
    """An established association; use :meth:`open`, then send and receive, then release."""

    def __init__(self, endpoint: Endpoint, sock: socket.socket,
                 accepted: dict[int, Accepted], refused: dict[tuple[str, str], str],
                 peer_max_pdu: int):
        self.endpoint = endpoint
        self._sock = sock
        self.accepted = accepted
        self.refused = refused
        self.peer_max_pdu = peer_max_pdu
        self._channel = PduChannel(sock, endpoint.max_pdu)
        self._channel.set_peer_max(peer_max_pdu)
        self._closed = False
        self._next_id = 0

    # -- opening ----------------------------------------------------------------------
    @classmethod
    def open(cls, endpoint: Endpoint, contexts: Sequence[ContextRequest]) -> Association:
        """Connect and negotiate; every failure raises a :class:`ConnectionFailed`.

        Parameters
        ----------
        endpoint : Endpoint
            The peer and the connection settings.
        contexts : sequence of ContextRequest
            At most 128 presentation contexts (PS3.8 9.3.2.2: odd IDs 1-255).
        """
        if not 0 < len(contexts) <= 128:
            raise ValueError(f"{len(contexts)} presentation contexts: 1 to 128 allowed")
        sock = cls._connect(endpoint)
        try:
            return cls._negotiate(endpoint, sock, contexts)
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise

    @staticmethod
    def _connect(endpoint: Endpoint) -> socket.socket:
        try:
            raw = socket.create_connection((_address(endpoint.host), endpoint.port),  # type: ignore[arg-type]
                                           timeout=endpoint.connect_timeout)
        except OSError as exc:
            raise unreachable(endpoint, exc) from None
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if endpoint.tls is None:
            return raw
        try:
            hostname = endpoint.host if endpoint.tls.check_hostname else None
            tls = endpoint.tls.wrap_socket(raw, server_side=False, server_hostname=hostname)
        except OSError as exc:
            raw.close()
            failure = tls_failure(endpoint, exc, "the TLS handshake", early=True)
            if failure is not None:
                raise failure from None
            if isinstance(exc, TimeoutError):
                raise ServerUnreachable(f"{endpoint.host}:{endpoint.port} accepted the "
                                        "connection but did not complete the TLS handshake "
                                        f"within {endpoint.connect_timeout:g} s") from None
            raise closed_early(endpoint, "the TLS handshake") from None
        if endpoint.peer_check is not None:
            check_peer(endpoint, tls)
        return tls

    @classmethod
    def _negotiate(cls, endpoint: Endpoint, sock: socket.socket,
                   contexts: Sequence[ContextRequest]) -> Association:
        requested = {2 * index + 1: request for index, request in enumerate(contexts)}
        pdu = encode_associate_rq(
            endpoint.called_ae, endpoint.calling_ae,
            [ProposedContext(cid, r.abstract_syntax, tuple(r.transfer_syntaxes))
             for cid, r in requested.items()],
            max_pdu=endpoint.max_pdu, scp_roles=[r.abstract_syntax for r in contexts if r.scp_role])
        probe = cls(endpoint, sock, {}, {}, 0)
        doing = "waiting for the association answer"
        send_error: OSError | None = None
        try:
            sock.settimeout(endpoint.acse_timeout)
            sock.sendall(pdu)
        except OSError as exc:
            # A TLS 1.3 server that refused our certificate has closed the connection; its
            # alert, which says why, is still there to be read.
            send_error = exc
        try:
            kind, body = probe._read_pdu(doing)
        except ConnectionFailed:
            if send_error is not None:
                raise probe._lost(send_error, doing) from None
            raise
        except OSError as exc:
            raise probe._lost(exc, doing) from None
        if kind == ASSOCIATE_RJ:
            raise cls._rejection(endpoint, body)
        if kind == ABORT:
            raise AssociationRejected(
                f"{endpoint.where} aborted the association request ({cls._abort_reason(body)})")
        if kind != ASSOCIATE_AC:
            raise AssociationLost(f"{endpoint.where} answered the association request with "
                                  f"an unexpected PDU (type 0x{kind:02X})")
        try:
            answer = decode_associate_ac(body)
        except ValueError as exc:
            raise AssociationLost(f"{endpoint.where} sent a malformed A-ASSOCIATE-AC "
                                  f"({exc})") from None
        accepted: dict[int, Accepted] = {}
        refused: dict[tuple[str, str], str] = {}
        for context_id, request in requested.items():
            result = answer.contexts.get(context_id)
            if result is not None and result.result == 0 and result.transfer_syntax:
                accepted[context_id] = Accepted(context_id, request.abstract_syntax,
                                                result.transfer_syntax)
                continue
            code = result.result if result is not None else None
            reason = _CONTEXT_RESULTS.get(code or 0, "not answered by the server")
            for ts in request.transfer_syntaxes:
                refused.setdefault((request.abstract_syntax, ts), reason)
        peer_max = answer.max_pdu
        return cls(endpoint, sock, accepted, refused, peer_max)

    @staticmethod
    def _rejection(endpoint: Endpoint, body: bytes | bytearray) -> AssociationRejected:
        try:
            rj = decode_associate_rj(body)
        except ValueError:
            return AssociationRejected(f"{endpoint.where} rejected the association (a "
                                       "malformed A-ASSOCIATE-RJ)")
        reason, transient = rj.reason_text, rj.transient
        source = rj.source, rj.reason
        hint = ""
        if source == (1, 3):
            hint = (f" The server does not accept calling AE title {endpoint.calling_ae!r} "
                    "(for this certificate): use --aet with the AE title your certificate "
                    "is bound to.")
        elif source == (1, 7):
            hint = f" The server is not {endpoint.called_ae!r}: check --aec."
        elif transient:
            hint = " The server is busy; try again later."
        kind = "temporarily" if transient else "permanently"
        return AssociationRejected(
            f"{endpoint.where} rejected the association {kind}: {reason}.{hint}",
            transient=transient)

    @staticmethod
    def _abort_reason(body: bytes | bytearray) -> str:
        return abort_reason(body)

    # -- contexts -----------------------------------------------------------------------
    def context_for(self, abstract_syntax: str, transfer_syntax: str | None = None) -> Accepted | None:
        """An accepted context for `abstract_syntax` (with exactly `transfer_syntax` if given)."""
        for context in self.accepted.values():
            if context.abstract_syntax == abstract_syntax and (
                    transfer_syntax is None or context.transfer_syntax == transfer_syntax):
                return context
        return None

    def next_message_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    # -- sending ------------------------------------------------------------------------
    def send(self, context_id: int, command: bytes, dataset: BinaryIO | bytes | None = None,
             length: int | None = None) -> None:
        """Send one DIMSE message (see :meth:`securepacs.dimse.channel.PduChannel.send`)."""
        try:
            self._sock.settimeout(self.endpoint.dimse_timeout)
            self._channel.send(context_id, command, dataset, length)
        except EOFError as exc:
            self.abort()
            raise AssociationLost(str(exc)) from None
        except OSError as exc:
            failure = self._lost(exc, "sending")
            self.abort()
            raise failure from None

    # -- receiving ----------------------------------------------------------------------
    def _read_pdu(self, doing: str) -> tuple[int, bytearray]:
        try:
            return self._channel.read_pdu()
        except PeerClosed:
            raise self._lost(None, doing) from None
        except PduTooLarge as exc:
            raise AssociationLost(f"{self.endpoint.where} sent {exc}") from None

    def _lost(self, exc: BaseException | None, doing: str) -> ConnectionFailed:
        where = self.endpoint.where
        early = not self.accepted and doing.startswith("waiting for the association")
        if exc is not None:
            failure = tls_failure(self.endpoint, exc, doing, early=early)
            if failure is not None:
                return failure
        if isinstance(exc, TimeoutError):
            return AssociationLost(f"no answer from {where} within "
                                   f"{self.endpoint.dimse_timeout:g} s while {doing}")
        if early:
            return closed_early(self.endpoint, doing)
        text = f": {exc.strerror or exc}" if isinstance(exc, OSError) else ""
        return AssociationLost(f"{where} closed the connection while {doing}{text}")

    def receive(self, doing: str = "waiting for an answer") -> Message:
        """Read the next complete DIMSE message; A-ABORT and A-RELEASE end the association."""
        where = self.endpoint.where
        try:
            self._sock.settimeout(self.endpoint.dimse_timeout)
            return self._channel.receive()
        except PeerClosed:
            failure: ConnectionFailed = self._lost(None, doing)
        except PeerAborted as exc:
            failure = AssociationLost(f"{where} aborted the association while {doing} "
                                      f"({self._abort_reason(exc.body)})")
        except PeerReleased:
            failure = AssociationLost(f"{where} released the association while {doing}")
        except UnexpectedPdu as exc:
            failure = AssociationLost(f"{where} sent an unexpected PDU "
                                      f"(type 0x{exc.kind:02X}) while {doing}")
        except PduTooLarge as exc:
            failure = AssociationLost(f"{where} sent {exc}")
        except ValueError as exc:
            failure = AssociationLost(f"{where} sent a malformed message: {exc}")
        except OSError as exc:
            failure = self._lost(exc, doing)
        self.abort()
        raise failure

    # -- ending -------------------------------------------------------------------------
    def release(self) -> None:
        """A-RELEASE (PS3.8 9.3.6-7), waiting at most the ACSE timeout; never raises."""
        if self._closed:
            return
        try:
            self._sock.settimeout(self.endpoint.acse_timeout)
            self._sock.sendall(RELEASE_RQ)
            while True:
                kind, _ = self._read_pdu("releasing")
                if kind in (RELEASE_RP_TYPE, ABORT):
                    break
        except (OSError, ConnectionFailed):
            pass
        finally:
            self.close()

    def abort(self) -> None:
        """A-ABORT (PS3.8 9.3.8) and close; never raises."""
        if self._closed:
            return
        with contextlib.suppress(OSError):
            self._sock.settimeout(1.0)
            self._sock.sendall(_ABORT)
        self.close()

    def close(self) -> None:
        """Close the connection without an A-RELEASE."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    @property
    def is_open(self) -> bool:
        return not self._closed

    def cipher(self) -> str:
        """``"TLSv1.3 TLS_AES_256_GCM_SHA384"``, or ``"plain TCP"``."""
        cipher = getattr(self._sock, "cipher", None)
        if cipher is None:
            return "plain TCP"
        described = cipher()
        return f"{described[1]} {described[0]}" if described else "TLS"
