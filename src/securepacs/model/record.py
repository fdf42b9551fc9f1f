"""The attributes the index keeps per level, and one received instance as an index record.

The attribute lists follow the required and unique keys of PS3.4 C.6.1.1 / C.6.2.1 plus
the optional keys PACS users query most. Values are kept as their DICOM string form
(multi-valued joined with a backslash), which is what C-FIND matching works on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from securepacs.model.levels import Level

#: Attributes kept per level (keywords), unique key first.
LEVEL_ATTRIBUTES: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: (
        "PatientID",
        "IssuerOfPatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "OtherPatientIDs",
    ),
    Level.STUDY: (
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
    ),
    Level.SERIES: (
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
    ),
    Level.IMAGE: (
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "ContentDate",
        "ContentTime",
        "Rows",
        "Columns",
        "NumberOfFrames",
    ),
}

#: The unique key of each level (PS3.4 C.6.1.1).
UNIQUE_KEY: dict[Level, str] = {level: attrs[0] for level, attrs in LEVEL_ATTRIBUTES.items()}

#: Attributes the index computes rather than stores (PS3.4 C.6.1.1.3 / C.6.2.1.2), per level.
COMPUTED_ATTRIBUTES: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                    "NumberOfPatientRelatedInstances"),
    Level.STUDY: ("ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances"),
    Level.SERIES: ("NumberOfSeriesRelatedInstances",),
    Level.IMAGE: (),
}


def level_of(keyword: str) -> Level | None:
    """The level an attribute belongs to, or None when the index does not keep it."""
    for level in Level:
        if keyword in LEVEL_ATTRIBUTES[level] or keyword in COMPUTED_ATTRIBUTES[level]:
            return level
    return None


@dataclass(frozen=True)
class InstanceRecord:
    """What the index stores for one instance: attribute values per level plus storage facts.

    Attributes
    ----------
    values : dict[Level, dict[str, str]]
        For each level, keyword -> DICOM string value for every attribute of
        :data:`LEVEL_ATTRIBUTES` present in the data set (absent ones omitted).
    transfer_syntax_uid : str
        The transfer syntax the instance was received and stored in.
    blob_key : str
        Where the blob store holds the Part 10 bytes.
    size : int
        Size of the Part 10 file in bytes.
    organization : str
        The organisation that owns the instance (the storing identity's; docs/tenants.md).
    """

    values: dict[Level, dict[str, str]]
    transfer_syntax_uid: str
    blob_key: str
    size: int
    source_ae: str = ""
    organization: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def uid(self, level: Level) -> str:
        """The unique key value at `level` (always present, validated by the ingest service)."""
        return self.values[level][UNIQUE_KEY[level]]

    @property
    def sop_instance_uid(self) -> str:
        return self.uid(Level.IMAGE)

    @property
    def sop_class_uid(self) -> str:
        return self.values[Level.IMAGE]["SOPClassUID"]


@dataclass(frozen=True)
class StoredInstance:
    """A stored instance as the index knows it, enough to fetch and send it again."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int
    study_uid: str
    series_uid: str
    patient_id: str = ""
    organization: str = ""  # the owner (docs/tenants.md)
