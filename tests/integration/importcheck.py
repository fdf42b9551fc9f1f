"""Shared by the media import tests: encrypted media made at test time, and what the server holds."""

from __future__ import annotations

from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)
from scu import associate

from factories import make_dataset, write_study
from mediafixtures import FAST_ITERATIONS, PASSWORD
from securepacs.services.media import create_media, keyring_from
from securepacs.services.media_view import open_catalog


def make_disc(folder: Path, *, corrupt: bool = False) -> tuple[Path, dict[str, str]]:
    """Encrypted media: PAT001 (a CT series of 3 + a 4-frame instance), PAT002 (2 images).

    Returns the media folder and SOP Instance UID -> Patient ID of every instance. With
    `corrupt`, one sealed file of PAT002 is damaged afterwards (its name is in the errors).
    """
    src = folder / "src"
    files = write_study(src / "ct", 3, patient_id="PAT001", patient_name="Doe^Jane",
                        rows=64, columns=64)
    first = dcmread(files[0], stop_before_pixels=True)
    multi = make_dataset(patient_id="PAT001", patient_name="Doe^Jane",
                         study_uid=first.StudyInstanceUID, rows=32, columns=32, series_number=2)
    multi.NumberOfFrames = 4
    multi.PixelData = b"".join(make_dataset(rows=32, columns=32, instance_number=n).PixelData
                               for n in range(4))
    multi.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    multi.save_as(src / "ct" / "multi.dcm", enforce_file_format=True)
    files.append(src / "ct" / "multi.dcm")
    files += write_study(src / "other", 2, patient_id="PAT002", patient_name="Roe^Richard")
    for path in files:  # an issuer on the media, to see it kept
        ds = dcmread(path)
        ds.IssuerOfPatientID = "OLDSITE"
        ds.save_as(path, enforce_file_format=True)
    uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID):
            str(dcmread(p, stop_before_pixels=True).PatientID) for p in files}
    out = folder / "disc"
    create_media(folders=[src], out_dir=out, password=PASSWORD, at=datetime.now(UTC),
                 iterations=FAST_ITERATIONS)
    if corrupt:  # damage one sealed file of PAT002 (found by opening the media in memory)
        with open_catalog(out, keyring_from(password=PASSWORD)) as catalog:
            victim = next(i.path for study in catalog.studies if study.patient_id == "PAT002"
                          for series in study.series for i in series.instances)
        data = bytearray((out / victim).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (out / victim).write_bytes(bytes(data))
    return out, uids


def held(port: int, pki, study_uid: str) -> dict[str, Dataset]:  # noqa: ANN001
    """SOP Instance UID -> data set of every instance of the study on the server (C-GET)."""
    received: dict[str, Dataset] = {}

    def on_store(event) -> int:  # noqa: ANN001
        ds = dcmread(BytesIO(event.request.DataSet.getvalue()), force=True)
        received[str(event.request.AffectedSOPInstanceUID)] = ds
        return 0x0000

    assoc = associate(port, pki.client.key, pki.client.cert, pki.ca_cert,
                      get_classes=(CTImageStorage,), handlers=[(evt.EVT_C_STORE, on_store)])
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    try:
        statuses = [int(s.Status) for s, _ in assoc.send_c_get(
            identifier, StudyRootQueryRetrieveInformationModelGet) if s]
    finally:
        assoc.release()
    assert statuses and statuses[-1] == 0x0000, [hex(s) for s in statuses]
    return received


def check_reconciled(ds: Dataset, *, new_id: str, issuer: str, old_id: str, old_issuer: str) -> None:
    """The identity is the new one and the media's is kept (Other Patient IDs, Original Attributes)."""
    assert ds.PatientID == new_id
    assert ds.IssuerOfPatientID == issuer
    others = [(o.PatientID, o.get("IssuerOfPatientID", "")) for o in ds.OtherPatientIDsSequence]
    assert (old_id, old_issuer) in others
    record = ds.OriginalAttributesSequence[-1]
    assert record.ReasonForTheAttributeModification == "COERCE"
    previous = record.ModifiedAttributesSequence[0]
    assert previous.PatientID == old_id
    assert previous.IssuerOfPatientID == old_issuer
