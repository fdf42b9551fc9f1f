"""Fuzz the Secure DICOM File reader (PS3.10 7.4, RFC 5652) with mutated real files.

Seeds are real files sealed here: a password recipient with a DigestedData (what securepacs
writes), the same for an RSA certificate (PKCS #1 v1.5 and OAEP), a Triple-DES-free AES-128
file without the integrity mark, and an id-data file as GDCM writes it. Hypothesis mutates
them (bytes replaced, runs of bytes flipped, truncated, bytes inserted, two files spliced) and
:func:`securepacs.media.cms.open_file` / :func:`~securepacs.media.cms.describe` must:

- raise nothing but :class:`~securepacs.errors.PacsError` subclasses (no traceback for a user);
- never return content whose integrity is claimed but not there: an opened DigestedData file
  is byte for byte the original, and a file securepacs wrote never opens "unprotected";
- finish in bounded time (the PBKDF2 work a file can ask for is capped; here the per-disc
  budget is lowered so that one example stays well under a second).

The ISO 9660 image reader of the same media (``media extract disc.iso``, ``view disc.iso``)
is fuzzed too: a real image with its volume descriptors and directory records mutated must
give one-line :class:`~securepacs.errors.PacsError` failures only.

``SECUREPACS_FUZZ_EXAMPLES`` sets the number of examples (200 by default: a few seconds);
docs/fuzzing.md describes the nightly long run.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from factories import write_study  # noqa: E402
from securepacs.errors import PacsError  # noqa: E402
from securepacs.media import cms, pwri  # noqa: E402
from securepacs.media.image import IsoMedia  # noqa: E402
from securepacs.services.media import create_media  # noqa: E402

EXAMPLES = int(os.environ.get("SECUREPACS_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PASSWORD = b"fuzzing password 123"
CONTENT = b"\x00" * 128 + b"DICM" + bytes(range(256)) * 6
SLOW = 5.0  # seconds: a hang detector, not a speed test (the bench measures speed)


def _certificate() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    from datetime import UTC, datetime, timedelta

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(4242)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return key, cert


KEY, CERT = _certificate()
_PW = cms.PasswordRecipient.derive(PASSWORD, iterations=1000)
_OTHER = cms.PasswordRecipient.derive(PASSWORD, iterations=2048)
SEEDS: list[tuple[str, bytes]] = [
    ("password", cms.seal(CONTENT, [_PW])),
    ("password+certificate", cms.seal(CONTENT, [_PW, cms.CertificateRecipient(CERT)])),
    ("oaep", cms.seal(CONTENT, [cms.CertificateRecipient(CERT, oaep=True)])),
    ("aes128-unmarked", cms.seal(CONTENT, [_PW], cipher="aes128_cbc")),
    ("gdcm-data", cms.seal(CONTENT, [_OTHER], inner="data", cipher="aes128_cbc")),
]
MARKED = {"password", "password+certificate", "oaep"}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name, seed = draw(st.sampled_from(SEEDS))
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["set", "flip", "truncate", "insert", "splice"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "flip":
            for i in range(at, min(len(data), at + draw(st.integers(1, 16)))):
                data[i] ^= 0xFF
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            other_name, other = draw(st.sampled_from(SEEDS))
            cut = draw(st.integers(0, len(other) - 1))
            data = data[:at] + bytearray(other[cut:])
            if other_name != name:
                name = "spliced"  # parts of two writers' files: no promise either way
    return name, bytes(data)


def _keyrings() -> list[cms.Keyring]:
    return [cms.Keyring(password=PASSWORD),
            cms.Keyring(keys=[cms.RecipientKey(KEY, CERT)]),
            cms.Keyring(keys=[cms.RecipientKey(KEY)])]  # trial decryption, no certificate


@pytest.fixture(autouse=True)
def _small_pbkdf2_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutated iteration count may ask for up to MAX_ITERATIONS (seconds of work); the
    per-disc budget bounds it, lowered here so that every example stays fast."""
    monkeypatch.setattr(pwri, "MAX_WORK", 20_000)


@FUZZ
@given(mutated())
def test_reader_raises_only_pacs_errors_and_never_returns_unverified_plaintext(
        case: tuple[str, bytes]) -> None:
    name, data = case
    for keyring in _keyrings():
        started = time.monotonic()
        try:
            opened = cms.open_file(data, keyring)
        except PacsError as exc:
            assert str(exc) and "\n" not in str(exc), repr(exc)
        else:
            if opened.integrity == "verified":
                assert opened.content == CONTENT  # a matching digest means the original
            else:
                assert name not in MARKED, f"{name} opened without its DigestedData"
                assert not opened.marked
        assert time.monotonic() - started < SLOW
    try:
        summary = cms.describe(data)
    except PacsError:
        pass
    else:
        assert summary.recipients


def test_seeds_open_as_written() -> None:
    """The property test is only as good as its seeds: each opens untouched."""
    for name, data in SEEDS:
        opened = [cms.open_file(data, k) for k in _keyrings()[:2] if not (
            name == "oaep" and k.has_password) and not (
            name in ("password", "aes128-unmarked", "gdcm-data") and not k.has_password)]
        assert opened and all(o.content == CONTENT for o in opened)
        assert all(o.integrity == ("unprotected" if name == "gdcm-data" else "verified")
                   for o in opened)


def _iso_seed() -> tuple[Path, bytes]:
    root = Path(tempfile.mkdtemp(prefix="fuzz-iso-"))
    atexit.register(shutil.rmtree, root, True)
    write_study(root / "src", 2, patient_id="ISO1")
    create_media(folders=[root / "src"], iso=root / "disc.iso", password=PASSWORD.decode() + "x",
                 at=datetime.now(UTC), iterations=1000)
    return root, (root / "disc.iso").read_bytes()


ISO_ROOT, ISO = _iso_seed()
SECTOR = 2048


@st.composite
def mutated_iso(draw: st.DrawFn) -> bytes:
    """Bytes changed in the volume descriptors, path tables and directory records (sectors
    16 to 32 of a small image: where the reader parses; file contents are the CMS target's)."""
    data = bytearray(ISO)
    end = min(len(data), 32 * SECTOR)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(16 * SECTOR, end - 1))
        if draw(st.booleans()):
            data[at] = draw(st.integers(0, 255))
        else:
            size = draw(st.sampled_from([2, 4, 8]))
            data[at:at + size] = draw(st.sampled_from([b"\x00", b"\xff"])) * size
    if draw(st.integers(0, 9)) == 0:
        del data[draw(st.integers(17 * SECTOR, len(data) - 1)):]
    return bytes(data)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 2))
@given(mutated_iso())
def test_iso_reader_raises_only_pacs_errors(data: bytes) -> None:
    path = ISO_ROOT / "mutated.iso"
    path.write_bytes(data)
    started = time.monotonic()
    try:
        with IsoMedia(path) as media:
            for rel in media.files():
                media.read(rel)
    except PacsError as exc:
        assert str(exc) and "\n" not in str(exc), repr(exc)
    assert time.monotonic() - started < SLOW
