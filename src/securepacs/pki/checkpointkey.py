"""The audit checkpoint key: an Ed25519 key (RFC 8032) that signs audit chain checkpoints.

One responsibility: make, load and use the key that anchors the audit trail's hash chain
outside the database (:mod:`securepacs.audit.checkpoint`). The private key lives in a file of
the data folder (``audit-key/checkpoint.key``: PKCS #8 PEM, mode 0600, folder 0700), never in
the database, so whoever can rewrite the database but cannot read this file cannot sign a
checkpoint. It is made on first use; when two processes make it at the same moment, one
file wins (``link(2)`` fails on an existing name) and both use it. The public key is written
beside it (``.pub``, PEM SubjectPublicKeyInfo, 0600) so that a copy can be kept elsewhere and
given to ``audit verify``.

The key ID is the first 16 hex digits of the SHA-256 of the raw public key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from securepacs.errors import PkiError
from securepacs.pki.pemfiles import fsync_dir, make_private_dirs

__all__ = ["CheckpointSigner", "CheckpointVerifier", "load_or_create_signer", "load_verifier"]


def _key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class CheckpointVerifier:
    """Checks Ed25519 signatures made by one checkpoint key.

    Parameters
    ----------
    public_key : Ed25519PublicKey
    """

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._public = public_key
        self.key_id = _key_id(public_key)

    def verify(self, payload: bytes, signature: bytes) -> bool:
        """True when `signature` is this key's signature of `payload`."""
        try:
            self._public.verify(signature, payload)
        except InvalidSignature:
            return False
        return True

    def public_pem(self) -> bytes:
        return self._public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


class CheckpointSigner(CheckpointVerifier):
    """Signs checkpoints with the private key (and verifies, as its public key)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        super().__init__(private_key.public_key())
        self._private = private_key

    def sign(self, payload: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `payload`."""
        return self._private.sign(payload)

    def __repr__(self) -> str:
        return f"CheckpointSigner(key_id={self.key_id})"


def _create(path: Path) -> None:
    """Write a new key to `path` unless a file of that name appears first."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    make_private_dirs(path.parent)
    temp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process made one: use that
            os.link(temp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    fsync_dir(path.parent)


def _public_path(path: Path) -> Path:
    return path.with_suffix(".pub")


def load_or_create_signer(path: Path) -> CheckpointSigner:
    """The checkpoint key at `path`, made (0600, in a 0700 folder) if there is none.

    Raises
    ------
    PkiError
        The file cannot be made or read, or holds no Ed25519 private key (file named).
    """
    path = Path(path)
    try:
        if not path.exists():
            _create(path)
        data = path.read_bytes()
    except OSError as exc:
        raise PkiError(f"audit checkpoint key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"audit checkpoint key {path}: not a readable private key "
                       f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                       ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PkiError(f"audit checkpoint key {path}: not an Ed25519 key")
    signer = CheckpointSigner(key)
    public = _public_path(path)
    if not public.exists():
        with contextlib.suppress(OSError):  # 0600 like everything in the data folder
            fd = os.open(public, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, signer.public_pem())
            finally:
                os.close(fd)
    return signer


def load_verifier(path: Path) -> CheckpointVerifier:
    """The verifier of a checkpoint key from a public key file (PEM) or the private key file.

    Raises
    ------
    PkiError
        The file cannot be read or holds no Ed25519 key.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PkiError(f"audit checkpoint key {path}: {exc.strerror or exc}") from None
    public: object
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            public = private.public_key() if isinstance(private, Ed25519PrivateKey) else None
        else:
            public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"audit checkpoint key {path}: not a readable key "
                       f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                       ) from None
    if not isinstance(public, Ed25519PublicKey):
        raise PkiError(f"audit checkpoint key {path}: not an Ed25519 key")
    return CheckpointVerifier(public)
