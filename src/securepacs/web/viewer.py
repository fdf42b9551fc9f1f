"""The media viewer: a local web app that opens a disc, shows its images and imports them.

One responsibility: the HTTP side of ``securepacs view`` (ASGI, Starlette): unlock encrypted
media (PS3.10 7.4 secure file-set) with a password or key file, list studies and series,
serve server-rendered PNG frames (PS3.3 C.11 display pipeline in
:mod:`securepacs.services.rendering`) to a small script, and run an import with Patient ID
reconciliation (IHE Import Reconciliation Workflow; PS3.3 C.12.1 Original Attributes) through
:mod:`securepacs.services.media_import`. Everything decrypted stays in memory.

The app listens on loopback only, and every other program listening on loopback is a
possible attacker: cookies ignore the port (RFC 6265 8.5), so a cookie for 127.0.0.1 reaches
every web server on 127.0.0.1. The app therefore lives under a random path of its own,
``/s/<session>/``, and the random token in the URL opened by the CLI becomes a cookie named
after that session, ``HttpOnly``, ``SameSite=Strict`` and scoped to that path: the browser
sends it only to URLs under the secret path, never to a page on another port. Every request
but the static files needs the cookie, the Host header must be a loopback name (no DNS
rebinding), every state-changing request (POST) must come from the app's own origin
(``Sec-Fetch-Site: same-origin`` when the browser sends it, and an ``Origin`` header equal to
the app's, RFC 6454), and the unlock and import forms carry a per-session CSRF token. Every
page and image is sent with ``Cache-Control: no-store``, so the browser keeps no decrypted
data on disk, ``Referrer-Policy: same-origin`` (the secret path never leaves in a Referer;
``no-referrer`` would make the browser send ``Origin: null`` with the own forms),
and may not be framed or loaded by another origin.

The same app serves the archive of ``securepacs serve`` (:meth:`ViewerConfig.for_archive`):
then the catalog is the archive's (:mod:`securepacs.services.archive_view`), the unlock and
import forms do not exist, the home page is a study list with a Patient ID / name search and
each study has a page of its series; instead of the token, every request must carry the
identity admitted by the HTTPS listener (:mod:`securepacs.web.archive`, client certificate
checked by the DICOM gatekeeper) and that identity needs the FIND and GET permissions
(viewing is querying and retrieving, PS3.4 C.4). Its one state-changing request is the
deletion of a study (docs/deletion.md), offered to an identity with ``delete``: a
confirmation page naming patient and study, then a POST with the CSRF token; any request
other than GET/HEAD must pass the same origin check, and the same headers are sent.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from securepacs.errors import MediaError, NotPermitted, PacsError, WrongKeyError
from securepacs.model.deletion import DeletionTarget
from securepacs.model.identity import Identity, Permission
from securepacs.model.tenancy import Visibility
from securepacs.services import archive_view, media_import, media_view, rendering
from securepacs.services.deletion import DeletionService, NothingToDelete
from securepacs.services.media_read import keyring_from
from securepacs.services.scuport import StoreConnector
from securepacs.services.tenancy import Tenancy
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
    session : str
        The random path segment of this session (``/s/<session>/``) and its cookie's name.
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
    visibility : callable, optional
        Archive mode: what an identity sees (the tenant boundary,
        :meth:`securepacs.services.tenancy.Tenancy.view`); each request's catalog is scoped
        to it. None: the default organisation's view of a default :class:`Tenancy`.
    on_seen : callable, optional
        Archive mode: called with (identity, client address, studies, action) when the
        study list is shown (action ``found``) and when a study or series is opened
        (``viewed``), for the audit of cross-organisation reads (docs/tenants.md).
    """

    media: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    session: str = field(default_factory=lambda: secrets.token_hex(12))
    connect: Callable[[], StoreConnector] | None = None
    destination: str = ""
    archive: archive_view.ArchiveCatalog | None = None
    on_view: Callable[[Identity | None, str, media_view.StudyEntry], None] | None = None
    visibility: Callable[[Identity | None], Visibility] | None = None
    deletion: DeletionService | None = None
    on_seen: Callable[[Identity | None, str, list[media_view.StudyEntry], str],
                      None] | None = None

    @property
    def prefix(self) -> str:
        """Where the app lives: ``/s/<session>`` for media, the root for the archive."""
        return "" if self.archive is not None else f"/s/{self.session}"

    @property
    def cookie(self) -> str:
        """The session cookie's name (one per session)."""
        return f"{COOKIE}_{self.session}"

    @property
    def csrf(self) -> str:
        """The forms' CSRF token, derived from the session token."""
        return hmac.new(self.token.encode(), b"securepacs-view-csrf", "sha256").hexdigest()

    @classmethod
    def for_archive(cls, catalog: archive_view.ArchiveCatalog, on_view: Callable[
            [Identity | None, str, media_view.StudyEntry], None] | None = None,
            visibility: Callable[[Identity | None], Visibility] | None = None,
            deletion: DeletionService | None = None,
            on_seen: Callable[[Identity | None, str, list[media_view.StudyEntry], str],
                              None] | None = None) -> ViewerConfig:
        """The viewer of an archive (served by :mod:`securepacs.web.archive`); with
        `deletion`, a study page offers its deletion to a caller with ``delete``."""
        return cls(Path(catalog.name), archive=catalog, on_view=on_view,
                   visibility=visibility, deletion=deletion, on_seen=on_seen)


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


