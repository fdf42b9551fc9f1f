"""De-identification checked against PS3.15 Table E.1-1 as the ``dicom-standard`` package
ships it (read here from the package, not from securepacs' generated copy)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from deidfixtures import sr_referencing as _sr_referencing
from deidfixtures import study as _study
from factories import ROOT, make_dataset
from securepacs.services.deid_profile import Option
from securepacs.services.deidentify import Deidentifier, deidentify_part10

REPO = Path(__file__).resolve().parents[3]


def standard_table() -> list[dict[str, str]]:
    for f in importlib.metadata.files("dicom-standard") or []:
        if f.name == "confidentiality_profile_attributes.json":
            return json.loads(Path(str(f.locate())).read_text())
    raise AssertionError("the dicom-standard package is not installed")


def test_generated_table_is_the_standard_table() -> None:
    """deid_table.json is exactly what scripts/gen-deid-table makes from the package."""
    made = subprocess.run([sys.executable, str(REPO / "scripts/gen-deid-table"), "/dev/stdout"],
                          capture_output=True, text=True, check=True).stdout
    committed = (REPO / "src/securepacs/services/deid_table.json").read_text()
    assert made.replace("wrote /dev/stdout\n", "") == committed


_VALUES = {"AE": "STATION1", "AS": "045Y", "CS": "VALUE1", "DA": "20240115",
           "DT": "20240115101500", "TM": "101500", "DS": "12.5", "IS": "7", "LO": "Identifying",
           "LT": "Identifying text", "PN": "Doe^John", "SH": "IDENT", "ST": "Identifying",
           "UC": "Identifying", "UT": "Identifying text", "UR": "http://example.org/p",
           "FL": 1.5, "FD": 2.5, "SL": 3, "SS": 3, "UL": 3, "US": 3}


def _rich_dataset() -> tuple[Dataset, dict[int, str]]:
    """An image with one value for every exact tag of Table E.1-1 whose VR is plain."""
    ds = make_dataset()
    listed: dict[int, str] = {}
    for row in standard_table():
        if not re.fullmatch(r"\([0-9A-F]{4},[0-9A-F]{4}\)", row["tag"].upper()):
            continue  # groups (50xx, 60xx) and the private attributes: tested apart
        tag = int(row["tag"][1:5] + row["tag"][6:10], 16)
        if tag >> 16 in (0x0002, 0xFFFA, 0xFFFC, 0x0000) or tag == 0x7FE00010:
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr == "UI":
            ds.add_new(tag, vr, generate_uid(ROOT))
        elif vr == "SQ":
            item = Dataset()
            item.PatientName = "Inner^Name"
            ds.add_new(tag, vr, Sequence([item]))
        elif vr in _VALUES:
            ds.add_new(tag, vr, _VALUES[vr])
        else:
            continue
        listed[tag] = row["tag"]
    ds.BurnedInAnnotation = "NO"
    return ds, listed


CLEAN = {Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS}
#: The allowlist of the Clean options' tests: the LT and UT value of _rich_dataset, written
#: with another case and spacing (compared without either)
ALLOW = frozenset({"identifying   TEXT"})


def _expected(row: dict[str, str], options: set[Option], vr: str, value: object) -> str:
    """The table's action under `options`: K wins; C on dates and times under Modified
    Dates shifts them; C of a Clean option keeps a text value on the allowlist (K) and a
    structured-content or graphics sequence (C, its items de-identified); else the Basic
    Profile's."""
    chosen = [row[o.value] for o in options if o.value in row]
    if "K" in chosen:
        return "K"
    if "C" in chosen and vr in ("DA", "DT", "TM") and \
            Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options and \
            row.get(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES.value) == "C":
        return "C"
    cleaning = {o for o in options & CLEAN if row.get(o.value) == "C"}
    if cleaning - {Option.CLEAN_DESCRIPTORS} and vr == "SQ":
        return "C"
    if cleaning and vr not in ("SQ", "UI") and str(value).casefold() == "identifying text":
        return "K"
    return row["basicProfile"]


