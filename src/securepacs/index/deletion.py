"""Remove a study, series or instance from the index, in one transaction that also lists
its blobs for deletion.

The deletion order (docs/deletion.md): the rows go first, in one transaction, so that
nothing is findable once it commits; the same transaction writes the blob keys of the
removed instances into ``blob_pending_delete``. The caller deletes those blobs after the
commit and then forgets the keys (:meth:`SqlDeletion.forget`); a crash in between leaves
the keys listed, and the start-up sweep (:meth:`SqlDeletion.pending`) finishes them.
Only keys listed there are ever deleted this way: a blob that a concurrent ingest is
writing has a fresh key no row and no list names yet.

Concurrency (PostgreSQL): the study row is locked first (``SELECT ... FOR UPDATE``), the
lock every add into that study also takes (:mod:`securepacs.index.filing`), and the
rows under it are read again under that lock: an add that committed first is deleted
with the study; an add that waits finds no study afterwards and files a fresh one. A
deadlock or serialization failure is retried. SQLite runs one write transaction at a time.
Series and study rows left empty are removed, and a patient left without a study; a study
that keeps series gets its Modalities in Study recomputed. When the study row goes, the
same transaction revokes the active shares of that study (``trust_share``, owner the
deleting organisation): a study stored again later under the same UID is not shared by
them (docs/tenants.md).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from securepacs.errors import ConfigError
from securepacs.index.engine import READ_ONLY, make_engine
from securepacs.index.schema import (
    blob_pending_delete,
    blob_trash,
    instance,
    patient,
    series,
    study,
)
from securepacs.index.sqlerrors import _retryable, _storage_error
from securepacs.index.trust import trust_share, trust_state
from securepacs.model.deletion import DeletionTarget, Removal, Trashed
from securepacs.model.levels import Level

__all__ = ["AmbiguousOwner", "SqlDeletion"]

_TRASH_COLUMNS = (blob_trash.c.blob_key, blob_trash.c.organization, blob_trash.c.study_uid,
                  blob_trash.c.patient_id, blob_trash.c.sop_class_uid, blob_trash.c.purge_at)

_ATTEMPTS = 8
_CHUNK = 500


class AmbiguousOwner(ValueError):
    """Several organisations hold the named entity and none was chosen (operator form)."""

    def __init__(self, target: DeletionTarget, owners: list[str]) -> None:
        super().__init__(f"{target.describe()} is held by several organisations "
                         f"({', '.join(owners)}): name one with --org")
        self.owners = owners


class SqlDeletion:
    """Deletion on the index database at `url` (its own connection pool).

    Raises
    ------
    ConfigError
        The URL cannot be parsed or its driver is missing.
    """

    def __init__(self, url: str) -> None:
        try:
            self._engine = make_engine(url)
        except sa_exc.ArgumentError:
            raise ConfigError("invalid index database URL") from None
        except ImportError as exc:
            raise ConfigError(f"index database driver not installed: {exc}") from exc

    def close(self) -> None:
        self._engine.dispose()

    # -- finding ---------------------------------------------------------------------
    def find(self, target: DeletionTarget, *,
             organizations: Collection[str] | None) -> list[Removal]:
        """What deleting `target` would remove, one summary per holding organisation among
        `organizations` (None: any), without its blob keys; [] when nothing is held."""
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                with conn.begin():
                    return [self._summary(conn, target, row, lock=False, keys=False)
                            for row in _candidates(conn, target, organizations)]
        except sa_exc.SQLAlchemyError as exc:
            raise _storage_error(exc) from exc

    # -- removing --------------------------------------------------------------------
    def remove(self, target: DeletionTarget, *, organizations: Collection[str] | None,
               keep_until: datetime | None = None) -> Removal | None:
        """Remove `target`'s rows (those of the one organisation among `organizations`
        that holds it; None: any) and list its blobs, in one transaction: for deletion
        now, or, with `keep_until`, in the trash until then (the blobs are kept).

        Returns
        -------
        Removal or None
            None when no such entity is held by those organisations.

        Raises
        ------
        AmbiguousOwner
            Several of `organizations` hold it.
        StorageError
            The database failed (nothing was removed).
        """
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._engine.begin() as conn:
                    rows = _candidates(conn, target, organizations)
                    if not rows:
                        return None
                    if len({r.organization for r in rows}) > 1:
                        raise AmbiguousOwner(target, sorted({str(r.organization) for r in rows}))
                    removal = self._summary(conn, target, rows[0], lock=True, keys=True)
                    if removal is None:
                        continue  # removed by a concurrent deletion: look again
                    revoked = _drop(conn, target, rows[0], removal, keep_until)
                    return replace(removal, kept_until=keep_until, shares_revoked=revoked)
            except sa_exc.DBAPIError as exc:
                if attempt == _ATTEMPTS or not _retryable(exc):
                    raise _storage_error(exc) from exc
            except sa_exc.SQLAlchemyError as exc:
                raise _storage_error(exc) from exc
        return None

    def _summary(self, conn: sa.Connection, target: DeletionTarget, row: Any, *, lock: bool,
                 keys: bool) -> Any:
        stmt = sa.select(study.c.id, study.c.study_uid, study.c.patient_pk).where(
            study.c.id == row.study_pk)
        st = conn.execute(stmt.with_for_update() if lock else stmt).first()
        if st is None:
            return None
        pt = conn.execute(sa.select(patient.c.patient_id, patient.c.attrs)
                          .where(patient.c.id == st.patient_pk)).first()
        name = str(((pt.attrs if pt is not None else None) or {}).get("PatientName") or "")
        items = conn.execute(_instances_of(target, row)).all()
        counts: dict[str, int] = {}
        for item in items:
            counts[item.sop_class_uid] = counts.get(item.sop_class_uid, 0) + 1
        gone = target.level is Level.STUDY
        if target.level is not Level.STUDY:
            others = conn.execute(sa.select(sa.func.count()).select_from(
                instance.join(series)).where(series.c.study_pk == st.id)).scalar_one()
            gone = int(others) <= len(items)
        return Removal(target, str(row.organization),
                       str(pt.patient_id if pt is not None else ""),
                       name.strip(),
                       str(st.study_uid), gone, len(items), tuple(sorted(counts.items())),
                       tuple(str(i.blob_key) for i in items) if keys else ())

    # -- the trash -------------------------------------------------------------------
    def trashed(self, study_uid: str, *, organizations: Collection[str] | None) -> list[Trashed]:
        """The trashed instances of the study `study_uid` (of `organizations`; None: any)."""
        stmt = sa.select(*_TRASH_COLUMNS).where(blob_trash.c.study_uid == study_uid.strip())
        if organizations is not None:
            stmt = stmt.where(blob_trash.c.organization.in_(sorted(organizations)))
        return self._trash_rows(stmt.order_by(blob_trash.c.organization, blob_trash.c.blob_key))

    def trashed_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` are in the trash (kept: not orphans)."""
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                with conn.begin():
                    for start in range(0, len(wanted), _CHUNK):
                        found.update(str(k) for k in conn.execute(
                            sa.select(blob_trash.c.blob_key).where(
                                blob_trash.c.blob_key.in_(wanted[start:start + _CHUNK])))
                            .scalars())
        except sa_exc.SQLAlchemyError as exc:
            raise _storage_error(exc) from exc
        return found

    def untrash(self, keys: Iterable[str]) -> None:
        """Take `keys` out of the trash (restored: an instance row refers to each again)."""
        self._drop_keys(blob_trash, keys)

    def expire(self, now: datetime, *, limit: int = 10_000) -> list[Trashed]:
        """Move up to `limit` trash entries whose time is over to the pending list (one
        transaction); returns them (the caller deletes their blobs and audits)."""
        stmt = (sa.select(*_TRASH_COLUMNS).where(blob_trash.c.purge_at <= now)
                .order_by(blob_trash.c.purge_at).limit(limit))
        try:
            with self._engine.begin() as conn:
                rows = [_trashed(r) for r in conn.execute(stmt.with_for_update())]
                keys = [r.blob_key for r in rows]
                for start in range(0, len(keys), _CHUNK):
                    chunk = keys[start:start + _CHUNK]
                    conn.execute(sa.insert(blob_pending_delete),
                                 [{"blob_key": k, "queued_at": now} for k in chunk])
                    conn.execute(sa.delete(blob_trash).where(blob_trash.c.blob_key.in_(chunk)))
                return rows
        except sa_exc.SQLAlchemyError as exc:
            raise _storage_error(exc) from exc

    def _trash_rows(self, stmt: Any) -> list[Trashed]:
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                with conn.begin():
                    return [_trashed(r) for r in conn.execute(stmt)]
        except sa_exc.SQLAlchemyError as exc:
            raise _storage_error(exc) from exc

    # -- the blobs' side -------------------------------------------------------------
    def pending(self, limit: int = _CHUNK) -> list[str]:
        """Up to `limit` blob keys whose rows a deletion removed (oldest first)."""
        stmt = (sa.select(blob_pending_delete.c.blob_key)
                .order_by(blob_pending_delete.c.queued_at, blob_pending_delete.c.blob_key)
                .limit(limit))
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                with conn.begin():
                    return [str(k) for k in conn.execute(stmt).scalars()]
        except sa_exc.SQLAlchemyError as exc:
            raise _storage_error(exc) from exc

    def forget(self, keys: Iterable[str]) -> None:
        """Drop `keys` from the pending list (their blobs are deleted)."""
        self._drop_keys(blob_pending_delete, keys)

    def _drop_keys(self, table: sa.Table, keys: Iterable[str]) -> None:
        """Delete the rows of `table` (keyed by ``blob_key``) for `keys`, in one transaction."""
        wanted = list(dict.fromkeys(keys))
        try:
            with self._engine.begin() as conn:
                for start in range(0, len(wanted), _CHUNK):
                    conn.execute(sa.delete(table).where(
                        table.c.blob_key.in_(wanted[start:start + _CHUNK])))
        except sa_exc.SQLAlchemyError as exc:
            raise _storage_error(exc) from exc


