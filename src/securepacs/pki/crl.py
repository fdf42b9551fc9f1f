"""Certificate revocation lists (RFC 5280 section 5), built from values, encoded as PEM or DER.

One responsibility: turn a list of revoked serial numbers into a signed X.509 v2 CRL for TLS
peers (``openssl verify -crl_check``, DCMTK ``+crl``). Where revocations are kept is someone
else's business; this module takes them as arguments and reads no clock.

Profile:

- 5.1.2.4 ``thisUpdate`` is ``at`` minus :data:`~securepacs.pki.authority.BACKDATE` (peers whose
  clock lags a little must not see a CRL "not yet valid"), 5.1.2.5 ``nextUpdate`` is always
  present, signature SHA-256.
- 5.2.1 authorityKeyIdentifier (from the CA's subjectKeyIdentifier) and 5.2.3 cRLNumber, both
  non-critical.
- 5.3.1 reasonCode entry extension, except for ``unspecified``, which "SHOULD be absent".
  ``removeFromCRL`` (delta CRLs only) is not offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from securepacs.pki.authority import BACKDATE
from securepacs.pki.pemfiles import PrivateKey

__all__ = ["REASONS", "Revoked", "build_crl", "crl_der", "crl_pem", "parse_reason"]

REASONS: tuple[str, ...] = (
    "unspecified",
    "key_compromise",
    "ca_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "certificate_hold",
    "privilege_withdrawn",
    "aa_compromise",
)
"""RFC 5280 5.3.1 CRLReason names (codes 0-6, 9, 10), as :class:`x509.ReasonFlags` spells them."""

_BY_SQUASHED = {reason.replace("_", ""): reason for reason in REASONS}
_MAX_CRL_NUMBER = 2**159  # 5.2.3: at most 20 octets, non-negative


def parse_reason(text: str) -> str:
    """Return the canonical name of a CRL reason given in any usual spelling.

    Parameters
    ----------
    text : str
        E.g. ``"key_compromise"``, ``"keyCompromise"`` (the RFC's ASN.1 name),
        ``"key-compromise"``, ``"Key Compromise"``, ``"aACompromise"``.

    Returns
    -------
    str
        One of :data:`REASONS`.

    Raises
    ------
    ValueError
        If `text` names no reason; the message lists the valid names.
    TypeError
        If `text` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"reason must be a string, not {type(text).__name__}")
    squashed = "".join(ch for ch in text.strip().lower() if ch not in "-_ ")
    reason = _BY_SQUASHED.get(squashed)
    if reason is None:
        raise ValueError(f"unknown revocation reason {text!r}; valid: {', '.join(REASONS)}")
    return reason


@dataclass(frozen=True)
class Revoked:
    """One revoked certificate.

    Attributes
    ----------
    serial : int
        Serial number of the revoked certificate (positive).
    revoked_at : datetime
        Timezone-aware revocation time (5.1.2.6 ``revocationDate``).
    reason : str
        One of :data:`REASONS`; other spellings accepted by :func:`parse_reason` are normalised.

    Raises
    ------
    ValueError
        On a non-positive serial, a naive `revoked_at` or an unknown reason.
    TypeError
        On arguments of the wrong type.
    """

    serial: int
    revoked_at: datetime
    reason: str = "unspecified"

    def __post_init__(self) -> None:
        if isinstance(self.serial, bool) or not isinstance(self.serial, int):
            raise TypeError(f"serial must be an int, not {type(self.serial).__name__}")
        if self.serial <= 0:
            raise ValueError(f"serial must be positive, not {self.serial}")
        _check_time(self.revoked_at, "revoked_at")
        object.__setattr__(self, "reason", parse_reason(self.reason))


def _check_time(value: object, what: str) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (e.g. datetime.now(timezone.utc))")


