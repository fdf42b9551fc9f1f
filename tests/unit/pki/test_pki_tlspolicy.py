"""Tests of securepacs.pki.tlspolicy: real handshakes over 127.0.0.1 (PS3.15 B.12 policy).

Every network wait is bounded by a socket timeout; nothing sleeps.
"""

from __future__ import annotations

import socket
import ssl
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from securepacs.errors import PkiError
from securepacs.pki.authority import (
    create_root_ca,
    fingerprint_sha256,
    issue_certificate,
    load_certificates,
    write_certificates,
    write_private_key,
)
from securepacs.pki.tlspolicy import (
    PeerCertificate,
    cipher_description,
    client_context,
    describe_handshake_error,
    peer_certificate,
    server_context,
)

TIMEOUT = 5.0
NOW = datetime.now(UTC)
# An A-ASSOCIATE-RQ PDU header (PS3.8 9.3.2): type 0x01, reserved, length, protocol version 1.
ASSOCIATE_RQ = (
    b"\x01\x00\x00\x00\x00\xcd\x00\x01\x00\x00"
    + b"STORESCP        "
    + b"STORESCU        "
    + b"\x00" * 32
)


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    rsa_server_cert: Path
    rsa_server_key: Path
    client_cert: Path
    client_key: Path
    foreign_cert: Path
    foreign_key: Path
    expired_cert: Path
    expired_key: Path
    future_cert: Path
    future_key: Path


def _leaf(
    directory: Path, name: str, ca_key: Any, ca_cert: Any, **kwargs: Any
) -> tuple[Path, Path]:
    key, cert = issue_certificate(ca_key, ca_cert, common_name=name, **kwargs)
    assert key is not None
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    write_certificates(cert_path, [cert, ca_cert])
    write_private_key(key_path, key)
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("tls-pki")
    ca_key, ca_cert = create_root_ca("test CA", at=NOW - timedelta(days=4 * 365), days=8 * 365)
    write_certificates(directory / "ca.pem", [ca_cert])
    other_key, other_cert = create_root_ca("other CA", at=NOW)
    ca = (ca_key, ca_cert)
    server = _leaf(directory, "server", *ca, role="server", at=NOW, sans=["127.0.0.1"])
    rsa_server = _leaf(directory, "rsa-server", *ca, role="server", at=NOW, key_kind="rsa")
    client = _leaf(
        directory,
        "client",
        *ca,
        role="client",
        at=NOW,
        organization="Hospital A",
        organizational_unit="Radiology",
    )
    foreign = _leaf(directory, "foreign", other_key, other_cert, role="client", at=NOW)
    expired = _leaf(
        directory, "expired", *ca, role="client", at=NOW - timedelta(days=3 * 365), days=30
    )
    future = _leaf(directory, "future", *ca, role="client", at=NOW + timedelta(days=30))
    return Pki(directory / "ca.pem", *server, *rsa_server, *client, *foreign, *expired, *future)


@dataclass
class ServerOutcome:
    error: BaseException | None = None
    peer: PeerCertificate | None = None
    cipher: str | None = None
    reused: bool | None = None


def serve_once(
    context: ssl.SSLContext,
    client: Callable[[socket.socket], Any],
    server_timeout: float = TIMEOUT,
) -> tuple[ServerOutcome, Any]:
    """Accept one connection on 127.0.0.1, handshake on the server side, run `client`."""
    outcome = ServerOutcome()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)

        def run() -> None:
            try:
                conn, _ = listener.accept()
            except OSError as exc:
                outcome.error = exc
                return
            with conn:
                conn.settimeout(server_timeout)
                try:
                    tls = context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    outcome.error = exc
                    return
                with tls:
                    outcome.peer = peer_certificate(tls)
                    outcome.cipher = cipher_description(tls)
                    outcome.reused = tls.session_reused
                    tls.sendall(b"ok")
                    try:
                        tls.recv(1)  # until the client closes
                        tls.unwrap()
                    except OSError:
                        pass

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        with socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as raw:
            result = client(raw)
        thread.join(2 * TIMEOUT)
        assert not thread.is_alive(), "server thread hung"
    return outcome, result


