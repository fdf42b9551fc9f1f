"""Thin DIMSE handlers: read the pynetdicom event, call a service, map the result.

Each handler's errors go through the tables of :mod:`securepacs.dimse.status`; every
failure is logged once with the peer's address and AE title, and the server keeps
serving other associations.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from securepacs.dimse import status as st
from securepacs.dimse.contexts import FIND_MODELS, GET_MODELS, MOVE_MODELS, sending_contexts
from securepacs.dimse.guard import audit_of, identity_of
from securepacs.errors import PacsError
from securepacs.services.ingest import IngestService, Received
from securepacs.services.query import QueryService, RetrieveService

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Destination:
    """Where a C-MOVE sends: address, port, and the TLS context to use (None: plain)."""

    ae_title: str
    host: str
    port: int
    tls: ssl.SSLContext | None


def peer(event: Event) -> str:
    """``AE@host:port`` of the association's requestor, for log lines."""
    req = event.assoc.requestor
    return f"{req.ae_title.strip() or '?'}@{req.address}:{req.port}"


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN: small PDUs must not wait for Nagle (pynetdicom never sets it)."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


@dataclass
class Handlers:
    """The server's event handlers, bound to the services they call."""

    ingest: IngestService
    query: QueryService
    retrieve: RetrieveService
    destinations: Callable[[str], Destination | None]
    max_pdu: int = 131072

    def bindings(self) -> list[tuple[Any, Callable[..., Any]]]:
        return [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_MOVE, self.on_move),
            (evt.EVT_C_GET, self.on_get),
        ]

    # -- verification ---------------------------------------------------------------
    def on_echo(self, event: Event) -> int:
        return st.SUCCESS

    # -- storage --------------------------------------------------------------------
    def on_store(self, event: Event) -> Dataset:
        req = cast(C_STORE, event.request)
        # With STORE_RECV_CHUNKED_DATASET (see server.make_server) the data set is in a
        # temp file that pynetdicom removes after this handler returns.
        received: Path | None = getattr(req, "_dataset_path", None)
        item = Received(
            dataset=b"" if received else req.DataSet.getvalue(),  # type: ignore[union-attr]
            sop_class_uid=str(req.AffectedSOPClassUID),
            sop_instance_uid=str(req.AffectedSOPInstanceUID),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            calling_ae=event.assoc.requestor.ae_title.strip(),
            dataset_file=Path(received) if received else None,
        )
        try:
            result = self.ingest.store_instance(item)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            code = st.status_for(exc, st.STORE_ERRORS)
            reason = str(exc) if isinstance(exc, PacsError) else f"internal error: {exc!r}"
            log.error("C-STORE %s from %s refused (0x%04X): %s",
                      item.sop_instance_uid, peer(event), code, reason,
                      exc_info=not isinstance(exc, PacsError))
            _audit_store(event, item.sop_class_uid, "", "", success=False, why=reason)
            return st.status_dataset(code, reason)
        _audit_store(event, item.sop_class_uid, result.patient_id, result.study_uid,
                     success=True, why=None)
        code, comment = st.STORE_OUTCOMES[result.outcome]
        if comment:
            log.warning("C-STORE %s from %s: %s", item.sop_instance_uid, peer(event), comment)
        return st.status_dataset(code, comment)

    # -- query ------------------------------------------------------------------------
    def on_find(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        root = FIND_MODELS[str(event.request.AffectedSOPClassUID)]
        try:
            results = list(self.query.find(event.identifier, root))
        except Exception as exc:  # noqa: BLE001
            code = st.status_for(exc, st.QUERY_ERRORS)
            log.error("C-FIND from %s failed (0x%04X): %s", peer(event), code, exc,
                      exc_info=not isinstance(exc, PacsError))
            _audit_query(event, success=False)
            yield st.status_dataset(code, str(exc)).Status, None
            return
        _audit_query(event, success=True)
        for ds in results:
            if event.is_cancelled:
                yield st.CANCEL, None
                return
            yield st.PENDING, ds

    # -- retrieve ---------------------------------------------------------------------
    def _matches(self, event: Event, models: dict[str, Any]) -> list[Any]:
        root = models[str(event.request.AffectedSOPClassUID)]
        return self.retrieve.instances(event.identifier, root)

    def _send(self, event: Event, instances: list[Any], destination: str
              ) -> Iterator[tuple[int, Dataset | None]]:
        req = event.assoc.requestor
        audit_of(event.assoc).retrieved(
            identity_of(event.assoc), ae_title=req.ae_title.strip(), address=str(req.address),
            destination=destination, patient_ids=[i.patient_id for i in instances
                                                  if i.patient_id],
            study_uids=[i.study_uid for i in instances], success=True)
        for item in instances:
            if event.is_cancelled:
                yield st.CANCEL, None
                return
            try:
                ds = self.retrieve.load(item)
            except PacsError as exc:
                log.error("retrieve of %s for %s: %s", item.sop_instance_uid, peer(event), exc)
                failed = Dataset()
                failed.FailedSOPInstanceUIDList = [item.sop_instance_uid]
                yield st.RETRIEVE_UNABLE_TO_PROCESS, failed
                return
            yield st.PENDING, ds

    def on_move(self, event: Event) -> Iterator[Any]:
        dest_ae = (event.move_destination or "").strip()
        dest = self.destinations(dest_ae)
        if dest is None:
            log.error("C-MOVE from %s: move destination %r is not configured",
                      peer(event), dest_ae)
            yield None, None  # pynetdicom answers A801 Move Destination Unknown
            return
        kwargs: dict[str, Any] = {
            "max_pdu": self.max_pdu,
            "evt_handlers": [(evt.EVT_CONN_OPEN, set_nodelay)],
        }
        if dest.tls is not None:
            kwargs["tls_args"] = (dest.tls, None)
        try:
            instances = self._matches(event, MOVE_MODELS)
            kwargs["contexts"] = sending_contexts(
                (i.sop_class_uid, i.transfer_syntax_uid) for i in instances) or None
        except Exception as exc:  # noqa: BLE001
            code = st.status_for(exc, st.RETRIEVE_ERRORS)
            log.error("C-MOVE from %s failed (0x%04X): %s", peer(event), code, exc,
                      exc_info=not isinstance(exc, PacsError))
            # pynetdicom's flow is destination, count, statuses: report the failure
            # as the one sub-operation's final status.
            kwargs["contexts"] = [build_context(Verification)]
            yield dest.host, dest.port, kwargs
            yield 1
            yield code, None
            return
        log.info("C-MOVE from %s: %d instance(s) to %s at %s:%d%s", peer(event),
                 len(instances), dest.ae_title, dest.host, dest.port,
                 " over TLS" if dest.tls else " (plain TCP)")
        yield dest.host, dest.port, kwargs
        yield len(instances)
        yield from self._send(event, instances, dest.ae_title)

    def on_get(self, event: Event) -> Iterator[Any]:
        try:
            instances = self._matches(event, GET_MODELS)
        except Exception as exc:  # noqa: BLE001
            code = st.status_for(exc, st.RETRIEVE_ERRORS)
            log.error("C-GET from %s failed (0x%04X): %s", peer(event), code, exc,
                      exc_info=not isinstance(exc, PacsError))
            yield 1
            yield code, None
            return
        log.info("C-GET from %s: %d instance(s)", peer(event), len(instances))
        yield len(instances)
        yield from self._send(event, instances, event.assoc.requestor.ae_title.strip())


def _audit_query(event: Event, *, success: bool) -> None:
    req = event.assoc.requestor
    raw = getattr(event.request, "Identifier", None)
    audit_of(event.assoc).queried(
        identity_of(event.assoc), ae_title=req.ae_title.strip(), address=str(req.address),
        sop_class_uid=str(event.request.AffectedSOPClassUID),
        identifier=raw.getvalue() if raw is not None else b"", success=success)


def _audit_store(event: Event, sop_class_uid: str, patient_id: str, study_uid: str, *,
                 success: bool, why: str | None) -> None:
    req = event.assoc.requestor
    audit_of(event.assoc).stored(
        identity_of(event.assoc), ae_title=req.ae_title.strip(), address=str(req.address),
        patient_id=patient_id, study_uid=study_uid, sop_class_uid=sop_class_uid,
        success=success, description=why)
