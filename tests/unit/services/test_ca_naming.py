"""The CA names certificates itself (issue 14, item 5): a hostile CSR cannot choose a name,
duplicate names are refused, and ``revoke NAME`` never hits another certificate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from securepacs.errors import PkiError
from securepacs.index.trust import SqlTrustStore
from securepacs.model.identity import Permission
from securepacs.model.printable import one_line
from securepacs.pki import authority
from securepacs.services.authority import CertificateAuthority, parse_token

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    store = SqlTrustStore(f"sqlite:///{tmp_path / 'index.sqlite'}")
    store.create_schema()
    authority_ = CertificateAuthority(store, tmp_path / "pki")
    authority_.init(at=NOW)
    authority_.create_group("radiology", Permission.parse_list("echo,store,find"))
    return authority_


def hostile_csr(common_name: str) -> x509.CertificateSigningRequest:
    """A CSR whose subject says whatever the attacker likes (no validation on this side)."""
    key = authority.generate_key("ec")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil\nCorp")])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(
        key, hashes.SHA256())  # type: ignore[arg-type]


def secret_of(ca: CertificateAuthority) -> str:
    token = ca.invite(organization="Imaging Centre", group="radiology",
                      valid_for=timedelta(hours=1), at=NOW)
    return parse_token(token)[0]


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_csr_with_an_existing_name_does_not_get_it_and_revoke_hits_the_right_one(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    victim = ca.issue_client("ws1", organization="C", group="radiology", out=tmp_path / "c", at=NOW)
    cert, _, _ = ca.enrol(secret_of(ca), hostile_csr("ws1"), at=NOW)
    assert cn(cert) != "ws1" and cn(cert).startswith("imaging-centre-")
    assert [r.serial for r in ca.store.certificates(name="ws1")] == [victim.record.serial]
    revoked = ca.revoke("ws1", reason="key_compromise", at=NOW)
    assert revoked.serial == victim.record.serial
    attacker = ca.store.certificate(cert.serial_number)
    assert attacker is not None and not attacker.is_revoked


def test_csr_with_a_newline_in_its_name_is_ignored(ca: CertificateAuthority) -> None:
    cert, _, _ = ca.enrol(secret_of(ca), hostile_csr("x\n2026-11-21 INFO enrolled admin"), at=NOW)
    name = cn(cert)
    assert "\n" not in name and name.startswith("imaging-centre-")
    record = ca.store.certificate(cert.serial_number)
    assert record is not None and record.name == name
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Imaging Centre"


def test_a_taken_requested_name_is_replaced_and_a_bad_one_refused_before_the_token(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    ca.issue_client("ws1", organization="C", group="radiology", out=tmp_path / "c", at=NOW)
    secret = secret_of(ca)
    with pytest.raises(ValueError, match="invalid certificate name"):
        ca.enrol(secret, hostile_csr("anything"), name="bad\nname", at=NOW)
    cert, _, _ = ca.enrol(secret, hostile_csr("ws1"), name="ws1", at=NOW)  # token still good
    assert cn(cert).startswith("imaging-centre-")
    assert len([r for r in ca.store.certificates(name="ws1") if not r.is_revoked]) == 1
    cert, _, _ = ca.enrol(secret_of(ca), hostile_csr("ws1"), name="us01", at=NOW)
    assert cn(cert) == "us01"


def test_duplicate_and_malformed_names_refused_on_issue(ca: CertificateAuthority,
                                                        tmp_path: Path) -> None:
    ca.issue_client("ws1", organization="C", group="radiology", out=tmp_path / "a", at=NOW)
    with pytest.raises(PkiError, match="already taken"):
        ca.issue_client("ws1", organization="C", group="radiology", out=tmp_path / "b", at=NOW)
    with pytest.raises(PkiError, match="already taken"):
        ca.issue_server("ws1", sans=["localhost"], out=tmp_path / "s", at=NOW)
    for bad in ("ws\n1", "", "a b", "x" * 65, "-lead", "0123456789abcdef0123"):
        with pytest.raises(ValueError):
            ca.issue_client(bad, organization="C", group="radiology", out=tmp_path / "d", at=NOW)
    ca.revoke("ws1", reason="superseded", at=NOW)
    again = ca.issue_client("ws1", organization="C", group="radiology", out=tmp_path / "e", at=NOW)
    assert ca.revoke("ws1", reason="superseded", at=NOW).serial == again.record.serial
    with pytest.raises(PkiError, match="already revoked"):
        ca.revoke("ws1", reason="superseded", at=NOW)


def test_revoke_by_name_refuses_when_two_valid_certificates_share_it(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    first = ca.issue_client("ws1", organization="C", group="radiology", out=tmp_path / "a", at=NOW)
    renewed = ca.renew("ws1", at=NOW)
    with pytest.raises(PkiError, match="revoke by serial"):
        ca.revoke("ws1", reason="superseded", at=NOW)
    done = ca.revoke(f"{first.record.serial:x}", reason="superseded", at=NOW)
    assert done.serial == first.record.serial
    assert ca.revoke("ws1", reason="superseded", at=NOW).serial == renewed.record.serial


@pytest.mark.parametrize(("text", "shown"), [
    ("a\nb", "a\\x0ab"), ("a\rb", "a\\x0db"), ("\x1b[31mred", "\\x1b[31mred"),
    ("x\u2028y", "x\\u2028y"), ("rtl\u202eexe", "rtl\\u202eexe"), ("back\\slash", "back\\\\slash"),
    ("plain name é", "plain name é")])
def test_one_line_escapes_what_could_forge_a_line(text: str, shown: str) -> None:
    assert one_line(text) == shown


def test_identity_in_log_lines_is_one_line() -> None:
    from securepacs.model.identity import Identity

    forged = Identity(name="ws1\n2026-12-03 INFO admitted admin", serial=0x1F,
                      organization="Evil\rCorp", group="g")
    assert "\n" not in forged.describe() and "\r" not in forged.describe()
    assert forged.describe().startswith("ws1\\x0a2026-12-03 INFO admitted admin (Evil\\x0dCorp/g")
