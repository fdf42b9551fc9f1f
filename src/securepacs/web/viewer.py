"""The media viewer: a local web app that opens a disc, shows its images and imports them.

One responsibility: the HTTP side of ``securepacs view`` (ASGI, Starlette): unlock encrypted
media (PS3.10 7.4 secure file-set) with a password or key file, list studies and series,
serve server-rendered PNG frames (PS3.3 C.11 display pipeline in
:mod:`securepacs.services.rendering`) to a small script, and run an import with Patient ID
reconciliation (IHE Import Reconciliation Workflow; PS3.3 C.12.1 Original Attributes) through
:mod:`securepacs.services.media_import`. Everything decrypted stays in memory.

The app listens on loopback only. A random token in the URL opened by the CLI becomes a
``SameSite=Strict`` cookie; every request but the static files needs it, and the Host header
must be a loopback name (no DNS rebinding, no cross-site form posts). Every page and image
is sent with ``Cache-Control: no-store``, so the browser keeps no decrypted data on disk.

The same app serves the archive of ``securepacs serve`` (:meth:`ViewerConfig.for_archive`):
then the catalog is the archive's (:mod:`securepacs.services.archive_view`), the unlock and
import forms do not exist, the home page is a study list with a Patient ID / name search and
each study has a page of its series; instead of the token, every request must carry the
identity admitted by the HTTPS listener (:mod:`securepacs.web.archive`, client certificate
checked by the DICOM gatekeeper) and that identity needs the FIND and GET permissions
(viewing is querying and retrieving, PS3.4 C.4).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from securepacs.errors import MediaError, PacsError, WrongKeyError
from securepacs.model.identity import Identity, Permission
from securepacs.services import archive_view, media_import, media_view, rendering
from securepacs.services.media import keyring_from
from securepacs.services.scuport import StoreConnector
from securepacs.web import viewer_pages as pages

__all__ = ["ViewerConfig", "create_app"]

STATIC = Path(__file__).with_name("static")
COOKIE = "securepacs_view"
_LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}
#: The ASGI scope key where the archive's HTTPS listener puts the admitted identity.
IDENTITY_KEY = "securepacs.identity"
#: What viewing archived images needs: querying and retrieving.
VIEW_PERMISSIONS = (Permission.FIND, Permission.GET)

AnyCatalog = media_view.Catalog | archive_view.ArchiveCatalog


@dataclass
class ViewerConfig:
    """What ``securepacs view`` passes in.

    Attributes
    ----------
    media : Path
        The disc: a folder, an ISO image, or a plain folder of DICOM files.
    token : str
        The secret in the first URL (a cookie afterwards).
    connect : callable, optional
        Returns the store connector for imports (the DICOM client, built by the CLI from the
        client profile and flags); may raise :class:`~securepacs.errors.PacsError`.
    destination : str
        The import destination in words (AE title at host:port), or why there is none.
    archive : ArchiveCatalog, optional
        Archive mode (see the module docstring): this catalog is shown, `media` is only its
        name, `token` is not used.
    on_view : callable, optional
        Archive mode: called with (identity, client address, study) when a series is opened
        (for the audit trail).
    """

    media: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    connect: Callable[[], StoreConnector] | None = None
    destination: str = ""
    archive: archive_view.ArchiveCatalog | None = None
    on_view: Callable[[Identity | None, str, media_view.StudyEntry], None] | None = None

    @classmethod
    def for_archive(cls, catalog: archive_view.ArchiveCatalog, on_view: Callable[
            [Identity | None, str, media_view.StudyEntry], None] | None = None) -> ViewerConfig:
        """The viewer of an archive (served by :mod:`securepacs.web.archive`)."""
        return cls(Path(catalog.name), archive=catalog, on_view=on_view)


@dataclass
class _Import:
    """An import running in a thread, polled by the status page."""

    done: int = 0
    total: int = 0
    summary: media_import.ImportSummary | None = None
    error: str | None = None
    rec: media_import.Reconciliation | None = None


class _State:
    def __init__(self, config: ViewerConfig):
        self.config = config
        self.lock = threading.Lock()
        self.catalog: AnyCatalog | None = config.archive
        self.job: _Import | None = None
        self.needs_key = config.archive is None and media_view.needs_key(config.media)
        if config.archive is None and not self.needs_key:
            self.catalog = media_view.open_catalog(config.media)

    def close(self) -> None:
        with self.lock:
            if self.catalog is not None:
                self.catalog.close()
                self.catalog = None


class _Guard(BaseHTTPMiddleware):
    """Loopback Host header and the session token (cookie, or once in the query string)."""

    def __init__(self, app: Callable[..., Awaitable[None]], token: str):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        host = request.headers.get("host", "").rsplit(":", 1)[0]
        if host not in _LOOPBACK:
            return Response("forbidden host", status_code=403)
        if request.url.path.startswith("/static/"):
            return await call_next(request)
        given = request.query_params.get("token")
        if given is not None and secrets.compare_digest(given, self.token):
            redirect = RedirectResponse(request.url.path, status_code=303)
            redirect.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return redirect
        if not secrets.compare_digest(request.cookies.get(COOKIE, ""), self.token):
            return HTMLResponse(pages.forbidden(), status_code=403)
        response = await call_next(request)
        # pages and images show patient data: keep them out of the browser's disk cache
        response.headers["Cache-Control"] = "no-store"
        return response


class _IdentityGuard(BaseHTTPMiddleware):
    """Archive mode: the listener's admitted identity, with the FIND and GET permissions."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path.startswith("/static/"):
            return await call_next(request)
        identity = request.scope.get(IDENTITY_KEY)
        if not isinstance(identity, Identity):
            return HTMLResponse(pages.message("No admitted client certificate."), status_code=403)
        missing = [p.value.upper() for p in VIEW_PERMISSIONS if not identity.allows(p)]
        if missing:
            return HTMLResponse(pages.not_permitted(identity.name, " and ".join(missing)),
                                status_code=403)
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        return response


