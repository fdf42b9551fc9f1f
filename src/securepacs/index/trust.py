"""The trust store: issued certificates, revocations, groups and enrolment tokens in the
index database, so that every server instance sharing the database sees every change.

A single ``trust_state`` row carries a version number bumped by every change: servers
poll it (one cheap SELECT) and reload a :class:`~securepacs.model.trust.TrustSnapshot`
only when it moves. Serial numbers (up to 159 bits, RFC 5280 4.1.2.2) are stored as hex.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from securepacs.errors import PkiError, StorageError
from securepacs.index.engine import READ_ONLY, make_engine
from securepacs.index.schema import create_tables, metadata
from securepacs.model.identity import Permission
from securepacs.model.tenancy import Share
from securepacs.model.trust import (
    CertificateRecord,
    EnrolmentToken,
    Group,
    ImportToken,
    TrustSnapshot,
)

_UTC = sa.DateTime(timezone=True)
# compared with the index's own UID and organisation columns: the same collation (schema.py)
_TEXT = sa.String().with_variant(sa.String(collation="C"), "postgresql")

trust_group = sa.Table(
    "trust_group", metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("permissions", sa.JSON, nullable=False),
)

trust_certificate = sa.Table(
    "trust_certificate", metadata,
    sa.Column("serial", sa.String, primary_key=True),
    sa.Column("name", sa.String, nullable=False, index=True),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("fingerprint", sa.String, nullable=False, unique=True),
    sa.Column("not_before", _UTC, nullable=False),
    sa.Column("not_after", _UTC, nullable=False),
    sa.Column("pem", sa.Text, nullable=False),
    sa.Column("organization", sa.String),
    sa.Column("group_name", sa.String),
    sa.Column("ae_titles", sa.JSON, nullable=False),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("revoked_at", _UTC),
    sa.Column("revocation_reason", sa.String),
    sa.Column("key_path", sa.String),
    sa.Column("renewed_from", sa.String),
)

trust_token = sa.Table(
    "trust_token", metadata,
    sa.Column("secret_hash", sa.String, primary_key=True),
    sa.Column("organization", sa.String, nullable=False),
    sa.Column("group_name", sa.String, nullable=False),
    sa.Column("ae_titles", sa.JSON, nullable=False),
    sa.Column("expires_at", _UTC, nullable=False),
    sa.Column("created_at", _UTC, nullable=False),
    sa.Column("used_at", _UTC),
    sa.Column("used_by", sa.String),
)

trust_import_token = sa.Table(
    "trust_import_token", metadata,
    sa.Column("token_id", sa.String, primary_key=True),
    sa.Column("secret_hash", sa.String, nullable=False, unique=True),
    sa.Column("organization", sa.String, nullable=False),
    sa.Column("group_name", sa.String, nullable=False),
    sa.Column("expires_at", _UTC, nullable=False),
    sa.Column("created_at", _UTC, nullable=False),
    sa.Column("revoked_at", _UTC),
)

trust_share = sa.Table(
    "trust_share", metadata,
    sa.Column("share_id", sa.String, primary_key=True),
    sa.Column("study_uid", _TEXT, nullable=False),
    sa.Column("owner", _TEXT, nullable=False),
    sa.Column("grantee", _TEXT, nullable=False),
    sa.Column("read_only", sa.Boolean, nullable=False),
    sa.Column("until", _UTC),
    sa.Column("created_at", _UTC, nullable=False),
    sa.Column("revoked_at", _UTC),
    # the visibility sub-query: the grantee's shares of one study
    sa.Index(None, "grantee", "study_uid"),
)

trust_state = sa.Table(
    "trust_state", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("crl_number", sa.BigInteger, nullable=False),
)

TABLES = [trust_group, trust_certificate, trust_token, trust_import_token, trust_share,
          trust_state]


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything here is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _record(row: Any) -> CertificateRecord:
    return CertificateRecord(
        serial=int(row.serial, 16), name=row.name, kind=row.kind, fingerprint=row.fingerprint,
        not_before=_aware(row.not_before), not_after=_aware(row.not_after),  # type: ignore[arg-type]
        pem=row.pem, organization=row.organization, group=row.group_name,
        ae_titles=tuple(row.ae_titles or ()), status=row.status,
        revoked_at=_aware(row.revoked_at), revocation_reason=row.revocation_reason,
        key_path=row.key_path,
        renewed_from=int(row.renewed_from, 16) if row.renewed_from else None)


def _token(row: Any) -> EnrolmentToken:
    return EnrolmentToken(
        secret_hash=row.secret_hash, organization=row.organization, group=row.group_name,
        ae_titles=tuple(row.ae_titles or ()), expires_at=_aware(row.expires_at),  # type: ignore[arg-type]
        created_at=_aware(row.created_at), used_at=_aware(row.used_at),  # type: ignore[arg-type]
        used_by=int(row.used_by, 16) if row.used_by else None)


class SqlTrustStore:
    """Trust records in the index database (SQLite or PostgreSQL).

    Parameters
    ----------
    url : str
        The same database URL as the index.
    """

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)

    def create_schema(self) -> None:
        """Create the trust tables if missing (idempotent, safe against a concurrent creator)."""
        create_tables(self._engine, TABLES, trust_state, {"version": 1, "crl_number": 0}, what="trust store")

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        try:
            with self._engine.begin() as conn:
                yield conn
                conn.execute(sa.update(trust_state).where(trust_state.c.id == 1)
                             .values(version=trust_state.c.version + 1))
        except sa_exc.IntegrityError as exc:
            raise PkiError("trust store: that record already exists") from exc
        except sa_exc.SQLAlchemyError as exc:
            raise StorageError(f"trust store: {type(exc).__name__}: "
                               f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}") from exc

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                with conn.begin():
                    yield conn
        except sa_exc.SQLAlchemyError as exc:
            raise StorageError(f"trust store: {type(exc).__name__}") from exc

    # -- version ------------------------------------------------------------------------
    def version(self) -> int:
        """The change counter: it moves on every write."""
        with self._read() as conn:
            return int(conn.execute(sa.select(trust_state.c.version)).scalar_one())

    def snapshot(self) -> TrustSnapshot:
        """Every certificate and group, read in one transaction, with its version."""
        with self._read() as conn:
            version = int(conn.execute(sa.select(trust_state.c.version)).scalar_one())
            certs = {r.serial: r for r in map(_record, conn.execute(sa.select(trust_certificate)))}
            groups = {
                row.name: Group(row.name, Permission.parse_list(list(row.permissions)))
                for row in conn.execute(sa.select(trust_group))
            }
        return TrustSnapshot(version, certs, groups)

    # -- groups -------------------------------------------------------------------------
    def put_group(self, group: Group) -> None:
        """Create or update a group's permissions."""
        perms = sorted(p.value for p in group.permissions)
        with self._write() as conn:
            found = conn.execute(sa.select(trust_group.c.name)
                                 .where(trust_group.c.name == group.name)).first()
            if found:
                conn.execute(sa.update(trust_group).where(trust_group.c.name == group.name)
                             .values(permissions=perms))
            else:
                conn.execute(sa.insert(trust_group).values(name=group.name, permissions=perms))

    def group(self, name: str) -> Group | None:
        with self._read() as conn:
            row = conn.execute(sa.select(trust_group).where(trust_group.c.name == name)).first()
        return Group(row.name, Permission.parse_list(list(row.permissions))) if row else None

    def groups(self) -> list[Group]:
        with self._read() as conn:
            rows = conn.execute(sa.select(trust_group).order_by(trust_group.c.name)).all()
        return [Group(r.name, Permission.parse_list(list(r.permissions))) for r in rows]

    # -- certificates -------------------------------------------------------------------
    def add_certificate(self, record: CertificateRecord) -> None:
        with self._write() as conn:
            conn.execute(sa.insert(trust_certificate).values(
                serial=f"{record.serial:x}", name=record.name, kind=record.kind,
                fingerprint=record.fingerprint, not_before=record.not_before,
                not_after=record.not_after, pem=record.pem, organization=record.organization,
                group_name=record.group, ae_titles=list(record.ae_titles), status=record.status,
                revoked_at=record.revoked_at, revocation_reason=record.revocation_reason,
                key_path=record.key_path,
                renewed_from=f"{record.renewed_from:x}" if record.renewed_from else None))

    def certificate(self, serial: int) -> CertificateRecord | None:
        with self._read() as conn:
            row = conn.execute(sa.select(trust_certificate)
                               .where(trust_certificate.c.serial == f"{serial:x}")).first()
        return _record(row) if row else None

    def certificates(self, *, name: str | None = None) -> list[CertificateRecord]:
        query = sa.select(trust_certificate).order_by(trust_certificate.c.not_before)
        if name is not None:
            query = query.where(trust_certificate.c.name == name)
        with self._read() as conn:
            return [_record(r) for r in conn.execute(query)]

    def revoke(self, serial: int, *, reason: str, at: datetime) -> CertificateRecord:
        """Mark a certificate revoked; returns the updated record.

        Raises
        ------
        PkiError
            Unknown serial, or already revoked.
        """
        key = f"{serial:x}"
        with self._write() as conn:
            row = conn.execute(sa.select(trust_certificate)
                               .where(trust_certificate.c.serial == key)).first()
            if row is None:
                raise PkiError(f"no certificate with serial {key}")
            if row.status == "revoked":
                raise PkiError(f"certificate {row.name} (serial {key}) is already revoked")
            conn.execute(sa.update(trust_certificate).where(trust_certificate.c.serial == key)
                         .values(status="revoked", revoked_at=at, revocation_reason=reason))
            conn.execute(sa.update(trust_state).where(trust_state.c.id == 1)
                         .values(crl_number=trust_state.c.crl_number + 1))
            row = conn.execute(sa.select(trust_certificate)
                               .where(trust_certificate.c.serial == key)).first()
        return _record(row)

    def next_crl_number(self) -> int:
        with self._write() as conn:
            conn.execute(sa.update(trust_state).where(trust_state.c.id == 1)
                         .values(crl_number=trust_state.c.crl_number + 1))
            return int(conn.execute(sa.select(trust_state.c.crl_number)).scalar_one())

    # -- enrolment tokens ---------------------------------------------------------------
    def add_token(self, token: EnrolmentToken) -> None:
        with self._write() as conn:
            conn.execute(sa.insert(trust_token).values(
                secret_hash=token.secret_hash, organization=token.organization,
                group_name=token.group, ae_titles=list(token.ae_titles),
                expires_at=token.expires_at, created_at=token.created_at))

    def redeem_token(self, secret_hash: str, *, at: datetime) -> EnrolmentToken:
        """Mark a token used, atomically (single use even with several servers).

        Raises
        ------
        PkiError
            Unknown, already used or expired token (one line each, for the client).
        """
        with self._write() as conn:
            row = conn.execute(sa.select(trust_token)
                               .where(trust_token.c.secret_hash == secret_hash)).first()
            if row is None:
                raise PkiError("enrolment token not recognised")
            token = _token(row)
            if token.used_at is not None:
                raise PkiError("enrolment token already used")
            if token.expires_at <= at:
                raise PkiError("enrolment token expired")
            done = conn.execute(sa.update(trust_token)
                                .where(trust_token.c.secret_hash == secret_hash,
                                       trust_token.c.used_at.is_(None))
                                .values(used_at=at))
            if done.rowcount != 1:
                raise PkiError("enrolment token already used")
        return token

    def mark_token_used_by(self, secret_hash: str, serial: int) -> None:
        with self._write() as conn:
            conn.execute(sa.update(trust_token).where(trust_token.c.secret_hash == secret_hash)
                         .values(used_by=f"{serial:x}"))

    # -- shares (organisations as tenants, docs/tenants.md) ----------------------------------
    def add_share(self, share: Share) -> None:
        """Record a share; every server sees it at once (the index query reads this
        table), and the change counter moves as for any trust change."""
        with self._write() as conn:
            conn.execute(sa.insert(trust_share).values(
                share_id=share.share_id, study_uid=share.study_uid, owner=share.owner,
                grantee=share.grantee, read_only=share.read_only, until=share.until,
                created_at=share.created_at, revoked_at=share.revoked_at))

    def shares(self) -> list[Share]:
        with self._read() as conn:
            rows = conn.execute(sa.select(trust_share).order_by(trust_share.c.created_at,
                                                                trust_share.c.share_id)).all()
        return [_share(r) for r in rows]

    def revoke_share(self, share_id: str, *, at: datetime) -> Share:
        """End a share now.

        Raises
        ------
        PkiError
            Unknown id, or already revoked.
        """
        with self._write() as conn:
            row = _revoke(conn, trust_share.c.share_id, share_id, "share", at=at)
        return _share(row)

    # -- import tokens (STOW-RS bearer tokens) -------------------------------------------------
    def add_import_token(self, token: ImportToken) -> None:
        with self._write() as conn:
            conn.execute(sa.insert(trust_import_token).values(
                token_id=token.token_id, secret_hash=token.secret_hash,
                organization=token.organization, group_name=token.group,
                expires_at=token.expires_at, created_at=token.created_at))

    def import_token(self, secret_hash: str) -> ImportToken | None:
        """The import token whose secret hashes to `secret_hash`, if any."""
        with self._read() as conn:
            row = conn.execute(sa.select(trust_import_token)
                               .where(trust_import_token.c.secret_hash == secret_hash)).first()
        return _import_token(row) if row else None

    def import_tokens(self) -> list[ImportToken]:
        with self._read() as conn:
            rows = conn.execute(sa.select(trust_import_token)
                                .order_by(trust_import_token.c.created_at)).all()
        return [_import_token(r) for r in rows]

    def revoke_import_token(self, token_id: str, *, at: datetime) -> ImportToken:
        """Revoke an import token by its id.

        Raises
        ------
        PkiError
            Unknown id, or already revoked.
        """
        with self._write() as conn:
            row = _revoke(conn, trust_import_token.c.token_id, token_id, "import token", at=at)
        return _import_token(row)


