"""The DIMSE services of the server: read the request, call a service, send the answers.

C-ECHO (PS3.4 A), C-STORE (B.2), C-FIND (C.4.1), C-GET (C.4.3) and C-MOVE (C.4.2). Each
handler's errors go through the tables of :mod:`securepacs.dimse.status`; every failure
is logged once with the peer's AE title and address, and the server keeps serving.
Stored data sets are sent back as stored (re-encoded only between the uncompressed
syntaxes when the peer accepts no other); C-MOVE sub-operations go out on an association
of the client's own requestor (:mod:`securepacs.dimse.client_ul`).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydicom import dcmread
from pydicom.dataset import Dataset

from securepacs.dimse import commands as cmd
from securepacs.dimse import status as st
from securepacs.dimse.association import AcceptedAssociation, ProtocolError
from securepacs.dimse.channel import Message, SpillPrefix
from securepacs.dimse.client_ul import Accepted, Association, ContextRequest, Endpoint
from securepacs.dimse.contexts import (
    FIND_MODELS,
    GET_MODELS,
    MOVE_MODELS,
    UNCOMPRESSED,
    sending_contexts,
)
from securepacs.dimse.datasets import decode_dataset, encode_dataset
from securepacs.dimse.negotiation import AcceptedContext
from securepacs.errors import PacsError
from securepacs.model.levels import Root
from securepacs.model.record import StoredInstance
from securepacs.services import part10
from securepacs.services.ingest import IngestService, Received
from securepacs.services.query import QueryService, RetrieveService
from securepacs.services.scuport import ConnectionFailed
from securepacs.services.tenancy import Tenancy

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 C.5.?: Refused: SOP Class not supported
SUB_OPERATIONS_FAILED = 0xA702  # PS3.4 C.4.2.1.5: unable to perform sub-operations
SUB_OPERATIONS_WARNING = 0xB000
#: the information models each query/retrieve command may run on
_MODELS_OF = {cmd.C_FIND_RQ: FIND_MODELS, cmd.C_MOVE_RQ: MOVE_MODELS, cmd.C_GET_RQ: GET_MODELS}


@dataclass(frozen=True)
class Destination:
    """Where a C-MOVE sends: address, port, the TLS context to use (None: plain), and the
    check of the destination's certificate when its identity is pinned (None: any from the CA)."""

    ae_title: str
    host: str
    port: int
    tls: ssl.SSLContext | None
    peer_check: Callable[..., None] | None = None


def _category(status: int) -> str:
    if status == st.SUCCESS:
        return "completed"
    if status == 0x0001 or 0xB000 <= status <= 0xBFFF:
        return "warning"
    return "failed"


