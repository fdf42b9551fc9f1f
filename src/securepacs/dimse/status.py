"""One explicit table from service outcomes and errors to DIMSE statuses.

Statuses from PS3.4 B.2.3 (C-STORE), C.4.1.1.4 (C-FIND), C.4.2.1.5 / C.4.3.1.4
(C-MOVE / C-GET) and PS3.7 C (general).
"""

from __future__ import annotations

from securepacs.errors import (
    InvalidInstanceError,
    PacsError,
    QueryError,
    SopClassMismatchError,
    StorageError,
    StorageFullError,
    UnknownDestinationError,
)
from securepacs.services.ingest import Outcome

SUCCESS = 0x0000
PENDING = 0xFF00
#: C-FIND Pending, "one or more Optional Keys were not supported for existence and/or
#: matching for this Identifier" (PS3.4 C.4.1.1.4, Table C.4-1)
PENDING_WARNING = 0xFF01
CANCEL = 0xFE00
REFUSED_NOT_AUTHORIZED = 0x0124
PROCESSING_FAILURE = 0x0110
STORE_OUT_OF_RESOURCES = 0xA700
STORE_DATASET_MISMATCH = 0xA900
STORE_CANNOT_UNDERSTAND = 0xC000
#: Duplicate kept: a Warning; PS3.4 has no dedicated code, B006 "Elements Discarded"
#: says what happened (the new copy was discarded), the comment says why.
STORE_DUPLICATE_WARNING = 0xB006
FIND_IDENTIFIER_MISMATCH = 0xA900
FIND_UNABLE_TO_PROCESS = 0xC000
FIND_OUT_OF_RESOURCES = 0xA700
MOVE_UNKNOWN_DESTINATION = 0xA801
RETRIEVE_UNABLE_TO_PROCESS = 0xC000
RETRIEVE_IDENTIFIER_MISMATCH = 0xA900
RETRIEVE_OUT_OF_RESOURCES = 0xA701

STORE_OUTCOMES: dict[Outcome, tuple[int, str]] = {
    Outcome.STORED: (SUCCESS, ""),
    Outcome.REPLACED: (SUCCESS, ""),
    Outcome.DUPLICATE: (STORE_DUPLICATE_WARNING, "Duplicate SOP Instance UID: first copy kept"),
}

#: Most specific first; the first class that matches wins.
STORE_ERRORS: tuple[tuple[type[BaseException], int], ...] = (
    (StorageFullError, STORE_OUT_OF_RESOURCES),
    (SopClassMismatchError, STORE_DATASET_MISMATCH),
    (InvalidInstanceError, STORE_CANNOT_UNDERSTAND),
    (StorageError, STORE_OUT_OF_RESOURCES),
    (PacsError, PROCESSING_FAILURE),
)

QUERY_ERRORS: tuple[tuple[type[BaseException], int], ...] = (
    (QueryError, FIND_IDENTIFIER_MISMATCH),
    (StorageError, FIND_OUT_OF_RESOURCES),
    (PacsError, FIND_UNABLE_TO_PROCESS),
)

RETRIEVE_ERRORS: tuple[tuple[type[BaseException], int], ...] = (
    (UnknownDestinationError, MOVE_UNKNOWN_DESTINATION),
    (QueryError, RETRIEVE_IDENTIFIER_MISMATCH),
    (StorageError, RETRIEVE_OUT_OF_RESOURCES),
    (PacsError, RETRIEVE_UNABLE_TO_PROCESS),
)


def status_for(exc: BaseException, table: tuple[tuple[type[BaseException], int], ...],
               fallback: int = PROCESSING_FAILURE) -> int:
    """The status `table` gives `exc`, or `fallback` for anything unexpected."""
    for kind, status in table:
        if isinstance(exc, kind):
            return status
    return fallback
