"""The index tables: the patient / study / series / instance hierarchy of PS3.4 C.6.1.1.

One row per entity of the Query/Retrieve information model. Each row keeps

- ``attrs``: every value of :data:`securepacs.model.record.LEVEL_ATTRIBUTES` for its level,
  keyword -> DICOM string, as received (what C-FIND answers and matches on);
- identity columns (UIDs, PatientID + IssuerOfPatientID) stripped of surrounding spaces;
- *match form* columns duplicating the attributes C-FIND filters on most, written by
  :func:`securepacs.index.sqlfilter.column_values`: stripped, lower-cased for PN, NULL when
  the value cannot be compared in SQL exactly. They serve only as an SQL pre-filter.

Every row also carries ``organization``, the tenant that owns it (docs/tenants.md): the
whole patient / study / series / instance hierarchy is kept per organisation, so a UID
stored by two organisations makes two rows that never share values or counts, and the
visibility filter of :mod:`securepacs.index.lookup` is one condition on the level's own
row. A patient is keyed by organisation + PatientID + IssuerOfPatientID + ``anchor``:
``anchor`` is ``""`` for a patient with a Patient ID, and the Study Instance UID of its
first study for one without, so that an empty Patient ID never matches another patient.

Only portable types are used, so the same metadata builds on SQLite and PostgreSQL. On
PostgreSQL the text columns use the "C" collation: byte-wise ordering for date ranges and
index use for ``LIKE 'prefix%'``, as on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa

#: Version of the table layout written to ``schema_version``.
SCHEMA_VERSION = 2

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite needs INTEGER PRIMARY KEY for a rowid alias; elsewhere 64-bit keys.
_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Text compared byte by byte on every backend (SQLite's BINARY is already byte-wise).
_TEXT = sa.String().with_variant(sa.String(collation="C"), "postgresql")


def _pk() -> sa.Column[int]:
    return sa.Column("id", _KEY, primary_key=True, autoincrement=True)


def _org() -> sa.Column[str]:
    return sa.Column("organization", _TEXT, nullable=False, server_default="")


patient = sa.Table(
    "patient",
    metadata,
    _pk(),
    sa.Column("patient_id", _TEXT, nullable=False),
    sa.Column("issuer", _TEXT, nullable=False, server_default=""),
    sa.Column("patient_name", _TEXT),
    sa.Column("birth_date", _TEXT),
    sa.Column("sex", _TEXT),
    sa.Column("attrs", sa.JSON, nullable=False),
    _org(),
    sa.Column("anchor", _TEXT, nullable=False, server_default=""),
    sa.UniqueConstraint("organization", "patient_id", "issuer", "anchor"),
    sa.Index(None, "patient_name"),
    # C-FIND by Patient ID across the organisations the caller sees (revision 0006)
    sa.Index(None, "patient_id"),
)

study = sa.Table(
    "study",
    metadata,
    _pk(),
    sa.Column("study_uid", _TEXT, nullable=False),
    sa.Column("patient_pk", _KEY, sa.ForeignKey("patient.id"), nullable=False, index=True),
    sa.Column("study_date", _TEXT),
    sa.Column("study_time", _TEXT),
    sa.Column("accession_number", _TEXT, index=True),
    sa.Column("study_id", _TEXT),
    sa.Column("description", _TEXT),
    sa.Column("referring_physician", _TEXT),
    sa.Column("modalities", _TEXT, nullable=False, server_default=""),
    sa.Column("attrs", sa.JSON, nullable=False),
    _org(),
    sa.UniqueConstraint("study_uid", "organization"),
    sa.Index(None, "study_date"),
    sa.Index(None, "organization"),
)

series = sa.Table(
    "series",
    metadata,
    _pk(),
    sa.Column("series_uid", _TEXT, nullable=False),
    sa.Column("study_pk", _KEY, sa.ForeignKey("study.id"), nullable=False, index=True),
    sa.Column("modality", _TEXT),
    sa.Column("series_number", sa.Integer),
    sa.Column("description", _TEXT),
    sa.Column("attrs", sa.JSON, nullable=False),
    _org(),
    sa.UniqueConstraint("series_uid", "organization"),
    sa.Index(None, "modality", "study_pk"),
)

instance = sa.Table(
    "instance",
    metadata,
    _pk(),
    sa.Column("sop_instance_uid", _TEXT, nullable=False),
    sa.Column("series_pk", _KEY, sa.ForeignKey("series.id"), nullable=False),
    sa.Column("sop_class_uid", _TEXT, nullable=False),
    sa.Column("instance_number", sa.Integer),
    sa.Column("transfer_syntax_uid", sa.String, nullable=False),
    sa.Column("blob_key", sa.String, nullable=False, unique=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source_ae", sa.String, nullable=False, server_default=""),
    sa.Column("attrs", sa.JSON, nullable=False),
    _org(),
    sa.UniqueConstraint("sop_instance_uid", "organization"),
    # serves the foreign key, the per-series counts and SOPClassesInStudy (covering)
    sa.Index(None, "series_pk", "sop_class_uid"),
)

#: Blobs whose instance rows a deletion removed, written in the same transaction as the
#: removal: the blobs are deleted after the commit, and a crash in between leaves the keys
#: here for the start-up sweep (securepacs.index.deletion). Only keys listed here are ever
#: deleted by it, so a blob being written by a concurrent ingest is never touched.
blob_pending_delete = sa.Table(
    "blob_pending_delete",
    metadata,
    sa.Column("blob_key", sa.String, primary_key=True),
    sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
)

#: Blobs of deleted instances kept restorable (the ``trash_days`` setting): the rows are
#: gone from the index, the blobs stay until ``purge_at``; ``securepacs restore-deleted``
#: files them again, the start-up sweep moves expired ones to blob_pending_delete.
blob_trash = sa.Table(
    "blob_trash",
    metadata,
    sa.Column("blob_key", sa.String, primary_key=True),
    sa.Column("organization", sa.String, nullable=False),
    sa.Column("study_uid", sa.String, nullable=False, index=True),
    sa.Column("patient_id", sa.String, nullable=False),
    sa.Column("sop_class_uid", sa.String, nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("purge_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
)


def create_tables(engine: sa.Engine, tables: list[sa.Table], seed: sa.Table,
                  row: dict[str, object], *, what: str) -> None:
    """Create `tables` if missing and insert the singleton `row` (id 1) of `seed` once.

    Idempotent and safe against a concurrent creator (one retry after a lost race).

    Raises
    ------
    StorageError
        The database refused (the message names `what`).
    """
    from sqlalchemy import exc as sa_exc

    from securepacs.errors import StorageError

    for attempt in range(2):
        try:
            with engine.begin() as conn:
                metadata.create_all(conn, tables=tables)
                if conn.execute(sa.select(seed.c.id)).first() is None:
                    conn.execute(sa.insert(seed).values(id=1, **row))
            return
        except (sa_exc.IntegrityError, sa_exc.OperationalError, sa_exc.ProgrammingError) as exc:
            # a concurrent creator won: PostgreSQL reports a duplicate table or type
            if attempt:
                raise StorageError(f"{what}: {type(exc).__name__}") from exc
        except sa_exc.SQLAlchemyError as exc:
            raise StorageError(f"{what}: {type(exc).__name__}") from exc
