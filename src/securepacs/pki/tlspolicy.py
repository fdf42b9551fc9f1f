"""The TLS policy of DICOM secure transport: ``ssl.SSLContext`` objects and handshake reports.

One responsibility: turn PS3.15 B.12, the "BCP 195 RFC 8996/9325" secure transport connection
profile, into ``ssl`` settings, and say in words why a handshake failed. This is the only
module of securepacs that imports :mod:`ssl`; everything else gets its contexts from here.

Policy (PS3.15 B.12, RFC 9325 section 4, RFC 8996):

- TLS 1.2 is the floor (TLS 1.0 and 1.1 are deprecated by RFC 8996), TLS 1.3 is offered and
  therefore negotiated whenever the peer supports it.
- TLS 1.2 cipher suites are limited to ephemeral ECDH key exchange with AEAD encryption
  (AES-GCM, ChaCha20-Poly1305): no static RSA key exchange, no CBC (RFC 9325 4.2).
  TLS 1.3 suites are all AEAD already.
- No TLS compression (RFC 9325 3.3), no renegotiation, and no session tickets: a client whose
  certificate was revoked must perform a full handshake again (see :func:`server_context`).
- Mutual authentication: the server requires a client certificate issued by the configured
  CA; the meaning of that certificate (organisation, permissions) is site policy, decided
  elsewhere from :class:`PeerCertificate`.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from securepacs.errors import HandshakeRefused, PkiError

# cryptography reads a peer's certificate, which only a server (and a client whose server
# failed verification) does: a client command starts without it (tenths of a second).
if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "TLS12_CIPHERS",
    "PeerCertificate",
    "cipher_description",
    "server_handshake",
    "client_context",
    "describe_handshake_error",
    "peer_certificate",
    "server_context",
]

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""OpenSSL cipher string for TLS 1.2: authenticated ECDHE with AEAD only (RFC 9325 4.2)."""

_OPTIONS = ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET


class _EncryptedKeyError(Exception):
    """Raised from the password callback so that OpenSSL never prompts on a terminal."""


def _no_password() -> bytes:
    raise _EncryptedKeyError


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _require_file(path: Path, what: str) -> None:
    if not Path(path).is_file():
        raise PkiError(f"{what} {path} does not exist or is not a file")


def _load_verify(context: ssl.SSLContext, ca_file: Path) -> None:
    _require_file(ca_file, "CA certificate file")
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = ("no PEM certificate in the file (expected -----BEGIN CERTIFICATE-----)"
                  if _pem_missing(ca_file, b"CERTIFICATE") else _one_line(exc))
        raise PkiError(f"cannot load CA certificates from {ca_file}: {reason}") from None


