"""Integrity of Secure DICOM Files: verified vs not protected, the one-byte content-type attack,
damaged recipient entries and hostile PBKDF2 parameters (issue 14, items 9 and 10)."""

from __future__ import annotations

import os

import pytest
from asn1crypto import algos
from asn1crypto import cms as asn1cms

from mediafixtures import PASSWORD, RsaHolder
from securepacs.errors import IntegrityError, MalformedFileError, UnsupportedMediaError
from securepacs.media import cms, pwri
from securepacs.media.ciphers import CBC_CIPHERS

PART10 = b"\x00" * 128 + b"DICM" + os.urandom(3000)
PW = PASSWORD.encode()
DIGESTED_OID = bytes.fromhex("06092a864886f70d010705")  # 1.2.840.113549.1.7.5 id-digestedData


def one_byte_attack(sealed: bytes, *, flip: bool = True) -> bytes:
    """The encrypted content type id-digestedData -> id-data (one byte), plus a bit flipped in
    the middle of the ciphertext (the alteration the digest would have caught)."""
    at = sealed.index(DIGESTED_OID) + len(DIGESTED_OID) - 1
    out = bytearray(sealed)
    out[at] = 0x01  # ...1.7.5 -> ...1.7.1 id-data
    if flip:
        out[len(out) // 2] ^= 0x40
    return bytes(out)


def test_opened_file_says_whether_its_integrity_was_verified(
        password_recipient: cms.PasswordRecipient) -> None:
    protected = cms.open_file(cms.seal(PART10, [password_recipient]), cms.Keyring(password=PW))
    assert (protected.integrity, protected.marked) == ("verified", True)
    plain = cms.open_file(cms.seal(PART10, [password_recipient], inner="data"),
                          cms.Keyring(password=PW))
    assert plain.content == PART10  # another writer's id-data still opens ...
    assert (plain.integrity, plain.marked) == ("unprotected", False)  # ... but says so


def test_every_key_securepacs_writes_carries_the_mark(
        password_recipient: cms.PasswordRecipient) -> None:
    """Unwrap the content-encryption key by hand (RFC 3211), not through open_file."""
    for _ in range(3):
        env = asn1cms.ContentInfo.load(cms.seal(PART10, [password_recipient]))["content"]
        ri = env["recipient_infos"][0].chosen
        wrap = algos.EncryptionAlgorithm.load(ri["key_encryption_algorithm"]["parameters"].dump())
        iv = wrap["parameters"].native
        kek = pwri.derive_kek(PW, password_recipient.kdf, 32)
        cek = pwri.unwrap_key(ri["encrypted_key"].native, kek, CBC_CIPHERS["aes256_cbc"], iv)
        assert len(cek) == 32 and cek[:4] == cms.INTEGRITY_MARK
        assert len(set(cek[4:])) > 8  # the rest is random, not a constant


@pytest.mark.parametrize("flip", [True, False])
def test_one_byte_attack_is_refused_as_tampered(password_recipient: cms.PasswordRecipient,
                                                flip: bool) -> None:
    attacked = one_byte_attack(cms.seal(PART10, [password_recipient]), flip=flip)
    with pytest.raises(IntegrityError, match="content type was altered"):
        cms.open_file(attacked, cms.Keyring(password=PW))


def test_one_byte_attack_through_a_certificate_recipient(alice: RsaHolder) -> None:
    attacked = one_byte_attack(cms.seal(PART10, [cms.CertificateRecipient(alice.cert)]))
    keyring = cms.Keyring(keys=[cms.RecipientKey(alice.key, alice.cert)])
    with pytest.raises(IntegrityError, match="written by securepacs.*tampered"):
        cms.open_file(attacked, keyring)


def test_one_byte_attack_on_an_unmarked_file_is_caught_by_its_plaintext(
        password_recipient: cms.PasswordRecipient) -> None:
    """AES-128 keys carry no mark (only 96 random bits would be left): the DigestedData
    found inside content that claims id-data gives the attack away."""
    sealed = cms.seal(PART10, [password_recipient], cipher="aes128_cbc")
    assert not cms.open_file(sealed, cms.Keyring(password=PW)).marked
    with pytest.raises(IntegrityError, match="holds a DigestedData"):
        cms.open_file(one_byte_attack(sealed), cms.Keyring(password=PW))


def damaged_certificate_entry(alice: RsaHolder, password_recipient: cms.PasswordRecipient,
                              offset: int = 2) -> bytes:
    """A file for a password and a certificate, one byte of the certificate entry's issuer
    name damaged (asn1crypto parses it lazily, when the entry is matched)."""
    sealed = cms.seal(PART10, [password_recipient, cms.CertificateRecipient(alice.cert)])
    at = sealed.index(alice.cert.issuer.public_bytes()) + offset
    out = bytearray(sealed)
    out[at] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize("offset", [-2, 2, 6])
def test_damaged_certificate_entry_is_a_malformed_file_not_a_crash(
        alice: RsaHolder, password_recipient: cms.PasswordRecipient, offset: int) -> None:
    data = damaged_certificate_entry(alice, password_recipient, offset)
    for key in (cms.RecipientKey(alice.key, alice.cert), cms.RecipientKey(alice.key)):
        try:
            cms.open_file(data, cms.Keyring(keys=[key]))
        except MalformedFileError as exc:
            assert "damaged" in str(exc) and "\n" not in str(exc)
    # the password recipient is intact: the file still opens, digest verified
    assert cms.open_file(data, cms.Keyring(password=PW)).integrity == "verified"


def test_damaged_certificate_entry_with_the_matching_key_is_named_damaged(
        alice: RsaHolder, password_recipient: cms.PasswordRecipient) -> None:
    data = damaged_certificate_entry(alice, password_recipient, 2)
    with pytest.raises(MalformedFileError, match="certificate recipient entry is damaged"):
        cms.open_file(data, cms.Keyring(keys=[cms.RecipientKey(alice.key, alice.cert)]))


def with_iterations(sealed: bytes, count: int) -> bytes:
    info = asn1cms.ContentInfo.load(sealed)
    ri = info["content"]["recipient_infos"][0].chosen
    ri["key_derivation_algorithm"]["parameters"]["iteration_count"] = count
    return info.dump(force=True)


def test_hostile_iteration_count_is_refused_with_the_reason(
        password_recipient: cms.PasswordRecipient) -> None:
    assert pwri.MAX_ITERATIONS == 10_000_000  # the browser viewer uses the same number
    hostile = with_iterations(cms.seal(PART10, [password_recipient]), 20_000_000)
    keyring = cms.Keyring(password=PW)
    with pytest.raises(UnsupportedMediaError, match=r"20,000,000 is outside 1\.\.10,000,000"):
        cms.open_file(hostile, keyring)
    assert keyring.derivations == 0  # refused before any PBKDF2 work
    summary = cms.describe(hostile)
    assert "10,000,000" in summary.recipients[0].detail


def test_total_pbkdf2_work_of_one_keyring_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A disc whose every file has its own salt cannot make the reader derive without end."""
    monkeypatch.setattr(pwri, "MAX_WORK", 2500)
    files = [cms.seal(PART10, [cms.PasswordRecipient.derive(PW, iterations=1000)])
             for _ in range(3)]
    keyring = cms.Keyring(password=PW)
    assert cms.open_file(files[0], keyring).integrity == "verified"
    assert cms.open_file(files[1], keyring).integrity == "verified"
    assert cms.open_file(files[0], keyring).content == PART10  # cached: no new work
    with pytest.raises(UnsupportedMediaError, match="more than 2,500 PBKDF2 iterations"):
        cms.open_file(files[2], keyring)
    assert keyring.derivations == 2
