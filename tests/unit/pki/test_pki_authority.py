"""Tests of securepacs.pki.authority: the RFC 5280 profile, key/cert files and bootstrap."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securepacs.errors import PkiError
from securepacs.pki import authority
from securepacs.pki.authority import (
    BootstrapResult,
    bootstrap,
    create_root_ca,
    fingerprint_sha256,
    generate_key,
    issue_certificate,
    load_certificates,
    load_private_key,
    write_certificates,
    write_private_key,
)

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module")
def ca() -> tuple[authority.PrivateKey, x509.Certificate]:
    return create_root_ca("test CA", at=AT, organization="test org")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ext(cert: x509.Certificate, cls: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    san = _ext(cert, x509.SubjectAlternativeName).value
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return dns, ips


# --------------------------------------------------------------------------- keys and builders


def test_generate_key_kinds() -> None:
    ec_key = generate_key()
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    assert ec_key.curve.name == "secp256r1"
    rsa_key = generate_key("rsa")
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert rsa_key.key_size == 3072
    with pytest.raises(ValueError, match="key kind"):
        generate_key("dsa")  # type: ignore[arg-type]


def test_root_ca_profile(ca: tuple[authority.PrivateKey, x509.Certificate]) -> None:
    key, cert = ca
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "test CA"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "test org"
    cert.verify_directly_issued_by(cert)
    assert cert.not_valid_before_utc == AT - timedelta(minutes=5)
    assert cert.not_valid_after_utc == AT + timedelta(days=3650)
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    assert 0 < cert.serial_number < 2**159


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"common_name": ""}, "common_name"),
        ({"common_name": "   "}, "common_name"),
        ({"days": 0}, "days"),
        ({"days": -3}, "days"),
        ({"at": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_root_ca_validates_at_the_edge(kwargs: dict, message: str) -> None:
    arguments: dict = {"common_name": "CA", "at": AT, **kwargs}
    with pytest.raises(ValueError, match=message):
        create_root_ca(**arguments)


def test_server_certificate_profile(ca: tuple[authority.PrivateKey, x509.Certificate]) -> None:
    ca_key, ca_cert = ca
    key, cert = issue_certificate(
        ca_key,
        ca_cert,
        common_name="pacs.example.org",
        role="server",
        at=AT,
        sans=["10.0.0.7", "PACS.example.org", "alt.example.org", "::1", "10.0.0.7"],
        organization="Hospital",
        organizational_unit="Radiology",
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca_cert)
    assert cert.issuer == ca_cert.subject
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"
    assert 0 < cert.serial_number < 2**159
    assert cert.not_valid_before_utc == AT - timedelta(minutes=5)
    assert cert.not_valid_after_utc == AT - timedelta(minutes=5) + timedelta(days=825)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=825)
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert not ku.value.key_encipherment and not ku.value.key_cert_sign
    eku = list(_ext(cert, x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    dns, ips = _sans(cert)
    assert dns == ["pacs.example.org", "alt.example.org"]  # CN first, case-insensitive dedup
    assert ips == ["10.0.0.7", "::1"]
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    ca_ski = _ext(ca_cert, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())  # type: ignore[arg-type]
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Hospital"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "Radiology"


def test_server_common_name_that_is_an_ip(
    ca: tuple[authority.PrivateKey, x509.Certificate],
) -> None:
    _, cert = issue_certificate(*ca, common_name="192.0.2.10", role="server", at=AT)
    dns, ips = _sans(cert)
    assert dns == [] and ips == ["192.0.2.10"]


def test_client_certificate_profile(ca: tuple[authority.PrivateKey, x509.Certificate]) -> None:
    _, cert = issue_certificate(*ca, common_name="workstation 1", role="client", at=AT, days=30)
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        _ext(cert, x509.SubjectAlternativeName)
    assert cert.not_valid_after_utc == AT - timedelta(minutes=5) + timedelta(days=30)


def test_rsa_leaf_gets_key_encipherment(ca: tuple[authority.PrivateKey, x509.Certificate]) -> None:
    key, cert = issue_certificate(*ca, common_name="rsa", role="client", at=AT, key_kind="rsa")
    assert isinstance(key, rsa.RSAPrivateKey)
    ku = _ext(cert, x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment


def test_issue_for_a_given_public_key(ca: tuple[authority.PrivateKey, x509.Certificate]) -> None:
    own = generate_key()
    key, cert = issue_certificate(
        *ca, common_name="csr", role="client", at=AT, public_key=own.public_key()
    )
    assert key is None
    assert cert.public_key() == own.public_key()


def test_serials_differ(ca: tuple[authority.PrivateKey, x509.Certificate]) -> None:
    own = generate_key().public_key()
    serials = {
        issue_certificate(*ca, common_name="s", role="client", at=AT, public_key=own)[
            1
        ].serial_number
        for _ in range(5)
    }
    assert len(serials) == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"common_name": ""}, "common_name"),
        ({"days": 0}, "days"),
        ({"role": "admin"}, "role"),
        ({"at": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"sans": [""]}, "alternative"),
        ({"sans": ["bücher.example"]}, "A-label"),
    ],
)
def test_issue_validates_at_the_edge(
    ca: tuple[authority.PrivateKey, x509.Certificate], kwargs: dict, message: str
) -> None:
    arguments: dict = {"common_name": "x", "role": "server", "at": AT, **kwargs}
    with pytest.raises(ValueError, match=message):
        issue_certificate(*ca, **arguments)


def test_issue_refuses_a_non_ca_issuer_or_a_foreign_key(
    ca: tuple[authority.PrivateKey, x509.Certificate],
) -> None:
    leaf_key, leaf = issue_certificate(*ca, common_name="leaf", role="client", at=AT)
    assert leaf_key is not None
    with pytest.raises(ValueError, match="not a CA"):
        issue_certificate(leaf_key, leaf, common_name="x", role="client", at=AT)
    with pytest.raises(ValueError, match="does not belong"):
        issue_certificate(generate_key(), ca[1], common_name="x", role="client", at=AT)
    with pytest.raises(TypeError, match="public_key"):
        issue_certificate(*ca, common_name="x", role="client", at=AT, public_key=b"k")  # type: ignore[arg-type]


@pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")
def test_fingerprint_matches_openssl(
    ca: tuple[authority.PrivateKey, x509.Certificate], tmp_path: Path
) -> None:
    path = tmp_path / "ca.pem"
    write_certificates(path, [ca[1]])
    out = subprocess.run(
        [str(OPENSSL), "x509", "-noout", "-fingerprint", "-sha256", "-in", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    expected = out.strip().split("=", 1)[1]
    assert fingerprint_sha256(ca[1]) == expected
    assert len(expected) == 95 and expected == expected.upper()


# --------------------------------------------------------------------------- files


def test_private_key_round_trip_and_mode(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "new" / "deeper" / "server.key"
    write_private_key(path, key)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700 and _mode(path.parent.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    loaded = load_private_key(path)
    assert loaded.public_key() == key.public_key()
    assert sorted(p.name for p in path.parent.iterdir()) == ["server.key"]  # no temp left


def test_private_key_replaces_a_readable_file_with_a_0600_one(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_text("old")
    path.chmod(0o644)
    write_private_key(path, generate_key())
    assert _mode(path) == 0o600
    assert load_private_key(path)


def test_encrypted_private_key(tmp_path: Path) -> None:
    key = generate_key("rsa")
    path = tmp_path / "enc.key"
    secret = b"correct horse battery staple"
    write_private_key(path, key, passphrase=secret)
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert load_private_key(path, secret).public_key() == key.public_key()
    with pytest.raises(PkiError, match="wrong passphrase") as wrong:
        load_private_key(path, b"guess")
    assert str(path) in str(wrong.value) and "guess" not in str(wrong.value)
    with pytest.raises(PkiError, match="passphrase is needed") as missing:
        load_private_key(path)
    assert str(path) in str(missing.value)
    with pytest.raises(ValueError, match="empty"):
        write_private_key(path, key, passphrase=b"")


def test_passphrase_for_a_plain_key(tmp_path: Path) -> None:
    path = tmp_path / "plain.key"
    write_private_key(path, generate_key())
    with pytest.raises(PkiError, match="not encrypted"):
        load_private_key(path, b"secret")


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(PkiError, match="missing.pem"):
        load_certificates(missing)
    with pytest.raises(PkiError, match="missing.pem"):
        load_private_key(missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(PkiError, match="garbage.pem") as bad_cert:
        load_certificates(garbage)
    assert "\n" not in str(bad_cert.value)
    with pytest.raises(PkiError, match="garbage.pem"):
        load_private_key(garbage)
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    with pytest.raises(PkiError, match="empty.pem"):
        load_certificates(empty)


def test_unsupported_key_type(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path = tmp_path / "ed.key"
    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(PkiError, match="only EC and RSA"):
        load_private_key(path)


def test_certificates_round_trip(
    ca: tuple[authority.PrivateKey, x509.Certificate], tmp_path: Path
) -> None:
    _, leaf = issue_certificate(*ca, common_name="leaf", role="client", at=AT)
    path = tmp_path / "chain.pem"
    write_certificates(path, [leaf, ca[1]])
    assert _mode(path) == 0o644
    assert load_certificates(path) == [leaf, ca[1]]
    der = tmp_path / "leaf.der"
    from cryptography.hazmat.primitives.serialization import Encoding

    der.write_bytes(leaf.public_bytes(Encoding.DER))
    assert load_certificates(der) == [leaf]
    with pytest.raises(ValueError, match="at least one"):
        write_certificates(path, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.pem", "leaf.der"]


def test_write_error_is_a_pki_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PkiError, match="cannot write"):
        write_private_key(blocker / "k.key", generate_key())


# --------------------------------------------------------------------------- bootstrap


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def test_bootstrap_creates_a_complete_pki(tmp_path: Path) -> None:
    pki_dir = tmp_path / "var" / "pki"
    result = bootstrap(
        pki_dir,
        hostnames=["pacs.example.org", "10.1.2.3", "localhost", "PACS.example.org"],
        at=AT,
    )
    assert result == BootstrapResult(
        ca_cert=pki_dir / "ca.pem",
        server_cert=pki_dir / "server.pem",
        server_key=pki_dir / "server.key",
        client_cert=pki_dir / "client.pem",
        client_key=pki_dir / "client.key",
        created=True,
    )
    names = sorted(p.name for p in pki_dir.iterdir())
    assert names == ["ca.key", "ca.pem", "client.key", "client.pem", "server.key", "server.pem"]
    assert _mode(pki_dir) == 0o700
    for key_file in ("ca.key", "server.key", "client.key"):
        assert _mode(pki_dir / key_file) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["var"]  # no staging directory left

    (ca_cert,) = load_certificates(result.ca_cert)
    assert ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "securepacs local CA"
    )
    assert load_private_key(pki_dir / "ca.key").public_key() == ca_cert.public_key()

    server, chain_ca = load_certificates(result.server_cert)
    assert chain_ca == ca_cert
    assert load_private_key(result.server_key).public_key() == server.public_key()
    eku = list(_ext(server, x509.ExtendedKeyUsage).value)
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    dns, ips = _sans(server)
    assert dns == ["securepacs-server", "pacs.example.org", "localhost"]
    assert ips == ["10.1.2.3", "127.0.0.1"]

    client, client_chain_ca = load_certificates(result.client_cert)
    assert client_chain_ca == ca_cert
    assert load_private_key(result.client_key).public_key() == client.public_key()
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "securepacs-client"
    )
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "securepacs local"
    )
    assert list(_ext(client, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_bootstrap_is_idempotent(tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    first = bootstrap(pki_dir, hostnames=[], at=AT)
    before = _snapshot(pki_dir)
    second = bootstrap(pki_dir, hostnames=["other.example"], at=AT + timedelta(days=1))
    assert first.created and not second.created
    assert second == BootstrapResult(**{**first.__dict__, "created": False})
    assert _snapshot(pki_dir) == before


def test_bootstrap_refuses_an_unfinished_directory(tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    (pki_dir / "server.key").write_text("left over")
    with pytest.raises(PkiError, match="delete or move") as error:
        bootstrap(pki_dir, hostnames=[], at=AT)
    assert str(pki_dir) in str(error.value)
    assert (pki_dir / "server.key").read_text() == "left over"


def test_bootstrap_accepts_an_empty_directory(tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir(mode=0o755)
    assert bootstrap(pki_dir, hostnames=[], at=AT).created
    assert _mode(pki_dir) == 0o700
    assert (pki_dir / "ca.pem").is_file()


def test_interrupted_bootstrap_leaves_nothing_and_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki_dir = tmp_path / "pki"
    real_write = authority.write_certificates

    def crash_on_ca(path: Path, certs: list[x509.Certificate]) -> None:
        if path.name == "ca.pem":
            raise KeyboardInterrupt
        real_write(path, certs)

    monkeypatch.setattr(authority, "write_certificates", crash_on_ca)
    with pytest.raises(KeyboardInterrupt):
        bootstrap(pki_dir, hostnames=[], at=AT)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert bootstrap(pki_dir, hostnames=[], at=AT).created


def test_bootstrap_validates_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        bootstrap(tmp_path / "pki", hostnames=[""], at=AT)
    with pytest.raises(ValueError, match="timezone-aware"):
        bootstrap(tmp_path / "pki", hostnames=[], at=datetime(2026, 1, 1))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")
def test_openssl_verifies_the_bootstrap_chain(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    result = bootstrap(tmp_path / "pki", hostnames=["pacs.example.org"], at=now)
    for cert, purpose in (
        (result.server_cert, "sslserver"),
        (result.server_cert, "sslclient"),
        (result.client_cert, "sslclient"),
    ):
        run = subprocess.run(
            [
                str(OPENSSL),
                "verify",
                "-x509_strict",
                "-purpose",
                purpose,
                "-CAfile",
                str(result.ca_cert),
                str(cert),
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.strip().endswith(": OK")
    refused = subprocess.run(
        [
            str(OPENSSL),
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            str(result.ca_cert),
            str(result.client_cert),
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert refused.returncode != 0  # a client certificate is no server certificate


def test_key_files_are_never_readable_by_others(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        write_private_key(tmp_path / "a" / "k.key", generate_key())
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a" / "k.key") == 0o600
    assert _mode(tmp_path / "a") == 0o700


def test_key_file_is_created_0600_and_exclusive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        calls.append((str(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    write_private_key(tmp_path / "k.key", generate_key())
    monkeypatch.undo()
    created = [c for c in calls if c[1] & os.O_CREAT]
    assert len(created) == 1
    path, flags, mode = created[0]
    assert Path(path).parent == tmp_path and path.endswith(".tmp")
    assert flags & os.O_EXCL and mode == 0o600


def test_concurrent_bootstrap_loses_gracefully(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki_dir = tmp_path / "pki"
    real_write = authority.write_certificates
    other: list[BootstrapResult] = []

    def race(path: Path, certs: list[x509.Certificate]) -> None:
        real_write(path, certs)
        if path.name == "ca.pem" and not other:  # another process finishes first
            monkeypatch.setattr(authority, "write_certificates", real_write)
            other.append(bootstrap(pki_dir, hostnames=[], at=AT))

    monkeypatch.setattr(authority, "write_certificates", race)
    result = bootstrap(pki_dir, hostnames=[], at=AT)
    assert other[0].created and not result.created
    winner = _snapshot(pki_dir)
    assert sorted(winner) == [
        "ca.key",
        "ca.pem",
        "client.key",
        "client.pem",
        "server.key",
        "server.pem",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["pki"]  # the loser's staging is gone
