"""Who is calling, and from which origin: what every DICOMweb route asks first.

One responsibility: turn a request into the service layer's
:class:`~securepacs.services.dicomweb_access.Caller` (the identity the listener admitted
from the client certificate, or, for STOW-RS only, the identity of an import token sent
as ``Authorization: Bearer``, RFC 6750 2.1), and decide the cross-origin questions
(Fetch standard, CORS protocol): only STOW-RS answers another origin, only origins in
the configured list (``null`` by default: the disc viewer's ``file://`` page), and the
actual request only with a certificate or a valid token. Any other request that names
an origin other than this server's own is refused (a state-changing request checked
for its origin).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from securepacs.errors import AccessRefused
from securepacs.model.identity import Identity
from securepacs.services.dicomweb_access import Caller
from securepacs.web.dicomweb.listener import identity_of

__all__ = ["Edge", "TokenCheck"]

log = logging.getLogger(__name__)

#: secret, client address -> the token's identity; raises AccessRefused (one opaque reason).
TokenCheck = Callable[[str, str], Identity]
#: Request headers a cross-origin STOW-RS may send (the rest are CORS-safelisted).
CORS_HEADERS = ("authorization", "content-type", "accept")


@dataclass
class Edge:
    """The DICOMweb app's view of callers and origins.

    Attributes
    ----------
    base_path : str
        Where the routes are mounted, e.g. ``/dicomweb``.
    tokens : callable, optional
        Checks an import token (None: tokens are not accepted).
    cors_origins : tuple of str
        Origins whose STOW-RS is answered (``"null"`` is the disc viewer's).
    """

    base_path: str = "/dicomweb"
    tokens: TokenCheck | None = None
    cors_origins: tuple[str, ...] = ("null",)
    refused: list[str] = field(default_factory=list)

    def base_url(self, request: Request) -> str:
        """The service's base URL as the client reached it (the Host header; its port
        added from the listening socket when the client left it out)."""
        server = request.scope.get("server") or ("localhost", 443)
        host = request.headers.get("host") or str(server[0])
        if not host.rsplit("]", 1)[-1].count(":") and int(server[1]) != 443:
            host = f"{host}:{server[1]}"
        return f"https://{host}{self.base_path}"

    @staticmethod
    def address(request: Request) -> str:
        return request.client.host if request.client else ""

    def certificate_caller(self, request: Request) -> Caller | None:
        """The caller when the request came with an admitted client certificate."""
        identity = identity_of(request.scope)
        if identity is None:
            return None
        return Caller(identity, self.address(request))

    def token_caller(self, request: Request) -> Caller | None:
        """The caller of an ``Authorization: Bearer`` import token; None without one.

        Raises
        ------
        AccessRefused
            A token was sent but is unknown, revoked or expired (or tokens are off).
        """
        value = request.headers.get("authorization", "")
        scheme, _, secret = value.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        if self.tokens is None:
            raise AccessRefused("import tokens are not accepted by this server")
        identity = self.tokens(secret.strip(), self.address(request))
        return Caller(identity, self.address(request), via="import-token")

    # -- origins -----------------------------------------------------------------------------
    @staticmethod
    def origin(request: Request) -> str | None:
        return request.headers.get("origin")

    def same_origin(self, request: Request) -> bool:
        origin = self.origin(request)
        if origin is None:
            return True
        host = request.headers.get("host", "")
        return bool(host) and origin.lower() == f"https://{host}".lower()

    def cors_allowed(self, request: Request) -> bool:
        """A cross-origin request from an origin whose STOW-RS is answered."""
        origin = self.origin(request)
        return origin is not None and origin in self.cors_origins

    def cors_headers(self, request: Request, *, credentials: bool) -> dict[str, str]:
        headers = {"Access-Control-Allow-Origin": str(self.origin(request)), "Vary": "Origin"}
        if credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers
