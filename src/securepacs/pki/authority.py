"""A small certificate authority: keys, a root CA, TLS leaf certificates and their files.

One responsibility: create and store the X.509 material that DICOM secure transport needs
(PS3.15 B.12, "BCP 195 RFC 8996/9325", which leaves the meaning of a certificate to site policy).

Profile (RFC 5280):

- Root CA (4.2.1.9 basicConstraints ``cA=TRUE, pathLenConstraint=0`` critical; 4.2.1.3 keyUsage
  ``keyCertSign, cRLSign`` critical; 4.2.1.2 subjectKeyIdentifier).
- Leaf (``cA=FALSE`` critical; keyUsage ``digitalSignature``, plus ``keyEncipherment`` for RSA;
  4.2.1.12 extendedKeyUsage ``id-kp-serverAuth`` + ``id-kp-clientAuth`` for a server, which is
  also a TLS client when it performs C-MOVE sub-operations, and for a node (a peer such as
  Orthanc or a workstation that calls us and is called by us with one certificate),
  ``id-kp-clientAuth`` for a client;
  4.2.1.6 subjectAltName with ``dNSName`` / ``iPAddress``; 4.2.1.1 authorityKeyIdentifier).
- Serial numbers are 159 random bits (4.1.2.2: positive, at most 20 octets), signatures SHA-256.

Time is a parameter: every builder takes ``at=`` (a timezone-aware datetime) and never reads
the clock. The file functions (PKCS#8 keys with mode 0600 from the moment they exist, PEM
certificates, atomic replacement) live in :mod:`securepacs.pki.pemfiles` and are re-exported
here; :func:`bootstrap` uses them to create a complete local PKI in one atomic step.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securepacs.errors import PkiError
from securepacs.pki.pemfiles import (
    PrivateKey,
    fsync_dir,
    load_certificates,
    load_private_key,
    make_private_dirs,
    write_certificates,
    write_private_key,
)

__all__ = [
    "BootstrapResult",
    "KeyKind",
    "PrivateKey",
    "PublicKey",
    "bootstrap",
    "create_root_ca",
    "fingerprint_sha256",
    "generate_key",
    "issue_certificate",
    "load_certificates",
    "load_private_key",
    "write_certificates",
    "write_private_key",
]

KeyKind = Literal["ec", "rsa"]
Role = Literal["server", "client", "node"]
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

RSA_KEY_BITS = 3072
"""RSA modulus size: 128-bit security, as P-256 (NIST SP 800-57 part 1, table 2)."""

BACKDATE = timedelta(minutes=5)
"""``notBefore`` is set this far before ``at`` to tolerate small clock differences."""

LOCAL_CA_NAME = "securepacs local CA"
LOCAL_ORGANIZATION = "securepacs local"

_ROLES: tuple[str, ...] = ("server", "client", "node")
# a node's CN joins its SANs only when it can be a host name (RFC 1123 labels)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"(?i){_LABEL}(?:\.{_LABEL})*")


# --------------------------------------------------------------------------- keys and builders


def generate_key(kind: KeyKind = "ec") -> PrivateKey:
    """Generate a new private key.

    Parameters
    ----------
    kind : {"ec", "rsa"}
        ``"ec"`` for ECDSA on P-256 (secp256r1), ``"rsa"`` for RSA 3072 with exponent 65537.

    Returns
    -------
    PrivateKey
        The new key.

    Raises
    ------
    ValueError
        If `kind` is neither ``"ec"`` nor ``"rsa"``.
    """
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    raise ValueError(f"key kind must be 'ec' or 'rsa', not {kind!r}")


def _check_common(common_name: str, at: datetime, days: int) -> None:
    if not isinstance(common_name, str) or not common_name.strip():
        raise ValueError("common_name must be a non-empty string")
    if not isinstance(at, datetime):
        raise TypeError("at must be a datetime")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("at must be timezone-aware (e.g. datetime.now(timezone.utc))")
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise ValueError(f"days must be a positive integer, not {days!r}")


def _name(
    common_name: str, organization: str | None, organizational_unit: str | None = None
) -> x509.Name:
    attributes: list[x509.NameAttribute[str]] = []
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if organizational_unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _serial() -> int:
    """Return a random positive serial number of at most 159 bits (RFC 5280 4.1.2.2)."""
    while True:
        serial = secrets.randbits(159)
        if serial:
            return serial


def _general_name(value: str) -> x509.GeneralName:
    """Return an ``iPAddress`` name if `value` parses as an IP address, else a ``dNSName``."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"subject alternative names must be non-empty strings, not {value!r}")
    try:
        return x509.IPAddress(ipaddress.ip_address(value.strip()))
    except ValueError:
        return x509.DNSName(value.strip())


