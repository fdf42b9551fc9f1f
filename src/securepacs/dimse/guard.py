"""Identity and permissions enforced where the server decides, in one place.

- After the TLS handshake the server knows the peer's :class:`Identity`; it travels with
  the association.
- :func:`check_calling_ae` rejects an association whose calling AE title is not bound to
  the certificate: A-ASSOCIATE-RJ, rejected-permanent, service-user, "calling AE title not
  recognised" (PS3.8 9.3.4, result 1 / source 1 / reason 3).
- :func:`refusal` answers a request the identity's group may not make with the DIMSE
  status Refused: Not Authorized (0x0124) before any service handler runs, and logs the
  identity and the permission missing. One mechanism serves C-ECHO, C-STORE, C-FIND,
  C-MOVE and C-GET alike: no destination is contacted, nothing is stored, for a refused
  request. While the audit trail cannot record (audit_required), every request is
  refused with 0xA700.
"""

from __future__ import annotations

import logging

from securepacs.dimse import commands as cmd
from securepacs.dimse.negotiation import CALLING_AE_NOT_RECOGNISED, Rejection
from securepacs.dimse.status import REFUSED_NOT_AUTHORIZED, STORE_OUT_OF_RESOURCES
from securepacs.errors import AuditError
from securepacs.model.identity import Identity, Permission
from securepacs.services.audit_events import AuditEvents

log = logging.getLogger(__name__)

#: DIMSE request command field -> the permission it needs, and its name for log lines.
REQUIRED: dict[int, tuple[Permission, str]] = {
    cmd.C_ECHO_RQ: (Permission.ECHO, "C-ECHO"),
    cmd.C_STORE_RQ: (Permission.STORE, "C-STORE"),
    cmd.C_FIND_RQ: (Permission.FIND, "C-FIND"),
    cmd.C_MOVE_RQ: (Permission.MOVE, "C-MOVE"),
    cmd.C_GET_RQ: (Permission.GET, "C-GET"),
}


def check_calling_ae(identity: Identity | None, calling_ae: str, *, address: str,
                     audit: AuditEvents) -> Rejection | None:
    """The rejection for a calling AE title the certificate is not bound to, else None."""
    if identity is None or identity.may_call_as(calling_ae):
        return None
    log.warning("association from %s rejected: calling AE title %r is not bound to "
                "its certificate (allowed: %s)", identity.describe(), calling_ae,
                ", ".join(identity.ae_titles))
    why = f"calling AE title {calling_ae!r} not bound to the certificate"
    audit.refused(address=address, name=f"CN={identity.name}", reason=why)
    return Rejection(*CALLING_AE_NOT_RECOGNISED, why=why)


def refusal(identity: Identity | None, field: int, *, address: str, ae_title: str,
            audit: AuditEvents) -> tuple[int, str] | None:
    """(status, comment) refusing a request with command `field`, or None to serve it."""
    needed, name = REQUIRED[field]
    try:
        audit.check_writable()
    except AuditError as exc:
        log.error("%s refused: %s (audit_required)", name, exc)
        return STORE_OUT_OF_RESOURCES, "audit trail unavailable"
    if identity is not None and not identity.allows(needed):
        log.warning("%s refused: %s lacks the %r permission", name, identity.describe(),
                    needed.value)
        audit.permission_refused(identity, address=address, ae_title=ae_title,
                                 permission=needed.value)
        return REFUSED_NOT_AUTHORIZED, f"not authorised: {needed.value} permission missing"
    return None
