"""The add of an instance through SQLAlchemy: file it into the patient / study / series /
instance hierarchy (PS3.4 C.6.1.1), creating the rows it lacks and filling the values they
lack, and prune the rows an instance leaves empty.

:class:`securepacs.index.repository.SqlIndex` runs :func:`_add` for the adds its plain
DB-API path (:mod:`securepacs.index.rowwriter`) delegates or could not commit, and
:func:`_prune` when it deletes an instance; the row writer compiles :func:`_columns` and
:func:`_locked` itself. A patient without a Patient ID is kept apart by the study it was
first filed with (:attr:`_Keys.anchor`); every look-up by UID is within the
organisation of the add (docs/tenants.md). Its warnings use the logger
``securepacs.index.repository``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from securepacs.errors import InvalidInstanceError
from securepacs.index.rowwriter import UID_LOCK
from securepacs.index.schema import instance, patient, series, study
from securepacs.index.sqlfilter import column_values, uid_form
from securepacs.model.levels import Level
from securepacs.model.record import UNIQUE_KEY, InstanceRecord

_log = logging.getLogger("securepacs.index.repository")


@dataclass(frozen=True)
class AddResult:
    """What :meth:`SqlIndex.add` did.

    Attributes
    ----------
    outcome : {"added", "duplicate", "replaced", "foreign"}
        ``"duplicate"``: the SOP Instance UID was already indexed and nothing changed.
        ``"foreign"``: another organisation holds this SOP Instance UID and nothing was
        added: the caller compares its bytes with the blob ``previous_blob_key`` and adds
        again with ``foreign=previous_blob_key`` when they are the same (docs/tenants.md).
    previous_blob_key : str or None
        For ``"replaced"``, the blob the row pointed at before (the caller may delete it
        once it differs from the new one); for ``"foreign"``, the other organisation's.
    previous_size : int
        For ``"foreign"``, the size of that blob.
    """

    outcome: Literal["added", "duplicate", "replaced", "foreign"]
    previous_blob_key: str | None = None
    previous_size: int = 0


def _integer(value: str | None) -> int | None:
    """An IS value as a 32-bit integer, for ordering; None when absent or not one."""
    try:
        number = int((value or "").strip())
    except ValueError:
        return None
    return number if -(2**31) <= number < 2**31 else None


def _modality_set(value: Any) -> set[str]:
    return {m.strip() for m in str(value or "").split("\\") if m.strip()}


# -- add ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Keys:
    """The identity of an instance's patient, study, series and instance."""

    patient: tuple[str, str]
    study: str
    series: str
    sop: str
    organization: str = ""

    @property
    def anchor(self) -> str:
        """What keeps a patient without a Patient ID apart from every other (17.4): the
        Study Instance UID it was first filed with; ``""`` for a patient with an ID."""
        return "" if self.patient[0] else self.study

    @classmethod
    def of(cls, record: InstanceRecord) -> _Keys:
        def value(level: Level, keyword: str, required: bool) -> str:
            raw = record.values.get(level, {}).get(keyword) or ""
            if "\\" in raw or "\x00" in raw:
                raise InvalidInstanceError(f"{keyword} must hold a single value")
            if required and not raw.strip():
                raise InvalidInstanceError(f"{keyword} is missing")
            return uid_form(raw)

        value(Level.IMAGE, "SOPClassUID", False)
        return cls(
            patient=(
                value(Level.PATIENT, "PatientID", False),
                value(Level.PATIENT, "IssuerOfPatientID", False),
            ),
            study=value(Level.STUDY, UNIQUE_KEY[Level.STUDY], True),
            series=value(Level.SERIES, UNIQUE_KEY[Level.SERIES], True),
            sop=value(Level.IMAGE, UNIQUE_KEY[Level.IMAGE], True),
            organization=record.organization,
        )


def _columns(table: sa.Table, attrs: Mapping[str, str]) -> dict[str, Any]:
    """Every column derived from a row's values."""
    cols: dict[str, Any] = dict(column_values(table, attrs))
    if table is series:
        cols["series_number"] = _integer(attrs.get("SeriesNumber"))
    elif table is instance:
        cols["instance_number"] = _integer(attrs.get("InstanceNumber"))
    return cols


