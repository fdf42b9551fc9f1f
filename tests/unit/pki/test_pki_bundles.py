"""Tests of securepacs.pki.bundles: PEM bundles and PKCS#12, checked against the openssl CLI."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from securepacs.errors import PkiError
from securepacs.pki.authority import (
    KeyKind,
    PrivateKey,
    create_root_ca,
    generate_key,
    issue_certificate,
)
from securepacs.pki.bundles import PKCS12_KDF_ROUNDS, load_pkcs12, pem_bundle, pkcs12

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OPENSSL = shutil.which("openssl")
PASSWORD = b"correct horse battery staple"
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")

Material = tuple[PrivateKey, x509.Certificate, x509.Certificate]


@pytest.fixture(scope="module")
def ca() -> tuple[PrivateKey, x509.Certificate]:
    return create_root_ca("bundles test CA", at=AT)


def _issue(ca: tuple[PrivateKey, x509.Certificate], kind: KeyKind) -> Material:
    ca_key, ca_cert = ca
    key, cert = issue_certificate(
        ca_key, ca_cert, common_name="alice", role="client", at=AT, key_kind=kind
    )
    assert key is not None
    return key, cert, ca_cert


@pytest.fixture(scope="module")
def ec_leaf(ca: tuple[PrivateKey, x509.Certificate]) -> Material:
    """(leaf key, leaf certificate, CA certificate) with an EC P-256 leaf."""
    return _issue(ca, "ec")


@pytest.fixture(scope="module")
def rsa_leaf(ca: tuple[PrivateKey, x509.Certificate]) -> Material:
    """(leaf key, leaf certificate, CA certificate) with an RSA 3072 leaf."""
    return _issue(ca, "rsa")


@pytest.fixture(params=["ec", "rsa"])
def leaf(request: pytest.FixtureRequest) -> Material:
    """Both leaves in turn."""
    material: Material = request.getfixturevalue(f"{request.param}_leaf")
    return material


# The openssl checks use the EC leaf only: each modern file costs PBKDF2 rounds to make and open.
@pytest.fixture(scope="module")
def modern(ec_leaf: Material) -> bytes:
    key, cert, ca_cert = ec_leaf
    return pkcs12("alice", key, cert, [ca_cert], PASSWORD)


@pytest.fixture(scope="module")
def legacy(ec_leaf: Material) -> bytes:
    key, cert, ca_cert = ec_leaf
    return pkcs12("alice", key, cert, [ca_cert], PASSWORD, legacy=True)


def _same_key(a: PrivateKey, b: PrivateKey) -> bool:
    return a.private_numbers() == b.private_numbers()  # type: ignore[union-attr,comparison-overlap]


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(OPENSSL), *args], capture_output=True, text=True, timeout=30, check=False
    )


def _pkcs12_info(path: Path, password: bytes, *extra: str) -> subprocess.CompletedProcess[str]:
    return _openssl("pkcs12", *extra, "-info", "-in", str(path), "-passin",
                    f"pass:{password.decode()}", "-nokeys")


# --------------------------------------------------------------------------- PEM bundle


def test_pem_bundle_unencrypted(leaf: Material) -> None:
    key, cert, ca_cert = leaf
    data = pem_bundle(key, [cert, ca_cert])
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, not SEC1 / PKCS#1
    assert data.count(b"-----BEGIN CERTIFICATE-----") == 2
    loaded = serialization.load_pem_private_key(data, None)
    assert _same_key(loaded, key)  # type: ignore[arg-type]
    assert x509.load_pem_x509_certificates(data) == [cert, ca_cert]  # leaf first


@needs_openssl
def test_pem_bundle_encrypted_opens_with_openssl(leaf: Material, tmp_path: Path) -> None:
    key, cert, ca_cert = leaf
    data = pem_bundle(key, [cert, ca_cert], passphrase=PASSWORD)
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert b"-----BEGIN PRIVATE KEY-----" not in data
    loaded = serialization.load_pem_private_key(data, PASSWORD)
    assert _same_key(loaded, key)  # type: ignore[arg-type]
    path = tmp_path / "bundle.pem"
    path.write_bytes(data)
    ok = _openssl("pkey", "-in", str(path), "-passin", f"pass:{PASSWORD.decode()}", "-noout")
    assert ok.returncode == 0, ok.stderr
    wrong = _openssl("pkey", "-in", str(path), "-passin", "pass:wrong", "-noout")
    assert wrong.returncode != 0
    first = _openssl("x509", "-in", str(path), "-noout", "-subject")
    assert first.returncode == 0 and "CN = alice" in first.stdout  # the leaf comes first


def test_pem_bundle_rejects_bad_input(leaf: Material) -> None:
    key, cert, ca_cert = leaf
    with pytest.raises(ValueError, match="non-empty sequence"):
        pem_bundle(key, [])
    with pytest.raises(ValueError, match="does not belong"):
        pem_bundle(key, [ca_cert, cert])  # not leaf first
    with pytest.raises(ValueError, match="must not be empty"):
        pem_bundle(key, [cert], passphrase=b"")
    with pytest.raises(TypeError, match="passphrase must be bytes"):
        pem_bundle(key, [cert], passphrase="secret")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="EC or RSA private key"):
        pem_bundle(key.public_key(), [cert])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"chain\[1\]"):
        pem_bundle(key, [cert, b"not a cert"])  # type: ignore[list-item]


# --------------------------------------------------------------------------- PKCS#12


@pytest.mark.parametrize("legacy_format", [False, True], ids=["modern", "legacy"])
def test_pkcs12_round_trip(legacy_format: bool, leaf: Material) -> None:
    key, cert, ca_cert = leaf
    data = pkcs12("alice", key, cert, [ca_cert], PASSWORD, legacy=legacy_format)
    loaded_key, loaded_cert, cas = load_pkcs12(data, PASSWORD)
    assert _same_key(loaded_key, key)
    assert type(loaded_key) is type(key)
    assert loaded_cert == cert
    assert cas == [ca_cert]  # the friendly name is checked by the openssl tests below


def test_pkcs12_without_cas(leaf: Material) -> None:
    key, cert, _ = leaf
    loaded_key, loaded_cert, cas = load_pkcs12(
        pkcs12("alice", key, cert, [], PASSWORD, legacy=True), PASSWORD
    )
    assert loaded_cert == cert and cas == [] and _same_key(loaded_key, key)


@needs_openssl
def test_openssl_reads_modern_pkcs12(modern: bytes, tmp_path: Path) -> None:
    path = tmp_path / "alice.p12"
    path.write_bytes(modern)
    run = _pkcs12_info(path, PASSWORD)
    assert run.returncode == 0, run.stderr
    info = run.stderr  # openssl writes the -info lines to stderr, the PEM to stdout
    assert "MAC: sha256" in info
    assert "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC" in info
    assert "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC" in info
    assert "PRF hmacWithSHA256" in info
    assert f"Iteration {PKCS12_KDF_ROUNDS}" in info
    assert "friendlyName: alice" in run.stdout
    assert run.stdout.count("-----BEGIN CERTIFICATE-----") == 2


@needs_openssl
def test_openssl_reads_legacy_pkcs12(legacy: bytes, tmp_path: Path) -> None:
    path = tmp_path / "alice-legacy.p12"
    path.write_bytes(legacy)
    run = _pkcs12_info(path, PASSWORD, "-legacy")
    assert run.returncode == 0, run.stderr
    info = run.stderr
    assert "MAC: sha1" in info
    assert "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC" in info
    assert "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC" in info
    assert "AES" not in info and "PBES2" not in info
    assert "friendlyName: alice" in run.stdout
    # OpenSSL 3 keeps 3DES in its default provider: -legacy is only needed for RC2/RC4 files.
    plain = _pkcs12_info(path, PASSWORD)
    assert plain.returncode == 0, plain.stderr


@needs_openssl
@pytest.mark.parametrize("kind", ["modern", "legacy"])
def test_wrong_password_fails_everywhere(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    data: bytes = request.getfixturevalue(kind)
    path = tmp_path / "alice.p12"
    path.write_bytes(data)
    run = _pkcs12_info(path, b"wrong password", "-legacy")
    assert run.returncode != 0
    assert "Mac verify error" in run.stderr
    with pytest.raises(PkiError) as info:
        load_pkcs12(data, b"wrong password")
    assert str(info.value) == "the password does not open this PKCS#12 file"
    assert "wrong" not in str(info.value)


@needs_openssl
def test_load_pkcs12_made_by_openssl(ec_leaf: Material, tmp_path: Path) -> None:
    key, cert, ca_cert = ec_leaf
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem_bundle(key, [cert, ca_cert]))
    out = tmp_path / "openssl.p12"
    run = _openssl("pkcs12", "-export", "-in", str(bundle), "-name", "alice",
                   "-passout", f"pass:{PASSWORD.decode()}", "-out", str(out))
    assert run.returncode == 0, run.stderr
    loaded_key, loaded_cert, cas = load_pkcs12(out.read_bytes(), PASSWORD)
    assert _same_key(loaded_key, key) and loaded_cert == cert and cas == [ca_cert]


def test_pkcs12_rejects_bad_input(leaf: Material) -> None:
    key, cert, ca_cert = leaf
    with pytest.raises(ValueError, match="without a password is not allowed"):
        pkcs12("alice", key, cert, [ca_cert], b"")
    with pytest.raises(TypeError, match="passphrase must be bytes"):
        pkcs12("alice", key, cert, [ca_cert], "secret")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not belong"):
        pkcs12("alice", key, ca_cert, [cert], PASSWORD)
    with pytest.raises(ValueError, match="does not belong"):
        pkcs12("alice", generate_key(), cert, [ca_cert], PASSWORD)
    with pytest.raises(ValueError, match="friendly name"):
        pkcs12(" ", key, cert, [ca_cert], PASSWORD)
    with pytest.raises(TypeError, match="sequence of certificates"):
        pkcs12("alice", key, cert, ca_cert, PASSWORD)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="EC or RSA"):
        pkcs12("alice", key.public_key(), cert, [], PASSWORD)  # type: ignore[arg-type]


def test_load_pkcs12_rejects_garbage(leaf: Material) -> None:
    key, cert, ca_cert = leaf
    with pytest.raises(PkiError, match="not a PKCS#12 file"):
        load_pkcs12(b"", PASSWORD)
    with pytest.raises(PkiError, match="not a PKCS#12 file"):
        load_pkcs12(b"hello world", PASSWORD)
    with pytest.raises(PkiError, match="not a PKCS#12 file"):
        load_pkcs12(b"\x30\x03\x02\x01\x03", PASSWORD)
    with pytest.raises(PkiError, match="PEM file, not a PKCS#12"):
        load_pkcs12(pem_bundle(key, [cert, ca_cert]), PASSWORD)
    with pytest.raises(ValueError, match="must not be empty"):
        load_pkcs12(b"\x30\x00", b"")

