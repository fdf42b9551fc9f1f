"""Interoperability with OpenSSL's ``openssl cms``, the independent CMS implementation.

Both directions (issue 5): OpenSSL opens every file we write (password and certificate
recipients; its output is our DigestedData, whose digest and Part 10 content are checked), and
we open what ``openssl cms -encrypt`` writes: password (PBKDF2-HMAC-SHA1, 2048 iterations, its
CLI defaults), RSA certificate (PKCS #1 v1.5 and OAEP), certificate and password in one file,
AES-128/192/256 and Triple-DES, DER and BER (``-stream``). ``-binary`` always: without it
OpenSSL rewrites line ends in the content (S/MIME canonicalisation).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import pytest
from asn1crypto import cms as asn1cms
from pydicom import dcmread

from mediafixtures import PASSWORD, RsaHolder, make_studies, rsa_holder
from securepacs.errors import WrongKeyError
from securepacs.media import cms
from securepacs.services import media as service

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed"),
]


def openssl(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, check=check,
                          timeout=60)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, pki) -> dict[str, RsaHolder]:  # noqa: ANN001
    folder = tmp_path_factory.mktemp("keys")
    return {name: rsa_holder(folder, name, pki) for name in ("alice", "escrow")}


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    folder = tmp_path_factory.mktemp("src")
    return folder, make_studies(folder)


@pytest.fixture(scope="module")
def disc(tmp_path_factory: pytest.TempPathFactory, studies, keys) -> Path:  # noqa: ANN001
    """A file-set as the CLI writes it: password (600,000 iterations) + escrow certificate."""
    out = tmp_path_factory.mktemp("disc") / "out"
    service.create_media(folders=[studies[0]], out_dir=out, password=PASSWORD,
                         escrow=[keys["escrow"].cert_path], at=datetime.now(UTC))
    return out


def secure_files(root: Path) -> list[Path]:
    plain = {"README.TXT", "INDEX.HTM"}  # and the disc viewer's folder
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in plain
                  and p.relative_to(root).parts[0] != "VIEWER")


def check_digested(output: bytes, studies: dict[str, bytes], tmp: Path) -> bytes:
    """OpenSSL's output is our DigestedData: check its SHA-256 and return the Part 10 file."""
    digested = asn1cms.DigestedData.load(output, strict=True)
    assert digested["digest_algorithm"]["algorithm"].native == "sha256"
    content = digested["encap_content_info"]["content"].native
    assert digested["digest"].native == hashlib.sha256(content).digest()
    # and let OpenSSL check the digest too, independently of asn1crypto
    wrapped = asn1cms.ContentInfo({"content_type": "digested_data", "content": digested})
    (tmp / "digested.der").write_bytes(wrapped.dump())
    verified = openssl("cms", "-digest_verify", "-binary", "-inform", "DER",
                       "-in", tmp / "digested.der", "-out", tmp / "verified.bin")
    assert b"Verification successful" in verified.stdout + verified.stderr
    assert (tmp / "verified.bin").read_bytes() == content
    ds = dcmread(BytesIO(content))
    if ds.file_meta.MediaStorageSOPClassUID != "1.2.840.10008.1.3.10":
        assert content == studies[str(ds.SOPInstanceUID)]
    return content


# --------------------------------------------------------------------------- OpenSSL reads ours


def test_openssl_opens_every_file_we_write_with_the_password(disc: Path, studies,  # noqa: ANN001
                                                             tmp_path: Path) -> None:
    files = secure_files(disc)
    assert len(files) == 8  # DICOMDIR + 7 instances
    kinds = set()
    for path in files:
        out = tmp_path / "out.der"
        openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", path,
                "-pwri_password", PASSWORD, "-out", out)
        content = check_digested(out.read_bytes(), studies[1], tmp_path)
        kinds.add(dcmread(BytesIO(content)).file_meta.MediaStorageSOPClassUID)
    assert "1.2.840.10008.1.3.10" in kinds  # the DICOMDIR was among them


def test_openssl_refuses_a_wrong_password_on_our_file(disc: Path, tmp_path: Path) -> None:
    result = openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", disc / "DICOMDIR",
                     "-pwri_password", "not the password", "-out", tmp_path / "x", check=False)
    assert result.returncode != 0


def test_openssl_opens_our_escrow_recipient(disc: Path, studies, keys,  # noqa: ANN001
                                            tmp_path: Path) -> None:
    escrow = keys["escrow"]
    for path in secure_files(disc)[:3]:
        openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", path, "-recip",
                escrow.cert_path, "-inkey", escrow.key_path, "-out", tmp_path / "out.der")
        check_digested((tmp_path / "out.der").read_bytes(), studies[1], tmp_path)