def _locked(table: sa.Table, *where: Any) -> sa.Select[Any]:
    """The row, locked until commit where the database locks rows (PostgreSQL), so that
    concurrent adds to one study do not lose each other's updates. SQLite has no row
    locks and needs none: its write transactions run one at a time."""
    return sa.select(table).where(*where).with_for_update()


# The statements of every add, built once: SQLAlchemy then reuses their compiled form
# without rebuilding them and their cache keys per image (parameters bound at execution).
# Every look-up by UID is within the organisation of the add (docs/tenants.md).
_SERIES_BY_UID = _locked(series, series.c.series_uid == sa.bindparam("v"),
                         series.c.organization == sa.bindparam("org"))
_STUDY_BY_ID = _locked(study, study.c.id == sa.bindparam("v"))
_STUDY_BY_UID = _locked(study, study.c.study_uid == sa.bindparam("v"),
                        study.c.organization == sa.bindparam("org"))
_PATIENT_BY_ID = _locked(patient, patient.c.id == sa.bindparam("v"))
_PATIENT_BY_KEY = _locked(patient, patient.c.patient_id == sa.bindparam("v"),
                          patient.c.issuer == sa.bindparam("issuer"),
                          patient.c.organization == sa.bindparam("org"),
                          patient.c.anchor == sa.bindparam("anchor"))
# The rows of one SOP Instance UID, the add's own organisation's first.
_INSTANCE_BY_UID = (
    sa.select(instance.c.id, instance.c.series_pk, instance.c.blob_key, instance.c.size,
              instance.c.organization)
    .where(instance.c.sop_instance_uid == sa.bindparam("v"))
    .order_by((instance.c.organization == sa.bindparam("org")).desc(), instance.c.id)
)
_INSERT = {table: sa.insert(table) for table in (patient, study, series, instance)}
_UID_LOCK = UID_LOCK  # the fast path takes the same lock (rowwriter)


def _one(conn: sa.Connection, statement: sa.Select[Any], v: Any, **more: Any) -> RowMapping | None:
    return conn.execute(statement, {"v": v, **more}).mappings().first()


def _insert(conn: sa.Connection, table: sa.Table, attrs: Mapping[str, str], **extra: Any) -> int:
    values = dict(attrs)
    result = conn.execute(_INSERT[table], {"attrs": values, **_columns(table, values), **extra})
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def _fill(conn: sa.Connection, table: sa.Table, row: RowMapping, new: Mapping[str, str]) -> set[str]:
    """Give `row` the values of `new` it lacks; return the keywords filled."""
    current: dict[str, Any] = dict(row["attrs"] or {})
    filled = {k for k, v in new.items() if v and v.strip() and not str(current.get(k) or "").strip()}
    if filled:
        current.update({k: new[k] for k in filled})
        conn.execute(
            sa.update(table).where(table.c.id == row["id"]).values(attrs=current, **_columns(table, current))
        )
    return filled


def _add(conn: sa.Connection, record: InstanceRecord, keys: _Keys, replace: bool,
         foreign: str) -> AddResult:
    if conn.dialect.name == "postgresql":
        conn.execute(_UID_LOCK, {"v": keys.sop})
    old = conn.execute(_INSTANCE_BY_UID, {"v": keys.sop, "org": keys.organization}).first()
    if old is not None and old.organization != keys.organization:
        # another organisation holds this UID: the caller compares the bytes first
        if foreign != old.blob_key:
            return AddResult("foreign", previous_blob_key=str(old.blob_key),
                             previous_size=int(old.size))
        old = None
    if old is not None and not replace:
        return AddResult("duplicate")
    series_pk = _file(conn, record, keys)
    attrs = dict(record.values.get(Level.IMAGE, {}))
    row = {
        **_columns(instance, attrs),
        "series_pk": series_pk,
        "transfer_syntax_uid": record.transfer_syntax_uid,
        "blob_key": record.blob_key,
        "size": record.size,
        "stored_at": datetime.now(UTC),
        "source_ae": record.source_ae,
        "attrs": attrs,
        "organization": keys.organization,
    }
    if old is None:
        conn.execute(_INSERT[instance], row)
        return AddResult("added")
    conn.execute(sa.update(instance).where(instance.c.id == old.id).values(row))
    if old.series_pk != series_pk:
        _prune(conn, old.series_pk)
    return AddResult("replaced", previous_blob_key=str(old.blob_key))


