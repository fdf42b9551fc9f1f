"""What the trust store keeps: issued certificates, groups, enrolment tokens (pure values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from securepacs.model.identity import Permission


@dataclass(frozen=True)
class CertificateRecord:
    """One certificate issued by the CA (or the CA's own), as the trust store knows it.

    `serial` is the certificate serial number; `kind` is ``"ca"``, ``"server"`` or
    ``"client"``; `status` is ``"valid"`` or ``"revoked"``.
    """

    serial: int
    name: str
    kind: str
    fingerprint: str
    not_before: datetime
    not_after: datetime
    pem: str
    organization: str | None = None
    group: str | None = None
    ae_titles: tuple[str, ...] = ()
    status: str = "valid"
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    key_path: str | None = None
    renewed_from: int | None = None

    @property
    def is_revoked(self) -> bool:
        return self.status == "revoked"


@dataclass(frozen=True)
class Group:
    name: str
    permissions: frozenset[Permission] = field(default_factory=frozenset)


@dataclass(frozen=True)
class EnrolmentToken:
    """A one-time enrolment invitation; only the SHA-256 of its secret is stored."""

    secret_hash: str
    organization: str
    group: str
    ae_titles: tuple[str, ...]
    expires_at: datetime
    created_at: datetime
    used_at: datetime | None = None
    used_by: int | None = None


@dataclass(frozen=True)
class ImportToken:
    """A reusable STOW-RS import token (the disc viewer's, PS3.18 10.5 with RFC 6750
    bearer authentication); only the SHA-256 of its secret is stored. It stands for an
    identity of `organization` / `group` with the store permission only, until
    `expires_at` or until revoked."""

    token_id: str
    secret_hash: str
    organization: str
    group: str
    expires_at: datetime
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class TrustSnapshot:
    """Everything a server needs to decide on a peer, read in one transaction."""

    version: int
    certificates: dict[int, CertificateRecord]
    groups: dict[str, Group]
