"""Distribution formats for a key and its chain: a PEM bundle and PKCS#12 (RFC 7292).

One responsibility: pack an end entity's private key with its certificate chain for a peer that
wants one file, and unpack a PKCS#12 file again; bytes in, bytes out, no files touched.

- PEM bundle: the PKCS#8 private key (RFC 5958; RFC 7468 ``PRIVATE KEY`` or ``ENCRYPTED PRIVATE
  KEY``), then the certificates, leaf first (what DCMTK ``+tls`` and most TLS servers read).
- PKCS#12, modern (the default): key and certificate bags encrypted with PBES2 (PBKDF2 with
  HMAC-SHA256, AES-256-CBC, RFC 8018) and an HMAC-SHA256 integrity MAC, what OpenSSL 3 writes by
  default and current Windows 10/11 import.
- PKCS#12, legacy: ``pbeWithSHAAnd3-KeyTripleDES-CBC`` (RFC 7292 appendix C) and an HMAC-SHA1
  MAC, for older importers (older Windows certificate stores, some macOS keychains). Weaker;
  use it only when the modern file is refused.
  OpenSSL 3 reads it without ``-legacy`` (3DES is in its default provider; ``-legacy`` is only
  needed for RC2/RC4, which this module never writes).

A PKCS#12 file always has a password here: the key in it travels by mail or USB stick. Note that
``cryptography`` (seen with version 50) derives the MAC key with 2048 iterations whatever the
encryption rounds, and the MAC alone lets an attacker test guesses, so the password itself must
be strong (e.g. generated). Errors are :class:`~securepacs.errors.PkiError` with a one-line message that never
contains the password.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization.pkcs12 import (
    PBES,
    load_key_and_certificates,
    serialize_key_and_certificates,
)

from securepacs.errors import PkiError
from securepacs.pki.pemfiles import PrivateKey

__all__ = ["PKCS12_KDF_ROUNDS", "PKCS12_LEGACY_KDF_ROUNDS", "load_pkcs12", "pem_bundle", "pkcs12"]

PKCS12_KDF_ROUNDS = 600_000
"""PBKDF2-HMAC-SHA256 iterations of the modern PKCS#12 (OWASP 2023 password storage advice)."""

PKCS12_LEGACY_KDF_ROUNDS = 2048
"""Iterations of the legacy PKCS#12 KDF: OpenSSL's default, which old importers handle quickly."""

_KEY_TYPES = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)


def _check_key(key: object, what: str = "key") -> None:
    if not isinstance(key, _KEY_TYPES):
        raise TypeError(f"{what} must be an EC or RSA private key, not {type(key).__name__}")


def _check_cert(cert: object, what: str) -> None:
    if not isinstance(cert, x509.Certificate):
        raise TypeError(f"{what} must be a cryptography.x509.Certificate, not {type(cert).__name__}")


def _check_passphrase(passphrase: object, why: str) -> None:
    if not isinstance(passphrase, bytes):
        raise TypeError(f"passphrase must be bytes, not {type(passphrase).__name__}")
    if not passphrase:
        raise ValueError(f"passphrase must not be empty ({why})")


def _check_pair(key: PrivateKey, cert: x509.Certificate) -> None:
    if key.public_key() != cert.public_key():
        raise ValueError(
            f"the private key does not belong to certificate {cert.subject.rfc4514_string()!r}"
        )


def pem_bundle(
    key: PrivateKey, chain: Sequence[x509.Certificate], passphrase: bytes | None = None
) -> bytes:
    """Return the PKCS#8 private key PEM followed by the certificates, leaf first.

    Parameters
    ----------
    key : PrivateKey
        The end entity's EC or RSA private key; must match ``chain[0]``.
    chain : sequence of cryptography.x509.Certificate
        The leaf, then its issuers (the CA last).
    passphrase : bytes or None
        Encrypt the key with the best encryption the library offers (PBES2, AES-256-CBC) when
        given; None writes it unencrypted.

    Returns
    -------
    bytes
        ``-----BEGIN (ENCRYPTED) PRIVATE KEY-----`` ... then one ``CERTIFICATE`` block per cert.

    Raises
    ------
    ValueError
        If `chain` is empty, `passphrase` is empty or `key` does not match the leaf.
    TypeError
        If `key` is not an EC or RSA private key or `chain` holds something else.
    """
    _check_key(key)
    if isinstance(chain, x509.Certificate) or not chain:
        raise ValueError("chain must be a non-empty sequence of certificates, leaf first")
    for index, cert in enumerate(chain):
        _check_cert(cert, f"chain[{index}]")
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if passphrase is not None:
        _check_passphrase(passphrase, "use None for an unencrypted key")
        encryption = serialization.BestAvailableEncryption(passphrase)
    _check_pair(key, chain[0])
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    return key_pem + b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)


