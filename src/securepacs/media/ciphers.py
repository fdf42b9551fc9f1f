"""The CBC block ciphers a Secure DICOM File may use, by their CMS algorithm identifiers.

One responsibility: map a content- or key-encryption algorithm identifier to a block cipher
and run it in CBC mode. PS3.15 D.1.1: writers may use AES or Triple-DES, readers must decrypt
both; AES-CBC is RFC 3565 (OIDs 2.16.840.1.101.3.4.1.2 / .22 / .42, the parameter is the
16-byte IV), Triple-DES (des-ede3-cbc, 1.2.840.113549.3.7, 168-bit key, 8-byte IV) is
RFC 3370 4.1. The same table serves the RFC 3211 key wrap, whose inner algorithm is one of
these ciphers. Padding is RFC 5652 6.3 (PKCS #7 style: n bytes of value n).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, CipherAlgorithm, algorithms, modes

__all__ = ["CBC_CIPHERS", "BlockCipher", "cipher_named", "pad", "unpad"]


@dataclass(frozen=True)
class BlockCipher:
    """One CBC block cipher as CMS names it.

    Attributes
    ----------
    name : str
        The asn1crypto name of the algorithm identifier (``"aes256_cbc"`` ...).
    oid : str
        Its object identifier.
    key_bytes, block_bytes : int
        Key and block (= IV) sizes in bytes.
    label : str
        What a person reads (``"AES-256-CBC"``).
    """

    name: str
    oid: str
    key_bytes: int
    block_bytes: int
    label: str

    def _algorithm(self, key: bytes) -> CipherAlgorithm:
        if len(key) != self.key_bytes:
            raise ValueError(f"{self.label} needs a {self.key_bytes}-byte key, not {len(key)}")
        if self.name == "tripledes_3key":
            return TripleDES(key)
        return algorithms.AES(key)

    def encrypt(self, key: bytes, iv: bytes, data: bytes) -> bytes:
        """CBC-encrypt `data` (a whole number of blocks) with `key` and `iv`."""
        enc = Cipher(self._algorithm(key), modes.CBC(iv)).encryptor()
        return enc.update(data) + enc.finalize()

    def encrypt_padded(self, key: bytes, iv: bytes, chunks: Sequence[bytes]) -> list[bytes]:
        """CBC-encrypt the concatenation of `chunks` with RFC 5652 6.3 padding.

        The chunks are fed to one cipher context in turn, so a large file is never joined
        into one buffer first; returns the ciphertext as chunks.
        """
        enc = Cipher(self._algorithm(key), modes.CBC(iv)).encryptor()
        n = self.block_bytes - sum(len(c) for c in chunks) % self.block_bytes
        out = [enc.update(chunk) for chunk in chunks]
        out.append(enc.update(bytes([n]) * n))
        out.append(enc.finalize())
        return out

    def decrypt(self, key: bytes, iv: bytes, data: bytes) -> bytes:
        """CBC-decrypt `data` (a whole number of blocks) with `key` and `iv`."""
        dec = Cipher(self._algorithm(key), modes.CBC(iv)).decryptor()
        return dec.update(data) + dec.finalize()


CBC_CIPHERS: MappingProxyType[str, BlockCipher] = MappingProxyType({
    c.name: c
    for c in (
        BlockCipher("aes128_cbc", "2.16.840.1.101.3.4.1.2", 16, 16, "AES-128-CBC"),
        BlockCipher("aes192_cbc", "2.16.840.1.101.3.4.1.22", 24, 16, "AES-192-CBC"),
        BlockCipher("aes256_cbc", "2.16.840.1.101.3.4.1.42", 32, 16, "AES-256-CBC"),
        BlockCipher("tripledes_3key", "1.2.840.113549.3.7", 24, 8, "3DES-EDE-CBC"),
    )
})
"""The CBC ciphers a reader accepts, by asn1crypto algorithm name (read-only)."""


def cipher_named(name: str) -> BlockCipher | None:
    """The CBC cipher of an asn1crypto algorithm name or dotted OID, or None if unsupported."""
    found = CBC_CIPHERS.get(name)
    if found is not None:
        return found
    for cipher in CBC_CIPHERS.values():
        if cipher.oid == name:
            return cipher
    return None


def pad(data: bytes, block_bytes: int) -> bytes:
    """RFC 5652 6.3 padding: 1 to `block_bytes` bytes, each the pad length."""
    n = block_bytes - len(data) % block_bytes
    return data + bytes([n]) * n


def unpad(data: bytes, block_bytes: int) -> bytes | None:
    """Undo :func:`pad`; None when the padding is not valid (altered data or wrong key)."""
    if not data or len(data) % block_bytes:
        return None
    n = data[-1]
    if not 1 <= n <= block_bytes or data[-n:] != bytes([n]) * n:
        return None
    return data[:-n]
