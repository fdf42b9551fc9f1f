"""Enrolment without moving a private key: the client side of ``securepacs enroll``.

1. ``ca invite`` printed ``SPK1.<secret>.<CA fingerprint>`` (one use, expires).
2. The client fetches the CA certificate over TLS, checks it against the pinned
   fingerprint, and checks that the TLS server's own certificate was issued by that CA:
   the server is authenticated before the secret leaves the client.
3. The client makes its key locally, sends the secret and a CSR (RFC 2986), receives its
   certificate and the CA, checks both, and writes key (0600), certificate, CA and a
   client profile that the other client commands use by default.

The server side is :mod:`securepacs.web.enrolment`; the wire format is JSON over HTTPS.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from securepacs.clientprofile import ClientProfile, write_profile
from securepacs.errors import PkiError
from securepacs.pki import authority, csr, tlspolicy
from securepacs.pki.pemfiles import certificate_pem
from securepacs.services.authority import parse_token
from securepacs.services.scuport import ServerUnreachable

ENROL_PATH = "/enroll"
CA_PATH = "/ca.pem"


@dataclass(frozen=True)
class Enrolled:
    key: Path
    cert: Path
    ca: Path
    profile: Path
    organization: str
    group: str
    ae_titles: tuple[str, ...]
    fingerprint: str
    name: str = ""


def _request(host: str, port: int, method: str, path: str, body: bytes | None,
             timeout: float) -> tuple[int, bytes, bytes]:
    """One HTTPS request; returns (status, body, the server's leaf certificate DER)."""
    conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                       context=tlspolicy.pinning_client_context())
    try:
        conn.connect()
        leaf = conn.sock.getpeercert(binary_form=True) or b""  # type: ignore[union-attr]
        conn.request(method, path, body=body,
                     headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read(1 << 20), leaf
    except OSError as exc:
        raise ServerUnreachable(f"cannot reach the enrolment service at {host}:{port}: "
                       f"{exc.strerror or exc}") from None
    finally:
        conn.close()


def enrol(*, host: str, port: int, dicom_port: int, token: str, name: str, folder: Path,
          profile_path: Path, at: datetime, calling_ae: str | None = None,
          called_ae: str | None = None, timeout: float = 15.0) -> Enrolled:
    """Run the enrolment against the server at `host`:`port` and write the client's files.

    Raises
    ------
    PkiError
        A malformed/used/expired token, or a server that does not prove the pinned CA.
    ServerUnreachable
        A network failure. One line each. Nothing is written unless enrolment succeeds.
    """
    secret, pin = parse_token(token)
    status, body, leaf_der = _request(host, port, "GET", CA_PATH, None, timeout)
    if status != 200:
        raise PkiError(f"the enrolment service answered {status} for the CA certificate")
    try:
        ca_cert = x509.load_pem_x509_certificate(body)
        leaf = x509.load_der_x509_certificate(leaf_der)
    except ValueError:
        raise PkiError("the server sent something that is not a certificate") from None
    if not csr.pin_matches(ca_cert, pin):
        raise PkiError("the server's CA does not match the fingerprint in the token "
                       f"(server CA {authority.fingerprint_sha256(ca_cert)}): not enrolling")
    csr.verify_issued_by(leaf, ca_cert, at=at)  # the TLS server holds a key of this CA

    key = authority.generate_key("ec")
    request = csr.make_csr(key, name)
    payload = json.dumps({"secret": secret, "csr": csr.csr_pem(request).decode(),
                          "name": name}).encode()
    status, body, leaf_again = _request(host, port, "POST", ENROL_PATH, payload, timeout)
    if leaf_again != leaf_der:
        raise PkiError("the server's certificate changed between two requests: not enrolling")
    try:
        answer = json.loads(body)
    except ValueError:
        raise PkiError(f"the enrolment service answered {status} without JSON") from None
    if status != 200:
        raise PkiError(str(answer.get("error") or f"enrolment refused ({status})"))
    cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
    if cert.public_key() != key.public_key():
        raise PkiError("the issued certificate is not for the key made here: not saving it")
    csr.verify_issued_by(cert, ca_cert, at=at)

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path, cert_path, ca_path = folder / f"{name}.key", folder / f"{name}.pem", folder / "ca.pem"
    authority.write_private_key(key_path, key)
    authority.write_certificates(cert_path, [cert, ca_cert])
    authority.write_certificates(ca_path, [ca_cert])
    ae_titles = tuple(answer.get("ae_titles") or ())
    profile = ClientProfile(
        server=f"{host}:{dicom_port}", called_ae=called_ae or answer.get("ae_title") or "SECUREPACS",
        calling_ae=calling_ae or (ae_titles[0] if ae_titles else name[:16]),
        cert=cert_path, key=key_path, ca=ca_path)
    write_profile(profile_path, profile)
    return Enrolled(key_path, cert_path, ca_path, profile_path, answer.get("organization", ""),
                    answer.get("group", ""), ae_titles, authority.fingerprint_sha256(cert),
                    str(answer.get("name") or name))


__all__ = ["Enrolled", "enrol", "certificate_pem"]
