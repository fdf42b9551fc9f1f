"""STOW-RS routes (PS3.18 10.5): store instances sent as multipart/related.

One responsibility: check the caller (certificate, or import token) and the origin before
the body is read, then read the ``multipart/related; type="application/dicom"`` body as it
arrives (:class:`~securepacs.web.dicomweb.multipart.MultipartReader`), spooling each part
to a temp file (in the blob store's spool folder, so ingest moves it in without a copy)
and storing it with :class:`~securepacs.services.dicomweb_stow.StowService` as soon as it
is complete: memory stays bounded whatever the upload's size. The answer is the Store
Instances Response as DICOM JSON. Cross-origin: the CORS preflight and the actual request
of the disc viewer (see :mod:`securepacs.web.dicomweb.shared`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from securepacs.errors import AccessRefused, PacsError
from securepacs.services.dicomweb_access import Caller
from securepacs.services.dicomweb_stow import PartSpool, StowOutcome, StowService, stow_response
from securepacs.web.dicomweb.multipart import (
    MalformedMultipart,
    MultipartReader,
    Part,
    parse_media_type,
)
from securepacs.web.dicomweb.responses import NO_STORE, dicom_json, error, error_for
from securepacs.web.dicomweb.shared import CORS_HEADERS, Edge

__all__ = ["routes"]

log = logging.getLogger(__name__)


class _Spool:
    """The part being received (a :class:`PartSpool` of the service), if any."""

    def __init__(self, service: StowService) -> None:
        self.service = service
        self.file: PartSpool | None = None
        self.part: Part | None = None

    def begin(self, part: Part) -> None:
        self.file, self.part = self.service.spool(), part

    def write(self, data: bytes) -> None:
        if self.file is not None:
            self.file.write(data)

    def end(self) -> tuple[Part, Path]:
        assert self.file is not None and self.part is not None
        out = (self.part, self.file.finish())
        self.file = self.part = None
        return out

    def discard(self) -> None:
        if self.file is not None:
            self.file.discard()
        self.file = self.part = None


def routes(service: StowService, edge: Edge) -> list[Route]:
    """The STOW-RS routes (POST and its CORS preflight), relative to the base path."""

    def preflight(request: Request) -> Response:
        method = request.headers.get("access-control-request-method", "")
        asked = {h.strip().lower() for h in
                 request.headers.get("access-control-request-headers", "").split(",")
                 if h.strip()}
        if not edge.cors_allowed(request) or method != "POST" or not asked <= set(CORS_HEADERS):
            log.warning("dicomweb: CORS preflight refused (origin %r, method %r, headers %s)",
                        edge.origin(request), method, sorted(asked))
            return error(403, "cross-origin requests are answered only for STOW-RS from "
                              "the disc viewer")
        headers = edge.cors_headers(request, credentials=True)
        headers.update({"Access-Control-Allow-Methods": "POST",
                        "Access-Control-Allow-Headers": ", ".join(CORS_HEADERS),
                        "Access-Control-Max-Age": "600"})
        return Response(status_code=204, headers=headers)

    async def store(request: Request) -> Response:
        cors: dict[str, str] = {}
        # A refusal of the caller is readable by an allowed origin (the disc viewer), so the
        # page can say "the token is not valid" rather than "the server cannot be reached";
        # it tells nothing but that, and stores nothing.
        refused = (edge.cors_headers(request, credentials=False)
                   if not edge.same_origin(request) and edge.cors_allowed(request) else {})
        try:
            caller: Caller | None = edge.certificate_caller(request)
            if caller is None:
                caller = edge.token_caller(request)
        except AccessRefused as exc:
            log.warning("dicomweb STOW-RS from %s refused: %s", edge.address(request), exc)
            return error(401, "the import token is not valid (unknown, revoked or expired)",
                         refused)
        if caller is None:
            return error(401, "a client certificate or an import token is required",
                         {"WWW-Authenticate": 'Bearer realm="securepacs"', **refused})
        if not edge.same_origin(request):
            if not edge.cors_allowed(request):
                log.warning("dicomweb STOW-RS from origin %r refused", edge.origin(request))
                return error(403, "this origin may not store here")
            cors = edge.cors_headers(request, credentials=caller.via == "certificate")
        kind, params = parse_media_type(request.headers.get("content-type", ""))
        if kind != "multipart/related" or params.get("type", "").lower() != "application/dicom":
            return error(415, 'send multipart/related; type="application/dicom"', cors)
        try:
            await run_in_threadpool(service.begin, caller)
            reader = MultipartReader(params.get("boundary", ""))
        except MalformedMultipart as exc:
            log.warning("dicomweb STOW-RS from %s: %s (Content-Type %r)",
                        caller.identity.describe(), exc, request.headers.get("content-type"))
            return error(400, str(exc), cors)
        except PacsError as exc:
            response = error_for(exc)
            response.headers.update(cors)
            return response
        study = request.path_params.get("study")
        outcomes: list[StowOutcome] = []
        spool = _Spool(service)
        try:
            async for chunk in request.stream():
                for event, value in reader.feed(chunk):
                    if event == "part":
                        assert isinstance(value, Part)
                        spool.begin(value)
                    elif event == "data":
                        spool.write(value)  # type: ignore[arg-type]
                    else:
                        part, path = spool.end()
                        outcomes.append(await run_in_threadpool(
                            _store_part, service, caller, part, path, study))
            reader.close()
        except MalformedMultipart as exc:
            log.warning("dicomweb STOW-RS from %s: %s", caller.identity.describe(), exc)
            return error(400, f"malformed multipart body: {exc} ({len(outcomes)} part(s) "
                              "before it were handled)", cors)
        except OSError as exc:
            log.error("dicomweb STOW-RS: cannot spool a part: %s", exc)
            return error(503, f"cannot keep the received part: {exc.strerror or exc}", cors)
        finally:
            spool.discard()
        base = edge.base_url(request)
        status, ds = stow_response(
            outcomes, study_url=lambda uid: f"{base}/studies/{uid}",
            instance_url=lambda o: (f"{base}/studies/{o.study_uid}/instances/"
                                    f"{o.sop_instance_uid}"))
        return dicom_json(ds.to_json_dict(), status=status, headers=dict(NO_STORE, **cors))

    return [
        Route("/studies", store, methods=["POST"]),
        Route("/studies/{study}", store, methods=["POST"]),
        Route("/studies", preflight, methods=["OPTIONS"]),
        Route("/studies/{study}", preflight, methods=["OPTIONS"]),
    ]


def _store_part(service: StowService, caller: Caller, part: Part, path: Path,
                study: str | None) -> StowOutcome:
    kind, _ = parse_media_type(part.content_type or "application/dicom")
    if kind != "application/dicom":
        path.unlink(missing_ok=True)
        return service.not_dicom(part.content_type)
    return service.store_file(caller, path, study)
