"""The add of new instances in plain DB-API statements: the ingest hot path of the index.

The same statements as :mod:`securepacs.index.filing` (find or create the patient,
study and series rows, fill the values they lack, insert the instance row; PS3.4 C.6.1.1
hierarchy), compiled once per database by SQLAlchemy, then run on one DB-API connection
that the group-commit leader (:mod:`securepacs.index.groupcommit`) keeps for its batches:
per image no SQLAlchemy execution context, result object, cache look-up nor pool
check-out, only ``cursor.execute`` with parameters converted by SQLAlchemy's own bind
processors (JSON, time stamps), so the rows are the ones SQLAlchemy would write.

Only the common case runs here: a new instance, or a duplicate left alone. Anything else
(a replaced instance, a SOP Instance UID another organisation holds) raises
:class:`Delegate`, and the repository runs that add through SQLAlchemy as before; so
does every add whose batch failed here, with its retries and error messages.

Known series (SQLite): consecutive images of one series find their series, study and
patient rows in memory instead of reading them again. The rows kept are those this
connection read inside a write transaction; they are trusted only while nobody else has
written to the database: ``PRAGMA data_version`` (read once per transaction, after
``BEGIN IMMEDIATE`` took the write lock) changes whenever another connection, of this
process or another, commits (a deletion, an add by the SQLAlchemy path, another worker,
the audit writer), and then every row kept is forgotten. Writes of this connection to
patient, study or series rows (a new row, a value filled in, a modality added) forget
them too, and so does any rollback. So a row kept is always the row in the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from securepacs.index.schema import instance, patient, series, study
from securepacs.model.levels import Level
from securepacs.model.record import InstanceRecord

_log = logging.getLogger("securepacs.index.repository")


class Delegate(Exception):
    """This add is not the common case: run it through the SQLAlchemy path."""


class _Statement:
    """One statement compiled for a dialect, with its bind and result processors."""

    def __init__(self, statement: Any, dialect: sa.Dialect,
                 keys: Sequence[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys) if keys else None)
        self.sql: str = compiled.string
        self.positional: bool = bool(compiled.positional)
        self.names: list[str] = list(compiled.positiontup or []) if self.positional else []
        processors: Mapping[str, Any] = getattr(compiled, "_bind_processors", {})
        self.processors: dict[str, Callable[[Any], Any]] = {
            k: v for k, v in processors.items() if v is not None}
        #: (name, bind processor or None) of each positional parameter, in order
        self._plan = [(n, self.processors.get(n)) for n in self.names]
        self.columns: list[str] = []
        self.results: list[Callable[[Any], Any] | None] = []
        if isinstance(statement, sa.Select):
            for column in statement.selected_columns:
                self.columns.append(column.name)
                self.results.append(column.type._cached_result_processor(dialect, None))

    def params(self, values: Mapping[str, Any]) -> Any:
        if self.positional:
            return tuple([values[n] if p is None else p(values[n]) for n, p in self._plan])
        procs = self.processors
        return {k: procs[k](v) if k in procs else v for k, v in values.items()}

    def one(self, cursor: Any, values: Mapping[str, Any]) -> dict[str, Any] | None:
        cursor.execute(self.sql, self.params(values))
        row = cursor.fetchone()
        if row is None:
            return None
        return {name: (proc(value) if proc is not None else value)
                for name, proc, value in zip(self.columns, self.results, row, strict=True)}

    def run(self, cursor: Any, values: Mapping[str, Any]) -> Any:
        cursor.execute(self.sql, self.params(values))
        return cursor


#: PostgreSQL: adds of one SOP Instance UID run one at a time, whatever their
#: organisation, so that the same-UID rule (docs/tenants.md) sees a concurrent add's
#: committed row; held until commit. SQLite needs none (BEGIN IMMEDIATE: one writer).
UID_LOCK = sa.text("SELECT pg_advisory_xact_lock(1397770581, hashtext(:v))")

#: How many series' rows one connection keeps (the oldest goes first).
_KNOWN_SERIES = 64


#: PostgreSQL: UID_LOCK of several UIDs at once, taken in the order of the array.
UID_LOCKS = sa.text("SELECT pg_advisory_xact_lock(1397770581, hashtext(u.v)) "
                    "FROM unnest(CAST(:v AS text[])) WITH ORDINALITY AS u(v, n) ORDER BY u.n")


class RowWriter:
    """The statements of the common add for one engine's dialect.

    Parameters
    ----------
    dialect : sqlalchemy.Dialect
        The index engine's.
    columns : callable
        ``(table, attrs) -> column values`` of a row (the repository's ``_columns``).
    locked : callable
        ``(table, *where) -> select``, locking the row where the database locks rows.
    """

    def __init__(self, dialect: sa.Dialect,
                 columns: Callable[[sa.Table, Mapping[str, str]], dict[str, Any]],
                 locked: Callable[..., Any]) -> None:
        self._columns = columns
        b = sa.bindparam

        def compile_(statement: Any, keys: Sequence[str] | None = None) -> _Statement:
            return _Statement(statement, dialect, keys)

        self.instance_by_uid = compile_(
            sa.select(instance.c.id, instance.c.organization)
            .where(instance.c.sop_instance_uid == b("v"))
            .order_by((instance.c.organization == b("org")).desc(), instance.c.id))
        # the common case, a series seen before: its row, its study's and its patient's in
        # one statement (the same rows, locked alike, as the repository's three look-ups)
        hierarchy = (
            sa.select(*(c.label(f"se_{c.name}") for c in series.c),
                      *(c.label(f"st_{c.name}") for c in study.c),
                      *(c.label(f"pt_{c.name}") for c in patient.c))
            .select_from(series.join(study, study.c.id == series.c.study_pk)
                         .join(patient, patient.c.id == study.c.patient_pk))
            .where(series.c.series_uid == b("v"), series.c.organization == b("org"))
            .with_for_update())
        self.hierarchy_by_series = compile_(hierarchy)
        # PostgreSQL, where each statement is a round trip: the same, with the look-up of
        # the SOP Instance UID (``instance_by_uid``'s first row) in it, run after UID_LOCK
        self.hierarchy_and_instance: _Statement | None = None
        if dialect.name == "postgresql":
            def first(column: Any) -> Any:
                return (sa.select(column).where(instance.c.sop_instance_uid == b("sop"))
                        .order_by((instance.c.organization == b("org")).desc(), instance.c.id)
                        .limit(sa.literal_column("1")).scalar_subquery())

            self.hierarchy_and_instance = compile_(hierarchy.add_columns(
                first(instance.c.id).label("old_id"),
                first(instance.c.organization).label("old_organization")))
        self.study_by_uid = compile_(locked(study, study.c.study_uid == b("v"),
                                            study.c.organization == b("org")))
        self.patient_by_id = compile_(locked(patient, patient.c.id == b("v")))
        self.patient_by_key = compile_(locked(
            patient, patient.c.patient_id == b("v"), patient.c.issuer == b("issuer"),
            patient.c.organization == b("org"), patient.c.anchor == b("anchor")))
        # PostgreSQL: one add of a SOP Instance UID at a time (see UID_LOCK), the locks of
        # a batch's UIDs taken in one statement (:meth:`lock_uids`) before its adds
        self.uid_locks = compile_(UID_LOCKS) if dialect.name == "postgresql" else None
        self.modalities = compile_(sa.update(study).where(study.c.id == b("pk"))
                                   .values(modalities=b("m")))
        #: (series UID, organisation) -> its series, study and patient rows (see the
        #: module docstring); SQLite only (PostgreSQL reads them, locked, every time)
        self._known: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any],
                                                 dict[str, Any]]] = {}
        self._keep = dialect.name == "sqlite"
        self._version: Any = None
        self._inserts: dict[str, _Statement] = {}
        self._updates: dict[str, _Statement] = {}
        extra = {"patient": ("organization", "anchor"), "study": ("patient_pk", "organization"),
                 "series": ("study_pk", "organization"),
                 "instance": ("series_pk", "transfer_syntax_uid", "blob_key", "size",
                              "stored_at", "source_ae", "organization")}
        for table in (patient, study, series, instance):
            keys = ["attrs", *columns(table, {}), *extra[table.name]]
            self._inserts[table.name] = compile_(sa.insert(table).returning(table.c.id), keys)
            if table is not instance:
                fill = ["attrs", *columns(table, {})]
                self._updates[table.name] = compile_(
                    sa.update(table).where(table.c.id == b("row_id"))
                    .values({k: b(k) for k in fill}))

    def begin(self, cursor: Any) -> None:
        """Call once a write transaction holds the write lock: forget the rows kept when
        another connection has committed since this one's last transaction."""
        if not self._keep:
            return
        version = cursor.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._known.clear()
            self._version = version

    def forget(self) -> None:
        """Forget every row kept (after a rollback, or a connection given up)."""
        self._known.clear()
        self._version = None

    def _insert(self, cursor: Any, table: sa.Table, attrs: Mapping[str, str],
                **extra: Any) -> int:
        values = dict(attrs)
        self._inserts[table.name].run(cursor, {"attrs": values, **self._columns(table, values),
                                               **extra})
        return int(cursor.fetchone()[0])

    def _fill(self, cursor: Any, table: sa.Table, row: Mapping[str, Any],
              new: Mapping[str, str]) -> set[str]:
        kept: Mapping[str, Any] = row["attrs"] or {}
        filled = {k for k, v in new.items()
                  if v and v.strip() and not str(kept.get(k) or "").strip()}
        if filled:  # a copy: `row` may be a row kept for the next images
            current: dict[str, Any] = dict(kept)
            current.update({k: new[k] for k in filled})
            self._updates[table.name].run(cursor, {"row_id": row["id"], "attrs": current,
                                                   **self._columns(table, current)})
        return filled

    def lock_uids(self, cursor: Any, uids: Sequence[str]) -> None:
        """PostgreSQL: take UID_LOCK for every one of `uids` (sorted here), in one statement."""
        assert self.uid_locks is not None
        self.uid_locks.run(cursor, {"v": sorted(set(uids))}).fetchall()

    def add(self, cursor: Any, record: InstanceRecord, keys: Any, replace: bool) -> str:
        """Add `record` in the open transaction: ``"added"`` or ``"duplicate"``. On
        PostgreSQL the transaction already holds the UID's lock (:meth:`lock_uids`).

        Raises
        ------
        Delegate
            Not the common case (see the module docstring); nothing was written.
        """
        found: dict[str, Any] | None = None  # the hierarchy row, when `looked` up
        looked = self.hierarchy_and_instance is not None
        if self.hierarchy_and_instance is not None:
            found = self.hierarchy_and_instance.one(
                cursor, {"v": keys.series, "org": keys.organization, "sop": keys.sop})
        if found is not None:
            old_id, old_org = found.pop("old_id"), found.pop("old_organization")
            old = None if old_id is None else {"id": old_id, "organization": old_org}
        else:
            old = self.instance_by_uid.one(cursor, {"v": keys.sop, "org": keys.organization})
        if old is not None:
            if old["organization"] != keys.organization:
                raise Delegate("another organisation holds this SOP Instance UID")
            if replace:
                raise Delegate("the instance is replaced")
            return "duplicate"
        series_pk = self._file(cursor, record, keys, found, looked=looked)
        attrs = dict(record.values.get(Level.IMAGE, {}))
        self._inserts["instance"].run(cursor, {
            **self._columns(instance, attrs), "attrs": attrs, "series_pk": series_pk,
            "transfer_syntax_uid": record.transfer_syntax_uid, "blob_key": record.blob_key,
            "size": record.size, "stored_at": datetime.now(UTC),
            "source_ae": record.source_ae, "organization": keys.organization})
        cursor.fetchone()
        return "added"

    def _file(self, cursor: Any, record: InstanceRecord, keys: Any,
              found: dict[str, Any] | None = None, *, looked: bool = False) -> int:
        """As the repository's ``_file``: the series pk, rows created or filled. `looked`:
        the row of ``hierarchy_by_series`` was already looked up, `found` (None: no such
        series)."""
        values = record.values
        org = keys.organization
        se: dict[str, Any] | None = None
        st: dict[str, Any] | None
        pt: dict[str, Any] | None
        known = self._known.get((keys.series, org))
        if known is not None:
            se, st, pt = known
        else:
            row = (found if looked
                   else self.hierarchy_by_series.one(cursor, {"v": keys.series, "org": org}))
            if row is not None:
                se, st, pt = ({k[3:]: v for k, v in row.items() if k[:3] == prefix}
                              for prefix in ("se_", "st_", "pt_"))
        if se is not None:
            assert st is not None
            if st["study_uid"] != keys.study:
                _log.warning("series %s arrived with study %s but is filed under study %s: "
                             "kept there", keys.series, keys.study, st["study_uid"])
        else:
            st = self.study_by_uid.one(cursor, {"v": keys.study, "org": org})
            pt = (None if st is None
                  else self.patient_by_id.one(cursor, {"v": st["patient_pk"]}))
            assert st is None or pt is not None
        if st is None:
            pt = self.patient_by_key.one(cursor, {"v": keys.patient[0], "issuer": keys.patient[1],
                                                  "org": org, "anchor": keys.anchor})
        wrote = False  # to a patient, study or series row
        if pt is None:
            patient_pk = self._insert(cursor, patient, values.get(Level.PATIENT, {}),
                                      organization=org, anchor=keys.anchor)
            wrote = True
        else:
            patient_pk = pt["id"]
            if (pt["patient_id"], pt["issuer"]) == keys.patient:
                wrote = bool(self._fill(cursor, patient, pt, values.get(Level.PATIENT, {})))
            else:
                _log.warning("study %s arrived with another patient than the one it is filed "
                             "under: kept under its first patient",
                             st["study_uid"] if st is not None else keys.study)
        modalities: set[str] = set()
        if st is None:
            study_pk = self._insert(cursor, study, values.get(Level.STUDY, {}),
                                    patient_pk=patient_pk, organization=org)
            wrote = True
        else:
            study_pk = st["id"]
            modalities = _modality_set(st["modalities"])
            if st["study_uid"] == keys.study:
                wrote = bool(self._fill(cursor, study, st, values.get(Level.STUDY, {}))) or wrote
        new_series = values.get(Level.SERIES, {})
        if se is None:
            series_pk = self._insert(cursor, series, new_series, study_pk=study_pk,
                                     organization=org)
            added = _modality_set(new_series.get("Modality"))
            wrote = True
        else:
            series_pk = se["id"]
            filled = self._fill(cursor, series, se, new_series)
            added = _modality_set(new_series.get("Modality")) if "Modality" in filled else set()
            wrote = wrote or bool(filled)
        if not added <= modalities:
            self.modalities.run(cursor, {"pk": study_pk,
                                         "m": "\\".join(sorted(modalities | added))})
            wrote = True
        if wrote:
            self._known.clear()  # rows kept of this study or patient may be stale now
        elif self._keep and se is not None and st is not None and pt is not None:
            if len(self._known) >= _KNOWN_SERIES:
                del self._known[next(iter(self._known))]
            self._known[(keys.series, org)] = (se, st, pt)
        return int(series_pk)


def _modality_set(value: Any) -> set[str]:
    return {m.strip() for m in str(value or "").split("\\") if m.strip()}