@dataclass
class _Progress:
    """Sub-operation counts of a C-GET / C-MOVE (PS3.7 9.3.3.2, 9.3.4.2)."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def add(self, status: int, sop_instance_uid: str) -> None:
        self.remaining -= 1
        kind = _category(status)
        setattr(self, kind, getattr(self, kind) + 1)
        if kind == "failed":
            self.failed_uids.append(sop_instance_uid)

    def counts(self, *, final: bool = False) -> dict[str, int | None]:
        return {"remaining": None if final else self.remaining, "completed": self.completed,
                "failed": self.failed, "warning": self.warning}

    def final_status(self) -> int:
        if not self.failed and not self.warning:
            return st.SUCCESS
        if not self.completed and not self.warning:
            return SUB_OPERATIONS_FAILED
        return SUB_OPERATIONS_WARNING


@dataclass
class Handlers:
    """The server's service handlers, bound to the services they call."""

    ingest: IngestService
    query: QueryService
    retrieve: RetrieveService
    destinations: Callable[[str], Destination | None]
    max_pdu: int = 131072
    #: the tenant boundary: what each caller sees, and who owns what it stores
    tenancy: Tenancy = field(default_factory=Tenancy)

    def __post_init__(self) -> None:
        self._services: dict[int, Callable[[AcceptedAssociation, Message, AcceptedContext],
                                           None]] = {
            cmd.C_ECHO_RQ: self.on_echo, cmd.C_STORE_RQ: self.on_store,
            cmd.C_FIND_RQ: self.on_find, cmd.C_GET_RQ: self.on_get, cmd.C_MOVE_RQ: self.on_move,
        }

    def dispatch(self, assoc: AcceptedAssociation, message: Message,
                 context: AcceptedContext) -> None:
        """Serve one request (the guard has admitted it)."""
        handler = self._services[message.field]
        sop_class = str(message.command.get(cmd.AFFECTED_SOP_CLASS, ""))
        if sop_class != context.abstract_syntax:
            log.error("request from %s refused: SOP Class %s on a context for %s",
                      assoc.peer, sop_class, context.abstract_syntax)
            assoc.respond(message, SOP_CLASS_NOT_SUPPORTED,
                          comment="SOP Class differs from the presentation context's")
            return
        models = _MODELS_OF.get(message.field)
        if models is not None and context.abstract_syntax not in models:
            log.error("request from %s refused: command 0x%04X on a context for %s",
                      assoc.peer, message.field, context.abstract_syntax)
            assoc.respond(message, SOP_CLASS_NOT_SUPPORTED,
                          comment="not a query/retrieve information model")
            return
        handler(assoc, message, context)

    def spill_prefix(self, assoc: AcceptedAssociation) -> SpillPrefix:
        """A large C-STORE data set goes to a temp file that is already the blob (our Part
        10 header first), in the blob store's spool folder: ingest checks it and moves it
        into place without copying it."""
        def prefix(command: cmd.Command, context_id: int) -> tuple[bytes, Path | None] | None:
            context = assoc.contexts.get(context_id)
            if command.get(cmd.COMMAND_FIELD) != cmd.C_STORE_RQ or context is None:
                return None
            header = part10.header_for(str(command.get(cmd.AFFECTED_SOP_CLASS, "")),
                                       str(command.get(cmd.AFFECTED_SOP_INSTANCE, "")),
                                       context.transfer_syntax, assoc.calling_ae)
            return header, self.ingest.spool_folder
        return prefix

    # -- verification ---------------------------------------------------------------
    def on_echo(self, assoc: AcceptedAssociation, message: Message,
                context: AcceptedContext) -> None:
        assoc.respond(message, st.SUCCESS)

    # -- storage --------------------------------------------------------------------
    def on_store(self, assoc: AcceptedAssociation, message: Message,
                 context: AcceptedContext) -> None:
        command = message.command
        if message.spill_error is not None:
            exc = message.spill_error
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            code = st.STORE_OUT_OF_RESOURCES
            reason = ("no space left for the received data set" if full
                      else f"cannot keep the received data set: {exc.strerror or exc}")
            log.error("C-STORE %s from %s refused (0x%04X): %s",
                      command.get(cmd.AFFECTED_SOP_INSTANCE, "?"), assoc.peer, code, reason)
            _audit_store(assoc, str(command.get(cmd.AFFECTED_SOP_CLASS, "")), "", "",
                         success=False, why=reason)
            assoc.respond(message, code, comment=reason)
            return
        item = Received(
            dataset=message.dataset or b"",
            sop_class_uid=str(command.get(cmd.AFFECTED_SOP_CLASS, "")),
            sop_instance_uid=str(command.get(cmd.AFFECTED_SOP_INSTANCE, "")),
            transfer_syntax_uid=context.transfer_syntax,
            calling_ae=assoc.calling_ae,
            dataset_file=message.dataset_file,
            organization=self.tenancy.owner(assoc.identity),
        )
        try:
            result = self.ingest.store_instance(item)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            code = st.status_for(exc, st.STORE_ERRORS)
            reason = str(exc) if isinstance(exc, PacsError) else f"internal error: {exc!r}"
            log.error("C-STORE %s from %s refused (0x%04X): %s", item.sop_instance_uid,
                      assoc.peer, code, reason, exc_info=not isinstance(exc, PacsError))
            _audit_store(assoc, item.sop_class_uid, "", "", success=False, why=reason)
            assoc.respond(message, code, comment=reason)
            return
        assoc.stores.add(patient_id=result.patient_id, study_uid=result.study_uid,
                         sop_class_uid=item.sop_class_uid, sop_instance_uid=item.sop_instance_uid)
        code, comment = st.STORE_OUTCOMES[result.outcome]
        if comment:
            log.warning("C-STORE %s from %s: %s", item.sop_instance_uid, assoc.peer, comment)
        assoc.respond(message, code, comment=comment)

    # -- query ------------------------------------------------------------------------
    def on_find(self, assoc: AcceptedAssociation, message: Message,
                context: AcceptedContext) -> None:
        root = FIND_MODELS[context.abstract_syntax]
        owned: list[tuple[str, str]] = []  # (owner, study) of each match, for the audit
        try:
            identifier = decode_dataset(message.dataset, context.transfer_syntax)
            results = list(self.query.find(identifier, root, owned=owned,
                                           visibility=self.tenancy.view(assoc.identity)))
            unsupported = self.query.unsupported_keys(identifier, root)
        except Exception as exc:  # noqa: BLE001
            code = (st.FIND_UNABLE_TO_PROCESS if isinstance(exc, ValueError)
                    else st.status_for(exc, st.QUERY_ERRORS))
            log.error("C-FIND from %s failed (0x%04X): %s", assoc.peer, code, exc,
                      exc_info=not isinstance(exc, PacsError | ValueError))
            _audit_query(assoc, message, success=False)
            assoc.respond(message, code, comment=str(exc))
            return
        _audit_query(assoc, message, success=True)
        self.tenancy.audit_crossing(assoc.audit, assoc.identity, address=assoc.address,
                                    ae_title=assoc.calling_ae, owned=owned, action="found")
        message_id = int(message.command.get(cmd.MESSAGE_ID, 0))  # type: ignore[arg-type]
        if unsupported:
            log.warning("C-FIND from %s: key(s) not supported for matching, answered with "
                        "0xFF01: %s", assoc.peer, ", ".join(unsupported))
        pending = cmd.response(message.command,
                               st.PENDING_WARNING if unsupported else st.PENDING,
                               has_data_set=True)
        for ds in results:
            if assoc.cancel_requested(message_id):
                assoc.respond(message, st.CANCEL)
                return
            assoc.send(message.context_id, pending, encode_dataset(ds, context.transfer_syntax))
        assoc.respond(message, st.SUCCESS)

    # -- retrieve ---------------------------------------------------------------------
    def _instances(self, assoc: AcceptedAssociation, message: Message,
                   context: AcceptedContext, models: dict[str, Root],
                   what: str) -> list[StoredInstance] | None:
        """The instances a C-GET/C-MOVE names, or None after answering its failure."""
        try:
            identifier = decode_dataset(message.dataset, context.transfer_syntax)
            return self.retrieve.instances(
                identifier, models[context.abstract_syntax],
                visibility=self.tenancy.view(assoc.identity, retrieve=True))
        except Exception as exc:  # noqa: BLE001
            code = (st.RETRIEVE_UNABLE_TO_PROCESS if isinstance(exc, ValueError)
                    else st.status_for(exc, st.RETRIEVE_ERRORS))
            log.error("%s from %s failed (0x%04X): %s", what, assoc.peer, code, exc,
                      exc_info=not isinstance(exc, PacsError | ValueError))
            assoc.respond(message, code, comment=str(exc))
            return None

    def _dataset(self, item: StoredInstance, transfer_syntax: str) -> bytes:
        """The stored data set, as stored or re-encoded into another uncompressed syntax."""
        blob = self.retrieve.read(item)
        if transfer_syntax == item.transfer_syntax_uid:
            return blob[part10.dataset_offset(blob[:144]):]
        return encode_dataset(dcmread(BytesIO(blob)), transfer_syntax)  # File Meta is not encoded

    def _run_sub_operations(self, assoc: AcceptedAssociation, message: Message,
                            instances: list[StoredInstance],
                            store: Callable[[StoredInstance], int]) -> None:
        """One C-STORE per instance with a pending response after each (PS3.4 C.4.2.3,
        C.4.3.3), then the final response; a C-CANCEL stops after the current one."""
        progress = _Progress(len(instances))
        message_id = int(message.command.get(cmd.MESSAGE_ID, 0))  # type: ignore[arg-type]
        audit_retrieved(assoc, instances, message)
        foreign = self.tenancy.foreign(assoc.identity, instances)
        if foreign:
            assoc.audit.crossed(assoc.identity, ae_title=assoc.calling_ae,
                                address=assoc.address,
                                caller_org=self.tenancy.owner(assoc.identity), owners=foreign,
                                how=("cross_org" if self.tenancy.crosses(assoc.identity)
                                     else "share"))
        for item in instances:
            if assoc.cancel_requested(message_id):
                self._final(assoc, message, st.CANCEL, progress, cancelled=True)
                return
            try:
                status = store(item)
            except PacsError as exc:
                log.error("retrieve of %s for %s: %s", item.sop_instance_uid, assoc.peer, exc)
                status = st.RETRIEVE_UNABLE_TO_PROCESS
            progress.add(status, item.sop_instance_uid)
            if progress.remaining:
                assoc.respond(message, st.PENDING, counts=progress.counts())
        self._final(assoc, message, progress.final_status(), progress)

    @staticmethod
    def _final(assoc: AcceptedAssociation, message: Message, status: int,
               progress: _Progress, *, cancelled: bool = False) -> None:
        counts = progress.counts(final=not cancelled)
        if status == st.SUCCESS:
            assoc.respond(message, status, counts=counts)
            return
        failed = Dataset()
        failed.FailedSOPInstanceUIDList = progress.failed_uids
        context = assoc.contexts[message.context_id]
        assoc.send(message.context_id,
                   cmd.response(message.command, status, has_data_set=True, counts=counts),
                   encode_dataset(failed, context.transfer_syntax))

    def on_get(self, assoc: AcceptedAssociation, message: Message,
               context: AcceptedContext) -> None:
        instances = self._instances(assoc, message, context, GET_MODELS, "C-GET")
        if instances is None:
            return
        log.info("C-GET from %s: %d instance(s)", assoc.peer, len(instances))
        # contexts on which the requestor took the Storage SCP role (PS3.7 D.3.3.4)
        storage = [c for c in assoc.contexts.values() if c.as_scu]
        self._run_sub_operations(assoc, message, instances,
                                 lambda item: self._store_back(assoc, storage, item))

    def _store_back(self, assoc: AcceptedAssociation, storage: list[AcceptedContext],
                    item: StoredInstance) -> int:
        """A C-STORE sub-operation on the C-GET's own association; its status."""
        choice = _pick(storage, item)
        if choice is None:
            log.error("C-GET from %s: no accepted context (with the SCP role for the "
                      "requestor) for %s in %s", assoc.peer, item.sop_class_uid,
                      item.transfer_syntax_uid)
            return SUB_OPERATIONS_FAILED
        message_id = assoc.next_message_id()
        assoc.send(choice.context_id,
                   cmd.request(cmd.C_STORE_RQ, message_id, item.sop_class_uid,
                               has_data_set=True, sop_instance_uid=item.sop_instance_uid),
                   self._dataset(item, choice.transfer_syntax))
        while True:
            answer = assoc.receive()
            answer.discard()
            if answer.field == cmd.C_CANCEL_RQ:
                continue  # noticed before the next sub-operation
            if (answer.field == cmd.C_STORE_RSP
                    and answer.command.get(cmd.MESSAGE_ID_RESPONDED) == message_id):
                value = answer.command.get(cmd.STATUS)
                return value if isinstance(value, int) else st.PROCESSING_FAILURE
            raise ProtocolError(f"expected the C-STORE response, got command "
                                f"0x{answer.field & 0xFFFF:04X}")

    def on_move(self, assoc: AcceptedAssociation, message: Message,
                context: AcceptedContext) -> None:
        dest_ae = str(message.command.get(cmd.MOVE_DESTINATION, "")).strip()
        dest = self.destinations(dest_ae)
        if dest is None:
            log.error("C-MOVE from %s: move destination %r is not configured",
                      assoc.peer, dest_ae)
            assoc.respond(message, st.MOVE_UNKNOWN_DESTINATION,
                          comment=f"move destination {dest_ae!r} is not configured")
            return
        instances = self._instances(assoc, message, context, MOVE_MODELS, "C-MOVE")
        if instances is None:
            return
        log.info("C-MOVE from %s: %d instance(s) to %s at %s:%d%s", assoc.peer,
                 len(instances), dest.ae_title, dest.host, dest.port,
                 " over TLS" if dest.tls else " (plain TCP)")
        if not instances:
            self._run_sub_operations(assoc, message, [], lambda item: st.SUCCESS)
            return
        endpoint = Endpoint(dest.host, dest.port, called_ae=dest.ae_title,
                            calling_ae=assoc.settings.ae_title, tls=dest.tls,
                            acse_timeout=assoc.settings.acse_timeout,
                            dimse_timeout=assoc.settings.dimse_timeout, max_pdu=self.max_pdu,
                            peer_check=dest.peer_check)
        contexts = [ContextRequest(abstract, syntaxes) for abstract, syntaxes in
                    sending_contexts((i.sop_class_uid, i.transfer_syntax_uid) for i in instances)]
        try:
            sub = Association.open(endpoint, contexts)
        except ConnectionFailed as exc:
            log.error("C-MOVE from %s: cannot reach %s: %s", assoc.peer, dest.ae_title, exc)
            assoc.respond(message, SUB_OPERATIONS_FAILED,
                          comment=f"cannot associate with {dest.ae_title}")
            return
        originator = int(message.command.get(cmd.MESSAGE_ID, 0))  # type: ignore[arg-type]
        try:
            self._run_sub_operations(
                assoc, message, instances,
                lambda item: self._store_to(sub, item, assoc.calling_ae, originator))
        finally:
            sub.release()

    def _store_to(self, sub: Association, item: StoredInstance, originator_ae: str,
                  originator_id: int) -> int:
        """A C-STORE sub-operation of a C-MOVE, on the association to the destination."""
        if not sub.is_open:
            return SUB_OPERATIONS_FAILED
        choice = _pick(sub.accepted.values(), item)
        if choice is None:
            log.error("C-MOVE to %s: %s in %s not accepted by the destination",
                      sub.endpoint.called_ae, item.sop_class_uid, item.transfer_syntax_uid)
            return SUB_OPERATIONS_FAILED
        message_id = sub.next_message_id()
        try:
            sub.send(choice.context_id,
                     cmd.request(cmd.C_STORE_RQ, message_id, item.sop_class_uid,
                                 has_data_set=True, sop_instance_uid=item.sop_instance_uid,
                                 move_originator_ae=originator_ae,
                                 move_originator_id=originator_id),
                     self._dataset(item, choice.transfer_syntax))
            answer = sub.receive("waiting for the C-STORE response")
        except ConnectionFailed as exc:
            log.error("C-MOVE to %s: %s", sub.endpoint.called_ae, exc)
            return SUB_OPERATIONS_FAILED
        value = answer.command.get(cmd.STATUS)
        return value if isinstance(value, int) else st.PROCESSING_FAILURE