def _file(conn: sa.Connection, record: InstanceRecord, keys: _Keys) -> int:
    """Find or create the patient, study and series rows of `record`; the series pk."""
    values = record.values
    org = keys.organization
    se = _one(conn, _SERIES_BY_UID, keys.series, org=org)
    if se is not None:
        st = _one(conn, _STUDY_BY_ID, se["study_pk"])
        assert st is not None
        if st["study_uid"] != keys.study:
            _log.warning(
                "series %s arrived with study %s but is filed under study %s: kept there",
                keys.series,
                keys.study,
                st["study_uid"],
            )
    else:
        st = _one(conn, _STUDY_BY_UID, keys.study, org=org)
    if st is not None:
        pt = _one(conn, _PATIENT_BY_ID, st["patient_pk"])
        assert pt is not None
    else:
        pt = _one(conn, _PATIENT_BY_KEY, keys.patient[0], issuer=keys.patient[1], org=org,
                  anchor=keys.anchor)

    if pt is None:
        patient_pk = _insert(conn, patient, values.get(Level.PATIENT, {}), organization=org,
                             anchor=keys.anchor)
    else:
        patient_pk = pt["id"]
        if (pt["patient_id"], pt["issuer"]) == keys.patient:
            _fill(conn, patient, pt, values.get(Level.PATIENT, {}))
        else:
            # Patient details are not logged: they are patient data.
            _log.warning(
                "study %s arrived with another patient than the one it is filed under: "
                "kept under its first patient",
                st["study_uid"] if st is not None else keys.study,
            )

    modalities: set[str] = set()
    if st is None:
        study_pk = _insert(conn, study, values.get(Level.STUDY, {}), patient_pk=patient_pk,
                           organization=org)
    else:
        study_pk = st["id"]
        modalities = _modality_set(st["modalities"])
        if st["study_uid"] == keys.study:
            _fill(conn, study, st, values.get(Level.STUDY, {}))

    new_series = values.get(Level.SERIES, {})
    if se is None:
        series_pk = _insert(conn, series, new_series, study_pk=study_pk, organization=org)
        added = _modality_set(new_series.get("Modality"))
    else:
        series_pk = se["id"]
        filled = _fill(conn, series, se, new_series)
        added = _modality_set(new_series.get("Modality")) if "Modality" in filled else set()
    if not added <= modalities:
        conn.execute(
            sa.update(study)
            .where(study.c.id == study_pk)
            .values(modalities="\\".join(sorted(modalities | added)))
        )
    return series_pk


def _prune(conn: sa.Connection, series_pk: int) -> None:
    """Delete the series if it has no instance left, then its study and patient if empty."""
    if conn.execute(sa.select(instance.c.id).where(instance.c.series_pk == series_pk).limit(1)).first():
        return
    study_pk = conn.execute(sa.select(series.c.study_pk).where(series.c.id == series_pk)).scalar_one()
    conn.execute(sa.delete(series).where(series.c.id == series_pk))
    remaining = conn.execute(sa.select(series.c.attrs).where(series.c.study_pk == study_pk)).scalars()
    modalities: set[str] = set()
    empty = True
    for attrs in remaining:
        empty = False
        modalities |= _modality_set((attrs or {}).get("Modality"))
    if not empty:
        conn.execute(
            sa.update(study).where(study.c.id == study_pk).values(modalities="\\".join(sorted(modalities)))
        )
        return
    patient_pk = conn.execute(sa.select(study.c.patient_pk).where(study.c.id == study_pk)).scalar_one()
    conn.execute(sa.delete(study).where(study.c.id == study_pk))
    if not conn.execute(sa.select(study.c.id).where(study.c.patient_pk == patient_pk).limit(1)).first():
        conn.execute(sa.delete(patient).where(patient.c.id == patient_pk))