def _pem_missing(path: Path, label: bytes) -> bool:
    """True when `path` has no ``-----BEGIN ...<label>-----`` line."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    return not any(line.startswith(b"-----BEGIN ") and line.rstrip().endswith(label + b"-----")
                   for line in data.splitlines())


def _chain_problem(exc: BaseException, cert_file: Path, key_file: Path | None) -> str:
    """What is wrong with a certificate / key pair, in words (not ``[SSL] PEM lib``)."""
    if _pem_missing(cert_file, b"CERTIFICATE"):
        return f"{cert_file} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
    if _pem_missing(key_file or cert_file, b"PRIVATE KEY"):
        return (f"{key_file or cert_file} holds no PEM private key "
                "(expected -----BEGIN ... PRIVATE KEY-----)")
    if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
        return f"the private key {key_file or cert_file} does not belong to the certificate"
    if isinstance(exc, ssl.SSLError):
        return "a certificate or the private key in these files is damaged or not PEM"
    return _one_line(exc)


def _load_chain(context: ssl.SSLContext, cert_file: Path, key_file: Path | None) -> None:
    _require_file(cert_file, "certificate file")
    if key_file is not None:
        _require_file(key_file, "private key file")
    key_text = f" with key {key_file}" if key_file is not None else ""
    try:
        context.load_cert_chain(
            str(cert_file), str(key_file) if key_file is not None else None, _no_password
        )
    except _EncryptedKeyError as exc:
        raise PkiError(
            f"private key file {key_file or cert_file} is encrypted: "
            "TLS needs an unencrypted key (mode 0600)"
        ) from exc
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise PkiError(f"cannot load certificate {cert_file}{key_text}: "
                       f"{_chain_problem(exc, cert_file, key_file)}") from None


def _base_context(protocol: ssl._SSLMethod) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= _OPTIONS
    return context


def server_context(
    cert_file: Path, key_file: Path, ca_file: Path, *, require_client_cert: bool = True,
    optional_client_cert: bool = False,
) -> ssl.SSLContext:
    """Build the server side ``SSLContext`` of the PS3.15 B.12 profile.

    TLS 1.2 or 1.3 (1.3 when the client offers it), ECDHE + AEAD suites for TLS 1.2, no
    compression, no renegotiation, server cipher preference, and no session resumption by
    ticket (``OP_NO_TICKET`` and ``num_tickets = 0``), so that a client whose certificate was
    revoked cannot skip the certificate check. OpenSSL's server-side session-ID cache for
    TLS 1.2 cannot be switched off from Python; a resumed session still carries the peer
    certificate, so per-connection checks on :func:`peer_certificate` keep working.

    Parameters
    ----------
    cert_file : pathlib.Path
        PEM server certificate, optionally followed by its chain.
    key_file : pathlib.Path
        PEM private key of the server certificate, unencrypted.
    ca_file : pathlib.Path
        PEM file of the CA certificates trusted to issue client certificates.
    require_client_cert : bool
        Require and verify a client certificate (``CERT_REQUIRED``, mutual authentication).
        When False no certificate is requested (``CERT_NONE``).
    optional_client_cert : bool
        With ``require_client_cert=False``: request a client certificate and verify it when
        one is sent, but let a client without one finish the handshake (``CERT_OPTIONAL``);
        the caller must then refuse such a connection per request where it needs one.

    Returns
    -------
    ssl.SSLContext
        A new context; wrap accepted sockets with ``server_side=True``.

    Raises
    ------
    PkiError
        If a file is missing, unreadable, not PEM, the key does not match the certificate or
        the key is encrypted; the message names the file.
    """
    context = _base_context(ssl.PROTOCOL_TLS_SERVER)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.num_tickets = 0
    context.verify_mode = (ssl.CERT_REQUIRED if require_client_cert
                           else ssl.CERT_OPTIONAL if optional_client_cert else ssl.CERT_NONE)
    _load_verify(context, ca_file)
    _load_chain(context, cert_file, key_file)
    return context


def client_context(
    ca_file: Path,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    *,
    check_hostname: bool = False,
) -> ssl.SSLContext:
    """Build the client side ``SSLContext`` of the PS3.15 B.12 profile.

    The server certificate is always verified against `ca_file` (``CERT_REQUIRED``). Host name
    checking is off by default: DICOM peers are configured by AE title, IP address and port,
    often behind NAT or a load balancer, so the name in use rarely matches the certificate;
    trust comes from the private CA instead. Turn it on (and pass ``server_hostname`` to
    ``wrap_socket``) when the server certificate carries the name or IP address you dial.

    Parameters
    ----------
    ca_file : pathlib.Path
        PEM file of the CA certificates trusted to issue server certificates.
    cert_file : pathlib.Path or None
        PEM client certificate (and chain) to present; None for no client certificate.
    key_file : pathlib.Path or None
        Its unencrypted private key; None if the key is in `cert_file`.
    check_hostname : bool
        Match the server certificate against ``server_hostname`` (RFC 6125).

    Returns
    -------
    ssl.SSLContext
        A new context for ``wrap_socket(..., server_side=False)``.

    Raises
    ------
    PkiError
        If a file is missing or unusable; the message names the file.
    ValueError
        If `key_file` is given without `cert_file`.
    """
    if key_file is not None and cert_file is None:
        raise ValueError("key_file needs cert_file")
    context = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    _load_verify(context, ca_file)
    if cert_file is not None:
        _load_chain(context, cert_file, key_file)
    return context


# --------------------------------------------------------------------------- handshake reports

_UNTRUSTED = "client certificate not issued by a trusted CA"

# X509_V_ERR_* codes (openssl/x509_vfy.h) -> reason, for a client certificate the server rejected.
_VERIFY_REASONS: dict[int, str] = {
    2: _UNTRUSTED,  # UNABLE_TO_GET_ISSUER_CERT
    3: "no CRL available to check the client certificate",  # UNABLE_TO_GET_CRL
    7: "client certificate signature invalid",  # CERT_SIGNATURE_FAILURE
    9: "client certificate not yet valid",  # CERT_NOT_YET_VALID
    10: "client certificate expired",  # CERT_HAS_EXPIRED
    11: "CRL not yet valid",  # CRL_NOT_YET_VALID
    12: "CRL expired",  # CRL_HAS_EXPIRED
    18: _UNTRUSTED,  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: _UNTRUSTED,  # SELF_SIGNED_CERT_IN_CHAIN
    20: _UNTRUSTED,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: _UNTRUSTED,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    23: "client certificate revoked",  # CERT_REVOKED
    24: "client certificate chain has an invalid CA",  # INVALID_CA
    26: "client certificate not valid for TLS client authentication",  # INVALID_PURPOSE
    66: "client certificate key too small",  # EE_KEY_TOO_SMALL
    68: "client certificate signed with a weak digest",  # CA_MD_TOO_WEAK
}

# OpenSSL reason codes (SSL_R_* / alerts) -> reason.
_SSL_REASONS: dict[str, str] = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "client sent no certificate",
    "UNSUPPORTED_PROTOCOL": "protocol version too old (TLS 1.2 minimum)",
    "VERSION_TOO_LOW": "protocol version too old (TLS 1.2 minimum)",
    "WRONG_SSL_VERSION": "protocol version too old (TLS 1.2 minimum)",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no protocol version in common with the client",
    "WRONG_VERSION_NUMBER": "not a TLS connection (plain TCP?)",
    "UNKNOWN_PROTOCOL": "not a TLS connection (plain TCP?)",
    "HTTP_REQUEST": "not a TLS connection (plain TCP?)",
    "HTTPS_PROXY_REQUEST": "not a TLS connection (plain TCP?)",
    "PACKET_LENGTH_TOO_LONG": "not a TLS connection (plain TCP?)",
    "NO_SHARED_CIPHER": "no shared cipher",
    "NO_CIPHERS_AVAILABLE": "no shared cipher",
    "NO_SHARED_GROUPS": "no shared key exchange group",
    "NO_SUITABLE_KEY_SHARE": "no shared key exchange group",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no shared signature algorithm",
    "TLSV1_ALERT_UNKNOWN_CA": "client does not trust the server certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "client does not trust the server certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "client does not trust the server certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "client aborted the handshake",
    "UNEXPECTED_EOF_WHILE_READING": "connection closed during handshake",
}

_CLOSED = "connection closed during handshake"


def describe_handshake_error(exc: BaseException) -> str:
    """Say in a few words why a server-side TLS handshake failed.

    Parameters
    ----------
    exc : BaseException
        What ``wrap_socket`` / ``do_handshake`` raised on the server side.

    Returns
    -------
    str
        A short reason such as ``"client sent no certificate"``, ``"client certificate
        expired"``, ``"client certificate not issued by a trusted CA"``, ``"protocol version
        too old (TLS 1.2 minimum)"``, ``"not a TLS connection (plain TCP?)"``, ``"no shared
        cipher"``, ``"handshake timed out"`` or ``"connection closed during handshake"``;
        otherwise the exception's own text on one line.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = _VERIFY_REASONS.get(exc.verify_code)
        if reason is not None:
            return reason
        message = exc.verify_message or exc.reason or _one_line(exc)
        return f"client certificate rejected: {' '.join(str(message).split())}"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return _CLOSED
    if isinstance(exc, ssl.SSLError):
        reason_code = getattr(exc, "reason", None)
        if reason_code:
            described = _SSL_REASONS.get(str(reason_code))
            if described is not None:
                return described
            if str(reason_code) == "CERTIFICATE_VERIFY_FAILED":
                return "client certificate rejected"
        return _one_line(exc)
    if isinstance(exc, TimeoutError):  # socket.timeout is an alias
        return "handshake timed out"
    if isinstance(exc, ConnectionError | EOFError):
        return _CLOSED
    return _one_line(exc)


