"""C-FIND on the index: candidate rows, computed attributes, matching (PS3.4 C.2.2.2, C.6).

SQL narrows the candidates at the query level with the pre-filter of
:mod:`securepacs.index.sqlfilter`; every matcher of the query then runs in Python on the
values of the row merged with those of the levels above it (the pure matchers of
:mod:`securepacs.model.matching` are the authority). Computed attributes (PS3.4 C.6.1.1.3,
C.6.2.1.2: counts, ModalitiesInStudy, SOPClassesInStudy) are obtained with grouped queries
for one batch of candidate rows at a time, never one query per row.

Organisation visibility (docs/tenants.md) is one more SQL condition on the candidates, from
the caller's :class:`~securepacs.model.tenancy.Visibility`: the study's organisation is the
caller's, or an active share of that study names it (a sub-query on ``trust_share``). The
hierarchy is kept per organisation, so the condition on the study (or, at the patient
level, on the patient and its shared studies) covers every row below it, and the computed
counts of a patient count only the studies the caller sees.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.sql.elements import ColumnElement

from securepacs.errors import QueryError
from securepacs.index.schema import instance, patient, series, study
from securepacs.index.sqlfilter import prefilter
from securepacs.index.trust import trust_share
from securepacs.model.levels import Level
from securepacs.model.matching import Matcher
from securepacs.model.query import Query
from securepacs.model.record import COMPUTED_ATTRIBUTES, LEVEL_ATTRIBUTES
from securepacs.model.tenancy import Visibility

#: The table of each Query/Retrieve level.
TABLES: dict[Level, sa.Table] = {
    Level.PATIENT: patient,
    Level.STUDY: study,
    Level.SERIES: series,
    Level.IMAGE: instance,
}


def output_keywords(level: Level) -> tuple[str, ...]:
    """Keywords of a C-FIND result at `level`: the attributes kept at it and above, then
    the level's computed attributes."""
    keywords: list[str] = []
    for above in level.at_or_above():
        keywords.extend(LEVEL_ATTRIBUTES[above])
    return (*keywords, *COMPUTED_ATTRIBUTES[level])


def _active(visibility: Visibility) -> list[ColumnElement[bool]]:
    """The shares in force for the caller's organisation (read-only ones not when retrieving)."""
    share = trust_share.c
    conditions = [
        share.grantee == visibility.organization,
        share.revoked_at.is_(None),
        sa.or_(share.until.is_(None), share.until > visibility.at),
    ]
    if visibility.retrieve:
        conditions.append(share.read_only.is_(False))
    return conditions


def _shared(visibility: Visibility) -> sa.Exists:
    """An active share of the (correlated) study row with the caller's organisation."""
    share = trust_share.c
    return sa.exists().where(share.study_uid == study.c.study_uid,
                             share.owner == study.c.organization, *_active(visibility))


def study_visible(visibility: Visibility | None) -> ColumnElement[bool] | None:
    """The condition on ``study`` rows the caller sees; None when it sees everything."""
    if visibility is None or visibility.everything:
        return None
    return sa.or_(study.c.organization == visibility.organization, _shared(visibility))


def visible(level: Level, visibility: Visibility | None) -> ColumnElement[bool] | None:
    """The visibility condition on the candidates at `level` (their join holds the study
    table, except at the patient level); None when the caller sees everything."""
    on_study = study_visible(visibility)
    if on_study is None or visibility is None:
        return None
    if level is not Level.PATIENT:
        return on_study
    # the patients of the shared studies, driven from the (few) shares of the caller
    shared = (sa.select(study.c.patient_pk)
              .select_from(trust_share.join(study, sa.and_(
                  study.c.study_uid == trust_share.c.study_uid,
                  study.c.organization == trust_share.c.owner)))
              .where(*_active(visibility)))
    return sa.or_(patient.c.organization == visibility.organization, patient.c.id.in_(shared))


def _candidates(level: Level, constraints: Mapping[str, Matcher],
                visibility: Visibility | None) -> sa.Select[Any]:
    """Rows at `level` passing the SQL pre-filter and the caller's visibility: pk and attrs
    of the level and those above."""
    levels = level.at_or_above()
    columns = [TABLES[lv].c.id.label(f"pk{lv.depth}") for lv in levels]
    columns += [TABLES[lv].c.attrs.label(f"attrs{lv.depth}") for lv in levels]
    columns.append(TABLES[level].c.organization.label("owner"))
    joined: sa.FromClause = patient
    for lv in levels[1:]:
        joined = joined.join(TABLES[lv])
    where = prefilter(constraints)
    seen = visible(level, visibility)
    if seen is not None:
        where.append(seen)
    return sa.select(*columns).select_from(joined).where(*where).order_by(TABLES[level].c.id)


def _merge(row: Row[Any], levels: Sequence[Level]) -> dict[str, str]:
    values: dict[str, str] = {}
    mapping = row._mapping
    for lv in levels:
        attrs = mapping[f"attrs{lv.depth}"] or {}
        for keyword in LEVEL_ATTRIBUTES[lv]:
            value = attrs.get(keyword)
            values[keyword] = "" if value is None else str(value)
    return values