def _check_ca(ca_key: PrivateKey, ca_cert: x509.Certificate) -> None:
    if not isinstance(ca_cert, x509.Certificate):
        raise TypeError(f"ca_cert must be a cryptography.x509.Certificate, not {type(ca_cert)}")
    subject = ca_cert.subject.rfc4514_string()
    try:
        is_ca = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError(f"{subject!r} is not a CA certificate")
    try:
        crl_sign = ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign
    except x509.ExtensionNotFound:
        crl_sign = True  # no keyUsage: every use is allowed (RFC 5280 4.2.1.3)
    if not crl_sign:
        raise ValueError(f"{subject!r} may not sign CRLs (keyUsage lacks cRLSign)")
    if not hasattr(ca_key, "public_key") or ca_key.public_key() != ca_cert.public_key():
        raise ValueError("ca_key does not belong to ca_cert")


def _authority_key_identifier(
    ca_key: PrivateKey, ca_cert: x509.Certificate
) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())


def build_crl(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    revoked: Sequence[Revoked],
    *,
    at: datetime,
    next_update: timedelta = timedelta(days=7),
    crl_number: int,
) -> x509.CertificateRevocationList:
    """Build and sign a CRL listing `revoked`.

    Parameters
    ----------
    ca_key : PrivateKey
        The CA's private key; must match `ca_cert`.
    ca_cert : cryptography.x509.Certificate
        The issuing CA (``cA=TRUE``, and ``cRLSign`` if it has keyUsage).
    revoked : sequence of Revoked
        The revoked certificates; may be empty. Entries are written in serial order.
    at : datetime
        Timezone-aware issue time; ``thisUpdate`` is five minutes earlier.
    next_update : timedelta
        ``nextUpdate`` is `at` plus this (positive); peers reject the CRL after that, so a
        new one must be published before.
    crl_number : int
        The cRLNumber: non-negative, below 2**159, increasing with every CRL of this CA.

    Returns
    -------
    cryptography.x509.CertificateRevocationList
        The signed CRL (SHA-256).

    Raises
    ------
    ValueError
        On a naive `at`, a non-positive `next_update`, a bad `crl_number`, a serial listed
        twice, a `ca_cert` that is not a CA, or a `ca_key` that does not match it.
    TypeError
        On arguments of the wrong type.
    """
    _check_time(at, "at")
    if not isinstance(next_update, timedelta):
        raise TypeError("next_update must be a timedelta")
    if next_update <= timedelta(0):
        raise ValueError(f"next_update must be positive, not {next_update}")
    if isinstance(crl_number, bool) or not isinstance(crl_number, int):
        raise TypeError(f"crl_number must be an int, not {type(crl_number).__name__}")
    if not 0 <= crl_number < _MAX_CRL_NUMBER:
        raise ValueError(f"crl_number must be between 0 and 2**159 - 1, not {crl_number}")
    _check_ca(ca_key, ca_cert)
    seen: set[int] = set()
    for entry in revoked:
        if not isinstance(entry, Revoked):
            raise TypeError(f"revoked must hold Revoked values, not {type(entry).__name__}")
        if entry.serial in seen:
            raise ValueError(f"serial {entry.serial:X} is listed twice")
        seen.add(entry.serial)
    entries = sorted(revoked, key=lambda entry: entry.serial)

    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(at - BACKDATE)
        .next_update(at + next_update)
        .add_extension(_authority_key_identifier(ca_key, ca_cert), critical=False)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
    )
    for entry in entries:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
        )
        if entry.reason != "unspecified":
            item = item.add_extension(x509.CRLReason(x509.ReasonFlags[entry.reason]), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    return builder.sign(ca_key, hashes.SHA256())


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    """Return `crl` as PEM (``-----BEGIN X509 CRL-----``), as DCMTK ``+crl`` reads it."""
    return crl.public_bytes(serialization.Encoding.PEM)


def crl_der(crl: x509.CertificateRevocationList) -> bytes:
    """Return `crl` as DER, the form served over HTTP (RFC 5280 4.2.1.13, ``application/pkix-crl``)."""
    return crl.public_bytes(serialization.Encoding.DER)