def _candidates(conn: sa.Connection, target: DeletionTarget,
                organizations: Collection[str] | None) -> list[Any]:
    """The rows of the target's level (with ``study_pk``, ``organization`` and the row's
    own ``id``) held by `organizations`, checked against the UIDs above it."""
    stmt: Any
    if target.level is Level.STUDY:
        stmt = sa.select(study.c.id, study.c.id.label("study_pk"), study.c.organization).where(
            study.c.study_uid == target.uid)
        table = study
    elif target.level is Level.SERIES:
        stmt = (sa.select(series.c.id, series.c.study_pk, series.c.organization)
                .select_from(series.join(study))
                .where(series.c.series_uid == target.uid))
        table = series
    else:
        stmt = (sa.select(instance.c.id, series.c.study_pk, instance.c.organization,
                          instance.c.series_pk)
                .select_from(instance.join(series).join(study))
                .where(instance.c.sop_instance_uid == target.uid))
        table = instance
        if target.series_uid is not None:
            stmt = stmt.where(series.c.series_uid == target.series_uid)
    if target.study_uid is not None and target.level is not Level.STUDY:
        stmt = stmt.where(study.c.study_uid == target.study_uid)
    if organizations is not None:
        if not organizations:
            return []
        stmt = stmt.where(table.c.organization.in_(sorted(organizations)))
    return list(conn.execute(stmt.order_by(table.c.organization)).all())


