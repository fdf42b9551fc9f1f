"""C-FIND matchers as SQL pre-filters on the index columns (PS3.4 C.2.2.2, C.6.1.1).

The pure matchers of :mod:`securepacs.model.matching` are the authority. The SQL built here
only narrows the candidate rows and must never drop a row the matcher accepts; it may keep
rows the matcher rejects, which the repository filters again in Python. That holds because
each filter column stores a *match form* of its attribute (see :func:`column_values`):

- ``uid`` columns: identity values (UIDs, PatientID, IssuerOfPatientID), stripped, never
  NULL (values holding a backslash are refused before they reach the index);
- ``exact`` columns: the value stripped of surrounding spaces, as matching compares it;
- ``fold`` columns (PN): that, lower-cased, when every character lies in an alphabet on
  which ``str.lower`` (single value matching) and ``re.IGNORECASE`` (wildcards) agree
  character by character: Latin letters other than the dotted/dotless I and the long s, and
  characters without case;
- NULL for a stored value SQL cannot compare exactly: several values joined by a backslash,
  a NUL character, or for ``fold`` a character outside that alphabet. Every condition also
  keeps NULL rows, so Python decides for them.

Translations: single value and UID list -> ``IN``; wildcard -> ``LIKE`` (``*`` -> ``%``,
``?`` -> ``_``, literal ``%``, ``_`` escaped); DA range -> ``>=`` / ``<=``. Anything else
(TM and DT ranges, computed counts, integer strings) is left to Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from securepacs.index.schema import instance, patient, series, study
from securepacs.model.matching import Matcher, Range, Single, Wildcard

Kind = Literal["uid", "exact", "fold"]

#: keyword -> (column holding its match form, kind of form)
FILTER_COLUMNS: dict[str, tuple[sa.Column[Any], Kind]] = {
    "PatientID": (patient.c.patient_id, "uid"),
    "IssuerOfPatientID": (patient.c.issuer, "uid"),
    "PatientName": (patient.c.patient_name, "fold"),
    "PatientBirthDate": (patient.c.birth_date, "exact"),
    "PatientSex": (patient.c.sex, "exact"),
    "StudyInstanceUID": (study.c.study_uid, "uid"),
    "StudyDate": (study.c.study_date, "exact"),
    "StudyTime": (study.c.study_time, "exact"),
    "AccessionNumber": (study.c.accession_number, "exact"),
    "StudyID": (study.c.study_id, "exact"),
    "StudyDescription": (study.c.description, "exact"),
    "ReferringPhysicianName": (study.c.referring_physician, "fold"),
    "SeriesInstanceUID": (series.c.series_uid, "uid"),
    "Modality": (series.c.modality, "exact"),
    "SeriesDescription": (series.c.description, "exact"),
    "SOPInstanceUID": (instance.c.sop_instance_uid, "uid"),
    "SOPClassUID": (instance.c.sop_class_uid, "uid"),
}

# Longer value lists are left to Python rather than risk the driver's parameter limit.
_MAX_IN = 5000
_ESCAPE = "!"


def _fold_safe_char(char: str) -> bool:
    return (char < "\u0250" and char not in "\u0130\u0131\u017f") or (char.lower() == char == char.upper())


def fold_safe(text: str) -> bool:
    """True when `text` lies in the alphabet where lower-casing decides case-insensitivity.

    On such strings ``str.lower`` works character by character without changing the
    length, and two characters match under ``re.IGNORECASE`` exactly when their lower
    cases are equal; so comparing lower-cased forms in SQL agrees with the matchers.
    """
    return text.isascii() or all(_fold_safe_char(c) for c in text)


def exact_form(value: str | None) -> str | None:
    """The ``exact`` match form of a stored value: stripped; ``""`` when absent.

    None when SQL cannot compare it exactly (several values, or a NUL character).
    """
    if value is None:
        return ""
    if "\\" in value or "\x00" in value:
        return None
    return value.strip()


def fold_form(value: str | None) -> str | None:
    """The ``fold`` match form: the ``exact`` form lower-cased, None outside the safe alphabet."""
    form = exact_form(value)
    if form is None or not fold_safe(form):
        return None
    return form.lower()


def uid_form(value: str | None) -> str:
    """The ``uid`` match form: the identity value, stripped; ``""`` when absent."""
    return (value or "").strip()


#: table -> (keyword, column name, match form) of its filter columns, built once
_BY_TABLE: dict[Any, list[tuple[str, str, Callable[[str | None], str | None]]]] = {}
for _keyword, (_column, _kind) in FILTER_COLUMNS.items():
    _BY_TABLE.setdefault(_column.table, []).append(
        (_keyword, _column.name,
         {"uid": uid_form, "exact": exact_form}.get(_kind, fold_form)))


def column_values(table: sa.Table, attrs: Mapping[str, str]) -> dict[str, str | None]:
    """Column name -> match form, for every filter column of `table`, from a row's values."""
    return {name: form(attrs.get(keyword))
            for keyword, name, form in _BY_TABLE.get(table, ())}


