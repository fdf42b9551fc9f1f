"""The DICOMweb services without HTTP: QIDO-RS parameters into C-FIND identifiers, the
permission check every transaction goes through, and the STOW-RS response."""

from __future__ import annotations

import pytest

from securepacs.errors import NotPermitted, QueryError
from securepacs.model.identity import Identity, Permission
from securepacs.model.levels import Level
from securepacs.services.audit_events import NoAudit
from securepacs.services.dicomweb_access import Caller, DicomwebAccess
from securepacs.services.dicomweb_qido import QidoService, parse_params
from securepacs.services.dicomweb_stow import StowOutcome, stow_response


def test_parameters_by_keyword_and_tag_with_includefield_limit_offset() -> None:
    params = parse_params([("PatientID", "PAT*"), ("00080020", "20240101-"),
                           ("includefield", "StudyDescription,00081030,all"),
                           ("limit", "5"), ("offset", "10"), ("fuzzymatching", "false")])
    assert params.match == {"PatientID": "PAT*", "StudyDate": "20240101-"}
    assert params.include == ("StudyDescription", "all")
    assert (params.limit, params.offset, params.fuzzy, params.warnings) == (5, 10, False, [])


def test_what_cannot_be_matched_is_a_warning_not_an_error() -> None:
    params = parse_params([("fuzzymatching", "true"), ("Nonsense", "1"),
                           ("00081032.00080100", "X"), ("includefield", "Bogus")])
    text = " ".join(params.warnings)
    assert "fuzzymatching" in text and "Nonsense" in text and "sequence" in text
    assert "Bogus" in text and params.match == {}


@pytest.mark.parametrize("name, value", [("limit", "-1"), ("offset", "x"),
                                         ("fuzzymatching", "maybe")])
def test_bad_parameter_values_are_query_errors(name: str, value: str) -> None:
    with pytest.raises(QueryError, match=name):
        parse_params([(name, value)])


def test_the_identifier_is_a_study_root_c_find_one() -> None:
    service = QidoService(None, DicomwebAccess(NoAudit()), NoAudit())  # type: ignore[arg-type]
    ds, warnings = service.identifier(
        Level.SERIES, parse_params([("Modality", "MR"), ("SOPInstanceUID", "1.2")]),
        study="1.2.3")
    assert ds.QueryRetrieveLevel == "SERIES" and ds.StudyInstanceUID == "1.2.3"
    assert ds.Modality == "MR" and "NumberOfSeriesRelatedInstances" in ds
    assert "SOPInstanceUID" not in ds  # below the level: a warning, not a key
    assert any("SOPInstanceUID" in w for w in warnings)


def _caller(*permissions: Permission) -> Caller:
    return Caller(Identity("ws", 1, "Org", "grp", frozenset(permissions)), "127.0.0.1")


def test_each_transaction_needs_its_dimse_permission() -> None:
    access = DicomwebAccess(NoAudit())
    access.require(_caller(Permission.FIND), "QIDO-RS")
    access.require(_caller(Permission.GET), "WADO-RS")
    access.require(_caller(Permission.STORE), "STOW-RS")
    for transaction, permission in (("QIDO-RS", "find"), ("WADO-RS", "get"),
                                    ("STOW-RS", "store")):
        with pytest.raises(NotPermitted, match=f"'{permission}' permission"):
            access.require(_caller(Permission.ECHO), transaction)


def _urls() -> dict[str, object]:
    return {"study_url": lambda uid: f"/studies/{uid}",
            "instance_url": lambda o: f"/studies/{o.study_uid}/instances/{o.sop_instance_uid}"}


def test_the_stow_response_statuses_and_reasons() -> None:
    ok = StowOutcome("1.2.840.10008.5.1.4.1.1.2", "1.1", "9.9")
    dup = StowOutcome("1.2.840.10008.5.1.4.1.1.2", "1.2", "9.9", warning=0xB006)
    bad = StowOutcome("1.2.840.10008.5.1.4.1.1.2", "1.3", "", failure=0xC000)
    status, ds = stow_response([ok], **_urls())  # type: ignore[arg-type]
    assert status == 200 and ds.RetrieveURL == "/studies/9.9" and "FailedSOPSequence" not in ds
    status, ds = stow_response([ok, dup], **_urls())  # type: ignore[arg-type]
    assert status == 202 and ds.ReferencedSOPSequence[1].WarningReason == 0xB006
    assert "WarningReason" not in ds.ReferencedSOPSequence[0]
    status, ds = stow_response([ok, bad], **_urls())  # type: ignore[arg-type]
    assert status == 202 and ds.FailedSOPSequence[0].FailureReason == 0xC000
    status, ds = stow_response([bad], **_urls())  # type: ignore[arg-type]
    assert status == 409 and "ReferencedSOPSequence" not in ds
    assert stow_response([], **_urls())[0] == 409  # type: ignore[arg-type]


def test_a_spooled_part_gets_the_header_ingest_writes(tmp_path) -> None:  # noqa: ANN001
    """So that ingest moves the file in as the blob instead of copying it."""
    import random
    from io import BytesIO

    from factories import make_dataset
    from securepacs.services import part10
    from securepacs.services.dicomweb_stow import PartSpool

    ds = make_dataset(patient_id="P1")
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    offset = part10.dataset_offset(data[:144])
    rng = random.Random(3)
    spool = PartSpool(tmp_path)
    at = 0
    while at < len(data):
        size = rng.randrange(1, 300)
        spool.write(data[at:at + size])
        at += size
    path = spool.finish()
    header = part10.header_for(str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                               str(ds.file_meta.TransferSyntaxUID))
    assert path.read_bytes() == header + data[offset:]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    junk = PartSpool(tmp_path)
    junk.write(b"not a DICOM file at all" * 20)
    assert junk.finish().read_bytes() == b"not a DICOM file at all" * 20