def _revoke(conn: sa.Connection, key: sa.Column[Any], value: str, what: str, *,
            at: datetime) -> sa.Row[Any]:
    """Set ``revoked_at`` on the row whose `key` is `value` (a share or an import token) and
    return the row as revoked; PkiError when there is none or it is already revoked."""
    table = key.table
    row = conn.execute(sa.select(table).where(key == value)).first()
    if row is None:
        raise PkiError(f"no {what} {value!r}")
    if row.revoked_at is not None:
        raise PkiError(f"{what} {value} is already revoked")
    conn.execute(sa.update(table).where(key == value).values(revoked_at=at))
    revoked = conn.execute(sa.select(table).where(key == value)).first()
    assert revoked is not None
    return revoked


def _share(row: Any) -> Share:
    return Share(share_id=row.share_id, study_uid=row.study_uid, owner=row.owner,
                 grantee=row.grantee, read_only=bool(row.read_only), until=_aware(row.until),
                 created_at=_aware(row.created_at),  # type: ignore[arg-type]
                 revoked_at=_aware(row.revoked_at))


def _import_token(row: Any) -> ImportToken:
    return ImportToken(
        token_id=row.token_id, secret_hash=row.secret_hash, organization=row.organization,
        group=row.group_name, expires_at=_aware(row.expires_at),  # type: ignore[arg-type]
        created_at=_aware(row.created_at),  # type: ignore[arg-type]
        revoked_at=_aware(row.revoked_at))