OPTION_SETS = [
    set(),
    {Option.RETAIN_UIDS},
    {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS},
    {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_DEVICE_IDENTITY,
     Option.RETAIN_INSTITUTION_IDENTITY},
    {Option.CLEAN_DESCRIPTORS},
    {Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS},
    {Option.CLEAN_DESCRIPTORS, Option.RETAIN_PATIENT_CHARACTERISTICS,
     Option.RETAIN_LONGITUDINAL_MODIFIED_DATES},
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "+".join(
    sorted(x.cli_name for x in o)) or "basic")
def test_every_attribute_of_the_table(options: set[Option]) -> None:
    original, listed = _rich_dataset()
    rows = {r["tag"]: r for r in standard_table()}
    assert len(listed) > 250  # the test covers most of the table
    allow = ALLOW if options & CLEAN else frozenset()
    out = Deidentifier(frozenset(options), allowlist=allow).apply(original)
    assert out is not None
    checked = 0
    kept_clean = 0
    for tag, text in listed.items():
        if tag in (0x00100010, 0x00100020):  # Z, filled with a pseudonym (a dummy value)
            continue
        before = original[tag]
        action = _expected(rows[text], options, before.VR, before.value)
        after = out.get(tag)
        name = keyword_for_tag(tag) or text
        if action == "X":
            assert after is None, f"{name} ({action}) kept"
        elif action in ("K", "C") and before.VR == "SQ":  # kept, items de-identified in turn
            assert after is not None and len(after.value) == len(before.value), name
            assert not after.value[0].PatientName, f"{name}: nested name kept"
        elif action == "K":
            assert after is not None and after.value == before.value, f"{name} (K) changed"
            kept_clean += rows[text].get("basicProfile") != "K" and any(
                rows[text].get(o.value) == "C" for o in options & CLEAN)
        elif action == "C":
            assert after is not None and after.value != before.value or before.VR == "TM", name
            if before.VR == "DA":
                shifted = date.fromisoformat(str(after.value))
                assert 365 <= (date(2024, 1, 15) - shifted).days <= 3650, name
        elif before.VR == "SQ":
            assert after is None or all("PatientName" not in i or not i.PatientName
                                        for i in after.value), f"{name}: nested name kept"
        elif action == "Z" or action == "X/Z":
            assert after is None or after.value in (None, "", b""), f"{name} ({action}) kept"
        elif action in ("U", "X/Z/U*"):
            assert after is None or after.value in (None, "") or \
                str(after.value).startswith("2.25."), f"{name} ({action}) kept"
        else:  # D, X/D, Z/D, X/Z/D: removed, emptied or a dummy, never the original
            assert after is None or after.value != before.value, f"{name} ({action}) kept"
        checked += 1
    assert checked == len(listed) - 2
    if Option.CLEAN_DESCRIPTORS in options:  # the allowlisted descriptors (LT, UT) were kept
        assert kept_clean >= 5
    assert out.PatientIdentityRemoved == "YES"
    codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100"
    assert len(codes) == 1 + len(options)
    assert not [e for e in out if e.tag.is_private]


def test_references_resolve_inside_one_export() -> None:
    images = _study(3)
    sr = _sr_referencing(images)
    deid = Deidentifier()
    out_images = [deid.apply(i) for i in images]
    out_sr = deid.apply(sr)
    assert out_sr is not None and all(i is not None for i in out_images)
    exported = {i.SOPInstanceUID for i in out_images if i is not None}
    assert not exported & {i.SOPInstanceUID for i in images}
    evidence = out_sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == out_images[0].StudyInstanceUID  # type: ignore[union-attr]
    refs = {r.ReferencedSOPInstanceUID for r in evidence.ReferencedSeriesSequence[0]
            .ReferencedSOPSequence}
    assert refs == exported
    assert out_sr.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID \
        in exported
    assert len({i.StudyInstanceUID for i in out_images if i is not None}) == 1


