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


def _expected(row: dict[str, str], options: set[Option], vr: str) -> str:
    """The table's action under `options`: K wins; C only where cleaning is mechanical
    (dates and times under Modified Dates); else the Basic Profile's."""
    chosen = [row[o.value] for o in options if o.value in row]
    if "K" in chosen:
        return "K"
    if "C" in chosen and vr in ("DA", "DT", "TM") and \
            Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options and \
            row.get(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES.value) == "C":
        return "C"
    return row["basicProfile"]


OPTION_SETS = [
    set(),
    {Option.RETAIN_UIDS},
    {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS},
    {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_DEVICE_IDENTITY,
     Option.RETAIN_INSTITUTION_IDENTITY},
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "+".join(
    sorted(x.cli_name for x in o)) or "basic")
def test_every_attribute_of_the_table(options: set[Option]) -> None:
    original, listed = _rich_dataset()
    rows = {r["tag"]: r for r in standard_table()}
    assert len(listed) > 250  # the test covers most of the table
    out = Deidentifier(frozenset(options)).apply(original)
    assert out is not None
    checked = 0
    for tag, text in listed.items():
        if tag in (0x00100010, 0x00100020):  # Z, filled with a pseudonym (a dummy value)
            continue
        before = original[tag]
        action = _expected(rows[text], options, before.VR)
        after = out.get(tag)
        name = keyword_for_tag(tag) or text
        if action == "X":
            assert after is None, f"{name} ({action}) kept"
        elif action == "K" and before.VR == "SQ":  # kept, its items de-identified in turn
            assert after is not None and len(after.value) == len(before.value), name
            assert not after.value[0].PatientName, f"{name}: nested name kept"
        elif action == "K":
            assert after is not None and after.value == before.value, f"{name} (K) changed"
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
@pytest.mark.parametrize("options", [set(), {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}])
def test_dciodvfy_finds_no_new_errors(tmp_path: Path, options: set[Option]) -> None:
    images = _study(2)
    deid = Deidentifier(frozenset(options))
    for n, ds in enumerate([*images, _sr_referencing(images)]):
        src = tmp_path / f"in{n}.dcm"
        ds.save_as(src, enforce_file_format=True)
        out = deidentify_part10(deid, src.read_bytes())
        assert out is not None
        dst = tmp_path / f"out{n}.dcm"
        dst.write_bytes(out)
        new = _dciodvfy_errors(dst) - _dciodvfy_errors(src)
        assert not new, f"dciodvfy errors only after de-identification: {sorted(new)}"
        assert dcmread(dst).file_meta.MediaStorageSOPInstanceUID == dcmread(dst).SOPInstanceUID
