"""What a deletion names and what it removed (pure values).

A deletion names one entity of the Query/Retrieve information model (PS3.4 C.6.2.1: a
study, a series or an instance, by its unique key), optionally with the UIDs of the levels
above it as a DICOMweb URL carries them (PS3.18 10.4.1: ``/studies/{study}/series/{series}``):
then the entity must lie under them, or it is unknown. What the index removed is reported
as a :class:`Removal`, which names the patient and study for the audit trail (PS3.15
A.5.3.2) and lists the blobs to delete afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from securepacs.model.levels import Level

__all__ = ["DeletionTarget", "Removal", "Trashed"]

_LEVELS = (Level.STUDY, Level.SERIES, Level.IMAGE)


@dataclass(frozen=True)
class DeletionTarget:
    """One study, series or instance to delete.

    Attributes
    ----------
    level : Level
        ``STUDY``, ``SERIES`` or ``IMAGE``.
    uid : str
        The Study, Series or SOP Instance UID.
    study_uid, series_uid : str or None
        The levels above, when the caller named them (the entity must lie under them).
    """

    level: Level
    uid: str
    study_uid: str | None = None
    series_uid: str | None = None

    def __post_init__(self) -> None:
        if self.level not in _LEVELS:
            raise ValueError("a deletion names a study, a series or an instance")
        for name in ("uid", "study_uid", "series_uid"):
            value = getattr(self, name)
            if value is None:
                continue
            text = value.strip()
            if not text or len(text) > 64 or not all(c.isdigit() or c == "." for c in text):
                raise ValueError(f"not a DICOM UID: {value[:70]!r}")
            object.__setattr__(self, name, text)

    @classmethod
    def study(cls, uid: str) -> DeletionTarget:
        return cls(Level.STUDY, uid)

    @classmethod
    def series(cls, uid: str, *, study_uid: str | None = None) -> DeletionTarget:
        return cls(Level.SERIES, uid, study_uid=study_uid)

    @classmethod
    def instance(cls, uid: str, *, study_uid: str | None = None,
                 series_uid: str | None = None) -> DeletionTarget:
        return cls(Level.IMAGE, uid, study_uid=study_uid, series_uid=series_uid)

    def describe(self) -> str:
        """``study 1.2.3``, ``series 1.2.3.4``, ``instance 1.2.3.4.5``."""
        word = {Level.STUDY: "study", Level.SERIES: "series", Level.IMAGE: "instance"}
        return f"{word[self.level]} {self.uid}"


@dataclass(frozen=True)
class Removal:
    """What a deletion removed from the index (or, found without removing, would remove).

    Attributes
    ----------
    target : DeletionTarget
    organization : str
        The organisation whose rows these were.
    patient_id, patient_name : str
        The study's patient ("" when absent).
    study_uid : str
    study_gone : bool
        True when the study row itself went (its last series deleted).
    instances : int
        How many instance rows went.
    sop_classes : tuple of (str, int)
        SOP Class UID -> count of the instances that went (for the audit message).
    blob_keys : tuple of str
        The blobs to delete now that no row refers to them.
    kept_until : datetime or None
        Set when the blobs went to the trash instead (restorable until then).
    shares_revoked : int
        Active shares of the study revoked because the study went (``study_gone``).
    """

    target: DeletionTarget
    organization: str
    patient_id: str
    patient_name: str
    study_uid: str
    study_gone: bool = False
    instances: int = 0
    sop_classes: tuple[tuple[str, int], ...] = ()
    blob_keys: tuple[str, ...] = field(default=(), repr=False)
    kept_until: datetime | None = None
    shares_revoked: int = 0


@dataclass(frozen=True)
class Trashed:
    """One deleted instance kept restorable (the ``trash_days`` setting).

    Attributes
    ----------
    blob_key : str
        Its blob, kept until `purge_at`.
    organization, study_uid, patient_id, sop_class_uid : str
        What it was (for the restore and the audit trail).
    purge_at : datetime
        When the blob is deleted for good.
    """

    blob_key: str
    organization: str
    study_uid: str
    patient_id: str
    sop_class_uid: str
    purge_at: datetime