def test_openssl_opens_our_oaep_recipient(tmp_path: Path, studies, keys) -> None:  # noqa: ANN001
    alice = keys["alice"]
    out = tmp_path / "oaep"
    service.create_media(folders=[studies[0]], out_dir=out, recipients=[alice.cert_path],
                         oaep=True, at=datetime.now(UTC))
    path = secure_files(out)[1]
    assert b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x07" in path.read_bytes()  # id-RSAES-OAEP
    openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", path, "-recip",
            alice.cert_path, "-inkey", alice.key_path, "-out", tmp_path / "out.der")
    check_digested((tmp_path / "out.der").read_bytes(), studies[1], tmp_path)


# --------------------------------------------------------------------------- we read OpenSSL's


@pytest.fixture(scope="module")
def part10(studies) -> bytes:  # noqa: ANN001
    return next(iter(studies[1].values()))


@pytest.mark.parametrize("cipher", ["-aes256", "-aes128", "-aes192", "-des3"])
@pytest.mark.parametrize("stream", [False, True])
def test_we_open_openssl_password_files(tmp_path: Path, part10: bytes, cipher: str,
                                        stream: bool) -> None:
    (tmp_path / "in.dcm").write_bytes(part10)
    openssl("cms", "-encrypt", "-binary", *(["-stream"] if stream else []), cipher,
            "-pwri_password", PASSWORD, "-in", tmp_path / "in.dcm", "-outform", "DER",
            "-out", tmp_path / "f.der")
    data = (tmp_path / "f.der").read_bytes()
    assert (data[1] == 0x80) == stream  # -stream writes BER indefinite lengths
    summary = cms.describe(data)
    assert summary.content_type == "id-data"
    assert "PBKDF2-HMAC-SHA-1, 2048 iterations, 8-byte salt" in summary.recipients[0].detail
    opened = cms.open_file(data, cms.Keyring(password=PASSWORD.encode()))
    assert (opened.content, opened.inner) == (part10, "data")
    with pytest.raises(WrongKeyError):
        cms.open_file(data, cms.Keyring(password=b"wrong password"))


@pytest.mark.parametrize("oaep", [False, True])
def test_we_open_openssl_certificate_files(tmp_path: Path, part10: bytes, keys,  # noqa: ANN001
                                           oaep: bool) -> None:
    alice = keys["alice"]
    (tmp_path / "in.dcm").write_bytes(part10)
    extra = ["-keyopt", "rsa_padding_mode:oaep"] if oaep else []
    openssl("cms", "-encrypt", "-binary", "-aes256", "-in", tmp_path / "in.dcm", "-recip",
            alice.cert_path, *extra, "-outform", "DER", "-out", tmp_path / "f.der")
    data = (tmp_path / "f.der").read_bytes()
    for key in (cms.RecipientKey(alice.key), cms.RecipientKey(alice.key, alice.cert)):
        assert cms.open_file(data, cms.Keyring(keys=[key])).content == part10
    with pytest.raises(WrongKeyError):
        cms.open_file(data, cms.Keyring(keys=[cms.RecipientKey(keys["escrow"].key)]))


def test_we_open_openssl_certificate_and_password_in_one_file(tmp_path: Path, part10: bytes,
                                                               keys) -> None:  # noqa: ANN001
    alice = keys["alice"]
    (tmp_path / "in.dcm").write_bytes(part10)
    openssl("cms", "-encrypt", "-binary", "-aes256", "-in", tmp_path / "in.dcm",
            "-pwri_password", PASSWORD, "-outform", "DER", "-out", tmp_path / "f.der",
            alice.cert_path)
    data = (tmp_path / "f.der").read_bytes()
    assert sorted(r.kind for r in cms.describe(data).recipients) == ["certificate", "password"]
    assert cms.open_file(data, cms.Keyring(password=PASSWORD.encode())).content == part10
    assert cms.open_file(data, cms.Keyring(keys=[cms.RecipientKey(alice.key)])).content == part10


def test_we_extract_a_file_set_encrypted_by_openssl(tmp_path: Path, disc: Path,  # noqa: ANN001
                                                    studies) -> None:
    """Every file of a plain file-set, DICOMDIR included, sealed by OpenSSL, then extracted."""
    keyring = cms.Keyring(password=PASSWORD.encode())
    plain = tmp_path / "plain"
    service.extract_media(disc, plain, keyring)
    foreign = tmp_path / "foreign"
    for path in sorted(p for p in plain.rglob("*") if p.is_file()):
        target = foreign / path.relative_to(plain)
        target.parent.mkdir(parents=True, exist_ok=True)
        openssl("cms", "-encrypt", "-binary", "-aes256", "-pwri_password", PASSWORD, "-in", path,
                "-outform", "DER", "-out", target)
    back = tmp_path / "back"
    report = service.extract_media(foreign, back, cms.Keyring(password=PASSWORD.encode()))
    assert report.written == 8 and not report.failures and not report.dicomdir_problems
    for path in plain.rglob("*"):
        if path.is_file():
            assert (back / path.relative_to(plain)).read_bytes() == path.read_bytes()
