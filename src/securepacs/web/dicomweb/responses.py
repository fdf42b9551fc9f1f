"""What the DICOMweb routes answer: DICOM JSON, errors with a reason, multipart streams.

One responsibility: the HTTP shapes shared by QIDO-RS, WADO-RS and STOW-RS:
``application/dicom+json`` bodies (PS3.18 F.2), the error table from the service
exceptions to HTTP statuses (PS3.18 8.5; 403 and the other refusals say why, in a small
JSON body, without a traceback), the ``Warning: 299`` header (PS3.18 8.3.4.6), and
``multipart/related`` responses written part by part as the parts are produced.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from securepacs.errors import (
    AccessRefused,
    AuditError,
    MediaError,
    NotPermitted,
    PacsError,
    QueryError,
    StorageError,
)
from securepacs.services.deletion import NothingToDelete
from securepacs.services.dicomweb_wado import NoSuchResource, NotConvertible
from securepacs.web.dicomweb.multipart import closing, new_boundary, part_head

__all__ = ["DICOM_JSON", "StreamAborted", "dicom_json", "error", "error_for", "multipart",
           "warning_header"]

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
NO_STORE = {"Cache-Control": "no-store"}


def dicom_json(payload: Any, *, status: int = 200, warnings: Iterable[str] = (),
               headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    out = dict(NO_STORE, **(headers or {}))
    shown = warning_header(warnings)
    if shown:
        out["Warning"] = shown
    return Response(body, status_code=status, media_type=DICOM_JSON, headers=out)


def warning_header(warnings: Iterable[str]) -> str:
    """``299 securepacs: "..."`` values, one per warning (RFC 7234 5.5 syntax)."""
    items = []
    for text in warnings:
        clean = text.replace('"', "'").replace("\r", " ").replace("\n", " ")
        items.append(f'299 securepacs "{clean}"')
    return ", ".join(items).encode("latin-1", "replace").decode("latin-1")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": message}).encode()
    return Response(body, status_code=status, media_type="application/json",
                    headers=dict(NO_STORE, **(headers or {})))


#: Service exception -> HTTP status; most specific first.
_STATUSES: tuple[tuple[type[BaseException], int], ...] = (
    (NotPermitted, 403),
    (AccessRefused, 401),
    (NoSuchResource, 404),
    (NothingToDelete, 404),
    (NotConvertible, 406),
    (QueryError, 400),
    (AuditError, 503),
    (StorageError, 503),
    (MediaError, 422),
    (PacsError, 500),
)


def error_for(exc: BaseException) -> Response:
    """The response for a service exception (a one-line reason, never a traceback)."""
    for kind, status in _STATUSES:
        if isinstance(exc, kind):
            if status >= 500:
                log.error("dicomweb: %s", exc)
            message = str(exc) if status != 503 else f"the archive cannot answer now: {exc}"
            return error(status, message)
    log.error("dicomweb: unexpected %r", exc, exc_info=exc)
    return error(500, "internal error")


class StreamAborted(Exception):
    """A multipart response failed after its status was sent: the connection must be
    closed without ending the body (already logged, in one line)."""


def multipart(parts: Iterator[tuple[str, Iterable[bytes]]], media_type: str, *,
              status: int = 200, what: str = "multipart response") -> StreamingResponse:
    """A ``multipart/related; type=media_type`` response written as `parts` come.

    `parts` yields (content type, pieces of the content) pairs; nothing is collected.
    When producing a part fails (a blob deleted while its study streams), the status is
    already sent: the body is then never ended (no closing boundary, no last chunk) and
    :class:`StreamAborted` tells the listener to close the connection, so that the client
    sees a broken transfer, never a complete response with parts missing. `what` names
    the response in that log line.
    """
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        # Read on the connection's own event loop (web.dicomweb.listener runs one per
        # connection, so blocking file reads stall nobody), not a thread hop per piece.
        first = True
        done = 0
        try:
            for content_type, pieces in parts:
                yield part_head(content_type, boundary, first=first)
                first = False
                for piece in pieces:
                    yield piece
                done += 1
        except (PacsError, OSError) as exc:
            log.warning("dicomweb: %s aborted after %d part(s): %s", what, done, exc)
            raise StreamAborted(str(exc)) from None
        yield closing(boundary, empty=first)

    kind = f'multipart/related; type="{media_type}"; boundary={boundary}'
    return StreamingResponse(body(), status_code=status, headers=dict(NO_STORE),
                             media_type=kind)