def pkcs12(
    name: str,
    key: PrivateKey,
    cert: x509.Certificate,
    cas: Sequence[x509.Certificate],
    passphrase: bytes,
    *,
    legacy: bool = False,
) -> bytes:
    """Return a password-protected PKCS#12 (PFX) file holding `key`, `cert` and `cas`.

    Parameters
    ----------
    name : str
        Friendly name of the key and certificate (what the Windows certificate store shows).
    key : PrivateKey
        The EC or RSA private key of `cert`.
    cert : cryptography.x509.Certificate
        The end-entity certificate.
    cas : sequence of cryptography.x509.Certificate
        Its issuers (the CA certificate), may be empty.
    passphrase : bytes
        The password; never empty.
    legacy : bool
        False: PBES2 (PBKDF2-HMAC-SHA256, :data:`PKCS12_KDF_ROUNDS` rounds, AES-256-CBC) for key
        and certificates, HMAC-SHA256 MAC. True: ``pbeWithSHAAnd3-KeyTripleDES-CBC``
        (:data:`PKCS12_LEGACY_KDF_ROUNDS` rounds) and an HMAC-SHA1 MAC, for older Windows.

    Returns
    -------
    bytes
        The DER-encoded PFX.

    Raises
    ------
    ValueError
        If `name` or `passphrase` is empty or `key` does not match `cert`.
    TypeError
        If an argument has the wrong type.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name (the friendly name) must be a non-empty string")
    _check_key(key)
    _check_cert(cert, "cert")
    if isinstance(cas, x509.Certificate):
        raise TypeError("cas must be a sequence of certificates, not one certificate")
    for index, ca in enumerate(cas):
        _check_cert(ca, f"cas[{index}]")
    _check_passphrase(passphrase, "a PKCS#12 file without a password is not allowed")
    _check_pair(key, cert)
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if legacy:
        builder = (
            builder.kdf_rounds(PKCS12_LEGACY_KDF_ROUNDS)
            .key_cert_algorithm(PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
        )
    else:
        builder = (
            builder.kdf_rounds(PKCS12_KDF_ROUNDS)
            .key_cert_algorithm(PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
        )
    return serialize_key_and_certificates(
        name.encode("utf-8"), key, cert, list(cas) or None, builder.build(passphrase)
    )


def load_pkcs12(
    data: bytes, passphrase: bytes
) -> tuple[PrivateKey, x509.Certificate, list[x509.Certificate]]:
    """Open a PKCS#12 file and return its key, certificate and CA certificates.

    Parameters
    ----------
    data : bytes
        The DER-encoded PFX.
    passphrase : bytes
        Its password.

    Returns
    -------
    tuple of (PrivateKey, cryptography.x509.Certificate, list of cryptography.x509.Certificate)
        The private key, the certificate it belongs to, and the other certificates in file order.

    Raises
    ------
    PkiError
        ``"the password does not open this PKCS#12 file"`` on a wrong password; otherwise when
        `data` is not PKCS#12 or lacks a key or certificate, or the key is neither EC nor RSA,
        or does not match the certificate.
    ValueError
        If `passphrase` is empty.
    TypeError
        If `data` or `passphrase` is not bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    _check_passphrase(passphrase, "a PKCS#12 file without a password is not allowed")
    data = bytes(data)
    if data.lstrip().startswith(b"-----BEGIN"):
        raise PkiError("this is a PEM file, not a PKCS#12 file (PKCS#12 is binary DER)")
    if not data or data[0] != 0x30:  # a PFX is a DER SEQUENCE
        raise PkiError("not a PKCS#12 file")
    try:
        key, cert, cas = load_key_and_certificates(data, passphrase)
    except ValueError as exc:
        # "Could not deserialize" means malformed; anything else is the MAC or decryption.
        if "deserialize" in str(exc):
            raise PkiError("not a PKCS#12 file (damaged or truncated)") from None
        raise PkiError("the password does not open this PKCS#12 file") from None
    except Exception:  # the backend may raise its own errors on odd input
        raise PkiError("not a PKCS#12 file (damaged or unsupported)") from None
    if key is None:
        raise PkiError("the PKCS#12 file holds no private key")
    if cert is None:
        raise PkiError("the PKCS#12 file holds no certificate for its private key")
    if not isinstance(key, _KEY_TYPES):
        raise PkiError("the PKCS#12 file holds a key other than EC or RSA")
    if key.public_key() != cert.public_key():
        raise PkiError("the private key in the PKCS#12 file does not match its certificate")
    return key, cert, list(cas)
