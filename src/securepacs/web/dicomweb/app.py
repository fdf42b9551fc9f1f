"""The DICOMweb ASGI app: QIDO-RS, WADO-RS and STOW-RS routes under one base path.

One responsibility: put the routes of :mod:`~securepacs.web.dicomweb.qido`,
:mod:`~securepacs.web.dicomweb.wado` and :mod:`~securepacs.web.dicomweb.stow` under the
base path (PS3.18 8.2: the service's Base URL, e.g. ``https://host:port/dicomweb``),
served by :class:`~securepacs.web.dicomweb.listener.DicomwebServer`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from securepacs.services.deletion import DeletionService
from securepacs.services.dicomweb_qido import QidoService
from securepacs.services.dicomweb_stow import StowService
from securepacs.services.dicomweb_wado import WadoService
from securepacs.web.dicomweb import delete, qido, stow, wado
from securepacs.web.dicomweb.responses import error
from securepacs.web.dicomweb.shared import Edge

__all__ = ["create_app"]


def create_app(qido_service: QidoService, wado_service: WadoService,
               stow_service: StowService, edge: Edge,
               deletion: DeletionService | None = None) -> Starlette:
    """The DICOMweb app (routes under ``edge.base_path``); with `deletion`, the DELETE
    routes of :mod:`~securepacs.web.dicomweb.delete` too."""
    routes = [*stow.routes(stow_service, edge), *qido.routes(qido_service, edge),
              *wado.routes(wado_service, edge)]
    if deletion is not None:
        routes += delete.routes(deletion, edge)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, "no such DICOMweb resource")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, "method not allowed here")

    return Starlette(routes=[Mount(edge.base_path, routes=routes)],
                     exception_handlers={404: not_found, 405: not_allowed})