def create_app(config: ViewerConfig) -> Starlette:
    """The viewer app for one disc (the media is probed now; unlocking happens in the page).

    Raises
    ------
    MediaError
        The media path cannot be read at all.
    """
    state = _State(config)

    def catalog_or_none() -> AnyCatalog | None:
        with state.lock:
            return state.catalog

    def home(request: Request) -> Response:
        if config.archive is not None:
            search = request.query_params.get("q", "")
            return HTMLResponse(pages.archive_studies(config.archive.name,
                                                      config.archive.search(search), search))
        catalog = catalog_or_none()
        if catalog is None:
            return HTMLResponse(pages.unlock(config.media.name))
        assert isinstance(catalog, media_view.Catalog)
        return HTMLResponse(pages.studies(catalog))

    def study_page(request: Request) -> Response:
        assert config.archive is not None
        try:
            study = config.archive.study(request.path_params["uid"])
        except KeyError:
            return HTMLResponse(pages.message("No such study in the archive."), status_code=404)
        return HTMLResponse(pages.study(config.archive.name, study))

    async def unlock(request: Request) -> Response:
        form = await request.form()
        password = str(form.get("password", "") or "")
        key_path = str(form.get("key_path", "") or "").strip()
        if not password and not key_path:
            return HTMLResponse(pages.unlock(config.media.name, "Type the password, or give "
                                             "the path of a key file."), status_code=400)
        try:
            keyring = keyring_from(password=password or None,
                                   keys=[Path(key_path).expanduser()] if key_path else [])
            catalog = media_view.open_catalog(config.media, keyring)
        except WrongKeyError as exc:
            return HTMLResponse(pages.unlock(config.media.name, f"{exc}. Check the password "
                                             "(it was sent separately from the media)."),
                                status_code=401)
        except (PacsError, OSError) as exc:
            return HTMLResponse(pages.unlock(config.media.name, str(exc)), status_code=400)
        with state.lock:
            old, state.catalog = state.catalog, catalog
        if old is not None:
            old.close()
        return RedirectResponse("/", status_code=303)

    def need() -> AnyCatalog:
        catalog = catalog_or_none()
        if catalog is None:
            raise _Locked()
        return catalog

    def need_media() -> media_view.Catalog:
        catalog = need()
        assert isinstance(catalog, media_view.Catalog)  # no import routes in archive mode
        return catalog

    def series_page(request: Request) -> Response:
        catalog = need()
        uid = request.path_params["uid"]
        try:
            study, series = catalog.study_of(uid), catalog.series(uid)
        except KeyError:
            where = "in the archive" if config.archive is not None else "on this media"
            return HTMLResponse(pages.message(f"No such series {where}."), status_code=404)
        if config.on_view is not None:
            identity = request.scope.get(IDENTITY_KEY)
            config.on_view(identity if isinstance(identity, Identity) else None,
                           request.client.host if request.client else "", study)
        return HTMLResponse(pages.viewer(study, series))

    def series_api(request: Request) -> Response:
        catalog = need()
        try:
            series = catalog.series(request.path_params["uid"])
        except KeyError:
            return JSONResponse({"error": "no such series"}, status_code=404)
        slices = [{"i": i, "f": f} for i, inst in enumerate(series.instances)
                  for f in range(inst.frames)]
        return JSONResponse({"slices": slices, "modality": series.modality,
                             "instances": [{"frames": inst.frames, "tags": inst.tags}
                                           for inst in series.instances]})

    def _float(request: Request, name: str) -> float | None:
        text = request.query_params.get(name)
        try:
            return float(text) if text else None
        except ValueError:
            return None

    def render(request: Request) -> Response:
        catalog = need()
        try:
            series = catalog.series(request.path_params["uid"])
            entry = series.instances[int(request.path_params["index"])]
        except (KeyError, IndexError, ValueError):
            return Response("no such image", status_code=404, media_type="text/plain")
        center, width = _float(request, "wc"), _float(request, "ww")
        window = rendering.Window(center, width) if center is not None and width else None
        try:
            picture = rendering.render_png(catalog.dataset(entry.path),
                                           int(request.path_params["frame"]), window)
        except MediaError as exc:
            return Response(f"{entry.path}: {exc}", status_code=422, media_type="text/plain")
        headers = {}
        if picture.window is not None:
            headers["X-Window"] = f"{picture.window.center:g},{picture.window.width:g}"
        return Response(picture.png, media_type="image/png", headers=headers)

    def thumb(request: Request) -> Response:
        catalog = need()
        try:
            series = catalog.series(request.path_params["uid"])
        except KeyError:
            return Response("no such series", status_code=404, media_type="text/plain")
        shown = [e for e in series.instances if e.frames]
        if not shown:
            return Response("no image", status_code=422, media_type="text/plain")
        entry = shown[len(shown) // 2]
        try:
            png = rendering.render_png(catalog.dataset(entry.path), entry.frames // 2, box=128).png
        except MediaError as exc:
            return Response(str(exc), status_code=422, media_type="text/plain")
        return Response(png, media_type="image/png")

    def import_form(request: Request) -> Response:
        catalog = need_media()
        return HTMLResponse(pages.import_form(media_import.identities(catalog),
                                              config.destination))

    async def import_start(request: Request) -> Response:
        catalog = need_media()
        form = {k: str(v).strip() for k, v in (await request.form()).items()}
        who = form.get("from", "")
        try:
            rec = media_import.Reconciliation(
                patient_id=form.get("patient_id", ""), issuer=form.get("issuer", ""),
                patient_name=form.get("patient_name", ""), birth_date=form.get("birth_date", ""),
                source=media_import.source_label(catalog.name))
        except ValueError as exc:
            return HTMLResponse(pages.import_form(media_import.identities(catalog),
                                                  config.destination, str(exc)), status_code=400)
        entries = [inst for study in catalog.studies if not who or study.patient_id == who
                   for s in study.series for inst in s.instances]
        with state.lock:
            if state.job is not None and state.job.summary is None and state.job.error is None:
                return RedirectResponse("/import/status", status_code=303)
            job = state.job = _Import(total=len(entries), rec=rec)

        def run() -> None:
            def progress(p: media_import.ImportProgress) -> None:
                job.done = p.done
            try:
                if config.connect is None:
                    raise PacsError("no import destination is configured: start the viewer "
                                    "with --server/--aec/--cert/--key/--ca or a client profile")
                connector = config.connect()
                job.summary = media_import.import_catalog(
                    catalog, rec, connector, at=datetime.now(UTC), entries=entries,
                    on_progress=progress)
            except (PacsError, OSError) as exc:
                job.error = str(exc)

        threading.Thread(target=run, name="viewer-import", daemon=True).start()
        return RedirectResponse("/import/status", status_code=303)

    def import_status(request: Request) -> Response:
        with state.lock:
            job = state.job
        if job is None:
            return RedirectResponse("/import", status_code=303)
        return HTMLResponse(pages.import_status(job.done, job.total, job.summary, job.error,
                                                config.destination))

    async def locked(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "the media is locked"}, status_code=401)
        return RedirectResponse("/", status_code=303)

    routes = [
        Route("/", home),
        Route("/series/{uid}", series_page),
        Route("/api/series/{uid}", series_api),
        Route("/render/{uid}/{index:int}/{frame:int}", render),
        Route("/thumb/{uid}", thumb),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if config.archive is not None:
        routes.append(Route("/study/{uid}", study_page))
        guard = Middleware(_IdentityGuard)
    else:
        routes += [
            Route("/unlock", unlock, methods=["POST"]),
            Route("/import", import_form),
            Route("/import", import_start, methods=["POST"]),
            Route("/import/status", import_status),
        ]
        guard = Middleware(_Guard, token=config.token)
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.close()

    app = Starlette(routes=routes, middleware=[guard],
                    exception_handlers={_Locked: locked}, lifespan=lifespan)
    app.state.viewer = state
    return app


class _Locked(Exception):
    """A page that needs the unlocked media was asked for while it is locked."""
