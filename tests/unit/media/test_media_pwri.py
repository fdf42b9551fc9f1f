"""PBKDF2 (RFC 8018) and the RFC 3211 PWRI-KEK key wrap, and the per-disc KEK cache."""

from __future__ import annotations

import hashlib
import os

import pytest

from mediafixtures import PASSWORD
from securepacs.errors import MalformedFileError, UnsupportedMediaError, WrongKeyError
from securepacs.media import cms
from securepacs.media.ciphers import CBC_CIPHERS
from securepacs.media.pwri import (
    MAX_ITERATIONS,
    KdfParams,
    KekCache,
    derive_kek,
    unwrap_key,
    wrap_key,
)


@pytest.mark.parametrize("prf", ["sha1", "sha256", "sha512"])
def test_derive_kek_is_pbkdf2(prf: str) -> None:
    params = KdfParams(b"salt-salt-salt!!", 1000, prf)
    assert derive_kek(b"pw", params, 32) == hashlib.pbkdf2_hmac(prf, b"pw", params.salt, 1000, 32)


@pytest.mark.parametrize("cipher", list(CBC_CIPHERS))
@pytest.mark.parametrize("cek_len", [16, 24, 32])
def test_wrap_unwrap_round_trip(cipher: str, cek_len: int) -> None:
    spec = CBC_CIPHERS[cipher]
    kek, iv, cek = os.urandom(spec.key_bytes), os.urandom(spec.block_bytes), os.urandom(cek_len)
    wrapped = wrap_key(cek, kek, spec, iv)
    assert len(wrapped) % spec.block_bytes == 0 and len(wrapped) >= 2 * spec.block_bytes
    assert unwrap_key(wrapped, kek, spec, iv) == cek


def test_wrap_is_two_chained_cbc_passes() -> None:
    """RFC 3211 2.3.1 by hand: pass two continues the CBC chain of pass one."""
    spec = CBC_CIPHERS["aes256_cbc"]
    kek, iv, cek = os.urandom(32), os.urandom(16), os.urandom(32)
    wrapped = wrap_key(cek, kek, spec, iv)
    assert spec.decrypt(kek, iv, wrapped)[4:36] != cek  # one pass is not the wrap
    first = spec.decrypt(kek, spec.decrypt(kek, wrapped[-32:-16], wrapped[-16:]), wrapped)
    inner = spec.decrypt(kek, iv, first)
    assert inner[0] == 32 and inner[4:36] == cek
    assert bytes(b ^ 0xFF for b in inner[1:4]) == cek[:3]
    assert spec.encrypt(kek, first[-16:], first) == wrapped


def test_wrong_kek_fails_the_check_bytes() -> None:
    spec = CBC_CIPHERS["aes256_cbc"]
    iv = os.urandom(16)
    wrapped = wrap_key(os.urandom(32), os.urandom(32), spec, iv)
    failures = 0
    for _ in range(50):
        try:
            unwrap_key(wrapped, os.urandom(32), spec, iv)
        except WrongKeyError:
            failures += 1
    assert failures == 50


@pytest.mark.parametrize("size", [0, 16, 17, 40])
def test_short_or_ragged_wrapped_keys_are_malformed(size: int) -> None:
    with pytest.raises(MalformedFileError):
        unwrap_key(b"\x00" * size, os.urandom(32), CBC_CIPHERS["aes256_cbc"], os.urandom(16))


def test_kdf_params_refuse_what_a_reader_should_not_run() -> None:
    with pytest.raises(UnsupportedMediaError, match="iteration"):
        KdfParams(b"12345678", MAX_ITERATIONS + 1)
    with pytest.raises(UnsupportedMediaError, match="md5"):
        KdfParams(b"12345678", 10, "md5")
    with pytest.raises(MalformedFileError):
        KdfParams(b"", 10)


def test_kek_cache_derives_once_per_salt() -> None:
    cache = KekCache(b"pw")
    a, b = KdfParams(b"a" * 16, 100), KdfParams(b"b" * 16, 100)
    assert cache.kek(a, 32) == cache.kek(a, 32)
    assert cache.derivations == 1
    cache.kek(b, 32)
    assert cache.derivations == 2
    assert "pw" not in repr(cache)


def test_one_pbkdf2_for_a_whole_file_set() -> None:
    writer = cms.PasswordRecipient.derive(PASSWORD.encode(), iterations=5000)
    files = [cms.seal(os.urandom(200), [writer]) for _ in range(25)]
    reader = cms.Keyring(password=PASSWORD.encode())
    for data in files:
        cms.open_file(data, reader)
    assert reader.derivations == 1
    other_disc = cms.PasswordRecipient.derive(PASSWORD.encode(), iterations=5000)
    cms.open_file(cms.seal(b"x", [other_disc]), reader)
    assert reader.derivations == 2
