"""The DICOM client (SCU): C-ECHO, C-STORE, C-FIND, C-GET and C-MOVE over one endpoint.

Implements the Protocols of :mod:`securepacs.services.scuport` on top of the synchronous
association of :mod:`securepacs.dimse.client_ul`: Verification (PS3.4 A), Storage
(PS3.4 B.2), and Query/Retrieve Study Root / Patient Root (PS3.4 C.4, C.6). Every
operation opens its own association; :meth:`DicomClient.open_store` keeps one open for
many C-STOREs. Data sets are sent and received as encoded bytes, never re-encoded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from securepacs.dimse import commands as cmd
from securepacs.dimse.client_ul import Association, ContextRequest, Endpoint, Message
from securepacs.errors import QueryError, RetrieveError
from securepacs.model.levels import Level
from securepacs.services.scuport import (
    STATUS_NOT_AUTHORIZED,
    AssociationLost,
    DimseStatus,
    PermissionRefused,
    ReceivedInstance,
    RetrieveProgress,
    StoreRequest,
)

# pydicom (and numpy, and its pixel decoders) is imported by the operations that carry a data
# set, when they run: ``securepacs echo`` needs neither it nor pynetdicom (start-up time).
if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# UIDs (PS3.6 Annex A) as plain strings, not pydicom's or pynetdicom's constants
ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"
ImplicitVRLittleEndian = "1.2.840.10008.1.2"
Verification = "1.2.840.10008.1.1"
PatientRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.1.1"
StudyRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.2.1"
StudyRootQueryRetrieveInformationModelGet = "1.2.840.10008.5.1.4.1.2.2.3"
StudyRootQueryRetrieveInformationModelMove = "1.2.840.10008.5.1.4.1.2.2.2"

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

_SERVICE_NAMES = {
    Verification: "verification (C-ECHO)",
    StudyRootQueryRetrieveInformationModelFind: "Study Root query (C-FIND)",
    PatientRootQueryRetrieveInformationModelFind: "Patient Root query (C-FIND)",
    StudyRootQueryRetrieveInformationModelGet: "Study Root retrieve (C-GET)",
    StudyRootQueryRetrieveInformationModelMove: "Study Root retrieve (C-MOVE)",
}


@dataclass(frozen=True)
class EchoResult:
    """A C-ECHO: the status, the round trip (association included) and the TLS cipher."""

    status: DimseStatus
    seconds: float
    cipher: str


def _encode_identifier(identifier: Dataset, transfer_syntax: str) -> bytes:
    from securepacs.dimse.datasets import encode_dataset

    try:
        return encode_dataset(identifier, transfer_syntax)
    except ValueError:
        raise QueryError("the identifier cannot be encoded (check the -k values)") from None


def _status(message: Message) -> DimseStatus:
    value = message.command.get(cmd.STATUS)
    if not isinstance(value, int):
        raise AssociationLost("the server's response has no Status")
    comment = message.command.get(cmd.ERROR_COMMENT, "")
    return DimseStatus(value, str(comment))


def _counts(message: Message, status: DimseStatus) -> RetrieveProgress:
    def count(element: int) -> int:
        value = message.command.get(element)
        return value if isinstance(value, int) else 0

    remaining = message.command.get(cmd.REMAINING)
    return RetrieveProgress(remaining if isinstance(remaining, int) else None,
                            count(cmd.COMPLETED), count(cmd.FAILED), count(cmd.WARNING), status)


def _refused(assoc: Association, sop_class: str, what: str) -> PermissionRefused:
    reasons = {reason for (abstract, _), reason in assoc.refused.items() if abstract == sop_class}
    reason = ", ".join(sorted(reasons)) or "not accepted"
    return PermissionRefused(f"{assoc.endpoint.where} refused {what}: {reason}")


def _not_authorized(endpoint: Endpoint, what: str, status: DimseStatus) -> PermissionRefused:
    comment = f" ({status.comment})" if status.comment else ""
    return PermissionRefused(
        f"permission refused: {endpoint.where} does not allow this client to {what} "
        f"(status 0x0124 Refused: Not Authorized{comment}); ask its administrator for the "
        "permission, or use a certificate of a group that has it")


class StoreAssociation:
    """An open association for C-STOREs (implements :class:`~securepacs.services.scuport.StoreSession`)."""

    def __init__(self, association: Association):
        self._assoc = association
        self._contexts = {(c.abstract_syntax, c.transfer_syntax): c.context_id
                          for c in association.accepted.values()}

    def refused(self, sop_class_uid: str, transfer_syntax_uid: str) -> str | None:
        if (sop_class_uid, transfer_syntax_uid) in self._contexts:
            return None
        reason = self._assoc.refused.get((sop_class_uid, transfer_syntax_uid), "not proposed")
        return f"presentation context {reason}"

    def store(self, request: StoreRequest) -> DimseStatus:
        """One C-STORE (PS3.4 B.2.2); the data set bytes go out as they are."""
        context_id = self._contexts[(request.sop_class_uid, request.transfer_syntax_uid)]
        message_id = self._assoc.next_message_id()
        command = cmd.request(cmd.C_STORE_RQ, message_id, request.sop_class_uid,
                              has_data_set=True, sop_instance_uid=request.sop_instance_uid)
        with request.open() as stream:
            self._assoc.send(context_id, command, stream, request.length)
        answer = self._assoc.receive("waiting for the C-STORE response")
        if (answer.command.get(cmd.COMMAND_FIELD) != cmd.C_STORE_RSP
                or answer.command.get(cmd.MESSAGE_ID_RESPONDED) != message_id):
            self._assoc.abort()
            raise AssociationLost(f"{self._assoc.endpoint.where} sent an unexpected message "
                                  "instead of the C-STORE response")
        return _status(answer)

    def close(self) -> None:
        self._assoc.release()

    def abort(self) -> None:
        self._assoc.abort()


class DicomClient:
    """The SCU for one endpoint; each method opens (and ends) its own association.

    Parameters
    ----------
    endpoint : Endpoint
        The peer, AE titles, TLS context and timeouts.
    """

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint

    def _open(self, sop_class: str, *extra: ContextRequest) -> tuple[Association, int]:
        assoc = Association.open(self.endpoint, [ContextRequest(sop_class, UNCOMPRESSED), *extra])
        context = assoc.context_for(sop_class)
        if context is None:
            error = _refused(assoc, sop_class, _SERVICE_NAMES.get(sop_class, sop_class))
            assoc.release()
            raise error
        return assoc, context.context_id

    # -- verification ---------------------------------------------------------------------
    def echo(self) -> EchoResult:
        """C-ECHO (PS3.7 9.1.5): proves the connection, TLS and the association work.

        Raises
        ------
        ConnectionFailed
            Any connection or association failure, or 0x0124 (:class:`PermissionRefused`).
        """
        start = time.perf_counter()
        assoc, context_id = self._open(Verification)
        try:
            assoc.send(context_id, cmd.request(cmd.C_ECHO_RQ, assoc.next_message_id(),
                                               Verification, has_data_set=False))
            status = _status(assoc.receive("waiting for the C-ECHO response"))
            cipher = assoc.cipher()
        finally:
            assoc.release()
        if status.status == STATUS_NOT_AUTHORIZED:
            raise _not_authorized(self.endpoint, "echo", status)
        return EchoResult(status, time.perf_counter() - start, cipher)

    # -- storage --------------------------------------------------------------------------
    def open_store(self, pairs: Sequence[tuple[str, str]]) -> StoreAssociation:
        """An association with one presentation context per (SOP class, transfer syntax).

        Each context offers exactly the syntax the file is in, so no data set needs
        re-encoding; a context the server refuses is reported by ``refused``.
        """
        contexts = [ContextRequest(sop, (ts,)) for sop, ts in pairs]
        return StoreAssociation(Association.open(self.endpoint, contexts))

    # -- query ----------------------------------------------------------------------------
    def find(self, identifier: Dataset, level: Level) -> Iterator[Dataset]:
        """C-FIND (PS3.4 C.4.1): Patient Root at PATIENT level, Study Root otherwise.

        Yields
        ------
        pydicom.dataset.Dataset
            Each pending response's identifier.

        Raises
        ------
        PermissionRefused
            The model was refused, or status 0x0124.
        QueryError
            Any other failure status (with its Error Comment).
        """
        from pydicom.dataset import Dataset

        from securepacs.dimse.datasets import decode_dataset

        model = (PatientRootQueryRetrieveInformationModelFind if level is Level.PATIENT
                 else StudyRootQueryRetrieveInformationModelFind)
        query = Dataset()
        query.update(identifier)
        query.QueryRetrieveLevel = level.value
        assoc, context_id = self._open(model)
        finished = False
        try:
            ts = assoc.accepted[context_id].transfer_syntax
            message_id = assoc.next_message_id()
            assoc.send(context_id, cmd.request(cmd.C_FIND_RQ, message_id, model, has_data_set=True),
                       _encode_identifier(query, ts))
            while True:
                answer = assoc.receive("waiting for C-FIND responses")
                status = _status(answer)
                if status.category == "pending":
                    yield decode_dataset(answer.dataset, ts)
                    continue
                finished = True
                if status.status == STATUS_NOT_AUTHORIZED:
                    raise _not_authorized(self.endpoint, "query (C-FIND)", status)
                if status.category == "failure":
                    comment = f": {status.comment}" if status.comment else ""
                    raise QueryError(f"{self.endpoint.where} could not answer the query "
                                     f"(status 0x{status.status:04X}{comment})")
                return
        finally:
            if finished:
                assoc.release()
            else:
                assoc.abort()

    # -- retrieve -------------------------------------------------------------------------
    def get(self, identifier: Dataset, storage: Sequence[tuple[str, Sequence[str]]],
            on_instance: Callable[[ReceivedInstance], int],
            on_progress: Callable[[RetrieveProgress], None]) -> RetrieveProgress:
        """C-GET (PS3.4 C.4.3): the server sends the instances back on this association.

        Parameters
        ----------
        identifier : pydicom.dataset.Dataset
            With QueryRetrieveLevel and the unique keys.
        storage : sequence of (SOP class, transfer syntaxes)
            One presentation context each, with the SCP role (PS3.7 D.3.3.4); at most 127.
        on_instance : callable
            Called with each instance; returns the C-STORE status to answer.
        on_progress : callable
            Called with each C-GET response.
        """
        requests = [ContextRequest(sop, tuple(ts), scp_role=True) for sop, ts in storage]
        model = StudyRootQueryRetrieveInformationModelGet
        assoc, context_id = self._open(model, *requests[:127])
        return self._retrieve(assoc, context_id, model, cmd.C_GET_RQ, cmd.C_GET_RSP, identifier,
                              on_progress, on_instance=on_instance)

    def move(self, identifier: Dataset, destination: str,
             on_progress: Callable[[RetrieveProgress], None]) -> RetrieveProgress:
        """C-MOVE (PS3.4 C.4.2) to the AE title `destination`, as the server knows it."""
        model = StudyRootQueryRetrieveInformationModelMove
        assoc, context_id = self._open(model)
        return self._retrieve(assoc, context_id, model, cmd.C_MOVE_RQ, cmd.C_MOVE_RSP, identifier,
                              on_progress, destination=destination)

    def _retrieve(self, assoc: Association, context_id: int, model: str, request_field: int,
                  response_field: int, identifier: Dataset,
                  on_progress: Callable[[RetrieveProgress], None], *,
                  on_instance: Callable[[ReceivedInstance], int] | None = None,
                  destination: str | None = None) -> RetrieveProgress:
        what = "retrieve (C-GET)" if destination is None else "retrieve (C-MOVE)"
        finished = False
        try:
            ts = assoc.accepted[context_id].transfer_syntax
            message_id = assoc.next_message_id()
            extra = {"move_destination": destination} if destination is not None else {}
            assoc.send(context_id, cmd.request(request_field, message_id, model,
                                               has_data_set=True, **extra),
                       _encode_identifier(identifier, ts))
            while True:
                answer = assoc.receive(f"waiting for {what} responses")
                field = answer.command.get(cmd.COMMAND_FIELD)
                if field == cmd.C_STORE_RQ and on_instance is not None:
                    self._answer_store(assoc, answer, on_instance)
                    continue
                if field != response_field:
                    raise AssociationLost(f"{self.endpoint.where} sent an unexpected message "
                                          f"(command 0x{field or 0:04X}) during the {what}")
                status = _status(answer)
                progress = _counts(answer, status)
                on_progress(progress)
                if status.category == "pending":
                    continue
                finished = True
                if status.status == STATUS_NOT_AUTHORIZED:
                    raise _not_authorized(self.endpoint, what, status)
                if status.status == 0xA801:
                    raise RetrieveError(f"{self.endpoint.where} does not know the move "
                                        f"destination {destination!r} (status 0xA801): it "
                                        "must be configured on the server")
                return progress
        finally:
            if finished:
                assoc.release()
            else:
                assoc.abort()

    @staticmethod
    def _answer_store(assoc: Association, message: Message,
                      on_instance: Callable[[ReceivedInstance], int]) -> None:
        context = assoc.accepted.get(message.context_id)
        status = 0xA900 if context is None else on_instance(ReceivedInstance(
            sop_class_uid=str(message.command.get(cmd.AFFECTED_SOP_CLASS, "")),
            sop_instance_uid=str(message.command.get(cmd.AFFECTED_SOP_INSTANCE, "")),
            transfer_syntax_uid=context.transfer_syntax,
            dataset=bytes(message.dataset or b"")))
        assoc.send(message.context_id, cmd.store_response(message.command, status))


__all__ = ["DicomClient", "EchoResult", "Endpoint", "StoreAssociation", "UNCOMPRESSED"]
