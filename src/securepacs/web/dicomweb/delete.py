"""DELETE routes: remove a study, a series or an instance (docs/deletion.md).

PS3.18 defines no delete transaction; these follow the resource URLs of WADO-RS
(PS3.18 10.4.1) as other archives do (dcm4chee-arc, Orthanc's DICOMweb plugin):
``DELETE {base}/studies/{study}``, ``.../series/{series}``,
``.../series/{series}/instances/{instance}``. One responsibility: check the caller (a
client certificate; import tokens never delete) and the origin (a state-changing request
from another origin is refused), then call
:class:`~securepacs.services.deletion.DeletionService`. Answers: 204 deleted, 404 unknown
(another organisation's entity too), 403 no ``delete`` permission or another origin, 401
no certificate. An optional ``reason`` query parameter goes to the audit trail.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from securepacs.errors import PacsError
from securepacs.model.deletion import DeletionTarget
from securepacs.model.levels import Level
from securepacs.services.deletion import DeletionService
from securepacs.web.dicomweb.responses import NO_STORE, error, error_for
from securepacs.web.dicomweb.shared import Edge

__all__ = ["routes"]


def routes(service: DeletionService, edge: Edge) -> list[Route]:
    """The DELETE routes, relative to the DICOMweb base path."""

    def remove(level: Level):  # noqa: ANN202 - a Starlette endpoint
        async def endpoint(request: Request) -> Response:
            caller = edge.certificate_caller(request)
            if caller is None:
                return error(401, "a client certificate is required")
            if not edge.same_origin(request):
                return error(403, "cross-origin requests may not delete")
            p = request.path_params
            try:
                target = DeletionTarget(level, p.get("instance") or p.get("series") or p["study"],
                                        study_uid=p["study"] if level is not Level.STUDY else None,
                                        series_uid=p.get("series") if level is Level.IMAGE
                                        else None)
            except ValueError as exc:
                return error(400, str(exc))
            reason = request.query_params.get("reason")
            try:
                await run_in_threadpool(service.delete, caller.identity, target,
                                        address=caller.address, reason=reason)
            except PacsError as exc:
                return error_for(exc)
            return Response(status_code=204, headers=dict(NO_STORE))
        return endpoint

    study = "/studies/{study}"
    series = study + "/series/{series}"
    return [
        Route(study, remove(Level.STUDY), methods=["DELETE"]),
        Route(series, remove(Level.SERIES), methods=["DELETE"]),
        Route(series + "/instances/{instance}", remove(Level.IMAGE), methods=["DELETE"]),
    ]
