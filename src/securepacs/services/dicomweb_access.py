"""Who may do what over DICOMweb: the one check every DICOMweb request goes through.

One responsibility: the caller of a DICOMweb request (the identity the HTTPS listener
admitted from its client certificate, or the one an import token stands for) is checked
here, and only here, before any query, retrieve or store: the audit trail must be able to
record (``audit_required``, as the DIMSE guard), and the identity's group must carry the
permission the transaction needs (QIDO-RS: find, WADO-RS: get, STOW-RS: store; the same
permissions as C-FIND, C-GET and C-STORE). A refusal is audited as a Security Alert, as
for DIMSE. The organisation visibility of the tenant design belongs here too: every
service method takes the :class:`Caller`, so the filter has one place to go.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from securepacs.errors import NotPermitted
from securepacs.model.identity import Identity, Permission
from securepacs.model.record import StoredInstance
from securepacs.model.tenancy import Visibility
from securepacs.services.audit_events import AuditEvents
from securepacs.services.tenancy import Tenancy

__all__ = ["Caller", "DicomwebAccess", "TRANSACTIONS"]

log = logging.getLogger(__name__)

#: The DICOMweb transaction -> the permission it needs (its DIMSE counterpart's).
TRANSACTIONS: dict[str, Permission] = {
    "QIDO-RS": Permission.FIND,
    "WADO-RS": Permission.GET,
    "STOW-RS": Permission.STORE,
}


@dataclass(frozen=True)
class Caller:
    """One DICOMweb request's caller.

    Attributes
    ----------
    identity : Identity
        Admitted from the client certificate, or the identity of an import token.
    address : str
        The client's IP address (for the audit trail).
    via : str
        ``"certificate"`` or ``"import-token"``.
    """

    identity: Identity
    address: str
    via: str = "certificate"


class DicomwebAccess:
    """The permission check of every DICOMweb transaction (see the module docstring)."""

    def __init__(self, audit: AuditEvents, tenancy: Tenancy | None = None) -> None:
        self.audit = audit
        self.tenancy = tenancy or Tenancy()

    def visibility(self, caller: Caller, *, retrieve: bool = False) -> Visibility:
        """What `caller` sees of the archive (the tenant boundary of
        :class:`securepacs.services.tenancy.Tenancy`)."""
        return self.tenancy.view(caller.identity, retrieve=retrieve)

    def crossed(self, caller: Caller, instances: Iterable[StoredInstance]) -> None:
        """Audit a retrieve of another organisation's studies (docs/tenants.md)."""
        foreign = self.tenancy.foreign(caller.identity, instances)
        if foreign:
            how = "cross_org" if self.tenancy.crosses(caller.identity) else "share"
            self.audit.crossed(caller.identity, ae_title="", address=caller.address,
                               caller_org=self.tenancy.owner(caller.identity), owners=foreign,
                               how=how)

    def found(self, caller: Caller, owned: Iterable[tuple[str, str]]) -> None:
        """Audit a QIDO-RS search that matched another organisation's studies: one event
        per search (docs/tenants.md)."""
        self.tenancy.audit_crossing(self.audit, caller.identity, address=caller.address,
                                    owned=owned, action="found")

    def owner(self, caller: Caller) -> str:
        """The organisation that owns what `caller` stores."""
        return self.tenancy.owner(caller.identity)

    def require(self, caller: Caller, transaction: str) -> None:
        """Allow `caller` to run `transaction` (a key of :data:`TRANSACTIONS`) or raise.

        Raises
        ------
        NotPermitted
            The identity's group lacks the permission (the message says which).
        AuditError
            The audit trail cannot record and the policy requires it.
        """
        self.audit.check_writable()
        needed = TRANSACTIONS[transaction]
        identity = caller.identity
        if identity.allows(needed):
            return
        log.warning("%s refused: %s lacks the %r permission", transaction, identity.describe(),
                    needed.value)
        self.audit.permission_refused(identity, address=caller.address, ae_title="",
                                      permission=needed.value)
        raise NotPermitted(f"{transaction} needs the {needed.value!r} permission, which the "
                           f"group {identity.group or '(none)'} of {identity.name!r} does not "
                           "have; ask the archive's administrator")
