"""Seal/open of Secure DICOM Files (RFC 5652 EnvelopedData), in memory."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import cms as asn1cms
from cryptography.hazmat.primitives.asymmetric import ec

from mediafixtures import FAST_ITERATIONS, PASSWORD, RsaHolder, rsa_holder
from securepacs.errors import (
    IntegrityError,
    MalformedFileError,
    UnsupportedMediaError,
    WrongKeyError,
)
from securepacs.media import cms
from securepacs.media.pwri import KdfParams, derive_kek
from securepacs.pki import authority

PART10 = b"\x00" * 128 + b"DICM" + os.urandom(3000)
PW = PASSWORD.encode()


def keyring() -> cms.Keyring:
    return cms.Keyring(password=PW)


def parse(data: bytes) -> asn1cms.EnvelopedData:
    return asn1cms.ContentInfo.load(data)["content"]


# --------------------------------------------------------------------------- round trips


def test_password_round_trip_with_digested_data(password_recipient: cms.PasswordRecipient) -> None:
    sealed = cms.seal(PART10, [password_recipient])
    opened = cms.open_file(sealed, keyring())
    assert opened.content == PART10
    assert (opened.inner, opened.digest_algorithm, opened.recipient) == (
        "digested_data", "sha256", "password")


def test_written_structure_is_what_ps3_15_d1_asks(password_recipient: cms.PasswordRecipient) -> None:
    sealed = cms.seal(PART10, [password_recipient])
    assert sealed[:1] == b"\x30" and b"DICM" not in sealed[:200]  # no preamble, no DICM
    info = asn1cms.ContentInfo.load(sealed, strict=True)
    assert info.dump(force=True) == sealed  # DER: re-encoding changes nothing
    env = info["content"]
    assert env["version"].native == "v3"  # a pwri is present (RFC 5652 6.1)
    eci = env["encrypted_content_info"]
    assert eci["content_type"].native == "digested_data"
    assert eci["content_encryption_algorithm"]["algorithm"].native == "aes256_cbc"
    pwri = env["recipient_infos"][0].chosen
    kdf = pwri["key_derivation_algorithm"]["parameters"]
    assert kdf["prf"]["algorithm"].native == "sha256"
    assert bytes.fromhex("06082a864886f70d0209") in pwri.dump()  # hmacWithSHA256 written out
    assert len(kdf["salt"].chosen.native) == 16
    assert pwri["key_encryption_algorithm"]["algorithm"].dotted == "1.2.840.113549.1.9.16.3.9"


@pytest.mark.parametrize("size", [0, 5, 127, 128, 255, 256, 70000])
def test_hand_built_der_equals_asn1crypto(size: int) -> None:
    content = os.urandom(size)
    assert cms._digested(content, "sha256") == asn1cms.DigestedData({
        "version": "v0", "digest_algorithm": {"algorithm": "sha256"},
        "encap_content_info": {"content_type": "data", "content": content},
        "digest": hashlib.sha256(content).digest()}).dump()


def test_every_seal_has_a_fresh_key_and_iv(password_recipient: cms.PasswordRecipient) -> None:
    a, b = (parse(cms.seal(PART10, [password_recipient])) for _ in range(2))
    iv = [e["encrypted_content_info"]["content_encryption_algorithm"]["parameters"].native
          for e in (a, b)]
    keys = [e["recipient_infos"][0].chosen["encrypted_key"].native for e in (a, b)]
    salts = [e["recipient_infos"][0].chosen["key_derivation_algorithm"]["parameters"]["salt"]
             .chosen.native for e in (a, b)]
    assert iv[0] != iv[1] and keys[0] != keys[1]
    assert salts[0] == salts[1]  # one salt per file-set


def test_id_data_content_as_gdcm_writes(password_recipient: cms.PasswordRecipient) -> None:
    opened = cms.open_file(cms.seal(PART10, [password_recipient], inner="data"), keyring())
    assert (opened.content, opened.inner, opened.digest_algorithm) == (PART10, "data", None)


@pytest.mark.parametrize("cipher", ["aes128_cbc", "aes192_cbc"])
def test_other_aes_key_sizes(password_recipient: cms.PasswordRecipient, cipher: str) -> None:
    assert cms.open_file(cms.seal(PART10, [password_recipient], cipher=cipher),
                         keyring()).content == PART10


def test_writers_use_aes_only(password_recipient: cms.PasswordRecipient) -> None:
    with pytest.raises(ValueError, match="AES"):
        cms.seal(PART10, [password_recipient], cipher="tripledes_3key")
    with pytest.raises(ValueError, match="recipient"):
        cms.seal(PART10, [])


@pytest.mark.parametrize("oaep", [False, True])
def test_rsa_key_transport(alice: RsaHolder, oaep: bool) -> None:
    sealed = cms.seal(PART10, [cms.CertificateRecipient(alice.cert, oaep=oaep)])
    env = parse(sealed)
    assert env["version"].native == "v0"
    ktri = env["recipient_infos"][0].chosen
    assert ktri["rid"].name == "issuer_and_serial_number"
    assert ktri["key_encryption_algorithm"]["algorithm"].native == (
        "rsaes_oaep" if oaep else "rsaes_pkcs1v15")
    for key in (cms.RecipientKey(alice.key, alice.cert), cms.RecipientKey(alice.key)):
        opened = cms.open_file(sealed, cms.Keyring(keys=[key]))
        assert (opened.content, opened.recipient) == (PART10, "certificate")


def test_several_recipients_each_open_alone(password_recipient: cms.PasswordRecipient,
                                            alice: RsaHolder, bob: RsaHolder) -> None:
    sealed = cms.seal(PART10, [password_recipient, cms.CertificateRecipient(alice.cert),
                               cms.CertificateRecipient(bob.cert)])
    assert len(parse(sealed)["recipient_infos"]) == 3
    assert cms.open_file(sealed, keyring()).content == PART10
    for holder in (alice, bob):
        assert cms.open_file(sealed, cms.Keyring(keys=[cms.RecipientKey(holder.key)])
                             ).content == PART10


def test_reader_accepts_sha1_prf_and_openssl_cli_defaults() -> None:
    params = KdfParams(os.urandom(8), 2048, "sha1")
    recipient = cms.PasswordRecipient(params, derive_kek(PW, params, 32))
    sealed = cms.seal(PART10, [recipient])
    prf = parse(sealed)["recipient_infos"][0].chosen["key_derivation_algorithm"]["parameters"]["prf"]
    assert prf.native["algorithm"] == "sha1"  # the DER default, so not even written
    assert bytes.fromhex("06082a864886f70d0207") not in sealed
    assert cms.open_file(sealed, keyring()).content == PART10


def _ber(der: bytes) -> bytes:
    """Re-encode the outer SEQUENCE and its [0] with indefinite lengths (BER)."""
    def body(data: bytes) -> tuple[bytes, bytes]:
        first = data[1]
        if first < 0x80:
            return data[2:2 + first], data[2 + first:]
        n = first & 0x7F
        length = int.from_bytes(data[2:2 + n], "big")
        return data[2 + n:2 + n + length], data[2 + n + length:]
    outer, _rest = body(der)
    oid_len = 2 + outer[1]
    inner, _ = body(outer[oid_len:])
    return b"\x30\x80" + outer[:oid_len] + b"\xa0\x80" + inner + b"\x00\x00" + b"\x00\x00"


def test_reader_accepts_ber_indefinite_lengths(password_recipient: cms.PasswordRecipient) -> None:
    ber = _ber(cms.seal(PART10, [password_recipient]))
    assert ber[:2] == b"\x30\x80"
    assert cms.open_file(ber, keyring()).content == PART10


# --------------------------------------------------------------------------- failures


def test_wrong_password_is_wrong_key(password_recipient: cms.PasswordRecipient) -> None:
    sealed = cms.seal(PART10, [password_recipient])
    with pytest.raises(WrongKeyError):
        cms.open_file(sealed, cms.Keyring(password=b"not the password"))


def test_wrong_rsa_key_is_wrong_key(alice: RsaHolder, bob: RsaHolder) -> None:
    sealed = cms.seal(PART10, [cms.CertificateRecipient(alice.cert)])
    for key in (cms.RecipientKey(bob.key), cms.RecipientKey(bob.key, bob.cert)):
        with pytest.raises(WrongKeyError):
            cms.open_file(sealed, cms.Keyring(keys=[key]))


@pytest.mark.parametrize("garbage", [b"", b"\x30", b"hello world", PART10, os.urandom(500)])
def test_not_cms_is_malformed(garbage: bytes) -> None:
    with pytest.raises(MalformedFileError):
        cms.open_file(garbage, keyring())


def test_every_truncation_is_a_clear_error(password_recipient: cms.PasswordRecipient) -> None:
    sealed = cms.seal(PART10, [password_recipient])
    for cut in range(1, len(sealed), 37):
        with pytest.raises(MalformedFileError):
            cms.open_file(sealed[:cut], keyring())
        with pytest.raises(MalformedFileError):
            cms.describe(sealed[:cut])


def test_trailing_bytes_are_malformed(password_recipient: cms.PasswordRecipient) -> None:
    with pytest.raises(MalformedFileError):
        cms.open_file(cms.seal(PART10, [password_recipient]) + b"\x00", keyring())


def test_other_content_types_are_refused() -> None:
    digested = asn1cms.ContentInfo({"content_type": "digested_data", "content": {
        "version": "v0", "digest_algorithm": {"algorithm": "sha256"},
        "encap_content_info": {"content_type": "data", "content": b"x"},
        "digest": hashlib.sha256(b"x").digest()}}).dump()
    with pytest.raises(MalformedFileError, match="not EnvelopedData"):
        cms.open_file(digested, keyring())


def _flip(data: bytes, offset_from_end: int) -> bytes:
    i = len(data) - offset_from_end
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


@pytest.mark.parametrize("where", [1, 17, 700, 2500])
def test_altered_ciphertext_is_an_integrity_error(password_recipient: cms.PasswordRecipient,
                                                  where: int) -> None:
    sealed = cms.seal(PART10, [password_recipient])
    with pytest.raises(IntegrityError):
        cms.open_file(_flip(sealed, where), keyring())


def test_altered_digest_is_named_as_such(password_recipient: cms.PasswordRecipient,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real = cms._digested_parts

    def wrong_digest(content: bytes, digest: str) -> list[bytes]:
        dd = asn1cms.DigestedData.load(b"".join(real(content, digest)))
        dd["digest"] = hashlib.sha256(b"something else").digest()
        return [dd.dump(force=True)]

    monkeypatch.setattr(cms, "_digested_parts", wrong_digest)
    sealed = cms.seal(PART10, [password_recipient])
    with pytest.raises(IntegrityError, match="SHA-256 digest does not match"):
        cms.open_file(sealed, keyring())


def test_exact_key_match_reports_tampering_not_wrong_key(alice: RsaHolder) -> None:
    """With the recipient identified (SKI rid) a bad content key is damage, not a wrong key."""
    sealed = cms.seal(PART10, [cms.CertificateRecipient(alice.cert)])
    info = asn1cms.ContentInfo.load(sealed)
    key = cms.RecipientKey(alice.key)
    ri = info["content"]["recipient_infos"][0].chosen
    ri["rid"] = asn1cms.RecipientIdentifier(name="subject_key_identifier",
                                            value=key.key_identifier)
    ri["version"] = "v2"
    ski_sealed = info.dump(force=True)
    assert cms.open_file(ski_sealed, cms.Keyring(keys=[key])).content == PART10
    with pytest.raises(IntegrityError):
        cms.open_file(_flip(ski_sealed, 5), cms.Keyring(keys=[key]))


def test_unsupported_content_cipher_is_named(password_recipient: cms.PasswordRecipient) -> None:
    info = asn1cms.ContentInfo.load(cms.seal(PART10, [password_recipient]))
    info["content"]["encrypted_content_info"]["content_encryption_algorithm"] = {
        "algorithm": "rc2", "parameters": {"rc2_parameter_version": 58, "iv": b"\x00" * 8}}
    with pytest.raises(UnsupportedMediaError, match="rc2"):
        cms.open_file(info.dump(force=True), keyring())


# --------------------------------------------------------------------------- describe, checks


def test_describe_needs_no_key(password_recipient: cms.PasswordRecipient, alice: RsaHolder) -> None:
    summary = cms.describe(cms.seal(PART10, [password_recipient,
                                             cms.CertificateRecipient(alice.cert, oaep=True)]))
    assert (summary.content_type, summary.cipher) == ("DigestedData", "AES-256-CBC")
    kinds = [r.kind for r in summary.recipients]
    assert sorted(kinds) == ["certificate", "password"]
    password = next(r for r in summary.recipients if r.kind == "password")
    assert password.kdf is not None and password.kdf.iterations == FAST_ITERATIONS
    assert "PBKDF2-HMAC-SHA-256" in password.detail
    assert any("RSAES-OAEP" in r.detail and "Test CA" in r.detail for r in summary.recipients)


def test_secrets_stay_out_of_repr(password_recipient: cms.PasswordRecipient) -> None:
    assert PASSWORD not in repr(keyring()) and "correct" not in repr(keyring())
    assert password_recipient._kek.hex() not in repr(password_recipient)


def test_check_certificate(tmp_path, pki, alice: RsaHolder) -> None:  # noqa: ANN001
    now = datetime.now(UTC)
    cms.check_certificate(alice.cert, at=now)
    with pytest.raises(ValueError, match="expired"):
        cms.check_certificate(alice.cert, at=now + timedelta(days=400))
    with pytest.raises(ValueError, match="not valid before"):
        cms.check_certificate(alice.cert, at=now - timedelta(days=1))
    with pytest.raises(ValueError, match="timezone"):
        cms.check_certificate(alice.cert, at=datetime.now())
    _key, ec_cert = authority.issue_certificate(pki.ca_key_obj, pki.ca_cert_obj, common_name="ec",
                                                role="client", at=now)
    with pytest.raises(ValueError, match="RSA"):
        cms.check_certificate(ec_cert, at=now)
    with pytest.raises(ValueError, match="RSA"):
        cms.CertificateRecipient(ec_cert)
    rsa_ca_key, rsa_ca = authority.create_root_ca("rsa ca", at=now, key_kind="rsa")
    with pytest.raises(ValueError, match="keyEncipherment"):
        cms.check_certificate(rsa_ca, at=now)
    assert isinstance(_key, ec.EllipticCurvePrivateKey)
    other = rsa_holder(tmp_path, "carol", pki)
    with pytest.raises(ValueError, match="does not belong"):
        cms.RecipientKey(alice.key, other.cert)


def test_password_recipient_der_is_asn1crypto_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-file DER of a password RecipientInfo (a template filled with the wrap IV and
    the wrapped key) is exactly what asn1crypto encodes, for every content-key length."""
    import random

    from securepacs.media import recipients

    writer = cms.PasswordRecipient.derive(b"correct horse", iterations=3, salt=b"s" * 16)
    rng = random.Random(5)
    monkeypatch.setattr(recipients.os, "urandom", lambda n: rng.randbytes(n))
    for size in (16, 24, 32):
        recipients.recipient_info_der(writer, b"k" * size)  # the template is made once
        rng.seed(size)
        fast = recipients.recipient_info_der(writer, bytes(range(size)))
        rng.seed(size)
        assert fast == recipients.recipient_info(writer, bytes(range(size))).dump()