def tls_client(context: ssl.SSLContext, session: ssl.SSLSession | None = None) -> Callable:
    """Handshake, read the server's b"ok", close cleanly; return (data, cipher, session)."""

    def client(raw: socket.socket) -> tuple[bytes, str, ssl.SSLSession | None]:
        with context.wrap_socket(raw, session=session) as tls:
            data = tls.recv(2)
            description = cipher_description(tls)
            try:
                tls.unwrap()
            except OSError:
                pass
            return data, description, tls.session

    return client


def refused_client(context: ssl.SSLContext) -> Callable:
    """Try a handshake and wait for the server's verdict; return the client-side exception."""

    def client(raw: socket.socket) -> BaseException | None:
        try:
            tls = context.wrap_socket(raw)
        except (ssl.SSLError, OSError) as exc:
            return exc
        with tls:
            try:  # TLS 1.3: the client finishes first and learns of the refusal here
                tls.recv(1)
            except (ssl.SSLError, OSError) as exc:
                return exc
        return None

    return client


def raw_client(payload: bytes) -> Callable:
    def client(raw: socket.socket) -> bytes:
        if payload:
            raw.sendall(payload)
        try:
            return raw.recv(100)
        except OSError:
            return b""

    return client


def _client_ctx(pki: Pki, name: str | None) -> ssl.SSLContext:
    if name is None:
        return client_context(pki.ca)
    return client_context(pki.ca, getattr(pki, f"{name}_cert"), getattr(pki, f"{name}_key"))


# --------------------------------------------------------------------------- contexts


def test_server_context_policy(pki: Pki) -> None:
    context = server_context(pki.server_cert, pki.server_key, pki.ca)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert context.verify_mode == ssl.CERT_REQUIRED
    for option in (
        ssl.OP_NO_COMPRESSION,
        ssl.OP_NO_RENEGOTIATION,
        ssl.OP_NO_TICKET,
        ssl.OP_CIPHER_SERVER_PREFERENCE,
    ):
        assert context.options & option
    assert context.num_tickets == 0
    tls12 = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for cipher in tls12:
        assert cipher["kea"] == "kx-ecdhe" and cipher["aead"], cipher["name"]
    assert (
        server_context(
            pki.server_cert, pki.server_key, pki.ca, require_client_cert=False
        ).verify_mode
        == ssl.CERT_NONE
    )


