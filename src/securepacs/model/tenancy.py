"""Organisations as tenants: what one caller may see of the archive (pure values).

Every stored instance belongs to one organisation (the storing identity's). A caller sees
the studies its own organisation owns, the studies shared with it (until the share ends or
is revoked), or every study when its group carries the ``cross_org`` permission (or when
trust comes from files, which has no organisations). The index applies a
:class:`Visibility` in SQL; the service layer (:mod:`securepacs.services.tenancy`) is the
one place that makes one from an identity. See docs/tenants.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class Visibility:
    """The part of the archive one caller sees.

    Attributes
    ----------
    organization : str
        The caller's organisation.
    everything : bool
        True: no tenant filter (``cross_org``, or trust from files).
    retrieve : bool
        True for a retrieve (C-GET, C-MOVE, WADO-RS, media): read-only shares do not count.
    at : datetime
        The moment shares are evaluated at (a share's ``until`` is exclusive).
    """

    organization: str
    everything: bool = False
    retrieve: bool = False
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def all(cls) -> Visibility:
        """Everything (the local operator, tests, and trust from files)."""
        return cls(organization="", everything=True)

    def for_retrieve(self) -> Visibility:
        """The same caller, retrieving (read-only shares no longer count)."""
        return Visibility(self.organization, self.everything, True, self.at)


@dataclass(frozen=True)
class Share:
    """One study shared by its owner organisation with another.

    Attributes
    ----------
    share_id : str
        Short identifier, for ``share revoke``.
    study_uid : str
    owner : str
        The organisation that owns the study (the share covers that organisation's study
        of this UID only).
    grantee : str
        The organisation that gains sight of it.
    read_only : bool
        True: found and viewed, never retrieved (C-GET, C-MOVE, WADO-RS, media).
    until : datetime or None
        The end of the share (exclusive); None: until revoked.
    created_at : datetime
    revoked_at : datetime or None
    """

    share_id: str
    study_uid: str
    owner: str
    grantee: str
    read_only: bool
    until: datetime | None
    created_at: datetime
    revoked_at: datetime | None = None

    def active(self, at: datetime) -> bool:
        """In force at `at`."""
        return self.revoked_at is None and (self.until is None or at < self.until)
