"""PEM files for keys and certificates (RFC 7468), written atomically and privately.

One responsibility: move X.509 certificates and PKCS#8 private keys (RFC 5958) between memory
and disk without ever exposing a key. A private key file is created with mode 0600 under a
temporary name in its final directory and renamed into place (rename(2) is atomic), so no
reader sees a partial file and no key is ever world-readable, even for an instant; missing
directories are created with mode 0700. Errors are :class:`~securepacs.errors.PkiError` with a
one-line message naming the file (never a passphrase).

:mod:`securepacs.pki.authority` re-exports the public functions; import them from there.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from securepacs.errors import PkiError

__all__ = [
    "PrivateKey",
    "fsync_dir",
    "load_certificates",
    "load_private_key",
    "make_private_dirs",
    "write_certificates",
    "write_private_key",
]

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def make_private_dirs(directory: Path) -> None:
    """Create `directory` and its missing parents with mode 0700; leave existing ones alone."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
            os.chmod(path, 0o700)


def fsync_dir(directory: Path) -> None:
    """Flush `directory` so that a rename inside it survives a crash (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes, mode: int, what: str, *, exact: bool = True) -> None:
    """Write `data` to a new file next to `path` created with `mode`, then rename it over `path`.

    With `exact` the file gets exactly `mode` whatever the umask (private keys); without,
    the umask applies (certificates: 0644 by default, 0600 under the ``securepacs``
    command's umask, as everything else in its data folder).
    """
    try:
        make_private_dirs(path.parent)
        temp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise PkiError(f"cannot write {what} {path}: {exc.strerror or exc}") from exc
    try:
        try:
            if exact:
                os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise PkiError(f"cannot write {what} {path}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)


def write_private_key(path: Path, key: PrivateKey, passphrase: bytes | None = None) -> None:
    """Write `key` as PKCS#8 PEM, readable by its owner only (mode 0600).

    The file is created with mode 0600 under a temporary name in the same directory and renamed
    over `path`, so no reader ever sees a partial key and it is never world-readable. Missing
    parent directories are created with mode 0700.

    Parameters
    ----------
    path : pathlib.Path
        Destination file.
    key : PrivateKey
        The key to store.
    passphrase : bytes or None
        Encrypt the key with it (the best encryption the library offers) when given.

    Raises
    ------
    PkiError
        If the file cannot be written.
    ValueError
        If `passphrase` is empty.
    """
    if passphrase is not None and not passphrase:
        raise ValueError("passphrase must not be empty (use None for an unencrypted key)")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase is not None
        else serialization.NoEncryption()
    )
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    _atomic_write(Path(path), data, 0o600, "private key")


def write_certificates(path: Path, certs: Sequence[x509.Certificate]) -> None:
    """Write certificates as concatenated PEM (mode 0644), replacing `path` atomically.

    Parameters
    ----------
    path : pathlib.Path
        Destination file.
    certs : sequence of cryptography.x509.Certificate
        Leaf first, then its issuers, when writing a chain.

    Raises
    ------
    PkiError
        If the file cannot be written.
    ValueError
        If `certs` is empty.
    """
    if not certs:
        raise ValueError("at least one certificate is needed")
    data = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)
    _atomic_write(Path(path), data, 0o644, "certificate file", exact=False)


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Load every certificate of a PEM file (or the one certificate of a DER file).

    Parameters
    ----------
    path : pathlib.Path
        The file.

    Returns
    -------
    list of cryptography.x509.Certificate
        In file order; never empty.

    Raises
    ------
    PkiError
        If the file cannot be read or holds no parsable certificate.
    """
    data = _read(path, "certificate file")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        if b"-----BEGIN CERTIFICATE-----" in data:
            why = "a PEM certificate in it is damaged"
        elif b"-----BEGIN" in data:
            why = "it holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
        else:
            why = "it is neither a PEM certificate (-----BEGIN CERTIFICATE-----) nor a DER one"
        raise PkiError(f"no valid certificate in {path}: {why}") from exc


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    """Load an EC or RSA private key from a PEM (or DER) file.

    Parameters
    ----------
    path : pathlib.Path
        The file (PKCS#8, or the traditional SEC1 / PKCS#1 forms).
    passphrase : bytes or None
        Needed when the key is encrypted.

    Returns
    -------
    PrivateKey
        The key.

    Raises
    ------
    PkiError
        If the file cannot be read, is encrypted and no (or a wrong) passphrase was given, is
        not a private key, or holds a key other than EC or RSA.
    """
    data = _read(path, "private key file")
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, passphrase)
        else:
            key = serialization.load_der_private_key(data, passphrase)
    except TypeError as exc:
        if passphrase is None:
            raise PkiError(f"private key file {path} is encrypted: a passphrase is needed") from exc
        raise PkiError(f"private key file {path} is not encrypted: give no passphrase") from exc
    except ValueError as exc:
        if passphrase is not None:
            raise PkiError(
                f"cannot decrypt private key file {path}: wrong passphrase or damaged file"
            ) from exc
        raise PkiError(f"no valid private key in {path}") from exc
    except Exception as exc:  # the backend may raise its own errors on odd input
        raise PkiError(f"no valid private key in {path}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"unsupported key type in {path}: only EC and RSA keys are accepted")
    return key


def certificate_pem(cert: x509.Certificate) -> str:
    """One certificate as PEM text."""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def parse_certificate_pem(text: str) -> x509.Certificate:
    """The certificate in PEM `text` (PkiError with one line if it is not one)."""
    try:
        return x509.load_pem_x509_certificate(text.encode("ascii"))
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from None