def test_client_context_policy(pki: Pki) -> None:
    context = client_context(pki.ca, pki.client_cert, pki.client_key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert not context.check_hostname
    assert client_context(pki.ca, check_hostname=True).check_hostname
    with pytest.raises(ValueError, match="cert_file"):
        client_context(pki.ca, key_file=pki.client_key)


def test_context_file_errors_name_the_file(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(PkiError, match="missing.pem"):
        server_context(pki.server_cert, pki.server_key, missing)
    with pytest.raises(PkiError, match="missing.pem"):
        server_context(missing, pki.server_key, pki.ca)
    with pytest.raises(PkiError, match="missing.pem"):
        client_context(pki.ca, pki.client_cert, missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(PkiError, match="garbage.pem") as bad_ca:
        server_context(pki.server_cert, pki.server_key, garbage)
    assert "\n" not in str(bad_ca.value)
    with pytest.raises(PkiError, match="server.pem.*client.key"):  # key of another cert
        server_context(pki.server_cert, pki.client_key, pki.ca)


def test_file_errors_say_what_is_wrong_not_ssl_internals(pki: Pki, tmp_path: Path) -> None:
    """Issue 18: no ``[SSL] PEM lib (_ssl.c:3926)`` reaches the user."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (lambda: server_context(garbage, garbage, pki.ca), "garbage.pem holds no PEM certificate"),
        (lambda: server_context(pki.server_cert, garbage, pki.ca),
         "garbage.pem holds no PEM private key"),
        (lambda: server_context(pki.server_cert, pki.client_key, pki.ca),
         "client.key does not belong to the certificate"),
        (lambda: server_context(pki.server_cert, pki.server_key, garbage),
         "garbage.pem: no PEM certificate in the file"),
        (lambda: client_context(garbage, pki.client_cert, pki.client_key),
         "garbage.pem: no PEM certificate in the file"),
    ]
    for make, expected in cases:
        with pytest.raises(PkiError) as caught:
            make()
        message = str(caught.value)
        assert expected in message, message
        assert "_ssl.c" not in message and "PEM lib" not in message and "\n" not in message


def test_encrypted_key_is_refused_without_prompting(pki: Pki, tmp_path: Path) -> None:
    from securepacs.pki.authority import load_private_key

    encrypted = tmp_path / "encrypted.key"
    write_private_key(encrypted, load_private_key(pki.server_key), passphrase=b"s3cret")
    with pytest.raises(PkiError, match="encrypted.key is encrypted"):
        server_context(pki.server_cert, encrypted, pki.ca)


# --------------------------------------------------------------------------- handshakes


def test_mutual_tls_handshake(pki: Pki) -> None:
    context = server_context(pki.server_cert, pki.server_key, pki.ca)
    outcome, (data, client_cipher, _) = serve_once(context, tls_client(_client_ctx(pki, "client")))
    assert outcome.error is None
    assert data == b"ok"
    assert outcome.cipher == client_cipher
    assert outcome.cipher is not None and outcome.cipher.startswith("TLSv1.3 TLS_")
    peer = outcome.peer
    assert peer is not None
    (client_cert, _ca) = load_certificates(pki.client_cert)
    assert peer == PeerCertificate(
        subject_cn="client",
        organization="Hospital A",
        organizational_unit="Radiology",
        serial=client_cert.serial_number,
        fingerprint=fingerprint_sha256(client_cert),
        not_after=client_cert.not_valid_after_utc,
        issuer_cn="test CA",
    )


def test_tls12_client_gets_ecdhe_aead(pki: Pki) -> None:
    context = server_context(pki.rsa_server_cert, pki.rsa_server_key, pki.ca)
    client = _client_ctx(pki, "client")
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    outcome, (data, cipher, _) = serve_once(context, tls_client(client))
    assert outcome.error is None and data == b"ok"
    assert cipher.startswith("TLSv1.2 ECDHE-RSA-")
    assert "GCM" in cipher or "CHACHA20" in cipher


def test_server_without_client_certificate_requirement(pki: Pki) -> None:
    context = server_context(pki.server_cert, pki.server_key, pki.ca, require_client_cert=False)
    outcome, (data, _, _) = serve_once(context, tls_client(client_context(pki.ca)))
    assert outcome.error is None and data == b"ok"
    assert outcome.peer is None


def test_tls13_sessions_are_not_resumed(pki: Pki) -> None:
    context = server_context(pki.server_cert, pki.server_key, pki.ca)
    client = _client_ctx(pki, "client")
    first, (_, _, session) = serve_once(context, tls_client(client))
    second, _ = serve_once(context, tls_client(client, session))
    assert first.reused is False and second.reused is False
    assert second.peer is not None


def test_tls12_resumed_session_still_names_the_client(pki: Pki) -> None:
    # The TLS 1.2 session-ID cache of OpenSSL cannot be switched off from Python's ssl; a
    # resumed session must still carry the peer certificate so per-connection checks work.
    context = server_context(pki.server_cert, pki.server_key, pki.ca)
    client = _client_ctx(pki, "client")
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    _, (_, _, session) = serve_once(context, tls_client(client))
    second, (data, _, _) = serve_once(context, tls_client(client, session))
    assert data == b"ok"
    assert second.peer is not None and second.peer.subject_cn == "client"


@pytest.mark.parametrize(
    ("client_name", "reason"),
    [
        (None, "client sent no certificate"),
        ("foreign", "client certificate not issued by a trusted CA"),
        ("expired", "client certificate expired"),
        ("future", "client certificate not yet valid"),
    ],
)
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_refused_client_certificates(
    pki: Pki, client_name: str | None, reason: str, version: ssl.TLSVersion
) -> None:
    context = server_context(pki.server_cert, pki.server_key, pki.ca)
    client = _client_ctx(pki, client_name)
    client.maximum_version = version
    outcome, client_error = serve_once(context, refused_client(client))
    assert outcome.error is not None, "server accepted the client"
    assert outcome.peer is None
    assert describe_handshake_error(outcome.error) == reason
    assert client_error is not None  # the client learns it was refused


def test_client_refuses_a_server_from_another_ca(pki: Pki) -> None:
    context = server_context(pki.server_cert, pki.server_key, pki.ca, require_client_cert=False)
    foreign_ca = load_certificates(pki.foreign_cert)[1]
    other_ca_file = pki.ca.parent / "other-ca.pem"
    write_certificates(other_ca_file, [foreign_ca])
    outcome, client_error = serve_once(context, refused_client(client_context(other_ca_file)))
    assert isinstance(client_error, ssl.SSLCertVerificationError)
    assert outcome.error is not None
    assert describe_handshake_error(outcome.error) == "client does not trust the server certificate"


def _tls11_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def test_tls11_client_is_refused(pki: Pki) -> None:
    context = server_context(pki.server_cert, pki.server_key, pki.ca)
    outcome, client_error = serve_once(context, refused_client(_tls11_context()))
    assert outcome.error is not None, "server accepted a TLS 1.1 client"
    assert client_error is not None
    if "NO_PROTOCOLS_AVAILABLE" in str(client_error) or "UNSUPPORTED_PROTOCOL" in str(
        getattr(client_error, "reason", "")
    ):
        pytest.skip(
            f"local OpenSSL ({ssl.OPENSSL_VERSION}) will not offer TLS 1.1 even at SECLEVEL=0; "
            f"the server refused ({describe_handshake_error(outcome.error)!r}) but the "
            "'protocol version too old' message cannot be provoked here"
        )
    assert describe_handshake_error(outcome.error) == "protocol version too old (TLS 1.2 minimum)"


def test_no_shared_cipher_for_rsa_key_exchange_or_cbc(pki: Pki) -> None:
    context = server_context(pki.rsa_server_cert, pki.rsa_server_key, pki.ca)
    client = _client_ctx(pki, "client")
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    # static RSA key exchange (even with AES-GCM), and ECDHE with CBC: both outside the policy
    client.set_ciphers("AES256-GCM-SHA384:AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA")
    outcome, _ = serve_once(context, refused_client(client))
    assert outcome.error is not None
    assert describe_handshake_error(outcome.error) == "no shared cipher"


def test_plain_dicom_association_on_the_tls_port(pki: Pki) -> None:
    context = server_context(pki.server_cert, pki.server_key, pki.ca)
    outcome, _ = serve_once(context, raw_client(ASSOCIATE_RQ))
    assert outcome.error is not None
    assert describe_handshake_error(outcome.error) == "not a TLS connection (plain TCP?)"


def test_handshake_timeout(pki: Pki) -> None:
    context = server_context(pki.server_cert, pki.server_key, pki.ca)
    outcome, data = serve_once(context, raw_client(b""), server_timeout=0.2)
    assert data == b""  # the server gave up and closed
    assert describe_handshake_error(outcome.error or Exception("no error")) == (
        "handshake timed out"
    )


def test_connection_closed_during_handshake(pki: Pki) -> None:
    context = server_context(pki.server_cert, pki.server_key, pki.ca)

    def hang_up(raw: socket.socket) -> None:
        raw.shutdown(socket.SHUT_RDWR)

    outcome, _ = serve_once(context, hang_up)
    assert outcome.error is not None
    assert describe_handshake_error(outcome.error) == "connection closed during handshake"


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (TimeoutError("timed out"), "handshake timed out"),
        (
            ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed"),
            "connection closed during handshake",
        ),
        (
            ConnectionResetError(104, "Connection reset by peer"),
            "connection closed during handshake",
        ),
        (
            ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
            "connection closed during handshake",
        ),
        (ValueError("first line\n  second line"), "first line second line"),
        (RuntimeError(), "RuntimeError"),
    ],
)
def test_describe_other_errors(exc: BaseException, reason: str) -> None:
    assert describe_handshake_error(exc) == reason


def test_describe_unknown_verify_error() -> None:
    exc = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    )
    exc.verify_code = 999
    exc.verify_message = "some new\nproblem"
    assert describe_handshake_error(exc) == "client certificate rejected: some new problem"
