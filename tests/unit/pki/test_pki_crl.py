"""Tests of securepacs.pki.crl: RFC 5280 section 5 CRLs, checked against the openssl CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from securepacs.pki.authority import (
    PrivateKey,
    create_root_ca,
    issue_certificate,
    write_certificates,
)
from securepacs.pki.crl import REASONS, Revoked, build_crl, crl_der, crl_pem, parse_reason

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")


@dataclass
class Pki:
    ca_key: PrivateKey
    ca_cert: x509.Certificate
    revoked: x509.Certificate  # revoked for key compromise
    good: x509.Certificate  # never revoked


@pytest.fixture(scope="module", params=["ec", "rsa"])
def pki(request: pytest.FixtureRequest) -> Pki:
    ca_key, ca_cert = create_root_ca(f"CRL test CA ({request.param})", key_kind=request.param, at=AT)
    _, revoked = issue_certificate(ca_key, ca_cert, common_name="mallory", role="client", at=AT)
    _, good = issue_certificate(ca_key, ca_cert, common_name="alice", role="client", at=AT)
    return Pki(ca_key, ca_cert, revoked, good)


def _entries(pki: Pki) -> list[Revoked]:
    return [
        Revoked(pki.revoked.serial_number, AT - timedelta(hours=1), "keyCompromise"),
        Revoked(0x1234, AT - timedelta(days=2), "superseded"),
        Revoked(0xABCDEF, AT - timedelta(days=3), "unspecified"),
    ]


def _hex(serial: int) -> str:
    """The serial as ``openssl crl -text`` prints it: upper-case hex, an even number of digits."""
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(OPENSSL), *args], capture_output=True, text=True, timeout=30, check=False
    )


# --------------------------------------------------------------------------- reasons


def test_reasons_are_rfc5280_crl_reasons() -> None:
    expected = [flag.name for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl]
    assert list(REASONS) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("key_compromise", "key_compromise"),
        ("keyCompromise", "key_compromise"),
        ("key-compromise", "key_compromise"),
        (" Key Compromise ", "key_compromise"),
        ("KEY_COMPROMISE", "key_compromise"),
        ("cACompromise", "ca_compromise"),
        ("aACompromise", "aa_compromise"),
        ("cessationOfOperation", "cessation_of_operation"),
        ("privilege-withdrawn", "privilege_withdrawn"),
        ("certificateHold", "certificate_hold"),
        ("unspecified", "unspecified"),
    ],
)
def test_parse_reason_spellings(text: str, reason: str) -> None:
    assert parse_reason(text) == reason


def test_parse_reason_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="valid: unspecified, key_compromise, .*aa_compromise"):
        parse_reason("stolen")
    with pytest.raises(ValueError, match="unknown revocation reason"):
        parse_reason("removeFromCRL")  # delta CRLs only
    with pytest.raises(ValueError):
        parse_reason("")
    with pytest.raises(TypeError):
        parse_reason(1)  # type: ignore[arg-type]


def test_revoked_normalises_and_validates() -> None:
    entry = Revoked(5, AT, "keyCompromise")
    assert entry.reason == "key_compromise"
    assert entry == Revoked(5, AT, "key_compromise")
    assert Revoked(5, AT).reason == "unspecified"
    with pytest.raises(ValueError, match="positive"):
        Revoked(0, AT)
    with pytest.raises(TypeError):
        Revoked(True, AT)
    with pytest.raises(ValueError, match="timezone-aware"):
        Revoked(5, datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="valid:"):
        Revoked(5, AT, "lost")


# --------------------------------------------------------------------------- build


def test_crl_profile(pki: Pki) -> None:
    crl = build_crl(pki.ca_key, pki.ca_cert, _entries(pki), at=AT, crl_number=7)
    assert crl.issuer == pki.ca_cert.subject
    assert crl.last_update_utc == AT - timedelta(minutes=5)
    assert crl.next_update_utc == AT + timedelta(days=7)
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA256)
    assert crl.is_signature_valid(pki.ca_key.public_key())
    other_key, _ = create_root_ca("other CA", at=AT)
    assert not crl.is_signature_valid(other_key.public_key())

    number = crl.extensions.get_extension_for_class(x509.CRLNumber)
    assert number.value.crl_number == 7 and not number.critical
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = pki.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest

    assert len(crl) == 3
    assert [entry.serial_number for entry in crl] == sorted(e.serial for e in _entries(pki))
    entry = crl.get_revoked_certificate_by_serial_number(pki.revoked.serial_number)
    assert entry is not None
    assert entry.revocation_date_utc == AT - timedelta(hours=1)
    reason = entry.extensions.get_extension_for_class(x509.CRLReason)
    assert reason.value.reason is x509.ReasonFlags.key_compromise and not reason.critical
    superseded = crl.get_revoked_certificate_by_serial_number(0x1234)
    assert superseded is not None
    assert superseded.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.superseded
    )
    unspecified = crl.get_revoked_certificate_by_serial_number(0xABCDEF)
    assert unspecified is not None and len(unspecified.extensions) == 0  # 5.3.1: omitted
    assert crl.get_revoked_certificate_by_serial_number(pki.good.serial_number) is None


def test_crl_options(pki: Pki) -> None:
    at = datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))  # any time zone
    crl = build_crl(pki.ca_key, pki.ca_cert, [], at=at, next_update=timedelta(hours=6),
                    crl_number=0)
    assert len(crl) == 0
    assert crl.next_update_utc == AT + timedelta(hours=6)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 0
    big = build_crl(pki.ca_key, pki.ca_cert, [], at=AT, crl_number=2**159 - 1)
    assert big.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2**159 - 1


def test_encodings_round_trip(pki: Pki) -> None:
    crl = build_crl(pki.ca_key, pki.ca_cert, _entries(pki), at=AT, crl_number=1)
    pem = crl_pem(crl)
    assert pem.startswith(b"-----BEGIN X509 CRL-----\n")
    assert x509.load_pem_x509_crl(pem) == crl
    der = crl_der(crl)
    assert der[0] == 0x30
    assert x509.load_der_x509_crl(der) == crl


def test_build_crl_rejects_bad_input(pki: Pki) -> None:
    entries = _entries(pki)

    def build(**overrides: object) -> None:
        args: dict[str, object] = {
            "ca_key": pki.ca_key, "ca_cert": pki.ca_cert, "revoked": entries, "at": AT,
            "crl_number": 1,
        }
        args.update(overrides)
        build_crl(**args)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="listed twice"):
        build(revoked=[*entries, Revoked(0x1234, AT, "superseded")])
    with pytest.raises(ValueError, match="timezone-aware"):
        build(at=datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="next_update must be positive"):
        build(next_update=timedelta(0))
    for bad in (-1, 2**159):
        with pytest.raises(ValueError, match="crl_number"):
            build(crl_number=bad)
    with pytest.raises(TypeError, match="crl_number"):
        build(crl_number=True)
    with pytest.raises(TypeError, match="Revoked values"):
        build(revoked=[pki.revoked.serial_number])
    with pytest.raises(ValueError, match="is not a CA"):
        build(ca_cert=pki.good)
    other_key, other_cert = create_root_ca("other CA", at=AT)
    with pytest.raises(ValueError, match="does not belong"):
        build(ca_key=other_key)


# --------------------------------------------------------------------------- openssl


@needs_openssl
@pytest.mark.parametrize("encoding", ["PEM", "DER"])
def test_openssl_reads_the_crl(pki: Pki, encoding: str, tmp_path: Path) -> None:
    crl = build_crl(pki.ca_key, pki.ca_cert, _entries(pki), at=AT, crl_number=42)
    path = tmp_path / f"crl.{encoding.lower()}"
    path.write_bytes(crl_pem(crl) if encoding == "PEM" else crl_der(crl))
    run = _openssl("crl", "-in", str(path), "-inform", encoding, "-noout", "-text")
    assert run.returncode == 0, run.stderr
    text = run.stdout
    for entry in _entries(pki):
        assert f"Serial Number: {_hex(entry.serial)}" in text
    assert "Key Compromise" in text and "Superseded" in text
    assert text.count("X509v3 CRL Reason Code") == 2  # none for "unspecified"
    assert "Unspecified" not in text
    assert re.search(r"X509v3 CRL Number: *\n\s+42\n", text)
    assert "X509v3 Authority Key Identifier" in text
    assert "sha256" in text.lower()
    # openssl also checks the signature against the CA.
    ca = tmp_path / "ca.pem"
    write_certificates(ca, [pki.ca_cert])
    check = _openssl("crl", "-in", str(path), "-inform", encoding, "-noout", "-CAfile", str(ca))
    assert check.returncode == 0 and "verify OK" in (check.stdout + check.stderr)


@needs_openssl
def test_openssl_verify_uses_the_crl(pki: Pki, tmp_path: Path) -> None:
    crl = build_crl(pki.ca_key, pki.ca_cert, _entries(pki), at=AT, crl_number=1)
    ca, crl_file = tmp_path / "ca.pem", tmp_path / "crl.pem"
    write_certificates(ca, [pki.ca_cert])
    crl_file.write_bytes(crl_pem(crl))
    attime = str(int((AT + timedelta(hours=1)).timestamp()))  # inside thisUpdate..nextUpdate

    def verify(cert: x509.Certificate, name: str) -> subprocess.CompletedProcess[str]:
        leaf = tmp_path / f"{name}.pem"
        write_certificates(leaf, [cert])
        return _openssl("verify", "-crl_check", "-attime", attime, "-CAfile", str(ca),
                        "-CRLfile", str(crl_file), str(leaf))

    refused = verify(pki.revoked, "revoked")
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    accepted = verify(pki.good, "good")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "OK" in accepted.stdout
    # After nextUpdate the CRL itself has expired and openssl refuses to rely on it.
    late = str(int((AT + timedelta(days=8)).timestamp()))
    leaf = tmp_path / "good.pem"
    expired = _openssl("verify", "-crl_check", "-attime", late, "-CAfile", str(ca),
                       "-CRLfile", str(crl_file), str(leaf))
    assert expired.returncode != 0 and "CRL has expired" in expired.stdout + expired.stderr