def _instances_of(target: DeletionTarget, row: Any) -> sa.Select[Any]:
    cols = (instance.c.id, instance.c.blob_key, instance.c.sop_class_uid, instance.c.series_pk)
    if target.level is Level.STUDY:
        return (sa.select(*cols).select_from(instance.join(series))
                .where(series.c.study_pk == row.id))
    if target.level is Level.SERIES:
        return sa.select(*cols).where(instance.c.series_pk == row.id)
    return sa.select(*cols).where(instance.c.id == row.id)


def _trashed(row: Any) -> Trashed:
    return Trashed(str(row.blob_key), str(row.organization), str(row.study_uid),
                   str(row.patient_id), str(row.sop_class_uid), row.purge_at)


def _drop(conn: sa.Connection, target: DeletionTarget, row: Any, removal: Removal,
          keep_until: datetime | None) -> int:
    """Delete the rows of `removal` and list its blobs (for deletion, or in the trash until
    `keep_until`); prune what is left empty; revoke the shares of a study that went.
    Returns how many shares were revoked."""
    now = datetime.now(UTC)
    if keep_until is None:
        keys = list(removal.blob_keys)
        for start in range(0, len(keys), _CHUNK):
            conn.execute(sa.insert(blob_pending_delete),
                         [{"blob_key": k, "queued_at": now} for k in keys[start:start + _CHUNK]])
    else:
        items = conn.execute(_instances_of(target, row)).all()
        rows = [{"blob_key": str(i.blob_key), "organization": removal.organization,
                 "study_uid": removal.study_uid, "patient_id": removal.patient_id,
                 "sop_class_uid": str(i.sop_class_uid), "deleted_at": now,
                 "purge_at": keep_until} for i in items]
        for start in range(0, len(rows), _CHUNK):
            conn.execute(sa.insert(blob_trash), rows[start:start + _CHUNK])
    study_pk = row.study_pk
    if target.level is Level.STUDY:
        series_pks = sa.select(series.c.id).where(series.c.study_pk == study_pk)
        conn.execute(sa.delete(instance).where(instance.c.series_pk.in_(series_pks)))
        conn.execute(sa.delete(series).where(series.c.study_pk == study_pk))
    elif target.level is Level.SERIES:
        conn.execute(sa.delete(instance).where(instance.c.series_pk == row.id))
        conn.execute(sa.delete(series).where(series.c.id == row.id))
    else:
        conn.execute(sa.delete(instance).where(instance.c.id == row.id))
        if conn.execute(sa.select(instance.c.id).where(
                instance.c.series_pk == row.series_pk).limit(1)).first() is None:
            conn.execute(sa.delete(series).where(series.c.id == row.series_pk))
    if not _prune_study(conn, study_pk):
        return 0
    return _revoke_shares(conn, removal, at=now)


