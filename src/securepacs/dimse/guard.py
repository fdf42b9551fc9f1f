"""Identity and permissions enforced where pynetdicom decides, in one place.

- After the TLS handshake the server attaches the peer's :class:`Identity` to the socket;
  :class:`GuardedRequestHandler` carries it onto the association.
- :class:`GuardedAcse` rejects an association whose calling AE title is not bound to the
  certificate: A-ASSOCIATE-RJ, rejected-permanent, service-user, "calling AE title not
  recognised" (PS3.8 9.3.4, result 1 / source 1 / reason 3).
- :class:`GuardedAssociation` answers a request the identity's group may not make with
  the DIMSE status Refused: Not Authorized (0x0124, PS3.7 C.5.?) before any service
  handler runs, and logs the identity and the permission missing. One mechanism serves
  C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET alike: no destination is contacted, nothing
  is stored, for a refused request.
"""

from __future__ import annotations

import logging
from copy import deepcopy
from datetime import datetime
from typing import Any

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.transport import AssociationSocket, RequestHandler

from securepacs.dimse.status import REFUSED_NOT_AUTHORIZED, STORE_OUT_OF_RESOURCES
from securepacs.errors import AuditError
from securepacs.model.identity import Identity, Permission
from securepacs.services.audit_events import AuditEvents, NoAudit

log = logging.getLogger(__name__)

IDENTITY_ATTR = "securepacs_identity"
OUT_OF_RESOURCES = STORE_OUT_OF_RESOURCES  # A700: refused while the audit store cannot write
_NO_AUDIT = NoAudit()

#: DIMSE request primitive -> the permission it needs.
REQUIRED: dict[type, Permission] = {
    C_ECHO: Permission.ECHO,
    C_STORE: Permission.STORE,
    C_FIND: Permission.FIND,
    C_MOVE: Permission.MOVE,
    C_GET: Permission.GET,
}


def audit_of(assoc: Any) -> AuditEvents:
    """The audit events of the server an association belongs to."""
    server = getattr(assoc, "_server", None)
    return getattr(server, "audit", None) or _NO_AUDIT


def identity_of(assoc: Any) -> Identity | None:
    """The identity bound to an association (None for associations we requested)."""
    return getattr(assoc, IDENTITY_ATTR, None)


class GuardedAcse(ACSE):
    """ACSE that also checks the calling AE title against the certificate's identity."""

    def _negotiate_as_acceptor(self) -> None:
        identity = identity_of(self.assoc)
        request = self.requestor.primitive
        calling = str(getattr(request, "calling_ae_title", "") or "").strip()
        if identity is not None and not identity.may_call_as(calling):
            self.requestor.ae_title = calling
            log.warning("association from %s rejected: calling AE title %r is not bound to "
                        "its certificate (allowed: %s)", identity.describe(), calling,
                        ", ".join(identity.ae_titles))
            audit_of(self.assoc).refused(
                address=str(self.assoc.requestor.address), name=f"CN={identity.name}",
                reason=f"calling AE title {calling!r} not bound to the certificate")
            self.send_reject(0x01, 0x01, 0x03)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        super()._negotiate_as_acceptor()


class GuardedAssociation(Association):
    """An acceptor association that refuses requests its identity may not make."""

    def _refuse(self, msg: Any, context_id: int, status: int, comment: str) -> None:
        rsp = type(msg)()
        rsp.MessageIDBeingRespondedTo = msg.MessageID
        rsp.AffectedSOPClassUID = msg.AffectedSOPClassUID
        if isinstance(msg, C_STORE):
            rsp.AffectedSOPInstanceUID = msg.AffectedSOPInstanceUID
        rsp.Status = status
        rsp.ErrorComment = comment[:64]
        self.dimse.send_msg(rsp, context_id)

    def _serve_request(self, msg: Any, context_id: int) -> None:
        identity = identity_of(self)
        needed = REQUIRED.get(type(msg))
        if needed is None:
            super()._serve_request(msg, context_id)
            return
        audit = audit_of(self)
        try:
            audit.check_writable()
        except AuditError as exc:
            log.error("%s refused: %s (audit_required)", msg.msg_type, exc)
            self._refuse(msg, context_id, OUT_OF_RESOURCES, "audit trail unavailable")
            return
        if identity is not None and not identity.allows(needed):
            log.warning("%s refused: %s lacks the %r permission", msg.msg_type,
                        identity.describe(), needed.value)
            audit.permission_refused(identity, address=str(self.requestor.address),
                                     ae_title=self.requestor.ae_title, permission=needed.value)
            self._refuse(msg, context_id, REFUSED_NOT_AUTHORIZED,
                         f"not authorised: {needed.value} permission missing")
            return
        super()._serve_request(msg, context_id)


class GuardedRequestHandler(RequestHandler):
    """Builds guarded associations carrying the identity the TLS handshake established.

    The body follows pynetdicom 3's ``RequestHandler._create_association`` with the
    association class swapped; keep the two in step when upgrading pynetdicom.
    """

    def _create_association(self) -> Association:
        assoc = GuardedAssociation(self.ae, MODE_ACCEPTOR)
        setattr(assoc, IDENTITY_ATTR, getattr(self.request, IDENTITY_ATTR, None))
        assoc.acse = GuardedAcse(assoc)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        sock = AssociationSocket(assoc, client_socket=self.request)
        assoc.set_socket(sock)
        acceptor, requestor = assoc.acceptor, assoc.requestor
        acceptor.maximum_length = self.ae.maximum_pdu_size
        acceptor.ae_title = self.server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = self.ae.implementation_class_uid
        acceptor.implementation_version_name = self.ae.implementation_version_name
        acceptor.supported_contexts = deepcopy(self.server.contexts)
        requestor.address_info = self.remote
        handlers = self.server._handlers
        for event in handlers:
            if event.is_intervention and handlers[event]:
                assoc.bind(event, *handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in handlers[event]:
                    assoc.bind(event, handler[0], handler[1])  # type: ignore[index]
        return assoc
