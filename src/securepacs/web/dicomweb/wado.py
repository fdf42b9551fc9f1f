"""WADO-RS routes (PS3.18 10.4): instances, metadata, frames, bulk data, rendered, thumbnail.

One responsibility: read the resource and the Accept header (PS3.18 8.7: media types and
the ``transfer-syntax`` parameter), call :class:`~securepacs.services.dicomweb_wado.
WadoService` with the caller, and answer: ``multipart/related`` streamed part by part for
instances, frames and bulk data; DICOM JSON for metadata; one JPEG or PNG for rendered
and thumbnail resources (``window``, ``viewport``, ``quality`` of PS3.18 8.3.5); a
study's or series' rendered resource is a multipart of its instances' rendered images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from securepacs.errors import MediaError, PacsError
from securepacs.model.record import StoredInstance
from securepacs.services import rendering
from securepacs.services.dicomweb_access import Caller
from securepacs.services.dicomweb_wado import Frame, WadoService, frame_list
from securepacs.web.dicomweb.multipart import media_ranges
from securepacs.web.dicomweb.responses import NO_STORE, dicom_json, error, error_for, multipart
from securepacs.web.dicomweb.shared import Edge

__all__ = ["routes"]

#: Transfer syntax -> the image media type of its frames (PS3.18 Table 8.7.3-2/-3).
FRAME_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
}


def _instance_syntaxes(accept: str) -> list[str | None] | None:
    """The transfer syntaxes acceptable for application/dicom, in order (None: as stored);
    None when the Accept header admits no DICOM instance at all."""
    if not accept.strip():
        return [None]
    out: list[str | None] = []
    for kind, params in media_ranges(accept):
        if kind in ("*/*", "multipart/*"):
            out.append(None)
        elif kind == "multipart/related":
            if params.get("type", "application/dicom").lower() in ("application/dicom", "*/*"):
                out.append(params.get("transfer-syntax"))
        elif kind == "application/dicom":
            out.append(params.get("transfer-syntax"))
    return out or None


def _stored_frames_ok(accept: str, syntax: str) -> bool:
    """Whether the Accept header takes frames in their stored (compressed) syntax."""
    for kind, params in media_ranges(accept):
        inner = (params.get("type", "application/octet-stream").lower()
                 if kind == "multipart/related" else kind)
        ts = params.get("transfer-syntax")
        if inner in ("*/*", "image/*") or ts == "*" or ts == syntax:
            return True
        if FRAME_TYPES.get(syntax) == inner and ts is None:
            return True
    return False


def _frame_part(frame: Frame) -> tuple[str, list[bytes]]:
    if frame.transfer_syntax_uid is None:
        return ("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1", [frame.data])
    kind = FRAME_TYPES.get(frame.transfer_syntax_uid, "application/octet-stream")
    return (f"{kind}; transfer-syntax={frame.transfer_syntax_uid}", [frame.data])


def _bulk_type(syntax: str | None) -> str:
    if syntax is None:
        return "application/octet-stream"
    return f"{FRAME_TYPES.get(syntax, 'application/octet-stream')}; transfer-syntax={syntax}"


def _window(text: str | None) -> rendering.Window | None:
    """``window=center,width[,function]`` (PS3.18 8.3.5.1.4); only LINEAR is done."""
    if not text:
        return None
    parts = text.split(",")
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise ValueError("window must be center,width[,function]") from None
    if width < 1:
        raise ValueError("the window width must be at least 1")
    return rendering.Window(center, width)


def _viewport(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    parts = text.split(",")
    try:
        width, height = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise ValueError("viewport must be width,height") from None
    if not (1 <= width <= 4096 and 1 <= height <= 4096):
        raise ValueError("viewport sizes must be 1 to 4096")
    return width, height


def _image_type(accept: str) -> str | None:
    if not accept.strip():
        return "image/jpeg"
    for kind, _ in media_ranges(accept):
        if kind in ("image/jpeg", "image/png"):
            return kind
        if kind in ("image/*", "*/*"):
            return "image/jpeg"
    return None


def routes(service: WadoService, edge: Edge) -> list[Route]:
    """The WADO-RS routes, relative to the DICOMweb base path."""

    def resolve(request: Request) -> tuple[Caller, list[StoredInstance]] | Response:
        caller = edge.certificate_caller(request)
        if caller is None:
            return error(401, "a client certificate is required")
        if not edge.same_origin(request):
            return error(403, "cross-origin requests are answered only for STOW-RS")
        p = request.path_params
        try:
            return caller, service.instances(caller, p["study"], p.get("series"),
                                             p.get("sop"))
        except PacsError as exc:
            return error_for(exc)

    def instances(request: Request) -> Response:
        found = resolve(request)
        if isinstance(found, Response):
            return found
        _, items = found
        wanted = _instance_syntaxes(request.headers.get("accept", ""))
        if wanted is None:
            return error(406, 'only multipart/related; type="application/dicom" is offered')
        chosen: list[tuple[StoredInstance, str | None]] = []
        for item in items:
            syntax = next((ts for ts in wanted if service.can_send(item, ts)), "none")
            if syntax == "none":
                return error(406, f"{item.sop_instance_uid} is stored as "
                                  f"{item.transfer_syntax_uid}, which cannot be converted to "
                                  "the transfer syntax asked for")
            chosen.append((item, syntax))

        def parts() -> Iterator[tuple[str, Iterator[bytes]]]:
            for item, syntax in chosen:
                ts = item.transfer_syntax_uid if syntax in (None, "*") else syntax
                yield (f"application/dicom; transfer-syntax={ts}", service.part10(item, syntax))

        return multipart(parts(), "application/dicom",
                         what=f"WADO-RS retrieve of {request.url.path}")

    def metadata(request: Request) -> Response:
        found = resolve(request)
        if isinstance(found, Response):
            return found
        _, items = found
        base = edge.base_url(request)

        def bulk(item: StoredInstance) -> Callable[[str], str]:
            where = (f"{base}/studies/{item.study_uid}/series/{item.series_uid}/instances/"
                     f"{item.sop_instance_uid}")
            return lambda tag: f"{where}/bulkdata/{tag}"
        try:
            return dicom_json([service.metadata(item, bulk(item)) for item in items])
        except PacsError as exc:
            return error_for(exc)

    def frames(request: Request) -> Response:
        found = resolve(request)
        if isinstance(found, Response):
            return found
        _, items = found
        try:
            numbers = frame_list(request.path_params["frames"])
        except ValueError as exc:
            return error(400, str(exc))
        item = items[0]
        native = not _stored_frames_ok(request.headers.get("accept", ""),
                                       item.transfer_syntax_uid)
        try:
            got = service.frames(item, numbers, native=native)
        except PacsError as exc:
            return error_for(exc)
        return multipart(iter([_frame_part(f) for f in got]), "application/octet-stream")

    def bulkdata(request: Request) -> Response:
        found = resolve(request)
        if isinstance(found, Response):
            return found
        _, items = found
        try:
            got = service.bulkdata(items[0], request.path_params["tag"])
        except PacsError as exc:
            return error_for(exc)
        return multipart(((_bulk_type(syntax), pieces) for syntax, pieces in got),
                         "application/octet-stream")

    def rendered(request: Request, *, thumbnail: bool) -> Response:
        found = resolve(request)
        if isinstance(found, Response):
            return found
        _, items = found
        kind = _image_type(request.headers.get("accept", ""))
        if kind is None:
            return error(406, "rendered images are offered as image/jpeg or image/png")
        query = request.query_params
        try:
            window = _window(query.get("window"))
            viewport = _viewport(query.get("viewport")) or ((128, 128) if thumbnail else None)
            quality = int(query["quality"]) if query.get("quality") else None
            if quality is not None and not 1 <= quality <= 100:
                raise ValueError("quality must be 1 to 100")
            frame = int(request.path_params.get("frames", "1").split(",")[0])
        except ValueError as exc:
            return error(400, str(exc))
        if not thumbnail and "sop" not in request.path_params:
            def pictures() -> Iterator[tuple[str, list[bytes]]]:
                for each in items:  # every instance with an image, one at a time
                    try:
                        yield kind, [service.rendered(each, 1, media_type=kind, window=window,
                                                      viewport=viewport, quality=quality)]
                    except MediaError:
                        continue
            return multipart(pictures(), kind)
        item = items[0] if "sop" in request.path_params else service.representative(items)
        try:
            picture = service.rendered(item, frame, media_type=kind, window=window,
                                       viewport=viewport, quality=quality)
        except PacsError as exc:
            return error_for(exc)
        return Response(picture, media_type=kind, headers=dict(NO_STORE))

    def render(request: Request) -> Response:
        return rendered(request, thumbnail=False)

    def thumb(request: Request) -> Response:
        return rendered(request, thumbnail=True)

    study = "/studies/{study}"
    series = study + "/series/{series}"
    instance = series + "/instances/{sop}"
    out = []
    for where in (study, series, instance):
        out += [Route(where, instances, methods=["GET"]),
                Route(where + "/metadata", metadata, methods=["GET"]),
                Route(where + "/thumbnail", thumb, methods=["GET"])]
    out += [
        Route(study + "/rendered", render, methods=["GET"]),
        Route(series + "/rendered", render, methods=["GET"]),
        Route(instance + "/rendered", render, methods=["GET"]),
        Route(instance + "/frames/{frames}", frames, methods=["GET"]),
        Route(instance + "/frames/{frames}/rendered", render, methods=["GET"]),
        Route(instance + "/frames/{frames}/thumbnail", thumb, methods=["GET"]),
        Route(instance + "/bulkdata/{tag}", bulkdata, methods=["GET"]),
    ]
    return out
