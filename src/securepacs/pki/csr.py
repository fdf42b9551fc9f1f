"""Enrolment without moving a private key: CSRs (RFC 2986), issuer checks and fingerprint pins.

One responsibility: the pure pieces of enrolment. The client makes its key locally and sends a
PKCS#10 certificate signing request (:func:`make_csr`, :func:`csr_pem`); the server parses and
checks it (:func:`load_csr`: proof of possession by the self-signature, key strength) before it
certifies the public key. The client authenticates the server without a trust store yet: the
enrolment token carries the CA's SHA-256 fingerprint, which the CA certificate the server sends
must match (:func:`pin_matches`), and the server's leaf must be signed by that CA and valid
(:func:`verify_issued_by`, RFC 5280 6.1.3 (a) for one step of a path).

Time is a parameter (``at=``). Errors are :class:`~securepacs.errors.PkiError` with one line.
"""

from __future__ import annotations

import hmac
import string
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from securepacs.errors import PkiError
from securepacs.pki.pemfiles import PrivateKey

__all__ = ["MAX_CSR_BYTES", "csr_pem", "load_csr", "make_csr", "pin_matches", "verify_issued_by"]

MAX_CSR_BYTES = 64 * 1024
"""Largest PEM CSR :func:`load_csr` accepts (a P-256 CSR is about 400 bytes, RSA 3072 ~1.3 kB)."""

MIN_RSA_BITS = 2048
"""Smallest RSA modulus accepted in a CSR (BCP 195 / RFC 9325 4.3)."""

ACCEPTED_CURVES: frozenset[str] = frozenset({"secp256r1", "secp384r1", "secp521r1"})
"""EC curves accepted in a CSR: the NIST curves TLS 1.2 and 1.3 peers all support."""

_HEX = frozenset(string.hexdigits)
_PEM_BEGIN = b"-----BEGIN CERTIFICATE REQUEST-----"


def _describe(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string())


