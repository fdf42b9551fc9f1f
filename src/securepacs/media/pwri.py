"""Password recipients: PBKDF2 key derivation and the PWRI-KEK key wrap.

One responsibility: turn a password into a key-encryption key (KEK) and wrap / unwrap a
content-encryption key (CEK) with it, as a CMS PasswordRecipientInfo needs (RFC 3211, carried
into RFC 5652 6.2.4; PS3.15 D.1.1 names "PBKDF2 [RFC 2898] ... and either AES or Triple-DES
[RFC 3211]").

- Key derivation: PBKDF2 (RFC 8018 5.2). PBKDF2-params with no ``prf`` means HMAC-SHA1, so
  writers here always put ``hmacWithSHA256`` (1.2.840.113549.2.9) in explicitly, with at least
  :data:`DEFAULT_ITERATIONS` iterations and a 16-byte salt. Readers accept HMAC-SHA1/224/256/
  384/512 and OpenSSL's CLI defaults (SHA-1, 2048 iterations, 8-byte salt).
- Key wrap: RFC 3211 2.3 with ``id-alg-PWRI-KEK`` (1.2.840.113549.1.9.16.3.9), whose parameter
  is the inner CBC cipher and its IV: the CEK is formatted as length byte, three check bytes
  (the complement of the CEK's first three bytes), the CEK and random padding to at least two
  blocks, then CBC-encrypted twice with the KEK, the second pass chained from the first.
- Cost: a file-set shares one salt and iteration count, so :class:`KekCache` derives the KEK
  once per disc, not once per file; each file still gets its own CEK and wrap IV.

The password is never part of any ``repr``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from securepacs.errors import MalformedFileError, UnsupportedMediaError, WrongKeyError
from securepacs.media.ciphers import BlockCipher

__all__ = [
    "DEFAULT_ITERATIONS",
    "MAX_ITERATIONS",
    "MAX_WORK",
    "OID_PWRI_KEK",
    "SALT_BYTES",
    "KdfParams",
    "KekCache",
    "derive_kek",
    "unwrap_key",
    "wrap_key",
]

OID_PWRI_KEK = "1.2.840.113549.1.9.16.3.9"
"""id-alg-PWRI-KEK (RFC 3211 2.3); asn1crypto does not know it, so it is used by number."""

DEFAULT_ITERATIONS = 600_000
"""PBKDF2-HMAC-SHA256 iterations for new media (OWASP 2023 guidance for SHA-256)."""

MAX_ITERATIONS = 10_000_000
"""A reader refuses more than this: a hostile file could otherwise stall it for minutes or
hours (10,000,000 PBKDF2-HMAC-SHA256 iterations take a few seconds; the browser disc viewer
uses the same cap)."""

MAX_WORK = 100_000_000
"""PBKDF2 iterations one :class:`KekCache` pays in all (one disc): a hostile disc whose every
file has its own salt and a high count is refused once this is spent (OpenSSL-made discs,
one salt of 2,048 iterations per file, need 2 million for 1,000 files)."""

SALT_BYTES = 16
"""Salt length for new media (RFC 8018 4.1 asks for at least 8 bytes)."""

_PRFS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
PRF_LABELS = {name: f"HMAC-{name.upper().replace('SHA', 'SHA-')}" for name in _PRFS}


@dataclass(frozen=True)
class KdfParams:
    """PBKDF2 parameters of one password recipient (RFC 8018 A.2).

    Attributes
    ----------
    salt : bytes
        The salt (``specified`` choice).
    iterations : int
        Iteration count.
    prf : str
        asn1crypto name of the HMAC hash: ``"sha256"`` (written here) or ``"sha1"`` (the
        ASN.1 default), ``"sha224"``, ``"sha384"``, ``"sha512"``.
    """

    salt: bytes
    iterations: int
    prf: str = "sha256"

    def __post_init__(self) -> None:
        if self.prf not in _PRFS:
            raise UnsupportedMediaError(f"PBKDF2 with HMAC-{self.prf} is not supported")
        if not 1 <= self.iterations <= MAX_ITERATIONS:
            raise UnsupportedMediaError(
                f"PBKDF2 iteration count {self.iterations:,} is outside 1..{MAX_ITERATIONS:,}, "
                "this reader's limit (a higher count could stall it): refused")
        if not self.salt:
            raise MalformedFileError("PBKDF2 salt is empty")

    @property
    def label(self) -> str:
        """E.g. ``"PBKDF2-HMAC-SHA-256, 600000 iterations, 16-byte salt"``."""
        return (f"PBKDF2-{PRF_LABELS[self.prf]}, {self.iterations} iterations, "
                f"{len(self.salt)}-byte salt")


def derive_kek(password: bytes, params: KdfParams, length: int) -> bytes:
    """PBKDF2 (RFC 8018 5.2) of `password` into a `length`-byte key-encryption key.

    Parameters
    ----------
    password : bytes
        The password octets (printable US-ASCII for media we write, PS3.15 D.1.1).
    params : KdfParams
        Salt, iteration count and PRF.
    length : int
        Key length of the wrap cipher.

    Returns
    -------
    bytes
        The KEK.
    """
    kdf = PBKDF2HMAC(algorithm=_PRFS[params.prf](), length=length, salt=params.salt,
                     iterations=params.iterations)
    return kdf.derive(password)


@dataclass(repr=False, eq=False)
class KekCache:
    """The KEKs one password yields, each derived once (one PBKDF2 run per disc).

    Parameters
    ----------
    password : bytes
        The password octets; kept only in this object, never shown by ``repr``.

    Attributes
    ----------
    derivations : int
        How many PBKDF2 runs this cache has paid for (tests check it is one per file-set).
    work : int
        PBKDF2 iterations paid so far (at most :data:`MAX_WORK`).
    """

    password: bytes
    derivations: int = 0
    work: int = 0
    _keks: dict[tuple[bytes, int, str, int], bytes] = field(default_factory=dict)

    def kek(self, params: KdfParams, length: int) -> bytes:
        """The KEK for `params`, derived on first use and remembered."""
        key = (params.salt, params.iterations, params.prf, length)
        found = self._keks.get(key)
        if found is None:
            if self.work + params.iterations > MAX_WORK:
                raise UnsupportedMediaError(
                    f"the media asks for more than {MAX_WORK:,} PBKDF2 iterations in all "
                    f"({self.derivations} different salts so far): refused")
            self.work += params.iterations
            found = derive_kek(self.password, params, length)
            self.derivations += 1
            self._keks[key] = found
        return found

    def __repr__(self) -> str:
        return f"KekCache(<password hidden>, derivations={self.derivations})"


def wrap_key(cek: bytes, kek: bytes, cipher: BlockCipher, iv: bytes) -> bytes:
    """RFC 3211 2.3.1: wrap `cek` under `kek` with the CBC `cipher` and `iv`.

    Returns
    -------
    bytes
        The ``encryptedKey``: a whole number of blocks, at least two.
    """
    if not 1 <= len(cek) <= 255:
        raise ValueError("a content-encryption key is 1 to 255 bytes")
    block = cipher.block_bytes
    formatted = bytes([len(cek)]) + bytes(b ^ 0xFF for b in cek[:3]) + cek
    size = max(2 * block, -(-len(formatted) // block) * block)
    formatted += os.urandom(size - len(formatted))
    # two CBC passes, the second chained from the last block of the first (one context)
    first = cipher.encrypt(kek, iv, formatted)
    return cipher.encrypt(kek, first[-block:], first)


def unwrap_key(wrapped: bytes, kek: bytes, cipher: BlockCipher, iv: bytes) -> bytes:
    """RFC 3211 2.3.2: recover the CEK that :func:`wrap_key` wrapped.

    Raises
    ------
    WrongKeyError
        The check bytes or the length byte do not verify: a wrong password (or, for media a
        password already opened, a damaged key field).
    MalformedFileError
        The wrapped key is not a whole number of at least two blocks.
    """
    block = cipher.block_bytes
    n = len(wrapped)
    if n < 2 * block or n % block:
        raise MalformedFileError(f"wrapped key of {n} bytes is not at least two whole blocks")
    # 1. decrypt the last block with the one before it as IV: the last block of pass one
    last = cipher.decrypt(kek, wrapped[-2 * block:-block], wrapped[-block:])
    # 2. with that as IV, undo pass two over every block; 3. undo pass one with the real IV
    first = cipher.decrypt(kek, last, wrapped)
    formatted = cipher.decrypt(kek, iv, first)
    length = formatted[0]
    check = all(formatted[1 + i] ^ formatted[4 + i] == 0xFF for i in range(3))
    if not check or length < 3 or length > n - 4:
        raise WrongKeyError("the password does not unwrap the content-encryption key")
    return formatted[4:4 + length]
