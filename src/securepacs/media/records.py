"""What a DICOMDIR directory record needs of an instance, filled in where the instance lacks it.

One responsibility: the Type 1 keys of the PATIENT, STUDY, SERIES and IMAGE directory
records (PS3.3 F.5.1-F.5.4: Patient ID; Study Date, Study Time, Study ID; Modality, Series
Number; Instance Number) are often empty in real files, and the records cannot be made
without them. As DCMTK's ``dcmmkdir +I`` ("invent missing attributes") does, the values are
filled in *for the directory record only* — the instance itself is sealed onto the media
byte for byte as it came:

- Patient ID: one invented ID per study (``NOID`` and a counter), so that two studies
  without a Patient ID never become one patient on the media;
- Study Date / Study Time: the first of Series, Acquisition and Content Date / Time the
  instance has, else an explicit unknown value (``19000101`` / ``000000``);
- Study ID and Series Number: a counter per file-set / study; Instance Number: a counter
  per series; Modality: ``OT`` (other).

Each filled value is reported so that the user sees what the disc's index invented. What
cannot be invented without breaking references (the UIDs) is not: such an instance is left
out by the caller, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset

__all__ = ["RecordFiller"]

_FALLBACK = {
    "StudyDate": (("SeriesDate", "AcquisitionDate", "ContentDate"), "19000101"),
    "StudyTime": (("SeriesTime", "AcquisitionTime", "ContentTime"), "000000"),
}


def _empty(ds: Dataset, keyword: str) -> bool:
    return keyword not in ds or ds[keyword].VM == 0 or not str(ds[keyword].value).strip()


@dataclass
class RecordFiller:
    """Fills the directory-record keys an instance lacks, consistently across one file-set."""

    _patients: dict[str, str] = field(default_factory=dict)
    _studies: dict[str, str] = field(default_factory=dict)
    _series: dict[str, str] = field(default_factory=dict)
    _series_per_study: dict[str, int] = field(default_factory=dict)
    _instances: dict[str, int] = field(default_factory=dict)

    def fill(self, ds: Dataset) -> list[str]:
        """Fill in `ds` (a header read for the DICOMDIR, never written) what its records need.

        Returns
        -------
        list of str
            One ``Keyword=value`` per value filled in (empty when the instance had them all).
        """
        invented: list[str] = []
        study_uid = str(ds.get("StudyInstanceUID", ""))
        series_uid = str(ds.get("SeriesInstanceUID", ""))

        def put(keyword: str, value: str) -> None:
            setattr(ds, keyword, value)
            invented.append(f"{keyword}={value}")

        if _empty(ds, "PatientID"):
            value = self._patients.setdefault(study_uid, f"NOID{len(self._patients) + 1:04d}")
            put("PatientID", value)
        for keyword, (sources, unknown) in _FALLBACK.items():
            if _empty(ds, keyword):
                found = next((str(ds[s].value) for s in sources if not _empty(ds, s)), unknown)
                put(keyword, found)
        if _empty(ds, "StudyID"):
            put("StudyID", self._studies.setdefault(study_uid, str(len(self._studies) + 1)))
        if _empty(ds, "Modality"):
            put("Modality", "OT")
        if _empty(ds, "SeriesNumber"):
            if series_uid not in self._series:
                count = self._series_per_study.get(study_uid, 0) + 1
                self._series_per_study[study_uid] = count
                self._series[series_uid] = str(count)
            put("SeriesNumber", self._series[series_uid])
        if _empty(ds, "InstanceNumber"):
            self._instances[series_uid] = self._instances.get(series_uid, 0) + 1
            put("InstanceNumber", str(self._instances[series_uid]))
        return invented