def make_csr(key: PrivateKey, common_name: str) -> x509.CertificateSigningRequest:
    """Return a CSR for `key` with subject ``CN=<common_name>``, self-signed with SHA-256.

    Parameters
    ----------
    key : PrivateKey
        The EC or RSA private key made on the client; it never leaves it.
    common_name : str
        The requested subject CN (the CA may override it from the enrolment token).

    Returns
    -------
    cryptography.x509.CertificateSigningRequest
        The signed request.

    Raises
    ------
    ValueError
        If `common_name` is empty or longer than 64 characters (RFC 5280 ub-common-name).
    TypeError
        If `key` is not an EC or RSA private key.
    """
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError(f"key must be an EC or RSA private key, not {type(key).__name__}")
    if not isinstance(common_name, str) or not common_name.strip():
        raise ValueError("common_name must be a non-empty string")
    if len(common_name) > 64:
        raise ValueError("common_name must be at most 64 characters (RFC 5280 ub-common-name)")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    """Return `csr` as PEM (``-----BEGIN CERTIFICATE REQUEST-----``)."""
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM CSR received from a client and check it before it is certified.

    Parameters
    ----------
    pem : bytes
        The PEM text, at most :data:`MAX_CSR_BYTES`.

    Returns
    -------
    cryptography.x509.CertificateSigningRequest
        The request, whose self-signature verifies.

    Raises
    ------
    PkiError
        If `pem` is too large or not a PEM CSR, its signature does not verify
        (``"CSR signature does not verify"``), or its key is neither RSA of at least
        :data:`MIN_RSA_BITS` bits nor EC on a curve of :data:`ACCEPTED_CURVES`.
    TypeError
        If `pem` is not bytes.
    """
    if not isinstance(pem, bytes | bytearray | memoryview):
        raise TypeError(f"pem must be bytes, not {type(pem).__name__}")
    pem = bytes(pem)
    if len(pem) > MAX_CSR_BYTES:
        raise PkiError(f"CSR too large ({len(pem)} bytes, at most {MAX_CSR_BYTES})")
    if _PEM_BEGIN not in pem:
        raise PkiError("not a PEM certificate signing request (no BEGIN CERTIFICATE REQUEST line)")
    try:
        csr = x509.load_pem_x509_csr(pem)
        signature_ok = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, TypeError, IndexError):  # malformed DER, unknown key algorithm
        raise PkiError("damaged certificate signing request (its PEM block is not a CSR)") from None
    if not signature_ok:
        raise PkiError("CSR signature does not verify")
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise PkiError(
                f"CSR key too small: RSA {public_key.key_size} bits (at least {MIN_RSA_BITS})"
            )
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ACCEPTED_CURVES:
            raise PkiError(f"CSR key on an unsupported curve: {public_key.curve.name}")
    else:
        raise PkiError(f"CSR key type not supported: {type(public_key).__name__} (EC or RSA only)")
    return csr


def verify_issued_by(cert: x509.Certificate, issuer: x509.Certificate, *, at: datetime) -> None:
    """Check that `issuer`, a CA, signed `cert` and that both are valid at `at`.

    A client uses it after :func:`pin_matches` accepted `issuer`: the server's leaf must chain
    to the pinned CA in one step. Extended key usage and names are not checked here.

    Parameters
    ----------
    cert : cryptography.x509.Certificate
        The certificate to check (e.g. the server's leaf).
    issuer : cryptography.x509.Certificate
        The CA certificate it must be directly issued by.
    at : datetime
        Timezone-aware time of the check.

    Raises
    ------
    PkiError
        If `issuer` is not a CA, `cert` names another issuer or its signature does not
        verify with `issuer`'s key, or either certificate is not valid at `at`.
    ValueError
        If `at` is naive.
    TypeError
        If an argument has the wrong type.
    """
    for value, what in ((cert, "cert"), (issuer, "issuer")):
        if not isinstance(value, x509.Certificate):
            raise TypeError(f"{what} must be a cryptography.x509.Certificate, not {type(value)}")
    if not isinstance(at, datetime):
        raise TypeError("at must be a datetime")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("at must be timezone-aware (e.g. datetime.now(timezone.utc))")
    try:
        is_ca = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise PkiError(f"certificate {_describe(issuer)} is not a CA certificate")
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, InvalidSignature, TypeError):
        raise PkiError(
            f"certificate {_describe(cert)} is not issued by {_describe(issuer)}"
        ) from None
    for value, what in ((issuer, "CA certificate"), (cert, "certificate")):
        if at < value.not_valid_before_utc:
            raise PkiError(
                f"{what} {_describe(value)} is not valid before "
                f"{value.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
            )
        if at > value.not_valid_after_utc:
            raise PkiError(
                f"{what} {_describe(value)} expired on "
                f"{value.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
            )


def pin_matches(cert: x509.Certificate, fingerprint: str) -> bool:
    """Tell, in constant time, whether `cert` has the SHA-256 `fingerprint`.

    Parameters
    ----------
    cert : cryptography.x509.Certificate
        The certificate (its DER encoding is hashed).
    fingerprint : str
        64 hex digits, with or without ``:`` between pairs, any case, as
        :func:`~securepacs.pki.authority.fingerprint_sha256` or ``openssl x509 -fingerprint
        -sha256`` print them.

    Returns
    -------
    bool
        True if the fingerprints are equal.

    Raises
    ------
    ValueError
        If `fingerprint` is not 64 hex digits (a damaged pin must not pass as a mismatch).
    TypeError
        If `cert` is not a certificate or `fingerprint` not a string.
    """
    if not isinstance(cert, x509.Certificate):
        raise TypeError(f"cert must be a cryptography.x509.Certificate, not {type(cert)}")
    if not isinstance(fingerprint, str):
        raise TypeError(f"fingerprint must be a string, not {type(fingerprint).__name__}")
    digits = fingerprint.strip().replace(":", "")
    if len(digits) != 64 or not _HEX.issuperset(digits):
        raise ValueError("fingerprint must be a SHA-256 fingerprint: 64 hex digits, ':' optional")
    return hmac.compare_digest(bytes.fromhex(digits), cert.fingerprint(hashes.SHA256()))
