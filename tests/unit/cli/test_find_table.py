"""The ``find`` table (issue 18 item 4): UIDs are never wrapped or cut, whatever the width."""

from __future__ import annotations

import pytest

from securepacs.cli.table import Column, render

STUDY = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678901234"
SERIES = "1.2.826.0.1.3680043.8.498.98765432109876543210987654321098765432109876"
COLUMNS = [Column("PatientName"), Column("PatientID"), Column("StudyDate"),
           Column("StudyDescription"), Column("ModalitiesInStudy"),
           Column("StudyInstanceUID", uid=True), Column("SeriesInstanceUID", uid=True)]
ROWS = [["Doe^Jane^Middle^Dr^Jr", "PAT-000000001", "20240101", "CT chest abdomen pelvis contrast",
         "CT\\SR", STUDY, SERIES]]


@pytest.mark.parametrize("width", [80, 100, 160, 240])
def test_uids_stay_whole_on_one_line(width: int) -> None:
    lines, left_out = render(COLUMNS, ROWS, width)
    row = lines[2]
    assert STUDY in row and SERIES in row
    assert len(lines) == 3  # header, rule, one row: nothing folded onto another line
    if len(STUDY) + len(SERIES) + 2 <= width:
        assert all(len(line) <= width for line in lines), (width, lines)


def test_other_columns_shrink_before_any_is_left_out() -> None:
    lines, left_out = render(COLUMNS, ROWS, 200)
    assert left_out == []
    assert "…" in lines[2]  # the description was shortened
    lines, left_out = render(COLUMNS, ROWS, 100)
    assert left_out and "StudyInstanceUID" not in left_out
    assert left_out[-1] == "PatientName" or "ModalitiesInStudy" in left_out


def test_wide_enough_shows_everything_uncut() -> None:
    lines, left_out = render(COLUMNS, ROWS, 400)
    assert left_out == [] and "…" not in "\n".join(lines)
    assert "CT chest abdomen pelvis contrast" in lines[2]