def matches(
    conn: sa.Connection, query: Query, *, computed_for_output: bool, batch: int,
    visibility: Visibility | None = None, owners: list[str] | None = None,
) -> Generator[tuple[int, dict[str, str]], None, None]:
    """(pk, merged values) of every entity at ``query.level`` that matches, in pk order.

    Parameters
    ----------
    conn : sqlalchemy.Connection
        A connection inside a (read) transaction; used while the generator runs.
    query : securepacs.model.query.Query
        The identifier.
    computed_for_output : bool
        Also compute the level's computed attributes when no key constrains them.
    batch : int
        Candidate rows read, and given computed attributes, at a time.
    visibility : Visibility or None
        What the caller sees (None: everything).
    owners : list of str, optional
        Given, the owner organisation of each match is appended to it just before the
        match is yielded (for the audit of cross-organisation reads, docs/tenants.md).

    Raises
    ------
    securepacs.errors.QueryError
        A key's value cannot be evaluated.
    """
    level = query.level
    levels = level.at_or_above()
    try:
        constraints = query.constraints()
    except ValueError as exc:
        raise QueryError(str(exc)) from exc
    computed_levels = [
        lv
        for lv in levels
        if (computed_for_output and lv is level) or any(k in constraints for k in COMPUTED_ATTRIBUTES[lv])
    ]
    # A server-side cursor where the driver has one (PostgreSQL): a query with a limit reads
    # only the batches it needs. SQLite cursors step lazily anyway.
    result = conn.execute(_candidates(level, constraints, visibility)
                          .execution_options(stream_results=True))
    try:
        for part in result.partitions(batch):
            merged = [_merge(row, levels) for row in part]
            for lv in computed_levels:
                label = f"pk{lv.depth}"
                pks = sorted({row._mapping[label] for row in part})
                computed = _computed(conn, lv, pks, visibility)
                for row, values in zip(part, merged, strict=True):
                    values.update(computed[row._mapping[label]])
            for row, values in zip(part, merged, strict=True):
                if all(m.matches(values.get(k)) for k, m in constraints.items()):
                    if owners is not None:
                        owners.append(str(row._mapping["owner"]))
                    yield row._mapping[f"pk{level.depth}"], values
    finally:
        result.close()


def _computed(conn: sa.Connection, level: Level, pks: Sequence[int],
              visibility: Visibility | None = None) -> dict[int, dict[str, str]]:
    """The COMPUTED_ATTRIBUTES of `level` for the entities `pks`, with grouped queries
    (a patient's count only the studies the caller sees; a study is seen whole)."""
    out: dict[int, dict[str, str]] = {}
    if level is Level.PATIENT:
        on = study.c.patient_pk == patient.c.id
        seen = study_visible(visibility)
        if seen is not None:
            on = sa.and_(on, seen)
        stmt = (
            sa.select(
                patient.c.id,
                sa.func.count(sa.distinct(study.c.id)),
                sa.func.count(sa.distinct(series.c.id)),
                sa.func.count(instance.c.id),
            )
            .select_from(patient.outerjoin(study, on).outerjoin(series).outerjoin(instance))
            .where(patient.c.id.in_(pks))
            .group_by(patient.c.id)
        )
        for pk, n_studies, n_series, n_instances in conn.execute(stmt):
            out[pk] = {
                "NumberOfPatientRelatedStudies": str(n_studies),
                "NumberOfPatientRelatedSeries": str(n_series),
                "NumberOfPatientRelatedInstances": str(n_instances),
            }
    elif level is Level.STUDY:
        stmt = (
            sa.select(
                study.c.id,
                study.c.modalities,
                sa.func.count(sa.distinct(series.c.id)),
                sa.func.count(instance.c.id),
            )
            .select_from(study.outerjoin(series).outerjoin(instance))
            .where(study.c.id.in_(pks))
            .group_by(study.c.id, study.c.modalities)
        )
        classes: dict[int, set[str]] = {pk: set() for pk in pks}
        class_stmt = (
            sa.select(series.c.study_pk, instance.c.sop_class_uid)
            .distinct()
            .select_from(series.join(instance))
            .where(series.c.study_pk.in_(pks))
        )
        for pk, sop_class in conn.execute(class_stmt):
            if sop_class:
                classes[pk].add(sop_class)
        for pk, modalities, n_series, n_instances in conn.execute(stmt):
            out[pk] = {
                "ModalitiesInStudy": modalities or "",
                "SOPClassesInStudy": "\\".join(sorted(classes[pk])),
                "NumberOfStudyRelatedSeries": str(n_series),
                "NumberOfStudyRelatedInstances": str(n_instances),
            }
    elif level is Level.SERIES:
        stmt = (
            sa.select(series.c.id, sa.func.count(instance.c.id))
            .select_from(series.outerjoin(instance))
            .where(series.c.id.in_(pks))
            .group_by(series.c.id)
        )
        for pk, n_instances in conn.execute(stmt):
            out[pk] = {"NumberOfSeriesRelatedInstances": str(n_instances)}
    for pk in pks:
        out.setdefault(pk, {})
    return out