# --------------------------------------------------------------------------- peers


@dataclass(frozen=True)
class PeerCertificate:
    """What the server learnt about a peer from its verified certificate.

    Attributes
    ----------
    subject_cn : str
        Subject common name ("" if the subject has none).
    organization, organizational_unit : str or None
        Subject O and OU, the groups site policy maps to permissions.
    serial : int
        Serial number (for revocation lists).
    fingerprint : str
        SHA-256 fingerprint, as :func:`~securepacs.pki.authority.fingerprint_sha256`.
    not_after : datetime
        End of validity, timezone-aware UTC.
    issuer_cn : str
        Issuer common name ("" if none).
    """

    subject_cn: str
    organization: str | None
    organizational_unit: str | None
    serial: int
    fingerprint: str
    not_after: datetime
    issuer_cn: str


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def peer_certificate(sock: ssl.SSLSocket) -> PeerCertificate | None:
    """Describe the certificate the peer of `sock` presented.

    Parameters
    ----------
    sock : ssl.SSLSocket
        A socket whose handshake is complete.

    Returns
    -------
    PeerCertificate or None
        None when the peer sent no certificate (only possible without ``CERT_REQUIRED``).
    """
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from securepacs.pki.authority import fingerprint_sha256

    der = sock.getpeercert(binary_form=True)
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    return PeerCertificate(
        subject_cn=_attribute(cert.subject, NameOID.COMMON_NAME) or "",
        organization=_attribute(cert.subject, NameOID.ORGANIZATION_NAME),
        organizational_unit=_attribute(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        serial=cert.serial_number,
        fingerprint=fingerprint_sha256(cert),
        not_after=cert.not_valid_after_utc,
        issuer_cn=_attribute(cert.issuer, NameOID.COMMON_NAME) or "",
    )


def cipher_description(sock: ssl.SSLSocket) -> str:
    """Return the negotiated protocol and cipher suite, e.g. ``"TLSv1.3 TLS_AES_256_GCM_SHA384"``.

    Parameters
    ----------
    sock : ssl.SSLSocket
        A socket whose handshake is complete.

    Returns
    -------
    str
        ``"<version> <suite>"``, or ``"no cipher (handshake not complete)"``.
    """
    cipher = sock.cipher()
    if cipher is None:
        return "no cipher (handshake not complete)"
    name, version, _bits = cipher
    return f"{version} {name}"


def server_handshake(context: ssl.SSLContext, sock: socket.socket, *,
                     timeout: float) -> ssl.SSLSocket:
    """Perform the server side of the handshake on an accepted socket, within `timeout`.

    The returned socket has the timeout `sock` had before. On failure `sock` is closed.

    Raises
    ------
    HandshakeRefused
        The handshake failed; the message is :func:`describe_handshake_error`'s reason.
    """
    previous = sock.gettimeout()
    try:
        sock.settimeout(timeout)
        tls = context.wrap_socket(sock, server_side=True)
        tls.settimeout(previous)
        return tls
    except (ssl.SSLError, OSError) as exc:
        with contextlib.suppress(OSError):
            sock.close()
        raise HandshakeRefused(describe_handshake_error(exc)) from None


# --------------------------------------------------------------------------- client side reports

#: OpenSSL reason codes a client sees when the *server* refused the client's certificate.
_CLIENT_REFUSED: dict[str, str] = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate and we sent none",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the server requires a client certificate and we sent none",
    "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust the CA that issued our certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server rejected our certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the server rejected our certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "the server rejected our certificate (unsupported type)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the server says our certificate has expired (or is not yet valid)",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "the server says our certificate has been revoked",
    "TLSV1_ALERT_ACCESS_DENIED": "the server denied access to our certificate",
    "TLSV1_ALERT_DECRYPT_ERROR": "the server could not verify our certificate's signature",
}
_CLIENT_NOT_TLS = {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE",
                   "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}
_CLIENT_VERSION = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "VERSION_TOO_LOW",
                   "NO_PROTOCOLS_AVAILABLE"}


