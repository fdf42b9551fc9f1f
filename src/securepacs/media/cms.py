"""Secure DICOM Files: seal and open one CMS EnvelopedData, bytes in, bytes out.

One responsibility: the envelope of PS3.10 7.4 / PS3.15 D.1.1. A Secure DICOM File is one
ContentInfo (RFC 5652 3) of type EnvelopedData (RFC 5652 6) with no preamble and no "DICM";
decrypted, it yields the complete Part 10 file. What :func:`seal` writes:

- content: a DigestedData (RFC 5652 7, version 0, SHA-256 by default) around the Part 10 file,
  encrypted with AES-256-CBC (RFC 3565) under a fresh content-encryption key and IV per call;
- recipients, any number and mix: :class:`PasswordRecipient` (RFC 3211 PWRI-KEK over PBKDF2,
  see :mod:`securepacs.media.pwri`) and :class:`CertificateRecipient` (RSA key transport,
  rsaEncryption PKCS #1 v1.5 as RFC 3370 4.2.1 and PS3.15 D.1.1 ask, or RSAES-OAEP with
  SHA-256 (RFC 3560) on request), identified by issuerAndSerialNumber; both live in
  :mod:`securepacs.media.recipients` and are re-exported here;
- DER throughout, EnvelopedData version 3 with a password recipient, else 0.

Integrity (PS3.15 D.1.1 asks for a DigestedData or SignedData inside the encryption, since
CBC has none of its own; the content type that says which is *not* protected by anything, so
one changed byte turns a DigestedData file into one that claims plain id-data). Every file
opened says which it was: :attr:`Opened.integrity` is ``"verified"`` (a digest checked) or
``"unprotected"`` (id-data, as other writers such as GDCM make). Every content-encryption key
:func:`seal` makes starts with :data:`INTEGRITY_MARK`: the key is bound to the file (a
tamperer cannot change it without the password or private key, and a new key would no
longer decrypt the content), so a marked file that claims id-data had its content type
changed and is refused as tampered, as is an id-data file whose plaintext is a DigestedData.

:func:`open_file` reads what other writers make too: id-data content (GDCM), BER with
indefinite lengths and constructed strings (``openssl cms -stream``), AES-128/192/256 and
Triple-DES content (PS3.15 D.1.1 readers must decrypt both), SHA-1 PBKDF2 with 2,048
iterations (OpenSSL's CLI defaults) and SHA-1/SHA-2 digests. :func:`describe` reports the
recipients and algorithms without any key. Failures are :mod:`securepacs.errors` classes with a
one-line reason; callers add the file name. Nothing here touches a file or a clock.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from asn1crypto import algos, cms, core
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from securepacs.errors import (
    IntegrityError,
    MalformedFileError,
    UnsupportedMediaError,
    WrongKeyError,
)
from securepacs.media.ciphers import CBC_CIPHERS, BlockCipher, cipher_named, unpad
from securepacs.media.pwri import OID_PWRI_KEK, KdfParams, unwrap_key
from securepacs.media.recipients import (
    CertificateRecipient,
    Keyring,
    PasswordRecipient,
    Recipient,
    RecipientKey,
    check_certificate,
    recipient_info_der,
)

__all__ = [
    "INTEGRITY_MARK",
    "CertificateRecipient",
    "EnvelopeSummary",
    "Keyring",
    "Opened",
    "PasswordRecipient",
    "Recipient",
    "RecipientKey",
    "RecipientSummary",
    "check_certificate",
    "describe",
    "open_file",
    "seal",
]

InnerType = Literal["digested_data", "data"]
WRITE_CIPHERS = ("aes128_cbc", "aes192_cbc", "aes256_cbc")
_DIGESTS = {"sha1": "SHA-1", "sha224": "SHA-224", "sha256": "SHA-256", "sha384": "SHA-384",
            "sha512": "SHA-512"}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}
INTEGRITY_MARK = b"SPD1"
"""The first 4 bytes of every AES-256 content-encryption key :func:`seal` makes ("securepacs,
DigestedData, version 1"); the other 28 are random (224 bits). A reader that finds it in a
file's key knows the writer wrapped the content in a DigestedData."""

_CONTENT_LABELS = {"digested_data": "DigestedData", "data": "id-data", "signed_data": "SignedData"}


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Opened:
    """A Secure DICOM File opened.

    Attributes
    ----------
    content : bytes
        The encapsulated file (the complete Part 10 file).
    inner : str
        ``"digested_data"`` (digest verified) or ``"data"`` (no digest to verify).
    digest_algorithm : str or None
        E.g. ``"sha256"`` for DigestedData.
    recipient : str
        ``"password"`` or ``"certificate"``: which kind of recipient opened it.
    marked : bool
        The content-encryption key carries :data:`INTEGRITY_MARK` (written by securepacs).
    """

    content: bytes
    inner: str
    digest_algorithm: str | None
    recipient: str
    marked: bool = False

    @property
    def integrity(self) -> str:
        """``"verified"`` (a DigestedData whose digest matched) or ``"unprotected"``."""
        return "verified" if self.inner == "digested_data" else "unprotected"


@dataclass(frozen=True)
class RecipientSummary:
    """One RecipientInfo as :func:`describe` sees it, without a key.

    Attributes
    ----------
    kind : {"password", "certificate", "other"}
        PasswordRecipientInfo, KeyTransRecipientInfo, or anything else.
    detail : str
        One line for a person.
    kdf : KdfParams or None
        PBKDF2 parameters of a password recipient.
    """

    kind: str
    detail: str
    kdf: KdfParams | None = None


@dataclass(frozen=True)
class EnvelopeSummary:
    """What :func:`describe` reports about one Secure DICOM File."""

    content_type: str
    cipher: str
    recipients: tuple[RecipientSummary, ...]


# --------------------------------------------------------------------------- sealing


def _der_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _tlv(tag: int, parts: list[bytes]) -> list[bytes]:
    """One DER TLV (X.690 8.1, definite length) as a list of chunks: the header, then `parts`.

    A large file is thus never copied while the structure around it is built; the one
    ``b"".join`` at the end copies it once (asn1crypto's dump re-encodes, slowly, megabytes).
    """
    return [bytes([tag]) + _der_length(sum(len(p) for p in parts)), *parts]


_OID_DATA = core.ObjectIdentifier("1.2.840.113549.1.7.1").dump()
_OID_ENVELOPED = core.ObjectIdentifier("1.2.840.113549.1.7.3").dump()
_SEQUENCE, _SET, _OCTET_STRING, _EXPLICIT_0, _IMPLICIT_0 = 0x30, 0x31, 0x04, 0xA0, 0x80


def _digested_parts(content: bytes, digest: str) -> list[bytes]:
    if digest not in _DIGESTS:
        raise ValueError(f"unknown digest algorithm {digest!r}")
    return _tlv(_SEQUENCE, [
        core.Integer(0).dump(),  # version 0: the encapsulated content is id-data
        algos.DigestAlgorithm({"algorithm": digest}).dump(),
        *_tlv(_SEQUENCE, [_OID_DATA, *_tlv(_EXPLICIT_0, _tlv(_OCTET_STRING, [content]))]),
        *_tlv(_OCTET_STRING, [hashlib.new(digest, content).digest()]),
    ])


def _digested(content: bytes, digest: str) -> bytes:
    """DER DigestedData (RFC 5652 7) around `content`."""
    return b"".join(_digested_parts(content, digest))


def seal(content: bytes, recipients: Sequence[Recipient], *, inner: InnerType = "digested_data",
         digest: str = "sha256", cipher: str = "aes256_cbc") -> bytes:
    """Encrypt a Part 10 file into a Secure DICOM File (DER ContentInfo / EnvelopedData).

    Parameters
    ----------
    content : bytes
        The complete Part 10 file (or any bytes: the envelope does not look inside).
    recipients : sequence of Recipient
        Who can open it; at least one.
    inner : {"digested_data", "data"}
        Wrap the content in a DigestedData (PS3.15 D.1.1, the default) or leave it as
        id-data (what GDCM writes; for tests of the reader).
    digest : str
        DigestedData hash (asn1crypto name), ``"sha256"`` by default.
    cipher : str
        ``"aes256_cbc"`` (default), ``"aes192_cbc"`` or ``"aes128_cbc"``.

    Returns
    -------
    bytes
        The DER encoding; a fresh content key and IV every call.

    Raises
    ------
    ValueError
        No recipient, an unknown inner type, digest or cipher.
    """
    if not recipients:
        raise ValueError("at least one recipient is needed")
    if cipher not in WRITE_CIPHERS:
        raise ValueError(f"writers use AES-CBC (PS3.15 D.1.1): {', '.join(WRITE_CIPHERS)}")
    if inner not in ("digested_data", "data"):
        raise ValueError(f"inner content must be 'digested_data' or 'data', not {inner!r}")
    spec = CBC_CIPHERS[cipher]
    if inner == "digested_data":
        payload = _digested_parts(content, digest)
    elif inner == "data":
        payload = [content]
    cek = os.urandom(spec.key_bytes)
    if inner == "digested_data" and spec.key_bytes == 32:  # 224 random bits stay
        cek = INTEGRITY_MARK + cek[len(INTEGRITY_MARK):]
    iv = os.urandom(spec.block_bytes)
    encrypted = spec.encrypt_padded(cek, iv, payload)
    infos = sorted(recipient_info_der(r, cek) for r in recipients)  # DER SET OF: sorted
    version = 3 if any(isinstance(r, PasswordRecipient) for r in recipients) else 0
    encrypted_content_info = _tlv(_SEQUENCE, [
        cms.ContentType(inner).dump(),
        algos.EncryptionAlgorithm({"algorithm": spec.name, "parameters": iv}).dump(),
        *_tlv(_IMPLICIT_0, encrypted),  # [0] IMPLICIT EncryptedContent, primitive
    ])
    enveloped = _tlv(_SEQUENCE, [
        core.Integer(version).dump(),
        *_tlv(_SET, infos),  # RecipientInfos, a SET OF (X.690 11.6: encodings in order)
        *encrypted_content_info,
    ])
    return b"".join(_tlv(_SEQUENCE, [_OID_ENVELOPED, *_tlv(_EXPLICIT_0, enveloped)]))


# --------------------------------------------------------------------------- parsing


_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError)
"""What asn1crypto's lazy parsing raises on damaged input (turned into MalformedFileError)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


@dataclass(frozen=True)
class _Envelope:
    recipients: tuple[cms.RecipientInfo, ...]
    content_type: str
    cipher: BlockCipher
    iv: bytes
    ciphertext: bytes


def _parse(data: bytes) -> _Envelope:
    """Parse and check everything :func:`open_file` needs, with one-line errors."""
    if len(data) < 2 or data[0] != 0x30:
        raise MalformedFileError("not a CMS file (no ASN.1 SEQUENCE at the start)")
    try:
        info = cms.ContentInfo.load(data, strict=True)
        kind = info["content_type"].native
        if kind != "enveloped_data":
            raise MalformedFileError(f"CMS content type is {kind}, not EnvelopedData")
        enveloped = info["content"]
        recipients = tuple(enveloped["recipient_infos"])
        eci = enveloped["encrypted_content_info"]
        content_type = eci["content_type"].native
        algorithm = eci["content_encryption_algorithm"]
        name = algorithm["algorithm"].native
        ciphertext = eci["encrypted_content"].native
        spec = cipher_named(name)
        if spec is None:
            raise UnsupportedMediaError(f"content encryption {name} is not supported")
        iv = algorithm["parameters"].native
    except _PARSE_ERRORS as exc:
        raise MalformedFileError(
            f"truncated or damaged CMS structure ({_first_line(exc)})") from None
    if ciphertext is None:
        raise UnsupportedMediaError("detached encrypted content is not supported")
    if not isinstance(iv, bytes) or len(iv) != spec.block_bytes:
        raise MalformedFileError(f"{spec.label} IV is missing or not {spec.block_bytes} bytes")
    if not recipients:
        raise MalformedFileError("EnvelopedData has no recipients")
    return _Envelope(recipients, str(content_type), spec, iv, ciphertext)


def _kdf_params(pwri: cms.PasswordRecipientInfo) -> KdfParams:
    kda = pwri["key_derivation_algorithm"]
    if not kda:
        raise UnsupportedMediaError("password recipient without a key derivation algorithm")
    if kda["algorithm"].native != "pbkdf2":
        raise UnsupportedMediaError(f"key derivation {kda['algorithm'].native} is not PBKDF2")
    params = kda["parameters"]
    if params["salt"].name != "specified":
        raise UnsupportedMediaError("PBKDF2 salt from another source is not supported")
    return KdfParams(params["salt"].chosen.native, params["iteration_count"].native,
                     params["prf"]["algorithm"].native)


def _pwri_wrap(pwri: cms.PasswordRecipientInfo) -> tuple[BlockCipher, bytes, int | None]:
    kea = pwri["key_encryption_algorithm"]
    if kea["algorithm"].dotted != OID_PWRI_KEK:
        raise UnsupportedMediaError(
            f"password recipient key encryption {kea['algorithm'].dotted} is not PWRI-KEK")
    inner = algos.EncryptionAlgorithm.load(kea["parameters"].dump())
    spec = cipher_named(inner["algorithm"].dotted)
    if spec is None:
        raise UnsupportedMediaError(f"PWRI-KEK with {inner['algorithm'].native} is not supported")
    iv = inner["parameters"].native
    if not isinstance(iv, bytes) or len(iv) != spec.block_bytes:
        raise MalformedFileError(f"PWRI-KEK {spec.label} IV is missing or not {spec.block_bytes} bytes")
    key_length = pwri["key_derivation_algorithm"]["parameters"]["key_length"].native
    return spec, iv, key_length


@dataclass(frozen=True)
class _Attempt:
    """One way to get the content-encryption key; `strong` when it surely names our key."""

    kind: str
    strong: bool
    recipient: cms.RecipientInfo
    key: RecipientKey | None = None


def _kind(ri: cms.RecipientInfo) -> str | None:
    """``ri.name``, or None for an entry too damaged to say."""
    try:
        return str(ri.name)
    except _PARSE_ERRORS:
        return None


def _attempts(env: _Envelope, keyring: Keyring, damaged: list[str]) -> Iterator[_Attempt]:
    """Every way `keyring` may open `env`; entries too damaged to try go to `damaged`."""
    if keyring.has_password:
        for ri in env.recipients:
            if _kind(ri) == "pwri":
                yield _Attempt("password", True, ri)
    trial: list[_Attempt] = []
    for ri in env.recipients:
        kind = _kind(ri)
        if kind is None:
            damaged.append("a recipient entry cannot be parsed")
        if kind != "ktri":
            continue
        for key in keyring.keys:
            try:
                if key.matches(ri.chosen["rid"]):
                    yield _Attempt("certificate", True, ri, key)
                elif len(ri.chosen["encrypted_key"].native) == (key.private_key.key_size + 7) // 8:
                    trial.append(_Attempt("certificate", False, ri, key))
            except _PARSE_ERRORS as exc:
                damaged.append(f"a certificate recipient entry is damaged ({_first_line(exc)})")
                break
    yield from trial


def _rsa_padding(kea: cms.KeyEncryptionAlgorithm) -> padding.AsymmetricPadding:
    name = kea["algorithm"].native
    if name == "rsaes_pkcs1v15":
        return padding.PKCS1v15()
    if name == "rsaes_oaep":
        params = kea["parameters"]
        hash_name = params["hash_algorithm"]["algorithm"].native
        mgf = params["mask_gen_algorithm"]
        mgf_hash = mgf["parameters"]["algorithm"].native
        label = params["p_source_algorithm"]["parameters"].native or None
        if mgf["algorithm"].native != "mgf1" or hash_name not in _HASHES or mgf_hash not in _HASHES:
            raise UnsupportedMediaError("RSAES-OAEP with these parameters is not supported")
        return padding.OAEP(mgf=padding.MGF1(_HASHES[mgf_hash]()), algorithm=_HASHES[hash_name](),
                            label=label)
    raise UnsupportedMediaError(f"key transport {name} is not supported")


def _content_key(attempt: _Attempt, keyring: Keyring) -> bytes:
    """The CEK an attempt yields; WrongKeyError when it visibly does not fit."""
    ri = attempt.recipient.chosen
    if attempt.kind == "password":
        params = _kdf_params(ri)
        spec, iv, key_length = _pwri_wrap(ri)
        if key_length is not None and key_length != spec.key_bytes:
            raise MalformedFileError(f"PBKDF2 key length {key_length} does not fit {spec.label}")
        kek = keyring.kek(params, spec.key_bytes)
        assert kek is not None
        return unwrap_key(ri["encrypted_key"].native, kek, spec, iv)
    assert attempt.key is not None
    try:
        return attempt.key.private_key.decrypt(ri["encrypted_key"].native,
                                               _rsa_padding(ri["key_encryption_algorithm"]))
    except ValueError:
        raise WrongKeyError("the private key does not decrypt the content-encryption key") from None


def _holds_digested(plaintext: bytes) -> bool:
    """Whether `plaintext` is a DER/BER DigestedData around id-data (what :func:`seal` writes)."""
    if plaintext[:1] != b"\x30":  # a Part 10 file starts with its preamble
        return False
    try:
        digested = cms.DigestedData.load(plaintext, strict=True)
        return bool(digested["encap_content_info"]["content_type"].native == "data"
                    and digested["digest_algorithm"]["algorithm"].native in _DIGESTS)
    except _PARSE_ERRORS:
        return False


def _inner(plaintext: bytes, content_type: str, recipient: str, marked: bool) -> Opened:
    if content_type == "data":
        if marked:
            raise IntegrityError(
                "written by securepacs, which always protects a file with a DigestedData, but "
                "it claims unprotected id-data content: its content type was altered (tampered)")
        if _holds_digested(plaintext):
            raise IntegrityError(
                "it claims unprotected id-data content but holds a DigestedData: its content "
                "type was altered (tampered)")
        return Opened(plaintext, "data", None, recipient)
    if content_type != "digested_data":
        label = _CONTENT_LABELS.get(content_type, content_type)
        raise UnsupportedMediaError(f"encrypted content {label} is not supported "
                                    "(DigestedData and id-data are)")
    try:
        digested = cms.DigestedData.load(plaintext, strict=True)
        algorithm = digested["digest_algorithm"]["algorithm"].native
        encap = digested["encap_content_info"]
        inner_type = encap["content_type"].native
        content = encap["content"].native
        digest = digested["digest"].native
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        raise IntegrityError("decrypted content is not a valid DigestedData: "
                             "the ciphertext was altered") from None
    if inner_type != "data" or not isinstance(content, bytes):
        raise UnsupportedMediaError(f"DigestedData around {inner_type} is not supported")
    if algorithm not in _DIGESTS:
        raise UnsupportedMediaError(f"digest algorithm {algorithm} is not supported")
    if not hmac.compare_digest(hashlib.new(algorithm, content).digest(), digest or b""):
        raise IntegrityError(f"{_DIGESTS[algorithm]} digest does not match the content: "
                             "the file was altered")
    return Opened(content, "digested_data", algorithm, recipient, marked)


def open_file(data: bytes, keyring: Keyring) -> Opened:
    """Decrypt a Secure DICOM File and verify its digest.

    Parameters
    ----------
    data : bytes
        The whole file: one DER or BER ContentInfo holding an EnvelopedData.
    keyring : Keyring
        The password and/or private keys to try.

    Returns
    -------
    Opened
        The encapsulated Part 10 file and how it was opened.

    Raises
    ------
    WrongKeyError
        No recipient opens with what `keyring` holds.
    IntegrityError
        A recipient opened but the content does not decrypt or its digest does not match, or
        its content type was altered from DigestedData to id-data (see the module notes).
    MalformedFileError
        Not a CMS EnvelopedData, truncated, or damaged (a damaged recipient entry included).
    UnsupportedMediaError
        An algorithm or structure this reader does not implement, or a PBKDF2 iteration count
        above :data:`~securepacs.media.pwri.MAX_ITERATIONS`.

    Notes
    -----
    Only these :class:`~securepacs.errors.MediaError` classes leave this function, whatever
    the input (the fuzz tests in ``tests/fuzz`` hold it), and no content is returned unless
    its digest matched or it is id-data that carries no sign of having been a DigestedData.
    """
    try:
        return _open(data, keyring)
    except _PARSE_ERRORS as exc:
        raise MalformedFileError(f"damaged CMS structure ({_first_line(exc)})") from None


def _open(data: bytes, keyring: Keyring) -> Opened:
    env = _parse(data)
    if len(env.ciphertext) % env.cipher.block_bytes or not env.ciphertext:
        raise MalformedFileError("encrypted content is not a whole number of cipher blocks")
    unsupported: UnsupportedMediaError | None = None
    damaged: list[str] = []
    for attempt in _attempts(env, keyring, damaged):
        try:
            cek = _content_key(attempt, keyring)
        except WrongKeyError:
            continue
        except UnsupportedMediaError as exc:
            unsupported = exc
            continue
        except _PARSE_ERRORS as exc:
            damaged.append(f"damaged recipient information ({_first_line(exc)})")
            continue
        if len(cek) != env.cipher.key_bytes:
            if attempt.strong:
                raise IntegrityError(f"the recovered content key has {len(cek)} bytes, "
                                     f"{env.cipher.label} needs {env.cipher.key_bytes}: "
                                     "the file was altered")
            continue
        plaintext = unpad(env.cipher.decrypt(cek, env.iv, env.ciphertext), env.cipher.block_bytes)
        if plaintext is None:
            if attempt.strong:
                raise IntegrityError("content does not decrypt (bad padding): "
                                     "the ciphertext was altered")
            continue
        marked = len(cek) == 32 and cek.startswith(INTEGRITY_MARK)
        try:
            return _inner(plaintext, env.content_type, attempt.kind, marked)
        except IntegrityError:
            if attempt.strong:
                raise
    if unsupported is not None:
        raise unsupported
    if damaged:
        raise MalformedFileError(damaged[0])
    raise WrongKeyError("no recipient of this file opens with the given password or key")


# --------------------------------------------------------------------------- describing


def _summary(ri: cms.RecipientInfo) -> RecipientSummary:
    chosen = ri.chosen
    if ri.name == "pwri":
        try:
            kdf = _kdf_params(chosen)
            spec, _iv, _len = _pwri_wrap(chosen)
        except UnsupportedMediaError as exc:
            return RecipientSummary("password", f"password ({exc})")
        return RecipientSummary("password", f"password: {kdf.label}, PWRI-KEK {spec.label}", kdf)
    if ri.name == "ktri":
        rid = chosen["rid"]
        algorithm = chosen["key_encryption_algorithm"]["algorithm"].native
        label = {"rsaes_pkcs1v15": "rsaEncryption", "rsaes_oaep": "RSAES-OAEP"}.get(
            algorithm, str(algorithm))
        if rid.name == "issuer_and_serial_number":
            who = (f"issuer {rid.chosen['issuer'].human_friendly}, "
                   f"serial {rid.chosen['serial_number'].native:x}")
        else:
            who = f"subject key identifier {rid.chosen.native.hex()}"
        return RecipientSummary("certificate", f"certificate ({label}): {who}")
    return RecipientSummary("other", f"{ri.name} recipient (not supported by this reader)")


def describe(data: bytes) -> EnvelopeSummary:
    """What a Secure DICOM File declares, read without any key.

    Raises
    ------
    MalformedFileError
        Not a CMS EnvelopedData, truncated, or damaged.
    UnsupportedMediaError
        Its content encryption algorithm is not supported.
    """
    env = _parse(data)
    try:
        recipients = tuple(_summary(ri) for ri in env.recipients)
    except _PARSE_ERRORS as exc:
        raise MalformedFileError(f"damaged recipient information ({_first_line(exc)})") from None
    return EnvelopeSummary(_CONTENT_LABELS.get(env.content_type, env.content_type),
                           env.cipher.label, recipients)
