"""The index repository: file instances into the patient / study / series / instance
hierarchy and answer C-FIND, C-MOVE and C-GET lookups on it (PS3.4 C.6.1, C.6.2).

Matching follows PS3.4 C.2.2.2 through :mod:`securepacs.model.matching`: SQL narrows the
candidate rows with the pre-filter of :mod:`securepacs.index.sqlfilter`, then every matcher
runs in Python on the merged values of the row and the levels above it. Computed attributes
(PS3.4 C.6.1.1.3, C.6.2.1.2) are counted with one grouped query per batch of rows (see
:mod:`securepacs.index.lookup`). Database failures surface as
:class:`securepacs.errors.StorageError` with a one-line message.

The SQLAlchemy add and prune of the rows are in :mod:`securepacs.index.filing`, the
plain DB-API add in :mod:`securepacs.index.rowwriter`, the read-side select of
:class:`~securepacs.model.record.StoredInstance` in :mod:`securepacs.index.stored`, and
the mapping of database failures in :mod:`securepacs.index.sqlerrors`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Row

from securepacs.errors import ConfigError, StorageError
from securepacs.index.engine import BUSY_OFF, BUSY_ON, READ_ONLY, begin_write_polled, make_engine
from securepacs.index.filing import AddResult, _add, _columns, _Keys, _locked, _prune
from securepacs.index.groupcommit import GroupCommit, Job, lock_beside
from securepacs.index.lookup import matches, output_keywords, study_visible
from securepacs.index.rowwriter import Delegate, RowWriter
from securepacs.index.schema import (
    SCHEMA_VERSION,
    instance,
    metadata,
    schema_version,
    series,
    study,
)
from securepacs.index.sqlerrors import _retryable, _storage_error
from securepacs.index.stored import _BATCH, _chunks, _stored, _stored_select
from securepacs.model.levels import Level
from securepacs.model.query import Query
from securepacs.model.record import (
    InstanceRecord,
    StoredInstance,
)
from securepacs.model.tenancy import Visibility

_log = logging.getLogger(__name__)

#: Attempts of one add when a concurrent writer inserted the same rows first.
_ATTEMPTS = 8


class _Undo(Exception):
    """An add of a PostgreSQL fast batch failed after writing: the batch is rolled back."""


_ADDED = AddResult("added")
_DUPLICATE = AddResult("duplicate")


def _settled(done: list[tuple[Job, str]], left: list[Job]) -> list[Job]:
    """Give the committed adds of a fast transaction their results; the jobs `left`."""
    for job, outcome in done:
        job.result = _ADDED if outcome == "added" else _DUPLICATE
    return left

class SqlIndex:
    """The index of stored instances in an SQL database (SQLite or PostgreSQL).

    Safe to share between threads, and several processes may use one database: writes
    are serialized by the database and concurrent adds of the same UIDs retried.

    Parameters
    ----------
    url : str
        SQLAlchemy database URL, see :func:`securepacs.index.engine.make_engine`. Nothing
        is opened before the first call; :meth:`create_schema` creates the tables.

    Raises
    ------
    securepacs.errors.ConfigError
        The URL cannot be parsed, or names a database whose driver is not installed.
    securepacs.errors.StorageError
        The folder of an SQLite database cannot be created.
    """

    def __init__(self, url: str) -> None:
        self._writer: RowWriter | None = None
        self._raw: Any = None  # the DB-API connection of the group-commit leader
        try:
            self._engine = make_engine(url)
        except sa_exc.ArgumentError as exc:
            # the message would quote the URL, which may hold a password
            raise ConfigError(f"invalid index database URL ({type(exc).__name__})") from None
        except ImportError as exc:
            raise ConfigError(f"index database driver not installed: {exc}") from exc
        except OSError as exc:
            raise StorageError(f"cannot create the index database folder: {exc}") from exc
        sqlite = self._engine.dialect.name == "sqlite"
        self._group = GroupCommit(self._add_batch, across=lock_beside(
            self._engine.url.database) if sqlite else None)

    # -- lifecycle -------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create the tables if missing and check the schema version (idempotent).

        Raises
        ------
        securepacs.errors.StorageError
            The database holds another schema version, or cannot be reached.
        """
        for attempt in range(2):  # a concurrent creator may win the race once
            try:
                with self._engine.begin() as conn:
                    metadata.create_all(conn)
                    versions = conn.execute(sa.select(schema_version.c.version)).scalars().all()
                    if not versions:
                        conn.execute(sa.insert(schema_version).values(version=SCHEMA_VERSION))
                    elif list(versions) != [SCHEMA_VERSION]:
                        found = ", ".join(str(v) for v in versions)
                        raise StorageError(
                            f"index schema version {found}, this program needs {SCHEMA_VERSION}: "
                            "back up the data folder, then run `securepacs db migrate` "
                            "(with the same --config)")
                return
            except (sa_exc.IntegrityError, sa_exc.ProgrammingError) as exc:
                if attempt:
                    raise _storage_error(exc) from exc
            except sa_exc.SQLAlchemyError as exc:
                raise _storage_error(exc) from exc

    def close(self) -> None:
        """Close every pooled connection."""
        self._drop_raw()
        self._engine.dispose()

    # -- writing ---------------------------------------------------------------------

    def add(self, record: InstanceRecord, *, replace: bool = False,
            ready: Callable[[], object] | None = None, foreign: str = "") -> AddResult:
        """Index one stored instance, filing it under its patient, study and series.

        Missing patient, study and series rows are created; existing ones receive the
        values they lack (non-empty values are never overwritten). A study stays under the
        patient it was first filed under, and a series under its first study.

        Parameters
        ----------
        record : securepacs.model.record.InstanceRecord
            The instance's values and where its blob is.
        replace : bool
            What to do when the SOP Instance UID is already indexed: False leaves the row
            alone (``"duplicate"``), True points it at the new blob and values.

        foreign : str
            The blob key of another organisation's instance of this SOP Instance UID
            that the caller found identical (after an ``"foreign"`` outcome): the
            instance is then added for ``record.organization`` too.
        ready : callable, optional
            Called inside the transaction, before the commit: the row is committed only if
            it returns (e.g. once the blob is durable, so that both are written at once);
            what it raises aborts this add.

        Adds from concurrent threads are committed together (:mod:`securepacs.index.groupcommit`):
        one transaction, one commit for the batch; each returns once its row is committed.

        Returns
        -------
        AddResult

        Raises
        ------
        securepacs.errors.InvalidInstanceError
            A UID is missing, or a UID, PatientID or IssuerOfPatientID holds several values.
        securepacs.errors.StorageFullError
            The database ran out of space.
        securepacs.errors.StorageError
            Any other database failure (the add did not happen).
        """
        keys = _Keys.of(record)
        result: AddResult = self._group.submit((record, keys, replace, ready, foreign))
        return result

    def _add_batch(self, jobs: list[Job]) -> None:
        """Run the adds of `jobs` in one transaction, each inside a savepoint; an add that
        fails there, or a batch whose commit fails, is run again on its own.

        The common adds run first in plain DB-API statements (:meth:`_add_fast`); the rest
        go through SQLAlchemy."""
        jobs = self._add_fast(jobs)
        if not jobs:
            return
        alone = jobs
        if len(jobs) > 1:
            results: dict[int, AddResult] = {}
            try:
                with self._engine.begin() as conn:
                    for n, job in enumerate(jobs):
                        ready = job.payload[3]
                        if ready is not None:
                            try:
                                ready()
                            except Exception as exc:  # noqa: BLE001 - this add's own failure
                                job.error = exc
                                continue
                        try:
                            with conn.begin_nested():
                                record, keys, replace, _ready, foreign = job.payload
                                results[n] = _add(conn, record, keys, replace, foreign)
                        except sa_exc.DBAPIError:
                            continue  # e.g. a concurrent writer's row: retried on its own
            except sa_exc.SQLAlchemyError:
                results.clear()  # nothing of the batch was committed
            for n, result in results.items():
                jobs[n].result = result
            alone = [job for n, job in enumerate(jobs) if n not in results and job.error is None]
        for job in alone:
            try:
                job.result = self._add_one(*job.payload)
            except Exception as exc:  # noqa: BLE001 - reported to the job's caller
                job.error = exc

    def _add_fast(self, jobs: list[Job]) -> list[Job]:
        """Run what it can of `jobs` with :class:`RowWriter` in one transaction (a
        savepoint per add when there are several; PostgreSQL: :meth:`_add_fast_pg`);
        return the jobs left to the SQLAlchemy path: those it delegates, those whose
        statements failed, all of them when the transaction failed (nothing of it was
        committed then)."""
        if self._writer is None:
            self._writer = RowWriter(self._engine.dialect, _columns, _locked)
        writer = self._writer
        if writer.uid_locks is not None:
            return self._add_fast_pg(jobs, writer)
        many = len(jobs) > 1
        left: list[Job] = []
        done: list[tuple[Job, str]] = []
        try:
            if self._raw is None:
                self._raw = self._engine.raw_connection()
                # it waits for the write lock itself (until _drop_raw)
                self._raw.driver_connection.execute(BUSY_OFF)
            cursor = self._raw.cursor()
            begin_write_polled(cursor)
            writer.begin(cursor)
            for job in jobs:
                record, keys, replace, ready, foreign = job.payload
                if foreign:
                    left.append(job)
                    continue
                if many:
                    cursor.execute("SAVEPOINT add_one")
                try:
                    outcome = writer.add(cursor, record, keys, replace)
                except Exception as exc:  # noqa: BLE001 - Delegate, or the database's error
                    if not many:
                        raise
                    writer.forget()
                    cursor.execute("ROLLBACK TO SAVEPOINT add_one")
                    if not isinstance(exc, Delegate):
                        _log.debug("add %s: %s, run again on its own", keys.sop,
                                   type(exc).__name__)
                    left.append(job)
                    continue
                if ready is not None:
                    try:
                        ready()
                    except Exception as exc:  # noqa: BLE001 - this add's own failure
                        job.error = exc
                        writer.forget()
                        if not many:
                            cursor.execute("ROLLBACK")
                            cursor.close()
                            return []
                        cursor.execute("ROLLBACK TO SAVEPOINT add_one")
                        continue
                if many:
                    cursor.execute("RELEASE SAVEPOINT add_one")
                done.append((job, outcome))
            cursor.execute("COMMIT")
            cursor.close()
        except Exception as exc:  # noqa: BLE001 - the SQLAlchemy path runs them again
            return self._fast_failed(jobs, exc, broken=not isinstance(exc, Delegate))
        return _settled(done, left)

    def _add_fast_pg(self, jobs: list[Job], writer: RowWriter) -> list[Job]:
        """:meth:`_add_fast` on PostgreSQL, where every statement is a round trip: one
        statement takes the SOP Instance UID locks of the whole batch (sorted, so that two
        processes never wait on each other in a cycle), then two per add (the look-ups,
        the insert), no savepoints. An add that fails in the database or whose `ready`
        fails rolls the whole transaction back (before anything is committed); the adds
        that had not failed then go to the SQLAlchemy path, one savepoint each: a rare
        case (a concurrent writer's row, a blob that could not be written)."""
        left: list[Job] = []
        done: list[tuple[Job, str]] = []
        try:
            if self._raw is None:
                self._raw = self._engine.raw_connection()
            conn = self._raw
            cursor = conn.cursor()
            writer.lock_uids(cursor, [job.payload[1].sop for job in jobs if not job.payload[4]])
            for job in jobs:
                record, keys, replace, ready, foreign = job.payload
                if foreign:
                    left.append(job)
                    continue
                try:
                    outcome = writer.add(cursor, record, keys, replace)
                except Delegate:  # raised before it wrote anything
                    left.append(job)
                    continue
                if ready is not None:
                    try:
                        ready()
                    except Exception as exc:  # noqa: BLE001 - this add's own failure
                        job.error = exc
                        raise _Undo from exc  # its rows must go, and only the batch can
                done.append((job, outcome))
            conn.commit()
            cursor.close()
        except Exception as exc:  # noqa: BLE001 - the SQLAlchemy path runs them again
            return self._fast_failed(jobs, (exc.__cause__ or exc) if isinstance(exc, _Undo) else exc,
                                     broken=not isinstance(exc, _Undo))
        return _settled(done, left)

    def _fast_failed(self, jobs: list[Job], exc: BaseException, *, broken: bool) -> list[Job]:
        """A fast transaction that was not committed: drop its connection (`broken`:
        discard it) and leave every job that has no error of its own to the SQLAlchemy
        path."""
        _log.debug("fast add of %d instance(s) not committed: %s", len(jobs),
                   type(exc).__name__)
        self._drop_raw(broken=broken)
        return [job for job in jobs if job.error is None]

    def _drop_raw(self, *, broken: bool = False) -> None:
        """Give back (or, `broken`, discard) the fast path's connection, after rolling
        back what it has open."""
        raw, self._raw = self._raw, None
        if self._writer is not None:
            self._writer.forget()  # what it kept was read on that connection
        if raw is None:
            return
        try:
            if broken:
                raw.invalidate()
            else:
                raw.rollback()
                if self._engine.dialect.name == "sqlite":
                    raw.driver_connection.execute(BUSY_ON)
                raw.close()
        except Exception as exc:  # noqa: BLE001 - a connection on its way out
            _log.debug("index connection not closed cleanly: %s", exc)

    def _add_one(self, record: InstanceRecord, keys: _Keys, replace: bool,
                 ready: Callable[[], object] | None, foreign: str) -> AddResult:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._engine.begin() as conn:
                    result = _add(conn, record, keys, replace, foreign)
                    if ready is not None:
                        ready()
                    return result
            except sa_exc.DBAPIError as exc:
                # A concurrent writer filed the same patient/study/series/instance first
                # (or, on PostgreSQL, a deadlock was broken): look again. A conflict that
                # persists (e.g. a reused blob key) is an error.
                if attempt == _ATTEMPTS or not _retryable(exc):
                    raise _storage_error(exc) from exc
                _log.debug("add %s: conflict, attempt %d", keys.sop, attempt)
            except sa_exc.SQLAlchemyError as exc:
                raise _storage_error(exc) from exc
        raise AssertionError("unreachable")

    def delete_instance(self, sop_instance_uid: str) -> str | None:
        """Remove an instance, and its series, study and patient rows left empty.

        Returns
        -------
        str or None
            The blob key the row referred to (the caller deletes the blob), None when the
            instance was not indexed.
        """
        with self._guard(), self._engine.begin() as conn:
            row = conn.execute(
                sa.select(instance.c.id, instance.c.series_pk, instance.c.blob_key).where(
                    instance.c.sop_instance_uid == sop_instance_uid.strip()
                )
            ).first()
            if row is None:
                return None
            conn.execute(sa.delete(instance).where(instance.c.id == row.id))
            _prune(conn, row.series_pk)
            return str(row.blob_key)

    # -- reading ---------------------------------------------------------------------

    def get(self, sop_instance_uid: str, *,
            visibility: Visibility | None = None) -> StoredInstance | None:
        """The indexed instance with this SOP Instance UID the caller sees (None: every
        organisation's), or None."""
        stmt = _stored_select().where(instance.c.sop_instance_uid == sop_instance_uid.strip())
        seen = study_visible(visibility)
        if seen is not None:
            stmt = stmt.where(seen)
        stmt = stmt.order_by(instance.c.id).limit(1)
        with self._reading() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _stored(row)

    def find(self, query: Query, *, limit: int | None = None,
             visibility: Visibility | None = None,
             owners: list[str] | None = None) -> list[dict[str, str]]:
        """C-FIND: the entities at ``query.level`` that match the query's keys.

        Parameters
        ----------
        query : securepacs.model.query.Query
            The identifier; keys the index does not keep do not constrain the match.
        limit : int or None
            Return at most this many matches (the first ones in index order).
        visibility : Visibility or None
            The caller's view (docs/tenants.md), applied in SQL; None: every organisation.
        owners : list of str, optional
            Given, the owner organisation of each returned match is appended to it, in the
            order of the matches (for the audit of cross-organisation reads).

        Returns
        -------
        list of dict
            One dict per match, ordered by when the entity was first indexed: keyword ->
            value for every attribute of :data:`LEVEL_ATTRIBUTES` of the level and the
            levels above it (``""`` when absent), plus the level's
            :data:`COMPUTED_ATTRIBUTES`.

        Raises
        ------
        ValueError
            `limit` is negative.
        securepacs.errors.QueryError
            A key's value cannot be evaluated (e.g. a malformed range).
        securepacs.errors.StorageError
            The database failed.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        keywords = output_keywords(query.level)
        out: list[dict[str, str]] = []
        if limit == 0:
            return out
        batch = _BATCH if limit is None else min(_BATCH, max(limit, 32))
        with (
            self._reading() as conn,
            closing(matches(conn, query, computed_for_output=True, batch=batch,
                            visibility=visibility, owners=owners)) as found,
        ):
            for _pk, values in found:
                out.append({k: values.get(k, "") for k in keywords})
                if limit is not None and len(out) >= limit:
                    break
        return out

    def instances(self, query: Query, *,
                  visibility: Visibility | None = None) -> list[StoredInstance]:
        """C-MOVE / C-GET: every instance under the entities :meth:`find` would match for
        `visibility` (None: every organisation's).

        Returns
        -------
        list of StoredInstance
            Ordered by study, series, Instance Number (numeric, absent last), then index order.

        Raises
        ------
        securepacs.errors.QueryError
            A key's value cannot be evaluated (e.g. a malformed range).
        securepacs.errors.StorageError
            The database failed.
        """
        owner = {
            Level.PATIENT: study.c.patient_pk,
            Level.STUDY: series.c.study_pk,
            Level.SERIES: instance.c.series_pk,
            Level.IMAGE: instance.c.id,
        }[query.level]
        base = _stored_select().add_columns(
            instance.c.id, instance.c.series_pk, instance.c.instance_number, series.c.study_pk
        )
        rows: list[Row[Any]] = []
        with self._reading() as conn:
            with closing(matches(conn, query, computed_for_output=False, batch=_BATCH,
                                 visibility=visibility)) as m:
                pks = [pk for pk, _values in m]
            seen = study_visible(visibility)
            if seen is not None:  # a patient's studies: only those the caller sees
                base = base.where(seen)
            for chunk in _chunks(pks):
                rows.extend(conn.execute(base.where(owner.in_(chunk))).all())
        rows.sort(
            key=lambda r: (
                r.study_pk,
                r.series_pk,
                r.instance_number is None,
                r.instance_number or 0,
                r.id,
            )
        )
        sent: set[str] = set()
        out: list[StoredInstance] = []
        for row in rows:  # a UID two organisations hold (identical bytes) is sent once
            if row.sop_instance_uid not in sent:
                sent.add(row.sop_instance_uid)
                out.append(_stored(row))
        return out

    def study_owners(self, study_uid: str) -> list[str]:
        """The organisations holding a study with this UID (for ``share study``)."""
        stmt = (sa.select(study.c.organization).where(study.c.study_uid == study_uid.strip())
                .order_by(study.c.organization))
        with self._reading() as conn:
            return [str(org) for org in conn.execute(stmt).scalars()]

    def referenced_blob_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` an instance row refers to (the others are orphan blobs)."""
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        with self._reading() as conn:
            for chunk in _chunks(wanted):
                stmt = sa.select(instance.c.blob_key).where(instance.c.blob_key.in_(chunk))
                found.update(conn.execute(stmt).scalars())
        return found

    def count_instances(self) -> int:
        """How many instances are indexed."""
        with self._reading() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(instance)).scalar_one())

    # -- plumbing --------------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sa_exc.SQLAlchemyError as exc:
            raise _storage_error(exc) from exc

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        with self._guard(), self._engine.connect() as conn:
            conn.execution_options(**{READ_ONLY: True})
            with conn.begin():
                yield conn