def like_pattern(pattern: str) -> tuple[str, bool]:
    """A C-FIND wildcard pattern as a ``LIKE`` pattern, and whether it needs ``ESCAPE '!'``."""
    out: list[str] = []
    escaped = False
    for char in pattern:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in "%_" + _ESCAPE:
            out.append(_ESCAPE + char)
            escaped = True
        else:
            out.append(char)
    return "".join(out), escaped


def _like(column: sa.Column[Any], pattern: str) -> ColumnElement[bool]:
    text, escaped = like_pattern(pattern)
    return column.like(text, escape=_ESCAPE) if escaped else column.like(text)


def condition(column: sa.Column[Any], kind: Kind, matcher: Matcher) -> ColumnElement[bool] | None:
    """An SQL condition on `column` no stricter than `matcher`, or None when there is none.

    Parameters
    ----------
    column : sqlalchemy.Column
        A column holding match forms of `kind`.
    kind : {"uid", "exact", "fold"}
        How the column's values were written (see the module docstring).
    matcher : securepacs.model.matching.Matcher
        The matcher of one key of the identifier.

    Returns
    -------
    sqlalchemy.sql.ColumnElement or None
        True for every row whose stored value `matcher` accepts.
    """
    cond: ColumnElement[bool]
    if isinstance(matcher, Single):
        if len(matcher.values) > _MAX_IN:
            return None
        if kind == "fold":
            # both exact and case-folded equality imply equality of lower cases
            cond = column.in_(sorted({v.lower() for v in matcher.values}))
        elif matcher.fold_case:
            return None
        else:
            cond = column.in_(sorted(set(matcher.values)))
    elif isinstance(matcher, Wildcard):
        if kind == "fold":
            if not all(fold_safe(p) for p in matcher.patterns):
                return None
            patterns = [p.lower() for p in matcher.patterns]
        elif matcher.fold_case:
            return None
        else:
            patterns = list(matcher.patterns)
        cond = sa.or_(*(_like(column, p) for p in patterns))
    elif isinstance(matcher, Range):
        # DA ranges compare stripped strings, as the matcher does; TM/DT normalise first.
        if kind == "fold" or matcher.vr != "DA":
            return None
        bounds: list[ColumnElement[bool]] = []
        if matcher.low is not None:
            bounds.append(column >= matcher.low.strip())
        if matcher.high is not None:
            bounds.append(column <= matcher.high.strip())
        if not bounds:
            return None
        cond = sa.and_(*bounds)
    else:
        return None
    return sa.or_(cond, column.is_(None)) if column.nullable else cond


def prefilter(constraints: Mapping[str, Matcher]) -> list[ColumnElement[bool]]:
    """SQL conditions for the keys of `constraints` that SQL can narrow on.

    The conditions refer to the ``patient``, ``study``, ``series`` and ``instance`` tables
    of the keys' levels; the caller joins them. ModalitiesInStudy becomes a sub-query on the
    modalities of the study's series.
    """
    out: list[ColumnElement[bool]] = []
    for keyword, matcher in constraints.items():
        if keyword == "ModalitiesInStudy":
            cond = condition(series.c.modality, "exact", matcher)
            if cond is not None:
                out.append(study.c.id.in_(sa.select(series.c.study_pk).where(cond)))
            continue
        target = FILTER_COLUMNS.get(keyword)
        if target is None:
            continue
        cond = condition(target[0], target[1], matcher)
        if cond is not None:
            out.append(cond)
    return out