_SAFE_METHODS = {"GET", "HEAD"}
#: Sent with every response but the static files: no disk cache of patient data, no Referer
#: (the session path is a secret), no framing, no loading by another origin.
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "same-origin",
            "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
            "Cross-Origin-Resource-Policy": "same-origin", "X-Content-Type-Options": "nosniff"}


def cross_origin(request: Request) -> str | None:
    """Why a state-changing `request` does not come from the app's own origin, or None.

    GET and HEAD pass (they change nothing). Others need ``Sec-Fetch-Site: same-origin``
    when the browser sends that header (``same-site`` is not enough: another port of
    127.0.0.1 is the same site), and an ``Origin`` equal to the app's own (RFC 6454 7;
    browsers send it with every POST).
    """
    if request.method in _SAFE_METHODS:
        return None
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return f"a {site} request"
    origin = request.headers.get("origin")
    if origin is None:
        return "a request without an Origin header"
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin != own:
        return "a request from another origin"
    return None


def _secured(response: Response) -> Response:
    for name, value in _HEADERS.items():
        response.headers[name] = value
    return response


class _Guard(BaseHTTPMiddleware):
    """Loopback Host header, the session's path, its token (a cookie scoped to that path, or
    once in the query string), and the origin of state-changing requests."""

    def __init__(self, app: Callable[..., Awaitable[None]], config: ViewerConfig):
        super().__init__(app)
        self.config = config

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        config = self.config
        host = request.headers.get("host", "").rsplit(":", 1)[0]
        if host not in _LOOPBACK:
            return Response("forbidden host", status_code=403)
        root = config.prefix + "/"
        if not request.url.path.startswith(root):
            return _secured(HTMLResponse(pages.forbidden(), status_code=404))
        if request.url.path.startswith(root + "static/"):
            return await call_next(request)
        given = request.query_params.get("token")
        if given is not None and secrets.compare_digest(given, config.token):
            redirect = RedirectResponse(request.url.path, status_code=303)
            redirect.set_cookie(config.cookie, config.token, path=root, httponly=True,
                                samesite="strict")
            return _secured(redirect)
        if not secrets.compare_digest(request.cookies.get(config.cookie, ""), config.token):
            return _secured(HTMLResponse(pages.forbidden(), status_code=403))
        refused = cross_origin(request)
        if refused is not None:
            return _secured(HTMLResponse(pages.message(f"Refused {refused}."), status_code=403))
        return _secured(await call_next(request))


