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
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from securepacs.model.identity import Identity, Permission
from securepacs.model.record import StoredInstance
from securepacs.model.tenancy import Share, Visibility

__all__ = ["Shares", "Tenancy"]

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

    def of(self, organization: str, *, retrieve: bool = False,
           at: datetime | None = None) -> Visibility:
        """What `organization` sees, for a local operator acting for it (``media create
        --study --org``): its own studies and those shared with it (with trust from files,
        where there are no organisations, everything)."""
        return Visibility(organization.strip(), everything=not self.enforced,
                          retrieve=retrieve, at=at or datetime.now(UTC))

    def foreign(self, identity: Identity | None,
                instances: Iterable[StoredInstance]) -> dict[str, list[str]]:
        """Owner organisation -> study UIDs of `instances` that are not `identity`'s own
        (read by a share or by ``cross_org``): what the audit trail records."""
        return self.foreign_of(identity, ((i.organization, i.study_uid) for i in instances))

    def foreign_of(self, identity: Identity | None,
                   owned: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
        """Owner organisation -> what of it `identity` saw, from (owner, what) pairs (a
        study UID, or a patient for a PATIENT-level match), leaving out `identity`'s own."""
        if not self.enforced:
            return {}
        mine = self.owner(identity)
        seen: dict[str, dict[str, None]] = {}  # insertion-ordered sets: a query may match many
        for organization, what in owned:
            if organization and organization != mine:
                seen.setdefault(organization, {})[what] = None
        return {organization: list(whats) for organization, whats in seen.items()}

    def how(self, identity: Identity | None) -> str:
        """How `identity` sees another organisation's study: ``cross_org`` or ``share``."""
        return "cross_org" if self.crosses(identity) else "share"

    def audit_crossing(self, audit: CrossingAudit, identity: Identity | None, *, address: str,
                       owned: Iterable[tuple[str, str]], action: str = "read",
                       ae_title: str = "") -> bool:
        """Record one cross-organisation access (docs/tenants.md): one Security Alert
        naming `identity`'s organisation and every other owner among `owned` ((owner,
        study UID) pairs of what it found, read or viewed), when there is one. True when
        something was recorded."""
        foreign = self.foreign_of(identity, owned)
        if not foreign:
            return False
        audit.crossed(identity, ae_title=ae_title, address=address,
                      caller_org=self.owner(identity), owners=foreign, how=self.how(identity),
                      action=action)
        return True

    def crosses(self, identity: Identity | None) -> bool:
        """True when `identity` reads across organisations by its ``cross_org`` permission
        (the audit trail records each such use)."""
        return (self.enforced and identity is not None
                and identity.allows(Permission.CROSS_ORG))


class CrossingAudit(Protocol):
    """Where cross-organisation accesses are recorded
    (:meth:`securepacs.services.audit_events.AuditEvents.crossed`)."""

    def crossed(self, identity: Identity | None, *, ae_title: str, address: str,
                caller_org: str, owners: Mapping[str, Sequence[str]], how: str,
                action: str = "read") -> None: ...


class ShareStore(Protocol):
    """Where shares are kept (the trust store, :class:`securepacs.index.trust.SqlTrustStore`)."""

    def add_share(self, share: Share) -> None: ...
    def shares(self) -> list[Share]: ...
    def revoke_share(self, share_id: str, *, at: datetime) -> Share: ...


class StudyOwners(Protocol):
    """Which organisations hold a study (the index)."""

    def study_owners(self, study_uid: str) -> list[str]: ...


class Shares:
    """Grant, list and revoke shares (``securepacs share``). A share is in force on every
    server at once: the index query reads the trust store's share table (docs/tenants.md).

    Parameters
    ----------
    store : ShareStore
    owners : StudyOwners
    """

    def __init__(self, store: ShareStore, owners: StudyOwners) -> None:
        self._store = store
        self._owners = owners

    def grant(self, study_uid: str, grantee: str, *, at: datetime, owner: str | None = None,
              until: datetime | None = None, read_only: bool = False) -> Share:
        """Share the study `study_uid` of `owner` with `grantee`.

        Raises
        ------
        ValueError
            No such study, several owners and none named, `until` not after `at`, or the
            grantee is the owner.
        """
        uid = study_uid.strip()
        holders = self._owners.study_owners(uid)
        if owner is None:
            if not holders:
                raise ValueError(f"no study {uid} in the archive")
            if len(holders) > 1:
                raise ValueError(f"study {uid} is held by several organisations "
                                 f"({', '.join(holders)}): name one with --from")
            owner = holders[0]
        elif owner not in holders:
            raise ValueError(f"organisation {owner!r} holds no study {uid}")
        if not grantee.strip() or grantee.strip() == owner:
            raise ValueError("share with another organisation than the study's owner")
        if until is not None and until <= at:
            raise ValueError("--until must lie in the future")
        share = Share(secrets.token_hex(4), uid, owner, grantee.strip(), read_only, until, at)
        self._store.add_share(share)
        return share

    def list(self) -> list[Share]:
        return self._store.shares()

    def revoke(self, share_id: str, *, at: datetime) -> Share:
        return self._store.revoke_share(share_id.strip(), at=at)
