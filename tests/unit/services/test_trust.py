"""The CA use cases and admission decisions on a real SQLite trust store (no sockets)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audittrails import RecordingTrail
from securepacs.errors import AccessRefused, PkiError
from securepacs.index.trust import SqlTrustStore
from securepacs.model.identity import Permission
from securepacs.pki import authority, csr
from securepacs.services.authority import CertificateAuthority, parse_token
from securepacs.services.trust import StoreTrust

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    store = SqlTrustStore(f"sqlite:///{tmp_path / 'index.sqlite'}")
    store.create_schema()
    authority_ = CertificateAuthority(store, tmp_path / "pki")
    authority_.init(at=NOW)
    authority_.create_group("radiology", Permission.parse_list("echo,store,find"))
    return authority_


def admit(trust: StoreTrust, record) -> object:  # noqa: ANN001
    return trust.admit(serial=record.serial, fingerprint=record.fingerprint, name=record.name,
                       organization=record.organization)


def test_identity_carries_group_permissions_and_ae_titles(ca: CertificateAuthority,
                                                          tmp_path: Path) -> None:
    issued = ca.issue_client("ws1", organization="Clinic", group="radiology", ae_titles=["WS1"],
                             out=tmp_path / "c", at=NOW)
    identity = admit(StoreTrust(ca.store), issued.record)
    assert identity.allows(Permission.STORE) and not identity.allows(Permission.MOVE)
    assert identity.may_call_as("WS1") and not identity.may_call_as("OTHER")
    assert identity.organization == "Clinic" and identity.group == "radiology"


def test_revocation_is_seen_after_refresh_only(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.issue_client("ws1", organization="C", group="radiology", out=tmp_path, at=NOW)
    trust = StoreTrust(ca.store)
    admit(trust, issued.record)
    ca.revoke("ws1", reason="key_compromise", at=NOW)
    assert trust.refresh() is True
    with pytest.raises(AccessRefused, match="revoked on 2026-11-21 \\(key_compromise\\)"):
        admit(trust, issued.record)
    assert trust.refresh() is False
    assert issued.record.serial in trust.revoked()


def test_unknown_and_mismatched_certificates_are_refused(ca: CertificateAuthority,
                                                         tmp_path: Path) -> None:
    trust = StoreTrust(ca.store)
    with pytest.raises(AccessRefused, match="not in the trust store"):
        trust.admit(serial=12345, fingerprint="AA", name="stranger", organization=None)
    issued = ca.issue_client("ws1", organization="C", group="radiology", out=tmp_path, at=NOW)
    with pytest.raises(AccessRefused, match="does not match"):
        trust.admit(serial=issued.record.serial, fingerprint="00:11", name="ws1",
                    organization=None)


def test_certificates_issued_after_the_snapshot_are_found(ca: CertificateAuthority,
                                                          tmp_path: Path) -> None:
    trust = StoreTrust(ca.store)
    issued = ca.issue_client("late", organization="C", group="radiology", out=tmp_path, at=NOW)
    assert admit(trust, issued.record).name == "late"


def test_tokens_are_single_use_even_when_raced(ca: CertificateAuthority) -> None:
    token = ca.invite(organization="C", group="radiology", valid_for=timedelta(hours=1), at=NOW)
    secret, pin = parse_token(token)
    assert csr.pin_matches(ca.ca_certificate(), pin)
    results: list[str] = []

    def redeem() -> None:
        key = authority.generate_key()
        try:
            ca.enrol(secret, csr.make_csr(key, "racer"), at=NOW)
            results.append("ok")
        except PkiError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=redeem) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results.count("ok") == 1
    assert all(r in ("ok", "enrolment token already used") for r in results), results


def test_expired_and_foreign_tokens(ca: CertificateAuthority) -> None:
    token = ca.invite(organization="C", group="radiology", valid_for=timedelta(minutes=5), at=NOW)
    secret, _ = parse_token(token)
    with pytest.raises(PkiError, match="expired"):
        ca.enrol(secret, csr.make_csr(authority.generate_key(), "x"), at=NOW + timedelta(hours=1))
    with pytest.raises(PkiError, match="not recognised"):
        ca.enrol("forged", csr.make_csr(authority.generate_key(), "x"), at=NOW)
    with pytest.raises(PkiError, match="not a securepacs enrolment token"):
        parse_token("hello")


def test_renew_keeps_identity_and_can_keep_the_key(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.issue_client("ws1", organization="C", group="radiology", ae_titles=["WS1"],
                             out=tmp_path / "c", at=NOW)
    old = authority.load_certificates(issued.cert_path)[0]
    same = ca.renew("ws1", at=NOW + timedelta(days=1), new_key=False)
    assert same.record.renewed_from == issued.record.serial
    assert (same.record.organization, same.record.group, same.record.ae_titles) == (
        "C", "radiology", ("WS1",))
    new = authority.load_certificates(same.cert_path)[0]
    assert old.public_key() == new.public_key() and old.serial_number != new.serial_number
    fresh = ca.renew("ws1", at=NOW + timedelta(days=2))
    assert authority.load_certificates(fresh.cert_path)[0].public_key() != new.public_key()


def test_crl_lists_revocations_with_increasing_numbers(ca: CertificateAuthority,
                                                       tmp_path: Path) -> None:
    from cryptography import x509

    issued = ca.issue_client("ws1", organization="C", group="radiology", out=tmp_path, at=NOW)
    ca.revoke("ws1", reason="superseded", at=NOW)
    first, second = ca.crl(at=NOW), ca.crl(at=NOW)
    assert [r.serial_number for r in first] == [issued.record.serial]
    number = first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    later = second.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert later > number


def test_revoked_and_unknown_are_told_apart_by_type(ca: CertificateAuthority,
                                                    tmp_path: Path) -> None:
    from securepacs.errors import CertificateRevoked
    from securepacs.services.audit_events import AuditEvents

    issued = ca.issue_client("ws1", organization="C", group="radiology", out=tmp_path, at=NOW)
    ca.revoke("ws1", reason="key_compromise", at=NOW)
    trust = StoreTrust(ca.store)
    with pytest.raises(CertificateRevoked):
        admit(trust, issued.record)
    try:
        trust.admit(serial=999, fingerprint="AA", name="stranger", organization=None)
    except AccessRefused as exc:
        unknown = exc
    assert not isinstance(unknown, CertificateRevoked)

    trail = RecordingTrail()
    events = AuditEvents(trail, ae_title="PACS", address="pacs.test", clock=lambda: NOW)
    with pytest.raises(CertificateRevoked) as revoked:
        admit(trust, issued.record)
    events.certificate_refused(revoked.value, address="10.0.0.1", name="ws1")
    events.certificate_refused(unknown, address="10.0.0.2", name="stranger")
    alerts = [r for r in trail.records if "Security Alert" in str(r.event_id)]
    assert len(alerts) == 2
    assert "revoked" in (alerts[0].outcome_description or "")
    assert "not in the trust store" in (alerts[1].outcome_description or "")


def test_node_certificate_is_client_and_server_with_group_and_ae(ca: CertificateAuthority,
                                                                 tmp_path: Path) -> None:
    """Issue 17 item 2: one certificate for a DICOM node (Orthanc) that calls us and that we
    call: serverAuth + clientAuth, SANs with its name, group permissions and AE titles."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    issued = ca.issue_node("orthanc1", organization="Peer", group="radiology",
                           ae_titles=["ORTHANC"], sans=["127.0.0.1"], out=tmp_path, at=NOW)
    cert = x509.load_pem_x509_certificate(issued.cert_path.read_bytes())
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["orthanc1"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert issued.record.kind == "node"
    identity = admit(StoreTrust(ca.store), issued.record)
    assert identity.allows(Permission.FIND) and identity.may_call_as("ORTHANC")
    assert not identity.may_call_as("OTHER")
    renewed = ca.renew("orthanc1", at=NOW + timedelta(days=1), out=tmp_path / "renewed")
    cert2 = x509.load_pem_x509_certificate(renewed.cert_path.read_bytes())
    assert set(cert2.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == set(usages)
    assert renewed.record.kind == "node" and renewed.record.group == "radiology"


def test_peer_pin_accepts_only_the_named_valid_certificate(ca: CertificateAuthority,
                                                           tmp_path: Path) -> None:
    from securepacs.services.trust import FileTrust, PeerPin

    node = ca.issue_node("orthanc1", organization="P", group="radiology", out=tmp_path, at=NOW)
    other = ca.issue_node("other", organization="P", group="radiology", out=tmp_path, at=NOW)
    trust = StoreTrust(ca.store)
    pin = PeerPin(trust, "orthanc1")

    def check(record) -> None:  # noqa: ANN001
        pin.check(serial=record.serial, fingerprint=record.fingerprint, name=record.name,
                  organization=record.organization)

    check(node.record)
    with pytest.raises(AccessRefused, match="not the pinned identity 'orthanc1'"):
        check(other.record)
    with pytest.raises(AccessRefused, match="does not match"):
        pin.check(serial=node.record.serial, fingerprint="00:11", name="orthanc1",
                  organization="P")
    ca.revoke("orthanc1", reason="key_compromise", at=NOW)
    trust.refresh()
    with pytest.raises(AccessRefused, match="revoked"):
        check(node.record)
    by_name = PeerPin(FileTrust(), "orthanc1")  # TLS files configured by hand: CN only
    by_name.check(serial=1, fingerprint="AA", name="orthanc1", organization=None)
    with pytest.raises(AccessRefused):
        by_name.check(serial=1, fingerprint="AA", name="other", organization=None)
