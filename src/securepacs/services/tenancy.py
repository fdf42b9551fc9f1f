"""Organisations as tenants: the one place that turns a caller into what it may see.

Authorisation runs identity -> permission -> organisation visibility (docs/tenants.md).
Every edge (DIMSE C-FIND/C-GET/C-MOVE/C-STORE, DICOMweb, the archive viewer, media export)
asks :class:`Tenancy` for the caller's :class:`~securepacs.model.tenancy.Visibility` (or,
storing, the owner organisation) and hands it to the query, retrieve and ingest services,
which pass it to the index: the filtering is done there, in SQL. No edge filters on its own.

- the owner of a stored instance is the storing identity's organisation, or the
  ``default_organisation`` setting when the identity has none (trust from files);
- a caller sees its organisation's studies and the studies shared with it; a group with
  the ``cross_org`` permission sees every study (each such use is audited);
- with trust from files there are no organisations: every caller sees everything.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from securepacs.model.identity import Identity, Permission
from securepacs.model.tenancy import Visibility

__all__ = ["Tenancy"]

log = logging.getLogger(__name__)


class Tenancy:
    """The tenant boundary (see the module docstring).

    Parameters
    ----------
    default_organisation : str
        Owner of what an identity without an organisation stores.
    enforced : bool
        False with trust from files (no organisations): everyone sees everything.
    """

    def __init__(self, *, default_organisation: str = "default", enforced: bool = True) -> None:
        self.default_organisation = default_organisation
        self.enforced = enforced

    def owner(self, identity: Identity | None) -> str:
        """The organisation that owns what `identity` stores."""
        org = (identity.organization or "").strip() if identity is not None else ""
        return org or self.default_organisation

    def view(self, identity: Identity | None, *, retrieve: bool = False,
             at: datetime | None = None) -> Visibility:
        """What `identity` sees; `retrieve` for C-GET, C-MOVE, WADO-RS and media (where a
        read-only share does not count)."""
        when = at or datetime.now(UTC)
        everything = not self.enforced or (identity is not None
                                           and identity.allows(Permission.CROSS_ORG))
        return Visibility(self.owner(identity), everything=everything, retrieve=retrieve,
                          at=when)

    def crosses(self, identity: Identity | None) -> bool:
        """True when `identity` reads across organisations by its ``cross_org`` permission
        (the audit trail records each such use)."""
        return (self.enforced and identity is not None
                and identity.allows(Permission.CROSS_ORG))