def _revoke_shares(conn: sa.Connection, removal: Removal, *, at: datetime) -> int:
    """Revoke the active shares of the deleted study (its owner's); moves the trust
    store's change counter as every trust change does."""
    share = trust_share.c
    done = conn.execute(sa.update(trust_share).where(
        share.study_uid == removal.study_uid, share.owner == removal.organization,
        share.revoked_at.is_(None)).values(revoked_at=at))
    count = int(done.rowcount or 0)
    if count:
        conn.execute(sa.update(trust_state).where(trust_state.c.id == 1)
                     .values(version=trust_state.c.version + 1))
    return count


def _prune_study(conn: sa.Connection, study_pk: int) -> bool:
    """Delete the study if no series is left (and its patient if it has no study left);
    otherwise recompute its modalities from the series that remain. True when the study
    row went."""
    left = conn.execute(sa.select(series.c.attrs).where(series.c.study_pk == study_pk)).all()
    if left:
        modalities = sorted({m.strip() for r in left
                             for m in str((r.attrs or {}).get("Modality") or "").split("\\")
                             if m.strip()})
        conn.execute(sa.update(study).where(study.c.id == study_pk)
                     .values(modalities="\\".join(modalities)))
        return False
    patient_pk = conn.execute(sa.select(study.c.patient_pk).where(study.c.id == study_pk)).scalar()
    conn.execute(sa.delete(study).where(study.c.id == study_pk))
    if patient_pk is not None and conn.execute(sa.select(study.c.id).where(
            study.c.patient_pk == patient_pk).limit(1)).first() is None:
        conn.execute(sa.delete(patient).where(patient.c.id == patient_pk))
    return True