class _IdentityGuard(BaseHTTPMiddleware):
    """Archive mode: the listener's admitted identity, with the FIND and GET permissions."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path.startswith("/static/"):
            return await call_next(request)
        refused = cross_origin(request)
        if refused is not None:
            return _secured(HTMLResponse(pages.message(f"Refused {refused}."), status_code=403))
        identity = request.scope.get(IDENTITY_KEY)
        if not isinstance(identity, Identity):
            return HTMLResponse(pages.message("No admitted client certificate."), status_code=403)
        missing = [p.value.upper() for p in VIEW_PERMISSIONS if not identity.allows(p)]
        if missing:
            return HTMLResponse(pages.not_permitted(identity.name, " and ".join(missing)),
                                status_code=403)
        return _secured(await call_next(request))


def create_app(config: ViewerConfig) -> Starlette:
    """The viewer app for one disc (the media is probed now; unlocking happens in the page).

    Raises
    ------
    MediaError
        The media path cannot be read at all.
    """
    state = _State(config)
    root = config.prefix + "/"

    def page(text: str, status_code: int = 200) -> HTMLResponse:
        return HTMLResponse(pages.with_base(text, root), status_code=status_code)

    def go(path: str) -> RedirectResponse:
        return RedirectResponse(root + path, status_code=303)

    def csrf_ok(form: dict[str, str]) -> bool:
        return secrets.compare_digest(form.get("csrf", ""), config.csrf)

    def catalog_or_none() -> AnyCatalog | None:
        with state.lock:
            return state.catalog

    def archive(request: Request) -> archive_view.ArchiveCatalog:
        """Archive mode: the catalog as the request's identity sees it (tenant boundary)."""
        assert config.archive is not None
        identity = request.scope.get(IDENTITY_KEY)
        who = identity if isinstance(identity, Identity) else None
        view = (config.visibility or Tenancy().view)(who)
        return config.archive.scoped(view)

    def seen(request: Request, studies: list[media_view.StudyEntry], action: str) -> None:
        """Archive mode: tell the audit what the request's identity found or viewed."""
        if config.on_seen is not None and studies:
            identity = request.scope.get(IDENTITY_KEY)
            config.on_seen(identity if isinstance(identity, Identity) else None,
                           request.client.host if request.client else "", studies, action)

    def home(request: Request) -> Response:
        if config.archive is not None:
            search = request.query_params.get("q", "")
            listed = archive(request).search(search)
            seen(request, listed.studies, "found")
            return page(pages.archive_studies(config.archive.name, listed, search))
        catalog = catalog_or_none()
        if catalog is None:
            return page(pages.unlock(config.media.name, csrf=config.csrf))
        assert isinstance(catalog, media_view.Catalog)
        return page(pages.studies(catalog))

    def study_page(request: Request) -> Response:
        assert config.archive is not None
        try:
            study = archive(request).study(request.path_params["uid"])
        except KeyError:
            return page(pages.message("No such study in the archive."), status_code=404)
        seen(request, [study], "viewed")
        identity = request.scope.get(IDENTITY_KEY)
        can_delete = (config.deletion is not None and isinstance(identity, Identity)
                      and identity.allows(Permission.DELETE)
                      and config.deletion.may_delete(identity, study.uid))
        return page(pages.study(config.archive.name, study, can_delete=can_delete))

    async def delete_study(request: Request) -> Response:
        """Archive mode: GET the confirmation naming patient and study, POST to delete
        (origin checked by the guard, CSRF token in the form)."""
        assert config.deletion is not None
        identity = request.scope.get(IDENTITY_KEY)
        assert isinstance(identity, Identity)
        address = request.client.host if request.client else ""
        try:
            target = DeletionTarget.study(request.path_params["uid"])
            if request.method != "POST":
                found = await run_in_threadpool(config.deletion.lookup, identity, target,
                                                address=address)
                return page(pages.confirm_delete(found.study_uid, found.patient_name,
                                                 found.patient_id, found.instances,
                                                 config.csrf))
            form = await request.form()
            if not csrf_ok({"csrf": str(form.get("csrf", "") or "")}):
                return page(pages.message("The form has expired: open the study again."),
                            status_code=403)
            done = await run_in_threadpool(config.deletion.delete, identity, target,
                                           address=address,
                                           reason=str(form.get("reason", "") or ""))
        except NotPermitted as exc:
            return page(pages.message(str(exc)), status_code=403)
        except (NothingToDelete, ValueError):
            return page(pages.message("No such study in the archive."), status_code=404)
        except PacsError as exc:
            return page(pages.message(f"Not deleted: {exc}"), status_code=503)
        return page(pages.deleted(done.study_uid, done.patient_name, done.patient_id,
                                  done.instances))

    async def unlock(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok({"csrf": str(form.get("csrf", "") or "")}):
            return page(pages.message("This form has expired: open the viewer again."), 403)
        password = str(form.get("password", "") or "")
        key_path = str(form.get("key_path", "") or "").strip()
        if not password and not key_path:
            return page(pages.unlock(config.media.name, "Type the password, or give "
                                             "the path of a key file.", config.csrf),
                        status_code=400)
        try:
            keyring = keyring_from(password=password or None,
                                   keys=[Path(key_path).expanduser()] if key_path else [])
            catalog = media_view.open_catalog(config.media, keyring)
        except WrongKeyError as exc:
            return page(pages.unlock(config.media.name, f"{exc}. Check the password "
                                             "(it was sent separately from the media).",
                                             config.csrf),
                                status_code=401)
        except (PacsError, OSError) as exc:
            return page(pages.unlock(config.media.name, str(exc), config.csrf), status_code=400)
        with state.lock:
            old, state.catalog = state.catalog, catalog
        if old is not None:
            old.close()
        return go("")

    def need(request: Request | None = None) -> AnyCatalog:
        if config.archive is not None:
            if request is None:  # never the archive unscoped
                raise _Locked()
            return archive(request)
        catalog = catalog_or_none()
        if catalog is None:
            raise _Locked()
        return catalog

    def need_media() -> media_view.Catalog:
        catalog = need()
        assert isinstance(catalog, media_view.Catalog)  # no import routes in archive mode
        return catalog

    def series_page(request: Request) -> Response:
        catalog = need(request)
        uid = request.path_params["uid"]
        try:
            study, series = catalog.study_of(uid), catalog.series(uid)
        except KeyError:
            where = "in the archive" if config.archive is not None else "on this media"
            return page(pages.message(f"No such series {where}."), status_code=404)
        if config.on_view is not None:
            identity = request.scope.get(IDENTITY_KEY)
            config.on_view(identity if isinstance(identity, Identity) else None,
                           request.client.host if request.client else "", study)
        if config.archive is not None:
            seen(request, [study], "viewed")
        return page(pages.viewer(study, series))

    def series_api(request: Request) -> Response:
        catalog = need(request)
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
        catalog = need(request)
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
        catalog = need(request)
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
        return page(pages.import_form(media_import.identities(catalog),
                                      config.destination, csrf=config.csrf))

    async def import_start(request: Request) -> Response:
        catalog = need_media()
        form = {k: str(v).strip() for k, v in (await request.form()).items()}
        if not csrf_ok(form):
            return page(pages.message("This form has expired: open the import page again."),
                        403)
        who = form.get("from", "")
        try:
            rec = media_import.Reconciliation(
                patient_id=form.get("patient_id", ""), issuer=form.get("issuer", ""),
                patient_name=form.get("patient_name", ""), birth_date=form.get("birth_date", ""),
                source=media_import.source_label(catalog.name))
        except ValueError as exc:
            return page(pages.import_form(media_import.identities(catalog),
                                          config.destination, str(exc), config.csrf),
                        status_code=400)
        entries = [inst for study in catalog.studies if not who or study.patient_id == who
                   for s in study.series for inst in s.instances]
        with state.lock:
            if state.job is not None and state.job.summary is None and state.job.error is None:
                return go("import/status")
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
        return go("import/status")

    def import_status(request: Request) -> Response:
        with state.lock:
            job = state.job
        if job is None:
            return go("import")
        return page(pages.import_status(job.done, job.total, job.summary, job.error,
                                                config.destination))

    async def locked(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith(root + "api/"):
            return JSONResponse({"error": "the media is locked"}, status_code=401)
        return go("")

    p = config.prefix
    routes = [
        Route(f"{p}/", home),
        Route(f"{p}/series/{{uid}}", series_page),
        Route(f"{p}/api/series/{{uid}}", series_api),
        Route(f"{p}/render/{{uid}}/{{index:int}}/{{frame:int}}", render),
        Route(f"{p}/thumb/{{uid}}", thumb),
        Mount(f"{p}/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if config.archive is not None:
        routes.append(Route("/study/{uid}", study_page))
        if config.deletion is not None:
            routes.append(Route("/study/{uid}/delete", delete_study, methods=["GET", "POST"]))
        guard = Middleware(_IdentityGuard)
    else:
        routes += [
            Route(f"{p}/unlock", unlock, methods=["POST"]),
            Route(f"{p}/import", import_form),
            Route(f"{p}/import", import_start, methods=["POST"]),
            Route(f"{p}/import/status", import_status),
        ]
        guard = Middleware(_Guard, config=config)
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
