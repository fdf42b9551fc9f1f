"""QIDO-RS routes (PS3.18 10.6): search studies, series and instances.

One responsibility: read the resource and query parameters of a search, call
:class:`~securepacs.services.dicomweb_qido.QidoService` with the caller, answer DICOM JSON
(PS3.18 F.2) with the ``Warning`` header for what was ignored.
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.dataset import Dataset
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from securepacs.errors import PacsError
from securepacs.model.levels import Level
from securepacs.services.dicomweb_qido import QidoService, parse_params
from securepacs.web.dicomweb.responses import dicom_json, error, error_for
from securepacs.web.dicomweb.shared import Edge

__all__ = ["routes"]


def _retrieve_url(base: str, level: Level) -> Callable[[Dataset], str]:
    def url(ds: Dataset) -> str:
        study = str(ds.get("StudyInstanceUID", ""))
        out = f"{base}/studies/{study}"
        if level is not Level.STUDY:
            out += f"/series/{ds.get('SeriesInstanceUID', '')}"
        if level is Level.IMAGE:
            out += f"/instances/{ds.get('SOPInstanceUID', '')}"
        return out
    return url


def routes(service: QidoService, edge: Edge) -> list[Route]:
    """The QIDO-RS routes, relative to the DICOMweb base path."""

    def search(level: Level) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            caller = edge.certificate_caller(request)
            if caller is None:
                return error(401, "a client certificate is required")
            if not edge.same_origin(request):
                return error(403, "cross-origin requests are answered only for STOW-RS")
            accept = request.headers.get("accept", "")
            if accept and not any(kind in accept for kind in
                                  ("application/dicom+json", "application/json", "*/*")):
                return error(406, "only application/dicom+json is offered")
            try:
                params = parse_params(request.query_params.multi_items())
                result = service.search(
                    caller, level, params, retrieve_url=_retrieve_url(edge.base_url(request),
                                                                      level),
                    study=request.path_params.get("study"),
                    series=request.path_params.get("series"))
            except PacsError as exc:
                return error_for(exc)
            return dicom_json(result.matches, warnings=result.warnings)
        return endpoint

    return [
        Route("/studies", search(Level.STUDY), methods=["GET"]),
        Route("/series", search(Level.SERIES), methods=["GET"]),
        Route("/instances", search(Level.IMAGE), methods=["GET"]),
        Route("/studies/{study}/series", search(Level.SERIES), methods=["GET"]),
        Route("/studies/{study}/instances", search(Level.IMAGE), methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances", search(Level.IMAGE),
              methods=["GET"]),
    ]
