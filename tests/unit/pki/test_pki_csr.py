"""Tests of securepacs.pki.csr: CSRs, the one-step issuer check and fingerprint pins."""

from __future__ import annotations

import base64
import shutil
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from securepacs.errors import PkiError
from securepacs.pki.authority import (
    KeyKind,
    PrivateKey,
    create_root_ca,
    fingerprint_sha256,
    generate_key,
    issue_certificate,
)
from securepacs.pki.csr import (
    MAX_CSR_BYTES,
    csr_pem,
    load_csr,
    make_csr,
    pin_matches,
    verify_issued_by,
)

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OPENSSL = shutil.which("openssl")

CA = tuple[PrivateKey, x509.Certificate]


@pytest.fixture(scope="module")
def ca() -> CA:
    return create_root_ca("enrolment CA", at=AT)


@pytest.fixture(scope="module")
def server(ca: CA) -> x509.Certificate:
    _, cert = issue_certificate(ca[0], ca[1], common_name="pacs.example.org", role="server", at=AT)
    return cert


@pytest.fixture(scope="module")
def rsa_key() -> PrivateKey:
    return generate_key("rsa")


def _key(kind: KeyKind, rsa_key: PrivateKey) -> PrivateKey:
    return rsa_key if kind == "rsa" else generate_key("ec")


def _pem(der: bytes) -> bytes:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n".encode()


def _raw_csr(key: object, name: str = "x") -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, algorithm)  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM)


# --------------------------------------------------------------------------- CSRs


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_make_csr_and_load_it(kind: KeyKind, rsa_key: PrivateKey) -> None:
    key = _key(kind, rsa_key)
    csr = make_csr(key, "workstation-7")
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "workstation-7"
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    pem = csr_pem(csr)
    assert pem.startswith(b"-----BEGIN CERTIFICATE REQUEST-----\n")
    loaded = load_csr(pem)
    assert loaded == csr
    assert b"PRIVATE" not in pem


@pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")
def test_openssl_verifies_the_csr(tmp_path: Path) -> None:
    path = tmp_path / "req.pem"
    path.write_bytes(csr_pem(make_csr(generate_key(), "workstation-7")))
    run = subprocess.run(
        [str(OPENSSL), "req", "-in", str(path), "-verify", "-noout", "-subject"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "verify OK" in run.stdout + run.stderr
    assert "CN = workstation-7" in run.stdout


def test_make_csr_rejects_bad_input() -> None:
    key = generate_key()
    with pytest.raises(ValueError, match="non-empty"):
        make_csr(key, "  ")
    with pytest.raises(ValueError, match="64 characters"):
        make_csr(key, "x" * 65)
    with pytest.raises(TypeError, match="EC or RSA private key"):
        make_csr(key.public_key(), "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="EC or RSA private key"):
        make_csr(ed25519.Ed25519PrivateKey.generate(), "x")  # type: ignore[arg-type]


def test_tampered_csr_is_refused() -> None:
    der = make_csr(generate_key(), "alice").public_bytes(serialization.Encoding.DER)
    assert der.count(b"alice") == 1
    tampered = _pem(der.replace(b"alice", b"admin"))
    assert x509.load_pem_x509_csr(tampered).subject.rfc4514_string() == "CN=admin"  # parses
    with pytest.raises(PkiError) as info:
        load_csr(tampered)
    assert str(info.value) == "CSR signature does not verify"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ],
)
def test_load_csr_refuses_garbage(data: bytes) -> None:
    with pytest.raises(PkiError, match="certificate signing request") as info:
        load_csr(data)
    assert "\n" not in str(info.value)


def test_load_csr_refuses_other_things(ca: CA) -> None:
    certificate = ca[1].public_bytes(serialization.Encoding.PEM)
    with pytest.raises(PkiError, match="not a PEM certificate signing request"):
        load_csr(certificate)
    with pytest.raises(PkiError, match="too large"):
        load_csr(b"x" * (MAX_CSR_BYTES + 1))
    with pytest.raises(TypeError):
        load_csr("-----BEGIN CERTIFICATE REQUEST-----")  # type: ignore[arg-type]


def test_load_csr_refuses_weak_or_foreign_keys() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(PkiError, match="RSA 1024 bits"):
        load_csr(_raw_csr(weak))
    with pytest.raises(PkiError, match="unsupported curve: secp256k1"):
        load_csr(_raw_csr(ec.generate_private_key(ec.SECP256K1())))
    with pytest.raises(PkiError, match="EC or RSA only"):
        load_csr(_raw_csr(ed25519.Ed25519PrivateKey.generate()))
    assert load_csr(_raw_csr(ec.generate_private_key(ec.SECP384R1())))


def test_enrolment_flow(ca: CA) -> None:
    """Client key and CSR -> server checks and certifies it -> client checks the result."""
    client_key = generate_key()
    request = load_csr(csr_pem(make_csr(client_key, "workstation-7")))
    key, cert = issue_certificate(
        ca[0], ca[1], common_name="workstation-7", role="client", at=AT,
        public_key=request.public_key(),  # type: ignore[arg-type]
    )
    assert key is None and cert.public_key() == client_key.public_key()
    assert pin_matches(ca[1], fingerprint_sha256(ca[1]))
    verify_issued_by(cert, ca[1], at=AT)


# --------------------------------------------------------------------------- issuer check


def test_verify_issued_by_accepts_the_issuer(ca: CA, server: x509.Certificate) -> None:
    verify_issued_by(server, ca[1], at=AT)
    verify_issued_by(server, ca[1], at=AT + timedelta(days=824))
    verify_issued_by(ca[1], ca[1], at=AT)  # a root is issued by itself


def test_verify_issued_by_refuses_another_ca(ca: CA, server: x509.Certificate) -> None:
    _, other = create_root_ca("another CA", at=AT)
    with pytest.raises(PkiError, match="is not issued by 'CN=another CA'"):
        verify_issued_by(server, other, at=AT)
    # Same name, different key: the signature decides.
    _, impostor = create_root_ca("enrolment CA", at=AT)
    with pytest.raises(PkiError, match="'CN=pacs.example.org' is not issued by 'CN=enrolment CA'"):
        verify_issued_by(server, impostor, at=AT)


def test_verify_issued_by_refuses_a_non_ca(ca: CA, server: x509.Certificate) -> None:
    key, client = issue_certificate(ca[0], ca[1], common_name="c", role="client", at=AT)
    with pytest.raises(PkiError, match="'CN=pacs.example.org' is not a CA certificate"):
        verify_issued_by(client, server, at=AT)


def test_verify_issued_by_checks_validity(ca: CA, server: x509.Certificate) -> None:
    end = f"{server.not_valid_after_utc:%Y-%m-%d %H:%M:%S}"
    with pytest.raises(PkiError, match=f"'CN=pacs.example.org' expired on {end} UTC"):
        verify_issued_by(server, ca[1], at=AT + timedelta(days=826))
    with pytest.raises(PkiError, match=r"not valid before 2026-03-01 11:55:00 UTC"):
        verify_issued_by(server, ca[1], at=AT - timedelta(hours=1))
    short_key, short_ca = create_root_ca("short CA", at=AT, days=1)
    _, leaf = issue_certificate(short_key, short_ca, common_name="l", role="client", at=AT)
    with pytest.raises(PkiError, match="CA certificate 'CN=short CA' expired"):
        verify_issued_by(leaf, short_ca, at=AT + timedelta(days=2))
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_issued_by(server, ca[1], at=datetime(2026, 3, 1))
    with pytest.raises(TypeError):
        verify_issued_by(server.public_bytes(serialization.Encoding.PEM), ca[1], at=AT)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- pins


def test_pin_matches_any_spelling(ca: CA) -> None:
    pin = fingerprint_sha256(ca[1])
    assert pin_matches(ca[1], pin)
    assert pin_matches(ca[1], pin.lower())
    assert pin_matches(ca[1], pin.replace(":", ""))
    assert pin_matches(ca[1], f"  {pin.replace(':', '').lower()}\n")


def test_pin_mismatch(ca: CA, server: x509.Certificate) -> None:
    pin = fingerprint_sha256(ca[1])
    assert not pin_matches(server, pin)
    flipped = pin[:-1] + ("0" if pin[-1] != "0" else "1")
    assert not pin_matches(ca[1], flipped)


@pytest.mark.parametrize(
    "bad",
    ["", "AB:CD", "Z" * 64, "0" * 63, "0" * 65, "sha256 Fingerprint=" + "0" * 64],
)
def test_pin_must_be_a_sha256_fingerprint(ca: CA, bad: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        pin_matches(ca[1], bad)


def test_pin_types(ca: CA) -> None:
    with pytest.raises(TypeError):
        pin_matches(ca[1], ca[1].fingerprint(hashes.SHA256()))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pin_matches(ca[1].public_bytes(serialization.Encoding.DER), "0" * 64)  # type: ignore[arg-type]
