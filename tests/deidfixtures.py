"""Small studies for the de-identification tests: images and an SR that references them."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from factories import ROOT, make_dataset


def study(n: int) -> list[Dataset]:
    study, series = generate_uid(ROOT), generate_uid(ROOT)
    return [make_dataset(study_uid=study, series_uid=series, instance_number=i + 1)
            for i in range(n)]


def sr_referencing(images: list[Dataset]) -> Dataset:
    sr = make_dataset(study_uid=images[0].StudyInstanceUID, sop_class="1.2.840.10008.5.1.4.1.1.88.22",
                      modality="SR")
    for name in ("Rows", "Columns", "PixelData", "BitsAllocated", "BitsStored", "HighBit",
                 "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        if name in sr:
            delattr(sr, name)
    sr.CompletionFlag = "COMPLETE"
    sr.VerificationFlag = "UNVERIFIED"
    sr.ValueType = "CONTAINER"
    sr.ContinuityOfContent = "SEPARATE"
    sr.ContentDate, sr.ContentTime = "20240115", "101600"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator = "126000", "DCM"
    title.CodeMeaning = "Imaging Measurement Report"
    sr.ConceptNameCodeSequence = Sequence([title])
    refs = []
    for image in images:
        ref = Dataset()
        ref.ReferencedSOPClassUID = image.SOPClassUID
        ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
        refs.append(ref)
    series = Dataset()
    series.SeriesInstanceUID = images[0].SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence(refs)
    evidence = Dataset()
    evidence.StudyInstanceUID = images[0].StudyInstanceUID
    evidence.ReferencedSeriesSequence = Sequence([series])
    sr.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "IMAGE"
    item.ReferencedSOPSequence = Sequence([refs[0]])
    sr.ContentSequence = Sequence([item])
    return sr
