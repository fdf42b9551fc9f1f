"""Fixtures for the index tests: an index on a real SQLite file and hand-built records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from securepacs.index.repository import SqlIndex
from securepacs.model.levels import Level
from securepacs.model.record import InstanceRecord

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def build_record(
    sop: str,
    *,
    series: str = "1.2.3.1",
    study: str = "1.2.3",
    patient: dict[str, str] | None = None,
    study_values: dict[str, str] | None = None,
    series_values: dict[str, str] | None = None,
    image_values: dict[str, str] | None = None,
    blob_key: str | None = None,
) -> InstanceRecord:
    """A record with sensible defaults; the dicts override or add values per level."""
    return InstanceRecord(
        values={
            Level.PATIENT: {"PatientID": "P1", "PatientName": "Doe^John", **(patient or {})},
            Level.STUDY: {"StudyInstanceUID": study, **(study_values or {})},
            Level.SERIES: {"SeriesInstanceUID": series, "Modality": "CT", **(series_values or {})},
            Level.IMAGE: {"SOPInstanceUID": sop, "SOPClassUID": CT_IMAGE, **(image_values or {})},
        },
        transfer_syntax_uid=EXPLICIT_LE,
        blob_key=blob_key or f"blobs/{sop}",
        size=1234,
        source_ae="MODALITY",
    )


@pytest.fixture
def record() -> Callable[..., InstanceRecord]:
    """`build_record`, for tests: ``record("1.2.3.1.1", series=..., study_values={...})``."""
    return build_record


@pytest.fixture
def index_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'index' / 'index.db'}"


@pytest.fixture
def index(index_url: str) -> Iterator[SqlIndex]:
    idx = SqlIndex(index_url)
    idx.create_schema()
    yield idx
    idx.close()
