"""Connection failures of the DICOM client in words a person can act on.

One responsibility: map what a TCP connect, a TLS handshake (PS3.15 B.12) or the first read
after it raised to a :class:`~securepacs.services.scuport.ConnectionFailed`: server
unreachable, server certificate not trusted (with its SHA-256 fingerprint, read by a second
handshake that verifies nothing), our certificate rejected by the server, not a TLS port.
"""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING

from securepacs.errors import PacsError
from securepacs.pki.tlspolicy import (
    describe_client_error,
    fetch_server_certificate,
    peer_certificate,
)
from securepacs.services.scuport import (
    AssociationLost,
    CertificateRejected,
    ConnectionFailed,
    ServerNotTrusted,
    ServerUnreachable,
)

if TYPE_CHECKING:
    import ssl

    from securepacs.dimse.client_ul import Endpoint


def unreachable(endpoint: Endpoint, exc: OSError) -> ServerUnreachable:
    """The :class:`ServerUnreachable` for a failed TCP connect (refused, timeout, DNS)."""
    where = f"{endpoint.host}:{endpoint.port}"
    if isinstance(exc, socket.gaierror):
        return ServerUnreachable(f"cannot resolve the server name {endpoint.host!r} "
                                 f"({exc.strerror or exc}); check --server")
    if isinstance(exc, ConnectionRefusedError):
        return ServerUnreachable(f"cannot reach {where}: connection refused - no server is "
                                 "listening there (is it running? is the port right?)")
    if isinstance(exc, TimeoutError):
        return ServerUnreachable(
            f"cannot reach {where}: no answer within {endpoint.connect_timeout:g} s "
            "(wrong address, or a firewall drops the connection)")
    return ServerUnreachable(f"cannot reach {where}: {exc.strerror or exc}")


def _untrusted(endpoint: Endpoint, reason: str) -> ServerNotTrusted:
    fingerprint: str | None
    try:
        fingerprint = fetch_server_certificate(endpoint.host, endpoint.port,
                                               endpoint.connect_timeout,
                                               cert_file=endpoint.cert_file,
                                               key_file=endpoint.key_file)
    except (OSError, ValueError):
        fingerprint = None
    shown = fingerprint or "(could not be read)"
    return ServerNotTrusted(
        f"the server certificate of {endpoint.host}:{endpoint.port} is not trusted ({reason}). "
        f"Its SHA-256 fingerprint is {shown}. If the server's administrator confirms that "
        "fingerprint, get the CA certificate that issued it and pass it with --ca (or run "
        "securepacs enroll); otherwise do not connect.", fingerprint)


def tls_failure(endpoint: Endpoint, exc: BaseException, doing: str, *,
                early: bool) -> ConnectionFailed | None:
    """The :class:`ConnectionFailed` for a TLS error, or None if `exc` is not one.

    `early` means before the association was accepted: a connection closed then is most
    likely our certificate being refused; later it is a lost association (worth a retry).
    """
    failure = describe_client_error(exc)
    if failure is None:
        return None
    where = f"{endpoint.host}:{endpoint.port}"
    if failure.kind == "server-untrusted":
        return _untrusted(endpoint, failure.reason)
    if failure.kind == "certificate-rejected":
        return CertificateRejected(
            f"the server at {where} rejected our TLS certificate: {failure.reason}. "
            "Check --cert/--key (or your profile), its expiry, and that it was issued by "
            "the server's CA (securepacs enroll gets one).")
    if failure.kind == "not-tls":
        return ConnectionFailed(f"{where} does not speak TLS ({failure.reason}); check the "
                                "port, or use --no-tls if that is a plain DICOM port")
    if failure.kind == "closed":
        if early:
            return closed_early(endpoint, doing)
        return AssociationLost(f"the server at {where} closed the TLS connection while {doing}")
    return ConnectionFailed(f"TLS with {where} failed while {doing}: {failure.reason}")


def closed_early(endpoint: Endpoint, doing: str) -> ConnectionFailed:
    """The connection ended before the server answered the association request."""
    where = f"{endpoint.host}:{endpoint.port}"
    if endpoint.tls is not None:
        # TLS 1.3: the server judges our certificate after our side of the handshake is
        # done, so its refusal shows up as the connection closing before any answer.
        return CertificateRejected(
            f"the server at {where} closed the connection while {doing}, before answering: "
            "it most likely rejected our TLS certificate (expired, revoked, or not issued "
            "by its CA). Check --cert/--key or your profile.")
    return ConnectionFailed(f"the server at {where} closed the connection while {doing} "
                            "(if that is a TLS port, leave out --no-tls)")


def check_peer(endpoint: Endpoint, tls: ssl.SSLSocket) -> None:
    """Run the endpoint's ``peer_check`` (identity pinning) on the server's certificate;
    closes the connection and raises :class:`ServerNotTrusted` when it refuses."""
    assert endpoint.peer_check is not None
    cert = peer_certificate(tls)
    try:
        if cert is None:
            raise PacsError("the server presented no certificate")
        endpoint.peer_check(serial=cert.serial, fingerprint=cert.fingerprint,
                            name=cert.subject_cn, organization=cert.organization)
    except PacsError as exc:
        with contextlib.suppress(OSError):
            tls.close()
        raise ServerNotTrusted(f"{endpoint.where}: {exc}",
                               cert.fingerprint if cert is not None else None) from None