_Context = TypeVar("_Context", AcceptedContext, Accepted)


def _pick(contexts: Iterable[_Context], item: StoredInstance) -> _Context | None:
    """The context to send `item` on: its own transfer syntax first, else another
    uncompressed one if it is uncompressed."""
    usable = [c for c in contexts if c.abstract_syntax == item.sop_class_uid]
    for context in usable:
        if context.transfer_syntax == item.transfer_syntax_uid:
            return context
    if item.transfer_syntax_uid in UNCOMPRESSED:
        for context in usable:
            if context.transfer_syntax in UNCOMPRESSED:
                return context
    return None


def audit_retrieved(assoc: AcceptedAssociation, instances: list[StoredInstance],
                    message: Message) -> None:
    destination = str(message.command.get(cmd.MOVE_DESTINATION, "") or assoc.calling_ae).strip()
    assoc.audit.retrieved(
        assoc.identity, ae_title=assoc.calling_ae, address=assoc.address,
        destination=destination, patient_ids=[i.patient_id for i in instances if i.patient_id],
        study_uids=[i.study_uid for i in instances], success=True)


def _audit_query(assoc: AcceptedAssociation, message: Message, *, success: bool) -> None:
    assoc.audit.queried(
        assoc.identity, ae_title=assoc.calling_ae, address=assoc.address,
        sop_class_uid=str(message.command.get(cmd.AFFECTED_SOP_CLASS, "")),
        identifier=bytes(message.dataset or b""), success=success)


def _audit_store(assoc: AcceptedAssociation, sop_class_uid: str, patient_id: str,
                 study_uid: str, *, success: bool, why: str | None) -> None:
    assoc.audit.stored(
        assoc.identity, ae_title=assoc.calling_ae, address=assoc.address,
        patient_id=patient_id, study_uid=study_uid, sop_class_uid=sop_class_uid,
        success=success, description=why)
