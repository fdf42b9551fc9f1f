"""Who can open a Secure DICOM File: recipients for writing, keys for reading.

One responsibility: the RecipientInfo side of a CMS EnvelopedData (RFC 5652 6.2). Writers name
recipients: :class:`PasswordRecipient` (RFC 3211 PasswordRecipientInfo over PBKDF2, RFC 8018;
one salt and one derived KEK per file-set) and :class:`CertificateRecipient` (RSA key transport,
RFC 5652 6.2.1: rsaEncryption as RFC 3370 4.2.1 and PS3.15 D.1.1 ask, or RSAES-OAEP with SHA-256,
RFC 3560, identified by issuerAndSerialNumber). :func:`recipient_info` builds the RecipientInfo
for one file's content-encryption key. Readers hold a :class:`Keyring`: a password (with its
KEK cache, so a disc costs one PBKDF2 run) and/or :class:`RecipientKey` RSA private keys,
matched by issuer and serial number or subject key identifier, else tried in turn.
:func:`check_certificate` refuses a certificate that may not receive media at a given time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from securepacs.media.ciphers import CBC_CIPHERS, BlockCipher
from securepacs.media.pwri import (
    DEFAULT_ITERATIONS,
    OID_PWRI_KEK,
    SALT_BYTES,
    KdfParams,
    KekCache,
    derive_kek,
    wrap_key,
)

__all__ = [
    "CertificateRecipient",
    "Keyring",
    "PasswordRecipient",
    "Recipient",
    "RecipientKey",
    "check_certificate",
    "recipient_info",
    "recipient_info_der",
]


@dataclass(frozen=True, repr=False, eq=False)
class PasswordRecipient:
    """A password recipient for a whole file-set: one salt, its KEK derived once.

    Build it with :meth:`derive`; every :func:`securepacs.media.cms.seal` call then wraps that file's fresh
    content-encryption key under the same KEK with a fresh wrap IV (RFC 3211).

    Attributes
    ----------
    kdf : KdfParams
        PBKDF2 salt, iteration count and PRF written into every file.
    """

    kdf: KdfParams
    _kek: bytes
    wrap_cipher: BlockCipher = CBC_CIPHERS["aes256_cbc"]
    _templates: dict[int, tuple[bytes, bytes, bytes]] = field(
        default_factory=dict, init=False, repr=False)
    """The DER of this recipient's RecipientInfo around its two per-file fields, by the
    length of the wrapped key (see :func:`recipient_info_der`)."""

    @classmethod
    def derive(cls, password: bytes, *, iterations: int = DEFAULT_ITERATIONS,
               salt: bytes | None = None) -> PasswordRecipient:
        """Run PBKDF2-HMAC-SHA256 once for a file-set.

        Parameters
        ----------
        password : bytes
            The password octets (the caller checks the printable US-ASCII rule).
        iterations : int
            PBKDF2 iterations; new media use :data:`~securepacs.media.pwri.DEFAULT_ITERATIONS`,
            tests may pass fewer.
        salt : bytes, optional
            A fresh 16-byte random salt when omitted.

        Raises
        ------
        ValueError
            An empty password or an iteration count below 1.
        """
        if not password:
            raise ValueError("the password is empty")
        if iterations < 1:
            raise ValueError("iterations must be at least 1")
        params = KdfParams(salt if salt is not None else os.urandom(SALT_BYTES), iterations,
                           "sha256")
        wrap = CBC_CIPHERS["aes256_cbc"]
        return cls(params, derive_kek(password, params, wrap.key_bytes), wrap)

    def __repr__(self) -> str:
        return f"PasswordRecipient({self.kdf.label})"


@dataclass(frozen=True)
class CertificateRecipient:
    """An RSA certificate holder (a named recipient, or the escrow key for recovery).

    Attributes
    ----------
    certificate : cryptography.x509.Certificate
        Must hold an RSA public key (PS3.15 D.1.1 key transport is RSA).
    oaep : bool
        RSAES-OAEP with SHA-256 and MGF1-SHA-256 instead of rsaEncryption (PKCS #1 v1.5).
    """

    certificate: x509.Certificate
    oaep: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.certificate, x509.Certificate):
            raise TypeError("certificate must be a cryptography.x509.Certificate")
        if not isinstance(self.certificate.public_key(), rsa.RSAPublicKey):
            raise ValueError(
                f"{self.certificate.subject.rfc4514_string()!r} holds no RSA key: key transport "
                "to a certificate needs RSA (PS3.15 D.1.1)")


Recipient: TypeAlias = PasswordRecipient | CertificateRecipient


def check_certificate(cert: x509.Certificate, *, at: datetime) -> None:
    """Refuse a certificate that may not receive media at time `at`.

    Parameters
    ----------
    cert : cryptography.x509.Certificate
        A recipient's or the escrow certificate.
    at : datetime
        Timezone-aware time of sealing.

    Raises
    ------
    ValueError
        Not yet valid or expired at `at`, not an RSA key (PS3.15 D.1.1), or a keyUsage
        extension without keyEncipherment (RFC 5280 4.2.1.3); the message says which.
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    if at < cert.not_valid_before_utc:
        raise ValueError(f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if at > cert.not_valid_after_utc:
        raise ValueError(f"expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise ValueError("holds no RSA key: key transport to a certificate needs RSA "
                         "(PS3.15 D.1.1)")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_encipherment:
        raise ValueError("its key usage does not allow keyEncipherment (RFC 5280 4.2.1.3)")


# --------------------------------------------------------------------------- keys (read)


@dataclass(frozen=True, eq=False)
class RecipientKey:
    """An RSA private key that may open media, with its certificate when known.

    With the certificate the recipient is matched exactly (issuer and serial number, or
    subject key identifier); without it, by subject key identifier or by trial decryption.
    """

    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, rsa.RSAPrivateKey):
            raise ValueError("only an RSA private key can open key-transport recipients")
        if (self.certificate is not None
                and self.certificate.public_key() != self.private_key.public_key()):
            raise ValueError("the certificate does not belong to the private key")

    @property
    def spki_sha256(self) -> str:
        """SHA-256 of the public key's SubjectPublicKeyInfo, hex pairs joined by ``:``."""
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(der).digest().hex(":").upper()

    @property
    def key_identifier(self) -> bytes:
        """SHA-1 of the subjectPublicKey (RFC 5280 4.2.1.2 method 1)."""
        return x509.SubjectKeyIdentifier.from_public_key(self.private_key.public_key()).digest

    def matches(self, rid: cms.RecipientIdentifier) -> bool:
        """True when `rid` names this key (needs the certificate for issuer and serial)."""
        if rid.name == "subject_key_identifier":
            wanted = rid.chosen.native
            if wanted == self.key_identifier:
                return True
            if self.certificate is not None:
                try:
                    ski = self.certificate.extensions.get_extension_for_class(
                        x509.SubjectKeyIdentifier).value.digest
                except x509.ExtensionNotFound:
                    return False
                return bool(ski == wanted)
            return False
        if self.certificate is None:
            return False
        ias = rid.chosen
        issuer = asn1_x509.Name.load(self.certificate.issuer.public_bytes())
        return bool(ias["serial_number"].native == self.certificate.serial_number
                    and (ias["issuer"].dump() == issuer.dump() or ias["issuer"] == issuer))


class Keyring:
    """What a reader holds: a password (with its KEK cache) and/or RSA private keys.

    One keyring serves a whole disc, so a password costs one PBKDF2 run per salt.

    Parameters
    ----------
    password : bytes, optional
        The media password.
    keys : sequence of RecipientKey
        Private keys (a recipient's, or the escrow key).
    """

    def __init__(self, *, password: bytes | None = None, keys: Sequence[RecipientKey] = ()):
        if password is None and not keys:
            raise ValueError("a keyring needs a password or a private key")
        if password is not None and not password:
            raise ValueError("the password is empty")
        self._kek = KekCache(password) if password is not None else None
        self.keys = tuple(keys)

    @property
    def has_password(self) -> bool:
        return self._kek is not None

    @property
    def derivations(self) -> int:
        """PBKDF2 runs paid so far (one per distinct salt)."""
        return self._kek.derivations if self._kek is not None else 0

    def kek(self, params: KdfParams, length: int) -> bytes | None:
        """The cached KEK for `params`, or None without a password."""
        return self._kek.kek(params, length) if self._kek is not None else None

    def __repr__(self) -> str:
        return (f"Keyring(password={'<hidden>' if self._kek else None}, "
                f"keys={len(self.keys)})")


# --------------------------------------------------------------------------- RecipientInfo


def _issuer_and_serial(cert: x509.Certificate) -> cms.RecipientIdentifier:
    return cms.RecipientIdentifier(name="issuer_and_serial_number", value=cms.IssuerAndSerialNumber({
        "issuer": asn1_x509.Name.load(cert.issuer.public_bytes()),
        "serial_number": cert.serial_number,
    }))


def _oaep_sha256() -> tuple[padding.OAEP, dict[str, object]]:
    pad_ = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    params = {"hash_algorithm": {"algorithm": "sha256"},
              "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}}}
    return pad_, params


def _pwri(recipient: PasswordRecipient, iv: bytes, encrypted_key: bytes) -> cms.RecipientInfo:
    kdf = recipient.kdf
    pbkdf2: dict[str, object] = {
        "salt": algos.Pbkdf2Salt(name="specified", value=kdf.salt),
        "iteration_count": kdf.iterations,
    }
    if kdf.prf != "sha1":  # HMAC-SHA1 is the DEFAULT, so DER omits it (RFC 8018 A.2);
        # anything else, HMAC-SHA256 for new media, must be written out
        pbkdf2["prf"] = {"algorithm": kdf.prf, "parameters": core.Null()}
    return cms.RecipientInfo(name="pwri", value=cms.PasswordRecipientInfo({
        "version": "v0",
        "key_derivation_algorithm": {"algorithm": "pbkdf2", "parameters": pbkdf2},
        "key_encryption_algorithm": cms.KeyEncryptionAlgorithm({
            "algorithm": OID_PWRI_KEK,
            "parameters": algos.EncryptionAlgorithm({"algorithm": recipient.wrap_cipher.name,
                                                     "parameters": iv}),
        }),
        "encrypted_key": encrypted_key,
    }))


def _wrap(recipient: PasswordRecipient, cek: bytes) -> tuple[bytes, bytes]:
    """A fresh wrap IV and `cek` wrapped under the recipient's KEK (RFC 3211)."""
    iv = os.urandom(recipient.wrap_cipher.block_bytes)
    return iv, wrap_key(cek, recipient._kek, recipient.wrap_cipher, iv)


def recipient_info_der(recipient: Recipient, cek: bytes) -> bytes:
    """The DER of :func:`recipient_info`, the same bytes, cheaper for a password recipient.

    A password recipient's RecipientInfo differs from file to file only in the wrap IV and
    the wrapped key, whose lengths are fixed: its DER is encoded once (per wrapped-key
    length) with two placeholders, which each file then replaces. asn1crypto takes about a
    millisecond to build and encode the structure, as long as sealing a small image.
    """
    if not isinstance(recipient, PasswordRecipient):
        return recipient_info(recipient, cek).dump()
    iv, wrapped = _wrap(recipient, cek)
    template = recipient._templates.get(len(wrapped))
    if template is None:
        iv_mark, key_mark = os.urandom(len(iv)), os.urandom(len(wrapped))
        der = _pwri(recipient, iv_mark, key_mark).dump()
        if der.count(iv_mark) != 1 or der.count(key_mark) != 1:  # pragma: no cover - 2**-128
            return _pwri(recipient, iv, wrapped).dump()
        head, rest = der.split(iv_mark)
        middle, tail = rest.split(key_mark)
        template = recipient._templates[len(wrapped)] = (head, middle, tail)
    head, middle, tail = template
    return b"".join((head, iv, middle, wrapped, tail))


def recipient_info(recipient: Recipient, cek: bytes) -> cms.RecipientInfo:
    """The RecipientInfo that gives `recipient` this file's content-encryption key `cek`."""
    if isinstance(recipient, PasswordRecipient):
        return _pwri(recipient, *_wrap(recipient, cek))
    public = recipient.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    algorithm: dict[str, object]
    if recipient.oaep:
        pad_, params = _oaep_sha256()
        encrypted = public.encrypt(cek, pad_)
        algorithm = {"algorithm": "rsaes_oaep", "parameters": params}
    else:
        encrypted = public.encrypt(cek, padding.PKCS1v15())
        algorithm = {"algorithm": "rsaes_pkcs1v15"}
    return cms.RecipientInfo(name="ktri", value=cms.KeyTransRecipientInfo({
        "version": "v0",
        "rid": _issuer_and_serial(recipient.certificate),
        "key_encryption_algorithm": algorithm,
        "encrypted_key": encrypted,
    }))
