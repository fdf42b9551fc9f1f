"""The read side of the index: the select of an instance row joined with its series,
study and patient rows, its conversion to :class:`securepacs.model.record.StoredInstance`
(what C-MOVE and C-GET send, PS3.4 C.4.2, C.4.3), and the chunks of values per ``IN``
list.

Used by :class:`securepacs.index.repository.SqlIndex`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row

from securepacs.index.schema import instance, patient, series, study
from securepacs.model.record import StoredInstance

#: Rows per batch: candidate rows per computed-attribute query, values per IN list.
_BATCH = 500


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _BATCH):
        yield values[start : start + _BATCH]


def _stored_select() -> sa.Select[Any]:
    return sa.select(
        instance.c.sop_instance_uid,
        instance.c.sop_class_uid,
        instance.c.transfer_syntax_uid,
        instance.c.blob_key,
        instance.c.size,
        study.c.study_uid,
        series.c.series_uid,
        patient.c.patient_id,
        instance.c.organization,
    ).select_from(instance.join(series).join(study).join(patient))


def _stored(row: Row[Any]) -> StoredInstance:
    return StoredInstance(
        sop_instance_uid=row.sop_instance_uid,
        sop_class_uid=row.sop_class_uid,
        transfer_syntax_uid=row.transfer_syntax_uid,
        blob_key=row.blob_key,
        size=int(row.size),
        study_uid=row.study_uid,
        series_uid=row.series_uid,
        patient_id=row.patient_id,
        organization=row.organization,
    )
