"""Match forms and matcher -> SQL translation (the SQL may be looser, never stricter)."""

from __future__ import annotations

import random
import re

import pytest

from securepacs.index.schema import patient, study
from securepacs.index.sqlfilter import (
    condition,
    exact_form,
    fold_form,
    fold_safe,
    like_pattern,
    prefilter,
    uid_form,
)
from securepacs.model.matching import Range, Single, Universal, Wildcard, parse


@pytest.mark.parametrize(
    ("value", "exact", "fold"),
    [
        (None, "", ""),
        ("", "", ""),
        ("  Doe^John ", "Doe^John", "doe^john"),
        ("Müller", "Müller", "müller"),
        ("A\\B", None, None),
        ("a\x00b", None, None),
        ("\u212aim", "\u212aim", None),  # KELVIN SIGN
        ("\u017fmith", "\u017fmith", None),  # LONG S
        ("\u0130pek", "\u0130pek", None),  # lower() makes two characters of it
        ("ΣΟΦΙΑ", "ΣΟΦΙΑ", None),  # final sigma depends on context
        ("山田^太郎", "山田^太郎", "山田^太郎"),  # no case: safe
    ],
)
def test_forms(value: str | None, exact: str | None, fold: str | None) -> None:
    assert exact_form(value) == exact
    assert fold_form(value) == fold


def test_uid_form() -> None:
    assert uid_form(None) == "" and uid_form(" 1.2.3 ") == "1.2.3"


@pytest.mark.parametrize(
    ("pattern", "like", "escaped"),
    [
        ("DOE*", "DOE%", False),
        ("D?E", "D_E", False),
        ("A_*", "A!_%", True),
        ("100%", "100!%", True),
        ("Hey!*", "Hey!!%", True),
    ],
)
def test_like_pattern(pattern: str, like: str, escaped: bool) -> None:
    assert like_pattern(pattern) == (like, escaped)


def test_fold_safe_alphabet_agrees_with_re_ignorecase() -> None:
    """Within the safe alphabet, two characters match under re.IGNORECASE exactly when
    their lower cases are equal, and lower() keeps one character per character."""
    safe = [chr(cp) for cp in range(0x3000) if fold_safe(chr(cp))]
    text = "".join(safe)
    rng = random.Random(7)
    cased = [c for c in safe if c.lower() != c.upper()]
    caseless = rng.sample([c for c in safe if c.lower() == c.upper()], 300)
    for char in cased + caseless:
        assert len(char.lower()) == 1
        matched = set(re.findall(re.escape(char), text, re.IGNORECASE))
        assert matched == {c for c in safe if c.lower() == char.lower()}, char
    for unsafe in "\u0130\u0131\u017f\u212a\u03a3\u03c3\u03c2\u1e9e":
        assert not fold_safe(unsafe)


def _sql(clause: object) -> str:
    from sqlalchemy.dialects import sqlite

    return str(clause.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[attr-defined]


def test_single_on_fold_column_compares_lower_case_and_keeps_null() -> None:
    cond = condition(patient.c.patient_name, "fold", Single(("Doe^John",), fold_case=True))
    assert _sql(cond) == ("patient.patient_name IN ('doe^john') OR patient.patient_name IS NULL")


def test_identity_columns_have_no_null_branch() -> None:
    cond = condition(study.c.study_uid, "uid", Single(("1.2", "1.3")))
    assert _sql(cond) == "study.study_uid IN ('1.2', '1.3')"


def test_wildcard_escapes_like_characters() -> None:
    cond = condition(study.c.accession_number, "exact", Wildcard(("A_*",)))
    assert _sql(cond) == ("study.accession_number LIKE 'A!_%' ESCAPE '!' OR study.accession_number IS NULL")


def test_date_range() -> None:
    cond = condition(study.c.study_date, "exact", Range("DA", "20200101", None))
    assert _sql(cond) == "study.study_date >= '20200101' OR study.study_date IS NULL"


@pytest.mark.parametrize(
    ("column", "kind", "matcher"),
    [
        (study.c.study_time, "exact", Range("TM", "0800", "1000")),  # TM normalises first
        (patient.c.patient_name, "fold", Range("DA", "1", "2")),  # lower-case breaks order
        (patient.c.patient_id, "uid", Single(("x",), fold_case=True)),
        (study.c.description, "exact", Wildcard(("ct*",), fold_case=True)),
        (patient.c.patient_name, "fold", Wildcard(("\u017f*",), fold_case=True)),
        (study.c.study_uid, "uid", Single(tuple(str(n) for n in range(6000)))),
        (study.c.study_uid, "uid", Universal()),
    ],
)
def test_untranslatable_matchers_are_left_to_python(column, kind, matcher) -> None:  # type: ignore[no-untyped-def]
    assert condition(column, kind, matcher) is None


def test_prefilter_skips_what_it_cannot_translate() -> None:
    clauses = prefilter(
        {
            "PatientName": parse("PN", "doe*"),
            "StudyTime": parse("TM", "0800-0900"),
            "NumberOfStudyRelatedInstances": parse("IS", "3"),
            "ModalitiesInStudy": parse("CS", "CT\\MR"),
        }
    )
    texts = [_sql(c) for c in clauses]
    assert texts[0] == "patient.patient_name LIKE 'doe%' OR patient.patient_name IS NULL"
    assert texts[1].startswith("study.id IN (SELECT series.study_pk")
    assert len(texts) == 2