def test_stable_mapping_only_with_the_key() -> None:
    images = _study(2)
    key = b"k" * 32

    def uids(deid: Deidentifier) -> list[str]:
        return [deid.apply(i).SOPInstanceUID for i in images]  # type: ignore[union-attr]

    assert uids(Deidentifier(mapping_key=key)) == uids(Deidentifier(mapping_key=key))
    assert uids(Deidentifier()) != uids(Deidentifier())
    assert uids(Deidentifier(mapping_key=key)) != uids(Deidentifier(mapping_key=b"j" * 32))
    with pytest.raises(ValueError):
        Deidentifier(mapping_key=b"short")
    same = [Deidentifier(mapping_key=key).apply(i) for i in images]
    assert same[0].PatientID == same[1].PatientID != images[0].PatientID  # type: ignore[union-attr]


def test_burned_in_annotation_left_out_unless_included() -> None:
    ds = make_dataset()
    ds.BurnedInAnnotation = "YES"
    deid = Deidentifier()
    assert deid.apply(ds) is None and deid.left_out == 1
    assert Deidentifier(include_burned_in=True).apply(ds) is not None
    us = make_dataset(modality="US")  # no flag on a modality that usually burns in
    assert Deidentifier().apply(us) is None


def _dciodvfy_errors(path: Path) -> set[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return {line.split(" - ", 1)[-1].strip() for line in (done.stdout + done.stderr).splitlines()
            if line.startswith("Error")}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
@pytest.mark.parametrize("options", [
    set(), {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES},
    {Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS}],
    ids=["basic", "modified-dates", "clean"])
def test_dciodvfy_finds_no_new_errors(tmp_path: Path, options: set[Option]) -> None:
    images = _study(2)
    sr = _sr_referencing(images)
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.ConceptNameCodeSequence = sr.ConceptNameCodeSequence
    text.TextValue = "Mr Doe fell at home"
    sr.ContentSequence = Sequence([*sr.ContentSequence, text])
    deid = Deidentifier(frozenset(options), allowlist=frozenset({"chest"} if options & CLEAN
                                                                 else ()))
    for n, ds in enumerate([*images, sr]):
        src = tmp_path / f"in{n}.dcm"
        ds.save_as(src, enforce_file_format=True)
        out = deidentify_part10(deid, src.read_bytes())
        assert out is not None
        dst = tmp_path / f"out{n}.dcm"
        dst.write_bytes(out)
        new = _dciodvfy_errors(dst) - _dciodvfy_errors(src)
        assert not new, f"dciodvfy errors only after de-identification: {sorted(new)}"
        assert dcmread(dst).file_meta.MediaStorageSOPInstanceUID == dcmread(dst).SOPInstanceUID


def _with_text_content(sr: Dataset) -> Dataset:
    """`sr` with a TEXT and a DATE content item, an acquisition context and a graphic text."""
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.TextValue = "Mr Doe fell at home"
    day = Dataset()
    day.RelationshipType, day.ValueType, day.Date = "CONTAINS", "DATE", "19700101"
    sr.ContentSequence = Sequence([*sr.ContentSequence, text, day])
    context = Dataset()
    context.ValueType, context.TextValue = "TEXT", "Finding"
    sr.AcquisitionContextSequence = Sequence([context])
    graphic = Dataset()
    label = Dataset()
    label.UnformattedTextValue = "Doe^John"
    graphic.TextObjectSequence = Sequence([label])
    graphic.GraphicLayer = "LAYER1"
    sr.GraphicAnnotationSequence = Sequence([graphic])
    return sr


def test_free_text_of_structured_content_and_graphics() -> None:
    images = _study(1)
    sr = _with_text_content(_sr_referencing(images))
    basic = Deidentifier().apply(sr)
    assert basic is not None
    items = basic.ContentSequence
    assert items[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID.startswith("2.25.")
    assert items[1].TextValue == "ANONYMOUS" and items[2].Date == "19000101"
    assert not basic.AcquisitionContextSequence  # X/Z: emptied
    assert basic.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue \
        == "ANONYMOUS"
    allow = frozenset({"finding", "mr doe fell at home", "doe^john"})
    # an allowlist alone keeps nothing: only the option that cleans the attribute does
    assert Deidentifier(allowlist=allow).apply(sr).ContentSequence[1].TextValue == "ANONYMOUS"  # type: ignore[union-attr]
    cleaned = Deidentifier(frozenset({Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS}),
                           allowlist=allow).apply(sr)
    assert cleaned is not None
    assert cleaned.ContentSequence[1].TextValue == "Mr Doe fell at home"
    assert cleaned.AcquisitionContextSequence[0].TextValue == "Finding"
    assert cleaned.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue \
        == "Doe^John"
    codes = [i.CodeValue for i in cleaned.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113103", "113104"]
    not_listed = Deidentifier(frozenset({Option.CLEAN_STRUCTURED_CONTENT}),
                              allowlist=frozenset({"finding"})).apply(sr)
    assert not_listed is not None and not_listed.ContentSequence[1].TextValue == "ANONYMOUS"


def test_clean_descriptors_keeps_only_allowlisted_values() -> None:
    ds = make_dataset(study_description="CHEST PA")
    ds.SeriesDescription = "Dr Smith's patient"
    ds.BurnedInAnnotation = "NO"
    out = Deidentifier(frozenset({Option.CLEAN_DESCRIPTORS}),
                       allowlist=frozenset({"chest pa"})).apply(ds)
    assert out is not None
    assert out.StudyDescription == "CHEST PA" and "SeriesDescription" not in out
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100", "113105"]
    assert "clean-descriptors" in out.DeidentificationMethod
    with pytest.raises(ValueError, match="needs an allowlist"):
        Deidentifier(frozenset({Option.CLEAN_DESCRIPTORS}))


@pytest.mark.parametrize("name", ["clean-pixel-data", "clean-recognizable-visual-features",
                                  "retain-safe-private"])
def test_options_that_cannot_be_done_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"option {name} is not offered: "):
        Option.from_cli(name)


def test_the_cli_help_names_every_offered_option() -> None:
    from securepacs.cli.deid_options import OPTION_NAMES

    assert all(o.cli_name in OPTION_NAMES for o in Option)


@pytest.mark.parametrize("options", [set(), {Option.CLEAN_GRAPHICS}], ids=["basic", "graphics"])
def test_overlay_groups_under_clean_graphics(options: set[Option]) -> None:
    """Table E.1-1's (60XX,3000) Overlay Data and (60XX,4000) Overlay Comments: X, and C
    under Clean Graphics: comments kept when allowlisted, the bitmap never (no rule can
    clean burned-in text out of a bitmap): an overlay without its bitmap is removed whole."""
    ds = make_dataset()
    ds.BurnedInAnnotation = "NO"
    for group in (0x6000, 0x6002):
        ds.add_new((group << 16) | 0x0010, "US", 16)
        ds.add_new((group << 16) | 0x3000, "OW", b"\0" * 32)
        ds.add_new((group << 16) | 0x4000, "LT", "Arrow" if group == 0x6000 else "Dr Who's mark")
    out = Deidentifier(frozenset(options), allowlist=frozenset({"arrow"})).apply(ds)
    assert out is not None
    assert 0x60003000 not in out and 0x60023000 not in out
    assert 0x60024000 not in out  # not allowlisted
    # the overlay's bitmap is gone, so is the rest of its group (no invalid Overlay Plane)
    assert not [e for e in out if e.tag.group in (0x6000, 0x6002)]
