"""C-FIND keys the index does not keep, with DCMTK findscu (issue 17 item 5).

Sequence matching (PS3.4 C.2.2.2.6) on ProcedureCodeSequence, ImageType returned and
matched at IMAGE level, a private return key returned with its private creator: all
answered from the stored file.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from harness import HOST, Server, dcmtk, needs_dcmtk, tls_args
from pydicom.dataset import Dataset

from factories import make_dataset

pytestmark = [pytest.mark.integration, needs_dcmtk]


def _find(server: Server, pki, out: Path, level: str, *keys: str) -> list[Dataset]:  # noqa: ANN001
    out.mkdir(parents=True)
    args = ["findscu", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert), "-S",
            "-aec", server.ae_title, "-k", f"QueryRetrieveLevel={level}"]
    for k in keys:
        args += ["-k", k]
    result = dcmtk(*args, "-X", "-od", str(out), HOST, str(server.port), timeout=60)
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture
def stored(server: Server, pki, tmp_path: Path) -> Dataset:  # noqa: ANN001
    ds = make_dataset(patient_id="SEQ-1")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    code = Dataset()
    code.CodeValue = "P1"
    code.CodingSchemeDesignator = "99LOCAL"
    code.CodeMeaning = "Chest CT"
    ds.ProcedureCodeSequence = [code]
    block = ds.private_block(0x0019, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "private value")
    path = tmp_path / "seq.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = dcmtk("storescu", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert),
                   "-aec", server.ae_title, HOST, str(server.port), path, timeout=30)
    assert result.returncode == 0 and "Store Failed" not in result.stderr, result.stderr
    return ds


def test_sequence_matching_on_a_study_key(server: Server, pki, tmp_path: Path,  # noqa: ANN001
                                          stored: Dataset) -> None:
    none = _find(server, pki, tmp_path / "q1", "STUDY", "PatientID=SEQ-1",
                 "ProcedureCodeSequence[0].CodeValue=NOSUCHCODE")
    assert none == []
    found = _find(server, pki, tmp_path / "q2", "STUDY", "PatientID=SEQ-1",
                  "ProcedureCodeSequence[0].CodeValue=P1",
                  "ProcedureCodeSequence[0].CodeMeaning")
    assert len(found) == 1
    [item] = found[0].ProcedureCodeSequence
    assert (item.CodeValue, item.CodeMeaning) == ("P1", "Chest CT")
    assert "CodingSchemeDesignator" not in item  # only what the key's item asked for
    whole = _find(server, pki, tmp_path / "q3", "STUDY", "PatientID=SEQ-1",
                  "ProcedureCodeSequence")
    assert whole[0].ProcedureCodeSequence[0].CodingSchemeDesignator == "99LOCAL"


def test_return_keys_the_index_does_not_keep(server: Server, pki, tmp_path: Path,  # noqa: ANN001
                                             stored: Dataset) -> None:
    study, series = stored.StudyInstanceUID, stored.SeriesInstanceUID
    found = _find(server, pki, tmp_path / "q1", "IMAGE", f"StudyInstanceUID={study}",
                  f"SeriesInstanceUID={series}", "SOPInstanceUID", "ImageType",
                  "(0019,0010)", "(0019,1001)")
    assert len(found) == 1
    assert list(found[0].ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert found[0][0x00190010].value == "ACME 1.0"
    assert found[0][0x00191001].value in ("private value", b"private value")
    matched = _find(server, pki, tmp_path / "q2", "IMAGE", f"StudyInstanceUID={study}",
                    f"SeriesInstanceUID={series}", "ImageType=*AXIAL")
    assert len(matched) == 1
    unmatched = _find(server, pki, tmp_path / "q3", "IMAGE", f"StudyInstanceUID={study}",
                      f"SeriesInstanceUID={series}", "ImageType=DERIVED*")
    assert unmatched == []


def test_a_key_that_cannot_be_matched_is_answered_with_pending_warning(  # noqa: ANN001
        server: Server, pki, tmp_path: Path, stored: Dataset) -> None:
    """PS3.4 C.4.1.1.4: a key whose value cannot be matched (a private key of unknown VR)
    gets Pending 0xFF01, "one or more Optional Keys were not supported"."""
    args = ["findscu", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert), "-S", "-v",
            "-aec", server.ae_title, "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=SEQ-1"]
    plain = dcmtk(*args, HOST, str(server.port), timeout=60)
    assert plain.returncode == 0 and "WarningUnsupported" not in plain.stderr, plain.stderr
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "SEQ-1"
    query.add_new(0x00191001, "UN", b"private value ")  # findscu -k cannot set a UN value
    path = tmp_path / "query.dcm"
    query.save_as(path, implicit_vr=False, little_endian=True)
    odd = dcmtk(*args, HOST, str(server.port), path, timeout=60)
    assert odd.returncode == 0, odd.stderr
    assert "Pending: WarningUnsupportedOptionalKeys" in odd.stderr, odd.stderr
    server.wait_for_log(r"not supported for matching, answered with 0xFF01: 00191001")