@dataclass(frozen=True)
class ClientTlsFailure:
    """Why a client's TLS connection failed, in words for the person running the client.

    Attributes
    ----------
    kind : str
        ``"server-untrusted"`` (the server's certificate failed our verification),
        ``"certificate-rejected"`` (the server refused our certificate), ``"not-tls"`` (the
        peer does not speak TLS on that port), ``"closed"`` (the connection ended during or
        right after the handshake) or ``"other"``.
    reason : str
        One line, e.g. ``"unable to get local issuer certificate"``.
    """

    kind: str
    reason: str


def describe_client_error(exc: BaseException) -> ClientTlsFailure | None:
    """Classify what a client-side ``wrap_socket`` / ``recv`` / ``send`` raised.

    Parameters
    ----------
    exc : BaseException
        The exception from the TLS socket of a client.

    Returns
    -------
    ClientTlsFailure or None
        None when `exc` is not a TLS error (a plain ``OSError`` such as a refused connection).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = exc.verify_message or exc.reason or _one_line(exc)
        return ClientTlsFailure("server-untrusted", " ".join(str(message).split()))
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return ClientTlsFailure("closed", "the server closed the TLS connection")
    if isinstance(exc, ssl.SSLError):
        code = str(getattr(exc, "reason", "") or "")
        if code in _CLIENT_REFUSED:
            return ClientTlsFailure("certificate-rejected", _CLIENT_REFUSED[code])
        if code in _CLIENT_NOT_TLS:
            return ClientTlsFailure("not-tls", "the server does not speak TLS on this port")
        if code in _CLIENT_VERSION:
            return ClientTlsFailure("other", "no TLS version in common (TLS 1.2 minimum)")
        if code == "SSLV3_ALERT_HANDSHAKE_FAILURE":
            return ClientTlsFailure("other", "the server aborted the handshake (no common "
                                             "cipher, or it refused our certificate)")
        return ClientTlsFailure("other", _one_line(exc))
    return None


def fetch_server_certificate(host: str, port: int, timeout: float, *,
                             cert_file: Path | None = None,
                             key_file: Path | None = None) -> str:
    """The SHA-256 fingerprint of the certificate a TLS server presents, without verifying it.

    Used only to *show* a certificate that failed verification, so that a person can compare
    it with what the server's administrator reads out (``securepacs ca list``); nothing is
    sent over this connection and it is closed right after the handshake. With TLS 1.3 the
    server's certificate arrives before the server judges ours; a TLS 1.2 server that
    requires a client certificate may end the handshake first unless `cert_file` is given.

    Parameters
    ----------
    host, port : str, int
        The server.
    timeout : float
        Seconds for the connection and the handshake.
    cert_file, key_file : pathlib.Path or None
        A client certificate to present (optional).

    Returns
    -------
    str
        Upper-case hex pairs joined by ``:``, as :func:`~securepacs.pki.authority.fingerprint_sha256`.

    Raises
    ------
    OSError
        The server cannot be reached or sent no certificate (``ssl.SSLError`` included).
    """
    context = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        with contextlib.suppress(PkiError):
            _load_chain(context, cert_file, key_file)
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_side=False) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise OSError("the server sent no certificate")
    from cryptography import x509

    from securepacs.pki.authority import fingerprint_sha256

    return fingerprint_sha256(x509.load_der_x509_certificate(der))


def pinning_client_context() -> ssl.SSLContext:
    """A TLS 1.2+ client context that does not verify the server by itself.

    Only for enrolment, where the client has no CA yet: the caller must authenticate the
    server by checking its leaf against a CA pinned by fingerprint
    (:func:`securepacs.pki.csr.verify_issued_by` and :func:`~securepacs.pki.csr.pin_matches`)
    before sending anything secret.
    """
    context = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# --------------------------------------------------------------------------- one-way client streams


class TlsStream:
    """A client TLS connection that only sends (syslog over TLS, RFC 5425).

    The peer never sends application data on such a stream, so anything readable means it
    closed (close_notify, FIN) or reset the connection. :meth:`peer_state` tells, without
    blocking, which: RFC 5425 has no application-level acknowledgement, and this is the
    best evidence TCP offers of what the collector did with the bytes sent:

    - ``"open"``: nothing to read;
    - ``"closed"``: an orderly close (close_notify or FIN) and the kernel's send queue is
      empty, i.e. the peer acknowledged every byte and closed without unread data (a TCP
      peer that closes with unread data sends RST instead): it read everything;
    - ``"reset"``: RST, another error, or bytes still unacknowledged: some data may be lost.
    """

    def __init__(self, sock: ssl.SSLSocket, timeout: float) -> None:
        self._sock = sock
        self._timeout = timeout

    def sendall(self, data: bytes) -> None:
        """Write all of `data` (``OSError`` on failure or after the timeout)."""
        self._sock.sendall(data)

    def unacknowledged(self) -> int | None:
        """Bytes in the kernel's send queue not yet acknowledged by the peer (Linux; else None)."""
        try:
            import fcntl
            import struct
            import termios

            raw = fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            return int(struct.unpack("i", raw)[0])
        except (ImportError, AttributeError, OSError, ValueError):
            return None

    def peer_state(self) -> str:
        """``"open"``, ``"closed"`` (orderly, everything read) or ``"reset"``; never blocks."""
        import select

        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return "reset"
        if not readable and not self._sock.pending():
            return "open"
        # measured before reading: reading a close_notify makes OpenSSL answer with its own
        # alert, which the departed peer never acknowledges
        orderly = "closed" if self.unacknowledged() == 0 else "reset"
        self._sock.setblocking(False)
        try:
            while True:
                if not self._sock.recv(4096):
                    return orderly
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return "open"  # only TLS records such as session tickets
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return orderly  # FIN without close_notify
        except (ssl.SSLError, OSError):
            return "reset"
        finally:
            with contextlib.suppress(OSError):
                self._sock.settimeout(self._timeout)

    def peer_closed(self) -> bool:
        """True when the peer has closed or reset the connection (never blocks)."""
        return self.peer_state() != "open"

    def close(self) -> None:
        """Send close_notify (briefly, without waiting for the peer's) and close."""
        with contextlib.suppress(OSError, ValueError):
            self._sock.settimeout(0.5)
            self._sock.unwrap()
        with contextlib.suppress(OSError):
            self._sock.close()


def connect_tls(host: str, port: int, context: ssl.SSLContext, *, timeout: float) -> TlsStream:
    """Open a TLS client connection for a one-way stream (a syslog collector).

    Parameters
    ----------
    host, port : str, int
        The collector.
    context : ssl.SSLContext
        From :func:`client_context` (the collector's CA; our certificate for mutual TLS).
    timeout : float
        Seconds for connecting, the handshake and each write.

    Raises
    ------
    OSError
        Cannot connect or the handshake failed (``ssl.SSLError`` included).
    """
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = context.wrap_socket(raw, server_side=False,
                                  server_hostname=host if context.check_hostname else None)
    except BaseException:
        raw.close()
        raise
    tls.settimeout(timeout)
    return TlsStream(tls, timeout)