def _alt_names(values: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[object] = set()
    for value in values:
        name = _general_name(value)
        key: object = name.value.lower() if isinstance(name, x509.DNSName) else name.value
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


def create_root_ca(
    common_name: str,
    *,
    key_kind: KeyKind = "ec",
    at: datetime,
    days: int = 3650,
    organization: str | None = None,
) -> tuple[PrivateKey, x509.Certificate]:
    """Create a self-signed root CA that may sign end-entity certificates only.

    Parameters
    ----------
    common_name : str
        Subject (and issuer) CN.
    key_kind : {"ec", "rsa"}
        Kind of the new CA key.
    at : datetime
        Timezone-aware issue time; ``notBefore`` is five minutes earlier.
    days : int
        Validity in days from `at`.
    organization : str or None
        Subject O, if any.

    Returns
    -------
    tuple of (PrivateKey, cryptography.x509.Certificate)
        The CA key and its certificate.

    Raises
    ------
    ValueError
        If `common_name` is empty, `days` is not positive or `at` is naive.
    """
    _check_common(common_name, at, days)
    key = generate_key(key_kind)
    name = _name(common_name, organization)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(_serial())
        .not_valid_before(at - BACKDATE)
        .not_valid_after(at + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_certificate(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    *,
    common_name: str,
    role: Role,
    at: datetime,
    days: int = 825,
    sans: Sequence[str] = (),
    organization: str | None = None,
    organizational_unit: str | None = None,
    public_key: PublicKey | None = None,
    key_kind: KeyKind = "ec",
) -> tuple[PrivateKey | None, x509.Certificate]:
    """Issue a TLS end-entity certificate signed by a CA.

    Parameters
    ----------
    ca_key : PrivateKey
        The CA's private key; must match `ca_cert`.
    ca_cert : cryptography.x509.Certificate
        The CA certificate (``cA=TRUE``).
    common_name : str
        Subject CN. For a server it is also added to the subjectAltName.
    role : {"server", "client", "node"}
        ``"server"`` gets serverAuth and clientAuth (a DICOM server is also a TLS client for
        C-MOVE), ``"client"`` gets clientAuth only, ``"node"`` (a DICOM node that is both
        client and server with one certificate) gets both, and its CN in the SANs as a server.
    at : datetime
        Timezone-aware issue time; ``notBefore`` is five minutes earlier.
    days : int
        Validity in days from `at`.
    sans : sequence of str
        Subject alternative names: IP addresses become ``iPAddress``, anything else ``dNSName``
        (which must be ASCII; encode IDNs as A-labels first). Duplicates are dropped.
    organization, organizational_unit : str or None
        Subject O and OU, used by site policy to group clients.
    public_key : PublicKey or None
        Certify this key (e.g. from a CSR); when None a new key of `key_kind` is generated.
    key_kind : {"ec", "rsa"}
        Kind of the generated key when `public_key` is None.

    Returns
    -------
    tuple of (PrivateKey or None, cryptography.x509.Certificate)
        The generated private key (None when `public_key` was given) and the certificate.

    Raises
    ------
    ValueError
        On an empty `common_name`, non-positive `days`, naive `at`, unknown `role`, bad SAN,
        a `ca_cert` that is not a CA or a `ca_key` that does not match it.
    TypeError
        If `public_key` is neither an EC nor an RSA public key.
    """
    _check_common(common_name, at, days)
    if role not in _ROLES:
        raise ValueError(f"role must be 'server', 'client' or 'node', not {role!r}")
    try:
        is_ca = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError(f"{ca_cert.subject.rfc4514_string()!r} is not a CA certificate")
    if ca_key.public_key() != ca_cert.public_key():
        raise ValueError("ca_key does not belong to ca_cert")

    key: PrivateKey | None = None
    if public_key is None:
        key = generate_key(key_kind)
        public_key = key.public_key()
    elif not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TypeError(f"public_key must be an EC or RSA public key, not {type(public_key)}")
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)

    names = list(sans)
    if role == "server" or (role == "node" and _HOST_NAME.fullmatch(common_name)):
        names.insert(0, common_name)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role in ("server", "node"):
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)

    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization, organizational_unit))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(at - BACKDATE)
        # the validity period is `days` long in all, back-dating included (CA/B Forum and
        # testssl count notAfter - notBefore: 825 days must not become 825 days + 5 minutes)
        .not_valid_after(at - BACKDATE + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    alt_names = _alt_names(names)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    cert = (
        builder.add_extension(aki, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Return the SHA-256 fingerprint of `cert` as upper-case hex pairs joined by ``:``.

    Parameters
    ----------
    cert : cryptography.x509.Certificate
        The certificate (its DER encoding is hashed).

    Returns
    -------
    str
        E.g. ``"3A:0F:..."`` (95 characters), the form ``openssl x509 -fingerprint`` prints.
    """
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class BootstrapResult:
    """Paths of the local PKI written by :func:`bootstrap`.

    Attributes
    ----------
    ca_cert : pathlib.Path
        ``ca.pem``, the trust anchor to give to peers (DCMTK ``+cf``).
    server_cert, server_key : pathlib.Path
        ``server.pem`` (server certificate then CA) and ``server.key``.
    client_cert, client_key : pathlib.Path
        ``client.pem`` (client certificate then CA) and ``client.key``.
    created : bool
        True if this call created the files, False if they already existed.
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    created: bool


def _result(pki_dir: Path, created: bool) -> BootstrapResult:
    return BootstrapResult(
        ca_cert=pki_dir / "ca.pem",
        server_cert=pki_dir / "server.pem",
        server_key=pki_dir / "server.key",
        client_cert=pki_dir / "client.pem",
        client_key=pki_dir / "client.key",
        created=created,
    )


@contextlib.contextmanager
def _staging_dir(pki_dir: Path) -> Iterator[Path]:
    """Yield a fresh 0700 directory next to `pki_dir`; remove it unless it was renamed away."""
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{pki_dir.name}.bootstrap-", dir=pki_dir.parent))
    except OSError as exc:
        raise PkiError(f"cannot create a directory next to {pki_dir}: {exc.strerror}") from exc
    try:
        yield staging
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def bootstrap(
    pki_dir: Path,
    *,
    hostnames: Sequence[str],
    at: datetime,
    server_name: str = "securepacs-server",
    client_name: str = "securepacs-client",
) -> BootstrapResult:
    """Create a local CA, a server certificate and one client certificate, once.

    Everything is written into a temporary directory next to `pki_dir` which is then renamed
    into place, so `pki_dir` either holds the complete set or does not exist: an interrupted
    bootstrap leaves nothing half-made and the next call starts again (a process killed
    outright may leave a ``.<name>.bootstrap-*`` directory, mode 0700, next to `pki_dir`).
    ``ca.pem`` marks a finished bootstrap: when it exists the call changes nothing, and when
    a concurrent call wins the race this one returns its result with ``created=False``.

    Files: ``ca.key`` / ``ca.pem`` (CA "securepacs local CA", ECDSA P-256, 10 years),
    ``server.key`` / ``server.pem`` (server certificate then CA; subjectAltName: `server_name`,
    `hostnames`, ``localhost``, ``127.0.0.1``), ``client.key`` / ``client.pem`` (client
    certificate then CA, O "securepacs local"). Keys are unencrypted so that the server can
    start unattended, and have mode 0600; the directory has mode 0700.

    Parameters
    ----------
    pki_dir : pathlib.Path
        Directory to create.
    hostnames : sequence of str
        Extra DNS names or IP addresses under which clients reach the server.
    at : datetime
        Timezone-aware issue time.
    server_name, client_name : str
        Common names of the server and client certificates.

    Returns
    -------
    BootstrapResult
        The paths; ``created`` tells whether this call made them.

    Raises
    ------
    PkiError
        If `pki_dir` exists without ``ca.pem`` (and is not empty), or files cannot be written.
    ValueError
        On an empty name or a naive `at`.
    """
    pki_dir = Path(pki_dir)
    if (pki_dir / "ca.pem").exists():
        return _result(pki_dir, created=False)
    _check_common(server_name, at, 1)
    _check_common(client_name, at, 1)
    sans = _alt_names([*hostnames, "localhost", "127.0.0.1"])  # validates before any write
    if pki_dir.exists() and (not pki_dir.is_dir() or any(pki_dir.iterdir())):
        raise PkiError(
            f"{pki_dir} exists but holds no ca.pem (an unfinished or foreign PKI directory): "
            f"delete or move {pki_dir} and run the bootstrap again"
        )
    make_private_dirs(pki_dir.parent)

    with _staging_dir(pki_dir) as staging:
        ca_key, ca_cert = create_root_ca(LOCAL_CA_NAME, at=at, organization=LOCAL_ORGANIZATION)
        server_key, server_cert = issue_certificate(
            ca_key,
            ca_cert,
            common_name=server_name,
            role="server",
            at=at,
            sans=[str(name.value) for name in sans],
            organization=LOCAL_ORGANIZATION,
        )
        client_key, client_cert = issue_certificate(
            ca_key,
            ca_cert,
            common_name=client_name,
            role="client",
            at=at,
            organization=LOCAL_ORGANIZATION,
        )
        if server_key is None or client_key is None:  # generated keys are always returned
            raise PkiError("internal error: no key generated for the bootstrap certificates")
        write_private_key(staging / "server.key", server_key)
        write_certificates(staging / "server.pem", [server_cert, ca_cert])
        write_private_key(staging / "client.key", client_key)
        write_certificates(staging / "client.pem", [client_cert, ca_cert])
        write_private_key(staging / "ca.key", ca_key)
        write_certificates(staging / "ca.pem", [ca_cert])
        try:
            os.chmod(staging, 0o700)
            # rename(2) replaces an empty directory atomically; a non-empty one makes it fail.
            os.replace(staging, pki_dir)
        except OSError as exc:
            if (pki_dir / "ca.pem").exists():  # a concurrent bootstrap finished first
                return _result(pki_dir, created=False)
            raise PkiError(
                f"cannot move the new PKI into {pki_dir}: {exc.strerror or exc}"
            ) from exc
        fsync_dir(pki_dir.parent)
    return _result(pki_dir, created=True)
