"""What the client use cases need from a DICOM peer: small Protocols and the connection errors.

The client services (:mod:`~securepacs.services.send`, :mod:`~securepacs.services.fetch`,
:mod:`~securepacs.services.identifier`) never import the network code; the DICOM client in
:mod:`securepacs.dimse.client` implements these Protocols and raises these errors, and the
CLI wires the two together.

A connection ends in one of the :class:`ConnectionFailed` subclasses, each a message a person
can act on. ``transient`` marks the ones worth a new association (a lost association, a
DIMSE timeout, an A-ASSOCIATE-RJ with result "rejected-transient", PS3.8 9.3.4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from securepacs.errors import PacsError
from securepacs.model.levels import Level

if TYPE_CHECKING:  # pydicom is the client commands' largest import; echo does without it
    from pydicom.dataset import Dataset

#: DIMSE status "Refused: Not Authorized" (PS3.7 C.5.x, used by every C-service).
STATUS_NOT_AUTHORIZED = 0x0124


class ConnectionFailed(PacsError):
    """A connection or association with the peer failed; the message says what to do.

    Attributes
    ----------
    transient : bool
        True when trying again on a new association may succeed.
    """

    transient = False


class ServerUnreachable(ConnectionFailed):
    """No TCP connection: refused, timed out, no route, unknown host name."""


class ServerNotTrusted(ConnectionFailed):
    """The server's certificate failed verification against our CA file.

    Attributes
    ----------
    fingerprint : str or None
        SHA-256 fingerprint of the certificate the server presented, if it could be read.
    """

    def __init__(self, message: str, fingerprint: str | None = None):
        super().__init__(message)
        self.fingerprint = fingerprint


class CertificateRejected(ConnectionFailed):
    """The server refused our client certificate (or that we sent none) during TLS."""


class AssociationRejected(ConnectionFailed):
    """The server answered A-ASSOCIATE-RJ (PS3.8 9.3.4); the message carries the reason."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class PermissionRefused(ConnectionFailed):
    """The server refused an operation: DIMSE status 0x0124 or a rejected presentation context."""


class AssociationLost(ConnectionFailed):
    """The association ended in the middle: A-ABORT, connection reset or closed, DIMSE timeout."""

    transient = True


# ------------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class StoreRequest:
    """One C-STORE to make (PS3.4 B.2): the data set travels as encoded bytes, unchanged.

    Attributes
    ----------
    sop_class_uid, sop_instance_uid, transfer_syntax_uid : str
        What the data set is and how it is encoded.
    length : int
        Bytes in the data set.
    open : callable
        Returns a binary stream positioned at the first byte of the data set (after any
        File Meta Information); the caller closes it.
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    length: int
    open: Callable[[], BinaryIO]


@dataclass(frozen=True)
class DimseStatus:
    """A DIMSE response status (PS3.7 C) with its Error Comment, if any."""

    status: int
    comment: str = ""

    @property
    def category(self) -> str:
        """``"success"``, ``"warning"``, ``"pending"``, ``"cancel"`` or ``"failure"``."""
        s = self.status
        if s == 0x0000:
            return "success"
        if s in (0x0001, 0x0107, 0x0116) or 0xB000 <= s <= 0xBFFF:
            return "warning"
        if s in (0xFF00, 0xFF01):
            return "pending"
        if s == 0xFE00:
            return "cancel"
        return "failure"


class StoreSession(Protocol):
    """One association able to send C-STOREs for a fixed set of (SOP class, transfer syntax)."""

    def refused(self, sop_class_uid: str, transfer_syntax_uid: str) -> str | None:
        """Why the peer will not take this kind of instance on this association (None: it will)."""
        ...

    def store(self, request: StoreRequest) -> DimseStatus:
        """Send one instance and return the peer's status; raises :class:`ConnectionFailed`."""
        ...

    def close(self) -> None:
        """Release the association (A-RELEASE), quietly."""
        ...

    def abort(self) -> None:
        """Abort the association (A-ABORT) and close the connection, quietly."""
        ...


class StoreConnector(Protocol):
    """Opens store associations."""

    def open_store(self, pairs: Sequence[tuple[str, str]]) -> StoreSession:
        """An association proposing one presentation context per (SOP class, transfer syntax)."""
        ...


# ------------------------------------------------------------------------------- query/retrieve


class Finder(Protocol):
    """C-FIND (PS3.4 C.4.1): Study Root, or Patient Root at PATIENT level."""

    def find(self, identifier: Dataset, level: Level) -> Iterator[Dataset]:
        """Yield each matching identifier; raises :class:`ConnectionFailed`, :class:`PermissionRefused`."""
        ...


@dataclass(frozen=True)
class ReceivedInstance:
    """An instance a C-GET delivered (a C-STORE sub-operation on our association)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset: bytes


@dataclass(frozen=True)
class RetrieveProgress:
    """Sub-operation counts of a C-GET or C-MOVE response (PS3.4 C.4.2.1.6 / C.4.3.1.3)."""

    remaining: int | None
    completed: int
    failed: int
    warning: int
    status: DimseStatus

    @property
    def total(self) -> int | None:
        if self.remaining is None:
            return None
        return self.remaining + self.completed + self.failed + self.warning


class Retriever(Protocol):
    """C-GET and C-MOVE (PS3.4 C.4.2, C.4.3), Study Root."""

    def get(self, identifier: Dataset, storage: Sequence[tuple[str, Sequence[str]]],
            on_instance: Callable[[ReceivedInstance], int],
            on_progress: Callable[[RetrieveProgress], None]) -> RetrieveProgress:
        """Retrieve onto this association; `storage` lists (SOP class, transfer syntaxes)
        we accept as Storage SCP; `on_instance` returns the C-STORE status to answer."""
        ...

    def move(self, identifier: Dataset, destination: str,
             on_progress: Callable[[RetrieveProgress], None]) -> RetrieveProgress:
        """Ask the peer to send to the AE title `destination`; returns the final response."""
        ...


__all__ = [
    "STATUS_NOT_AUTHORIZED",
    "AssociationLost",
    "AssociationRejected",
    "CertificateRejected",
    "ConnectionFailed",
    "DimseStatus",
    "Finder",
    "PermissionRefused",
    "ReceivedInstance",
    "RetrieveProgress",
    "Retriever",
    "ServerNotTrusted",
    "ServerUnreachable",
    "StoreConnector",
    "StoreRequest",
    "StoreSession",
]
