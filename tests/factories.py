"""Tiny DICOM test files, generated (no file is committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

ROOT = "1.2.826.0.1.3680043.10.1234."  # test-only UID root


def make_dataset(
    *,
    patient_id: str = "PAT001",
    patient_name: str = "Doe^Jane",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    sop_class: str = CTImageStorage,
    modality: str = "CT",
    study_date: str = "20240115",
    study_time: str = "101500",
    accession: str = "ACC001",
    instance_number: int = 1,
    rows: int = 16,
    columns: int = 16,
    transfer_syntax: str = ExplicitVRLittleEndian,
    study_description: str = "Chest",
    series_number: int = 1,
) -> Dataset:
    """A small valid image data set with file meta."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid(ROOT)
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid or generate_uid(ROOT)
    ds.SeriesInstanceUID = series_uid or generate_uid(ROOT)
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.StudyDescription = study_description
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    pixels = (np.arange(rows * columns, dtype=np.uint16) * (instance_number + 1)) % 4096
    ds.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    return ds


def write_study(folder: Path, count: int, **kwargs: object) -> list[Path]:
    """`count` instances of one study/series as Part 10 files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = str(kwargs.pop("study_uid", None) or generate_uid(ROOT))
    series_uid = str(kwargs.pop("series_uid", None) or generate_uid(ROOT))
    paths = []
    for i in range(count):
        ds = make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=i + 1,
                          **kwargs)  # type: ignore[arg-type]
        path = folder / f"img{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


__all__ = ["make_dataset", "write_study", "CTImageStorage", "MRImageStorage",
           "SecondaryCaptureImageStorage", "ImplicitVRLittleEndian", "ExplicitVRLittleEndian"]
