"""The disc viewer's reconciliation (discviewer/src/reconcile.js) gives the data set that
``securepacs media import`` gives (services/media_import.reconcile), file by file.

pydicom's own test files in every uncompressed transfer syntax (explicit/implicit VR little
endian, explicit big endian, deflated) and an encapsulated one; node runs reconcile.js on
them with a fixed ``now``, pydicom reads both results and compares every element value. The
JavaScript side splices top-level elements, so the pixel data and the file meta must come
out byte for byte.

``CT_small.dcm`` already has Other Patient IDs Sequence: Python's reconcile crashes on it on
main (issue 18 item 2). There the expectation is the documented one (see
:func:`_expected_with_existing_others`): the old sequence's items, then the new item; the
old sequence as it was recorded in Modified Attributes Sequence.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from securepacs.services.coerce import MODIFYING_SYSTEM
from securepacs.services.media_import import Reconciliation, reconcile

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")]

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "discviewer" / "testkit" / "reconcile-cli.mjs"
AT = datetime(2026, 12, 3, 9, 10, 11, 123000, tzinfo=UTC)
FILES = ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
         "image_dfl.dcm", "JPEG2000.dcm", "rtplan.dcm"]
TARGETS = [
    Reconciliation("MRN-77", "HOSP-B", source="media DISC1"),
    Reconciliation("MRN-78", "", "Roe^Anna", "19700102", source="media DISC2"),
    Reconciliation("MRN-79", "HOSP-C", "Müller^Zoë", source="media DISC3"),  # not ASCII
]


def _expected_with_existing_others(ds: Dataset, rec: Reconciliation) -> None:
    """media_import.reconcile as documented, for a file that has Other Patient IDs Sequence.

    On main, ``reconcile`` adds the sequence's value instead of its element (AttributeError)
    and appends the new item to the very sequence object it meant to record as the previous
    value. The expectation: the recorded previous value is the old sequence unchanged.
    """
    old_elem = copy.deepcopy(ds["OtherPatientIDsSequence"])
    old_id, old_issuer = str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", ""))
    ds_seq = ds.OtherPatientIDsSequence
    del ds.OtherPatientIDsSequence
    changed = reconcile(ds, rec, at=AT)  # no sequence now: adds a one-item one
    if "OtherPatientIDsSequence" not in changed:
        ds.OtherPatientIDsSequence = ds_seq
        return
    item = ds.OtherPatientIDsSequence[0]
    if any(str(i.get("PatientID", "")) == old_id and str(i.get("IssuerOfPatientID", "")) == old_issuer
           for i in ds_seq):
        raise AssertionError("test data: the media ID is already listed")
    ds.OtherPatientIDsSequence = DicomSequence([*ds_seq, item])
    modified = ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
    del modified.OtherPatientIDsSequence
    modified.add(old_elem)


def _python_side(path: str, rec: Reconciliation) -> tuple[Dataset, str]:
    ds = dcmread(path)
    try:
        reconcile(ds, rec, at=AT)
        return ds, "media_import.reconcile"
    except AttributeError as exc:  # issue 18 item 2, on main
        assert "'Sequence' object has no attribute 'tag'" in str(exc)
        ds = dcmread(path)
        _expected_with_existing_others(ds, rec)
        return ds, "documented expectation (Python crashes: issue 18 item 2)"


def _compare(got: Dataset, want: Dataset, where: str) -> None:
    tags = {e.tag for e in got if e.tag.element != 0} | {e.tag for e in want if e.tag.element != 0}
    for tag in sorted(tags):
        assert tag in got, f"{where}: {tag} missing from the viewer's result"
        assert tag in want, f"{where}: {tag} only in the viewer's result"
        a, b = got[tag], want[tag]
        if a.VR == "SQ":
            assert len(a.value) == len(b.value), f"{where} {tag}: {len(a.value)} items != {len(b.value)}"
            for n, (x, y) in enumerate(zip(a.value, b.value, strict=True)):
                _compare(x, y, f"{where} {tag}[{n}]")
        else:
            va, vb = a.value, b.value
            assert (va in (None, "") and vb in (None, "")) or va == vb, f"{where} {tag}: {va!r} != {vb!r}"


@pytest.mark.parametrize("target", range(len(TARGETS)))
def test_viewer_reconciles_like_media_import(tmp_path: Path, target: int) -> None:
    rec = TARGETS[target]
    sources = [get_testdata_file(name) for name in FILES]
    pairs = [[src, str(tmp_path / Path(src).name)] for src in sources]
    job = {
        "now": AT.isoformat().replace("+00:00", "Z"),
        "target": {"patientId": rec.patient_id, "issuer": rec.issuer,
                   "patientName": rec.patient_name, "birthDate": rec.birth_date},
        "options": {"source": rec.source, "modifyingSystem": MODIFYING_SYSTEM},
        "files": pairs,
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    result = subprocess.run(["node", str(CLI), str(tmp_path / "job.json")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for src, out in pairs:
        name = Path(src).name
        got = dcmread(out)
        want, how = _python_side(src, rec)
        _compare(got, want, f"{name} vs {how}")
        original = dcmread(src)
        assert got.file_meta == original.file_meta, name
        if "PixelData" in original:
            assert got.PixelData == original.PixelData, name
        assert got.SOPInstanceUID == original.SOPInstanceUID
        if original.get("PatientID"):
            assert got.PatientID == rec.patient_id
            record = got.OriginalAttributesSequence[-1]
            assert record.ReasonForTheAttributeModification == "COERCE"
            assert record.AttributeModificationDateTime == "20261203091011.123000+0000"
            assert str(original.PatientID) in [str(i.PatientID) for i in got.OtherPatientIDsSequence]
