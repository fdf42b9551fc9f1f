"""PS3.4 C.2.2.2 matching rules, one by one (pure: no socket, no database)."""

from __future__ import annotations

import pytest

from securepacs.model import matching as m


@pytest.mark.parametrize("value", ["", None, "*", "**"])
def test_universal(value: str | None) -> None:
    matcher = m.parse("LO", value)
    assert isinstance(matcher, m.Universal)
    assert matcher.matches(None) and matcher.matches("anything")


def test_single_value_is_exact_for_strings_and_folds_case_for_names() -> None:
    assert m.parse("LO", "PAT1").matches("PAT1")
    assert not m.parse("LO", "PAT1").matches("pat1")
    assert not m.parse("LO", "PAT1").matches("PAT10")
    assert not m.parse("LO", "PAT1").matches(None)
    assert m.parse("PN", "DOE^JANE").matches("Doe^Jane")


def test_wildcards() -> None:
    assert m.parse("PN", "Doe*").matches("DOE^JOHN")
    assert m.parse("LO", "A?C").matches("ABC")
    assert not m.parse("LO", "A?C").matches("ABBC")
    assert m.parse("LO", "*B*").matches("ABC")
    assert not m.parse("LO", "*x*").matches("ABC")
    assert m.parse("LO", "50%_*").matches("50%_off")  # SQL metacharacters are literal
    assert not m.parse("LO", "50%_*").matches("50xyoff")


def test_wildcard_does_not_apply_to_uids_or_dates() -> None:
    assert isinstance(m.parse("UI", "1.2*"), m.Single)
    assert not m.parse("UI", "1.2*").matches("1.2.3")


def test_uid_list() -> None:
    matcher = m.parse("UI", "1.2.3\\1.2.4")
    assert matcher.matches("1.2.4") and not matcher.matches("1.2.5")


@pytest.mark.parametrize(
    ("query", "stored", "expected"),
    [
        ("20240101-20240131", "20240115", True),
        ("20240101-20240131", "20240131", True),
        ("20240101-20240131", "20240201", False),
        ("-20240131", "19991231", True),
        ("20240101-", "20991231", True),
        ("20240101-", "20231231", False),
    ],
)
def test_date_ranges(query: str, stored: str, expected: bool) -> None:
    assert m.parse("DA", query).matches(stored) is expected


def test_time_ranges_normalise_precision() -> None:
    assert m.parse("TM", "0900-1000").matches("093015.123")
    assert m.parse("TM", "0900-1000").matches("09")
    assert m.parse("TM", "0900-1000").matches("100001")  # 10:00 names the whole minute
    assert not m.parse("TM", "0900-1000").matches("100100")
    assert m.parse("TM", "09:00-10:00").matches("0930")


def test_multi_valued_stored_and_alternatives() -> None:
    assert m.parse("CS", "MR").matches("CT\\MR")
    assert m.parse("CS", "CT\\US").matches("US")
    assert not m.parse("CS", "PT").matches("CT\\MR")


def test_malformed_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        m.parse("DA", "20240101-20240102\\20240201-20240202")


def test_upper_time_bound_covers_its_whole_unit() -> None:
    assert m.parse("TM", "-08").matches("083000")
    assert not m.parse("TM", "-08").matches("090000")
    assert m.parse("TM", "0800-0900").matches("090030")


def test_datetime_with_negative_offset_is_a_value_not_a_range() -> None:
    matcher = m.parse("DT", "20200101120000-0500")
    assert isinstance(matcher, m.Single) and matcher.matches("20200101120000-0500")
    ranged = m.parse("DT", "20200101120000-0500-20200102")
    assert isinstance(ranged, m.Range)
    assert ranged.matches("20200101180000")
    assert m.parse("DT", "2020-2021").matches("20210615")


def test_blank_stored_values_are_empty() -> None:
    assert not m.parse("DA", "-20200101").matches("  ")
    assert not m.parse("CS", "*\\ZZ").matches("  ")


def test_name_folding_agrees_between_single_and_wildcard() -> None:
    for name in ("Smith", "ſmith", "SMITH"):
        assert m.parse("PN", "ſmith").matches(name) == m.parse("PN", "ſmit?").matches(name)


def test_sequence_matching_needs_one_item_matching_every_key() -> None:
    """PS3.4 C.2.2.2.6: at least one stored item matches all keys of the key's item."""
    from securepacs.model.matching import ItemKey, matching_items

    stored = [{"CodeValue": "P1", "CodingSchemeDesignator": "99LOCAL"},
              {"CodeValue": "P2", "CodingSchemeDesignator": "DCM"}]
    keys = (ItemKey("CodeValue", "SH", "P2"), ItemKey("CodingSchemeDesignator", "SH", ""))
    assert matching_items(keys, stored) == [1]
    mixed = (ItemKey("CodeValue", "SH", "P1"), ItemKey("CodingSchemeDesignator", "SH", "DCM"))
    assert matching_items(mixed, stored) == []  # not across items
    assert matching_items((ItemKey("CodeValue", "SH", "P*"),), stored) == [0, 1]
    nested = [{"Outer": [{"CodeValue": "X"}]}, {"Outer": []}]
    inner = (ItemKey("Outer", "SQ", items=(ItemKey("CodeValue", "SH", "X"),)),)
    assert matching_items(inner, nested) == [0]
    assert ItemKey("Outer", "SQ", items=(ItemKey("CodeValue", "SH", ""),)).is_universal()
