"""Import tokens: bearer tokens (RFC 6750) that let the disc viewer store by STOW-RS.

One responsibility: issue, list, revoke and check the tokens with which a page that has
no client certificate (the disc viewer, opened from ``file://``) may store instances over
DICOMweb. A token is ``SPI1.<id>.<secret>``; the trust store keeps only the SHA-256 of
the whole token (as for enrolment invitations), with its organisation, group, expiry and
revocation. It stands for an identity of that organisation and group with the store
permission and nothing else (and only when the group itself allows store). Each use is
audited (User Authentication with the token's id), each refusal too (Security Alert).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from securepacs.errors import AccessRefused, PkiError
from securepacs.model.identity import Identity, Permission
from securepacs.model.trust import Group, ImportToken
from securepacs.services.audit_events import AuditEvents, NoAudit

__all__ = ["PREFIX", "ImportTokenPort", "ImportTokens"]

log = logging.getLogger(__name__)

PREFIX = "SPI1"


class ImportTokenPort(Protocol):
    def add_import_token(self, token: ImportToken) -> None: ...
    def import_token(self, secret_hash: str) -> ImportToken | None: ...
    def import_tokens(self) -> list[ImportToken]: ...
    def revoke_import_token(self, token_id: str, *, at: datetime) -> ImportToken: ...
    def group(self, name: str) -> Group | None: ...


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ImportTokens:
    """Import tokens of one trust store.

    Parameters
    ----------
    store : ImportTokenPort
        The trust store (:class:`securepacs.index.trust.SqlTrustStore`).
    audit : AuditEvents, optional
        Where uses and refusals go.
    clock : callable
        The current time (UTC).
    """

    def __init__(self, store: ImportTokenPort, *, audit: AuditEvents | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._audit = audit or NoAudit()
        self._clock = clock

    def issue(self, *, organization: str, group: str, valid_for: timedelta) -> str:
        """A new token (shown once: only its hash is kept).

        Raises
        ------
        PkiError
            Unknown group, a group without the store permission, or a bad validity.
        """
        found = self._store.group(group)
        if found is None:
            raise PkiError(f"no group {group!r}; create it with `securepacs ca group create`")
        if Permission.STORE not in found.permissions:
            raise PkiError(f"group {group!r} has no store permission; an import token only "
                           "stores, so its group must allow store")
        if not organization.strip():
            raise PkiError("an import token needs an organisation (--org)")
        if valid_for <= timedelta(0) or valid_for > timedelta(days=366):
            raise PkiError("an import token must expire within a year")
        token_id = secrets.token_hex(4)
        token = f"{PREFIX}.{token_id}.{secrets.token_urlsafe(32)}"
        at = self._clock()
        self._store.add_import_token(ImportToken(
            token_id=token_id, secret_hash=_hash(token), organization=organization.strip(),
            group=group, expires_at=at + valid_for, created_at=at))
        return token

    def list(self) -> list[ImportToken]:
        return self._store.import_tokens()

    def revoke(self, token_id: str) -> ImportToken:
        """Revoke by id (the second field of the token); effective on the next request."""
        return self._store.revoke_import_token(token_id, at=self._clock())

    def check(self, token: str, address: str) -> Identity:
        """The identity `token` stands for, audited; the same refusal for every failure.

        Raises
        ------
        AccessRefused
            Not a token, unknown, revoked, expired, or its group lost the store permission.
        """
        found = self._store.import_token(_hash(token)) if token.startswith(PREFIX + ".") else None
        now = self._clock()
        why = None
        if found is None:
            why = "unknown import token"
        elif found.revoked_at is not None:
            why = f"import token {found.token_id} was revoked"
        elif found.expires_at <= now:
            why = f"import token {found.token_id} expired"
        else:
            group = self._store.group(found.group)
            if group is None or Permission.STORE not in group.permissions:
                why = f"import token {found.token_id}: group {found.group} may not store"
        if why is not None or found is None:
            log.warning("import token from %s refused: %s", address, why)
            self._audit.token_refused(address=address, reason=str(why))
            raise AccessRefused("import token refused")
        identity = Identity(name=f"import-token {found.token_id}", serial=0,
                            organization=found.organization, group=found.group,
                            permissions=frozenset({Permission.STORE}))
        self._audit.authenticated(identity, address=address)
        return identity
